//! `rvm volume create|ls|inspect|rm`: named volumes (ext4 images attached to the microVMs as
//! disks), with Docker's output and exit codes (1 when a volume cannot be found or removed).

use clap::{Args, Subcommand};
use rvm_runtime::escape;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::volumes::{Volume, Volumes};
use serde_json::json;

use super::common::EXIT_FAILED;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(NamesArgs),
    /// Remove one or more volumes (refused while a container uses them)
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The volume's name
    name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Accepted for Docker compatibility; a volume in use is refused all the same
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    volumes: Vec<String>,
}

/// Runs `rvm volume ...`; returns the exit code.
pub fn main(layout: &Layout, command: VolumeCommand) -> i32 {
    let volumes = Volumes::new(layout);
    match command {
        VolumeCommand::Create(args) => match volumes.create(&args.name) {
            Ok(_) => {
                println!("{}", args.name);
                0
            }
            Err(err) => fail(&err),
        },
        VolumeCommand::Ls(args) => match volumes.list() {
            Ok(list) => {
                if !args.quiet {
                    println!("DRIVER    VOLUME NAME");
                }
                for volume in list {
                    if args.quiet {
                        println!("{}", volume.name);
                    } else {
                        println!("local     {}", volume.name);
                    }
                }
                0
            }
            Err(err) => fail(&err),
        },
        VolumeCommand::Inspect(args) => {
            let mut code = 0;
            let mut found = Vec::new();
            for name in &args.volumes {
                match volumes.get(name) {
                    Ok(volume) => found.push(describe(&volume)),
                    Err(err) => code = fail(&err),
                }
            }
            let text = serde_json::to_string_pretty(&found).unwrap_or_else(|_| "[]".to_owned());
            println!("{text}");
            code
        }
        VolumeCommand::Rm(args) => {
            let mut code = 0;
            for name in &args.volumes {
                match volumes.remove(name) {
                    Ok(()) => println!("{name}"),
                    Err(err) => code = fail(&err),
                }
            }
            code
        }
    }
}

fn fail(err: &dyn std::error::Error) -> i32 {
    eprintln!(
        "rvm: Error response from daemon: {}",
        escape::controls(&err.to_string())
    );
    EXIT_FAILED
}

/// Docker's `volume inspect` object; the mountpoint is the volume's disk image.
fn describe(volume: &Volume) -> serde_json::Value {
    json!({
        "CreatedAt": volume.created,
        "Driver": "local",
        "Labels": null,
        "Mountpoint": volume.path,
        "Name": volume.name,
        "Options": null,
        "Scope": "local",
    })
}

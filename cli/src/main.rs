//! `rvm`: Docker's command line, each container in its own microVM.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rvm_runtime::host::KvmKind;

#[derive(Debug, Parser)]
#[command(
    name = "rvm",
    version,
    about = "Run containers, each in its own microVM"
)]
struct Cli {
    /// Where rvm keeps images, layer disks and containers.
    #[arg(long, env = "RVM_ROOT", default_value = "/var/lib/rvm", global = true)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the rvm version.
    Version,
    /// Check whether this host can boot rvm's microVMs directly.
    Check,
    /// Download an image from a registry.
    Pull(commands::pull::Args),
    /// Load an image from a docker-archive or OCI archive.
    Load(commands::load::Args),
    /// List images.
    Images(commands::images::Args),
    /// Remove one or more images.
    Rmi(commands::rmi::Args),
    /// Manage rvm itself.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Remove unused image content.
    Prune(commands::prune::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!("rvm {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(check()),
        Command::Pull(args) => commands::pull::run(&cli.root, args),
        Command::Load(args) => commands::load::run(&cli.root, args),
        Command::Images(args) => commands::images::run(&cli.root, args),
        Command::Rmi(args) => commands::rmi::run(&cli.root, args),
        Command::System {
            command: SystemCommand::Prune(args),
        } => commands::prune::run(&cli.root, args),
    };
    result.unwrap_or_else(|err| commands::fail(&err))
}

fn check() -> ExitCode {
    match KvmKind::detect().limitation() {
        None => {
            println!("rvm: this host has hardware KVM; microVMs run directly");
            ExitCode::SUCCESS
        }
        Some(why) => {
            eprintln!("rvm: {why}");
            ExitCode::from(commands::EXIT_RVM_ERROR)
        }
    }
}

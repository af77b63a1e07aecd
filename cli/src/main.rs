//! `rvm`: Docker's command line, each container in its own microVM.

use clap::{Parser, Subcommand};
use rvm_runtime::host::KvmKind;

#[derive(Debug, Parser)]
#[command(
    name = "rvm",
    version,
    about = "Run containers, each in its own microVM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the rvm version.
    Version,
    /// Check whether this host can boot rvm's microVMs directly.
    Check,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => println!("rvm {}", env!("CARGO_PKG_VERSION")),
        Command::Check => match KvmKind::detect().limitation() {
            None => println!("rvm: this host has hardware KVM; microVMs run directly"),
            Some(why) => {
                eprintln!("rvm: {why}");
                std::process::exit(125);
            }
        },
    }
    Ok(())
}

//! `rvm`: Docker's command line, each container in its own microVM.

mod commands;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rvm_runtime::host::KvmKind;
use rvm_runtime::sandbox::layout::Layout;

#[derive(Debug, Parser)]
#[command(
    name = "rvm",
    version,
    about = "Run containers, each in its own microVM"
)]
struct Cli {
    /// State directory (images, layers, containers; sockets under DIR/run) [default: /var/lib/rvm]
    #[arg(long, global = true, env = "RVM_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Show the rvm version.
    Version,
    /// Check whether this host can boot rvm's microVMs directly.
    Check,
    /// Create and run a new container from an image, in its own microVM.
    Run(commands::run::RunArgs),
    /// List containers.
    Ps(commands::ps::PsArgs),
    /// Fetch the logs of a container.
    Logs(commands::logs::LogsArgs),
    /// Execute a command in a running container.
    Exec(commands::exec::ExecArgs),
    /// Start one or more stopped containers.
    Start(commands::start::StartArgs),
    /// Stop one or more running containers.
    Stop(commands::stop::StopArgs),
    /// Kill one or more running containers.
    Kill(commands::kill::KillArgs),
    /// Remove one or more containers.
    Rm(commands::rm::RmArgs),
    /// Return low-level information on containers.
    Inspect(commands::inspect::InspectArgs),
    /// The per-container monitor (started by `rvm run` and `rvm start`).
    #[command(name = "container-monitor", hide = true)]
    ContainerMonitor(commands::monitor::MonitorArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Docker's exit code for a bad command line is 125; help and version are not errors.
            let code = if err.use_stderr() { 125 } else { 0 };
            let _ = err.print();
            std::process::exit(code);
        }
    };
    let layout = Layout::new(cli.root);
    let code = match cli.command {
        Command::Version => {
            println!("rvm {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Check => match KvmKind::detect().limitation() {
            None => {
                println!("rvm: this host has hardware KVM; microVMs run directly");
                0
            }
            Some(why) => {
                eprintln!("rvm: {why}");
                125
            }
        },
        Command::Run(args) => commands::run::main(&layout, args),
        Command::Ps(args) => commands::ps::main(&layout, args),
        Command::Logs(args) => commands::logs::main(&layout, args),
        Command::Exec(args) => commands::exec::main(&layout, args),
        Command::Start(args) => commands::start::main(&layout, args),
        Command::Stop(args) => commands::stop::main(&layout, args),
        Command::Kill(args) => commands::kill::main(&layout, args),
        Command::Rm(args) => commands::rm::main(&layout, args),
        Command::Inspect(args) => commands::inspect::main(&layout, args),
        Command::ContainerMonitor(args) => commands::monitor::main(&layout, args),
    };
    std::process::exit(code);
}

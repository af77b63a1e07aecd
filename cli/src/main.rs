//! `rvm`: Docker's command line, each container in its own microVM.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::exit_code;
use rvm_protocol::exit;
use rvm_runtime::host::KvmKind;
use rvm_runtime::sandbox::layout::Layout;

#[derive(Debug, Parser)]
#[command(
    name = "rvm",
    version,
    about = "Run containers, each in its own microVM"
)]
struct Cli {
    /// Where rvm keeps images, layer disks and containers (sockets under DIR/run unless default).
    #[arg(long, env = "RVM_ROOT", default_value = "/var/lib/rvm", global = true)]
    root: PathBuf,
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
    /// Create a new container from an image without starting it.
    Create(commands::create::CreateArgs),
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
    /// Restart one or more containers.
    Restart(commands::restart::RestartArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(commands::wait::WaitArgs),
    /// List port mappings or a specific mapping for the container.
    Port(commands::port::PortArgs),
    /// Display the running processes of a container.
    Top(commands::top::TopArgs),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(commands::stats::StatsArgs),
    /// Pause all processes within one or more containers.
    Pause(commands::pause::PauseArgs),
    /// Unpause all processes within one or more containers.
    Unpause(commands::pause::PauseArgs),
    /// Rename a container.
    Rename(commands::rename::RenameArgs),
    /// Kill one or more running containers.
    Kill(commands::kill::KillArgs),
    /// Remove one or more containers.
    Rm(commands::rm::RmArgs),
    /// Return low-level information on containers.
    Inspect(commands::inspect::InspectArgs),
    /// Download an image from a registry.
    Pull(commands::pull::Args),
    /// Load an image from a docker-archive or OCI archive.
    Load(commands::load::Args),
    /// List images.
    Images(commands::images::Args),
    /// Remove one or more images.
    Rmi(commands::rmi::Args),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(commands::tag::Args),
    /// Manage volumes.
    Volume {
        #[command(subcommand)]
        command: commands::volume::VolumeCommand,
    },
    /// Manage rvm itself.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// The per-container monitor (started by `rvm run` and `rvm start`).
    #[command(name = "container-monitor", hide = true)]
    ContainerMonitor(commands::monitor::MonitorArgs),
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Remove unused image content.
    Prune(commands::prune::Args),
}

fn main() -> ExitCode {
    // Whatever rvm creates without a mode of its own (a container's files hold its `-e`
    // values) is its owner's, root's, alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Docker's exit code for a bad command line is 125; help and version are not errors.
            let _ = err.print();
            return if err.use_stderr() {
                exit_code(exit::RUNTIME_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let layout = Layout::for_root(&cli.root);
    // The monitor logs at info level to its own file; it sets up tracing itself.
    if !matches!(cli.command, Command::ContainerMonitor(_)) {
        commands::common::init_tracing();
    }
    let result = match cli.command {
        Command::Version => {
            println!("rvm {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(check()),
        Command::Run(args) => Ok(exit_code(commands::run::main(&layout, args))),
        Command::Create(args) => Ok(exit_code(commands::create::main(&layout, args))),
        Command::Restart(args) => Ok(exit_code(commands::restart::main(&layout, args))),
        Command::Wait(args) => Ok(exit_code(commands::wait::main(&layout, args))),
        Command::Port(args) => Ok(exit_code(commands::port::main(&layout, args))),
        Command::Top(args) => Ok(exit_code(commands::top::main(&layout, args))),
        Command::Stats(args) => Ok(exit_code(commands::stats::main(&layout, args))),
        Command::Pause(args) => Ok(exit_code(commands::pause::main(&layout, args, true))),
        Command::Unpause(args) => Ok(exit_code(commands::pause::main(&layout, args, false))),
        Command::Rename(args) => Ok(exit_code(commands::rename::main(&layout, args))),
        Command::Ps(args) => Ok(exit_code(commands::ps::main(&layout, args))),
        Command::Logs(args) => Ok(exit_code(commands::logs::main(&layout, args))),
        Command::Exec(args) => Ok(exit_code(commands::exec::main(&layout, args))),
        Command::Start(args) => Ok(exit_code(commands::start::main(&layout, args))),
        Command::Stop(args) => Ok(exit_code(commands::stop::main(&layout, args))),
        Command::Kill(args) => Ok(exit_code(commands::kill::main(&layout, args))),
        Command::Rm(args) => Ok(exit_code(commands::rm::main(&layout, args))),
        Command::Inspect(args) => Ok(exit_code(commands::inspect::main(&layout, args))),
        Command::Volume { command } => Ok(exit_code(commands::volume::main(&layout, command))),
        Command::ContainerMonitor(args) => Ok(exit_code(commands::monitor::main(&layout, args))),
        Command::Pull(args) => commands::pull::run(&cli.root, args),
        Command::Load(args) => commands::load::run(&cli.root, args),
        Command::Images(args) => commands::images::run(&cli.root, args),
        Command::Rmi(args) => commands::rmi::run(&cli.root, args),
        Command::Tag(args) => commands::tag::run(&cli.root, args),
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
            exit_code(exit::RUNTIME_ERROR)
        }
    }
}

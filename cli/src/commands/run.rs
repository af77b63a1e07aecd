//! `rvm run`: create a container from an image and run it in its own microVM, attached to the
//! terminal (stdio relayed through the monitor) or detached (`-d`, prints the ID).

use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rvm_protocol::exit;
use rvm_runtime::escape;
use rvm_runtime::image::{Reference, Store};
use rvm_runtime::network::PortMapping;
use rvm_runtime::sandbox::attach::{self, Frame};
use rvm_runtime::sandbox::config::NetworkMode;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::log::LogConfig;
use rvm_runtime::sandbox::prepare::{self, CreateOptions, VolumeSpec};
use rvm_runtime::sandbox::security::{CapabilityName, Security};
use rvm_runtime::sandbox::spec::RunSpec;
use rvm_runtime::sandbox::state::{Containers, Lifecycle};
use rvm_runtime::sandbox::units::{self, Cpus};
use rvm_runtime::sandbox::{devices, env, id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;

use super::common::{self, report};
use super::container::{self, Started};
use super::pull;
use super::terminal;

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    flags: ContainerFlags,
}

/// The flags `rvm run` and `rvm create` share: everything that describes the container.
#[derive(Debug, Args)]
pub struct ContainerFlags {
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind mount a volume (named volumes only: NAME:/path[:ro])
    #[arg(short, long = "volume", value_name = "NAME:/PATH[:ro]")]
    volume: Vec<String>,
    /// Publish a container's port(s) to the host ([IP:]HOST:CONTAINER[/tcp|udp])
    #[arg(short, long = "publish", value_name = "HOST:CONTAINER")]
    publish: Vec<String>,
    /// Memory limit (also sizes the microVM), e.g. 512m, 1g
    #[arg(short, long)]
    memory: Option<String>,
    /// Number of CPUs (vCPUs of the microVM and the container's CPU quota)
    #[arg(long)]
    cpus: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Connect a container to a network: bridge (default, the rvm0 bridge) or none
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    read_only: bool,
    /// Add Linux capabilities (e.g. NET_ADMIN, or ALL)
    #[arg(long, value_name = "CAPABILITY")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities (e.g. NET_RAW, or ALL)
    #[arg(long, value_name = "CAPABILITY")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined, no-new-privileges[=true|false]
    #[arg(long, value_name = "OPTION")]
    security_opt: Vec<String>,
    /// Give extended privileges to this container: every capability and device of its microVM
    #[arg(long)]
    privileged: bool,
    /// Add a host block device to the container (as a disk of its microVM)
    #[arg(long, value_name = "HOST_PATH[:CONTAINER_PATH[:PERMISSIONS]]")]
    device: Vec<String>,
    /// Logging driver for the container: json-file (default) or none
    #[arg(long, value_name = "DRIVER")]
    log_driver: Option<String>,
    /// Log driver options: max-size=SIZE (default 20m), max-file=N (default 5)
    #[arg(long, value_name = "KEY=VALUE")]
    log_opt: Vec<String>,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The image to run
    image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs `rvm run`; returns the exit code.
pub fn main(layout: &Layout, args: RunArgs) -> i32 {
    common::init_tracing();
    match run(layout, args) {
        Ok(code) => code,
        Err(err) => report(&err, exit::RUNTIME_ERROR),
    }
}

/// `--network` (bridge by default, as Docker) and the `-p` mappings.
fn network_options(args: &ContainerFlags) -> Result<(NetworkMode, Vec<PortMapping>)> {
    let mode = match args.network.as_deref() {
        None | Some("bridge") | Some("default") => NetworkMode::Bridge,
        Some("none") => NetworkMode::None,
        Some(other) => {
            bail!("network {other} not found (rvm supports --network bridge and --network none)")
        }
    };
    let ports = args
        .publish
        .iter()
        .map(|text| PortMapping::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    if mode == NetworkMode::None {
        if let Some(port) = args.publish.first() {
            bail!("-p {port}: publishing ports needs bridge networking; drop --network none");
        }
    }
    Ok((mode, ports))
}

/// `--cap-add`, `--cap-drop` and `--security-opt`, each bad value named with its flag.
fn security_options(args: &ContainerFlags) -> Result<Security> {
    let names = |flag: &str, texts: &[String]| -> Result<Vec<CapabilityName>> {
        texts
            .iter()
            .map(|text| text.parse().with_context(|| format!("{flag} {text}")))
            .collect()
    };
    let mut security = Security {
        cap_add: names("--cap-add", &args.cap_add)?,
        cap_drop: names("--cap-drop", &args.cap_drop)?,
        privileged: args.privileged,
        ..Default::default()
    };
    for option in &args.security_opt {
        security.apply_option(option)?;
    }
    Ok(security)
}

/// Turns the flags into create options, refusing bad ones before anything is created.
fn create_options(args: &ContainerFlags) -> Result<CreateOptions> {
    let (network, ports) = network_options(args)?;
    if let Some(name) = &args.name {
        id::check_name(name)?;
    }
    let mut env_entries = Vec::new();
    for file in &args.env_file {
        env_entries.extend(env::read_env_file(file)?);
    }
    for entry in &args.env {
        if let Some(entry) = env::resolve_entry(entry, |name| std::env::var(name).ok())? {
            env_entries.push(entry);
        }
    }
    let memory = args
        .memory
        .as_deref()
        .map(units::parse_memory)
        .transpose()
        .context("invalid argument for -m/--memory")?;
    let available = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let cpus = args
        .cpus
        .as_deref()
        .map(|text| Cpus::parse(text, available))
        .transpose()?;
    let volumes = args
        .volume
        .iter()
        .map(|text| prepare::parse_volume(text))
        .collect::<Result<Vec<VolumeSpec>, _>>()?;
    prepare::check_volumes(&volumes)?;
    let devices = devices::parse_devices(&args.device)?;
    if let Some(hostname) = &args.hostname {
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains(char::is_whitespace) {
            bail!("invalid hostname {hostname:?}");
        }
    }
    Ok(CreateOptions {
        name: args.name.clone().unwrap_or_default(),
        image: args.image.clone(),
        run: RunSpec {
            entrypoint: args.entrypoint.clone(),
            cmd: args.command.clone(),
            env: env_entries,
            workdir: args.workdir.clone(),
            user: args.user.clone(),
            hostname: args.hostname.clone().unwrap_or_default(),
            read_only: args.read_only,
            tty: args.tty,
            memory,
            cpus,
            security: security_options(args)?,
        },
        volumes,
        open_stdin: args.interactive,
        auto_remove: args.rm,
        network,
        ports,
        devices,
        log: LogConfig::parse(args.log_driver.as_deref(), &args.log_opt)?,
    })
}

/// Creates the container the flags describe (pulling its image when absent), not started;
/// returns its ID. Shared with `rvm create`.
pub fn create(layout: &Layout, flags: &ContainerFlags) -> Result<String> {
    let options = create_options(flags)?;
    let store = Store::open(layout.root()).context("cannot open the image store")?;
    ensure_image(&store, &options.image)?;
    if !options.name.is_empty() {
        container::open(layout)?.check_name_free(&options.name)?;
    }
    common::require_bootable_kvm()?;
    Ok(prepare::create_container(layout, &store, options)?.id)
}

fn run(layout: &Layout, args: RunArgs) -> Result<i32> {
    let id = create(layout, &args.flags)?;
    let containers = container::open(layout)?;
    if args.detach {
        return run_detached(&containers, &id);
    }
    let terminal = Terminal {
        tty: args.flags.tty,
        interactive: args.flags.interactive,
    };
    start_attached(&containers, &id, terminal)
}

/// What of the caller's terminal an attached container gets.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    /// The container has a pseudo-terminal: resizes are relayed, signals are not proxied.
    pub tty: bool,
    /// The caller's stdin is relayed (raw mode as well with `tty`).
    pub interactive: bool,
}

/// Starts the monitor of container `id` attached to this terminal and relays stdio until the
/// container ends; returns its exit code. Shared with `rvm start -a`.
pub fn start_attached(containers: &Containers, id: &str, terminal: Terminal) -> Result<i32> {
    let (ours, theirs) = StdUnixStream::pair().context("cannot create the attach socket")?;
    container::spawn_monitor(containers, id, Some(theirs))?;
    ours.set_nonblocking(true)
        .context("cannot set up the attach socket")?;
    let runtime = common::runtime()?;
    let result = runtime.block_on(attach(containers, id, ours, terminal));
    // The stdin reader may be blocked in read(2): do not wait for it.
    runtime.shutdown_background();
    result
}

/// Docker's order: an image that is not in the store is pulled, saying so first.
fn ensure_image(store: &Store, image: &str) -> Result<()> {
    let reference = Reference::parse(image)?;
    if store.resolve(&reference)?.is_some() {
        return Ok(());
    }
    eprintln!("Unable to find image '{}' locally", reference.familiar());
    pull::pull(store, &reference, true)
}

fn run_detached(containers: &Containers, id: &str) -> Result<i32> {
    container::spawn_monitor(containers, id, None)?;
    match container::wait_started(containers, id)? {
        Started::Running | Started::Exited { .. } => {
            println!("{id}");
            Ok(0)
        }
        Started::Failed { code, message } => {
            eprintln!(
                "rvm: Error response from the container's microVM: {}",
                escape::controls(&message)
            );
            Ok(code)
        }
    }
}

/// Relays stdio between this terminal and the monitor until the container ends.
async fn attach(
    containers: &Containers,
    id: &str,
    socket: StdUnixStream,
    args: Terminal,
) -> Result<i32> {
    let stream = UnixStream::from_std(socket).context("cannot use the attach socket")?;
    let (mut read, write) = stream.into_split();
    let write = std::sync::Arc::new(Mutex::new(write));
    let raw = if args.tty && args.interactive {
        terminal::RawMode::enter()
    } else {
        None
    };
    if args.tty {
        if let Some((rows, columns)) = terminal::size() {
            send(&write, Frame::Resize { rows, columns }).await;
        }
        tokio::spawn(forward_resizes(write.clone()));
    } else {
        tokio::spawn(forward_signals(write.clone()));
    }
    if args.interactive {
        tokio::spawn(forward_stdin(write.clone()));
    }
    let mut outcome = None;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    loop {
        match attach::read_frame(&mut read).await {
            Ok(Some(Frame::Stdout(data))) => {
                let _ = stdout.write_all(&data).await;
                let _ = stdout.flush().await;
            }
            Ok(Some(Frame::Stderr(data))) => {
                let _ = stderr.write_all(&data).await;
                let _ = stderr.flush().await;
            }
            Ok(Some(Frame::Exit(code))) => outcome = Some(Ok(code)),
            Ok(Some(Frame::Failed { code, message })) => outcome = Some(Err((code, message))),
            Ok(Some(_)) => {}
            // The monitor closes the socket once the container is cleaned up.
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(%err, "attach socket failed");
                break;
            }
        }
    }
    drop(raw);
    match outcome {
        Some(Ok(code)) => Ok(code),
        Some(Err((code, message))) => {
            let _ = std::io::stdout().flush();
            eprintln!(
                "rvm: Error response from the container's microVM: {}",
                escape::controls(&message)
            );
            Ok(code)
        }
        None => lost_monitor(containers, id),
    }
}

/// The monitor went away without reporting: use what the state file says.
fn lost_monitor(containers: &Containers, id: &str) -> Result<i32> {
    let container = containers.load(id)?;
    match container.state.lifecycle {
        Lifecycle::Exited(ended) => Ok(ended.code),
        other => bail!(
            "lost the connection to the monitor of container {id}: {}",
            other
                .ended()
                .and_then(|ended| ended.error.clone())
                .unwrap_or_else(|| "see its monitor.log".to_owned())
        ),
    }
}

async fn send(write: &Mutex<OwnedWriteHalf>, frame: Frame) -> bool {
    let mut write = write.lock().await;
    attach::write_frame(&mut *write, &frame).await.is_ok()
}

async fn forward_stdin(write: std::sync::Arc<Mutex<OwnedWriteHalf>>) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 32 << 10];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                send(&write, Frame::StdinEof).await;
                return;
            }
            Ok(n) => {
                if !send(&write, Frame::Stdin(buffer[..n].to_vec())).await {
                    return;
                }
            }
        }
    }
}

async fn forward_resizes(write: std::sync::Arc<Mutex<OwnedWriteHalf>>) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some((rows, columns)) = terminal::size() {
            if !send(&write, Frame::Resize { rows, columns }).await {
                return;
            }
        }
    }
}

/// Docker's sig-proxy: SIGINT and SIGTERM received by `rvm run` go to the container.
async fn forward_signals(write: std::sync::Arc<Mutex<OwnedWriteHalf>>) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let number = tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        };
        if !send(&write, Frame::Signal(number)).await {
            return;
        }
    }
}

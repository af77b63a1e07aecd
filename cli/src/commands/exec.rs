//! `rvm exec [-i] [-t] CONTAINER COMMAND...`: runs a command in a running container, talking to
//! its agent directly over the VMM's vsock socket (the monitor is not involved).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rvm_protocol::agent::ExecProcessRequest;
use rvm_protocol::exit;
use rvm_runtime::sandbox::agent::AgentSession;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::log::Stream;
use rvm_runtime::sandbox::spec::{self, SpecUser};
use rvm_runtime::sandbox::state::Status;
use rvm_runtime::sandbox::{env, id};
use rvm_runtime::vm::stdio::{self, Writer};
use tokio::signal::unix::{signal, SignalKind};

use super::common::{self, report, EXIT_FAILED};
use super::{container, terminal};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Detached mode: run command in the background
    #[arg(short, long)]
    detach: bool,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// An error with the exit code `rvm exec` gives it.
struct ExecFailure {
    code: i32,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for ExecFailure {
    fn from(error: E) -> Self {
        Self {
            code: EXIT_FAILED,
            error: error.into(),
        }
    }
}

pub fn main(layout: &Layout, args: ExecArgs) -> i32 {
    common::init_tracing();
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(err) => return report(&err, exit::RUNTIME_ERROR),
    };
    let result = runtime.block_on(exec(layout, &args));
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(failure) => report(&failure.error, failure.code),
    }
}

fn process_json(
    found: &rvm_runtime::sandbox::state::Container,
    args: &ExecArgs,
) -> Result<Vec<u8>> {
    let base = found
        .config
        .spec
        .process()
        .clone()
        .context("the container's spec has no process")?;
    let mut extra = Vec::new();
    for entry in &args.env {
        if let Some(entry) = env::resolve_entry(entry, |name| std::env::var(name).ok())? {
            extra.push(entry);
        }
    }
    let environment = env::merge(&base.env().clone().unwrap_or_default(), &extra);
    let cwd = match &args.workdir {
        Some(dir) if !dir.starts_with('/') => {
            bail!("the working directory '{dir}' is invalid, it needs to be an absolute path")
        }
        Some(dir) => dir.clone(),
        None => base.cwd().display().to_string(),
    };
    let mut process = match &args.user {
        Some(user) => spec::build_process(
            args.command.clone(),
            environment,
            &cwd,
            &spec::parse_user(user)?,
            args.tty,
        )?,
        None => {
            let mut process = spec::build_process(
                args.command.clone(),
                environment,
                &cwd,
                &SpecUser::Ids { uid: 0, gid: 0 },
                args.tty,
            )?;
            process.set_user(base.user().clone());
            process
        }
    };
    process.set_terminal(Some(args.tty));
    // An exec has the container's capabilities and no_new_privileges, as Docker's do.
    process.set_capabilities(base.capabilities().clone());
    process.set_no_new_privileges(base.no_new_privileges());
    Ok(serde_json::to_vec(&process)?)
}

async fn exec(layout: &Layout, args: &ExecArgs) -> Result<i32, ExecFailure> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, &args.container)?;
    let cid = found.config.id.clone();
    if found.state.status() != Status::Running {
        return Err(anyhow::anyhow!("container {cid} is not running").into());
    }
    if found.state.is_paused() {
        return Err(anyhow::anyhow!(
            "Container {cid} is paused, unpause the container before exec"
        )
        .into());
    }
    let request = ExecProcessRequest {
        container_id: cid.clone(),
        exec_id: id::new_id()?[..16].to_owned(),
        oci_process_json: process_json(&found, args)?,
        terminal: args.tty,
        stdin: args.interactive,
        ..Default::default()
    };
    let session = container::connect(&containers, &cid).await?;
    let started = session.exec(&request).await.map_err(|err| ExecFailure {
        code: err.exit_code(),
        error: anyhow::anyhow!("{}", err.agent_message()),
    })?;
    if let Some(failure) = started.failure {
        return Err(ExecFailure {
            code: failure.code,
            error: anyhow::anyhow!("{}", failure.message),
        });
    }
    if args.detach {
        return Ok(0);
    }
    let exec_id = request.exec_id.clone();
    let raw = if args.tty && args.interactive {
        terminal::RawMode::enter()
    } else {
        None
    };
    if args.tty {
        if let Some((rows, columns)) = terminal::size() {
            let _ = session.resize(&cid, &exec_id, rows, columns).await;
        }
        tokio::spawn(forward_resizes(
            session.clone(),
            cid.clone(),
            exec_id.clone(),
        ));
    }
    let pumps = [
        stdio::spawn_output(
            &session,
            &cid,
            &exec_id,
            Stream::Stdout,
            Writer(tokio::io::stdout()),
        ),
        stdio::spawn_output(
            &session,
            &cid,
            &exec_id,
            Stream::Stderr,
            Writer(tokio::io::stderr()),
        ),
    ];
    if args.interactive {
        tokio::spawn(stdio::copy_input(
            session.clone(),
            cid.clone(),
            exec_id.clone(),
            tokio::io::stdin(),
        ));
    }
    let status = session.wait(&cid, &exec_id).await?;
    for pump in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(10), pump).await;
    }
    drop(raw);
    Ok(status.code)
}

/// Follows the terminal's size (SIGWINCH) on the exec's pty.
async fn forward_resizes(session: AgentSession, cid: String, exec_id: String) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some((rows, columns)) = terminal::size() {
            if session.resize(&cid, &exec_id, rows, columns).await.is_err() {
                return;
            }
        }
    }
}

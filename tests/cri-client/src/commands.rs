//! The subcommands: each makes its CRI calls and prints an id, JSON or the exec's output.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerFilter, ContainerMetadata, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, ListContainersRequest, ListPodSandboxRequest, Mount,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use serde_json::Value;

use crate::cli::{Cli, Command, Create, Exec};
use crate::connect::{call, connect, Client};
use crate::{output, sandbox};

/// The CRI API version this client speaks.
const API_VERSION: &str = "v1";

/// Runs the command; returns the process's exit status (an exec's own, else 0).
pub async fn run(cli: Cli) -> Result<u8> {
    let deadline = Duration::from_secs(cli.timeout);
    let mut client = connect(&cli.socket, deadline).await?;
    let c = &mut client;
    match cli.command {
        Command::Version => {
            let version = call(
                "Version",
                deadline,
                c.version(VersionRequest {
                    version: API_VERSION.to_string(),
                }),
            )
            .await?;
            println!(
                "{} {} (CRI {})",
                version.runtime_name, version.runtime_version, version.runtime_api_version
            );
        }
        Command::Runp(args) => {
            let request = RunPodSandboxRequest {
                config: Some(sandbox::run_config(&args)),
                runtime_handler: args.handler.clone().unwrap_or_default(),
            };
            let response = call("RunPodSandbox", deadline, c.run_pod_sandbox(request)).await?;
            println!("{}", response.pod_sandbox_id);
        }
        Command::Create(args) => println!("{}", create(c, deadline, args).await?),
        Command::Start { container } => {
            let request = StartContainerRequest {
                container_id: container,
            };
            call("StartContainer", deadline, c.start_container(request)).await?;
        }
        Command::Stop { container, grace } => {
            let request = StopContainerRequest {
                container_id: container,
                timeout: i64::try_from(grace).context("--grace is too large")?,
            };
            // The call lasts as long as the grace period, and then some.
            let deadline = deadline.max(Duration::from_secs(grace.saturating_add(30)));
            call("StopContainer", deadline, c.stop_container(request)).await?;
        }
        Command::Rm { container } => {
            let request = RemoveContainerRequest {
                container_id: container,
            };
            call("RemoveContainer", deadline, c.remove_container(request)).await?;
        }
        Command::Stopp { pod } => {
            let request = StopPodSandboxRequest {
                pod_sandbox_id: pod,
            };
            call("StopPodSandbox", deadline, c.stop_pod_sandbox(request)).await?;
        }
        Command::Rmp { pod } => {
            let request = RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            };
            call("RemovePodSandbox", deadline, c.remove_pod_sandbox(request)).await?;
        }
        Command::Exec(args) => return exec(c, deadline, args).await,
        Command::Inspect { container } => {
            let request = ContainerStatusRequest {
                container_id: container,
                verbose: true,
            };
            let response = call("ContainerStatus", deadline, c.container_status(request)).await?;
            print_json(&output::container_status(&response))?;
        }
        Command::Inspectp { pod } => {
            let request = PodSandboxStatusRequest {
                pod_sandbox_id: pod,
                verbose: true,
            };
            let response =
                call("PodSandboxStatus", deadline, c.pod_sandbox_status(request)).await?;
            print_json(&output::pod_status(&response))?;
        }
        Command::Ps { pod } => {
            let request = ListContainersRequest {
                filter: pod.map(|pod| ContainerFilter {
                    pod_sandbox_id: pod,
                    ..Default::default()
                }),
            };
            let response = call("ListContainers", deadline, c.list_containers(request)).await?;
            print_json(&output::containers(&response.containers))?;
        }
        Command::Pods => {
            let request = ListPodSandboxRequest { filter: None };
            let response = call("ListPodSandbox", deadline, c.list_pod_sandbox(request)).await?;
            print_json(&output::pods(&response.items))?;
        }
    }
    Ok(0)
}

/// CreateContainer, with the sandbox config rebuilt from the pod's status (see `sandbox`).
async fn create(c: &mut Client, deadline: Duration, args: Create) -> Result<String> {
    let status_request = PodSandboxStatusRequest {
        pod_sandbox_id: args.pod.clone(),
        verbose: true,
    };
    let status = call(
        "PodSandboxStatus",
        deadline,
        c.pod_sandbox_status(status_request),
    )
    .await
    .with_context(|| format!("pod sandbox {}", args.pod))?;
    let sandbox_config = sandbox::config_from_status(&status);
    let namespace_options = sandbox::pod_namespace_options(&status);
    // A log path without a log directory would be relative to containerd's working directory.
    let log_path = if sandbox_config.log_directory.is_empty() {
        String::new()
    } else {
        format!("{}.log", args.name)
    };
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: args.name.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: args.image,
            ..Default::default()
        }),
        command: args.command,
        working_dir: args.workdir.unwrap_or_default(),
        envs: args
            .envs
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        annotations: args.annotations.into_iter().collect(),
        mounts: args
            .mounts
            .into_iter()
            .map(|m| Mount {
                container_path: m.container_path,
                host_path: m.host_path,
                readonly: m.read_only,
                ..Default::default()
            })
            .collect(),
        log_path,
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options),
                capabilities: (!args.cap_add.is_empty()).then(|| Capability {
                    add_capabilities: args.cap_add,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let request = CreateContainerRequest {
        pod_sandbox_id: args.pod,
        config: Some(config),
        sandbox_config: Some(sandbox_config),
    };
    let response = call("CreateContainer", deadline, c.create_container(request))
        .await
        .with_context(|| format!("container {}", args.name))?;
    Ok(response.container_id)
}

/// ExecSync: the command's stdout and stderr to ours, its exit code as ours (low 8 bits).
async fn exec(c: &mut Client, deadline: Duration, args: Exec) -> Result<u8> {
    let request = ExecSyncRequest {
        container_id: args.container,
        cmd: args.command,
        timeout: i64::try_from(args.exec_timeout).context("exec --timeout is too large")?,
    };
    let deadline = if args.exec_timeout == 0 {
        deadline
    } else {
        deadline.max(Duration::from_secs(args.exec_timeout.saturating_add(30)))
    };
    let response = call("ExecSync", deadline, c.exec_sync(request)).await?;
    std::io::stdout()
        .write_all(&response.stdout)
        .context("writing the exec's stdout")?;
    std::io::stderr()
        .write_all(&response.stderr)
        .context("writing the exec's stderr")?;
    Ok(u8::try_from(response.exit_code & 0xff).unwrap_or(u8::MAX))
}

fn print_json(value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("formatting JSON")?;
    println!("{text}");
    Ok(())
}

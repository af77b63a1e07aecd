//! `rvm inspect CONTAINER...`: a JSON array shaped like Docker's container inspect output.

use std::path::PathBuf;

use clap::Args;
use rvm_runtime::sandbox::config::{ContainerConfig, NetworkMode};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::log::LogDriver;
use rvm_runtime::sandbox::state::{Container, Status};
use serde_json::{json, Value};

use super::common::{report, EXIT_FAILED};
use super::container;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: InspectArgs) -> i32 {
    let containers = match container::open(layout) {
        Ok(containers) => containers,
        Err(err) => return report(&err, EXIT_FAILED),
    };
    let mut code = 0;
    let mut out = Vec::new();
    for name in &args.containers {
        match container::find(&containers, name) {
            Ok(found) => out.push(describe(layout, &found)),
            Err(err) => code = report(&err, EXIT_FAILED),
        }
    }
    match serde_json::to_string_pretty(&out) {
        Ok(text) => println!("{text}"),
        Err(err) => code = report(&err.into(), EXIT_FAILED),
    }
    code
}

/// Docker's fields, from the config and state.
pub fn describe(layout: &Layout, c: &Container) -> Value {
    let config = &c.config;
    let state = &c.state;
    let ended = state.lifecycle.ended();
    let process = config.spec.process().as_ref();
    let args = process.and_then(|p| p.args().clone()).unwrap_or_default();
    let memory = config
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .unwrap_or(0);
    json!({
        "Id": config.id,
        "Created": config.created,
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state.status().as_str(),
            "Running": state.status() == Status::Running,
            "Paused": state.is_paused(),
            "Restarting": false,
            "OOMKilled": ended.is_some_and(|e| e.oom_killed),
            "Dead": false,
            "Pid": state.vmm.map_or(0, |p| p.pid),
            "ExitCode": state.exit_code().unwrap_or(0),
            "Error": ended.and_then(|e| e.error.clone()).unwrap_or_default(),
            "StartedAt": state.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": ended.and_then(|e| e.finished_at.clone()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        },
        "Image": config.image_id,
        "LogPath": match config.log.driver {
            LogDriver::JsonFile => layout.log_path(&config.id),
            LogDriver::None => PathBuf::new(),
        },
        "Name": format!("/{}", config.name),
        "Driver": "rvm-microvm",
        "HostConfig": {
            "Memory": memory,
            "NanoCpus": 0,
            "AutoRemove": config.auto_remove,
            "NetworkMode": network_mode(config),
            "PortBindings": port_bindings(config),
            "ReadonlyRootfs": config.spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false),
            "Privileged": config.privileged,
            "Devices": config.devices.iter().map(|d| json!({"PathOnHost": d.host_path, "PathInContainer": d.container_path, "CgroupPermissions": d.permissions})).collect::<Vec<_>>(),
            "LogConfig": config.log.docker_view(),
        },
        "Config": {
            "Hostname": config.hostname(),
            "Tty": config.tty,
            "OpenStdin": config.open_stdin,
            "Env": process.and_then(|p| p.env().clone()).unwrap_or_default(),
            "Cmd": args,
            "Image": config.image,
            "WorkingDir": process.map(|p| p.cwd().display().to_string()).unwrap_or_default(),
        },
        "VM": {
            "MemoryMiB": config.vm.memory_mib,
            "Vcpus": config.vm.vcpus,
            "Disks": config.layers.iter().map(|l| json!({"Path": l.path, "Serial": l.serial, "DiffID": l.diff_id})).collect::<Vec<_>>(),
            "Scratch": config.scratch,
            "Monitor": state.monitor.map(|p| p.pid),
            "Vmm": state.vmm.map(|p| p.pid),
            "GuestPid": state.guest_pid,
            "Jail": state.jail,
        },
        "NetworkSettings": network_settings(config),
        "Mounts": config.volumes.iter().map(|v| json!({"Type": "volume", "Name": v.name, "Source": v.path, "Destination": v.destination, "RW": !v.read_only})).collect::<Vec<_>>(),
    })
}

fn network_mode(config: &ContainerConfig) -> &'static str {
    match config.network {
        NetworkMode::None => "none",
        NetworkMode::Bridge => "bridge",
    }
}

/// Docker's `HostConfig.PortBindings`: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
fn port_bindings(config: &ContainerConfig) -> Value {
    let mut bindings = serde_json::Map::new();
    for port in config.endpoint.iter().flat_map(|e| &e.ports) {
        let key = format!("{}/{}", port.container_port, port.protocol.as_str());
        let entry = bindings.entry(key).or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(
                json!({"HostIp": port.host_ip.to_string(), "HostPort": port.host_port.to_string()}),
            );
        }
    }
    Value::Object(bindings)
}

/// Docker's `NetworkSettings`, with the address in the places scripts look for it.
fn network_settings(config: &ContainerConfig) -> Value {
    let Some(endpoint) = &config.endpoint else {
        return json!({"IPAddress": "", "Networks": {"none": {}}});
    };
    let bridge = json!({
        "IPAddress": endpoint.ip.to_string(),
        "IPPrefixLen": endpoint.prefix,
        "Gateway": endpoint.gateway.to_string(),
        "MacAddress": endpoint.mac,
    });
    json!({
        "IPAddress": endpoint.ip.to_string(),
        "IPPrefixLen": endpoint.prefix,
        "Gateway": endpoint.gateway.to_string(),
        "MacAddress": endpoint.mac,
        "Ports": port_bindings(config),
        "Tap": endpoint.tap,
        "Networks": {"bridge": bridge},
    })
}

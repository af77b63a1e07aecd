//! JSON for what the commands print: statuses and lists, with states by their CRI names
//! (`CONTAINER_RUNNING`, `SANDBOX_READY`) rather than the wire's numbers.

use std::collections::HashMap;

use k8s_cri::v1::{
    Container, ContainerState, ContainerStatusResponse, PodSandbox, PodSandboxState,
    PodSandboxStatusResponse,
};
use serde_json::{json, Value};

/// The name of a container state as the CRI spells it (`CONTAINER_UNKNOWN(7)` when out of range).
pub fn container_state_name(state: i32) -> String {
    ContainerState::try_from(state)
        .map(|state| state.as_str_name().to_string())
        .unwrap_or_else(|_| format!("CONTAINER_UNKNOWN({state})"))
}

/// The name of a pod sandbox state as the CRI spells it (`SANDBOX_UNKNOWN(7)` when out of range).
pub fn sandbox_state_name(state: i32) -> String {
    PodSandboxState::try_from(state)
        .map(|state| state.as_str_name().to_string())
        .unwrap_or_else(|_| format!("SANDBOX_UNKNOWN({state})"))
}

/// The verbose info's `info` entry parsed as JSON (containerd's), if it is JSON.
fn verbose_info(info: &HashMap<String, String>) -> Option<Value> {
    serde_json::from_str(info.get("info")?).ok()
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub fn container_status(response: &ContainerStatusResponse) -> Value {
    let status = response.status.clone().unwrap_or_default();
    let pid = verbose_info(&response.info).and_then(|info| info.get("pid").cloned());
    json!({
        "id": status.id,
        "metadata": to_value(&status.metadata),
        "state": container_state_name(status.state),
        "created_at": status.created_at,
        "started_at": status.started_at,
        "finished_at": status.finished_at,
        "exit_code": status.exit_code,
        "reason": status.reason,
        "message": status.message,
        "image": status.image.map(|image| image.image).unwrap_or_default(),
        "image_ref": status.image_ref,
        "log_path": status.log_path,
        "labels": status.labels,
        "annotations": status.annotations,
        "pid": pid,
    })
}

pub fn pod_status(response: &PodSandboxStatusResponse) -> Value {
    let status = response.status.clone().unwrap_or_default();
    let network = status.network.unwrap_or_default();
    let info = verbose_info(&response.info);
    let pid = info.as_ref().and_then(|info| info.get("pid").cloned());
    json!({
        "id": status.id,
        "metadata": to_value(&status.metadata),
        "state": sandbox_state_name(status.state),
        "created_at": status.created_at,
        "network": {
            "ip": network.ip,
            "additional_ips": network.additional_ips.iter().map(|ip| ip.ip.clone()).collect::<Vec<_>>(),
        },
        "labels": status.labels,
        "annotations": status.annotations,
        "runtime_handler": status.runtime_handler,
        "pid": pid,
        "netns": info.as_ref().and_then(network_namespace_path),
        "spec_annotations": info.as_ref().and_then(spec_annotations),
    })
}

/// The annotations of the sandbox's OCI spec in containerd's verbose info: what the runtime was
/// given (the pod's sizing annotations among them).
fn spec_annotations(info: &Value) -> Option<Value> {
    info.get("runtimeSpec")?.get("annotations").cloned()
}

/// The network namespace's path in the sandbox's OCI spec of containerd's verbose info (a
/// bind mount like /var/run/netns/cni-UUID that must be gone once the pod is removed).
fn network_namespace_path(info: &Value) -> Option<Value> {
    info.get("runtimeSpec")?
        .get("linux")?
        .get("namespaces")?
        .as_array()?
        .iter()
        .find(|namespace| namespace.get("type").and_then(Value::as_str) == Some("network"))?
        .get("path")
        .cloned()
}

pub fn containers(items: &[Container]) -> Value {
    items
        .iter()
        .map(|container| {
            json!({
                "id": container.id,
                "pod_sandbox_id": container.pod_sandbox_id,
                "name": container.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                "image": container.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
                "image_ref": container.image_ref,
                "state": container_state_name(container.state),
                "created_at": container.created_at,
                "labels": container.labels,
                "annotations": container.annotations,
            })
        })
        .collect()
}

pub fn pods(items: &[PodSandbox]) -> Value {
    items
        .iter()
        .map(|pod| {
            json!({
                "id": pod.id,
                "metadata": to_value(&pod.metadata),
                "state": sandbox_state_name(pod.state),
                "created_at": pod.created_at,
                "labels": pod.labels,
                "annotations": pod.annotations,
                "runtime_handler": pod.runtime_handler,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        ContainerStatus, ImageSpec, PodIp, PodSandboxNetworkStatus, PodSandboxStatus,
    };

    #[test]
    fn states_have_their_cri_names() {
        assert_eq!(container_state_name(0), "CONTAINER_CREATED");
        assert_eq!(container_state_name(1), "CONTAINER_RUNNING");
        assert_eq!(container_state_name(2), "CONTAINER_EXITED");
        assert_eq!(container_state_name(3), "CONTAINER_UNKNOWN");
        assert_eq!(container_state_name(9), "CONTAINER_UNKNOWN(9)");
        assert_eq!(sandbox_state_name(0), "SANDBOX_READY");
        assert_eq!(sandbox_state_name(1), "SANDBOX_NOTREADY");
        assert_eq!(sandbox_state_name(-1), "SANDBOX_UNKNOWN(-1)");
    }

    #[test]
    fn container_status_has_state_name_image_and_pid_from_info() {
        let response = ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: "c".to_string(),
                state: ContainerState::ContainerExited as i32,
                exit_code: 3,
                image: Some(ImageSpec {
                    image: "busybox".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            info: HashMap::from([("info".to_string(), r#"{"pid": 42}"#.to_string())]),
        };
        let value = container_status(&response);
        assert_eq!(value["state"], "CONTAINER_EXITED");
        assert_eq!(value["exit_code"], 3);
        assert_eq!(value["image"], "busybox");
        assert_eq!(value["pid"], 42);
    }

    #[test]
    fn pod_status_has_ips_and_handler() {
        let response = PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: "p".to_string(),
                state: PodSandboxState::SandboxNotready as i32,
                network: Some(PodSandboxNetworkStatus {
                    ip: "10.99.0.2".to_string(),
                    additional_ips: vec![PodIp {
                        ip: "fd00::2".to_string(),
                    }],
                }),
                runtime_handler: "rvm".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let value = pod_status(&response);
        assert_eq!(value["state"], "SANDBOX_NOTREADY");
        assert_eq!(value["network"]["ip"], "10.99.0.2");
        assert_eq!(value["network"]["additional_ips"][0], "fd00::2");
        assert_eq!(value["runtime_handler"], "rvm");
        assert_eq!(value["pid"], Value::Null);
        assert_eq!(value["netns"], Value::Null);
        assert_eq!(value["spec_annotations"], Value::Null);
    }

    #[test]
    fn pod_status_has_the_netns_path_from_the_spec_in_info() {
        let info = r#"{"pid": 7, "runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]},
            "annotations": {"io.kubernetes.cri.sandbox-memory": "268435456"}}}"#;
        let response = PodSandboxStatusResponse {
            info: HashMap::from([("info".to_string(), info.to_string())]),
            ..Default::default()
        };
        let value = pod_status(&response);
        assert_eq!(value["pid"], 7);
        assert_eq!(value["netns"], "/var/run/netns/cni-1");
        assert_eq!(
            value["spec_annotations"]["io.kubernetes.cri.sandbox-memory"],
            "268435456"
        );
    }
}

//! Pod sandbox configs: the one `runp` sends, and the one `create` rebuilds from the pod's
//! status (CreateContainer wants the sandbox config again; a client that did not keep it, like
//! this one between two runs, rebuilds it from PodSandboxStatus).

use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxStatusResponse,
};
use serde_json::Value;

use crate::cli::{derive_uid, PodResources, Runp};

/// The CFS period kubelet sends with a pod's CPU limit.
const KUBELET_CPU_PERIOD: i64 = 100_000;

/// The namespace options kubelet sends for a pod and each of its containers: the pod's network
/// and IPC namespaces, and a pid namespace per container unless the pod shares one
/// (shareProcessNamespace). CRI's zero value of a mode is POD, so they are always sent.
pub fn namespace_options(share_pid: bool) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod.into(),
        pid: if share_pid {
            NamespaceMode::Pod
        } else {
            NamespaceMode::Container
        }
        .into(),
        ipc: NamespaceMode::Pod.into(),
        ..Default::default()
    }
}

/// The pod's namespace options from its status; kubelet's default (no shared pid namespace)
/// when the status has none.
pub fn pod_namespace_options(response: &PodSandboxStatusResponse) -> NamespaceOption {
    response
        .status
        .as_ref()
        .and_then(|status| status.linux.as_ref())
        .and_then(|linux| linux.namespaces.as_ref())
        .and_then(|namespaces| namespaces.options.clone())
        .unwrap_or_else(|| namespace_options(false))
}

/// The config `runp` sends: linux with an empty cgroup parent and a security context with
/// kubelet's namespace options only (the runtime's defaults for the rest), the pod's resources
/// if given, no DNS config and no port mappings.
pub fn run_config(args: &Runp) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(k8s_cri::v1::PodSandboxMetadata {
            name: args.name.clone(),
            uid: args
                .uid
                .clone()
                .unwrap_or_else(|| derive_uid(&args.namespace, &args.name)),
            namespace: args.namespace.clone(),
            attempt: 0,
        }),
        hostname: args.hostname.clone().unwrap_or_default(),
        log_directory: args.log_dir.clone().unwrap_or_default(),
        annotations: args.annotations.iter().cloned().collect(),
        linux: Some(LinuxPodSandboxConfig {
            resources: resources(&args.resources),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(args.share_pid)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `linux.resources` as kubelet fills it: 0 for what is not limited, the default period with a
/// quota. None when nothing is limited.
fn resources(pod: &PodResources) -> Option<LinuxContainerResources> {
    if *pod == PodResources::default() {
        return None;
    }
    let cpu_period = match (pod.cpu_period, pod.cpu_quota) {
        (Some(period), _) => period,
        (None, Some(_)) => KUBELET_CPU_PERIOD,
        (None, None) => 0,
    };
    Some(LinuxContainerResources {
        cpu_period,
        cpu_quota: pod.cpu_quota.unwrap_or(0),
        memory_limit_in_bytes: pod.memory_limit.unwrap_or(0),
        ..Default::default()
    })
}

/// The sandbox config rebuilt from a verbose PodSandboxStatus: metadata, labels and annotations
/// from the status; hostname and log directory from the original config when the runtime puts
/// it in the verbose info (containerd: `info["info"]` is JSON with a `config` object).
pub fn config_from_status(response: &PodSandboxStatusResponse) -> PodSandboxConfig {
    let status = response.status.clone().unwrap_or_default();
    let original = original_config(&response.info);
    let text = |snake: &str, camel: &str| {
        original
            .as_ref()
            .and_then(|config| config.get(snake).or_else(|| config.get(camel)))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    PodSandboxConfig {
        metadata: status.metadata,
        hostname: text("hostname", "hostname"),
        log_directory: text("log_directory", "logDirectory"),
        labels: status.labels,
        annotations: status.annotations,
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(pod_namespace_options(response)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `config` object of containerd's verbose sandbox info, if there is one.
fn original_config(info: &HashMap<String, String>) -> Option<Value> {
    let info: Value = serde_json::from_str(info.get("info")?).ok()?;
    info.get("config").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{PodSandboxMetadata, PodSandboxStatus};

    fn status_response(info: Option<&str>) -> PodSandboxStatusResponse {
        PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: "abc".to_string(),
                metadata: Some(PodSandboxMetadata {
                    name: "p1".to_string(),
                    uid: "u1".to_string(),
                    namespace: "ns".to_string(),
                    attempt: 0,
                }),
                labels: HashMap::from([("l".to_string(), "1".to_string())]),
                annotations: HashMap::from([("a".to_string(), "2".to_string())]),
                ..Default::default()
            }),
            info: info
                .map(|text| HashMap::from([("info".to_string(), text.to_string())]))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn rebuilt_config_takes_metadata_labels_annotations_and_the_original_log_dir() {
        let info = r#"{"pid": 42, "config": {"metadata": {"name": "p1"},
            "hostname": "h1", "log_directory": "/tmp/logs"}}"#;
        let config = config_from_status(&status_response(Some(info)));
        let metadata = config.metadata.unwrap();
        assert_eq!(
            (metadata.name.as_str(), metadata.uid.as_str()),
            ("p1", "u1")
        );
        assert_eq!(metadata.namespace, "ns");
        assert_eq!(config.labels["l"], "1");
        assert_eq!(config.annotations["a"], "2");
        assert_eq!(config.hostname, "h1");
        assert_eq!(config.log_directory, "/tmp/logs");
    }

    #[test]
    fn namespace_options_are_kubelets_and_the_pods_pid_mode_carries_over() {
        let own = namespace_options(false);
        assert_eq!(own.pid, i32::from(NamespaceMode::Container));
        assert_eq!(
            (own.network, own.ipc),
            (NamespaceMode::Pod.into(), NamespaceMode::Pod.into())
        );
        let shared = namespace_options(true);
        assert_eq!(shared.pid, i32::from(NamespaceMode::Pod));
        // No options in the status: kubelet's default, not CRI's zero value (POD).
        assert_eq!(pod_namespace_options(&status_response(None)), own);
        let mut response = status_response(None);
        if let Some(status) = response.status.as_mut() {
            status.linux = Some(k8s_cri::v1::LinuxPodSandboxStatus {
                namespaces: Some(k8s_cri::v1::Namespace {
                    options: Some(shared.clone()),
                }),
            });
        }
        assert_eq!(pod_namespace_options(&response), shared);
        let rebuilt = config_from_status(&response);
        let options = rebuilt
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options);
        assert_eq!(options, Some(shared));
    }

    #[test]
    fn rebuilt_config_without_info_has_no_log_dir() {
        for info in [None, Some("not json"), Some(r#"{"pid": 1}"#)] {
            let config = config_from_status(&status_response(info));
            assert_eq!(config.log_directory, "");
            assert_eq!(config.metadata.unwrap().name, "p1");
        }
    }

    #[test]
    fn run_config_derives_the_uid_when_none_is_given() {
        let args = Runp {
            name: "p1".to_string(),
            namespace: "default".to_string(),
            uid: None,
            handler: None,
            hostname: None,
            log_dir: Some("/tmp/logs".to_string()),
            annotations: vec![("k".to_string(), "v".to_string())],
            share_pid: false,
            resources: PodResources::default(),
        };
        let config = run_config(&args);
        assert_eq!(config.metadata.unwrap().uid, derive_uid("default", "p1"));
        assert_eq!(config.log_directory, "/tmp/logs");
        assert_eq!(config.annotations["k"], "v");
        let linux = config.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "");
        assert_eq!(linux.resources, None);
        let options = linux.security_context.and_then(|s| s.namespace_options);
        assert_eq!(options, Some(namespace_options(false)));
    }

    #[test]
    fn resources_are_sent_as_kubelet_sends_them() {
        let memory_only = PodResources {
            memory_limit: Some(256 << 20),
            ..Default::default()
        };
        let sent = resources(&memory_only).unwrap();
        assert_eq!(
            (sent.memory_limit_in_bytes, sent.cpu_quota, sent.cpu_period),
            (256 << 20, 0, 0)
        );
        let cpus = PodResources {
            cpu_quota: Some(200_000),
            ..Default::default()
        };
        let sent = resources(&cpus).unwrap();
        assert_eq!(
            (sent.memory_limit_in_bytes, sent.cpu_quota, sent.cpu_period),
            (0, 200_000, KUBELET_CPU_PERIOD)
        );
        let period = PodResources {
            cpu_quota: Some(50_000),
            cpu_period: Some(50_000),
            ..Default::default()
        };
        assert_eq!(resources(&period).unwrap().cpu_period, 50_000);
    }
}

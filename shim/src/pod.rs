//! Pod grouping from the CRI annotations: which role a task plays (a pod's sandbox, a container
//! of a pod, or a standalone task such as a plain `ctr run`) and which shim serves it.
//!
//! containerd's CRI plugin marks every container of a pod with the pod's sandbox id and a
//! container type; the shim's `start` groups tasks by the sandbox id, so one long-lived shim (and
//! one VM) serves the whole pod.

use std::collections::HashMap;

use rvm_protocol::namespace::SharedNamespace;

/// The pod's sandbox id, on the sandbox and on every container of the pod.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// `sandbox` on the pod's sandbox (pause) container, `container` on the others.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The container's name in its pod (kubelet's `container.Name`), on every container of a pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// What a task is to its shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No CRI annotations: the task gets its own VM.
    Standalone,
    /// The pod's sandbox: boots the pod's VM and runs the pause process in it.
    Sandbox { sandbox_id: String },
    /// A container of the pod whose VM the sandbox `sandbox_id` booted.
    Container { sandbox_id: String },
}

/// The role of the task with these annotations. A type other than `sandbox`/`container`, or a
/// type without a sandbox id, is standalone.
pub fn role(annotations: Option<&HashMap<String, String>>) -> Role {
    let Some(annotations) = annotations else {
        return Role::Standalone;
    };
    let Some(sandbox_id) = annotations.get(SANDBOX_ID).filter(|id| !id.is_empty()) else {
        return Role::Standalone;
    };
    let sandbox_id = sandbox_id.clone();
    match annotations.get(CONTAINER_TYPE).map(String::as_str) {
        Some("sandbox") => Role::Sandbox { sandbox_id },
        Some("container") => Role::Container { sandbox_id },
        _ => Role::Standalone,
    }
}

/// The network namespace the spec joins by path (CNI's, for a pod's sandbox); None when the
/// spec makes a new one or has none.
pub fn network_namespace(spec: &oci_spec::runtime::Spec) -> Option<std::path::PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)?
        .path()
        .clone()
        .filter(|path| !path.as_os_str().is_empty())
}

/// The namespaces of the pod's sandbox the spec joins by path that the agent can share in the
/// VM; CRI gives a pod's containers the sandbox's IPC and UTS namespaces, and its pid namespace
/// when the container's `namespace_options.pid` is POD (Kubernetes' `shareProcessNamespace`).
/// CRI's TARGET mode (an ephemeral container joining one other container's) cannot be told
/// apart here, since every task of a pod reports the VM's pid: it joins the sandbox's too.
pub fn shared_namespaces(spec: &oci_spec::runtime::Spec) -> Vec<SharedNamespace> {
    use oci_spec::runtime::LinuxNamespaceType;
    let Some(namespaces) = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()) else {
        return Vec::new();
    };
    namespaces
        .iter()
        .filter(|ns| {
            ns.path()
                .as_ref()
                .is_some_and(|p| !p.as_os_str().is_empty())
        })
        .filter_map(|ns| match ns.typ() {
            LinuxNamespaceType::Ipc => Some(SharedNamespace::Ipc),
            LinuxNamespaceType::Uts => Some(SharedNamespace::Uts),
            LinuxNamespaceType::Pid => Some(SharedNamespace::Pid),
            _ => None,
        })
        .collect()
}

/// [`shared_namespaces`] as `CreateContainerRequest.sandbox_namespaces` carries them.
pub fn sandbox_namespaces(spec: &oci_spec::runtime::Spec) -> Vec<String> {
    shared_namespaces(spec)
        .into_iter()
        .map(|namespace| namespace.as_str().to_owned())
        .collect()
}

/// The id that names the shim serving task `id`: the pod's sandbox id for pod tasks (so they
/// share one shim), the task's own id otherwise.
pub fn grouping(id: &str, role: &Role) -> String {
    match role {
        Role::Standalone => id.to_owned(),
        Role::Sandbox { sandbox_id } | Role::Container { sandbox_id } => sandbox_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

    #[test]
    fn the_sandboxs_namespaces_are_shared_when_joined_by_path() {
        use rvm_protocol::namespace::SharedNamespace::{Ipc, Pid, Uts};
        let namespace = |typ, path: Option<&str>| {
            let mut builder = LinuxNamespaceBuilder::default().typ(typ);
            if let Some(path) = path {
                builder = builder.path(path);
            }
            builder.build().unwrap()
        };
        let mut spec = Spec::default();
        spec.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![
                    namespace(LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc")),
                    namespace(LinuxNamespaceType::Uts, Some("/proc/42/ns/uts")),
                    namespace(LinuxNamespaceType::Network, Some("/proc/42/ns/net")),
                    namespace(LinuxNamespaceType::Pid, None),
                    namespace(LinuxNamespaceType::Mount, None),
                ])
                .build()
                .unwrap(),
        ));
        assert_eq!(shared_namespaces(&spec), [Ipc, Uts]);
        assert_eq!(sandbox_namespaces(&spec), ["ipc", "uts"]);
        assert!(sandbox_namespaces(&Spec::default()).is_empty());
        // shareProcessNamespace: CRI gives the container the pause process's pid namespace.
        spec.set_linux(Some(
            LinuxBuilder::default()
                .namespaces(vec![
                    namespace(LinuxNamespaceType::Pid, Some("/proc/42/ns/pid")),
                    namespace(LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc")),
                    namespace(LinuxNamespaceType::Mount, None),
                ])
                .build()
                .unwrap(),
        ));
        assert_eq!(shared_namespaces(&spec), [Pid, Ipc]);
        assert_eq!(sandbox_namespaces(&spec), ["pid", "ipc"]);
    }

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn plain_task_is_standalone_and_grouped_by_itself() {
        assert_eq!(role(None), Role::Standalone);
        let none = annotations(&[("other", "x")]);
        assert_eq!(role(Some(&none)), Role::Standalone);
        assert_eq!(grouping("t1", &Role::Standalone), "t1");
    }

    #[test]
    fn pod_tasks_are_grouped_by_sandbox_id() {
        let sandbox = annotations(&[(SANDBOX_ID, "pod1"), (CONTAINER_TYPE, "sandbox")]);
        let container = annotations(&[(SANDBOX_ID, "pod1"), (CONTAINER_TYPE, "container")]);
        let sandbox = role(Some(&sandbox));
        let container = role(Some(&container));
        assert_eq!(
            sandbox,
            Role::Sandbox {
                sandbox_id: "pod1".into()
            }
        );
        assert_eq!(
            container,
            Role::Container {
                sandbox_id: "pod1".into()
            }
        );
        assert_eq!(grouping("pod1", &sandbox), "pod1");
        assert_eq!(grouping("c1", &container), "pod1");
    }

    #[test]
    fn incomplete_annotations_are_standalone() {
        for pairs in [
            &[(CONTAINER_TYPE, "container")][..],
            &[(SANDBOX_ID, ""), (CONTAINER_TYPE, "container")][..],
            &[(SANDBOX_ID, "pod1"), (CONTAINER_TYPE, "other")][..],
            &[(SANDBOX_ID, "pod1")][..],
        ] {
            assert_eq!(
                role(Some(&annotations(pairs))),
                Role::Standalone,
                "{pairs:?}"
            );
        }
    }
}

//! The shim's lifecycle for containerd: `start` spawns the long-lived shim and prints its
//! address, `delete` cleans up after a shim that died, and the long-lived shim serves the Task
//! API until containerd shuts it down.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{spawn, util::write_str_to_file, ExitSignal, Shim};
use containerd_shim::{Config, Error, Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::MessageField;
use oci_spec::runtime::Spec;
use rvm_runtime::sandbox::layout::{Layout, DEFAULT_ROOT};

use crate::events::Events;
use crate::layers::SnapshotCache;
use crate::pod;
use crate::process::timestamp;
use crate::service::Service;

/// containerd's exit status for a task whose shim died (128 + SIGKILL).
const EXIT_SHIM_DIED: u32 = 137;

/// The rvm state root: `RVM_ROOT`, else the default.
fn rvm_root() -> PathBuf {
    std::env::var_os("RVM_ROOT")
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

/// The directories of the tasks of one containerd namespace:
/// `<root>/containerd/<namespace>/{containers,run}/<id>`.
fn task_layout(namespace: &str) -> Layout {
    Layout::new(Some(rvm_root().join("containerd").join(namespace)))
}

/// The shared cache of layer disks made from snapshots, `<root>/containerd/layers`.
fn layer_cache() -> SnapshotCache {
    SnapshotCache::new(rvm_root().join("containerd").join("layers"))
}

/// The grouping id of task `id` from the bundle's OCI spec (in the current directory): the pod's
/// sandbox id for a pod task, else the task's id.
fn grouping_of(id: &str) -> String {
    let annotations = Spec::load("config.json")
        .ok()
        .and_then(|spec| spec.annotations().clone());
    pod::grouping(id, &pod::role(annotations.as_ref()))
}

/// The shim of one task (or of one pod's tasks).
pub struct RvmShim {
    id: String,
    namespace: String,
    debug: bool,
    exit: Arc<ExitSignal>,
}

impl std::fmt::Debug for RvmShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RvmShim")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Shim for RvmShim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            debug: args.debug,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// containerd runs `start` in the task's bundle. Tasks of one pod share a grouping id (the
    /// sandbox id), hence a socket address: the spawned shim finds the pod's shim listening
    /// there, writes its address and exits, and containerd talks to the pod's shim.
    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let grouping = grouping_of(&opts.id);
        tracing::debug!(id = %opts.id, %grouping, "shim grouping");
        let address = spawn(opts, &grouping, Vec::new()).await?;
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // The VMM died with the shim (parent-death signal); only its files remain.
        crate::vm::remove_files(&task_layout(&self.namespace), &self.id);
        Ok(DeleteResponse {
            pid: 0,
            exit_status: EXIT_SHIM_DIED,
            exited_at: MessageField::some(timestamp(std::time::SystemTime::now())),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let bundle = std::env::current_dir().unwrap_or_default();
        crate::logging::init(&bundle, self.debug);
        tracing::info!(id = %self.id, namespace = %self.namespace, "shim started");
        Service::new(
            Events::new(publisher, self.namespace.clone()),
            self.exit.clone(),
            task_layout(&self.namespace),
            layer_cache(),
        )
    }
}

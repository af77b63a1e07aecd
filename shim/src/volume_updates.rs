//! Follows kubelet's in-place updates of the volumes a container got by content (configMap,
//! secret, downwardAPI and projected volumes: `host_files::WatchedDirectory`). Every
//! [`POLL_INTERVAL`] it reads each volume's `..data` link; when kubelet has moved it to a new
//! generation, the agent gets the new tree (`UpdateDirectory`) and swaps it in the way kubelet
//! does. The link and the tree are read through one descriptor of the volume's directory, as
//! `host_files` reads everything it sends (symlinks sent as links, sizes bounded). kubelet rewrites a volume at its pod sync, about once a minute, so the poll adds
//! seconds at most. It ends with the container.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::host_files::{self, WatchedDirectory};
use rvm_runtime::vm::Vm;

/// How often the volumes' `..data` links are read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Follows `dirs` of container `id` in `vm` while `alive()` says the container runs.
pub fn follow(
    vm: Weak<Vm>,
    id: String,
    dirs: Vec<WatchedDirectory>,
    alive: impl Fn() -> bool + Send + 'static,
) -> Option<JoinHandle<()>> {
    if dirs.is_empty() {
        return None;
    }
    let mut followed: Vec<Followed> = dirs.into_iter().map(Followed::new).collect();
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let Some(vm) = vm.upgrade().filter(|_| alive()) else {
                return;
            };
            for dir in &mut followed {
                dir.poll(&vm, &id).await;
            }
        }
    }))
}

/// One volume and what was said of it last.
struct Followed {
    watched: WatchedDirectory,
    /// The last failure's text, so that one that lasts is logged once.
    last_error: Option<String>,
}

impl Followed {
    fn new(watched: WatchedDirectory) -> Self {
        Self {
            watched,
            last_error: None,
        }
    }

    /// Sends the volume's new tree if kubelet has made a new generation.
    async fn poll(&mut self, vm: &Vm, id: &str) {
        let sent = match host_files::changed(&self.watched) {
            Ok(None) => return,
            Ok(Some((directory, generation))) => vm
                .session()
                .update_directory(id, directory)
                .await
                .map(|()| generation)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match sent {
            Ok(generation) => self.updated(id, generation),
            Err(error) => self.failed(id, error),
        }
    }

    fn updated(&mut self, id: &str, generation: PathBuf) {
        tracing::info!(task = %id, destination = %self.watched.destination, generation = %generation.display(), "volume updated in the guest");
        self.watched.generation = generation;
        self.last_error = None;
    }

    fn failed(&mut self, id: &str, error: String) {
        if self.last_error.as_ref() != Some(&error) {
            tracing::warn!(task = %id, destination = %self.watched.destination, %error, "cannot update a volume in the guest; trying again");
        }
        self.last_error = Some(error);
    }
}

//! The disk slots of a pod's VM, filled while it runs: a container's layer disks are attached
//! to free slots through the VMM's API socket (`ATTACH`, the image's descriptor passed along)
//! before the agent creates the container on them, and emptied (`DETACH`) when the last
//! container using them is removed. [`Slots`] decides which slot; this module does the I/O.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rvm_protocol::serial::slot_serial;

use super::slots::Slots;
use super::VmError;

/// A read-only layer disk image to attach, with the cache key that names its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerImage {
    pub path: PathBuf,
    pub key: String,
}

/// A pod VM's disk slots and the socket of the VMM's API that fills them.
#[derive(Debug)]
pub(super) struct PodDisks {
    pub(super) api: PathBuf,
    slots: Mutex<Slots>,
}

impl PodDisks {
    pub(super) fn new(api: PathBuf, slots: u32) -> Self {
        Self {
            api,
            slots: Mutex::new(Slots::new(slots)),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves slots for `container`'s layers and attaches those not attached yet; returns the
    /// serial of each layer, in order.
    pub(super) async fn attach(
        &self,
        container: &str,
        layers: &[LayerImage],
    ) -> Result<Vec<String>, VmError> {
        let serials: Vec<String> = layers.iter().map(|l| slot_serial(&l.key)).collect();
        let attach = self.slots().reserve(container, &serials)?;
        for new in attach {
            let Some(layer) = serials
                .iter()
                .position(|serial| *serial == new.serial)
                .and_then(|index| layers.get(index))
            else {
                continue;
            };
            let api = self.api.clone();
            let path = layer.path.clone();
            let serial = new.serial.clone();
            let slot = new.slot;
            let attached =
                tokio::task::spawn_blocking(move || attach_image(&api, slot, &serial, &path))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|result| result);
            let sectors = attached.map_err(|message| VmError::Attach {
                slot: new.slot,
                serial: new.serial.clone(),
                message,
            })?;
            tracing::info!(container, slot = new.slot, serial = %new.serial, sectors, "layer attached");
        }
        Ok(serials)
    }

    /// Forgets `container`'s slots and empties those no other container uses. Failures are
    /// logged: the slot then stays taken, the VM works on.
    pub(super) async fn detach(&self, container: &str) {
        let freed = self.slots().release(container);
        for slot in freed {
            let api = self.api.clone();
            let detached =
                tokio::task::spawn_blocking(move || rvm_vmm::api::client::detach(&api, slot)).await;
            match detached {
                Ok(Ok(())) => tracing::info!(container, slot, "disk slot emptied"),
                Ok(Err(err)) => tracing::warn!(container, slot, %err, "disk slot not emptied"),
                Err(err) => tracing::warn!(container, slot, %err, "disk slot not emptied"),
            }
        }
    }
}

/// Opens layer disk `path` read-only and attaches it to `slot` of the VMM at `api`; returns
/// its size in sectors.
fn attach_image(api: &Path, slot: u32, serial: &str, path: &Path) -> Result<u64, String> {
    let image = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    rvm_vmm::api::Client::connect(api)
        .and_then(|mut client| client.attach(slot, serial, &image))
        .map_err(|e| e.to_string())
}

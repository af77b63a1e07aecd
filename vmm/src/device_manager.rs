//! Creates a VM's virtio devices from its configuration and announces each on the guest
//! kernel's command line (`virtio_mmio.device=4K@BASE:IRQ`), in a fixed order: the entropy
//! device first, then disks in the order given, then the empty disk slots, then network, then
//! vsock.

use std::sync::Arc;

use linux_loader::cmdline::Cmdline;
use vm_memory::GuestAddress;

use crate::arch::x86_64::layout::MMIO_DEVICE_SIZE;
use crate::config::VmConfig;
use crate::devices::virtio::block::{Block, DiskSlot};
use crate::devices::virtio::net::{generated_mac, Net, Tap, TapError};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{Vsock, VsockError};
use crate::devices::virtio::VirtioDevice;
use crate::machine::{Machine, MachineError};

/// Errors while creating the devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Building the device's transport failed.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The command line has no room for the device entries.
    #[error("the kernel command line has no room for the virtio device entries: {0:?}")]
    Cmdline(linux_loader::cmdline::Error),
    /// The `--net` TAP cannot be used.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The vsock's Unix socket cannot be set up (bad input: the path given).
    #[error(transparent)]
    Vsock(#[from] VsockError),
}

/// What [`add_devices`] made.
#[derive(Debug)]
pub struct AddedDevices {
    /// The kernel command line with the devices' entries.
    pub cmdline: Cmdline,
    /// The disk slots, in order: slot `i` is the `i`-th disk after the `--disk` ones.
    pub disk_slots: Vec<Arc<DiskSlot>>,
}

/// Adds every configured device to `machine`; returns the command line with their entries and
/// the disk slots.
pub fn add_devices(machine: &mut Machine, config: &VmConfig) -> Result<AddedDevices, DeviceError> {
    let mut cmdline = config.cmdline.clone();
    add(machine, &mut cmdline, Box::new(Rng::new()))?;
    for disk in &config.disks {
        add(machine, &mut cmdline, Box::new(Block::new(disk)))?;
    }
    let mut disk_slots = Vec::new();
    for _ in 0..config.disk_slots {
        let slot = Block::empty_slot();
        disk_slots.push(slot.slot());
        add(machine, &mut cmdline, Box::new(slot))?;
    }
    if let Some(net) = &config.net {
        let tap = Tap::open(&net.tap)?;
        let mac = net.mac.unwrap_or_else(generated_mac);
        add(machine, &mut cmdline, Box::new(Net::new(tap, mac)))?;
    }
    if let Some(spec) = &config.vsock {
        let vsock = Vsock::new(u64::from(spec.cid), &spec.uds)?;
        add(machine, &mut cmdline, Box::new(vsock))?;
    }
    Ok(AddedDevices {
        cmdline,
        disk_slots,
    })
}

fn add(
    machine: &mut Machine,
    cmdline: &mut Cmdline,
    device: Box<dyn VirtioDevice>,
) -> Result<(), DeviceError> {
    let slot = machine.add_virtio_device(device)?;
    cmdline
        .add_virtio_mmio_device(MMIO_DEVICE_SIZE, GuestAddress(slot.base), slot.irq, None)
        .map_err(DeviceError::Cmdline)
}

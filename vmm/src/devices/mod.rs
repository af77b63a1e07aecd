//! Emulated devices and the dispatch of guest port I/O and MMIO to them. Accesses that reach
//! no device are ignored: writes are dropped and reads return all ones, like an open bus.

pub mod legacy;
pub mod virtio;

use std::sync::Mutex;

use legacy::i8042::{self, I8042Action, I8042};
use legacy::serial::{self, SerialDevice};
use virtio::mmio::MmioTransport;

use crate::arch::x86_64::layout;

/// What the vCPU must do after an I/O access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAction {
    /// Resume the guest.
    Continue,
    /// The guest asked for a reset: stop the VM.
    Reset,
}

/// All devices of a VM, shared by its vCPU threads.
#[derive(Debug)]
pub struct Devices {
    serial: Mutex<SerialDevice>,
    i8042: I8042,
    /// virtio-mmio devices; the `i`-th sits at [`layout::mmio_device_addr`]`(i)`.
    virtio: Vec<Mutex<MmioTransport>>,
}

/// Offset of `port` in the window `[base, base + len)`.
fn port_offset(port: u16, base: u16, len: u16) -> Option<u8> {
    let offset = port.checked_sub(base)?;
    if offset < len {
        u8::try_from(offset).ok()
    } else {
        None
    }
}

/// Locks a device. A poisoned lock only means another vCPU thread panicked mid-access; the
/// device state is still usable, and the VM is being torn down anyway.
fn lock<T>(device: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match device.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Devices {
    /// The legacy devices: COM1 and the i8042.
    pub fn new(serial: SerialDevice) -> Self {
        Devices {
            serial: Mutex::new(serial),
            i8042: I8042,
            virtio: Vec::new(),
        }
    }

    /// Adds a virtio-mmio device in the next window; returns its index.
    pub fn add_virtio(&mut self, transport: MmioTransport) -> u32 {
        self.virtio.push(Mutex::new(transport));
        u32::try_from(self.virtio.len() - 1).unwrap_or(u32::MAX)
    }

    /// Number of virtio-mmio devices.
    pub fn virtio_count(&self) -> usize {
        self.virtio.len()
    }

    /// The virtio device whose window holds `addr`, and the offset in it.
    fn virtio_at(&self, addr: u64) -> Option<(&Mutex<MmioTransport>, u64)> {
        let relative = addr.checked_sub(layout::MMIO_DEVICES_START)?;
        let index = usize::try_from(relative / layout::MMIO_DEVICE_SIZE).ok()?;
        let device = self.virtio.get(index)?;
        Some((device, relative % layout::MMIO_DEVICE_SIZE))
    }

    fn with_serial<T>(&self, f: impl FnOnce(&mut SerialDevice) -> T) -> T {
        f(&mut lock(&self.serial))
    }

    /// Guest `in` from `port`; `data` is filled.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        if data.len() != 1 {
            return;
        }
        if let Some(offset) = port_offset(port, serial::COM1_BASE, serial::COM1_PORTS) {
            data[0] = self.with_serial(|uart| uart.read(offset));
        } else if port == i8042::DATA_PORT || port == i8042::COMMAND_PORT {
            data[0] = self.i8042.read(port);
        }
    }

    /// Guest `out` of `data` to `port`.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> IoAction {
        let [value] = data else {
            return IoAction::Continue;
        };
        if let Some(offset) = port_offset(port, serial::COM1_BASE, serial::COM1_PORTS) {
            self.with_serial(|uart| uart.write(offset, *value));
        } else if port == i8042::DATA_PORT || port == i8042::COMMAND_PORT {
            if self.i8042.write(port, *value) == I8042Action::Reset {
                return IoAction::Reset;
            }
        } else {
            tracing::trace!("ignored port write {port:#x} <- {value:#x}");
        }
        IoAction::Continue
    }

    /// Guest read of MMIO at `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.virtio_at(addr) {
            Some((device, offset)) => lock(device).read(offset, data),
            None => {
                tracing::trace!("ignored MMIO read at {addr:#x}");
                data.fill(0xff);
            }
        }
    }

    /// Guest write of MMIO at `addr`.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> IoAction {
        match self.virtio_at(addr) {
            Some((device, offset)) => lock(device).write(offset, data),
            None => tracing::trace!("ignored MMIO write at {addr:#x} ({} bytes)", data.len()),
        }
        IoAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::legacy::serial::{ConsoleOutput, SharedBuffer};
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    fn devices(out: &SharedBuffer) -> Devices {
        let console = ConsoleOutput::new(vec![Box::new(out.clone())]);
        Devices::new(SerialDevice::new(EventFd::new(0).unwrap(), console))
    }

    #[test]
    fn unknown_ports_and_mmio_read_all_ones() {
        let devs = devices(&SharedBuffer::default());
        let mut data = [0u8; 4];
        devs.pio_read(0x1234, &mut data);
        assert_eq!(data, [0xff; 4]);
        let mut data = [0u8; 8];
        devs.mmio_read(0xd000_0000, &mut data);
        assert_eq!(data, [0xff; 8]);
        assert_eq!(devs.pio_write(0x80, &[1]), IoAction::Continue);
        assert_eq!(devs.mmio_write(0xd000_0000, &[1, 2]), IoAction::Continue);
    }

    #[test]
    fn serial_and_reset_are_routed() {
        let out = SharedBuffer::default();
        let devs = devices(&out);
        assert_eq!(devs.pio_write(0x3f8, b"x"), IoAction::Continue);
        assert_eq!(out.contents(), b"x");
        assert_eq!(devs.pio_write(0x64, &[0xfe]), IoAction::Reset);
        assert_eq!(devs.pio_write(0x64, &[0xfe, 0]), IoAction::Continue);
    }

    #[test]
    fn port_windows() {
        assert_eq!(port_offset(0x3ff, 0x3f8, 8), Some(7));
        assert_eq!(port_offset(0x400, 0x3f8, 8), None);
        assert_eq!(port_offset(0x3f7, 0x3f8, 8), None);
    }
}

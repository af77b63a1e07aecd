//! COM1: an 8250 UART (vm-superio) on ports 0x3f8-0x3ff, IRQ 4, whose output goes to the
//! console sinks, watched for a kernel panic message.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// First port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Ports of a UART.
pub const COM1_PORTS: u16 = 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;

/// The message that tells a panic from a clean reboot.
const PANIC_MARKER: &[u8] = b"Kernel panic";

/// Remembers whether the console output contained "Kernel panic", across write boundaries.
#[derive(Debug, Default, Clone)]
pub struct PanicWatch {
    seen: Arc<AtomicBool>,
    tail: Vec<u8>,
}

impl PanicWatch {
    /// Feeds more console output.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.seen.load(Ordering::Relaxed) {
            return;
        }
        self.tail.extend_from_slice(bytes);
        if self
            .tail
            .windows(PANIC_MARKER.len())
            .any(|w| w == PANIC_MARKER)
        {
            self.seen.store(true, Ordering::Relaxed);
        }
        let keep = PANIC_MARKER.len() - 1;
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
    }

    /// A flag that turns true once the marker went by.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.seen)
    }
}

/// Where the guest's serial output goes: any number of sinks, each written in full.
pub struct ConsoleOutput {
    sinks: Vec<Box<dyn Write + Send>>,
    watch: PanicWatch,
}

impl std::fmt::Debug for ConsoleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOutput")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl ConsoleOutput {
    /// Output going to `sinks` (none: discarded).
    pub fn new(sinks: Vec<Box<dyn Write + Send>>) -> Self {
        ConsoleOutput {
            sinks,
            watch: PanicWatch::default(),
        }
    }

    /// The flag set when the guest printed "Kernel panic".
    pub fn panic_flag(&self) -> Arc<AtomicBool> {
        self.watch.flag()
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.watch.feed(buf);
        for sink in &mut self.sinks {
            // A console that went away (closed pipe, full disk) must not stop the guest.
            if let Err(e) = sink.write_all(buf) {
                tracing::debug!("console sink write failed: {e}");
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        for sink in &mut self.sinks {
            let _ = sink.flush();
        }
        Ok(())
    }
}

/// A byte buffer that can be a console sink and be read by someone else (tests, diagnostics).
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// A copy of everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(bytes) => bytes.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = self
            .0
            .lock()
            .map_err(|_| io::Error::other("console buffer poisoned"))?;
        bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An interrupt line raised by writing an eventfd registered with KVM as an irqfd.
#[derive(Debug)]
pub struct IrqLine(EventFd);

impl Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// COM1 with its interrupt line.
#[derive(Debug)]
pub struct SerialDevice {
    uart: Serial<IrqLine, NoEvents, ConsoleOutput>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: ConsoleOutput) -> Self {
        SerialDevice {
            uart: Serial::new(IrqLine(irq), out),
        }
    }

    /// Guest read of register `offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Guest write of register `offset`.
    pub fn write(&mut self, offset: u8, value: u8) {
        if let Err(e) = self.uart.write(offset, value) {
            // Output that cannot be written is dropped; the guest keeps running.
            tracing::debug!("serial write to register {offset}: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_marker_split_across_writes() {
        let mut watch = PanicWatch::default();
        let flag = watch.flag();
        watch.feed(b"[ 1.0] Kernel pa");
        assert!(!flag.load(Ordering::Relaxed));
        watch.feed(b"nic - not syncing");
        assert!(flag.load(Ordering::Relaxed));
    }

    #[test]
    fn no_panic_in_plain_output() {
        let mut watch = PanicWatch::default();
        watch.feed(b"Kernel pan");
        watch.feed(b"cakes\n");
        assert!(!watch.flag().load(Ordering::Relaxed));
    }

    #[test]
    fn uart_writes_reach_every_sink() {
        let a = SharedBuffer::default();
        let b = SharedBuffer::default();
        let out = ConsoleOutput::new(vec![Box::new(a.clone()), Box::new(b.clone())]);
        let mut serial = SerialDevice::new(EventFd::new(0).unwrap(), out);
        for byte in b"ok\n" {
            serial.write(0, *byte);
        }
        assert_eq!(a.contents(), b"ok\n");
        assert_eq!(b.contents(), b"ok\n");
    }
}

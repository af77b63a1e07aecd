//! vCPU threads: the KVM_RUN loop, exit handling, and the kick that gets a thread out of
//! KVM_RUN (a SIGRTMIN whose handler sets `immediate_exit`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::devices::{Devices, IoAction};

/// Errors of a vCPU thread.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_RUN failed.
    #[error("vCPU {index}: KVM_RUN failed: {source}")]
    Run {
        /// vCPU index.
        index: u8,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
    /// The guest stopped in a way the VMM does not handle.
    #[error("vCPU {index}: unexpected exit: {reason}")]
    UnexpectedExit {
        /// vCPU index.
        index: u8,
        /// What KVM reported.
        reason: String,
    },
    /// The thread could not be started.
    #[error("cannot start the thread of vCPU {index}: {source}")]
    Spawn {
        /// vCPU index.
        index: u8,
        /// Why.
        source: std::io::Error,
    },
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickHandler(vmm_sys_util::errno::Error),
    /// The thread panicked.
    #[error("the thread of vCPU {0} panicked")]
    Panicked(u8),
}

/// Why a vCPU stopped running the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest asked the i8042 for a CPU reset.
    Reset,
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    Shutdown,
    /// KVM_EXIT_SYSTEM_EVENT with this type (shutdown, reset, crash).
    SystemEvent(u32),
    /// The VMM asked it to stop.
    Kicked,
}

/// What a vCPU thread reports when it ends.
pub type VcpuReport = (u8, Result<VcpuStop, VcpuError>);

/// A configured vCPU, not yet running.
#[derive(Debug)]
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
}

/// What a running vCPU thread shares with the VMM.
#[derive(Debug, Clone)]
pub struct VcpuShared {
    /// Devices the guest reaches through port I/O and MMIO.
    pub devices: Arc<Devices>,
    /// Set by the VMM to make every vCPU stop.
    pub stop: Arc<AtomicBool>,
    /// Where the thread reports its end.
    pub reports: Sender<VcpuReport>,
    /// Written after each report, to wake the event loop.
    pub report_event: Arc<EventFd>,
}

thread_local! {
    /// The `kvm_run` area of the vCPU that this thread runs; null on other threads.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal: makes KVM_RUN of the receiving vCPU thread return.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `try_with` on a const-initialised thread local without destructor does not allocate,
    // lock or panic, so it is safe to use in a signal handler.
    let _ = KVM_RUN.try_with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: `run` was set by this thread from its own VcpuFd, whose kvm_run
            // mapping lives until the thread clears the pointer (before the VcpuFd is
            // dropped), so it points at a live `kvm_run`; only a field address is taken.
            let flag = unsafe { &raw mut (*run).immediate_exit };
            // SAFETY: `flag` points into that live mapping. `immediate_exit` is a plain byte
            // the kernel reads on KVM_RUN entry; a volatile byte write cannot tear or be
            // elided, and the interrupted thread only ever writes 0 to it after KVM_RUN.
            unsafe { std::ptr::write_volatile(flag, 1) };
        }
    });
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick);
    });
    result.map_err(VcpuError::KickHandler)
}

impl Vcpu {
    /// Wraps vCPU `index`, already configured.
    pub fn new(index: u8, fd: VcpuFd) -> Self {
        Vcpu { index, fd }
    }

    /// Starts the vCPU on its own thread.
    pub fn start(mut self, shared: VcpuShared) -> Result<JoinHandle<()>, VcpuError> {
        let index = self.index;
        std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let result = self.run_thread(&shared);
                // The event loop only reads the channel after the event; report first.
                let _ = shared.reports.send((index, result));
                if let Err(e) = shared.report_event.write(1) {
                    crate::error_limited!("vCPU {index}: cannot wake the event loop: {e}");
                }
            })
            .map_err(|source| VcpuError::Spawn { index, source })
    }

    fn run_thread(&mut self, shared: &VcpuShared) -> Result<VcpuStop, VcpuError> {
        let run: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|cell| cell.set(run));
        if self.index == 0 {
            log_first_run();
        }
        let result = self.run_loop(shared);
        KVM_RUN.with(|cell| cell.set(std::ptr::null_mut()));
        result
    }

    fn run_loop(&mut self, shared: &VcpuShared) -> Result<VcpuStop, VcpuError> {
        loop {
            if shared.stop.load(Ordering::Acquire) {
                return Ok(VcpuStop::Kicked);
            }
            let outcome = match self.fd.run() {
                Ok(exit) => handle_exit(self.index, exit, &shared.devices)?,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    None
                }
                Err(source) => {
                    return Err(VcpuError::Run {
                        index: self.index,
                        source,
                    })
                }
            };
            if let Some(stop) = outcome {
                if stop == VcpuStop::Shutdown {
                    self.log_triple_fault();
                }
                return Ok(stop);
            }
        }
    }

    /// Logs where the guest was when it triple-faulted: a guest that meant to reboot goes
    /// through the i8042 (reboot=k), so a triple fault is worth a warning with the registers.
    fn log_triple_fault(&self) {
        let index = self.index;
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(regs), Ok(sregs)) => tracing::warn!(
                "vCPU {index}: triple fault at rip {:#x} rsp {:#x} (cs {:#x}) cr0 {:#x} cr2 {:#x} \
                 cr3 {:#x} cr4 {:#x} efer {:#x} rflags {:#x}",
                regs.rip,
                regs.rsp,
                sregs.cs.selector,
                sregs.cr0,
                sregs.cr2,
                sregs.cr3,
                sregs.cr4,
                sregs.efer,
                regs.rflags
            ),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("vCPU {index}: triple fault; its registers cannot be read: {e}")
            }
        }
    }
}

/// Logs, at info level, the CLOCK_MONOTONIC time in nanoseconds just before vCPU 0 enters
/// KVM_RUN for the first time: `bench/vmm-start` measures the VMM's start-up latency up to it.
fn log_first_run() {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec that clock_gettime only writes to.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return;
    }
    let monotonic_ns = now.tv_sec * 1_000_000_000 + now.tv_nsec;
    tracing::info!(monotonic_ns, "vCPU 0: first KVM_RUN");
}

fn unexpected(index: u8, reason: String) -> VcpuError {
    VcpuError::UnexpectedExit { index, reason }
}

/// Handles one exit; `Some` when the vCPU must stop.
fn handle_exit(
    index: u8,
    exit: VcpuExit<'_>,
    devices: &Devices,
) -> Result<Option<VcpuStop>, VcpuError> {
    let action = match exit {
        VcpuExit::IoIn(port, data) => {
            devices.pio_read(port, data);
            IoAction::Continue
        }
        VcpuExit::IoOut(port, data) => devices.pio_write(port, data),
        VcpuExit::MmioRead(addr, data) => {
            devices.mmio_read(addr, data);
            IoAction::Continue
        }
        VcpuExit::MmioWrite(addr, data) => devices.mmio_write(addr, data),
        VcpuExit::Shutdown => return Ok(Some(VcpuStop::Shutdown)),
        VcpuExit::SystemEvent(kind, _) => return Ok(Some(VcpuStop::SystemEvent(kind))),
        VcpuExit::Intr => IoAction::Continue,
        VcpuExit::FailEntry(reason, cpu) => {
            return Err(unexpected(
                index,
                format!("entry failed: hardware reason {reason:#x} on CPU {cpu}"),
            ))
        }
        VcpuExit::InternalError => {
            return Err(unexpected(
                index,
                "KVM internal error (emulation failure?)".into(),
            ))
        }
        other => return Err(unexpected(index, format!("{other:?}"))),
    };
    Ok(match action {
        IoAction::Continue => None,
        IoAction::Reset => Some(VcpuStop::Reset),
    })
}

/// Kicks a vCPU thread out of KVM_RUN; harmless if it has already ended.
pub fn kick(thread: &JoinHandle<()>) {
    if thread.is_finished() {
        return;
    }
    if let Err(e) = thread.kill(kick_signal()) {
        tracing::debug!("kicking a vCPU thread: {e}");
    }
}

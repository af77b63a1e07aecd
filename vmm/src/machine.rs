//! A microVM put together: guest memory, the KVM VM, devices and vCPU threads, run until the
//! guest resets or powers off, a vCPU fails, or a stop signal arrives.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::{self, cpuid::VcpuTopology, layout, ArchError, BootEntry};
use crate::config::{ConfigError, ConsoleConfig};
use crate::devices::legacy::serial::{self, ConsoleOutput, SerialDevice};
use crate::devices::virtio::mmio::{self, MmioError, MmioTransport};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::devices::Devices;
use crate::event_loop::{EventLoop, EventLoopError, StopSignals, Token};
use crate::loader::{self, BootFiles, LoadError};
use crate::logging::bounded::{self, BoundedFile};
use crate::seccomp::{self, SeccompError, SeccompMode};
use crate::vstate::memory::{self, MemoryError};
use crate::vstate::vcpu::{self, Vcpu, VcpuError, VcpuReport, VcpuShared, VcpuStop};
use crate::vstate::vm::{Vm, VmError};

/// How long stopped vCPU threads get to leave KVM_RUN before we give up on them.
const VCPU_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Errors while building or running a microVM.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The KVM VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// CPU and boot table setup.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// A vCPU.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The event loop.
    #[error(transparent)]
    EventLoop(#[from] EventLoopError),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// Raw code could not be copied into guest memory.
    #[error("cannot copy code into guest memory: {0}")]
    Code(vm_memory::GuestMemoryError),
    /// A vCPU thread did not stop in time.
    #[error("vCPU threads did not stop within {0:?}")]
    Stuck(Duration),
    /// A virtio transport could not be set up.
    #[error(transparent)]
    Mmio(#[from] MmioError),
    /// No IOAPIC pin is left for another virtio device.
    #[error(
        "too many devices: at most {} virtio devices fit",
        layout::MMIO_MAX_DEVICES
    )]
    TooManyDevices,
    /// The seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Every vCPU thread ended without a reason.
    #[error("vCPU {0} stopped without the VMM asking")]
    StoppedUnasked(u8),
}

/// Why the VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset through the i8042 (Linux `reboot=k`).
    Reset,
    /// A triple fault.
    TripleFault,
    /// KVM_EXIT_SYSTEM_EVENT of this type (1 shutdown, 2 reset, 3 crash).
    SystemEvent(u32),
    /// The VMM got this stop signal.
    Signal(i32),
    /// The embedding program asked through [`StopSources::request`].
    Requested,
}

/// What, besides the guest, may stop a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopSources<'a> {
    /// SIGINT/SIGTERM, for the `rvm-vmm` binary.
    pub signals: Option<&'a StopSignals>,
    /// An eventfd that stops the VM when written, for programs and tests embedding the VMM.
    pub request: Option<&'a EventFd>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// Why.
    pub reason: ExitReason,
    /// The console showed "Kernel panic" before that.
    pub kernel_panic: bool,
    /// Time from starting the vCPUs to the stop.
    pub run_time: Duration,
}

/// Console sinks for `config`: stdout, a log file (continued, and kept under
/// [`bounded::CONSOLE`]'s size), both or none.
pub fn open_console(config: &ConsoleConfig) -> Result<ConsoleOutput, ConfigError> {
    let mut sinks: Vec<Box<dyn Write + Send>> = Vec::new();
    if config.stdout {
        sinks.push(Box::new(FlushingStdout));
    }
    if let Some(path) = &config.log {
        let failed = |source| ConfigError::ConsoleLog {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            // Continued: an earlier boot's output stays, within the bound.
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        let file = BoundedFile::new(file, bounded::CONSOLE).map_err(failed)?;
        sinks.push(Box::new(file));
    }
    Ok(ConsoleOutput::new(sinks))
}

/// Stdout, flushed after every write so partial lines (prompts) show at once.
struct FlushingStdout;

impl Write for FlushingStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// A microVM, built and loaded, not yet running.
#[derive(Debug)]
pub struct Machine {
    // Declared before `mem`: the VM (and its memory slots) goes away before the mappings.
    vm: Vm,
    mem: GuestMemoryMmap,
    vcpu_count: u8,
    devices: Devices,
    kernel_panic: Arc<AtomicBool>,
    seccomp: SeccompMode,
}

/// Where a virtio-mmio device sits, for the guest's command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    /// Base address of its register window.
    pub base: u64,
    /// Its interrupt line.
    pub irq: u32,
}

impl Machine {
    /// Creates guest memory, the VM with its irqchip and PIT, COM1 writing to `console`,
    /// and the i8042.
    pub fn new(
        memory_bytes: u64,
        vcpu_count: u8,
        console: ConsoleOutput,
    ) -> Result<Self, MachineError> {
        let mem = memory::create_guest_memory(memory_bytes)?;
        let vm = Vm::new(&mem)?;
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(MachineError::EventFd)?;
        vm.register_irq(&serial_irq, serial::COM1_IRQ)?;
        let kernel_panic = console.panic_flag();
        let devices = Devices::new(SerialDevice::new(serial_irq, console));
        Ok(Machine {
            vm,
            mem,
            vcpu_count,
            devices,
            kernel_panic,
            seccomp: SeccompMode::Off,
        })
    }

    /// Confines the process with the VMM's seccomp filter when [`Machine::run`] starts the
    /// guest (off by default, since the filter covers every thread of the process: right for
    /// the `rvm-vmm` binary, wrong for a test harness).
    pub fn set_seccomp(&mut self, mode: SeccompMode) {
        self.seccomp = mode;
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Adds a virtio device behind the next virtio-mmio window, with its interrupt (an irqfd)
    /// and one ioeventfd per queue on the window's QueueNotify register.
    pub fn add_virtio_device(
        &mut self,
        device: Box<dyn VirtioDevice>,
    ) -> Result<MmioSlot, MachineError> {
        let index =
            u32::try_from(self.devices.virtio_count()).map_err(|_| MachineError::TooManyDevices)?;
        if index >= layout::MMIO_MAX_DEVICES {
            return Err(MachineError::TooManyDevices);
        }
        let slot = MmioSlot {
            base: layout::mmio_device_addr(index),
            irq: layout::mmio_device_irq(index),
        };
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(MachineError::EventFd)?;
        self.vm.register_irq(&irqfd, slot.irq)?;
        let mut notifiers = Vec::new();
        for queue in 0..device.queue_max_sizes().len() {
            let notifier = EventFd::new(EFD_NONBLOCK).map_err(MachineError::EventFd)?;
            let queue = u32::try_from(queue).map_err(|_| MachineError::TooManyDevices)?;
            self.vm
                .register_mmio_notifier(&notifier, slot.base + mmio::QUEUE_NOTIFY, queue)?;
            notifiers.push(notifier);
        }
        tracing::debug!(
            "virtio {} at {:#x}, IRQ {}",
            device.name(),
            slot.base,
            slot.irq
        );
        let transport = MmioTransport::new(
            device,
            self.mem.clone(),
            Arc::new(Interrupt::new(irqfd)),
            notifiers,
        )?;
        self.devices.add_virtio(transport);
        Ok(slot)
    }

    /// Loads a kernel with its initrd and command line.
    pub fn load_boot_files(&self, files: &BootFiles<'_>) -> Result<BootEntry, LoadError> {
        loader::load_boot_files(&self.mem, files)
    }

    /// Copies raw 64-bit code to `addr`, to be entered there in long mode.
    pub fn load_raw_code(&self, addr: u64, code: &[u8]) -> Result<BootEntry, MachineError> {
        loader::load_raw_code(&self.mem, GuestAddress(addr), code).map_err(MachineError::Code)
    }

    /// Runs the guest from `entry` until it stops, or one of `stop` fires.
    pub fn run(self, entry: BootEntry, stop: StopSources<'_>) -> Result<RunOutcome, MachineError> {
        x86_64::write_boot_tables(&self.mem, self.vcpu_count)?;
        vcpu::install_kick_handler()?;
        let vcpus = self.create_vcpus(&entry)?;

        let event_loop = EventLoop::new()?;
        let report_event = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(MachineError::EventFd)?);
        event_loop.add(report_event.as_raw_fd(), Token::VcpuReport)?;
        if let Some(signals) = stop.signals {
            event_loop.add(signals.as_raw_fd(), Token::StopSignal)?;
        }
        if let Some(request) = stop.request {
            event_loop.add(request.as_raw_fd(), Token::StopRequest)?;
        }
        let (reports_tx, reports) = mpsc::channel();
        let devices = Arc::new(self.devices);
        let shared = VcpuShared {
            devices: Arc::clone(&devices),
            stop: Arc::new(AtomicBool::new(false)),
            reports: reports_tx,
            report_event: Arc::clone(&report_event),
        };

        seccomp::install(self.seccomp)?;
        #[cfg(debug_assertions)]
        crate::jail::attack::after_filter();
        let started = Instant::now();
        let mut threads = Vec::with_capacity(vcpus.len());
        let mut cause = Ok(None);
        for vcpu in vcpus {
            match vcpu.start(shared.clone()) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    cause = Err(MachineError::from(e));
                    break;
                }
            }
        }
        tracing::info!("{} vCPU(s) started", threads.len());
        if matches!(cause, Ok(None)) {
            cause = wait_for_stop(&event_loop, &reports, &report_event, stop.signals);
        }
        shared.stop.store(true, Ordering::Release);
        stop_threads(threads)?;
        log_other_reports(&reports);
        let reason = cause?.ok_or(MachineError::StoppedUnasked(0))?;
        Ok(RunOutcome {
            reason,
            kernel_panic: self.kernel_panic.load(Ordering::Relaxed),
            run_time: started.elapsed(),
        })
    }

    fn create_vcpus(&self, entry: &BootEntry) -> Result<Vec<Vcpu>, MachineError> {
        (0..self.vcpu_count)
            .map(|index| {
                let fd = self.vm.create_vcpu(index)?;
                let topology = VcpuTopology {
                    index,
                    count: self.vcpu_count,
                    tsc_deadline: self.vm.has_tsc_deadline_timer(),
                };
                x86_64::configure_vcpu(&fd, self.vm.supported_cpuid(), topology, entry)?;
                Ok(Vcpu::new(index, fd))
            })
            .collect()
    }
}

/// Waits for the first vCPU report or stop signal and turns it into an exit reason.
fn wait_for_stop(
    event_loop: &EventLoop,
    reports: &Receiver<VcpuReport>,
    report_event: &EventFd,
    signals: Option<&StopSignals>,
) -> Result<Option<ExitReason>, MachineError> {
    loop {
        for token in event_loop.wait(-1)? {
            match token {
                Token::VcpuReport => {
                    // The count only wakes us; the channel has the reports.
                    let _ = report_event.read();
                    if let Ok(report) = reports.try_recv() {
                        return exit_reason(report).map(Some);
                    }
                }
                Token::StopRequest => {
                    tracing::info!("stop requested");
                    return Ok(Some(ExitReason::Requested));
                }
                Token::StopSignal => {
                    if let Some(signo) = signals.map(StopSignals::read).transpose()?.flatten() {
                        tracing::info!("got signal {signo}, stopping the VM");
                        return Ok(Some(ExitReason::Signal(signo)));
                    }
                }
            }
        }
    }
}

fn exit_reason((index, result): VcpuReport) -> Result<ExitReason, MachineError> {
    match result? {
        VcpuStop::Reset => {
            tracing::info!("vCPU {index}: guest reset through the i8042");
            Ok(ExitReason::Reset)
        }
        VcpuStop::Shutdown => {
            tracing::warn!("vCPU {index}: the guest triple-faulted (KVM shutdown exit), ending the VM as for a reset");
            Ok(ExitReason::TripleFault)
        }
        VcpuStop::SystemEvent(kind) => {
            tracing::info!("vCPU {index}: system event {kind}");
            Ok(ExitReason::SystemEvent(kind))
        }
        VcpuStop::Kicked => Err(MachineError::StoppedUnasked(index)),
    }
}

/// Kicks every thread until it has left KVM_RUN, then joins it.
fn stop_threads(threads: Vec<JoinHandle<()>>) -> Result<(), MachineError> {
    let deadline = Instant::now() + VCPU_STOP_DEADLINE;
    for thread in &threads {
        while !thread.is_finished() {
            if Instant::now() > deadline {
                return Err(MachineError::Stuck(VCPU_STOP_DEADLINE));
            }
            vcpu::kick(thread);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (index, thread) in (0u8..).zip(threads) {
        if thread.join().is_err() {
            return Err(VcpuError::Panicked(index).into());
        }
    }
    Ok(())
}

fn log_other_reports(reports: &Receiver<VcpuReport>) {
    for (index, result) in reports.try_iter() {
        match result {
            Ok(VcpuStop::Kicked) => {}
            Ok(stop) => tracing::debug!("vCPU {index} also stopped: {stop:?}"),
            Err(e) => tracing::warn!("vCPU {index} also failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConsoleConfig;

    #[test]
    fn a_guest_flooding_the_console_log_keeps_it_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, b"earlier boot\n").unwrap();
        let config = ConsoleConfig {
            stdout: false,
            log: Some(path.clone()),
        };
        let mut console = open_console(&config).unwrap();
        let line = [b'x'; 1023];
        let total = bounded::CONSOLE.max() + (4 << 20);
        for _ in 0..total / 1024 {
            console.write_all(&line).unwrap();
            console.write_all(b"\n").unwrap();
        }
        console.write_all(b"the last words\n").unwrap();
        let text = std::fs::read(&path).unwrap();
        assert!(
            text.len() as u64 <= bounded::CONSOLE.max() + 200,
            "{}",
            text.len()
        );
        assert!(text.starts_with(b"earlier boot\nxxx"));
        assert!(text.ends_with(b"xxx\nthe last words\n"));
    }
}

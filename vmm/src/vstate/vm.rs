//! The KVM VM: its file descriptor, the in-kernel irqchip (PIC, IOAPIC, local APICs) and PIT,
//! guest memory slots and the CPUID KVM supports.

use kvm_bindings::{kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::memory::{self, MemoryError};
use crate::arch::x86_64::layout;

/// Errors while creating the KVM VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm cannot be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// KVM lacks a capability we rely on.
    #[error("KVM lacks the {0} capability")]
    MissingCapability(&'static str),
    /// A VM-level ioctl failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was attempted.
        what: &'static str,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory registration failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// A KVM VM with its interrupt controllers and timer.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
    supported_cpuid: CpuId,
    tsc_deadline: bool,
}

fn kvm_error(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

impl Vm {
    /// Creates the VM, its irqchip and PIT, and registers `mem` as its RAM.
    pub fn new(mem: &GuestMemoryMmap) -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for (cap, name) in [
            (Cap::Irqchip, "IRQCHIP"),
            (Cap::Irqfd, "IRQFD"),
            (Cap::Ioeventfd, "IOEVENTFD"),
            (Cap::Pit2, "PIT2"),
            (Cap::ImmediateExit, "IMMEDIATE_EXIT"),
            (Cap::UserMemory, "USER_MEMORY"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCapability(name));
            }
        }
        let fd = kvm.create_vm().map_err(kvm_error("create a VM"))?;
        // Memory slots before the irqchip: once the irqchip exists, every slot change waits
        // for an SRCU grace period (7 ms instead of 0.2 ms on our development host).
        memory::register_with_kvm(&fd, mem)?;
        let tss = usize::try_from(layout::KVM_TSS_ADDRESS)
            .map_err(|_| VmError::MissingCapability("64-bit host"))?;
        fd.set_tss_address(tss)
            .map_err(kvm_error("set the TSS address"))?;
        fd.create_irq_chip()
            .map_err(kvm_error("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_error("create the PIT"))?;
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_error("read the supported CPUID"))?;
        Ok(Vm {
            fd,
            supported_cpuid,
            tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
        })
    }

    /// CPUID as KVM can provide it, before per-vCPU normalisation.
    pub fn supported_cpuid(&self) -> &CpuId {
        &self.supported_cpuid
    }

    /// Whether the in-kernel local APIC emulates the TSC-deadline timer.
    pub fn has_tsc_deadline_timer(&self) -> bool {
        self.tsc_deadline
    }

    /// Lets `event` raise interrupt line `gsi`.
    pub fn register_irq(&self, event: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(event, gsi)
            .map_err(kvm_error("register an irqfd"))
    }

    /// Lets a 4-byte guest write of `value` to MMIO address `addr` signal `event` inside KVM,
    /// without an exit to the VMM.
    pub fn register_mmio_notifier(
        &self,
        event: &EventFd,
        addr: u64,
        value: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(event, &IoEventAddress::Mmio(addr), value)
            .map_err(kvm_error("register an ioeventfd"))
    }

    /// Creates vCPU `index`.
    pub fn create_vcpu(&self, index: u8) -> Result<VcpuFd, VmError> {
        self.fd
            .create_vcpu(u64::from(index))
            .map_err(kvm_error("create a vCPU"))
    }
}

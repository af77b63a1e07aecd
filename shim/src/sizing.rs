//! The size of a task's VM: for a Kubernetes pod's sandbox, from the pod's resources that
//! containerd's CRI plugin (1.6.7 and later) puts on the sandbox's spec as annotations; otherwise
//! from the spec's own limits, as `rvm run` sizes its VMs. Also the warning for a container of a
//! pod whose memory limit is more than its pod's VM holds.
//!
//! kubelet (1.23 and later) sends the sum of the pod's container limits in the PodSandboxConfig's
//! `linux.resources`; containerd writes all four fields as decimal integers whenever that is set,
//! 0 where kubelet set nothing. A value that is not such an integer did not come from kubelet
//! and containerd: the sandbox is refused with the annotation named, rather than booted at a size
//! that ignores the pod's limits. CPU shares are a relative weight, not a size, and are not used.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use oci_spec::runtime::Spec;
use rvm_runtime::sandbox::config::VmSize;
use rvm_runtime::sandbox::prepare::{self, VM_OVERHEAD_MIB};
use thiserror::Error;

/// The pod's memory limit in bytes.
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
/// The pod's CFS quota in µs per period.
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// The pod's CFS period in µs.
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";

/// The period used for a quota given without one (the kernel's and runc's default).
const DEFAULT_CPU_PERIOD: u64 = 100_000;
/// The CFS periods the kernel accepts (µs).
const CPU_PERIODS: RangeInclusive<u64> = 1_000..=1_000_000;
/// cgroup's "no limit", accepted like 0 for the memory limit and the quota.
const UNLIMITED: i64 = -1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SizingError {
    #[error("annotation {key}={value:?}: {why}")]
    BadAnnotation {
        key: &'static str,
        value: String,
        why: String,
    },
}

/// The pod's resources from the annotations; None where absent or unlimited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PodResources {
    /// Bytes.
    pub memory: Option<u64>,
    /// Whole CPUs the quota needs.
    pub vcpus: Option<u64>,
}

/// The most a VM can get on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    pub memory_mib: u64,
    pub vcpus: u32,
}

impl HostLimits {
    /// The host's RAM (the VMM refuses more) and the CPUs this process may run on (the VMM runs
    /// beside it; more vCPUs than that only add contention), at most the VMM's vCPU limit.
    pub fn of_host() -> Self {
        let memory_mib = rvm_vmm::config::host_memory_mib().unwrap_or_else(|err| {
            tracing::warn!(%err, "cannot read the host's memory; VM memory is not capped");
            u64::MAX
        });
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            memory_mib,
            vcpus: u32::try_from(cpus)
                .unwrap_or(u32::MAX)
                .min(rvm_vmm::config::MAX_VCPUS),
        }
    }
}

/// Reads the sandbox-sizing annotations (see the module's doc for what is refused).
pub fn pod_resources(annotations: &HashMap<String, String>) -> Result<PodResources, SizingError> {
    let memory = limit(annotations, SANDBOX_MEMORY)?;
    let vcpus = match limit(annotations, SANDBOX_CPU_QUOTA)? {
        Some(quota) => Some(quota.div_ceil(period(annotations)?)),
        None => None,
    };
    Ok(PodResources { memory, vcpus })
}

/// The annotation `key` as text and integer, None when absent.
fn integer<'a>(
    annotations: &'a HashMap<String, String>,
    key: &'static str,
) -> Result<Option<(&'a str, i64)>, SizingError> {
    let Some(text) = annotations.get(key) else {
        return Ok(None);
    };
    match text.parse() {
        Ok(value) => Ok(Some((text, value))),
        Err(_) => Err(bad(key, text, "not a decimal integer".to_owned())),
    }
}

/// A memory limit or quota: positive, or 0 / -1 (or absent) for none.
fn limit(
    annotations: &HashMap<String, String>,
    key: &'static str,
) -> Result<Option<u64>, SizingError> {
    match integer(annotations, key)? {
        None | Some((_, 0 | UNLIMITED)) => Ok(None),
        Some((text, value)) => u64::try_from(value).map(Some).map_err(|_| {
            bad(
                key,
                text,
                "negative (of the negative values only -1, cgroup's \"no limit\", is accepted)"
                    .to_owned(),
            )
        }),
    }
}

/// The quota's period: the default when absent or 0, else within what the kernel accepts.
fn period(annotations: &HashMap<String, String>) -> Result<u64, SizingError> {
    let Some((text, period)) = integer(annotations, SANDBOX_CPU_PERIOD)? else {
        return Ok(DEFAULT_CPU_PERIOD);
    };
    if period == 0 {
        return Ok(DEFAULT_CPU_PERIOD);
    }
    u64::try_from(period)
        .ok()
        .filter(|period| CPU_PERIODS.contains(period))
        .ok_or_else(|| {
            bad(
                SANDBOX_CPU_PERIOD,
                text,
                format!(
                    "a CFS period is {} to {} µs",
                    CPU_PERIODS.start(),
                    CPU_PERIODS.end()
                ),
            )
        })
}

fn bad(key: &'static str, value: &str, why: String) -> SizingError {
    SizingError::BadAnnotation {
        key,
        value: value.to_owned(),
        why,
    }
}

/// The VM for `spec`: the pod's resources where the annotations give them, else the spec's own
/// limits (else the runtime's defaults), capped at what the host allows.
pub fn vm_size(spec: &Spec, host: HostLimits) -> Result<VmSize, SizingError> {
    let pod = match spec.annotations() {
        Some(annotations) => pod_resources(annotations)?,
        None => PodResources::default(),
    };
    let memory = pod.memory.or_else(|| memory_limit(spec));
    let vcpus = pod.vcpus.or_else(|| cpu_quota_vcpus(spec)).unwrap_or(1);
    let wanted = prepare::vm_size(memory, u32::try_from(vcpus).unwrap_or(u32::MAX));
    Ok(capped(wanted, host))
}

/// `wanted` within `host`, with a warning for what was cut: Kubernetes lets limits exceed the
/// node (they are not reservations), and the VM cannot use more than the host has anyway.
fn capped(wanted: VmSize, host: HostLimits) -> VmSize {
    let size = VmSize {
        memory_mib: wanted.memory_mib.min(host.memory_mib),
        vcpus: wanted.vcpus.min(host.vcpus).max(1),
    };
    if size.memory_mib < wanted.memory_mib {
        tracing::warn!(
            wanted = wanted.memory_mib,
            host = host.memory_mib,
            "the VM's memory (MiB) is capped at the host's"
        );
    }
    if size.vcpus < wanted.vcpus {
        tracing::warn!(
            wanted = wanted.vcpus,
            host = host.vcpus,
            "the VM's vCPUs are capped at the CPUs the host gives the VMM"
        );
    }
    size
}

/// The container limit of the spec (bytes).
pub fn memory_limit(spec: &Spec) -> Option<u64> {
    let limit = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .memory()
        .as_ref()?
        .limit()?;
    u64::try_from(limit).ok().filter(|l| *l > 0)
}

/// Whole CPUs the spec's CPU quota needs.
fn cpu_quota_vcpus(spec: &Spec) -> Option<u64> {
    let cpu = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .cpu()
        .as_ref()?;
    let quota = u64::try_from(cpu.quota()?).ok().filter(|q| *q > 0)?;
    let period = cpu.period().filter(|p| *p > 0)?;
    Some(quota.div_ceil(period))
}

/// How many bytes of `limit` the pod's VM of `vm` cannot give a container: its memory less what
/// the kernel and agent need. None when it fits.
pub fn beyond_vm(limit: u64, vm: VmSize) -> Option<u64> {
    let room = vm.memory_mib.saturating_sub(VM_OVERHEAD_MIB) << 20;
    limit.checked_sub(room).filter(|excess| *excess > 0)
}

/// Warns when container `id`'s memory limit is more than its pod's VM of `vm` holds: the limit
/// still applies in the guest, but the guest's memory runs out first, so the container's
/// processes are OOM-killed below their limit.
pub fn warn_if_beyond_vm(id: &str, spec: &Spec, vm: VmSize) {
    let Some(limit) = memory_limit(spec) else {
        return;
    };
    if let Some(excess) = beyond_vm(limit, vm) {
        tracing::warn!(
            container = id,
            limit,
            vm_memory_mib = vm.memory_mib,
            excess,
            "the container's memory limit is more than its pod's VM holds: size the pod \
             (kubelet 1.23+ sends the pod's limits; containerd 1.6.7+ passes them on)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, SpecBuilder,
    };

    const HOST: HostLimits = HostLimits {
        memory_mib: 4096,
        vcpus: 4,
    };

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn spec_with(pairs: &[(&str, &str)]) -> Spec {
        let mut spec = Spec::default();
        spec.set_annotations(Some(annotations(pairs)));
        spec
    }

    /// A spec whose container has these limits (as `ctr run --memory-limit --cpus` makes).
    fn limited_spec(memory: i64, quota: i64, period: u64) -> Spec {
        let resources = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(memory).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(quota)
                    .period(period)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .resources(resources)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    /// The annotations containerd 1.6 writes for a sized pod (shares included, and unused).
    fn pod_annotations(memory: &str, quota: &str, period: &str) -> Vec<(&'static str, String)> {
        vec![
            (SANDBOX_MEMORY, memory.to_owned()),
            (SANDBOX_CPU_QUOTA, quota.to_owned()),
            (SANDBOX_CPU_PERIOD, period.to_owned()),
            ("io.kubernetes.cri.sandbox-cpu-shares", "2048".to_owned()),
        ]
    }

    fn pod_spec(memory: &str, quota: &str, period: &str) -> Spec {
        let pairs = pod_annotations(memory, quota, period);
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spec_with(&pairs)
    }

    #[test]
    fn a_sized_pod_gets_its_memory_plus_the_overhead_and_its_cpus() {
        let size = vm_size(&pod_spec("268435456", "200000", "100000"), HOST).unwrap();
        assert_eq!(
            size,
            VmSize {
                memory_mib: 256 + VM_OVERHEAD_MIB,
                vcpus: 2
            }
        );
    }

    #[test]
    fn partial_cpus_round_up_and_a_missing_period_is_the_default() {
        let size = vm_size(&pod_spec("0", "150000", "100000"), HOST).unwrap();
        assert_eq!(size.vcpus, 2);
        let size = vm_size(&pod_spec("0", "50000", "0"), HOST).unwrap();
        assert_eq!(size.vcpus, 1);
        let size = vm_size(&pod_spec("0", "300000", "0"), HOST).unwrap();
        assert_eq!(size.vcpus, 3);
        let resources = pod_resources(&annotations(&[(SANDBOX_CPU_QUOTA, "250000")])).unwrap();
        assert_eq!(resources.vcpus, Some(3));
    }

    #[test]
    fn zero_or_unlimited_falls_back_to_the_spec_then_the_default() {
        for (memory, quota) in [("0", "0"), ("-1", "-1")] {
            let size = vm_size(&pod_spec(memory, quota, "100000"), HOST).unwrap();
            assert_eq!(
                size,
                VmSize {
                    memory_mib: prepare::DEFAULT_VM_MEMORY_MIB,
                    vcpus: 1
                },
                "{memory} {quota}"
            );
        }
        assert_eq!(
            vm_size(&Spec::default(), HOST).unwrap().memory_mib,
            prepare::DEFAULT_VM_MEMORY_MIB
        );
        let size = vm_size(&limited_spec(512 << 20, 300_000, 100_000), HOST).unwrap();
        assert_eq!(
            size,
            VmSize {
                memory_mib: 512 + VM_OVERHEAD_MIB,
                vcpus: 3
            }
        );
    }

    #[test]
    fn the_pods_annotations_win_over_the_specs_own_limits() {
        let mut spec = limited_spec(512 << 20, 300_000, 100_000);
        spec.set_annotations(Some(annotations(&[
            (SANDBOX_MEMORY, "134217728"),
            (SANDBOX_CPU_QUOTA, "100000"),
        ])));
        let size = vm_size(&spec, HOST).unwrap();
        assert_eq!(
            size,
            VmSize {
                memory_mib: 128 + VM_OVERHEAD_MIB,
                vcpus: 1
            }
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_annotation() {
        let cases = [
            pod_annotations("256Mi", "0", "0"),
            pod_annotations("", "0", "0"),
            pod_annotations("-5", "0", "0"),
            pod_annotations("-05", "0", "0"),
            pod_annotations("99999999999999999999", "0", "0"),
            pod_annotations("0", "2.5", "100000"),
            pod_annotations("0", "-100000", "100000"),
            pod_annotations("0", "200000", "-1"),
            pod_annotations("0", "200000", "100"),
            pod_annotations("0", "200000", "2000000"),
            pod_annotations("0", "200000", "abc"),
        ];
        for pairs in cases {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let error = pod_resources(&annotations(&pairs)).unwrap_err();
            let message = error.to_string();
            let SizingError::BadAnnotation { key, value, .. } = &error;
            assert!(
                message.starts_with(&format!("annotation {key}=")),
                "{message}"
            );
            assert!(message.contains(&format!("{value:?}")), "{message}");
            let given = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
            assert_eq!(given, Some(value.as_str()), "{message}");
        }
    }

    #[test]
    fn the_vm_is_capped_at_the_host() {
        let size = vm_size(&pod_spec("68719476736", "6400000", "100000"), HOST).unwrap();
        assert_eq!(
            size,
            VmSize {
                memory_mib: 4096,
                vcpus: 4
            }
        );
        let one = HostLimits {
            memory_mib: 4096,
            vcpus: 1,
        };
        assert_eq!(
            vm_size(&pod_spec("0", "200000", "0"), one).unwrap().vcpus,
            1
        );
    }

    #[test]
    fn a_container_limit_beyond_the_pods_vm_is_measured() {
        let vm = VmSize {
            memory_mib: 256 + VM_OVERHEAD_MIB,
            vcpus: 1,
        };
        assert_eq!(beyond_vm(256 << 20, vm), None);
        assert_eq!(beyond_vm(100 << 20, vm), None);
        assert_eq!(beyond_vm((256 << 20) + 1, vm), Some(1));
        assert_eq!(beyond_vm(512 << 20, vm), Some(256 << 20));
        let tiny = VmSize {
            memory_mib: 32,
            vcpus: 1,
        };
        assert_eq!(beyond_vm(1, tiny), Some(1));
    }

    #[test]
    fn host_limits_are_read() {
        let host = HostLimits::of_host();
        assert!(host.memory_mib > 0);
        assert!((1..=rvm_vmm::config::MAX_VCPUS).contains(&host.vcpus));
    }
}

//! The `rvm-vmm` command line of a sandbox: kernel, agent initramfs, kernel command line, VM
//! size, layer disks (read-only), scratch and volume disks, the hybrid vsock socket and the TAP.
//!
//! The command line is the VMM's own typed configuration ([`rvm_vmm::config::Args`]), rendered
//! by the VMM crate, which refuses any value `rvm-vmm` would not parse back as it is (a `,` in a
//! disk path, say): such a command fails before anything is created or started, instead of
//! booting a VM with other disks than asked for.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::Signal;
use rvm_vmm::config::{Args as VmmArgs, DiskSpec, NetSpec, RenderError, RenderProblem, VsockSpec};
use tokio::process::{Child, Command};

use super::artifacts::GuestArtifacts;

/// The kernel command line: serial console, a reboot ends the VM (`reboot=k`), a panic reboots
/// at once, and a quiet boot.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";
/// The guest CID of every sandbox: each VM has its own vsock device, so they need not differ.
pub const GUEST_CID: u32 = 3;

/// One disk present from boot; the runtime always gives it a serial, which the agent finds it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskArg {
    pub path: PathBuf,
    pub read_only: bool,
    pub serial: String,
}

impl DiskArg {
    fn to_spec(&self) -> DiskSpec {
        DiskSpec {
            path: self.path.clone(),
            read_only: self.read_only,
            serial: Some(self.serial.clone()),
        }
    }
}

/// Everything `rvm-vmm` is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmCommand {
    pub vmm: PathBuf,
    pub guest: GuestArtifacts,
    pub cmdline: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub disks: Vec<DiskArg>,
    pub vsock: PathBuf,
    pub console_log: PathBuf,
    /// `--net tap=NAME,mac=MAC` with bridge networking, as the network wiring spells it; parsed
    /// with the VMM's own parser when the configuration is built.
    pub net: Option<String>,
    /// `--disk-slots N`: empty disks the host fills at run time (a pod's containers).
    pub disk_slots: u32,
    /// `--api SOCKET`: where the VMM takes ATTACH/DETACH requests for its slots.
    pub api: Option<PathBuf>,
    /// The network namespace to start the VMM in (a pod's, set up by CNI), where it opens the
    /// TAP of `net`; None: the caller's.
    pub netns: Option<PathBuf>,
}

impl VmmCommand {
    /// The VMM's configuration: the typed command line `rvm-vmm` parses.
    pub fn config(&self) -> Result<VmmArgs, RenderError> {
        Ok(VmmArgs {
            initrd: Some(self.guest.initramfs.clone()),
            cmdline: self.cmdline.clone(),
            memory: self.memory_mib,
            vcpus: self.vcpus,
            disks: self.disks.iter().map(DiskArg::to_spec).collect(),
            disk_slots: self.disk_slots,
            api: self.api.clone(),
            vsock: Some(VsockSpec {
                cid: GUEST_CID,
                uds: self.vsock.clone(),
            }),
            net: self.net.as_deref().map(parse_net).transpose()?,
            console_log: Some(self.console_log.clone()),
            ..VmmArgs::new(self.guest.kernel.clone())
        })
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Result<Vec<OsString>, RenderError> {
        self.config()?.to_args()
    }
}

/// `--net`'s value as the VMM parses it; refused as the VMM would refuse it.
fn parse_net(value: &str) -> Result<NetSpec, RenderError> {
    value.parse().map_err(|reason| RenderError {
        flag: "--net",
        value: value.to_owned(),
        problem: RenderProblem::Refused(reason),
    })
}

/// A failure to start `rvm-vmm`, naming the file or program.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {}: {source}", path.display())]
    Start {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `reason` is no `source`: the message already quotes it.
    #[error("cannot start {}: {reason}", path.display())]
    Args { path: PathBuf, reason: RenderError },
}

impl VmmCommand {
    /// Starts `rvm-vmm` with stdout and stderr to `log`. The VMM is killed when its parent dies
    /// (so a crashed monitor or shim leaves no VM behind) and when the `Child` is dropped.
    pub fn spawn(&self, log: &Path) -> Result<Child, SpawnError> {
        let args = self.args().map_err(|reason| SpawnError::Args {
            path: self.vmm.clone(),
            reason,
        })?;
        let log_err = |source| SpawnError::Log {
            path: log.to_owned(),
            source,
        };
        let log_file = File::create(log).map_err(log_err)?;
        let log_copy = log_file.try_clone().map_err(log_err)?;
        let mut cmd = Command::new(&self.vmm);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_copy))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        // Opened here and kept open until the child has exec'd: the child joins it by fd.
        let netns = match &self.netns {
            Some(path) => Some(File::open(path).map_err(|source| SpawnError::Netns {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let netns_fd = netns.as_ref().map(|file| file.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and only makes the prctl and
        // setns system calls, which are async-signal-safe; it reads only the copied fd number,
        // whose file the parent keeps open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)?;
                match netns_fd {
                    Some(fd) => join_network_namespace(fd),
                    None => Ok(()),
                }
            });
        }
        tracing::info!(vmm = %self.vmm.display(), args = ?args, netns = ?self.netns, "starting VMM");
        let child = cmd.spawn().map_err(|source| SpawnError::Start {
            path: self.vmm.clone(),
            source,
        });
        drop(netns);
        child
    }
}

/// Moves the calling thread into the network namespace open as `fd` (async-signal-safe: one
/// system call, no allocation).
fn join_network_namespace(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: setns only reads its two integer arguments; an fd that is not a network
    // namespace makes it fail with EINVAL, which is returned, not undefined behaviour.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::config::{ContainerConfig, LayerDiskRef, NetworkMode, VmSize, VolumeRef};
    use crate::sandbox::layout::Layout;

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "abc".into(),
            name: "n".into(),
            image: "busybox".into(),
            image_id: "sha256:x".into(),
            created: String::new(),
            spec: oci_spec::runtime::Spec::default(),
            layers: vec![LayerDiskRef {
                path: "/l/0.erofs".into(),
                diff_id: "sha256:0".into(),
                serial: "rvm-layer-0".into(),
            }],
            scratch: "/c/scratch.ext4".into(),
            volumes: vec![VolumeRef {
                name: "data".into(),
                path: "/v/data.ext4".into(),
                serial: "rvm-vol-0".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            vm: VmSize {
                memory_mib: 256,
                vcpus: 2,
            },
            network: NetworkMode::None,
            endpoint: None,
            tty: false,
            open_stdin: false,
            auto_remove: false,
            stop_signal: None,
        }
    }

    /// The command `Vm::boot` makes of the container's VM spec (as the monitor builds it).
    fn command_of(layout: &Layout, config: &ContainerConfig, guest: GuestArtifacts) -> VmmCommand {
        let spec = crate::sandbox::monitor::vm_spec(config);
        VmmCommand {
            vmm: "/bin/rvm-vmm".into(),
            guest,
            cmdline: KERNEL_CMDLINE.to_owned(),
            memory_mib: spec.size.memory_mib,
            vcpus: spec.size.vcpus,
            disks: spec.disks,
            vsock: layout.vsock_path(&config.id),
            console_log: layout.console_path(&config.id),
            net: None,
            disk_slots: 0,
            api: None,
            netns: None,
        }
    }

    #[test]
    fn command_line_has_every_disk_and_the_vsock() {
        let layout = Layout::new(Some("/r".into()));
        let command = command_of(&layout, &config(), guest());
        let args: Vec<String> = command
            .args()
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("--kernel /g/vmlinux --initrd /g/initramfs.img --cmdline"));
        assert!(args.contains(&KERNEL_CMDLINE.to_owned()));
        assert!(joined.contains("--memory 256 --vcpus 2"));
        assert!(joined.contains("--disk /l/0.erofs,ro,serial=rvm-layer-0"));
        assert!(joined.contains("--disk /c/scratch.ext4,serial=rvm-scratch"));
        assert!(joined.contains("--disk /v/data.ext4,ro,serial=rvm-vol-0"));
        assert!(joined.contains("--vsock cid=3,uds=/r/run/abc/vsock"));
        assert!(joined.ends_with("--console-log /r/containers/abc/console.log"));
        for disk in &command.disks {
            assert!(disk.serial.len() <= 20, "{}", disk.serial);
        }
        assert!(!joined.contains("--disk-slots") && !joined.contains("--api"));
    }

    #[test]
    fn pod_vm_has_disk_slots_and_an_api_socket() {
        let layout = Layout::new(Some("/r".into()));
        let mut command = command_of(&layout, &config(), guest());
        command.disk_slots = 8;
        command.api = Some("/r/run/abc/api.sock".into());
        let joined = command
            .args()
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("--disk-slots 8 --api /r/run/abc/api.sock"));
    }

    fn guest() -> GuestArtifacts {
        GuestArtifacts {
            kernel: "/g/vmlinux".into(),
            initramfs: "/g/initramfs.img".into(),
        }
    }

    #[test]
    fn the_vmm_parses_back_what_the_runtime_renders() {
        let layout = Layout::new(Some("/r".into()));
        let mut command = command_of(&layout, &config(), guest());
        command.net = Some("tap=rvmabcdef012345,mac=02:AB:cd:ef:01:23".into());
        command.disk_slots = 8;
        command.api = Some("/r/run/abc/api.sock".into());
        let config = command.config().unwrap();
        let parsed = VmmArgs::from_args(command.args().unwrap()).unwrap();
        assert_eq!(parsed, config);
        assert_eq!(parsed.disks.len(), 3);
        assert_eq!(parsed.disks[1].serial.as_deref(), Some("rvm-scratch"));
        assert_eq!(
            parsed.net.map(|net| (net.tap, net.mac)),
            Some((
                "rvmabcdef012345".to_owned(),
                Some([2, 0xab, 0xcd, 0xef, 1, 0x23])
            ))
        );
        assert_eq!(parsed.vsock.map(|vsock| vsock.cid), Some(GUEST_CID));
    }

    #[test]
    fn a_value_the_vmm_would_misread_is_refused_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(Some("/r".into()));
        let mut command = command_of(&layout, &config(), guest());
        command.disks[1].path = "/c/scratch,ro.ext4".into();
        let log = dir.path().join("vmm.log");
        let err = command.spawn(&log).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start /bin/rvm-vmm: --disk \"/c/scratch,ro.ext4\": contains ',', which \
             separates this flag's options"
        );
        assert!(
            !log.exists(),
            "nothing is created for a command that cannot start"
        );

        let mut command = command_of(&layout, &config(), guest());
        command.net = Some("tap=t,mac=zz".into());
        let err = command.config().unwrap_err();
        assert_eq!(err.flag, "--net");
        assert!(err.to_string().contains("MAC \"zz\""), "{err}");
    }
}

//! The `rvm-vmm` command line of a sandbox: kernel, agent initramfs, kernel command line, VM
//! size, layer disks (read-only), scratch and volume disks, the hybrid vsock socket and the TAP.
//!
//! The command line is the VMM's own typed configuration ([`rvm_vmm::config::Args`]), rendered
//! by the VMM crate, which refuses any value `rvm-vmm` would not parse back as it is (a `,` in a
//! disk path, say): such a command fails before anything is created or started, instead of
//! booting a VM with other disks than asked for.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rvm_vmm::config::{Args as VmmArgs, DiskSpec, NetSpec, RenderError, RenderProblem, VsockSpec};

use crate::jail::cgroup::VmCgroup;
use crate::jail::spawn::{self, Spawned, Start};
use crate::jail::VmmJail;

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
            // Its stderr is vmm.log, which nothing else rotates.
            bounded_stderr: true,
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
        source: crate::jail::spawn::SpawnError,
    },
    #[error("cannot open the network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `reason` is no `source`: the message already quotes it.
    #[error("cannot start {}: {reason}", path.display())]
    Args { path: PathBuf, reason: RenderError },
    #[error("cannot jail {}: {source}", path.display())]
    Jail {
        path: PathBuf,
        source: crate::jail::JailError,
    },
    #[error("cannot watch rvm-vmm (pid {pid}), which was killed: {source}")]
    Watch { pid: u32, source: std::io::Error },
}

impl VmmCommand {
    /// Starts `rvm-vmm` in `jail` with stdout and stderr to `log`: in new mount, PID, IPC and
    /// UTS namespaces, in the jail's cgroup, holding the jail's ID lease, with `--jail` so that
    /// it drops to the jail's user in an empty root before the guest runs. The VMM is killed
    /// when its parent dies (so a crashed monitor or shim leaves no VM behind).
    pub fn spawn(&self, log: &Path, jail: &VmmJail) -> Result<Spawned, SpawnError> {
        let mut config = self.config().map_err(|reason| SpawnError::Args {
            path: self.vmm.clone(),
            reason,
        })?;
        config.jail = Some(jail.spec());
        let args = config.to_args().map_err(|reason| SpawnError::Args {
            path: self.vmm.clone(),
            reason,
        })?;
        // Readable too: the VMM keeps it to a size by cutting it (rvm_vmm::logging::bounded).
        let log_file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(log)
            .map_err(|source| SpawnError::Log {
                path: log.to_owned(),
                source,
            })?;
        // Opened here and kept open until the child has exec'd: the child joins it by fd.
        let netns = match &self.netns {
            Some(path) => Some(File::open(path).map_err(|source| SpawnError::Netns {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        tracing::info!(vmm = %self.vmm.display(), args = ?args, netns = ?self.netns, "starting VMM");
        let start = Start {
            program: &self.vmm,
            args: &args,
            env: std::env::vars_os().collect(),
            output: &log_file,
            netns: netns.as_ref(),
            cgroup: jail.cgroup().map(VmCgroup::handle),
            keep: Some(jail.lease_file()),
        };
        spawn::spawn(&start).map_err(|source| SpawnError::Start {
            path: self.vmm.clone(),
            source,
        })
    }
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
            privileged: false,
            devices: Vec::new(),
            log: Default::default(),
        }
    }

    /// The command `Vm::boot` makes of the container's VM spec (as the monitor builds it).
    /// The command's arguments as strings.
    fn args_of(command: &VmmCommand) -> Vec<String> {
        command
            .args()
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

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
        let args = args_of(&command);
        let joined = args.join(" ");
        assert!(joined.starts_with("--kernel /g/vmlinux --initrd /g/initramfs.img --cmdline"));
        assert!(args.contains(&KERNEL_CMDLINE.to_owned()));
        assert!(joined.contains("--memory 256 --vcpus 2"));
        assert!(joined.contains("--disk /l/0.erofs,ro,serial=rvm-layer-0"));
        assert!(joined.contains("--disk /c/scratch.ext4,serial=rvm-scratch"));
        assert!(joined.contains("--disk /v/data.ext4,ro,serial=rvm-vol-0"));
        assert!(joined.contains("--vsock cid=3,uds=/r/run/abc/vsock"));
        assert!(joined.ends_with("--console-log /r/containers/abc/console.log --bounded-stderr"));
        for disk in &command.disks {
            assert!(disk.serial.len() <= 20, "{}", disk.serial);
        }
        assert!(!joined.contains("--disk-slots") && !joined.contains("--api"));
    }

    #[test]
    fn host_devices_are_disks_read_only_without_w() {
        use crate::sandbox::config::DeviceRef;
        let layout = Layout::new(Some("/r".into()));
        let device = |host: &str, serial: &str, permissions: &str| DeviceRef {
            host_path: host.into(),
            serial: serial.into(),
            container_path: "/dev/xvdc".into(),
            permissions: permissions.into(),
        };
        let config = ContainerConfig {
            devices: vec![
                device("/dev/loop0", "rvm-dev-0", "r"),
                device("/dev/sdb", "rvm-dev-1", "rwm"),
                device("/dev/sdc", "rvm-dev-2", "mr"),
            ],
            ..config()
        };
        let command = command_of(&layout, &config, guest());
        let joined = args_of(&command).join(" ");
        assert!(
            joined.contains("--disk /dev/loop0,ro,serial=rvm-dev-0"),
            "{joined}"
        );
        assert!(
            joined.contains("--disk /dev/sdb,serial=rvm-dev-1"),
            "{joined}"
        );
        assert!(
            joined.contains("--disk /dev/sdc,ro,serial=rvm-dev-2"),
            "{joined}"
        );
        let request = crate::sandbox::monitor::new_container(&config)
            .request(&config.id)
            .unwrap();
        let sent: Vec<_> = request
            .devices
            .iter()
            .map(|d| (d.serial.as_str(), d.path.as_str(), d.permissions.as_str()))
            .collect();
        assert_eq!(
            sent,
            [
                ("rvm-dev-0", "/dev/xvdc", "r"),
                ("rvm-dev-1", "/dev/xvdc", "rwm"),
                ("rvm-dev-2", "/dev/xvdc", "mr")
            ]
        );
    }

    #[test]
    fn pod_vm_has_disk_slots_and_an_api_socket() {
        let layout = Layout::new(Some("/r".into()));
        let mut command = command_of(&layout, &config(), guest());
        command.disk_slots = 8;
        command.api = Some("/r/run/abc/api.sock".into());
        let joined = args_of(&command).join(" ");
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
        let layout = Layout::new(Some("/r".into()));
        let mut command = command_of(&layout, &config(), guest());
        command.disks[1].path = "/c/scratch,ro.ext4".into();
        let err = command.args().unwrap_err();
        assert_eq!(
            err.to_string(),
            "--disk \"/c/scratch,ro.ext4\": contains ',', which separates this flag's options"
        );

        let mut command = command_of(&layout, &config(), guest());
        command.net = Some("tap=t,mac=zz".into());
        let err = command.config().unwrap_err();
        assert_eq!(err.flag, "--net");
        assert!(err.to_string().contains("MAC \"zz\""), "{err}");
    }
}

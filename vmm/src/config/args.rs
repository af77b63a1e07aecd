//! The command line of `rvm-vmm` as one typed value, [`Args`]: the binary parses it
//! ([`Args::from_args`], or clap's `Args::parse`), the runtime builds one and renders it
//! ([`Args::to_args`]) to start the VMM.
//!
//! Invariant: `Args::from_args(args.to_args()?) == args`. Rendering refuses, with a
//! [`RenderError`] naming the flag, any value it cannot pass through clap unchanged: an empty
//! path (clap refuses empty paths), and a `--disk`, `--net` or `--vsock` value its own parser
//! would read differently (see `specs`). A value starting with `-` is rendered as
//! `--flag=value`, the one form in which clap does not take it for a flag. Files are not
//! looked at here: [`super::validate`] checks them after parsing.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::Parser;

use super::specs::{DiskSpec, JailSpec, NetSpec, RenderError, RenderProblem, VsockSpec};
use crate::seccomp::SeccompMode;

/// Kernel command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";
/// Guest RAM in MiB when `--memory` is not given.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// vCPUs when `--vcpus` is not given.
pub const DEFAULT_VCPUS: u32 = 1;
/// `--seccomp` when not given: the filter is enforced unless asked otherwise (`off` and `log`
/// are for debugging).
const DEFAULT_SECCOMP: &str = "enforce";

/// The command line of `rvm-vmm`.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(
    name = "rvm-vmm",
    version,
    about = "Boot a Linux guest in a KVM microVM"
)]
pub struct Args {
    /// Guest kernel: ELF vmlinux (PVH or 64-bit entry) or bzImage.
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VCPUS)]
    pub vcpus: u32,
    /// Block device backed by PATH; `,ro` makes it read-only, `,serial=ID` gives it the ID
    /// the guest finds it by. Repeatable.
    #[arg(long = "disk", value_name = "PATH[,ro][,serial=ID]")]
    pub disks: Vec<DiskSpec>,
    /// Network device on a TAP interface.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    pub net: Option<NetSpec>,
    /// vsock device with a hybrid Unix socket on the host.
    #[arg(long, value_name = "cid=N,uds=PATH")]
    pub vsock: Option<VsockSpec>,
    /// N empty read-only disks after the `--disk` ones (capacity 0, no serial), filled and
    /// emptied while the guest runs through the `--api` socket; 0 to 16.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub disk_slots: u32,
    /// Unix socket of the host API: `ATTACH <slot> <serial>` with the image's descriptor
    /// (SCM_RIGHTS), `DETACH <slot>`, one request per line.
    #[arg(long, value_name = "PATH")]
    pub api: Option<PathBuf>,
    /// Copy the guest's serial console to stdout.
    #[arg(long)]
    pub console: bool,
    /// Also write the guest's serial console to this file (continued, kept under 9 MiB: its first
    /// MiB and its last 4 to 8)
    #[arg(long, value_name = "PATH")]
    pub console_log: Option<PathBuf>,
    /// Keep stderr, when it is a regular file, under 2.25 MiB (its first 256 KiB, a line saying
    /// how much was cut, its last 1 to 2 MiB): for a log nobody else rotates, such as the
    /// runtime's vmm.log. Not the default: a harness's own log inherited as stderr stays whole.
    #[arg(long)]
    pub bounded_stderr: bool,
    /// Enter an ELF kernel in 64-bit mode even if it has a PVH entry point.
    #[arg(long)]
    pub no_pvh: bool,
    /// The VMM's own seccomp filter, installed before the guest runs: `enforce` (a system call
    /// outside it kills the VMM, the default), `log` (allowed and logged by the kernel) or `off`.
    /// `log` and `off` are for debugging only.
    #[arg(long, value_name = "enforce|log|off", default_value = DEFAULT_SECCOMP)]
    pub seccomp: SeccompMode,
    /// Once every file and socket is open and before the guest runs: pivot into an empty
    /// read-only root at DIR (in the mount namespace the VMM was started in, which must be its
    /// own), drop every capability and become UID:GID with `no_new_privs`. Needs root.
    #[arg(long, value_name = "uid=N,gid=N,root=DIR")]
    pub jail: Option<JailSpec>,
}

impl Args {
    /// Booting `kernel` with every other flag left out.
    pub fn new(kernel: PathBuf) -> Self {
        Self {
            kernel,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_owned(),
            memory: DEFAULT_MEMORY_MIB,
            vcpus: DEFAULT_VCPUS,
            disks: Vec::new(),
            net: None,
            vsock: None,
            disk_slots: 0,
            api: None,
            console: false,
            console_log: None,
            bounded_stderr: false,
            no_pvh: false,
            seccomp: SeccompMode::Enforce,
            jail: None,
        }
    }

    /// Parses the arguments after the program name.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let program = std::iter::once(OsString::from("rvm-vmm"));
        Self::try_parse_from(program.chain(args.into_iter().map(Into::into)))
    }

    /// The arguments after the program name that [`Args::from_args`] parses back to `self`.
    ///
    /// The VM's shape (kernel, command line, memory, vCPUs) is always spelled out, so that a
    /// logged command line says what was booted; everything else only when it is set.
    pub fn to_args(&self) -> Result<Vec<OsString>, RenderError> {
        let mut argv = Argv::default();
        argv.path("--kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            argv.path("--initrd", initrd)?;
        }
        argv.value("--cmdline", &self.cmdline);
        argv.value("--memory", self.memory.to_string());
        argv.value("--vcpus", self.vcpus.to_string());
        for disk in &self.disks {
            argv.value("--disk", disk.to_arg()?);
        }
        if self.disk_slots > 0 {
            argv.value("--disk-slots", self.disk_slots.to_string());
        }
        if let Some(api) = &self.api {
            argv.path("--api", api)?;
        }
        if let Some(vsock) = &self.vsock {
            argv.value("--vsock", vsock.to_arg()?);
        }
        if let Some(net) = &self.net {
            argv.value("--net", net.to_arg()?);
        }
        if let Some(log) = &self.console_log {
            argv.path("--console-log", log)?;
        }
        argv.switch("--console", self.console);
        argv.switch("--bounded-stderr", self.bounded_stderr);
        argv.switch("--no-pvh", self.no_pvh);
        if let Some(jail) = &self.jail {
            argv.value("--jail", jail.to_arg()?);
        }
        let seccomp = seccomp_name(self.seccomp);
        if seccomp != DEFAULT_SECCOMP {
            argv.value("--seccomp", seccomp);
        }
        Ok(argv.0)
    }
}

/// The word `--seccomp` takes for `mode` (what `SeccompMode::from_str` parses).
fn seccomp_name(mode: SeccompMode) -> &'static str {
    match mode {
        SeccompMode::Enforce => "enforce",
        SeccompMode::Log => "log",
        SeccompMode::Off => "off",
    }
}

/// An argument list being rendered.
#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn switch(&mut self, flag: &str, on: bool) {
        if on {
            self.0.push(flag.into());
        }
    }

    /// `flag value`, or `flag=value` when the value starts with `-` (clap would take it for a
    /// flag).
    fn value(&mut self, flag: &str, value: impl AsRef<OsStr>) {
        let value = value.as_ref();
        if value.as_encoded_bytes().starts_with(b"-") {
            let mut joined = OsString::from(flag);
            joined.push("=");
            joined.push(value);
            self.0.push(joined);
        } else {
            self.0.push(flag.into());
            self.0.push(value.to_owned());
        }
    }

    /// A path flag: any bytes but none at all, which clap's path parser refuses.
    fn path(&mut self, flag: &'static str, path: &Path) -> Result<(), RenderError> {
        if path.as_os_str().is_empty() {
            return Err(RenderError::new(flag, path, RenderProblem::Empty));
        }
        self.value(flag, path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// One edit of an [`Args`].
    type Change = fn(&mut Args);

    fn round_trip(args: &Args) -> Vec<OsString> {
        let argv = args.to_args().unwrap();
        let parsed = Args::from_args(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert_eq!(&parsed, args, "{argv:?}");
        argv
    }

    fn text(argv: &[OsString]) -> String {
        argv.iter()
            .map(|a| a.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Every field set, none to its default.
    fn everything() -> Args {
        Args {
            kernel: "/g/vmlinux".into(),
            initrd: Some("/g/initramfs.img".into()),
            cmdline: "console=ttyS0 reboot=k panic=-1 quiet".into(),
            memory: 256,
            vcpus: 2,
            disks: vec![
                DiskSpec {
                    path: "/l/0.erofs".into(),
                    read_only: true,
                    serial: Some("rvm-layer-0".into()),
                },
                DiskSpec {
                    path: "/c/scratch.ext4".into(),
                    read_only: false,
                    serial: Some("rvm-scratch".into()),
                },
                DiskSpec {
                    path: "/v/plain.img".into(),
                    read_only: false,
                    serial: None,
                },
                DiskSpec {
                    path: "/v/ro.img".into(),
                    read_only: true,
                    serial: None,
                },
            ],
            net: Some(NetSpec {
                tap: "rvmabcdef012345".into(),
                mac: Some([2, 0xab, 0xcd, 0xef, 1, 0x23]),
            }),
            vsock: Some(VsockSpec {
                cid: 3,
                uds: "/r/run/abc/vsock".into(),
            }),
            disk_slots: 8,
            api: Some("/r/run/abc/api.sock".into()),
            console: true,
            console_log: Some("/r/containers/abc/console.log".into()),
            bounded_stderr: true,
            no_pvh: true,
            seccomp: SeccompMode::Off,
            jail: Some(JailSpec {
                uid: 200001,
                gid: 200001,
                root: "/r/run/abc/jail".into(),
            }),
        }
    }

    #[test]
    fn new_is_what_the_parser_makes_of_kernel_alone() {
        let parsed = Args::from_args(["--kernel", "/k"]).unwrap();
        assert_eq!(parsed, Args::new("/k".into()));
        assert_eq!(
            text(&round_trip(&parsed)),
            format!("--kernel /k --cmdline {DEFAULT_CMDLINE} --memory 128 --vcpus 1")
        );
    }

    #[test]
    fn seccomp_is_rendered_only_when_not_enforced() {
        let mut args = Args::new("/k".into());
        assert_eq!(args.seccomp, SeccompMode::Enforce);
        assert!(!text(&round_trip(&args)).contains("--seccomp"));
        args.seccomp = SeccompMode::Off;
        assert!(text(&round_trip(&args)).ends_with(" --seccomp off"));
        args.seccomp = SeccompMode::Log;
        assert!(text(&round_trip(&args)).ends_with(" --seccomp log"));
    }

    #[test]
    fn every_field_round_trips() {
        let args = everything();
        let argv = round_trip(&args);
        assert_eq!(
            text(&argv),
            "--kernel /g/vmlinux --initrd /g/initramfs.img \
             --cmdline console=ttyS0 reboot=k panic=-1 quiet --memory 256 --vcpus 2 \
             --disk /l/0.erofs,ro,serial=rvm-layer-0 --disk /c/scratch.ext4,serial=rvm-scratch \
             --disk /v/plain.img --disk /v/ro.img,ro --disk-slots 8 \
             --api /r/run/abc/api.sock --vsock cid=3,uds=/r/run/abc/vsock \
             --net tap=rvmabcdef012345,mac=02:ab:cd:ef:01:23 \
             --console-log /r/containers/abc/console.log --console --bounded-stderr --no-pvh \
             --jail uid=200001,gid=200001,root=/r/run/abc/jail --seccomp off"
        );
    }

    #[test]
    fn each_optional_field_round_trips_absent() {
        let full = everything();
        let variants: &[Change] = &[
            |a| a.initrd = None,
            |a| a.disks.clear(),
            |a| a.disks.truncate(1),
            |a| a.net = None,
            |a| {
                if let Some(net) = &mut a.net {
                    net.mac = None;
                }
            },
            |a| a.vsock = None,
            |a| a.disk_slots = 0,
            |a| a.api = None,
            |a| a.console = false,
            |a| a.console_log = None,
            |a| a.bounded_stderr = false,
            |a| a.no_pvh = false,
            |a| a.seccomp = SeccompMode::Log,
            |a| a.seccomp = SeccompMode::Enforce,
            |a| a.jail = None,
            |a| a.cmdline = DEFAULT_CMDLINE.into(),
            |a| a.cmdline = String::new(),
            |a| (a.memory, a.vcpus) = (u64::MAX, u32::MAX),
        ];
        for change in variants {
            let mut args = full.clone();
            change(&mut args);
            assert_ne!(args, full);
            round_trip(&args);
        }
    }

    #[test]
    fn values_starting_with_a_dash_use_the_equals_form() {
        let mut args = Args::new("-kernel".into());
        args.initrd = Some("--".into());
        args.cmdline = "-- init -v".into();
        args.disks.push(DiskSpec {
            path: "-disk.img".into(),
            read_only: true,
            serial: None,
        });
        args.api = Some("-".into());
        args.console_log = Some("--console".into());
        let argv = round_trip(&args);
        assert_eq!(argv[0], "--kernel=-kernel");
        assert!(argv.contains(&"--cmdline=-- init -v".into()), "{argv:?}");
        assert!(argv.contains(&"--disk=-disk.img,ro".into()), "{argv:?}");
        assert!(argv.contains(&"--console-log=--console".into()), "{argv:?}");
    }

    #[test]
    fn clap_reads_a_leading_dash_value_as_a_flag_in_the_spaced_form() {
        // Why the equals form exists: without it these values are lost or refused.
        assert!(Args::from_args(["--kernel", "/k", "--cmdline", "-x"]).is_err());
        assert!(Args::from_args(["--kernel", "/k", "--api", "--console"]).is_err());
    }

    #[test]
    fn non_utf8_paths_round_trip_where_the_parser_takes_bytes() {
        let path = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
        let mut args = Args::new(path(b"/k\xff"));
        args.initrd = Some(path(b"/i\xfe"));
        args.api = Some(path(b"-\x80"));
        args.console_log = Some(path(b"/log\xc0"));
        round_trip(&args);
    }

    #[test]
    fn unrenderable_values_are_refused_naming_the_flag() {
        let refused = |change: Change| {
            let mut args = everything();
            change(&mut args);
            args.to_args().unwrap_err()
        };
        let empty_paths: [(&str, Change); 4] = [
            ("--kernel", |a| a.kernel = PathBuf::new()),
            ("--initrd", |a| a.initrd = Some(PathBuf::new())),
            ("--api", |a| a.api = Some(PathBuf::new())),
            ("--console-log", |a| a.console_log = Some(PathBuf::new())),
        ];
        for (flag, change) in empty_paths {
            let err = refused(change);
            assert_eq!((err.flag, err.problem), (flag, RenderProblem::Empty));
        }
        let comma = refused(|a| a.disks[2].path = "/v/a,b.img".into());
        assert_eq!(
            comma.to_string(),
            "--disk \"/v/a,b.img\": contains ',', which separates this flag's options"
        );
        let serial = refused(|a| a.disks[0].serial = Some("x".repeat(21)));
        assert!(
            matches!(serial.problem, RenderProblem::Refused(_)),
            "{serial}"
        );
        let non_utf8 = refused(|a| {
            a.disks[1].path = PathBuf::from(OsStr::from_bytes(b"/\xff"));
        });
        assert_eq!(
            (non_utf8.flag, non_utf8.problem),
            ("--disk", RenderProblem::NotUtf8)
        );
        let uds = refused(|a| {
            if let Some(vsock) = &mut a.vsock {
                vsock.uds = "/run/a,b".into();
            }
        });
        assert_eq!((uds.flag, uds.problem), ("--vsock", RenderProblem::Comma));
        let cid = refused(|a| {
            if let Some(vsock) = &mut a.vsock {
                vsock.cid = 2;
            }
        });
        assert_eq!(cid.flag, "--vsock");
        let tap = refused(|a| {
            if let Some(net) = &mut a.net {
                net.tap = "x".repeat(16);
            }
        });
        assert!(tap.to_string().starts_with("--net \"tap=xxxx"), "{tap}");
    }
}

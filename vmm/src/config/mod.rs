//! The VM configuration: the command line of `rvm-vmm` as a typed value ([`Args`], rendered
//! and parsed in `args`, its device values in `specs`), and its validation against the
//! files and the host ([`validate`]) into a [`VmConfig`] before anything is built.

mod args;
mod specs;

pub use args::{Args, DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS};
pub use specs::{
    DiskSpec, JailSpec, NetSpec, RenderError, RenderProblem, VsockSpec, MAX_DISK_SERIAL,
};

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;

use crate::arch::x86_64::layout::{CMDLINE_MAX_SIZE, MMIO_MAX_DEVICES};
use crate::devices::virtio::block::{DiskError, DiskImage};
use crate::seccomp::SeccompMode;
use crate::uds::{self, MAX_SOCKET_NAME};

/// Fewest MiB of guest RAM we boot.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 32;
/// Most `--disk-slots`.
pub const MAX_DISK_SLOTS: u32 = 16;

/// Invalid input: every variant names the flag or file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The kernel cannot be opened.
    #[error("--kernel {path}: cannot open: {source}")]
    KernelUnreadable {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel is neither ELF nor bzImage.
    #[error("--kernel {0}: not an ELF vmlinux or a bzImage")]
    KernelFormat(PathBuf),
    /// The initrd cannot be opened.
    #[error("--initrd {path}: cannot open: {source}")]
    InitrdUnreadable {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The initrd is not a regular file.
    #[error("--initrd {0}: not a regular file")]
    InitrdNotFile(PathBuf),
    /// Too little memory.
    #[error("--memory {0}: at least {MIN_MEMORY_MIB} MiB are needed")]
    MemoryTooSmall(u64),
    /// More memory than the host has.
    #[error("--memory {asked}: more than the host's {host} MiB")]
    MemoryTooLarge {
        /// MiB asked for.
        asked: u64,
        /// MiB the host has.
        host: u64,
    },
    /// Bad vCPU count.
    #[error("--vcpus {0}: must be between 1 and {MAX_VCPUS}")]
    Vcpus(u32),
    /// Command line too long.
    #[error("--cmdline: {len} bytes, but at most {} fit (boot protocol limit)", CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong {
        /// Its length.
        len: usize,
    },
    /// Command line refused for another reason.
    #[error("--cmdline: {0:?}")]
    CmdlineInvalid(linux_loader::cmdline::Error),
    /// The console log cannot be opened.
    #[error("--console-log {path}: cannot open: {source}")]
    ConsoleLog {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A disk image cannot be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The vsock socket path cannot be used.
    #[error("--vsock uds={path}: {reason}")]
    VsockPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Too many disk slots.
    #[error("--disk-slots {0}: at most {MAX_DISK_SLOTS}")]
    DiskSlots(u32),
    /// More virtio devices than interrupt lines.
    #[error("{0} virtio devices (entropy, --disk, --disk-slots, --net, --vsock), but at most {MMIO_MAX_DEVICES} fit (one interrupt line each)")]
    TooManyDevices(usize),
    /// The API socket path cannot be used.
    #[error("--api {path}: {reason}")]
    ApiPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Kernel image formats we load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF `vmlinux`.
    Elf,
    /// bzImage with a 64-bit entry point.
    BzImage,
}

/// Where the guest's serial output goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Copy to stdout.
    pub stdout: bool,
    /// Continue this file, kept to a bounded size (`logging::bounded::CONSOLE`).
    pub log: Option<PathBuf>,
}

/// A validated VM configuration.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Kernel path.
    pub kernel: PathBuf,
    /// Its format, checked from its header.
    pub kernel_format: KernelFormat,
    /// Initrd path, known readable.
    pub initrd: Option<PathBuf>,
    /// Kernel command line, known to fit.
    pub cmdline: Cmdline,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPU count, 1 to [`MAX_VCPUS`].
    pub vcpus: u8,
    /// Serial console destinations.
    pub console: ConsoleConfig,
    /// Use the PVH entry point when the kernel has one.
    pub pvh: bool,
    /// Disk images, opened, in the order given.
    pub disks: Vec<DiskImage>,
    /// The network card, if any (its TAP is opened when the device is created).
    pub net: Option<NetSpec>,
    /// The vsock device, if any.
    pub vsock: Option<VsockSpec>,
    /// Empty disk slots after the disks, at most [`MAX_DISK_SLOTS`].
    pub disk_slots: u32,
    /// The API socket, if any.
    pub api: Option<PathBuf>,
    /// The VMM's seccomp filter.
    pub seccomp: SeccompMode,
}

impl VmConfig {
    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

/// Validates `args` against the files and the host; `host_mib` is the host's RAM.
pub fn validate(args: &Args, host_mib: u64) -> Result<VmConfig, ConfigError> {
    let kernel_format = kernel_format(&args.kernel)?;
    if let Some(initrd) = &args.initrd {
        check_initrd(initrd)?;
    }
    check_memory(args.memory, host_mib)?;
    let vcpus = check_vcpus(args.vcpus)?;
    let cmdline = parse_cmdline(&args.cmdline)?;
    check_devices(args)?;
    let disks = args
        .disks
        .iter()
        .map(DiskImage::open)
        .collect::<Result<_, _>>()?;
    Ok(VmConfig {
        kernel: args.kernel.clone(),
        kernel_format,
        initrd: args.initrd.clone(),
        cmdline,
        memory_mib: args.memory,
        vcpus,
        console: ConsoleConfig {
            stdout: args.console,
            log: args.console_log.clone(),
        },
        pvh: !args.no_pvh,
        disks,
        net: args.net.clone(),
        vsock: args.vsock.clone(),
        disk_slots: args.disk_slots,
        api: args.api.clone(),
        seccomp: args.seccomp,
    })
}

/// Reads the first bytes of the kernel to tell its format.
pub fn kernel_format(path: &Path) -> Result<KernelFormat, ConfigError> {
    let unreadable = |source| ConfigError::KernelUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let mut header = vec![0u8; 0x206];
    let len = read_up_to(&mut file, &mut header).map_err(unreadable)?;
    header.truncate(len);
    if header.starts_with(b"\x7fELF") {
        return Ok(KernelFormat::Elf);
    }
    if header.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(KernelFormat::BzImage);
    }
    Err(ConfigError::KernelFormat(path.to_path_buf()))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn check_initrd(path: &Path) -> Result<(), ConfigError> {
    let file = File::open(path).map_err(|source| ConfigError::InitrdUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file
        .metadata()
        .map_err(|source| ConfigError::InitrdUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if !meta.is_file() {
        return Err(ConfigError::InitrdNotFile(path.to_path_buf()));
    }
    Ok(())
}

/// Checks the guest RAM size against our minimum and the host's RAM.
pub fn check_memory(mib: u64, host_mib: u64) -> Result<(), ConfigError> {
    if mib < MIN_MEMORY_MIB {
        return Err(ConfigError::MemoryTooSmall(mib));
    }
    if mib > host_mib {
        return Err(ConfigError::MemoryTooLarge {
            asked: mib,
            host: host_mib,
        });
    }
    Ok(())
}

/// Checks the vCPU count.
pub fn check_vcpus(n: u32) -> Result<u8, ConfigError> {
    match u8::try_from(n) {
        Ok(count) if (1..=MAX_VCPUS).contains(&n) => Ok(count),
        _ => Err(ConfigError::Vcpus(n)),
    }
}

/// Parses the command line with the boot protocol's capacity.
pub fn parse_cmdline(s: &str) -> Result<Cmdline, ConfigError> {
    if s.len() >= CMDLINE_MAX_SIZE {
        return Err(ConfigError::CmdlineTooLong { len: s.len() });
    }
    Cmdline::try_from(s, CMDLINE_MAX_SIZE).map_err(|e| match e {
        linux_loader::cmdline::Error::TooLarge => ConfigError::CmdlineTooLong { len: s.len() },
        other => ConfigError::CmdlineInvalid(other),
    })
}

fn check_devices(args: &Args) -> Result<(), ConfigError> {
    if args.disk_slots > MAX_DISK_SLOTS {
        return Err(ConfigError::DiskSlots(args.disk_slots));
    }
    let count = 1
        + args.disks.len()
        + args.disk_slots as usize
        + usize::from(args.net.is_some())
        + usize::from(args.vsock.is_some());
    if count > MMIO_MAX_DEVICES as usize {
        return Err(ConfigError::TooManyDevices(count));
    }
    if let Some(vsock) = &args.vsock {
        check_vsock_path(&vsock.uds)?;
    }
    if let Some(api) = &args.api {
        check_api_path(api)?;
    }
    Ok(())
}

/// Checks that the vsock socket can be created: its address fits (see [`check_socket_path`]),
/// in an existing directory. The device binds it (replacing a stale socket) when it is created.
fn check_vsock_path(path: &Path) -> Result<(), ConfigError> {
    check_socket_path(path).map_err(|reason| ConfigError::VsockPath {
        path: path.to_path_buf(),
        reason,
    })
}

/// Checks that the API socket can be created: its address fits, in an existing directory.
fn check_api_path(path: &Path) -> Result<(), ConfigError> {
    check_socket_path(path).map_err(|reason| ConfigError::ApiPath {
        path: path.to_path_buf(),
        reason,
    })
}

/// What is wrong with a socket path, if anything. Any path length is fine (a path longer than
/// `sun_path` is bound through its directory), but then its file name must fit after
/// `/proc/self/fd/<N>/`.
fn check_socket_path(path: &Path) -> Result<(), &'static str> {
    const _: () = assert!(MAX_SOCKET_NAME == 82);
    if !uds::fits(path) {
        return Err("a socket path longer than 107 bytes needs a file name of at most 82 bytes");
    }
    check_socket_directory(path)
}

/// What is wrong with the directory a socket is to be bound in, if anything.
fn check_socket_directory(path: &Path) -> Result<(), &'static str> {
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err("not a file path"),
    };
    if !parent.is_dir() {
        return Err("its directory does not exist");
    }
    Ok(())
}

/// The host's RAM in MiB, from `MemTotal` in /proc/meminfo.
pub fn host_memory_mib() -> std::io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    parse_mem_total_kib(&meminfo)
        .map(|kib| kib / 1024)
        .ok_or_else(|| std::io::Error::other("no MemTotal line in /proc/meminfo"))
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["rvm-vmm", "--kernel", "/k"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults() {
        let a = args(&[]);
        assert_eq!((a.memory, a.vcpus, a.console), (128, 1, false));
        assert_eq!(a.cmdline, DEFAULT_CMDLINE);
    }

    #[test]
    fn device_flags_parse() {
        let a = args(&[
            "--disk",
            "/a.img,ro",
            "--disk",
            "/b.img,serial=layer-0",
            "--net",
            "tap=tap0,mac=02:00:00:00:00:0a",
            "--vsock",
            "cid=3,uds=/run/v.sock",
        ]);
        assert_eq!(a.disks.len(), 2);
        assert!(a.disks[0].read_only && !a.disks[1].read_only);
        assert_eq!(a.disks[1].serial.as_deref(), Some("layer-0"));
        let net = a.net.unwrap();
        assert_eq!(net.mac, Some([2, 0, 0, 0, 0, 0xa]));
        assert_eq!(a.vsock.unwrap().cid, 3);
    }

    #[test]
    fn bad_device_flags_are_rejected() {
        for bad in [
            ["--disk", "/a.img,rw"],
            ["--disk", "/a.img,serial=123456789012345678901"],
            ["--disk", "/a.img,serial=a b"],
            ["--disk", ",ro"],
            ["--net", "mac=02:00:00:00:00:01"],
            ["--net", "tap=t,mac=zz"],
            ["--vsock", "cid=2,uds=/x"],
            ["--vsock", "cid=3"],
            ["--disk-slots", "-1"],
            ["--disk-slots", "x"],
        ] {
            let mut argv = vec!["rvm-vmm", "--kernel", "/k"];
            argv.extend_from_slice(&bad);
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disk_slots_and_api_are_checked() {
        let a = args(&["--disk-slots", "16", "--api", "/tmp/api.sock"]);
        assert_eq!(a.disk_slots, 16);
        assert!(check_devices(&a).is_ok());
        let too_many = check_devices(&args(&["--disk-slots", "17"])).unwrap_err();
        assert_eq!(too_many.to_string(), "--disk-slots 17: at most 16");
        let crowded = args(&[
            "--disk-slots",
            "16",
            "--disk",
            "/a",
            "--disk",
            "/b",
            "--disk",
            "/c",
        ]);
        let err = check_devices(&crowded).unwrap_err().to_string();
        assert!(
            err.starts_with("20 virtio devices") && err.contains("at most 19"),
            "{err}"
        );
        let missing = check_devices(&args(&["--api", "/nonexistent/dir/api.sock"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            missing,
            "--api /nonexistent/dir/api.sock: its directory does not exist"
        );
        let long = format!("/tmp/{}", "x".repeat(103));
        let err = check_devices(&args(&["--api", &long]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("file name of at most 82 bytes"), "{err}");
        // A long path is fine when its file name is short enough.
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        for flag in ["--api", "--vsock"] {
            let sock = deep.join("s.sock");
            let value = if flag == "--api" {
                sock.display().to_string()
            } else {
                format!("cid=3,uds={}", sock.display())
            };
            assert!(check_devices(&args(&[flag, &value])).is_ok(), "{flag}");
        }
    }

    #[test]
    fn memory_limits() {
        assert!(matches!(
            check_memory(31, 1024),
            Err(ConfigError::MemoryTooSmall(31))
        ));
        assert!(matches!(
            check_memory(2048, 1024),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
        assert!(check_memory(32, 1024).is_ok());
    }

    #[test]
    fn vcpu_limits() {
        assert!(check_vcpus(0).is_err());
        assert!(check_vcpus(33).is_err());
        assert!(check_vcpus(300).is_err());
        assert_eq!(check_vcpus(32).unwrap(), 32);
    }

    #[test]
    fn cmdline_limit_counts_the_nul() {
        assert!(parse_cmdline(&"a".repeat(2047)).is_ok());
        assert!(matches!(
            parse_cmdline(&"a".repeat(2048)),
            Err(ConfigError::CmdlineTooLong { len: 2048 })
        ));
        let cmdline = parse_cmdline("console=ttyS0 -- init arg").unwrap();
        assert_eq!(
            cmdline.as_cstring().unwrap().as_bytes(),
            b"console=ttyS0 -- init arg"
        );
    }

    #[test]
    fn kernel_format_from_header() {
        let dir = std::env::temp_dir().join(format!("rvm-vmm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let elf = dir.join("vmlinux");
        std::fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        assert_eq!(kernel_format(&elf).unwrap(), KernelFormat::Elf);
        let text = dir.join("text");
        std::fs::write(&text, b"#!/bin/sh\n").unwrap();
        let err = kernel_format(&text).unwrap_err().to_string();
        assert!(err.contains("text") && err.contains("not an ELF"), "{err}");
        let missing = kernel_format(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24684376 kB\nMemFree: 1 kB\n";
        assert_eq!(parse_mem_total_kib(text), Some(24_684_376));
        assert!(host_memory_mib().unwrap() > 0);
    }
}

//! A container's device filter: which device nodes its processes may create (mknod), read and
//! write. The spec's `linux.resources.devices` rules (Docker's default allow-list when it has
//! none) are compiled into a cgroup BPF device program, which is loaded and attached to the
//! container's cgroup before the container's first process joins it, as runc does on a
//! cgroup v2 host.
//!
//! Why this matters in a VM: the guest's own disks (layers, the scratch disk holding every pod
//! container's writable layer, volumes) are block devices of the guest kernel. Without a filter,
//! a default container (it has CAP_MKNOD, as in Docker) could `mknod` a node for the scratch
//! disk and read or corrupt its neighbours' files.
//!
//! Semantics (those of runc and the cgroup v1 `devices` controller): everything is denied unless
//! a rule allows it; rules are applied in order and the last rule that matches an access
//! decides. A rule matches when its type (any, block, char) and its major and minor (absent:
//! any) match the device and the requested access is within the rule's access letters.
//! The program is attached with `BPF_F_ALLOW_MULTI`: a program attached below (in a nested
//! cgroup the container creates) can only deny more, never allow what this one denies.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("linux.resources.devices rule {index} ({rule}): {reason}")]
    Rule {
        index: usize,
        rule: String,
        reason: String,
    },
    #[error("load the device filter program into the guest kernel: {source}{log}")]
    Load { source: io::Error, log: String },
    #[error("open cgroup {path} to attach the device filter: {source}")]
    OpenCgroup { path: PathBuf, source: io::Error },
    #[error("attach the device filter to cgroup {path}: {source}")]
    Attach { path: PathBuf, source: io::Error },
}

/// The kind of device a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Any,
    Block,
    Char,
}

/// Access bits as the kernel passes them to a device program (`BPF_DEVCG_ACC_*`).
pub const MKNOD: u32 = 1;
pub const READ: u32 = 2;
pub const WRITE: u32 = 4;
const ALL_ACCESS: u32 = MKNOD | READ | WRITE;

/// Device types as the kernel passes them to a device program (`BPF_DEVCG_DEV_*`).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: Kind,
    /// `None`: any major.
    pub major: Option<u32>,
    /// `None`: any minor.
    pub minor: Option<u32>,
    /// `MKNOD | READ | WRITE` bits.
    pub access: u32,
}

impl DeviceRule {
    const fn allow_char(major: u32, minor: Option<u32>) -> Self {
        Self {
            allow: true,
            kind: Kind::Char,
            major: Some(major),
            minor,
            access: ALL_ACCESS,
        }
    }
}

/// Docker's (and containerd's CRI) default device rules: creating any node is allowed (it is
/// useless without read or write access), and reading and writing only the standard character
/// devices: null, zero, full, random, urandom, tty, console, ptmx and the pseudo-terminals.
pub fn default_rules() -> Vec<DeviceRule> {
    let mknod_any = |kind| DeviceRule {
        allow: true,
        kind,
        major: None,
        minor: None,
        access: MKNOD,
    };
    vec![
        mknod_any(Kind::Char),
        mknod_any(Kind::Block),
        DeviceRule::allow_char(1, Some(3)), // null
        DeviceRule::allow_char(1, Some(5)), // zero
        DeviceRule::allow_char(1, Some(7)), // full
        DeviceRule::allow_char(1, Some(8)), // random
        DeviceRule::allow_char(1, Some(9)), // urandom
        DeviceRule::allow_char(5, Some(0)), // tty
        DeviceRule::allow_char(5, Some(1)), // console
        DeviceRule::allow_char(5, Some(2)), // ptmx
        DeviceRule::allow_char(136, None),  // pts/*
    ]
}

/// The nodes the agent itself makes in every container's /dev (see `rootfs::populate_dev`) and
/// the pseudo-terminals: always usable, whatever the spec's rules say, as runc allows the
/// default devices it creates (containerd gives a pod's sandbox only "deny all").
fn standard_nodes() -> [DeviceRule; 8] {
    [
        DeviceRule::allow_char(1, Some(3)), // null
        DeviceRule::allow_char(1, Some(5)), // zero
        DeviceRule::allow_char(1, Some(7)), // full
        DeviceRule::allow_char(1, Some(8)), // random
        DeviceRule::allow_char(1, Some(9)), // urandom
        DeviceRule::allow_char(5, Some(0)), // tty
        DeviceRule::allow_char(5, Some(2)), // ptmx
        DeviceRule::allow_char(136, None),  // pts/*
    ]
}

/// The rules of a spec: its own when it has any, then the standard nodes; Docker's default
/// otherwise. FIFO rules are left out (the kernel does not ask device programs about FIFOs).
pub fn rules_of(spec_rules: Option<&[LinuxDeviceCgroup]>) -> Result<Vec<DeviceRule>, DeviceError> {
    let spec_rules = match spec_rules {
        Some(rules) if !rules.is_empty() => rules,
        _ => return Ok(default_rules()),
    };
    let mut rules = Vec::with_capacity(spec_rules.len());
    for (index, rule) in spec_rules.iter().enumerate() {
        let bad = |reason: String| DeviceError::Rule {
            index,
            rule: rule.to_string(),
            reason,
        };
        let kind = match rule.typ().unwrap_or_default() {
            LinuxDeviceType::A => Kind::Any,
            LinuxDeviceType::B => Kind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => Kind::Char,
            LinuxDeviceType::P => continue,
        };
        rules.push(DeviceRule {
            allow: rule.allow(),
            kind,
            major: device_number(rule.major(), "major").map_err(bad)?,
            minor: device_number(rule.minor(), "minor").map_err(bad)?,
            access: access_bits(rule.access().as_deref()).map_err(bad)?,
        });
    }
    rules.extend(standard_nodes());
    Ok(rules)
}

/// A major or minor number: absent or negative means any (runc writes -1 for `*`).
fn device_number(value: Option<i64>, what: &str) -> Result<Option<u32>, String> {
    match value {
        None => Ok(None),
        Some(n) if n < 0 => Ok(None),
        // The program compares against a signed 32-bit immediate.
        Some(n) if n <= i64::from(i32::MAX) => Ok(Some(n as u32)),
        Some(n) => Err(format!("{what} number {n} is out of range")),
    }
}

/// `"rwm"`-style access letters as bits; absent or empty means all three.
pub(crate) fn access_bits(access: Option<&str>) -> Result<u32, String> {
    let Some(access) = access.filter(|a| !a.is_empty()) else {
        return Ok(ALL_ACCESS);
    };
    access.chars().try_fold(0, |bits, letter| match letter {
        'r' => Ok(bits | READ),
        'w' => Ok(bits | WRITE),
        'm' => Ok(bits | MKNOD),
        other => Err(format!(
            "access {access:?} has {other:?}: only r, w and m are allowed"
        )),
    })
}

/// Whether the rules allow every access to every device (`--privileged`).
pub fn allow_everything(rules: &[DeviceRule]) -> bool {
    rules
        .iter()
        .rposition(|rule| {
            rule.allow
                && rule.kind == Kind::Any
                && rule.major.is_none()
                && rule.minor.is_none()
                && rule.access == ALL_ACCESS
        })
        .is_some_and(|last_allow_all| rules[last_allow_all + 1..].iter().all(|rule| rule.allow))
}

/// One eBPF instruction, as the kernel reads it (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The opcodes the device program uses.
pub mod op {
    /// `dst = *(u32 *)(src + off)`.
    pub const LOAD_WORD: u8 = 0x61;
    /// `dst = (u32)(dst & imm)`.
    pub const AND32_IMM: u8 = 0x54;
    /// `dst = (u32)dst >> imm`.
    pub const RSH32_IMM: u8 = 0x74;
    /// `dst = (u32)src`.
    pub const MOV32_REG: u8 = 0xbc;
    /// `dst = imm`.
    pub const MOV64_IMM: u8 = 0xb7;
    /// `if dst != imm goto +off`.
    pub const JNE_IMM: u8 = 0x55;
    /// `if dst != src goto +off`.
    pub const JNE_REG: u8 = 0x5d;
    /// `return r0`.
    pub const EXIT: u8 = 0x95;
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// Registers the program keeps the access in: r2 the device type, r3 the access bits, r4 the
/// major, r5 the minor; r1 is the context and then a scratch register; r0 the verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

/// Compiles `rules` into a device program: the last matching rule decides, so the rules are
/// tried from the last to the first and the first match returns; no match denies.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, where access_type
    // is (access << 16) | type.
    let mut program = vec![
        insn(op::LOAD_WORD, R2, R1, 0, 0),
        insn(op::AND32_IMM, R2, 0, 0, 0xffff),
        insn(op::LOAD_WORD, R3, R1, 0, 0),
        insn(op::RSH32_IMM, R3, 0, 0, 16),
        insn(op::LOAD_WORD, R4, R1, 4, 0),
        insn(op::LOAD_WORD, R5, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let block = rule_block(rule);
        let unconditional = block.len() == 2;
        program.extend(block);
        // A rule that matches everything decides every access: the verifier refuses code after
        // it as unreachable (containerd's rules start with "deny all").
        if unconditional {
            return program;
        }
    }
    program.push(insn(op::MOV64_IMM, R0, 0, 0, 0));
    program.push(insn(op::EXIT, 0, 0, 0, 0));
    program
}

/// The instructions of one rule: tests that jump past the block when they fail, then the
/// verdict. Every jump's offset is counted from the instruction after it to the block's end.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    let mut tests: Vec<Vec<Insn>> = Vec::new();
    match rule.kind {
        Kind::Any => {}
        Kind::Block => tests.push(vec![insn(op::JNE_IMM, R2, 0, 0, DEV_BLOCK)]),
        Kind::Char => tests.push(vec![insn(op::JNE_IMM, R2, 0, 0, DEV_CHAR)]),
    }
    if rule.access != ALL_ACCESS {
        // The access asked for must be within the rule's: (r3 & access) == r3.
        tests.push(vec![
            insn(op::MOV32_REG, R1, R3, 0, 0),
            insn(op::AND32_IMM, R1, 0, 0, rule.access as i32),
            insn(op::JNE_REG, R1, R3, 0, 0),
        ]);
    }
    if let Some(major) = rule.major {
        tests.push(vec![insn(op::JNE_IMM, R4, 0, 0, major as i32)]);
    }
    if let Some(minor) = rule.minor {
        tests.push(vec![insn(op::JNE_IMM, R5, 0, 0, minor as i32)]);
    }
    let verdict = [
        insn(op::MOV64_IMM, R0, 0, 0, i32::from(rule.allow)),
        insn(op::EXIT, 0, 0, 0, 0),
    ];
    let mut block: Vec<Insn> = tests.into_iter().flatten().collect();
    let end = block.len() + verdict.len();
    for (index, instruction) in block.iter_mut().enumerate() {
        if matches!(instruction.code, op::JNE_IMM | op::JNE_REG) {
            // Both are at most a few dozen instructions: the offset fits.
            instruction.off = (end - index - 1) as i16;
        }
    }
    block.extend(verdict);
    block
}

/// `bpf(2)` commands, program type and attach type (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel zero-fills the rest.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The leading fields of `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The `bpf(2)` system call with `attr`, the leading fields of `union bpf_attr` for `cmd` (the
/// kernel zero-fills the rest); its non-negative result, or the error.
///
/// # Safety
/// `attr` must be laid out as the kernel expects for `cmd`, and every pointer in it must be valid
/// for what the kernel does with it during the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for `attr`; its size goes with it, so the kernel reads no further.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const A,
            std::mem::size_of::<A>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(result)
}

/// Compiles `rules`, loads the program and attaches it to the cgroup directory `cgroup`.
pub fn attach(cgroup: &Path, rules: &[DeviceRule]) -> Result<(), DeviceError> {
    let program = program(rules);
    let prog = load(&program)?;
    let dir = File::open(cgroup).map_err(|source| DeviceError::OpenCgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is the prefix of `union bpf_attr` for BPF_PROG_ATTACH; it holds no
    // pointers, and both descriptors stay open for the call.
    unsafe { bpf(BPF_PROG_ATTACH, &attr) }.map_err(|source| DeviceError::Attach {
        path: cgroup.to_owned(),
        source,
    })?;
    // The cgroup now holds the program: our descriptor can go.
    Ok(())
}

/// Loads `program`; when the kernel refuses it, loads it again with the verifier's log, for the
/// error.
fn load(program: &[Insn]) -> Result<OwnedFd, DeviceError> {
    match load_with_log(program, &mut []) {
        Ok(fd) => Ok(fd),
        Err(_) => {
            let mut log = vec![0u8; 64 * 1024];
            load_with_log(program, &mut log).map_err(|source| {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]).trim().to_owned();
                DeviceError::Load {
                    source,
                    log: if text.is_empty() {
                        String::new()
                    } else {
                        format!("; verifier: {text}")
                    },
                }
            })
        }
    }
}

fn load_with_log(program: &[Insn], log: &mut [u8]) -> io::Result<OwnedFd> {
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: c"Apache-2.0".as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: `attr` is the prefix of `union bpf_attr` for BPF_PROG_LOAD; its pointers (the
    // instructions, the static license string, the log buffer of `log_size` bytes) stay valid for
    // the call, and the kernel only reads the first two and writes within the third.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &attr) }?;
    // SAFETY: a non-negative return of BPF_PROG_LOAD is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests;

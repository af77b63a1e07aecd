//! Compiles the OCI spec's `linux.seccomp` profile (what containerd and Kubernetes ask for) into
//! a classic BPF seccomp program for x86_64. seccompiler's filters have a single match action,
//! while OCI profiles give each rule its own action and argument conditions, hence this
//! generator.
//!
//! Semantics: rules are tried in profile order and the first whose system call and argument
//! conditions match decides; otherwise the default action applies. The conditions of one rule
//! must all hold, except that a rule naming the same argument index twice matches when any one
//! of its conditions holds (runc's behaviour, which profiles written for it rely on). MASKED_EQ
//! compares `arg & value` with `valueTwo`, as libseccomp does. Arguments are compared as 64-bit
//! values (both halves). Names x86_64 does not have are skipped, as runc skips them. Calls made
//! with another architecture's ABI (i386, x32) kill the process.
//!
//! Program layout: an architecture check, then one block per rule (per chunk of at most 255 of
//! its system calls, so that the 8-bit conditional jumps always reach), then the default action.
//! A rule without conditions is `jeq nr` per call jumping to its `ret`. A rule with conditions
//! is `jeq nr` per call jumping past a `ja` (32-bit offset) that skips the rule's body when no
//! call matched; the body has one group of comparisons per alternative, each ending in the
//! rule's `ret`, and reloads the call number at its end.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{sock_filter, BpfProgram};
use thiserror::Error;

use super::seccomp::Filter;
use super::syscall_table;

/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `seccomp_data`.
const LD_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`.
const AND: u16 = 0x54;
/// `BPF_JMP | BPF_JA`: jump forward by `k` (32 bits).
const JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`, `BPF_JGT`, `BPF_JGE` (unsigned comparisons).
const JEQ: u16 = 0x15;
const JGT: u16 = 0x25;
const JGE: u16 = 0x35;
/// `BPF_RET | BPF_K`.
const RET: u16 = 0x06;

/// Offsets in `struct seccomp_data`; an argument's low half comes first (little endian).
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;
/// seccomp_data has six arguments.
const MAX_ARG_INDEX: usize = 5;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// x32 calls come with x86_64's arch and this bit set in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The number ptrace uses to skip a call; not an x32 call.
const SKIPPED_SYSCALL: u32 = u32::MAX;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
pub const MAX_INSTRUCTIONS: usize = 4096;
/// The most `jeq`s one block may hold: the first one's jump must fit in 8 bits.
const MAX_CALLS_PER_BLOCK: usize = 255;
/// seccomp's return data (the errno of ERRNO, the message of TRACE) is 16 bits.
const MAX_RETURN_DATA: u32 = 0xFFFF;

/// Why a profile cannot be compiled. `at` names the place in the spec, e.g.
/// `linux.seccomp.syscalls[3]`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error(
        "{at}: action SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which rvm does not \
         support"
    )]
    Notify { at: String },
    #[error("{at}: errnoRet {errno} does not fit seccomp's 16-bit return value")]
    ReturnValue { at: String, errno: u32 },
    #[error("{at}: argument index {index} is out of range (system calls have arguments 0-5)")]
    ArgIndex { at: String, index: usize },
    #[error("{at}: a jump of the compiled filter does not fit in 8 bits")]
    Jump { at: String },
    #[error(
        "the profile compiles to {len} BPF instructions, more than the kernel's {MAX_INSTRUCTIONS}"
    )]
    TooLong { len: usize },
}

fn statement(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn load(offset: u32) -> sock_filter {
    statement(LD_ABS, offset)
}

fn ret(action: u32) -> sock_filter {
    statement(RET, action)
}

/// The `SECCOMP_RET_*` value of an OCI action; ERRNO and TRACE return `errno_ret`, EPERM when
/// unset (as runc does).
fn action_value(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    at: &str,
) -> Result<u32, ProfileError> {
    let data = || {
        let errno = errno_ret.unwrap_or(libc::EPERM.unsigned_abs());
        if errno > MAX_RETURN_DATA {
            return Err(ProfileError::ReturnValue {
                at: at.to_owned(),
                errno,
            });
        }
        Ok(errno)
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            libc::SECCOMP_RET_KILL_THREAD
        }
        LinuxSeccompAction::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data()?,
        LinuxSeccompAction::ScmpActTrace => libc::SECCOMP_RET_TRACE | data()?,
        LinuxSeccompAction::ScmpActLog => libc::SECCOMP_RET_LOG,
        LinuxSeccompAction::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(ProfileError::Notify { at: at.to_owned() })
        }
    })
}

/// The seccomp(2) flags the profile asks for that apply here; the others are logged.
fn filter_flags(profile: &LinuxSeccomp) -> libc::c_ulong {
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags |= libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // The process is single-threaded when its filter is loaded, and rvm has no notify
            // agent: neither flag changes anything.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync
            | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                tracing::debug!(?flag, "seccomp flag ignored");
            }
        }
    }
    flags
}

/// Architectures other than x86_64's are not filtered: their calls kill the process.
fn log_architectures(profile: &LinuxSeccomp) {
    for arch in profile.architectures().iter().flatten() {
        if !matches!(arch, Arch::ScmpArchNative | Arch::ScmpArchX86_64) {
            tracing::debug!(
                ?arch,
                "seccomp architecture not filtered: its system calls kill the process"
            );
        }
    }
}

/// Where a comparison jumps: `Next(n)` skips `n` instructions, `Fail` goes to the next
/// alternative (past this alternative's `ret`).
#[derive(Debug, Clone, Copy)]
enum Target {
    Next(u8),
    Fail,
}

/// An instruction of an alternative, before its `Fail` jumps are resolved.
#[derive(Debug, Clone, Copy)]
struct Pending {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
}

const NEXT: Target = Target::Next(0);

fn pending_load(offset: u32) -> Pending {
    pending_op(LD_ABS, offset)
}

fn pending_op(code: u16, k: u32) -> Pending {
    Pending {
        code,
        k,
        jt: NEXT,
        jf: NEXT,
    }
}

fn pending_jump(code: u16, k: u32, jt: Target, jf: Target) -> Pending {
    Pending { code, k, jt, jf }
}

/// Splits a 64-bit value into its (high, low) 32-bit halves.
fn halves(value: u64) -> (u32, u32) {
    // Truncation is the point: each cast keeps one half.
    ((value >> 32) as u32, value as u32)
}

/// The comparison of one argument: falls through when it holds, jumps to `Fail` otherwise.
/// `index` has been checked (0-5).
fn comparison(arg: &LinuxSeccompArg, index: u32) -> Vec<Pending> {
    let low = ARGS_OFFSET + 8 * index;
    let high = low + 4;
    let (vh, vl) = halves(arg.value());
    let fail = Target::Fail;
    match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => vec![
            pending_load(high),
            pending_jump(JEQ, vh, NEXT, fail),
            pending_load(low),
            pending_jump(JEQ, vl, NEXT, fail),
        ],
        LinuxSeccompOperator::ScmpCmpNe => vec![
            pending_load(high),
            pending_jump(JEQ, vh, NEXT, Target::Next(2)),
            pending_load(low),
            pending_jump(JEQ, vl, fail, NEXT),
        ],
        LinuxSeccompOperator::ScmpCmpGt => above(high, low, vh, vl, JGT),
        LinuxSeccompOperator::ScmpCmpGe => above(high, low, vh, vl, JGE),
        LinuxSeccompOperator::ScmpCmpLt => below(high, low, vh, vl, JGE),
        LinuxSeccompOperator::ScmpCmpLe => below(high, low, vh, vl, JGT),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (eh, el) = halves(arg.value_two().unwrap_or(0));
            vec![
                pending_load(high),
                pending_op(AND, vh),
                pending_jump(JEQ, eh, NEXT, fail),
                pending_load(low),
                pending_op(AND, vl),
                pending_jump(JEQ, el, NEXT, fail),
            ]
        }
    }
}

/// `arg > value` (`low_test` JGT) or `arg >= value` (JGE): a higher high half holds, an equal
/// one leaves it to the low halves.
fn above(high: u32, low: u32, vh: u32, vl: u32, low_test: u16) -> Vec<Pending> {
    vec![
        pending_load(high),
        pending_jump(JGT, vh, Target::Next(3), NEXT),
        pending_jump(JEQ, vh, NEXT, Target::Fail),
        pending_load(low),
        pending_jump(low_test, vl, NEXT, Target::Fail),
    ]
}

/// `arg < value` (`low_fail` JGE) or `arg <= value` (JGT): a lower high half holds, an equal one
/// leaves it to the low halves, which fail the test when `low_fail` holds.
fn below(high: u32, low: u32, vh: u32, vl: u32, low_fail: u16) -> Vec<Pending> {
    vec![
        pending_load(high),
        pending_jump(JGE, vh, NEXT, Target::Next(3)),
        pending_jump(JEQ, vh, NEXT, Target::Fail),
        pending_load(low),
        pending_jump(low_fail, vl, Target::Fail, NEXT),
    ]
}

/// One alternative of a rule: its comparisons, then `ret action`; a failed comparison jumps
/// past the `ret`.
fn alternative(
    args: &[(LinuxSeccompArg, u32)],
    action: u32,
    at: &str,
) -> Result<BpfProgram, ProfileError> {
    let mut pending: Vec<Pending> = args
        .iter()
        .flat_map(|(arg, index)| comparison(arg, *index))
        .collect();
    pending.push(pending_op(RET, action));
    let len = pending.len();
    let resolve = |target: Target, position: usize| match target {
        Target::Next(n) => Ok(n),
        Target::Fail => {
            u8::try_from(len - position - 1).map_err(|_| ProfileError::Jump { at: at.to_owned() })
        }
    };
    pending
        .iter()
        .enumerate()
        .map(|(position, p)| {
            Ok(jump(
                p.code,
                p.k,
                resolve(p.jt, position)?,
                resolve(p.jf, position)?,
            ))
        })
        .collect()
}

/// A profile rule ready to emit.
#[derive(Debug)]
struct Rule {
    /// Where it is in the spec, for errors.
    at: String,
    numbers: Vec<u32>,
    action: u32,
    /// Each alternative is a set of comparisons that must all hold; empty: no conditions.
    alternatives: Vec<Vec<(LinuxSeccompArg, u32)>>,
}

/// Checks the argument indexes; returns the alternatives (runc: a repeated index makes each
/// condition an alternative of its own).
fn alternatives(
    syscall: &LinuxSyscall,
    at: &str,
) -> Result<Vec<Vec<(LinuxSeccompArg, u32)>>, ProfileError> {
    let mut args = Vec::new();
    for arg in syscall.args().iter().flatten() {
        let index = arg.index();
        let checked = u32::try_from(index)
            .ok()
            .filter(|_| index <= MAX_ARG_INDEX)
            .ok_or_else(|| ProfileError::ArgIndex {
                at: at.to_owned(),
                index,
            })?;
        args.push((*arg, checked));
    }
    let repeated = args
        .iter()
        .enumerate()
        .any(|(i, (_, index))| args[..i].iter().any(|(_, earlier)| earlier == index));
    Ok(if args.is_empty() {
        Vec::new()
    } else if repeated {
        args.into_iter().map(|arg| vec![arg]).collect()
    } else {
        vec![args]
    })
}

/// The x86_64 numbers of `names`; names x86_64 does not have are logged and skipped.
fn numbers(names: &[String]) -> Vec<u32> {
    names
        .iter()
        .filter_map(|name| {
            let number = syscall_table::number(name);
            if number.is_none() {
                tracing::debug!(
                    name,
                    "seccomp: no such system call on x86_64; rule skipped for it"
                );
            }
            number
        })
        .collect()
}

impl Rule {
    fn resolve(position: usize, syscall: &LinuxSyscall) -> Result<Self, ProfileError> {
        let at = format!("linux.seccomp.syscalls[{position}]");
        Ok(Self {
            numbers: numbers(syscall.names()),
            action: action_value(syscall.action(), syscall.errno_ret(), &at)?,
            alternatives: alternatives(syscall, &at)?,
            at,
        })
    }

    /// The code run once the call number matched: `None` when the rule has no conditions
    /// (just its `ret`).
    fn body(&self) -> Result<Option<BpfProgram>, ProfileError> {
        if self.alternatives.is_empty() {
            return Ok(None);
        }
        let mut body = Vec::new();
        for args in &self.alternatives {
            body.extend(alternative(args, self.action, &self.at)?);
        }
        body.push(load(NR_OFFSET));
        Ok(Some(body))
    }

    fn emit(&self, program: &mut BpfProgram) -> Result<(), ProfileError> {
        let body = self.body()?;
        for chunk in self.numbers.chunks(MAX_CALLS_PER_BLOCK) {
            match &body {
                None => self.emit_unconditional(chunk, program)?,
                Some(body) => self.emit_conditional(chunk, body, program)?,
            }
        }
        Ok(())
    }

    /// `jeq nr` per call, each jumping to the `ret` after the last; the last one skips it.
    fn emit_unconditional(
        &self,
        chunk: &[u32],
        program: &mut BpfProgram,
    ) -> Result<(), ProfileError> {
        let last = chunk.len().saturating_sub(1);
        for (i, nr) in chunk.iter().enumerate() {
            let jt = self.offset(last - i)?;
            program.push(jump(JEQ, *nr, jt, u8::from(i == last)));
        }
        program.push(ret(self.action));
        Ok(())
    }

    /// `jeq nr` per call, each jumping to the body; `ja` past the body when none matched.
    fn emit_conditional(
        &self,
        chunk: &[u32],
        body: &[sock_filter],
        program: &mut BpfProgram,
    ) -> Result<(), ProfileError> {
        for (i, nr) in chunk.iter().enumerate() {
            let jt = self.offset(chunk.len() - i)?;
            program.push(jump(JEQ, *nr, jt, 0));
        }
        let skip =
            u32::try_from(body.len()).map_err(|_| ProfileError::TooLong { len: body.len() })?;
        program.push(statement(JA, skip));
        program.extend_from_slice(body);
        Ok(())
    }

    fn offset(&self, distance: usize) -> Result<u8, ProfileError> {
        u8::try_from(distance).map_err(|_| ProfileError::Jump {
            at: self.at.clone(),
        })
    }
}

/// Kills calls made with another ABI than x86_64's, then loads the call number.
fn prologue() -> BpfProgram {
    vec![
        load(ARCH_OFFSET),
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load(NR_OFFSET),
        jump(JGE, X32_SYSCALL_BIT, 0, 2),
        jump(JEQ, SKIPPED_SYSCALL, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// Compiles `profile` for x86_64.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, ProfileError> {
    log_architectures(profile);
    let default = action_value(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut program = prologue();
    for (position, syscall) in profile.syscalls().iter().flatten().enumerate() {
        let rule = Rule::resolve(position, syscall)?;
        if rule.numbers.is_empty() {
            tracing::debug!(at = %rule.at, "seccomp rule names no x86_64 system call; skipped");
            continue;
        }
        rule.emit(&mut program)?;
    }
    program.push(ret(default));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(ProfileError::TooLong { len: program.len() });
    }
    Ok(Filter {
        program,
        flags: filter_flags(profile),
    })
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use serde_json::{json, Value};

    use super::super::seccomp::testing::{call, getcwd, in_child, uname};
    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn errno(errno: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | errno.unsigned_abs()
    }

    fn profile(json: Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    fn compiled(json: Value) -> BpfProgram {
        compile(&profile(json)).unwrap().program
    }

    /// A system call as the filter sees it.
    #[derive(Debug, Clone, Copy)]
    struct Call {
        arch: u32,
        nr: u32,
        args: [u64; 6],
    }

    fn x86_64(nr: libc::c_long, args: &[u64]) -> Call {
        let mut all = [0; 6];
        all[..args.len()].copy_from_slice(args);
        Call {
            arch: AUDIT_ARCH_X86_64,
            nr: u32::try_from(nr).unwrap(),
            args: all,
        }
    }

    fn word(call: &Call, offset: u32) -> u32 {
        match offset {
            NR_OFFSET => call.nr,
            ARCH_OFFSET => call.arch,
            _ => {
                let arg = call.args[usize::try_from((offset - ARGS_OFFSET) / 8).unwrap()];
                let (high, low) = halves(arg);
                if offset % 8 == 0 {
                    low
                } else {
                    high
                }
            }
        }
    }

    /// Runs `program` on `call` as the kernel would (for the instructions the generator uses).
    fn run(program: &[sock_filter], call: &Call) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = &program[pc];
            let taken = match i.code {
                LD_ABS => {
                    a = word(call, i.k);
                    pc += 1;
                    continue;
                }
                AND => {
                    a &= i.k;
                    pc += 1;
                    continue;
                }
                JA => {
                    pc += 1 + usize::try_from(i.k).unwrap();
                    continue;
                }
                RET => return i.k,
                JEQ => a == i.k,
                JGT => a > i.k,
                JGE => a >= i.k,
                other => panic!("unexpected BPF code {other:#x} at {pc}"),
            };
            pc += 1 + usize::from(if taken { i.jt } else { i.jf });
        }
    }

    /// Every jump lands inside the program, and the program ends in a `ret`.
    fn check_layout(program: &[sock_filter]) {
        assert!(program.len() <= MAX_INSTRUCTIONS);
        assert_eq!(program.last().unwrap().code, RET);
        for (pc, i) in program.iter().enumerate() {
            let targets = match i.code {
                JA => vec![pc + 1 + usize::try_from(i.k).unwrap()],
                JEQ | JGT | JGE => vec![pc + 1 + usize::from(i.jt), pc + 1 + usize::from(i.jf)],
                _ => vec![pc + 1],
            };
            if i.code != RET {
                for target in targets {
                    assert!(target < program.len(), "jump from {pc} to {target}");
                }
            }
        }
    }

    #[test]
    fn actions_have_their_seccomp_values() {
        let value = |action: &str, errno_ret: Option<u32>| {
            let json = json!({"defaultAction": action, "defaultErrnoRet": errno_ret});
            let program = compiled(json);
            program.last().unwrap().k
        };
        assert_eq!(value("SCMP_ACT_ALLOW", None), ALLOW);
        assert_eq!(value("SCMP_ACT_ERRNO", None), errno(libc::EPERM));
        assert_eq!(value("SCMP_ACT_ERRNO", Some(38)), errno(libc::ENOSYS));
        assert_eq!(value("SCMP_ACT_TRACE", None), libc::SECCOMP_RET_TRACE | 1);
        assert_eq!(
            value("SCMP_ACT_TRACE", Some(7)),
            libc::SECCOMP_RET_TRACE | 7
        );
        assert_eq!(value("SCMP_ACT_KILL", None), libc::SECCOMP_RET_KILL_THREAD);
        assert_eq!(
            value("SCMP_ACT_KILL_THREAD", None),
            libc::SECCOMP_RET_KILL_THREAD
        );
        assert_eq!(
            value("SCMP_ACT_KILL_PROCESS", None),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(value("SCMP_ACT_TRAP", None), libc::SECCOMP_RET_TRAP);
        assert_eq!(value("SCMP_ACT_LOG", None), libc::SECCOMP_RET_LOG);
    }

    #[test]
    fn bad_profiles_say_what_is_wrong() {
        let error = |json: Value| compile(&profile(json)).unwrap_err();
        let bad_index = error(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]},
        ]}));
        assert_eq!(
            bad_index.to_string(),
            "linux.seccomp.syscalls[1]: argument index 6 is out of range (system calls have \
             arguments 0-5)"
        );
        let notify = error(json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        assert!(notify
            .to_string()
            .starts_with("linux.seccomp.defaultAction: action SCMP_ACT_NOTIFY"));
        let big_errno = error(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000},
        ]}));
        assert_eq!(
            big_errno,
            ProfileError::ReturnValue {
                at: "linux.seccomp.syscalls[0]".into(),
                errno: 70000
            }
        );
        let rules: Vec<Value> = (0..2100)
            .map(|_| json!({"names": ["getppid"], "action": "SCMP_ACT_LOG"}))
            .collect();
        let too_long = error(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
        assert!(matches!(too_long, ProfileError::TooLong { len } if len > MAX_INSTRUCTIONS));
    }

    #[test]
    fn unknown_actions_and_operators_are_refused_with_the_spec() {
        let action = serde_json::from_value::<LinuxSeccomp>(json!({
            "defaultAction": "SCMP_ACT_SOMETIMES"
        }))
        .unwrap_err();
        assert!(
            action.to_string().contains("SCMP_ACT_SOMETIMES"),
            "{action}"
        );
        let op = serde_json::from_value::<LinuxSeccomp>(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ROUGHLY"}]}]
        }))
        .unwrap_err();
        assert!(op.to_string().contains("SCMP_CMP_ROUGHLY"), "{op}");
    }

    #[test]
    fn flags_that_apply_are_passed_on() {
        let filter = compile(&profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_TSYNC"]
        })))
        .unwrap();
        assert_eq!(
            filter.flags,
            libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
    }

    #[test]
    fn names_x86_64_lacks_are_skipped() {
        let program = compiled(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["socketcall", "_llseek"], "action": "SCMP_ACT_KILL"},
            {"names": ["socketcall", "getppid"], "action": "SCMP_ACT_ALLOW"},
        ]}));
        check_layout(&program);
        assert_eq!(run(&program, &x86_64(libc::SYS_getppid, &[])), ALLOW);
        assert_eq!(
            run(&program, &x86_64(libc::SYS_getpid, &[])),
            errno(libc::EPERM)
        );
        // The first rule left nothing: prologue, getppid's jeq and ret, the default.
        assert_eq!(program.len(), prologue().len() + 3);
    }

    #[test]
    fn other_abis_are_killed() {
        let program = compiled(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        let i386 = Call {
            arch: 0x4000_0003,
            ..x86_64(libc::SYS_getppid, &[])
        };
        assert_eq!(run(&program, &i386), kill);
        let x32 = Call {
            nr: X32_SYSCALL_BIT | 39,
            ..i386
        };
        assert_eq!(
            run(
                &program,
                &Call {
                    arch: AUDIT_ARCH_X86_64,
                    ..x32
                }
            ),
            kill
        );
        let skipped = Call {
            nr: SKIPPED_SYSCALL,
            ..x32
        };
        assert_eq!(
            run(
                &program,
                &Call {
                    arch: AUDIT_ARCH_X86_64,
                    ..skipped
                }
            ),
            ALLOW
        );
    }

    /// The truth of `arg op value` (MASKED_EQ: `arg & value == value_two`).
    fn holds(op: &str, arg: u64, value: u64, value_two: u64) -> bool {
        match op {
            "SCMP_CMP_EQ" => arg == value,
            "SCMP_CMP_NE" => arg != value,
            "SCMP_CMP_LT" => arg < value,
            "SCMP_CMP_LE" => arg <= value,
            "SCMP_CMP_GT" => arg > value,
            "SCMP_CMP_GE" => arg >= value,
            "SCMP_CMP_MASKED_EQ" => arg & value == value_two,
            other => panic!("{other}"),
        }
    }

    const OPS: [&str; 7] = [
        "SCMP_CMP_EQ",
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_GT",
        "SCMP_CMP_GE",
        "SCMP_CMP_MASKED_EQ",
    ];

    /// Values that differ in one half only, or in both, around the boundaries.
    const VALUES: [u64; 10] = [
        0,
        5,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0004,
        0x1_0000_0005,
        0x1_0000_0006,
        0x2_0000_0005,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];

    #[test]
    fn comparisons_use_both_halves() {
        for op in OPS {
            for value in VALUES {
                let value_two = value & 0x1_0000_00ff;
                let program = compiled(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 7,
                     "args": [{"index": 3, "value": value, "valueTwo": value_two, "op": op}]},
                ]}));
                check_layout(&program);
                for arg in VALUES {
                    let call = x86_64(libc::SYS_getppid, &[0, 0, 0, arg]);
                    let expected = if holds(op, arg, value, value_two) {
                        errno(7)
                    } else {
                        ALLOW
                    };
                    assert_eq!(
                        run(&program, &call),
                        expected,
                        "{arg:#x} {op} {value:#x} (valueTwo {value_two:#x})"
                    );
                }
            }
        }
    }

    #[test]
    fn masked_eq_masks_with_value_and_compares_with_value_two() {
        // Docker's clone rule: no namespace flags.
        let program = compiled(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0x7E02_0000_u64, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["getppid"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 0xff00_0000_0000_00ff_u64,
                       "valueTwo": 0xab00_0000_0000_0001_u64, "op": "SCMP_CMP_MASKED_EQ"}]},
        ]}));
        let clone = |flags| run(&program, &x86_64(libc::SYS_clone, &[flags]));
        assert_eq!(clone(0x11), ALLOW, "SIGCHLD");
        assert_eq!(clone(0x3d0f00), ALLOW, "a thread");
        assert_eq!(clone(0x2000_0000), errno(libc::EPERM), "CLONE_NEWUTS");
        assert_eq!(
            clone(0x1_0000_0000_u64 | 0x11),
            ALLOW,
            "high bits outside the mask"
        );
        let getppid = |arg1| run(&program, &x86_64(libc::SYS_getppid, &[0, arg1]));
        assert_eq!(getppid(0xab12_3456_7890_0001), ALLOW);
        assert_eq!(getppid(0xab00_0000_0000_0101), ALLOW);
        assert_eq!(getppid(0xac00_0000_0000_0001), errno(libc::EPERM));
        assert_eq!(getppid(0xab00_0000_0000_0002), errno(libc::EPERM));
        assert_eq!(getppid(0x0000_0000_ab00_0001), errno(libc::EPERM));
    }

    #[test]
    fn conditions_of_a_rule_all_hold_unless_an_index_repeats() {
        let program = compiled(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
            // runc: one index named twice makes each condition a rule of its own.
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2,
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 3, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
        ]}));
        check_layout(&program);
        let getppid = |args: &[u64]| run(&program, &x86_64(libc::SYS_getppid, args));
        assert_eq!(getppid(&[1, 2]), errno(1));
        assert_eq!(getppid(&[1, 3]), ALLOW);
        assert_eq!(getppid(&[0, 2]), ALLOW);
        let getpid = |args: &[u64]| run(&program, &x86_64(libc::SYS_getpid, args));
        assert_eq!(getpid(&[1]), errno(2));
        assert_eq!(getpid(&[3]), errno(2));
        assert_eq!(getpid(&[0, 0, 9]), errno(2));
        assert_eq!(getpid(&[2, 0, 8]), ALLOW);
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let program = compiled(
            json!({"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 7,
                 "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_EQ"}]},
                {"names": ["getppid", "uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 8},
                {"names": ["getppid", "uname", "getcwd"], "action": "SCMP_ACT_ALLOW"},
            ]}),
        );
        assert_eq!(run(&program, &x86_64(libc::SYS_getppid, &[7])), errno(7));
        assert_eq!(run(&program, &x86_64(libc::SYS_getppid, &[6])), errno(8));
        assert_eq!(run(&program, &x86_64(libc::SYS_uname, &[])), errno(8));
        assert_eq!(run(&program, &x86_64(libc::SYS_getcwd, &[])), ALLOW);
        assert_eq!(
            run(&program, &x86_64(libc::SYS_getpid, &[])),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    fn number_of(name: &str) -> libc::c_long {
        libc::c_long::from(syscall_table::number(name).unwrap())
    }

    #[test]
    fn three_hundred_rules_keep_their_jumps_in_range() {
        let names: Vec<&str> = syscall_table::names().take(300).collect();
        let rules: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut rule =
                    json!({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": i + 1});
                if i % 2 == 1 {
                    rule["args"] = json!([
                        {"index": i % 6, "value": i, "op": "SCMP_CMP_EQ"},
                        {"index": (i + 1) % 6, "value": 1u64 << 40, "op": "SCMP_CMP_GE"},
                    ]);
                }
                rule
            })
            .collect();
        let program = compiled(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
        check_layout(&program);
        assert!(program.len() > 2000, "{}", program.len());
        for (i, name) in names.iter().enumerate() {
            let nr = number_of(name);
            let denied = errno(i32::try_from(i + 1).unwrap());
            if i % 2 == 0 {
                assert_eq!(run(&program, &x86_64(nr, &[])), denied, "{name}");
                continue;
            }
            let mut args = [0u64; 6];
            args[i % 6] = u64::try_from(i).unwrap();
            args[(i + 1) % 6] = 1 << 41;
            assert_eq!(run(&program, &x86_64(nr, &args)), denied, "{name}");
            args[(i + 1) % 6] = 1 << 39;
            assert_eq!(run(&program, &x86_64(nr, &args)), ALLOW, "{name}");
        }
    }

    #[test]
    fn rules_naming_more_calls_than_a_jump_reaches_are_split() {
        let names: Vec<&str> = syscall_table::names().collect();
        assert!(names.len() > MAX_CALLS_PER_BLOCK);
        for args in [
            json!(null),
            json!([{"index": 5, "value": 9, "op": "SCMP_CMP_NE"}]),
        ] {
            let program = compiled(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": names, "action": "SCMP_ACT_ALLOW", "args": args},
            ]}));
            check_layout(&program);
            for name in &names {
                let call = x86_64(number_of(name), &[]);
                assert_eq!(run(&program, &call), ALLOW, "{name}");
                let nine = x86_64(number_of(name), &[0, 0, 0, 0, 0, 9]);
                let expected = if args.is_null() {
                    ALLOW
                } else {
                    errno(libc::EPERM)
                };
                assert_eq!(run(&program, &nine), expected, "{name}");
            }
            assert_eq!(run(&program, &x86_64(400, &[])), errno(libc::EPERM));
        }
    }

    fn filter(json: Value) -> Vec<Filter> {
        vec![compile(&profile(json)).unwrap()]
    }

    fn exited_zero(status: WaitStatus) {
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    }

    fn killed_by_sigsys(status: WaitStatus) {
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "{status:?}"
        );
    }

    fn errno_rules() -> i32 {
        if call(libc::SYS_getppid, [0; 3]) != Err(libc::ENOMSG) {
            return 1;
        }
        if uname() != Err(libc::EPERM) {
            return 2;
        }
        if getcwd().is_err() {
            return 3;
        }
        if call(libc::SYS_getpid, [0; 3]).is_err() {
            return 4;
        }
        0
    }

    #[test]
    fn a_denied_call_fails_with_the_rule_errno_and_others_work() {
        exited_zero(in_child(
            &filter(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOMSG},
                {"names": ["uname"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["getcwd"], "action": "SCMP_ACT_LOG"},
            ]})),
            errno_rules,
        ));
    }

    fn default_errno() -> i32 {
        if call(libc::SYS_getppid, [0; 3]).is_err() {
            return 1;
        }
        if call(libc::SYS_getpid, [0; 3]) != Err(libc::EACCES) {
            return 2;
        }
        if uname() != Err(libc::EACCES) {
            return 3;
        }
        0
    }

    #[test]
    fn unlisted_calls_get_the_default_action() {
        exited_zero(in_child(
            &filter(
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": libc::EACCES,
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [{"names": ["exit_group", "getppid"], "action": "SCMP_ACT_ALLOW"}]}),
            ),
            default_errno,
        ));
    }

    fn argument_conditions() -> i32 {
        const PER_LINUX32: u64 = 0x0008;
        if call(libc::SYS_personality, [0xffff_ffff, 0, 0]).is_err() {
            return 1;
        }
        if call(libc::SYS_personality, [PER_LINUX32, 0, 0]) != Err(libc::EPERM) {
            return 2;
        }
        let (unix, inet) = (libc::AF_UNIX.unsigned_abs(), libc::AF_INET.unsigned_abs());
        let stream = libc::SOCK_STREAM.unsigned_abs();
        match call(libc::SYS_socket, [unix.into(), stream.into(), 0]) {
            Ok(fd) => {
                let _ = call(libc::SYS_close, [fd.unsigned_abs(), 0, 0]);
            }
            Err(_) => return 3,
        }
        if call(libc::SYS_socket, [inet.into(), stream.into(), 0]) != Err(libc::EAFNOSUPPORT) {
            return 4;
        }
        // 64-bit values: the high half decides here.
        if call(libc::SYS_getppid, [0x1_0000_0001, 0, 0]) != Err(libc::E2BIG) {
            return 5;
        }
        if call(libc::SYS_getppid, [0xffff_ffff, 0, 0]).is_err() {
            return 6;
        }
        if call(libc::SYS_getppid, [0, 0xab00_0000_0000_0000, 0]) != Err(libc::ENOMSG) {
            return 7;
        }
        if call(libc::SYS_getppid, [0, 0x0000_0000_ab00_0000, 0]).is_err() {
            return 8;
        }
        0
    }

    #[test]
    fn argument_conditions_hold_in_the_kernel() {
        exited_zero(in_child(
            &filter(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0xffff_ffff_u64, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EAFNOSUPPORT,
                 "args": [{"index": 0, "value": libc::AF_UNIX, "op": "SCMP_CMP_NE"}]},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::E2BIG,
                 "args": [{"index": 0, "value": 0x1_0000_0000_u64, "op": "SCMP_CMP_GT"}]},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOMSG,
                 "args": [{"index": 1, "value": 0xff00_0000_0000_0000_u64,
                           "valueTwo": 0xab00_0000_0000_0000_u64, "op": "SCMP_CMP_MASKED_EQ"}]},
            ]})),
            argument_conditions,
        ));
    }

    fn first_match() -> i32 {
        if call(libc::SYS_getppid, [7, 0, 0]) != Err(libc::E2BIG) {
            return 1;
        }
        if call(libc::SYS_getppid, [0; 3]) != Err(libc::ENOMSG) {
            return 2;
        }
        if uname().is_err() {
            return 3;
        }
        0
    }

    #[test]
    fn the_kernel_sees_the_first_match_decide() {
        exited_zero(in_child(
            &filter(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::E2BIG,
                 "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_EQ"}]},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOMSG},
                {"names": ["getppid"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["uname"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"},
            ]})),
            first_match,
        ));
    }

    fn calls_uname() -> i32 {
        let _ = uname();
        1
    }

    #[test]
    fn kill_actions_end_the_process_with_sigsys() {
        for action in ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"] {
            killed_by_sigsys(in_child(
                &filter(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["uname"], "action": action},
                ]})),
                calls_uname,
            ));
        }
    }
}

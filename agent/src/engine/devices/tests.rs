//! The device program is checked by running it: a small interpreter of the opcodes it uses
//! stands in for the kernel's here (the lab's security suite runs it in the real kernel).

use super::*;
use oci_spec::runtime::LinuxDeviceCgroupBuilder;

/// Runs `program` on one access the way the kernel's interpreter would.
fn run(program: &[Insn], kind: i32, access: u32, major: u32, minor: u32) -> u64 {
    let ctx = [(access << 16) | kind as u32, major, minor];
    let mut regs = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = program[pc];
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        pc += 1;
        match i.code {
            op::LOAD_WORD => {
                assert_eq!(src, 1, "loads only from the context");
                regs[dst] = u64::from(ctx[(i.off / 4) as usize]);
            }
            op::AND32_IMM => regs[dst] = u64::from(regs[dst] as u32 & i.imm as u32),
            op::RSH32_IMM => regs[dst] = u64::from((regs[dst] as u32) >> i.imm),
            op::MOV32_REG => regs[dst] = u64::from(regs[src] as u32),
            op::MOV64_IMM => regs[dst] = i.imm as i64 as u64,
            op::JNE_IMM => {
                if regs[dst] != i.imm as i64 as u64 {
                    pc += i.off as usize;
                }
            }
            op::JNE_REG => {
                if regs[dst] != regs[src] {
                    pc += i.off as usize;
                }
            }
            op::EXIT => return regs[0],
            other => panic!("opcode {other:#x} is not one the program uses"),
        }
    }
}

fn allowed(rules: &[DeviceRule], kind: i32, access: u32, major: u32, minor: u32) -> bool {
    run(&program(rules), kind, access, major, minor) == 1
}

const BLOCK: i32 = DEV_BLOCK;
const CHAR: i32 = DEV_CHAR;

#[test]
fn default_rules_deny_reading_the_vms_disks() {
    let rules = default_rules();
    // virtio-blk: major 254 (dynamic), the first disk's minor 0.
    assert!(!allowed(&rules, BLOCK, READ, 254, 0));
    assert!(!allowed(&rules, BLOCK, READ | WRITE, 254, 16));
    assert!(!allowed(&rules, BLOCK, WRITE, 8, 0));
}

#[test]
fn default_rules_allow_mknod_but_not_use() {
    let rules = default_rules();
    assert!(allowed(&rules, BLOCK, MKNOD, 254, 0));
    assert!(allowed(&rules, CHAR, MKNOD, 1, 1));
    // /dev/mem (1:1) and /dev/kmsg (1:11) are not usable.
    assert!(!allowed(&rules, CHAR, READ, 1, 1));
    assert!(!allowed(&rules, CHAR, WRITE, 1, 11));
}

#[test]
fn default_rules_allow_the_standard_nodes() {
    let rules = default_rules();
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        assert!(
            allowed(&rules, CHAR, READ | WRITE, major, minor),
            "{major}:{minor}"
        );
    }
    assert!(allowed(&rules, CHAR, READ | WRITE, 136, 7), "a pty");
    // The same numbers as block devices are not the same devices.
    assert!(!allowed(&rules, BLOCK, READ, 1, 3));
}

fn spec_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    access: &str,
) -> LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .major(major)
        .minor(minor)
        .access(access)
        .build()
        .unwrap()
}

#[test]
fn the_last_matching_rule_decides() {
    // containerd's shape: deny all, then allow; here also a later deny of one allowed device
    // (/dev/kmsg, 1:11, not one of the standard nodes).
    let spec = [
        spec_rule(false, LinuxDeviceType::A, -1, -1, "rwm"),
        spec_rule(true, LinuxDeviceType::C, 1, -1, "rw"),
        spec_rule(false, LinuxDeviceType::C, 1, 11, "w"),
    ];
    let rules = rules_of(Some(&spec)).unwrap();
    assert!(allowed(&rules, CHAR, READ, 1, 4));
    assert!(
        allowed(&rules, CHAR, READ, 1, 11),
        "reading kmsg is still allowed"
    );
    assert!(!allowed(&rules, CHAR, WRITE, 1, 11), "the later deny wins");
    assert!(!allowed(&rules, CHAR, MKNOD, 1, 4), "m was never allowed");
    assert!(!allowed(&rules, CHAR, READ, 2, 3));
}

#[test]
fn access_must_be_within_the_rule() {
    let spec = [spec_rule(true, LinuxDeviceType::B, 254, 0, "r")];
    let rules = rules_of(Some(&spec)).unwrap();
    assert!(allowed(&rules, BLOCK, READ, 254, 0));
    assert!(!allowed(&rules, BLOCK, READ | WRITE, 254, 0));
    assert!(!allowed(&rules, BLOCK, READ, 254, 1));
}

#[test]
fn privileged_allows_everything() {
    let spec = [LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access("rwm")
        .build()
        .unwrap()];
    let rules = rules_of(Some(&spec)).unwrap();
    assert!(allow_everything(&rules));
    assert!(allowed(&rules, BLOCK, READ | WRITE | MKNOD, 254, 0));
    assert!(!allow_everything(&default_rules()));
    let mut denied_after = rules.clone();
    denied_after.push(DeviceRule {
        allow: false,
        kind: Kind::Block,
        major: None,
        minor: None,
        access: READ,
    });
    assert!(!allow_everything(&denied_after));
}

/// `--device /dev/loop0:/dev/xvdc:r`: Docker's defaults plus the rule `device_nodes` makes for
/// the guest's disk 254:32.
#[test]
fn a_device_rule_allows_exactly_its_disk_with_its_permissions() {
    let mut rules = default_rules();
    rules.push(DeviceRule {
        allow: true,
        kind: Kind::Block,
        major: Some(254),
        minor: Some(32),
        access: READ,
    });
    assert!(allowed(&rules, BLOCK, READ, 254, 32));
    assert!(
        !allowed(&rules, BLOCK, WRITE, 254, 32),
        ":r does not allow writing"
    );
    assert!(
        !allowed(&rules, BLOCK, READ, 254, 0),
        "not the VM's other disks"
    );
    assert!(!allowed(&rules, BLOCK, READ, 254, 16));
    assert!(
        !allowed(&rules, CHAR, READ, 254, 32),
        "a char device of the same numbers"
    );
    assert!(!allow_everything(&rules));
    assert_all_reachable(&program(&rules));
    // Privileged, with a device too: still everything.
    let mut privileged = rules_of(Some(&[LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access("rwm")
        .build()
        .unwrap()]))
    .unwrap();
    privileged.push(rules[rules.len() - 1].clone());
    assert!(allow_everything(&privileged));
}

#[test]
fn the_standard_nodes_stay_usable_under_deny_all() {
    // A pod sandbox's spec from containerd: deny everything, nothing allowed.
    let rules = rules_of(Some(&[spec_rule(false, LinuxDeviceType::A, -1, -1, "rwm")])).unwrap();
    assert!(allowed(&rules, CHAR, MKNOD | READ | WRITE, 1, 3), "null");
    assert!(allowed(&rules, CHAR, READ | WRITE, 136, 2), "a pty");
    assert!(!allowed(&rules, BLOCK, READ, 254, 0));
    assert!(!allowed(&rules, CHAR, READ, 1, 1), "/dev/mem");
    assert_all_reachable(&program(&rules));
}

#[test]
fn no_rules_mean_dockers_default() {
    assert_eq!(rules_of(None).unwrap(), default_rules());
    assert_eq!(rules_of(Some(&[])).unwrap(), default_rules());
}

#[test]
fn bad_rules_are_refused_naming_them() {
    let error = rules_of(Some(&[spec_rule(true, LinuxDeviceType::C, 1, 3, "rx")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rule 0") && error.contains("\"rx\""),
        "{error}"
    );
    let error = rules_of(Some(&[spec_rule(
        true,
        LinuxDeviceType::C,
        1 << 40,
        3,
        "r",
    )]))
    .unwrap_err()
    .to_string();
    assert!(error.contains("major number"), "{error}");
}

#[test]
fn fifo_rules_are_left_out() {
    let spec = [
        spec_rule(true, LinuxDeviceType::P, -1, -1, "rwm"),
        spec_rule(true, LinuxDeviceType::C, 1, 3, "rwm"),
    ];
    assert_eq!(
        rules_of(Some(&spec)).unwrap().len(),
        1 + standard_nodes().len()
    );
}

/// Every instruction can be reached from the first, following fall-throughs and jumps: the
/// kernel's verifier refuses a program with unreachable code.
fn assert_all_reachable(program: &[Insn]) {
    let mut reached = vec![false; program.len()];
    let mut todo = vec![0usize];
    while let Some(pc) = todo.pop() {
        if pc >= program.len() || reached[pc] {
            continue;
        }
        reached[pc] = true;
        let i = program[pc];
        if i.code == op::EXIT {
            continue;
        }
        todo.push(pc + 1);
        if matches!(i.code, op::JNE_IMM | op::JNE_REG) {
            todo.push(pc + 1 + i.off as usize);
        }
    }
    let unreached: Vec<usize> = (0..program.len()).filter(|&pc| !reached[pc]).collect();
    assert!(
        unreached.is_empty(),
        "unreachable instructions {unreached:?}"
    );
    assert_eq!(program.last().map(|i| i.code), Some(op::EXIT));
}

/// containerd's and CRI's shape: deny everything, then allow the standard nodes.
fn containerd_rules() -> Vec<DeviceRule> {
    let mut spec = vec![spec_rule(false, LinuxDeviceType::A, -1, -1, "rwm")];
    spec.extend(
        [(1, 3), (1, 5), (1, 8), (1, 9), (5, 0), (5, 1)]
            .map(|(major, minor)| spec_rule(true, LinuxDeviceType::C, major, minor, "rwm")),
    );
    rules_of(Some(&spec)).unwrap()
}

#[test]
fn no_instruction_is_unreachable() {
    let privileged = rules_of(Some(&[LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .access("rwm")
        .build()
        .unwrap()]))
    .unwrap();
    for rules in [default_rules(), containerd_rules(), privileged, Vec::new()] {
        assert_all_reachable(&program(&rules));
    }
}

#[test]
fn containerds_rules_deny_all_but_their_allow_list() {
    let rules = containerd_rules();
    assert!(allowed(&rules, CHAR, READ | WRITE, 1, 3));
    assert!(allowed(&rules, CHAR, MKNOD, 1, 3), "m is within rwm");
    assert!(!allowed(&rules, BLOCK, READ, 254, 0));
    assert!(!allowed(&rules, BLOCK, MKNOD, 254, 0));
}

/// Loads the program into this host's kernel and attaches it to a fresh cgroup v2 directory:
/// the verifier is the judge of the encoding. Needs root and a cgroup2 hierarchy.
#[test]
fn the_kernel_accepts_the_program() {
    let Some(root) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|root| {
            nix::sys::statfs::statfs(*root)
                .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                .unwrap_or(false)
        })
    else {
        let reason = "no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified";
        assert!(std::env::var_os("CI").is_none(), "{reason}");
        eprintln!("not run: {reason}");
        return;
    };
    let dir = root.join(format!("rvm-devices-test-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let results = [default_rules(), containerd_rules()].map(|rules| attach(&dir, &rules));
    std::fs::remove_dir(&dir).unwrap();
    for result in results {
        result.unwrap();
    }
}

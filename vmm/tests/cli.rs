//! The `rvm-vmm` binary end to end: bad input exits 2 naming the culprit; a command line
//! rendered by `config::Args` is read as rendered; tiny ELF "kernels" built here boot through
//! the 64-bit and the PVH entry, print, reset and exit 0; SIGTERM
//! stops a spinning guest with status 143; the `--api` socket fills disk slots while a guest
//! runs under `--seccomp enforce`; `--bounded-stderr` keeps a log file to a size. KVM tests skip, saying why, without /dev/kvm.

// Test helpers panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;
use common::kvm_available;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LOAD_ADDR: u64 = 0x100_0000;

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rvm-vmm"))
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvm-vmm-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A minimal x86_64 ELF executable: one PT_LOAD segment holding `code` at `LOAD_ADDR`,
/// entered at its start, plus a PVH note pointing there when `pvh`.
fn elf_kernel(code: &[u8], pvh: bool) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let phnum: u16 = if pvh { 2 } else { 1 };
    let note: Vec<u8> = if pvh {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes()); // namesz
        note.extend_from_slice(&4u32.to_le_bytes()); // descsz
        note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&(LOAD_ADDR as u32).to_le_bytes());
        note
    } else {
        Vec::new()
    };
    let note_offset = EHDR + PHDR * usize::from(phnum);
    let code_offset = note_offset + note.len();

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
    elf.extend_from_slice(&phnum.to_le_bytes());
    elf.extend_from_slice(&[0; 6]); // no section headers
    let mut phdr = |kind: u32, offset: usize, addr: u64, size: usize| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
        elf.extend_from_slice(&(offset as u64).to_le_bytes());
        elf.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
        elf.extend_from_slice(&addr.to_le_bytes()); // p_paddr
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_filesz
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_memsz
        elf.extend_from_slice(&4u64.to_le_bytes()); // p_align
    };
    phdr(1, code_offset, LOAD_ADDR, code.len());
    if pvh {
        phdr(4, note_offset, 0, note.len());
    }
    elf.extend_from_slice(&note);
    elf.extend_from_slice(code);
    elf
}

/// 64-bit guest: prints 'Z' if RSI points at a zero page with the "HdrS" magic, then the
/// first byte of the command line its `cmd_line_ptr` points at, then resets.
fn linux64_probe() -> Vec<u8> {
    vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x81, 0xbe, 0x02, 0x02, 0x00, 0x00, 0x48, 0x64, 0x72,
        0x53, // cmp dword [rsi+0x202], "HdrS"
        0x75, 0x03, // jne +3
        0xb0, b'Z', 0xee, // mov al, 'Z'; out dx, al
        0x8b, 0x86, 0x28, 0x02, 0x00, 0x00, // mov eax, [rsi+0x228] (cmd_line_ptr)
        0x8a, 0x00, // mov al, [rax]
        0xee, // out dx, al
        0xb0, b'\n', 0xee, // newline
        0xb0, 0xfe, 0xe6, 0x64, // i8042 reset
        0xf4, 0xeb, 0xfd, // hlt loop
    ]
}

/// 32-bit PVH guest: prints 'P' if EBX points at hvm_start_info (its magic), then resets.
fn pvh_probe() -> Vec<u8> {
    vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33, // cmp dword [ebx], 0x336ec578
        0x75, 0x03, // jne +3
        0xb0, b'P', 0xee, // mov al, 'P'; out dx, al
        0xb0, b'\n', 0xee, // newline
        0xb0, 0xfe, 0xe6, 0x64, // i8042 reset
        0xf4, 0xeb, 0xfd, // hlt loop
    ]
}

fn write_kernel(dir: &Path, name: &str, image: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, image).unwrap();
    path
}

fn run_vmm(args: &[&str]) -> Output {
    vmm().args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn missing_kernel_exits_2_naming_the_file() {
    let out = run_vmm(&["--kernel", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent"), "{}", stderr(&out));
}

#[test]
fn bounded_stderr_keeps_a_log_file_to_a_size_only_when_asked() {
    let dir = scratch_dir("bounded-stderr");
    let path = dir.join("vmm.log");
    let earlier = "an earlier line\n".repeat(300_000);
    for bounded in [false, true] {
        std::fs::write(&path, &earlier).unwrap();
        // Write-only and appending, as a shell's `2>>vmm.log`.
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let mut command = vmm();
        command
            .args(["--kernel", "/nonexistent/vmlinux"])
            .stderr(log);
        if bounded {
            command.arg("--bounded-stderr");
        }
        assert_eq!(command.status().unwrap().code(), Some(2));
        let text = std::fs::read_to_string(&path).unwrap();
        // The error, written after the cut, is the last line either way.
        let last = text.lines().last().unwrap();
        assert!(last.contains("/nonexistent/vmlinux"), "{last}");
        if bounded {
            assert!(
                text.len() <= (256 << 10) + (2 << 20) + 300,
                "{}",
                text.len()
            );
            assert!(text.contains("bytes of output cut here"));
            assert!(text.starts_with("an earlier line\n"));
        } else {
            assert!(text.starts_with(&earlier), "a harness's log is kept whole");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_exits_2() {
    let dir = scratch_dir("bad-input");
    let kernel = write_kernel(&dir, "vmlinux", &elf_kernel(&linux64_probe(), false));
    let text = write_kernel(&dir, "notes.txt", b"not a kernel");
    let kernel = kernel.to_str().unwrap();
    let long_cmdline = "x".repeat(2048);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--kernel", text.to_str().unwrap()], "notes.txt"),
        (vec!["--kernel", kernel, "--memory", "16"], "--memory"),
        (vec!["--kernel", kernel, "--memory", "99999999"], "--memory"),
        (vec!["--kernel", kernel, "--vcpus", "0"], "--vcpus"),
        (vec!["--kernel", kernel, "--vcpus", "33"], "--vcpus"),
        (
            vec!["--kernel", kernel, "--initrd", "/nonexistent.img"],
            "/nonexistent.img",
        ),
        (
            vec!["--kernel", kernel, "--cmdline", &long_cmdline],
            "--cmdline",
        ),
        (vec!["--kernel", kernel, "--disk", "/x.img,ro"], "--disk"),
        (
            vec![
                "--kernel",
                kernel,
                "--vsock",
                "cid=3,uds=/nonexistent/v.sock",
            ],
            "--vsock",
        ),
        (
            vec!["--kernel", kernel, "--disk-slots", "17"],
            "--disk-slots 17: at most 16",
        ),
        (
            vec!["--kernel", kernel, "--api", "/nonexistent/api.sock"],
            "--api /nonexistent/api.sock",
        ),
    ];
    for (args, culprit) in cases {
        let out = run_vmm(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(culprit), "{args:?}: {}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_binary_reads_a_rendered_command_line_as_rendered() {
    // A kernel path starting with '-' is rendered as `--kernel=-...`; the binary must take it
    // for the path (and fail to open it, naming it), not for a flag.
    let mut args = rvm_vmm::config::Args::new("-nonexistent-vmlinux".into());
    args.disks.push(rvm_vmm::config::DiskSpec {
        path: "/nonexistent.img".into(),
        read_only: true,
        serial: Some("layer-0".into()),
    });
    let argv = args.to_args().unwrap();
    assert_eq!(argv[0], "--kernel=-nonexistent-vmlinux");
    let out = vmm().args(&argv).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--kernel -nonexistent-vmlinux: cannot open"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn elf_kernel_boots_in_64_bit_mode_and_exits_0_on_reset() {
    if !kvm_available() {
        return;
    }
    let dir = scratch_dir("linux64");
    let kernel = write_kernel(&dir, "vmlinux", &elf_kernel(&linux64_probe(), false));
    let out = run_vmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 reboot=k",
        "--console",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"Zc\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pvh_note_selects_the_pvh_entry() {
    if !kvm_available() {
        return;
    }
    let dir = scratch_dir("pvh");
    let kernel = write_kernel(&dir, "vmlinux", &elf_kernel(&pvh_probe(), true));
    let out = run_vmm(&["--kernel", kernel.to_str().unwrap(), "--console"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"P\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn console_is_silent_without_console_flag() {
    if !kvm_available() {
        return;
    }
    let dir = scratch_dir("quiet");
    let kernel = write_kernel(&dir, "vmlinux", &elf_kernel(&linux64_probe(), false));
    let log = dir.join("console.log");
    let out = run_vmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--console-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&log).unwrap(), b"Zc\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_stops_a_spinning_guest_with_143() {
    if !kvm_available() {
        return;
    }
    let dir = scratch_dir("sigterm");
    let child = spinning_guest(&dir, &["--vcpus", "2"]);
    let pid = i32::try_from(child.id()).unwrap();
    let sent = Instant::now();
    // SAFETY: `pid` is our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts `rvm-vmm` on a guest that prints "R" and spins, with `extra` flags; returns once the
/// guest runs.
fn spinning_guest(dir: &Path, extra: &[&str]) -> std::process::Child {
    let code = [
        0x66, 0xba, 0xf8, 0x03, 0xb0, b'R', 0xee, 0xb0, b'\n', 0xee, 0xeb, 0xfe,
    ];
    let kernel = write_kernel(dir, "vmlinux", &elf_kernel(&code, false));
    let mut child = vmm()
        .args(["--kernel", kernel.to_str().unwrap(), "--console"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut marker = [0u8; 2];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut marker).unwrap();
    assert_eq!(&marker, b"R\n");
    child
}

#[test]
fn the_api_fills_disk_slots_while_the_guest_runs_under_seccomp() {
    if !kvm_available() {
        return;
    }
    let dir = scratch_dir("api");
    let socket = dir.join("api.sock");
    let image_path = dir.join("layer.img");
    std::fs::write(&image_path, vec![0x5a; 64 * 512]).unwrap();
    let child = spinning_guest(
        &dir,
        &[
            "--disk-slots",
            "2",
            "--api",
            socket.to_str().unwrap(),
            "--seccomp",
            "enforce",
        ],
    );
    let image = std::fs::File::open(&image_path).unwrap();
    let mut client = rvm_vmm::api::Client::connect(&socket).unwrap();
    assert_eq!(client.attach(1, "layer-0", &image).unwrap(), 64);
    let refused = client.attach(1, "layer-0", &image).unwrap_err().to_string();
    assert!(refused.contains("slot 1 is already attached"), "{refused}");
    client.detach(1).unwrap();
    drop(client);
    rvm_vmm::api::client::detach(&socket, 0).unwrap_err();
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: `pid` is our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(
        socket.exists(),
        "the socket stays at exit (the runtime removes its directory)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--jail` with a fresh unprivileged ID and an empty directory to pivot into.
fn jail_flag(dir: &Path) -> String {
    let root = dir.join("jail");
    std::fs::create_dir_all(&root).unwrap();
    format!("uid=299999,gid=299999,root={}", root.display())
}

/// Whether this test runs as root, which entering a jail needs; fails under CI otherwise.
fn root_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    common::prerequisite((euid != 0).then(|| "entering a jail needs root".to_owned()))
}

#[test]
fn a_jailed_vmm_runs_the_guest_under_the_filter() {
    if !kvm_available() || !root_available() {
        return;
    }
    let dir = scratch_dir("jail");
    let kernel = write_kernel(&dir, "vmlinux", &elf_kernel(&linux64_probe(), false));
    let jail = jail_flag(&dir);
    let out = run_vmm(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 reboot=k",
        "--console",
        "--jail",
        &jail,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"Zc\n", "the guest ran (KVM_RUN) and reset");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The compromised-VMM hook (debug builds): every attack is refused by the jail alone, and the
/// seccomp filter kills the process on the attack repeated under it.
#[test]
fn a_compromised_jailed_vmm_is_refused_then_killed() {
    use std::os::unix::process::ExitStatusExt;
    if !kvm_available() || !root_available() {
        return;
    }
    let dir = scratch_dir("attack");
    let kernel = write_kernel(&dir, "vmlinux", &elf_kernel(&linux64_probe(), false));
    let jail = jail_flag(&dir);
    for attack in [
        "open-shadow",
        "connect-containerd",
        "execve",
        "unlink-host-file",
    ] {
        let out = vmm()
            .args(["--kernel", kernel.to_str().unwrap(), "--jail", &jail])
            .env("RVM_VMM_ATTACK", attack)
            .output()
            .unwrap();
        let text = stderr(&out);
        for name in rvm_vmm::jail::attack::ATTACKS {
            assert!(
                text.contains(&format!("rvm-vmm: attack {name}: denied by the jail (")),
                "{name} under the jail: {text}"
            );
        }
        assert!(
            !text.contains("SUCCEEDED") && !text.contains("SURVIVED"),
            "{text}"
        );
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{attack}: {text}");
        assert!(text.contains("is not in the VMM's allowlist"), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

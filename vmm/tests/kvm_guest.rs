//! Native KVM tests: tiny guest programs, assembled here as bytes, run by the real VMM code
//! (boot tables, CPU setup, vCPU threads, serial, i8042). They skip, saying why, where
//! /dev/kvm cannot be opened.

// Test helpers panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;
use common::kvm_available;

use std::time::{Duration, Instant};

use rvm_vmm::devices::legacy::serial::{ConsoleOutput, SharedBuffer};
use rvm_vmm::machine::{ExitReason, Machine, RunOutcome, StopSources};
use vmm_sys_util::eventfd::EventFd;

const CODE_ADDR: u64 = 0x10_0000;
const MEMORY: u64 = 64 << 20;

/// Runs `code` on `vcpus` vCPUs; returns the outcome and the serial output.
fn run_code(code: &[u8], vcpus: u8, stop: StopSources<'_>) -> (RunOutcome, Vec<u8>) {
    let out = SharedBuffer::default();
    let console = ConsoleOutput::new(vec![Box::new(out.clone())]);
    let machine = Machine::new(MEMORY, vcpus, console).unwrap();
    let entry = machine.load_raw_code(CODE_ADDR, code).unwrap();
    let outcome = machine.run(entry, stop).unwrap();
    (outcome, out.contents())
}

/// Prints "hi\n", writes then reads an unmapped MMIO address in the gap, reads an unknown
/// port, prints both values read, and resets through the i8042.
fn hello_mmio_reset() -> Vec<u8> {
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'h', 0xee, // mov al, 'h'; out dx, al
        0xb0, b'i', 0xee, // mov al, 'i'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0x48, 0xbb, // mov rbx, 0xd000_0000
    ];
    code.extend_from_slice(&0xd000_0000u64.to_le_bytes());
    code.extend_from_slice(&[
        0xc6, 0x03, 0x42, // mov byte [rbx], 0x42   (MMIO write, ignored)
        0x8a, 0x03, // mov al, [rbx]           (MMIO read, 0xff)
        0xee, // out dx, al
        0x66, 0xba, 0x34, 0x12, // mov dx, 0x1234
        0xec, // in al, dx                (unknown port, 0xff)
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee, // out dx, al
        0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al (i8042 reset)
        0xf4, 0xeb, 0xfd, // hlt; jmp back to hlt
    ]);
    code
}

#[test]
fn guest_prints_touches_mmio_and_resets() {
    if !kvm_available() {
        return;
    }
    let (outcome, output) = run_code(&hello_mmio_reset(), 1, StopSources::default());
    assert_eq!(output, b"hi\n\xff\xff");
    assert_eq!(outcome.reason, ExitReason::Reset);
    assert!(!outcome.kernel_panic);
}

#[test]
fn reset_stops_application_processors_waiting_for_sipi() {
    if !kvm_available() {
        return;
    }
    // vCPU 1 never gets a SIPI, so it sits in KVM_RUN until kicked.
    let started = Instant::now();
    let (outcome, output) = run_code(&hello_mmio_reset(), 2, StopSources::default());
    assert_eq!(outcome.reason, ExitReason::Reset);
    assert!(output.starts_with(b"hi\n"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn triple_fault_is_a_shutdown() {
    if !kvm_available() {
        return;
    }
    // ud2 with an empty IDT: #UD, #GP, double fault, triple fault.
    let (outcome, _) = run_code(&[0x0f, 0x0b], 1, StopSources::default());
    assert_eq!(outcome.reason, ExitReason::TripleFault);
}

#[test]
fn panic_message_is_reported() {
    if !kvm_available() {
        return;
    }
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for byte in b"Kernel panic - not syncing\n" {
        code.extend_from_slice(&[0xb0, *byte, 0xee]); // mov al, byte; out dx, al
    }
    code.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4]);
    let (outcome, _) = run_code(&code, 1, StopSources::default());
    assert_eq!(outcome.reason, ExitReason::Reset);
    assert!(outcome.kernel_panic);
}

#[test]
fn spinning_vcpus_stop_on_request() {
    if !kvm_available() {
        return;
    }
    let request = EventFd::new(0).unwrap();
    let requester = request.try_clone().unwrap();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        requester.write(1).unwrap();
    });
    // jmp $ forever on the boot vCPU; the second vCPU waits for a SIPI.
    let started = Instant::now();
    let (outcome, _) = run_code(
        &[0xeb, 0xfe],
        2,
        StopSources {
            signals: None,
            request: Some(&request),
        },
    );
    waker.join().unwrap();
    assert_eq!(outcome.reason, ExitReason::Requested);
    assert!(started.elapsed() < Duration::from_secs(5));
}

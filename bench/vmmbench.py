"""bench/vmmbench.py: what bench/vmm-start and bench/overhead share.

Starting rvm-vmm with a CLOCK_MONOTONIC timestamp taken just before exec, waiting for the VMM's
"vCPU 0: first KVM_RUN" log event (which carries the same clock), the VMM's resident memory
without its guest RAM (from /proc/PID/smaps), stopping it with SIGTERM, and percentiles.
"""

import json
import os
import re
import select
import signal
import socket
import time

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
if not os.path.isabs(TARGET):
    TARGET = os.path.join(os.getcwd(), TARGET)
# The VMM logs the first KVM_RUN of vCPU 0 at info level from this module only.
FIRST_RUN_FILTER = "warn,rvm_vmm::vstate::vcpu=info"
FIRST_RUN_EVENT = re.compile(r"vCPU 0: first KVM_RUN monotonic_ns=(\d+)")
MIB = 1 << 20
# Generous: in the lab, under TCG on a busy host, the first KVM_RUN took up to 10 s.
FIRST_RUN_DEADLINE_S = 120
# How long after the first KVM_RUN the VMM's memory is read.
SETTLE_S = 0.1
# Issue #4, for 1 vCPU and 128 MiB.
GOAL_START_MS = 5.0
GOAL_RSS_MIB = 5.0


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def find_vmm():
    """The rvm-vmm binary: $RVM_VMM, else target/release/rvm-vmm."""
    vmm = os.environ.get("RVM_VMM") or os.path.join(TARGET, "release", "rvm-vmm")
    if not os.access(vmm, os.X_OK):
        raise BenchError(f"{vmm} is missing: cargo build --release -p rvm-vmm first")
    return vmm


def find_kernel():
    """The guest kernel: $RVM_GUEST_KERNEL, else target/rvm-guest/vmlinux."""
    kernel = os.environ.get("RVM_GUEST_KERNEL") or os.path.join(TARGET, "rvm-guest", "vmlinux")
    if not os.path.isfile(kernel):
        raise BenchError(f"{kernel} is missing: run guest-kernel/build first")
    return kernel


def kvm_kind():
    """'pvm' when /dev/kvm is KVM-PVM (cannot boot Linux), 'kvm' otherwise."""
    if not os.path.exists("/dev/kvm"):
        raise BenchError("/dev/kvm is missing")
    return "pvm" if os.path.isdir("/sys/module/kvm_pvm") else "kvm"


def where():
    """Host name and KVM flavour, for the JSON output."""
    return f"{socket.gethostname()} ({kvm_kind()})"


# Issue 21: the jail and filter add at most this to the p50 start-up; the VMM without guest RAM
# stays within this.
GOAL_JAIL_COST_MS = 2.0
GOAL_JAILED_RSS_MIB = 3.0


class Vmm:
    """A running rvm-vmm whose stderr is a pipe we read, started at `start_ns` (CLOCK_MONOTONIC,
    taken in the child just before exec)."""

    def __init__(self, args, console_log=None):
        env = dict(os.environ, RUST_LOG=FIRST_RUN_FILTER)
        argv = list(args)
        if console_log:
            argv += ["--console-log", console_log]
        stamp_r, stamp_w = os.pipe()
        err_r, err_w = os.pipe()
        devnull = os.open(os.devnull, os.O_RDWR)
        pid = os.fork()
        if pid == 0:  # child: redirect, stamp, exec; never returns
            try:
                os.close(stamp_r)
                os.close(err_r)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                os.dup2(err_w, 2)
                start = time.monotonic_ns()
                os.write(stamp_w, str(start).encode())
                os.close(stamp_w)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        os.close(stamp_w)
        os.close(err_w)
        os.close(devnull)
        self.pid = pid
        self.argv = argv
        self.status = None
        self.signalled = False
        self._stderr = err_r
        self._pending = b""
        self.log = []
        with os.fdopen(stamp_r, "rb") as stamp:
            text = stamp.read()
        if not text:
            self.wait(5)
            raise BenchError(f"{argv[0]} could not be started (status {self.status})")
        self.start_ns = int(text)

    def _read_lines(self, timeout):
        """Lines of stderr that arrive within `timeout` seconds; [] at end of file or timeout."""
        ready, _, _ = select.select([self._stderr], [], [], max(timeout, 0))
        if not ready:
            return []
        chunk = os.read(self._stderr, 65536)
        if not chunk:
            raise EOFError
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        text = [line.decode(errors="replace") for line in lines]
        self.log += text
        return text

    def first_run_ns(self, deadline_s=FIRST_RUN_DEADLINE_S):
        """CLOCK_MONOTONIC of vCPU 0's first KVM_RUN, from the VMM's log."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                lines = self._read_lines(deadline - time.monotonic())
            except EOFError:
                break
            for line in lines:
                found = FIRST_RUN_EVENT.search(line)
                if found:
                    return int(found.group(1))
        tail = "\n".join(self.log[-5:])
        raise BenchError(f"{self.argv[0]} never logged its first KVM_RUN within "
                         f"{deadline_s} s (status {self.status}); its stderr ends with:\n{tail}")

    def drain(self):
        """Reads whatever stderr has buffered, without waiting."""
        if self._stderr is None:
            return
        try:
            while self._read_lines(0):
                pass
        except EOFError:
            pass

    def alive(self):
        return self.status is None and os.path.exists(f"/proc/{self.pid}")

    def wait(self, deadline_s):
        """Waits up to `deadline_s` seconds for the process to end; its exit code, or None."""
        deadline = time.monotonic() + deadline_s
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                return None
            self.drain()
            time.sleep(0.002)
        return self.status

    def terminate(self):
        """Sends SIGTERM once, if still running."""
        if self.status is None and not self.signalled:
            os.kill(self.pid, signal.SIGTERM)
            self.signalled = True

    def stop(self, deadline_s=10):
        """SIGTERM, then wait; SIGKILL if it does not end within `deadline_s`. Its exit code."""
        if self.status is None:
            self.terminate()
            if self.wait(deadline_s) is None:
                os.kill(self.pid, signal.SIGKILL)
                self.wait(deadline_s)
                self._close()
                raise BenchError(f"{self.argv[0]} (pid {self.pid}) ignored SIGTERM for "
                                 f"{deadline_s} s and was killed")
        self.drain()
        self._close()
        return self.status

    def _close(self):
        if self._stderr is not None:
            os.close(self._stderr)
            self._stderr = None


def main_thread_cpu_ns(pid):
    """CPU time of the main thread of `pid` (ns), from /proc/PID/task/PID/schedstat. Read once
    the thread waits in its event loop, this is the CPU time the start-up cost, whatever the
    host's load."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0])


def smaps_mappings(pid):
    """The mappings of `pid` from /proc/PID/smaps: dicts with start, size, path, and the kB
    fields (Rss, Pss, ...) in bytes."""
    mappings = []
    header = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
    field = re.compile(r"^(\w+):\s+(\d+) kB$")
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = header.match(line)
            if head:
                start, end = int(head.group(1), 16), int(head.group(2), 16)
                mappings.append({"start": start, "size": end - start, "path": head.group(3)})
                continue
            kb = field.match(line)
            if kb and mappings:
                mappings[-1][kb.group(1)] = int(kb.group(2)) * 1024
    return mappings


def memory_without_guest(pid, guest_bytes):
    """Rss and Pss of `pid` in bytes, without its guest RAM: the anonymous mapping(s) whose sizes
    add up to `guest_bytes` (one mapping below 3 GiB of guest RAM, two above)."""
    mappings = smaps_mappings(pid)
    anonymous = [m for m in mappings if not m["path"]]
    guest = [m for m in anonymous if m["size"] == guest_bytes]
    if len(guest) != 1:
        # Split around the MMIO gap: the largest anonymous mappings that sum to the guest size.
        guest, total = [], 0
        for m in sorted(anonymous, key=lambda m: -m["size"]):
            if total + m["size"] <= guest_bytes:
                guest.append(m)
                total += m["size"]
            if total == guest_bytes:
                break
        if total != guest_bytes:
            raise BenchError(f"no anonymous mapping(s) of {guest_bytes} bytes (the guest RAM) "
                             f"in /proc/{pid}/smaps")
    rss = sum(m.get("Rss", 0) for m in mappings) - sum(m.get("Rss", 0) for m in guest)
    pss = sum(m.get("Pss", 0) for m in mappings) - sum(m.get("Pss", 0) for m in guest)
    guest_rss = sum(m.get("Rss", 0) for m in guest)
    return {"rss": rss, "pss": pss, "guest_rss": guest_rss}


def percentile(values, p):
    """The p-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[rank - 1]


def summary(values, digits):
    """p50, p90 and the runs, rounded."""
    return {"p50": round(percentile(values, 50), digits),
            "p90": round(percentile(values, 90), digits),
            "runs": [round(v, digits) for v in values]}


def dumps(result):
    """JSON with one top-level key a line, values compact."""
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in result.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def start_run(vmm, kernel, memory_mib, vcpus, extra=()):
    """One rvm-vmm run without initrd: (start-up ms, main thread CPU ms, memory dict). `extra`:
    more flags (the jail, the seccomp mode)."""
    proc = Vmm([vmm, "--kernel", kernel, "--memory", str(memory_mib), "--vcpus", str(vcpus),
                "--cmdline", "console=ttyS0 reboot=k panic=-1", *extra])
    try:
        first_run = proc.first_run_ns()
        time.sleep(SETTLE_S)
        cpu_ns = main_thread_cpu_ns(proc.pid)
        if not proc.alive():
            raise BenchError(f"{vmm} ended {SETTLE_S} s after its first KVM_RUN "
                             f"(status {proc.wait(1)})")
        memory = memory_without_guest(proc.pid, memory_mib * MIB)
    finally:
        status = proc.stop()
    # 143 = stopped by our SIGTERM; 0 = the guest rebooted first (a kernel that boots, no initrd).
    if status not in (143, 0):
        raise BenchError(f"{vmm} exited {status} after SIGTERM, expected 143; stderr:\n"
                         + "\n".join(proc.log[-5:]))
    return (first_run - proc.start_ns) / 1e6, cpu_ns / 1e6, memory


def measure_start(runs, memory_mib=128, vcpus=1, extra=()):
    """Start-up latency and memory overhead over `runs` runs after a warm-up, as a JSON object."""
    vmm, kernel = find_vmm(), find_kernel()
    start_run(vmm, kernel, memory_mib, vcpus, extra)  # warm-up
    start_ms, cpu_ms, rss, pss, guest = [], [], [], [], []
    for _ in range(runs):
        ms, cpu, memory = start_run(vmm, kernel, memory_mib, vcpus, extra)
        start_ms.append(ms)
        cpu_ms.append(cpu)
        rss.append(memory["rss"] / MIB)
        pss.append(memory["pss"] / MIB)
        guest.append(memory["guest_rss"] / MIB)
    return {
        "benchmark": "vmm-start", "where": where(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vmm": vmm, "kernel": kernel, "memory_mib": memory_mib, "vcpus": vcpus, "runs": runs,
        "flags": list(extra),
        "start_to_first_kvm_run_ms": summary(start_ms, 2),
        "main_thread_cpu_ms": summary(cpu_ms, 2),
        "rss_without_guest_mib": summary(rss, 2),
        "pss_without_guest_mib": summary(pss, 2),
        "guest_rss_mib": summary(guest, 1),
        "goals": {"start_ms": GOAL_START_MS, "rss_mib": GOAL_RSS_MIB},
    }


# The uid and gid of the jailed runs of bench/vmm-start --compare-jail: outside rvm's own range.
BENCH_JAIL_ID = 299_998


def measure_jail_cost(runs, memory_mib=128, vcpus=1):
    """bench/vmm-start --compare-jail: the same start-up measured with the jail and the seccomp
    filter (the default) and without either (`--seccomp off`, no `--jail`), the two kinds of runs
    interleaved so that the host's load weighs on both alike. Needs root (the jail does)."""
    import tempfile
    vmm, kernel = find_vmm(), find_kernel()
    with tempfile.TemporaryDirectory(prefix="vmm-start-jail.") as root:
        jailed = ("--jail", f"uid={BENCH_JAIL_ID},gid={BENCH_JAIL_ID},root={root}")
        bare = ("--seccomp", "off")
        kinds = {"jailed": jailed, "bare": bare}
        for extra in kinds.values():
            start_run(vmm, kernel, memory_mib, vcpus, extra)  # warm-up
        samples = {name: {"start": [], "rss": [], "pss": []} for name in kinds}
        for _ in range(runs):
            for name, extra in kinds.items():
                ms, _cpu, memory = start_run(vmm, kernel, memory_mib, vcpus, extra)
                samples[name]["start"].append(ms)
                samples[name]["rss"].append(memory["rss"] / MIB)
                samples[name]["pss"].append(memory["pss"] / MIB)
    result = {
        "benchmark": "vmm-start --compare-jail", "where": where(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vmm": vmm, "kernel": kernel, "memory_mib": memory_mib, "vcpus": vcpus, "runs": runs,
    }
    for name, extra in kinds.items():
        result[name] = {
            "flags": list(extra),
            "start_to_first_kvm_run_ms": summary(samples[name]["start"], 2),
            "rss_without_guest_mib": summary(samples[name]["rss"], 2),
            "pss_without_guest_mib": summary(samples[name]["pss"], 2),
        }
    result["jail_cost_p50_ms"] = round(
        result["jailed"]["start_to_first_kvm_run_ms"]["p50"]
        - result["bare"]["start_to_first_kvm_run_ms"]["p50"], 2)
    result["goals"] = {"jail_cost_p50_ms": GOAL_JAIL_COST_MS, "rss_mib": GOAL_JAILED_RSS_MIB}
    return result

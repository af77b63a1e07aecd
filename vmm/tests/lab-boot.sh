#!/bin/bash
# vmm/tests/lab-boot.sh: the lab test of issue #4 (rvm-vmm boots Linux).
#
#   cargo build --release -p rvm-vmm && tests/lab/run -- vmm/tests/lab-boot.sh
#
# Boots target/rvm-guest/vmlinux with a busybox initramfs under rvm-vmm --console and checks:
#   - 1 and 2 vCPUs (PVH entry), 2 vCPUs (64-bit entry, --no-pvh): /init prints its marker, `nproc` equals --vcpus, MemTotal fits --memory,
#     and `reboot -f` (reboot=k) makes rvm-vmm exit 0 promptly;
#   - /init exiting (kernel panic, panic=-1) makes rvm-vmm exit 0 promptly, with the
#     "kernel panicked" warning on stderr;
#   - boot-to-marker time of rvm-vmm and of `qemu-system-x86_64 -M microvm -enable-kvm` on the
#     same kernel and initramfs, RVM_BENCH_RUNS runs each (default 3), medians and their ratio.
# Needs a /dev/kvm that boots Linux (the lab's), a prebuilt rvm-vmm (RVM_VMM, else
# target/release/rvm-vmm, else target/debug/rvm-vmm) and the guest kernel (RVM_GUEST_KERNEL, else
# target/rvm-guest/vmlinux).
#
# Exit status 0 when every check passed, 1 naming each failure otherwise.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
vmlinux=${RVM_GUEST_KERNEL:-$target/rvm-guest/vmlinux}
runs=${RVM_BENCH_RUNS:-3}
boot_timeout=${RVM_BOOT_TIMEOUT:-300}
exit_timeout=${RVM_EXIT_TIMEOUT:-20}
memory=256
qemu=${QEMU:-qemu-system-x86_64}
marker=RVM-VMM-INIT-REACHED
end_marker=RVM-VMM-INIT-END

die() { echo "lab-boot: error: $*" >&2; exit 1; }
say() { echo "lab-boot: $*"; }
now_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }
secs() { printf '%d.%03d' $(($1 / 1000000)) $(($1 % 1000000 / 1000)); }

vmm=${RVM_VMM:-}
if [ -z "$vmm" ]; then
    for candidate in "$target/release/rvm-vmm" "$target/debug/rvm-vmm"; do
        if [ -x "$candidate" ]; then vmm=$candidate; break; fi
    done
fi
[ -n "$vmm" ] && [ -x "$vmm" ] || die "no rvm-vmm binary: cargo build --release -p rvm-vmm first"
[ -f "$vmlinux" ] || die "$vmlinux is missing: run guest-kernel/build on the host first"
[ -c /dev/kvm ] || die "/dev/kvm is missing"
if [ -d /sys/module/kvm_pvm ]; then
    die "/dev/kvm here is KVM-PVM, which cannot boot Linux (see LAB.md); run: tests/lab/run -- $0"
fi
say "using $vmm"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lab-boot.XXXXXX")
vm_pid=""
cleanup() {
    if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then
        kill -TERM "$vm_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# The guest's /init: report, then reboot, or exit (so the kernel panics) if asked to.
{
    echo '#!/bin/sh'
    echo 'export PATH=/bin:/sbin:/usr/bin:/usr/sbin'
    echo 'mount -t proc proc /proc'
    echo 'mount -t sysfs sysfs /sys'
    echo "echo $marker"
    echo 'echo "RVM-NPROC $(nproc)"'
    echo 'echo "RVM-MEMTOTAL $(awk '"'"'/^MemTotal:/ {print $2}'"'"' /proc/meminfo)"'
    echo 'case " $(cat /proc/cmdline) " in'
    echo "    *' rvmtest=panic '*) echo $end_marker; exit 1 ;;"
    echo "    *) echo $end_marker; reboot -f ;;"
    echo 'esac'
    echo 'echo "RVM-INIT reboot -f failed"'
} >"$tmp/init"
say "building the initramfs"
"$repo/tests/guest/busybox-initramfs" "$tmp/initramfs.img" "$tmp/init"

failures=()
fail() { failures+=("$*"); say "FAIL: $*"; }

# boot NAME KILL_AT_END CMD...: runs CMD with the console on its stdout (under `timeout` as a
# backstop; stopping it with SIGTERM, which `timeout` forwards to CMD), and sets
#   marker_us        time from start to the marker ("" if never)
#   nproc memtotal   what /init reported
#   exit_after_us    time from the end marker to CMD's exit ("" if killed or never)
#   status           CMD's exit status
boot() {
    local name=$1 kill_at_end=$2
    shift 2
    marker_us="" nproc="" memtotal="" exit_after_us="" status=""
    local end_us="" start deadline line left rc
    rm -f "$tmp/console"
    mkfifo "$tmp/console"
    start=$(now_us)
    timeout -k 5 $((boot_timeout + exit_timeout + 30)) "$@" </dev/null >"$tmp/console" \
        2>"$tmp/$name.stderr" &
    vm_pid=$!
    exec {console}<"$tmp/console"
    deadline=$((start + boot_timeout * 1000000))
    while :; do
        left=$((deadline - $(now_us)))
        if [ "$left" -le 0 ]; then
            fail "$name: deadline passed (marker: ${marker_us:-none}); stopping it"
            kill -TERM "$vm_pid" 2>/dev/null || true
            show_tail "$name" >&2
            break
        fi
        [ "$left" -ge 10000 ] || left=10000
        if IFS= read -r -t "$(secs "$left")" line <&"$console"; then
            line=${line%$'\r'}
            echo "$line" >>"$tmp/$name.console"
            case $line in
                "$marker"*)
                    marker_us=$(($(now_us) - start))
                    say "$name: marker after $(secs "$marker_us") s" ;;
                "RVM-NPROC "*) nproc=${line#RVM-NPROC } ;;
                "RVM-MEMTOTAL "*) memtotal=${line#RVM-MEMTOTAL } ;;
                # The kernel's own restart or panic line counts as the end too: the tty may
                # drop /init's last echo when the guest resets at once.
                "$end_marker"* | *"reboot: Restarting system"* | *"Kernel panic"*)
                    [ -z "$end_us" ] || continue
                    end_us=$(now_us)
                    deadline=$((end_us + exit_timeout * 1000000))
                    if [ "$kill_at_end" = yes ]; then
                        kill -TERM "$vm_pid" 2>/dev/null || true
                        break
                    fi ;;
            esac
        else
            rc=$?
            [ "$rc" -gt 128 ] && continue
            [ -n "$end_us" ] && exit_after_us=$(($(now_us) - end_us))
            break
        fi
    done
    exec {console}<&-
    status=0
    wait "$vm_pid" || status=$?
    vm_pid=""
}

show_tail() {
    echo "--- $1 console (last 30 lines)"
    tail -n 30 "$tmp/$1.console" 2>/dev/null || true
    echo "--- $1 stderr"
    tail -n 20 "$tmp/$1.stderr" 2>/dev/null || true
}

cmdline="console=ttyS0 reboot=k panic=-1"
# rvm NAME VCPUS CMDLINE [RVM-VMM FLAGS...]
rvm() {
    local name=$1 vcpus=$2 append=$3
    shift 3
    boot "$name" no "$vmm" --kernel "$vmlinux" --initrd "$tmp/initramfs.img" \
        --memory "$memory" --vcpus "$vcpus" --cmdline "$append" --console "$@"
}

# 1 and 2 vCPUs through the kernel's PVH entry, then 2 vCPUs through the 64-bit entry.
for run in 1:pvh 2:pvh 2:linux64; do
    vcpus=${run%:*} entry=${run#*:}
    name=rvm-${vcpus}cpu-$entry
    if [ "$entry" = linux64 ]; then
        rvm "$name" "$vcpus" "$cmdline" --no-pvh
    else
        rvm "$name" "$vcpus" "$cmdline"
    fi
    if [ -z "$marker_us" ]; then
        fail "$name: no marker (status $status)"
        show_tail "$name"
        continue
    fi
    [ "$nproc" = "$vcpus" ] || fail "$name: nproc is '$nproc', expected $vcpus"
    if [ -z "$memtotal" ] || [ "$memtotal" -gt $((memory * 1024)) ] \
        || [ "$memtotal" -lt $((memory * 1024 * 3 / 4)) ]; then
        fail "$name: MemTotal ${memtotal:-?} kB does not fit --memory $memory MiB"
    fi
    if [ "$status" != 0 ] || [ -z "$exit_after_us" ]; then
        fail "$name: rvm-vmm exited $status after reboot -f"
        show_tail "$name"
    else
        say "$name: nproc $nproc, MemTotal $memtotal kB, exit $status $(secs "$exit_after_us") s after reboot -f"
    fi
done

rvm rvm-panic 1 "$cmdline rvmtest=panic"
if [ -z "$marker_us" ]; then
    fail "rvm-panic: no marker (status $status)"
    show_tail rvm-panic
else
    [ "$status" = 0 ] || fail "rvm-panic: rvm-vmm exited $status after the guest's panic"
    grep -q "Kernel panic" "$tmp/rvm-panic.console" \
        || fail "rvm-panic: no 'Kernel panic' on the console"
    grep -q "panicked" "$tmp/rvm-panic.stderr" || fail "rvm-panic: no panic warning on stderr"
    if [ -n "$exit_after_us" ]; then
        say "rvm-panic: exit $status $(secs "$exit_after_us") s after /init exited"
        say "rvm-panic: stderr: $(grep panicked "$tmp/rvm-panic.stderr" | head -1)"
    fi
fi

median() {
    sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}
list() { for t in "$@"; do printf '%s ' "$(secs "$t")"; done; }
rvm_times=() qemu_times=()
if command -v "$qemu" >/dev/null; then
    for run in $(seq "$runs"); do
        boot "qemu-$run" yes "$qemu" -M microvm -enable-kvm -cpu host -m "$memory" -smp 1 \
            -nodefaults -no-user-config -nographic -serial stdio \
            -kernel "$vmlinux" -initrd "$tmp/initramfs.img" -append "$cmdline" -no-reboot
        [ -n "$marker_us" ] && qemu_times+=("$marker_us")
        rvm "rvm-bench-$run" 1 "$cmdline"
        [ -n "$marker_us" ] && rvm_times+=("$marker_us")
    done
    if [ ${#rvm_times[@]} -gt 0 ] && [ ${#qemu_times[@]} -gt 0 ]; then
        rvm_median=$(printf '%s\n' "${rvm_times[@]}" | median)
        qemu_median=$(printf '%s\n' "${qemu_times[@]}" | median)
        ratio=$(awk "BEGIN {printf \"%.2f\", $rvm_median / $qemu_median}")
        say "boot to marker, median: rvm-vmm $(secs "$rvm_median") s, qemu microvm $(secs "$qemu_median") s, ratio rvm/qemu $ratio"
        say "rvm-vmm runs (s): $(list "${rvm_times[@]}")"
        say "qemu runs (s): $(list "${qemu_times[@]}")"
    else
        fail "timing: rvm-vmm reached the marker in ${#rvm_times[@]} runs, QEMU in ${#qemu_times[@]}"
    fi
else
    say "skipping the QEMU comparison: $qemu is not installed"
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "lab-boot: FAILED:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
say "PASS"

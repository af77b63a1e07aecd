#!/bin/bash
# agent/tests/lab-agent.sh: the agent in a real guest (issue #6), booted by rvm-vmm.
#
#   agent/build-initramfs && cargo build -p rvm-agent --example lab-client -p rvm-vmm \
#       && tests/lab/run -- agent/tests/lab-agent.sh
#
# Boots target/rvm-guest/vmlinux with target/rvm-guest/initramfs.img (rvm-agent as /init), a
# busybox erofs layer disk (serial layer0, read-only) and an ext4 scratch disk (serial scratch0),
# then drives the agent with the lab-client example: echo hello (exit 0), exit 3, a missing
# command (127) and a non-executable one (126), user/cwd/env, bad specs refused, namespaces,
# Docker's capabilities and seccomp, exec/signal/list/pause/stats, SIGTERM (trapped by a
# container's init; 143 for an exec without a handler), a pod's containers in the sandbox's
# pid namespace (shareProcessNamespace), a termination message file returned with the init's
# exit, a pty session with resize (stty size,
# SIGWINCH), two containers talking over 127.0.0.1, the spec's seccomp profile, an OOM kill
# under a 32 MiB limit, and a fork bomb held by pids.max 64 while the agent keeps answering;
# finally Shutdown, which must end the VM (the VMM exits 0).
#
# RVM_AGENT_LAB_VMM picks the VMM: `rvm` (the default: rvm-vmm, RVM_VMM or
# target/debug/rvm-vmm, reached through its hybrid vsock socket), `qemu` (`qemu-system-x86_64
# -M microvm` with vhost-vsock, guest cid 3, over AF_VSOCK: the known-good peer), or `both`
# (one after the other, each on fresh disks). When the default run fails, the same scenarios
# run once more under QEMU and the verdict says whose failure it is likely to be (rvm-vmm's if
# QEMU passes); RVM_AGENT_LAB_PEER=0 skips that. A passing run costs no QEMU boot: about a
# minute in a lab, against 80 s more for `both`.
# Exit status 0 when every step passed; 1 naming the failure otherwise.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
vmlinux=${RVM_GUEST_KERNEL:-$target/rvm-guest/vmlinux}
initramfs=$target/rvm-guest/initramfs.img
client=$target/debug/examples/lab-client
vmm=${RVM_VMM:-$target/debug/rvm-vmm}
qemu=${QEMU:-qemu-system-x86_64}
vmms=${RVM_AGENT_LAB_VMM:-rvm}
peer=${RVM_AGENT_LAB_PEER:-1}
cid=3
client_timeout=${RVM_AGENT_LAB_TIMEOUT:-600}
exit_timeout=30

die() { echo "lab-agent: error: $*" >&2; exit 1; }
say() { echo "lab-agent: $*"; }

case $vmms in
    rvm | qemu) ;;
    both) vmms="rvm qemu" ;;
    *) die "RVM_AGENT_LAB_VMM=$vmms: expected rvm, qemu or both" ;;
esac
[ -f "$vmlinux" ] || die "$vmlinux is missing: run guest-kernel/build first"
[ -f "$initramfs" ] || die "$initramfs is missing: run agent/build-initramfs first"
[ -x "$client" ] || die "$client is missing: cargo build -p rvm-agent --example lab-client"
[ -c /dev/kvm ] || die "/dev/kvm is missing"
[ ! -d /sys/module/kvm_pvm ] || die "/dev/kvm is KVM-PVM (cannot boot Linux); run: tests/lab/run -- $0"
for tool in mkfs.erofs mkfs.ext4 busybox; do
    command -v "$tool" >/dev/null || die "'$tool' is missing (tools/install-deps)"
done
# qemu_missing: why QEMU microvm cannot run here, if it cannot.
qemu_missing() {
    command -v "$qemu" >/dev/null || { echo "'$qemu' is missing (tools/install-deps)"; return; }
    [ -c /dev/vhost-vsock ] || modprobe vhost_vsock 2>/dev/null || true
    [ -c /dev/vhost-vsock ] || echo "/dev/vhost-vsock is missing (modprobe vhost_vsock failed)"
}
for which in $vmms; do
    case $which in
        rvm) [ -x "$vmm" ] || die "$vmm is missing: cargo build -p rvm-vmm (or set RVM_VMM)" ;;
        qemu) why=$(qemu_missing); [ -z "$why" ] || die "$why" ;;
    esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lab-agent.XXXXXX")
vm_pid=""
cleanup() {
    if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then kill "$vm_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- the layer disk ---------------------------------------------------------------------------
rootfs=$tmp/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root,home/bob}
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000:bob:/home/bob:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nstaff:x:50:bob\nbob:x:1000:\n' >"$rootfs/etc/group"
printf '#!/bin/sh\necho no\n' >"$rootfs/etc/not-executable"
chmod 644 "$rootfs/etc/not-executable"
mkfs.erofs --quiet "$tmp/layer.img" "$rootfs" >/dev/null
say "layer disk ready: $(stat -c %s "$tmp/layer.img") bytes"

cmdline="console=ttyS0 reboot=k panic=-1${RVM_AGENT_LAB_QUIET- quiet}"

# start_vm WHICH: boots the guest under WHICH (rvm or qemu) on a fresh scratch disk, in the
# background ($vm_pid); sets $agent to what lab-client connects to.
start_vm() {
    rm -f "$tmp/scratch.img" "$tmp/console" "$tmp/vsock.sock"
    truncate -s 256M "$tmp/scratch.img"
    mkfs.ext4 -F -q "$tmp/scratch.img"
    local cmd
    case $1 in
        rvm)
            cmd=("$vmm" --kernel "$vmlinux" --initrd "$initramfs" --cmdline "$cmdline"
                --memory 512 --vcpus 2
                --disk "$tmp/layer.img,ro,serial=layer0" --disk "$tmp/scratch.img,serial=scratch0"
                --vsock "cid=$cid,uds=$tmp/vsock.sock" --console-log "$tmp/console")
            agent=$tmp/vsock.sock
            ;;
        qemu)
            # -device i8042: reboot=k's reset must reach a keyboard controller for QEMU to exit.
            cmd=("$qemu" -M microvm,acpi=off -enable-kvm -cpu host -m 512 -smp 2
                -nodefaults -no-user-config -nographic -serial "file:$tmp/console" -device i8042
                -kernel "$vmlinux" -initrd "$initramfs" -append "$cmdline" -no-reboot
                -device "vhost-vsock-device,guest-cid=$cid"
                -drive "file=$tmp/layer.img,if=none,id=layer0,format=raw,readonly=on"
                -device virtio-blk-device,drive=layer0,serial=layer0
                -drive "file=$tmp/scratch.img,if=none,id=scratch0,format=raw"
                -device virtio-blk-device,drive=scratch0,serial=scratch0)
            agent=$cid
            ;;
    esac
    say "running: ${cmd[*]}"
    timeout -k 5 $((client_timeout + exit_timeout + 60)) "${cmd[@]}" </dev/null >"$tmp/vm.out" 2>&1 &
    vm_pid=$!
}

show_console() {
    say "guest console:"; sed 's/^/guest| /' "$tmp/console" 2>/dev/null || true
    say "VMM output:"; sed 's/^/vmm| /' "$tmp/vm.out" || true
}

# wait_vm_exit WHICH: Shutdown must end the VM with status 0 within exit_timeout.
wait_vm_exit() {
    local status="" _
    for _ in $(seq $((exit_timeout * 10))); do
        if ! kill -0 "$vm_pid" 2>/dev/null; then
            status=0
            wait "$vm_pid" || status=$?
            break
        fi
        sleep 0.1
    done
    if [ -z "$status" ]; then
        say "FAIL ($1): the VM did not exit within ${exit_timeout} s of Shutdown"
        return 1
    fi
    vm_pid=""
    [ "$status" = 0 ] || { say "FAIL ($1): the VMM exited with status $status after Shutdown"; return 1; }
}

# run_scenarios WHICH: one VM under WHICH, every scenario, Shutdown; 0 when all passed.
run_scenarios() {
    local started=$SECONDS
    start_vm "$1"
    if ! timeout -k 5 "$client_timeout" "$client" "$agent" layer0 scratch0 2>&1 | sed "s/^/$1: /"; then
        show_console
        say "FAIL ($1): the lab client failed (above)"
        stop_vm
        return 1
    fi
    wait_vm_exit "$1" || { show_console; stop_vm; return 1; }
    say "$1: guest console (last lines):"
    tail -n 15 "$tmp/console" | sed 's/^/guest| /'
    say "ok ($1): every scenario passed and Shutdown ended the VM (exit 0) in $((SECONDS - started)) s"
}

stop_vm() {
    if [ -n "$vm_pid" ]; then
        kill "$vm_pid" 2>/dev/null || true
        wait "$vm_pid" 2>/dev/null || true
        vm_pid=""
    fi
}

for which in $vmms; do
    run_scenarios "$which" && continue
    if [ "$vmms" = rvm ] && [ "$peer" = 1 ]; then
        why=$(qemu_missing)
        if [ -n "$why" ]; then
            say "no run under the peer QEMU microvm: $why"
        elif run_scenarios qemu; then
            die "rvm: failed (above), while the same scenarios passed under QEMU microvm: likely rvm-vmm's failure"
        else
            die "rvm: failed (above), and under QEMU microvm too: likely the agent's or the guest's failure"
        fi
    fi
    die "$which: failed (above)"
done

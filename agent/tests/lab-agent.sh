#!/bin/bash
# agent/tests/lab-agent.sh: the agent in a real guest (issue #6), under the known-good peer VMM.
#
#   agent/build-initramfs && cargo build -p rvm-agent --example lab-client \
#       && tests/lab/run -- agent/tests/lab-agent.sh
#
# Boots target/rvm-guest/vmlinux with target/rvm-guest/initramfs.img (rvm-agent as /init) under
# `qemu-system-x86_64 -M microvm` with a vhost-vsock device (guest cid 3), a busybox erofs layer
# disk (serial layer0, read-only) and an ext4 scratch disk (serial scratch0), then drives the
# agent over AF_VSOCK with the lab-client example: echo hello (exit 0), exit 3, a missing
# command (127) and a non-executable one (126), user/cwd/env, bad specs refused, namespaces,
# Docker's capabilities and seccomp, exec/signal/list/pause/stats, an OOM kill under a 32 MiB
# limit; finally Shutdown, which must end the VM (QEMU exits 0).
# Exit status 0 when every step passed; 1 naming the failure otherwise.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
vmlinux=${RVM_GUEST_KERNEL:-$target/rvm-guest/vmlinux}
initramfs=$target/rvm-guest/initramfs.img
client=$target/debug/examples/lab-client
qemu=${QEMU:-qemu-system-x86_64}
cid=3
client_timeout=${RVM_AGENT_LAB_TIMEOUT:-600}
exit_timeout=30

die() { echo "lab-agent: error: $*" >&2; exit 1; }
say() { echo "lab-agent: $*"; }

[ -f "$vmlinux" ] || die "$vmlinux is missing: run guest-kernel/build first"
[ -f "$initramfs" ] || die "$initramfs is missing: run agent/build-initramfs first"
[ -x "$client" ] || die "$client is missing: cargo build -p rvm-agent --example lab-client"
[ -c /dev/kvm ] || die "/dev/kvm is missing"
[ ! -d /sys/module/kvm_pvm ] || die "/dev/kvm is KVM-PVM (cannot boot Linux); run: tests/lab/run -- $0"
for tool in "$qemu" mkfs.erofs mkfs.ext4 busybox; do
    command -v "$tool" >/dev/null || die "'$tool' is missing (tools/install-deps)"
done
[ -c /dev/vhost-vsock ] || modprobe vhost_vsock 2>/dev/null || true
[ -c /dev/vhost-vsock ] || die "/dev/vhost-vsock is missing (modprobe vhost_vsock failed)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lab-agent.XXXXXX")
qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then kill "$qemu_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- disks ------------------------------------------------------------------------------------
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
truncate -s 256M "$tmp/scratch.img"
mkfs.ext4 -F -q "$tmp/scratch.img"
say "disks ready: layer $(stat -c %s "$tmp/layer.img") bytes"

# --- boot -------------------------------------------------------------------------------------
cmdline="console=ttyS0 reboot=k panic=-1${RVM_AGENT_LAB_QUIET- quiet}"
# -device i8042: reboot=k's reset must reach a keyboard controller for QEMU to exit at once.
qemu_cmd=("$qemu" -M microvm,acpi=off -enable-kvm -cpu host -m 512 -smp 2
    -nodefaults -no-user-config -nographic -serial stdio -device i8042
    -kernel "$vmlinux" -initrd "$initramfs" -append "$cmdline" -no-reboot
    -device "vhost-vsock-device,guest-cid=$cid"
    -drive "file=$tmp/layer.img,if=none,id=layer0,format=raw,readonly=on"
    -device virtio-blk-device,drive=layer0,serial=layer0
    -drive "file=$tmp/scratch.img,if=none,id=scratch0,format=raw"
    -device virtio-blk-device,drive=scratch0,serial=scratch0)
say "running: ${qemu_cmd[*]}"
timeout -k 5 $((client_timeout + exit_timeout + 60)) "${qemu_cmd[@]}" </dev/null >"$tmp/console" 2>&1 &
qemu_pid=$!

show_console() { say "guest console:"; sed 's/^/guest| /' "$tmp/console"; }

if ! timeout -k 5 "$client_timeout" "$client" "$cid" layer0 scratch0; then
    show_console
    die "the lab client failed (above)"
fi

# --- Shutdown ends the VM ---------------------------------------------------------------------
qemu_status=""
for _ in $(seq $((exit_timeout * 10))); do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        qemu_status=0
        wait "$qemu_pid" || qemu_status=$?
        break
    fi
    sleep 0.1
done
qemu_pid_was=$qemu_pid
qemu_pid=""
if [ -z "$qemu_status" ]; then
    qemu_pid=$qemu_pid_was
    show_console
    die "QEMU did not exit within ${exit_timeout} s of Shutdown"
fi
[ "$qemu_status" = 0 ] || { show_console; die "QEMU exited with status $qemu_status after Shutdown"; }
say "guest console (last lines):"
tail -n 15 "$tmp/console" | sed 's/^/guest| /'
say "ok: every scenario passed and Shutdown ended the VM (QEMU exit 0)"

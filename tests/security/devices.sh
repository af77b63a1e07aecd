#!/bin/bash
# tests/security/devices.sh: a hostile tenant in a default container tries to reach the VM's own
# disks (issue 22), in the lab with the real rvm-vmm, guest kernel and rvm-agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- tests/security/devices.sh
#
# The attack: a default container has CAP_MKNOD (as in Docker), so it makes a block node for
# every virtio disk of its VM (the image's layer disks and the scratch disk that holds the
# writable layer, in a pod every container's) and reads it. It must fail twice over:
#   - a node in /dev (a tmpfs the container may make nodes in): the device filter (a cgroup BPF
#     program) refuses the open with EPERM;
#   - a node in the rootfs (/tmp): the overlay rootfs is nodev, so the open is refused (EACCES)
#     before the filter is even asked;
#   - writing to the node fails the same way.
# The legitimate path still works: /dev/null, /dev/zero, /dev/urandom and a fresh node for null.
# Binaries and guest artifacts as tests/e2e/run.sh. Exit 0 when every check passed.
set -uo pipefail
e2e_name=security-devices
command_timeout=${RVM_E2E_TIMEOUT:-300}
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4
e2e_setup_root
e2e_load_image

# One VM for every attempt (each VM costs seconds in the lab). Every line it prints is a fact
# the checks below read; "READ"/"WROTE" lines are the attack succeeding.
attack='
disks=0
for dev in /sys/block/vd*/dev; do
    [ -f "$dev" ] || continue
    name=$(basename "$(dirname "$dev")")
    number=$(cat "$dev")
    major=${number%:*} minor=${number#*:}
    disks=$((disks + 1))
    mknod "/dev/x$name" b "$major" "$minor" && echo "made /dev/x$name"
    head -c 512 "/dev/x$name" >/dev/null && echo "READ $name through /dev"
    echo overwrite 2>/dev/null >"/dev/x$name" && echo "WROTE $name through /dev"
    mknod "/tmp/x$name" b "$major" "$minor" && echo "made /tmp/x$name"
    head -c 512 "/tmp/x$name" >/dev/null && echo "READ $name through the rootfs"
done
echo "disks $disks"
mknod /dev/null2 c 1 3 && echo ok >/dev/null2 && echo "fresh null usable"
head -c 4 /dev/urandom | wc -c | sed "s/^ */urandom /"
head -c 4 /dev/zero | wc -c | sed "s/^ */zero /"
'
r run --rm busybox sh -c "$attack"
disks=$(sed -n 's/^disks //p' <<<"$out")
check "the container sees its VM's disks in /sys/block (the attack has targets)" \
    test "${disks:-0}" -ge 2
check "it may make block nodes (CAP_MKNOD, as in Docker)" \
    test "$(grep -c '^made /dev/x' <<<"$out")" -eq "${disks:-0}" -a "${disks:-0}" -ge 2
check "no disk of the VM is read or written through a node in /dev" \
    eval '! grep -E "^(READ|WROTE) .* through /dev" <<<"$out"'
check "the device filter refused the reads (EPERM)" \
    test "$(grep -c 'Operation not permitted' <<<"$err")" -ge "${disks:-1}"
check "no disk of the VM is read through a node in the rootfs (nodev)" \
    eval '! grep -E "^READ .* through the rootfs" <<<"$out"'
check "the rootfs refused the nodes' use (EACCES)" grep -q 'Permission denied' <<<"$err"
check "the standard devices still work" \
    eval 'grep -qx "fresh null usable" <<<"$out" && grep -qx "urandom 4" <<<"$out" && grep -qx "zero 4" <<<"$out"'

e2e_finish

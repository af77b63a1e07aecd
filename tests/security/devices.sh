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
#
# Then what Docker's flags mean here, bounded by the VM (two more VMs):
#   - `--privileged`: the container has every capability, no seccomp filter, /sys read-write,
#     and every device node of its VM (/dev/vda ...) but no other block device: it reads its
#     VM's own disk through /dev/vda and through a node it makes in its rootfs;
#   - `--device HOST:CONTAINER[:PERMISSIONS]` of two host loop devices (files holding a marker):
#     the container reads the marker at /dev/xvdc, writes it (the host's file shows the write),
#     cannot write /dev/xvdd given `:r`, and still cannot read the VM's other disks;
#   - a host character device is refused before anything starts (no VFIO).
# Binaries and guest artifacts as tests/e2e/run.sh. Exit 0 when every check passed.
set -uo pipefail
e2e_name=security-devices
command_timeout=${RVM_E2E_TIMEOUT:-300}
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4 losetup
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

# --privileged: Docker's meaning inside the container's own VM.
r create --privileged --name priv busybox true
check "create --privileged" test "$status" -eq 0
r inspect priv
check "inspect shows .HostConfig.Privileged true" grep -Eq '"Privileged": ?true' <<<"$out"
r rm priv
privileged='
ls -l /dev/vda | grep -q "^b" && echo "vda is a block node"
head -c 512 /dev/vda | wc -c | sed "s/^ */read vda /"
number=$(cat /sys/block/vda/dev)
mknod /tmp/vda b "${number%:*}" "${number#*:}" && head -c 512 /tmp/vda | wc -c | sed "s/^ */read rootfs node /"
for node in $(find /dev -type b); do case ${node##*/} in vd*|loop*|ram*) ;; *) echo "OTHER BLOCK $node" ;; esac; done
test -e /dev/console || echo "no console"
grep "^CapEff:" /proc/self/status
grep "^Seccomp:" /proc/self/status
grep " /sys sysfs " /proc/mounts | grep -q "[ ,]rw[ ,]" && echo "sys rw"
'
r run --rm --privileged busybox sh -c "$privileged"
check "--privileged: /dev holds the VM's disks" grep -qx "vda is a block node" <<<"$out"
check "--privileged: the container reads its VM's disk through /dev/vda" \
    grep -qx "read vda 512" <<<"$out"
check "--privileged: a node it makes in its rootfs works (no nodev)" \
    grep -qx "read rootfs node 512" <<<"$out"
check "--privileged: no block device but the VM's own disks" eval '! grep -q "^OTHER BLOCK" <<<"$out"'
check "--privileged: the console is not copied" grep -qx "no console" <<<"$out"
check "--privileged: every capability" grep -qx "CapEff:.*000001ffffffffff" <<<"$out"
check "--privileged: no seccomp filter" grep -qx "Seccomp:.0" <<<"$out"
check "--privileged: /sys is read-write" grep -qx "sys rw" <<<"$out"

# --device: two host loop devices, one writable, one given read-only.
modprobe loop 2>/dev/null
loop_rw='' loop_ro=''
e2e_extra_cleanup() {
    for loop in $loop_rw $loop_ro; do losetup -d "$loop" 2>/dev/null; done
}
for name in rw ro; do
    printf 'rvm-device-marker-%s' "$name" >"$tmp/$name.img"
    truncate -s 1M "$tmp/$name.img"
done
loop_rw=$(losetup -f --show "$tmp/rw.img")
loop_ro=$(losetup -f --show "$tmp/ro.img")
check "the lab has loop devices ($loop_rw, $loop_ro)" test -b "$loop_rw" -a -b "$loop_ro"
devices='
head -c 20 /dev/xvdc; echo
head -c 20 /dev/xvdd; echo
printf guest-wrote >/dev/xvdc && sync && echo "wrote xvdc"
printf guest-wrote 2>/dev/null >/dev/xvdd && echo "WROTE xvdd"
number=$(cat /sys/block/vda/dev)
mknod /dev/vda b "${number%:*}" "${number#*:}"
head -c 512 /dev/vda >/dev/null && echo "READ vda"
ls -l /dev/xvdc /dev/xvdd | cut -c1 | tr -d "\n"; echo " types"
'
r run --rm --device "$loop_rw:/dev/xvdc" --device "$loop_ro:/dev/xvdd:r" busybox sh -c "$devices"
check "--device: the container reads the marker at /dev/xvdc" grep -qx "rvm-device-marker-rw" <<<"$out"
check "--device :r: the container reads /dev/xvdd" grep -qx "rvm-device-marker-ro" <<<"$out"
check "--device: /dev/xvdc and /dev/xvdd are block nodes" grep -qx "bb types" <<<"$out"
check "--device: the container writes /dev/xvdc" grep -qx "wrote xvdc" <<<"$out"
# The VMM has ended with the container; what it wrote to the loop device reaches the file.
sync
check "--device: the write reached the host's device" \
    test "$(head -c 11 "$tmp/rw.img")" = guest-wrote
check "--device :r: a write to /dev/xvdd fails" eval '! grep -q "^WROTE xvdd" <<<"$out"'
check "--device :r: the host's device is unchanged" \
    test "$(head -c 20 "$tmp/ro.img")" = rvm-device-marker-ro
check "--device: the VM's other disks stay out of reach" eval '! grep -q "^READ vda" <<<"$out"'
r run --rm --device /dev/null busybox true
check "--device of a host character device is refused (125, naming it)" \
    eval 'test "$status" -eq 125 && grep -q "/dev/null.*VFIO" <<<"$err"'

e2e_finish

#!/bin/bash
# vmm/tests/lab-block.sh: in the lab, rvm-vmm's virtio-blk with four disks at once, each found by
# its serial under /sys/block/vd*/serial:
#   layer0  an erofs image (mkfs.erofs of a host directory), read-only: the guest mounts it and
#           the sha256 of every file matches the host's; the raw device reads back the image's
#           sha256; writing to the device fails;
#   scratch a read-write ext4 disk: the guest writes files, syncs and reboots; the host (e2fsck
#           replays the journal, debugfs reads the files) sees the same bytes;
#   raw-ro, raw-rw  raw images with a marker in a known sector, read back through the device;
#           the guest overwrites a sector of raw-rw and the host finds it in the file.
# Then disk slots: a second VM boots with one empty slot (--disk-slots 1, --api, under
# --seccomp enforce); the host (lab-block-slots-host.py) attaches a raw image while the guest
# polls the slot's size, detaches it, and attaches an erofs layer the guest mounts.
#   cargo build --release -p rvm-vmm && tests/lab/run -- vmm/tests/lab-block.sh
source "$(dirname "$0")/lab-lib.sh"

for tool in mkfs.erofs mkfs.ext4 debugfs e2fsck sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (tools/install-deps)"
done

# The erofs layer: a few files, one of several MiB, one in a subdirectory.
layer_dir=$tmp/layer
mkdir -p "$layer_dir/etc/sub"
echo "hello from the layer" >"$layer_dir/hello.txt"
head -c 6291456 /dev/urandom >"$layer_dir/big.bin"
head -c 12345 /dev/urandom >"$layer_dir/etc/sub/odd.bin"
mkfs.erofs --quiet "$tmp/layer.erofs" "$layer_dir"
layer_sha=$(sha256sum "$tmp/layer.erofs" | cut -d' ' -f1)
layer_size=$(stat -c %s "$tmp/layer.erofs")

# The scratch disk.
truncate -s 64M "$tmp/scratch.ext4"
mkfs.ext4 -F -q "$tmp/scratch.ext4"

# Raw disks: sector 3 of each holds a marker.
for raw in raw-ro raw-rw; do
    truncate -s 1M "$tmp/$raw.img"
    printf 'MARKER-%s' "$raw" | dd of="$tmp/$raw.img" bs=512 seek=3 conv=notrunc status=none
done

{
    echo 'dev_of() { for s in /sys/block/vd*/serial; do [ "$(cat "$s")" = "$1" ] && { d=${s%/serial}; echo /dev/${d##*/}; return; }; done; }'
    echo 'for s in /sys/block/vd*/serial; do echo "SERIAL $(cat "$s")"; done'
    echo 'layer=$(dev_of layer0); echo "LAYER-DEV $layer RO=$(cat /sys/block/${layer#/dev/}/ro)"'
    echo "echo \"LAYER-RAW \$(head -c $layer_size \$layer | sha256sum | cut -d' ' -f1)\""
    echo 'mkdir -p /mnt/layer /mnt/scratch'
    echo 'mount -t erofs -o ro $layer /mnt/layer && echo LAYER-MOUNTED'
    echo 'cd /mnt/layer'
    echo 'for f in hello.txt big.bin etc/sub/odd.bin; do echo "LAYER-SHA $f $(sha256sum $f | cut -d" " -f1)"; done'
    echo 'cd /'
    echo 'if echo x >$layer 2>/dev/null; then echo LAYER-WRITE-SUCCEEDED; else echo LAYER-WRITE-FAILED; fi'
    echo 'if echo x >/mnt/layer/new 2>/dev/null; then echo LAYER-FS-WRITE-SUCCEEDED; else echo LAYER-FS-WRITE-FAILED; fi'
    echo 'scratch=$(dev_of scratch); echo "SCRATCH-DEV $scratch RO=$(cat /sys/block/${scratch#/dev/}/ro)"'
    echo 'mount -t ext4 $scratch /mnt/scratch && echo SCRATCH-MOUNTED'
    echo 'echo "written by the guest" >/mnt/scratch/hello.txt'
    echo 'head -c 3145728 /dev/urandom >/mnt/scratch/big.bin'
    echo 'echo "SCRATCH-SHA $(sha256sum /mnt/scratch/big.bin | cut -d" " -f1)"'
    echo 'sync && echo SCRATCH-SYNCED'
    echo 'for raw in raw-ro raw-rw; do d=$(dev_of $raw); echo "RAW $raw $(dd if=$d bs=512 skip=3 count=1 2>/dev/null | head -c 13)"; done'
    echo 'rw=$(dev_of raw-rw); printf GUEST-WROTE-THIS | dd of=$rw bs=512 seek=7 conv=notrunc 2>/dev/null; sync; echo RAW-WRITTEN'
} >"$tmp/block.sh"

status=0
guest block "$tmp/block.sh" -- --memory 256 \
    --disk "$tmp/layer.erofs,ro,serial=layer0" \
    --disk "$tmp/scratch.ext4,serial=scratch" \
    --disk "$tmp/raw-ro.img,ro,serial=raw-ro" \
    --disk "$tmp/raw-rw.img,serial=raw-rw" || status=$?
[ "$status" = 0 ] || fail "rvm-vmm exited $status"

for serial in layer0 scratch raw-ro raw-rw; do
    check block "^SERIAL $serial[[:space:]]*\$" "the guest finds the disk with serial $serial"
done
check block '^LAYER-DEV /dev/vd[a-z] RO=1' "the layer disk is read-only in the guest"
check block "^LAYER-RAW $layer_sha" "the raw layer device reads back the image (sha256)"
check block '^LAYER-MOUNTED' "the guest mounts the erofs layer"
for f in hello.txt big.bin etc/sub/odd.bin; do
    sha=$(sha256sum "$layer_dir/$f" | cut -d' ' -f1)
    check block "^LAYER-SHA $f $sha" "erofs file $f has the host's sha256"
done
check block '^LAYER-WRITE-FAILED' "writing to the read-only device fails"
check block '^LAYER-FS-WRITE-FAILED' "writing to the mounted erofs fails"
check block '^SCRATCH-DEV /dev/vd[a-z] RO=0' "the scratch disk is read-write in the guest"
check block '^SCRATCH-MOUNTED' "the guest mounts the ext4 scratch disk"
check block '^SCRATCH-SYNCED' "sync on the scratch disk succeeds"
check block '^RAW raw-ro MARKER-raw-ro' "sector 3 of raw-ro reads back its marker"
check block '^RAW raw-rw MARKER-raw-rw' "sector 3 of raw-rw reads back its marker"

# The host's view after the guest rebooted: the journal replayed, the files the guest wrote.
e2fsck -fy "$tmp/scratch.ext4" >"$tmp/e2fsck.log" 2>&1 || [ $? -le 1 ] || fail "e2fsck of the scratch disk failed: $(tail -n 5 "$tmp/e2fsck.log")"
if e2fsck -fn "$tmp/scratch.ext4" >"$tmp/e2fsck2.log" 2>&1; then
    say "ok: the scratch file system is clean"
else
    fail "the scratch file system is not clean after journal replay: $(tail -n 5 "$tmp/e2fsck2.log")"
fi
hello=$(debugfs -R 'cat /hello.txt' "$tmp/scratch.ext4" 2>/dev/null || true)
if [ "$hello" = "written by the guest" ]; then
    say "ok: the host reads /hello.txt the guest wrote"
else
    fail "the host reads /hello.txt as '$hello'"
fi
debugfs -R "dump /big.bin $tmp/big.out" "$tmp/scratch.ext4" >/dev/null 2>&1 || true
big_sha=$(sha256sum "$tmp/big.out" 2>/dev/null | cut -d' ' -f1)
check block "^SCRATCH-SHA ${big_sha:-none}[[:space:]]*\$" "the host's copy of /big.bin has the sha256 the guest computed"
raw_written=$(dd if="$tmp/raw-rw.img" bs=512 skip=7 count=1 status=none | head -c 16)
if [ "$raw_written" = GUEST-WROTE-THIS ]; then
    say "ok: the host finds the sector the guest wrote to raw-rw"
else
    fail "sector 7 of raw-rw.img holds '$raw_written'"
fi

# Disk slots filled while the guest runs. slot1.img: a raw image starting with a marker;
# slot2.erofs: a layer with one file. The guest finds the empty slot (size 0), waits for each
# change of size, and drops the device's page cache before reading a re-used slot (it still
# holds the first image's pages).
printf 'SLOT-IMAGE-ONE' >"$tmp/slot1.img"
truncate -s 1M "$tmp/slot1.img"
mkdir -p "$tmp/slot-layer"
echo "hello from slot two" >"$tmp/slot-layer/hello.txt"
mkfs.erofs --quiet "$tmp/slot2.erofs" "$tmp/slot-layer"
slot2_sectors=$(( $(stat -c %s "$tmp/slot2.erofs") / 512 ))
cat >"$tmp/slots.sh" <<'GUEST'
slot=
for d in /sys/block/vd*; do [ "$(cat "$d/size")" = 0 ] && { slot=${d##*/}; break; }; done
size() { cat /sys/block/$slot/size; }
serial() { cat /sys/block/$slot/serial; }
until_attached() { i=0; while [ "$(size)" = 0 ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i + 1)); done; }
until_detached() { i=0; while [ "$(size)" != 0 ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i + 1)); done; }
echo "SLOT-DEV /dev/$slot SIZE=$(size) RO=$(cat /sys/block/$slot/ro) SERIAL=[$(serial)]"
echo SLOT-WAITING
until_attached
echo "SLOT-SIZE $(size)"
echo "SLOT-DATA $(dd if=/dev/$slot bs=512 count=1 2>/dev/null | head -c 14)"
echo "SLOT-SERIAL $(serial)"
echo "SLOT-DMESG $(dmesg | grep "$slot: detected capacity change" | tail -n 1)"
echo SLOT-READ
until_detached
echo "SLOT-EMPTY SIZE=$(size) SERIAL=[$(serial)] BYTES=$(dd if=/dev/$slot bs=512 count=1 2>/dev/null | wc -c)"
until_attached
blockdev --flushbufs /dev/$slot
mkdir -p /mnt/slot
mount -t erofs -o ro /dev/$slot /mnt/slot && echo SLOT-MOUNTED
echo "SLOT-FILE $(cat /mnt/slot/hello.txt)"
echo "SLOT-SERIAL2 $(serial)"
umount /mnt/slot
GUEST

# Unix sockets cannot live on the lab's shared repository filesystem: use its private /tmp.
slot_sockdir=$(mktemp -d /tmp/lab-block-slots.XXXXXX)
cleanup_hooks+=("rm -rf $slot_sockdir")
slot_sock=$slot_sockdir/api.sock
python3 "$repo/vmm/tests/lab-block-slots-host.py" "$slot_sock" "$tmp/slots.console" \
    "$tmp/slot1.img" "$tmp/slot2.erofs" >"$tmp/slots-host.log" 2>&1 &
slot_host_pid=$!
cleanup_hooks+=("kill $slot_host_pid 2>/dev/null")
status=0
RUST_LOG=${RUST_LOG:-rvm_vmm::api=debug} guest slots "$tmp/slots.sh" -- --memory 256 \
    --disk-slots 1 --api "$slot_sock" --seccomp enforce || status=$?
[ "$status" = 0 ] || fail "slots: rvm-vmm exited $status: $(tail -n 5 "$tmp/slots.stderr")"
# The host side is done long before the guest, unless the guest never reached a step.
for _ in $(seq 100); do kill -0 "$slot_host_pid" 2>/dev/null || break; sleep 0.1; done
kill "$slot_host_pid" 2>/dev/null || true
host_status=0
wait "$slot_host_pid" || host_status=$?
sed 's/^/slots host: /' "$tmp/slots-host.log"
[ "$host_status" = 0 ] || fail "slots: the host side did not finish (exit $host_status)"
slot_host_check() {
    if grep -qE -- "$1" "$tmp/slots-host.log"; then say "ok: $2"; else fail "$2 (no /$1/ in the host log)"; fi
}
slot_host_check '^HOST-GARBAGE ERR unknown command' "a garbage API line gets an ERR reply"
slot_host_check '^HOST-ATTACH OK 0 2048$' "ATTACH answers the slot and the image's 2048 sectors"
slot_host_check '^HOST-ATTACH-AGAIN ERR slot 0 is already attached$' "a second ATTACH to the slot is refused"
slot_host_check '^HOST-DETACH OK 0$' "DETACH answers OK"
slot_host_check "^HOST-ATTACH2 OK 0 $slot2_sectors\$" "the slot takes a second image after DETACH"
check slots '^SLOT-DEV /dev/vd[a-z] SIZE=0 RO=1 SERIAL=\[\]' "the slot boots empty, read-only, without a serial"
check slots '^SLOT-SIZE 2048' "the guest sees the attached image's capacity"
check slots '^SLOT-DATA SLOT-IMAGE-ONE' "the guest reads the attached image's first bytes"
check slots '^SLOT-SERIAL slot-one' "the guest reads the serial given with ATTACH"
check slots '^SLOT-DMESG .*detected capacity change from 0 to 2048' "the guest kernel saw the capacity change"
check slots '^SLOT-EMPTY SIZE=0 SERIAL=\[\] BYTES=0' "after DETACH the slot is empty again"
check slots '^SLOT-MOUNTED' "the guest mounts the erofs layer attached to the re-used slot"
check slots '^SLOT-FILE hello from slot two' "the layer's file reads back"
check slots '^SLOT-SERIAL2 slot-two' "the re-used slot has the second serial"
# The VMM may not unlink under its seccomp filter: its socket file stays for its owner (the
# runtime removes the VM's run directory), and is replaced as stale by the next VMM bound there.
[ -S "$slot_sock" ] || fail "slots: the API socket $slot_sock is gone (the VMM unlinked it?)"

# Bad input: a missing image exits 2 naming the flag and the path.
bad_status=0
"$vmm" --kernel "$vmlinux" --disk "$tmp/missing.img,ro" >/dev/null 2>"$tmp/bad.stderr" || bad_status=$?
if [ "$bad_status" = 2 ] && grep -q -- "--disk $tmp/missing.img" "$tmp/bad.stderr"; then
    say "ok: a missing disk image exits 2 naming --disk and the path"
else
    fail "missing disk image: exit $bad_status, stderr: $(cat "$tmp/bad.stderr")"
fi
finish

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

# Bad input: a missing image exits 2 naming the flag and the path.
bad_status=0
"$vmm" --kernel "$vmlinux" --disk "$tmp/missing.img,ro" >/dev/null 2>"$tmp/bad.stderr" || bad_status=$?
if [ "$bad_status" = 2 ] && grep -q -- "--disk $tmp/missing.img" "$tmp/bad.stderr"; then
    say "ok: a missing disk image exits 2 naming --disk and the path"
else
    fail "missing disk image: exit $bad_status, stderr: $(cat "$tmp/bad.stderr")"
fi
finish

#!/bin/bash
# vmm/tests/lab-rng.sh: in the lab, the guest finds the virtio entropy device rvm-vmm always adds,
# the kernel selects it as its hardware RNG, and reading /dev/hwrng returns bytes that differ
# between two reads.
#   cargo build --release -p rvm-vmm && tests/lab/run -- vmm/tests/lab-rng.sh
source "$(dirname "$0")/lab-lib.sh"

cat >"$tmp/rng.sh" <<'GUEST'
echo "RNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current)"
a=$(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')
b=$(head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')
echo "RNG-LEN ${#a}"
[ "$a" != "$b" ] && echo "RNG-DIFFERS"
head -c 1048576 /dev/hwrng | wc -c | sed 's/^/RNG-MIB /'
GUEST
status=0
guest rng "$tmp/rng.sh" -- --memory 128 || status=$?
[ "$status" = 0 ] || fail "rvm-vmm exited $status"
check rng '^RNG-CURRENT virtio_rng' "the kernel uses virtio_rng as its hardware RNG"
check rng '^RNG-LEN 64' "32 bytes read from /dev/hwrng"
check rng '^RNG-DIFFERS' "two reads differ"
check rng '^RNG-MIB 1048576' "1 MiB read from /dev/hwrng"
finish

# vmm/tests/lab-lib.sh: shared by the in-lab device tests (source it). Finds rvm-vmm and the guest
# kernel, makes a scratch directory, and boots a busybox guest whose /init runs a test script:
#
#   guest NAME SCRIPT [EXTRA:GUEST_PATH...] -- [RVM-VMM FLAGS...]
#
# SCRIPT is shell run by the guest's /init after /proc, /sys and /dev are mounted; its output
# lands in $tmp/NAME.console, and the guest reboots when it ends. `guest` returns rvm-vmm's exit
# status (124 if it ran past $guest_timeout seconds). `check NAME PATTERN WHAT` greps the
# console and records a failure naming WHAT; `finish` prints the verdict and exits.
set -euo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
vmlinux=${RVM_GUEST_KERNEL:-$target/rvm-guest/vmlinux}
guest_timeout=${RVM_GUEST_TIMEOUT:-240}
test_name=$(basename "$0" .sh)

say() { echo "$test_name: $*"; }
die() { echo "$test_name: error: $*" >&2; exit 1; }

vmm=${RVM_VMM:-}
if [ -z "$vmm" ]; then
    for candidate in "$target/release/rvm-vmm" "$target/debug/rvm-vmm"; do
        if [ -x "$candidate" ]; then vmm=$candidate; break; fi
    done
fi
[ -n "$vmm" ] && [ -x "$vmm" ] || die "no rvm-vmm binary: cargo build --release -p rvm-vmm first"
[ -f "$vmlinux" ] || die "$vmlinux is missing: run guest-kernel/build on the host first"
[ -c /dev/kvm ] || die "/dev/kvm is missing"
[ ! -d /sys/module/kvm_pvm ] || die "/dev/kvm here is KVM-PVM, which cannot boot Linux; run: tests/lab/run -- $0"

# Inside the repository: the lab's /tmp is its own tmpfs, and tests may share files with the host.
mkdir -p "$target/tmp"
tmp=$(mktemp -d "$target/tmp/$test_name.XXXXXX")
cleanup_hooks=()
cleanup() {
    local hook
    for hook in "${cleanup_hooks[@]}"; do eval "$hook" || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

failures=()
fail() { failures+=("$*"); say "FAIL: $*"; }

guest() {
    local name=$1 script=$2
    shift 2
    local extras=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do extras+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    {
        echo '#!/bin/sh'
        echo 'export PATH=/bin:/sbin:/usr/bin:/usr/sbin'
        echo 'mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev'
        echo 'echo GUEST-TEST-START'
        cat "$script"
        echo 'echo GUEST-TEST-END'
        echo 'sync; reboot -f'
    } >"$tmp/$name.init"
    "$repo/tests/guest/busybox-initramfs" "$tmp/$name.img" "$tmp/$name.init" "${extras[@]}" >/dev/null
    local status=0
    timeout -k 5 "$guest_timeout" "$vmm" --kernel "$vmlinux" --initrd "$tmp/$name.img" \
        --cmdline "console=ttyS0 reboot=k panic=-1 quiet" --console-log "$tmp/$name.console" \
        "$@" </dev/null >"$tmp/$name.stdout" 2>"$tmp/$name.stderr" || status=$?
    if ! grep -q GUEST-TEST-END "$tmp/$name.console" 2>/dev/null; then
        fail "$name: the guest did not finish its script (rvm-vmm exit $status)"
        echo "--- $name console (last 40 lines)"; tail -n 40 "$tmp/$name.console" 2>/dev/null || true
        echo "--- $name stderr"; tail -n 20 "$tmp/$name.stderr" || true
    fi
    return "$status"
}

check() {
    local name=$1 pattern=$2 what=$3
    if grep -qE -- "$pattern" "$tmp/$name.console" 2>/dev/null; then
        say "ok: $what"
    else
        fail "$what (no /$pattern/ on the $name console)"
    fi
}

finish() {
    if [ ${#failures[@]} -eq 0 ]; then
        say "all checks passed"
        exit 0
    fi
    say "${#failures[@]} check(s) failed:"
    printf '  %s\n' "${failures[@]}"
    exit 1
}

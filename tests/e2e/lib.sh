# shellcheck shell=bash
# tests/e2e/lib.sh: the setup the lab's end-to-end scripts share (tests/e2e/*.sh,
# shim/tests/lab-containerd.sh, shim/tests/lab-cri.sh, which also start containerd with
# e2e_start_containerd). Sourced, never run; defines functions and a few variables and
# runs nothing else.
#
# Use, at the top of a script (after `set -uo pipefail`):
#
#   e2e_name=e2e-run                      # prefix of say/die lines and of the temporary directory
#   command_timeout=${RVM_E2E_TIMEOUT:-600}   # seconds each `r` may take (the script's own default)
#   # shellcheck source-path=SCRIPTDIR source=lib.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1
#   e2e_find_rvm                          # sets $rvm
#   e2e_require_lab                       # guest artifacts, a /dev/kvm that boots Linux
#   e2e_require_tools mkfs.erofs mkfs.ext4 ...
#   e2e_setup_root                        # sets $tmp and $root, cleans both up on exit
#   e2e_load_image                        # sets $image, loaded into $root
#   r run --rm busybox echo hello
#   check "echo hello prints hello" test "$status" -eq 0 -a "$out" = hello
#   ...
#   e2e_finish                            # last line: the script's exit status
#
# What it owns:
#   - exports LC_ALL=C and RVM_GUEST_DIR (else $target/rvm-guest); sets $repo (the checkout) and
#     $target (CARGO_TARGET_DIR, else $repo/target, made absolute);
#   - die MESSAGE (to stderr, exit 1) and say MESSAGE, both prefixed with $e2e_name;
#   - e2e_find_binary NAME PACKAGE OVERRIDE: $e2e_bin = OVERRIDE, else $target/debug/NAME, else
#     $target/release/NAME (debug first: CI builds debug), with rvm-vmm beside it, or dies
#     naming the cargo PACKAGE to build; e2e_find_rvm: the same for rvm (RVM_BIN), into $rvm;
#   - e2e_require_lab: vmlinux and initramfs.img in RVM_GUEST_DIR, /dev/kvm, not KVM-PVM;
#   - e2e_require_tools TOOL...: dies naming the first TOOL not on PATH;
#   - e2e_setup_root: $tmp (a new directory under TMPDIR, else /tmp) and $root=$tmp/root, with an
#     EXIT trap that calls the script's e2e_extra_cleanup (if it defines one: a listener to kill,
#     a tmux server...), then `rm -f`s every container of $root, then deletes $tmp;
#   - fail/ok NAME: print `FAIL NAME (N s)` / `ok   NAME (N s)` (N: $SECONDS; the suite greps the
#     lines that start with FAIL) and count failures in $failures;
#   - r ARGS...: rvm --root $root ARGS under `timeout $command_timeout`; stdout in $out (and the
#     file $tmp/out), stderr in $err ($tmp/err), exit status in $status;
#   - check NAME CMD...: ok NAME if CMD succeeds, else FAIL NAME with $status, $out and $err;
#   - e2e_load_image: $image = RVM_E2E_IMAGE, else a busybox OCI archive tools/busybox-image
#     writes into $tmp; `rvm load`s it into $root or dies;
#   - e2e_finish: says how many checks failed; returns 0 only when none did.

: "${e2e_name:?set e2e_name before sourcing tests/e2e/lib.sh}"
export LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export RVM_GUEST_DIR=${RVM_GUEST_DIR:-$target/rvm-guest}
failures=0
status=-
out=
err=

die() { echo "$e2e_name: error: $*" >&2; exit 1; }
say() { echo "$e2e_name: $*"; }

# e2e_find_binary NAME PACKAGE OVERRIDE: sets $e2e_bin (see the header), or dies.
e2e_find_binary() {
    local name=$1 package=$2 found=$3 candidate
    if [ -z "$found" ]; then
        for candidate in "$target/debug/$name" "$target/release/$name"; do
            if [ -x "$candidate" ]; then found=$candidate; break; fi
        done
    fi
    if [ -z "$found" ] || [ ! -x "$found" ]; then
        die "no $name binary: cargo build -p $package -p rvm-vmm first"
    fi
    [ -x "$(dirname "$found")/rvm-vmm" ] || die "no rvm-vmm beside $found: cargo build -p rvm-vmm"
    e2e_bin=$found
}

# e2e_find_rvm: sets $rvm (RVM_BIN, else target/debug/rvm, else target/release/rvm).
e2e_find_rvm() {
    e2e_find_binary rvm rvm-cli "${RVM_BIN:-}"
    rvm=$e2e_bin
}

e2e_require_lab() {
    local file
    for file in vmlinux initramfs.img; do
        [ -f "$RVM_GUEST_DIR/$file" ] || die "$RVM_GUEST_DIR/$file is missing (guest-kernel/build, agent/build-initramfs)"
    done
    [ -c /dev/kvm ] || die "/dev/kvm is missing"
    [ ! -d /sys/module/kvm_pvm ] || die "/dev/kvm is KVM-PVM (cannot boot Linux); run: tests/lab/run -- $0"
}

e2e_require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "'$tool' is missing (tools/install-deps)"
    done
}

# e2e_require_tun: /dev/net/tun, for the VMs' TAPs (the lab's kernel may need the module loaded).
e2e_require_tun() {
    if [ ! -c /dev/net/tun ]; then
        modprobe tun 2>/dev/null
        [ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
    fi
    [ -c /dev/net/tun ] || die "/dev/net/tun is missing and cannot be made"
}

# until_ok SECONDS CMD...: runs CMD until it succeeds or the deadline passes.
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

e2e_setup_root() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$e2e_name.XXXXXX") || die "cannot create a temporary directory"
    root=$tmp/root
    trap e2e_cleanup EXIT
}

e2e_cleanup() {
    if declare -F e2e_extra_cleanup >/dev/null; then
        e2e_extra_cleanup
    fi
    # Whatever a failed check left running: the VMMs and monitors of this root only.
    if [ -d "$root/containers" ]; then
        "$rvm" --root "$root" ps -aq 2>/dev/null | while read -r id; do
            timeout 60 "$rvm" --root "$root" rm -f "$id" >/dev/null 2>&1 || true
        done
    fi
    rm -rf "$tmp"
}

fail() { echo "FAIL $* (${SECONDS} s)"; failures=$((failures + 1)); }
ok() { echo "ok   $* (${SECONDS} s)"; }

# r ARGS...: runs rvm with this root; output in $out/$err, status in $status.
r() {
    timeout "${command_timeout:?}" "$rvm" --root "$root" "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

# check NAME CMD...: prints ok/FAIL, with the last command's status and output on failure.
check() {
    local name=$1
    shift
    if "$@"; then
        ok "$name"
    else
        fail "$name (status $status, stdout: ${out:0:400}, stderr: ${err:0:500})"
        return 1
    fi
}

e2e_load_image() {
    image=${RVM_E2E_IMAGE:-}
    if [ -z "$image" ]; then
        [ -x "$repo/tools/busybox-image" ] || die "tools/busybox-image is missing; set RVM_E2E_IMAGE to a busybox OCI archive"
        image=$tmp/busybox-oci.tar
        "$repo/tools/busybox-image" "$image" >/dev/null || die "tools/busybox-image failed"
    fi
    r load -i "$image"
    [ "$status" -eq 0 ] || die "rvm load -i $image failed ($status): $err"
    say "loaded $image into $root"
}

e2e_finish() {
    if [ "$failures" -eq 0 ]; then
        say "all checks passed"
    else
        say "$failures check(s) failed"
    fi
    [ "$failures" -eq 0 ]
}

# e2e_start_containerd BIN_DIR CONFIG SOCKET LOG: starts containerd with BIN_DIR first on its
# PATH (where it finds our shim), its output in LOG, and waits until it answers on SOCKET; sets
# containerd_pid (for the caller's cleanup). Dies with LOG's tail if it exits or stays silent.
e2e_start_containerd() {
    local bin_dir=$1 config=$2 socket=$3 log=$4
    PATH=$bin_dir:$PATH containerd --config "$config" --log-level debug >"$log" 2>&1 &
    containerd_pid=$!
    for _ in $(seq 100); do
        ctr --address "$socket" version >/dev/null 2>&1 && return 0
        kill -0 "$containerd_pid" 2>/dev/null || { tail -20 "$log"; die "containerd exited"; }
        sleep 0.2
    done
    tail -20 "$log"
    die "containerd did not answer on $socket"
}

#!/bin/bash
# shim/tests/lab-containerd.sh: containerd-shim-rvm-v1 under a real containerd (Debian's), in the
# lab (issue #9):
#
#   cargo build -p containerd-shim-rvm-v1 -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- shim/tests/lab-containerd.sh
#
# Starts containerd with its own root, state, config and socket under a temporary directory, with
# the shim on its PATH; imports the busybox OCI archive of tools/busybox-image; then:
#   - `ctr run --rm --runtime io.containerd.rvm.v1 IMG t1 echo hello` prints hello;
#   - `sh -c 'exit 3'` exits 3;
#   - a detached task: `ctr task exec` prints its output, `ctr task ps` lists its processes,
#     `ctr task metrics` shows cgroup v2 counters, `ctr task pause`/`resume` change its status,
#     `ctr task kill` ends it with SIGTERM's status, `ctr task delete` removes it;
#   - faults: the VMM killed (kill -9) stops the task with 137; the shim killed takes its VMM
#     with it and containerd cleans up;
#   - the layer cache prunes itself: after `ctr image rm --sync` removed the image's snapshots,
#     the next task (of the image imported again) leaves their disks pruned and its own cached;
#   - afterwards no rvm-vmm and no shim process is left, and no task files.
# Binaries: SHIM_BIN (else target/debug, else target/release) with rvm-vmm beside it; guest
# artifacts in RVM_GUEST_DIR (else target/rvm-guest). die/say, the binary and host checks, fail/ok
# and check come from tests/e2e/lib.sh; ctr (c) and containerd are this script's own.
# Exit status 0 when every check passed.
set -uo pipefail
e2e_name=lab-containerd
# shellcheck source-path=SCRIPTDIR source=../../tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../tests/e2e/lib.sh" || exit 1
runtime=io.containerd.rvm.v1
image=docker.io/library/busybox:latest

e2e_find_binary containerd-shim-rvm-v1 containerd-shim-rvm-v1 "${SHIM_BIN:-}"
shim=$e2e_bin
e2e_require_lab
e2e_require_tools containerd ctr mkfs.erofs mkfs.ext4
# The overlayfs snapshotter needs the overlay file system.
grep -qw overlay /proc/filesystems || modprobe overlay || die "no overlay file system"

# Sockets cannot be bound on the 9p-shared repository: everything lives in the lab's /tmp.
tmp=$(mktemp -d /tmp/lab-containerd.XXXXXX)
socket=$tmp/containerd.sock
export RVM_ROOT=$tmp/rvm
mkdir -p "$tmp/bin" "$RVM_ROOT"
# Copies on the lab's tmpfs: containerd gives `shim delete` 5 s, and a debug binary read over the
# 9p share of a busy lab can take longer than that to start. rvm-vmm goes beside the shim, where
# the shim looks for it.
cp "$shim" "$tmp/bin/containerd-shim-rvm-v1"
cp "$(dirname "$shim")/rvm-vmm" "$tmp/bin/rvm-vmm"
cat >"$tmp/config.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$socket"
[ttrpc]
  address = "$socket.ttrpc"
TOML

containerd_pid=
cleanup() {
    if [ -n "$containerd_pid" ]; then
        kill "$containerd_pid" 2>/dev/null
        wait "$containerd_pid" 2>/dev/null
    fi
    # Whatever a failed check left running: this test's shims and VMMs only.
    pkill -KILL -f "$tmp/" 2>/dev/null
    mkdir -p "$target/tmp"
    cp "$tmp/containerd.log" "$target/tmp/lab-containerd.log" 2>/dev/null
    umount -R "$tmp/root" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# c ARGS...: runs ctr against this containerd; output in $out/$err, status in $status.
c() {
    timeout 300 ctr --address "$socket" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

# --- containerd --------------------------------------------------------------------------------
e2e_start_containerd "$tmp/bin" "$tmp/config.toml" "$socket" "$tmp/containerd.log"
say "containerd $(containerd --version | awk '{print $3}') up on $socket"

"$repo/tools/busybox-image" "$tmp/busybox-oci.tar" >/dev/null || die "tools/busybox-image failed"
c image import "$tmp/busybox-oci.tar"
[ "$status" -eq 0 ] || die "ctr image import failed ($status): $err"
c image ls -q
check "the imported image is $image" grep -qx "$image" "$tmp/out"

# --- attached runs -------------------------------------------------------------------------------
c run --rm --runtime "$runtime" "$image" t1 echo hello
check "ctr run --rm ... echo hello prints hello" test "$status" -eq 0 -a "$out" = hello

c run --rm --runtime "$runtime" "$image" t2 sh -c 'echo to-stderr >&2; exit 3'
check "sh -c 'exit 3' exits 3" test "$status" -eq 3
check "stderr reaches ctr" test "$err" = to-stderr

# --- a detached task -----------------------------------------------------------------------------
c run -d --runtime "$runtime" "$image" t3 sh -c 'trap "exit 7" TERM; while :; do sleep 1; done'
check "ctr run -d starts a task" test "$status" -eq 0
c task ls
check "task t3 is RUNNING" grep -Eq '^t3 +[0-9]+ +RUNNING' "$tmp/out"

c task exec --exec-id e1 t3 sh -c 'echo exec-out; hostname >/dev/null; exit 4'
check "ctr task exec prints the exec's output and status" test "$status" -eq 4 -a "$out" = exec-out

c task ps t3
check "ctr task ps lists the task's processes" test "$status" -eq 0 -a "$(echo "$out" | grep -Ec '^ *[0-9]+')" -ge 2

c task metrics t3
check "ctr task metrics shows cgroup v2 counters" test "$status" -eq 0
check "metrics show the task's pids (pids.current >= 1)" awk '$1 == "pids.current" && $2 >= 1 { found = 1 } END { exit !found }' "$tmp/out"
check "metrics show its memory usage (memory.usage > 0)" awk '$1 == "memory.usage" && $2 > 0 { found = 1 } END { exit !found }' "$tmp/out"

c task pause t3
c task ls
check "ctr task pause: PAUSED" grep -Eq '^t3 +[0-9]+ +PAUSED' "$tmp/out"
c task resume t3
c task ls
check "ctr task resume: RUNNING" grep -Eq '^t3 +[0-9]+ +RUNNING' "$tmp/out"

c task kill t3
check "ctr task kill" test "$status" -eq 0
for _ in $(seq 100); do
    c task ls
    grep -Eq '^t3 +[0-9]+ +STOPPED' "$tmp/out" && break
    sleep 0.2
done
check "the killed task is STOPPED" grep -Eq '^t3 +[0-9]+ +STOPPED' "$tmp/out"
c task delete t3
# containerd 1.6's ctr task delete warns about a non-zero exit status and exits 0.
check "ctr task delete reports the TERM trap's exit status 7" grep -q 'non-zero exit code 7' "$tmp/err"

c container delete t3
check "ctr container delete" test "$status" -eq 0

# wait_status ID STATUS: waits up to 20 s until `ctr task ls` shows task ID in STATUS.
wait_status() {
    for _ in $(seq 100); do
        c task ls
        grep -Eq "^$1 +[0-9]+ +$2" "$tmp/out" && return 0
        sleep 0.2
    done
    return 1
}

# --- faults: the VMM killed, the shim killed ------------------------------------------------------
c run -d --runtime "$runtime" "$image" t4 sh -c 'while :; do sleep 1; done'
check "ctr run -d t4" test "$status" -eq 0
c task ls
vmm=$(awk '$1 == "t4" { print $2 }' "$tmp/out")
check "t4's task pid is its rvm-vmm" test "$(cat "/proc/${vmm:-0}/comm" 2>/dev/null)" = rvm-vmm
kill -KILL "${vmm:-0}" 2>/dev/null
check "killing t4's VMM stops the task" wait_status t4 STOPPED
c task delete t4
check "t4 exited with 137 (128 + SIGKILL of its VMM)" grep -q 'non-zero exit code 137' "$tmp/err"
c container delete t4

c run -d --runtime "$runtime" "$image" t5 sh -c 'while :; do sleep 1; done'
check "ctr run -d t5" test "$status" -eq 0
c task ls
vmm=$(awk '$1 == "t5" { print $2 }' "$tmp/out")
shim_pid=$(pgrep -f "containerd-shim-rvm-v1 .*-id t5 ")
check "t5 has a shim" test -n "$shim_pid"
kill -KILL $shim_pid 2>/dev/null
for _ in $(seq 100); do
    [ -d "/proc/${vmm:-0}" ] || break
    sleep 0.2
done
check "killing t5's shim ends its VMM" test ! -d "/proc/${vmm:-0}"
for _ in $(seq 100); do
    c task ls
    grep -Eq '^t5 +[0-9]+ +RUNNING' "$tmp/out" || break
    sleep 0.2
done
check "containerd no longer sees t5 running" test "$(grep -Ec '^t5 +[0-9]+ +RUNNING' "$tmp/out")" -eq 0
c task delete t5
c container delete t5
check "ctr container delete t5" test "$status" -eq 0

# --- the layer cache prunes itself -----------------------------------------------------------------
# Every layer disk has a <key>.source record naming its snapshot directory. With the image and
# its snapshots removed, the next task's shim prunes their disks and keeps its own.
layers=$RVM_ROOT/containerd/layers
# sources: "KEY DIR" for each record in the cache.
sources() {
    local record
    for record in "$layers"/*.source; do
        [ -f "$record" ] || continue
        echo "$(basename "$record" .source) $(sed -n 's/^dir //p' "$record")"
    done
}
old=$(sources)
check "each layer disk has a record (${old:+$(echo "$old" | wc -l)} record(s))" test -n "$old"
check "the recorded snapshot directories exist" \
    bash -c 'while read -r key dir; do [ -d "$dir" ] && [ -f "$0/$key.erofs" ] || exit 1; done <<<"$1"' "$layers" "$old"
c snapshots ls
say "snapshots before removing the image: $(tail -n +2 "$tmp/out" | wc -l)"
# --sync waits for the garbage collection that removes the image's content and snapshots.
c image rm --sync "$image"
check "ctr image rm --sync" test "$status" -eq 0
gone() {
    local key dir
    while read -r key dir; do
        [ ! -e "$dir" ] || return 1
    done <<<"$old"
}
for _ in $(seq 50); do gone && break; sleep 0.2; done
check "containerd removed the layer snapshots' directories" gone
c snapshots ls
check "no snapshot left" test "$(tail -n +2 "$tmp/out" | wc -l)" -eq 0
check "the removed snapshots' disks are still cached until a shim prunes" \
    bash -c 'while read -r key dir; do [ -f "$0/$key.erofs" ] || exit 1; done <<<"$1"' "$layers" "$old"

c image import "$tmp/busybox-oci.tar"
check "the image imports again" test "$status" -eq 0
c run --rm --runtime "$runtime" "$image" t6 echo again
check "a task of the re-imported image runs" test "$status" -eq 0 -a "$out" = again
old_pruned() {
    local key dir
    while read -r key dir; do
        [ ! -e "$layers/$key.erofs" ] && [ ! -e "$layers/$key.source" ] || return 1
    done <<<"$old"
}
# The prune runs beside the task's boot; the task has run by now, the wait is for a loaded lab.
for _ in $(seq 50); do old_pruned && break; sleep 0.2; done
check "the removed snapshots' disks and records are pruned" old_pruned
new=$(sources)
say "layer cache after t6: $(echo "$new" | grep -c .) record(s), $(ls "$layers"/*.erofs 2>/dev/null | wc -l) disk(s)"
check "the new task's layer disks are cached with records" test -n "$new"
check "the new task's disks are new keys, of directories that exist" \
    bash -c 'while read -r key dir; do [ -d "$dir" ] && [ -f "$0/$key.erofs" ] || exit 1; grep -q "^$key " <<<"$2" && exit 1; done <<<"$1"; exit 0' "$layers" "$new" "$old"
check "no temporary file left in the layer cache" test -z "$(ls -A "$layers" | grep '^\.')"

# --- nothing left behind ---------------------------------------------------------------------------
for _ in $(seq 50); do
    pgrep -f "$tmp/bin/containerd-shim-rvm-v1|rvm-vmm" >/dev/null || break
    sleep 0.2
done
left=$(pgrep -af containerd-shim-rvm-v1)
check "no shim process left${left:+: $left}" test -z "$left"
check "no rvm-vmm process left" test -z "$(pgrep -x rvm-vmm)"
check "no task files left" test -z "$(ls "$RVM_ROOT/containerd/default/containers" 2>/dev/null)"

if [ "$failures" -ne 0 ]; then
    echo "--- containerd log (tail) ---"
    grep -v 'level=debug' "$tmp/containerd.log" | tail -40
fi
echo "lab-containerd: $failures failure(s)"
[ "$failures" -eq 0 ]

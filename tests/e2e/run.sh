#!/bin/bash
# tests/e2e/run.sh: `rvm run` end to end in the lab (issue #8), with the real rvm-vmm, guest
# kernel and rvm-agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- tests/e2e/run.sh
#
# Loads a busybox image (tools/busybox-image, or the archive in RVM_E2E_IMAGE) into a fresh
# --root, then checks, as a Docker user would:
#   - `rvm run --rm busybox echo hello` prints hello and exits 0; `sh -c 'exit 3'` exits 3;
#     `nosuchcmd` exits 127 with Docker's "executable file not found" message;
#   - -e, -w and -u reach the container; --cap-add, --cap-drop and --security-opt
#     (seccomp=unconfined, no-new-privileges) shape its capabilities and filters;
#   - `run -d --name x --log-opt max-size=64k --log-opt max-file=2`: `ps` shows it, `logs x`
#     has its output, `exec x hostname` prints its hostname (the short ID), `top x` its
#     processes, `inspect x` its log options, 3000 lines on its stdout are rotated into two files
#     of at most 64k that `logs x` reads in order, `stats --no-stream x` its usage, `pause x`
#     freezes it (ps, inspect, exec refused) until `unpause x`, `stop x` of a paused x thaws it
#     and ends it with SIGTERM (exit 0 from its trap, not 137), `rm x` leaves no process, socket
#     or file behind;
#   - `create` then `start -a` runs a container attached, `start` again detached, `wait` prints
#     its exit code; `restart` boots a running container again, its logs kept (`logs -n 1
#     --since 10m` shows the last line); `rename` gives it a new name; a `--rm` container
#     is kept across `restart` and removed by `stop`;
#   - `kill -9` of a container's VMM: `ps -a` shows it exited 137 (128 + SIGKILL, as the shim
#     reports a VM killed under a task), `rm` cleans up;
#   - `--memory 64m` and a process that keeps allocating (`tail /dev/zero` buffers an endless
#     line): OOM-killed, exit 137.
# ls without -A: the store's lock file (.lock) stays in containers/.
# Needs a /dev/kvm that boots Linux (the lab's). Binaries: RVM_BIN (else target/debug/rvm, else
# target/release/rvm) with rvm-vmm beside it; guest artifacts in RVM_GUEST_DIR (else
# target/rvm-guest). Setup, r and check: tests/e2e/lib.sh. Exit status 0 when every check
# passed; 1 naming each failure otherwise.
set -uo pipefail
e2e_name=e2e-run
command_timeout=${RVM_E2E_TIMEOUT:-600}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4
e2e_setup_root

# --- the image --------------------------------------------------------------------------------
e2e_load_image

# --- attached runs ----------------------------------------------------------------------------
r run --rm busybox echo hello
check "run --rm busybox echo hello prints hello, exit 0" test "$status" -eq 0 -a "$out" = hello
[ -z "$(ls "$root/containers" 2>/dev/null)" ]
check "--rm leaves no container behind" test $? -eq 0

r run --rm busybox sh -c 'exit 3'
check "sh -c 'exit 3' exits 3" test "$status" -eq 3

r run --rm busybox nosuchcmd
check "nosuchcmd exits 127" test "$status" -eq 127
check "nosuchcmd: Docker's message" grep -q 'executable file not found' "$tmp/err"

r run --rm -e GREETING=bonjour -w /tmp -u 1000:1000 busybox sh -c 'echo "$GREETING $(pwd) $(id -u):$(id -g)"'
check "-e, -w and -u reach the container" test "$status" -eq 0 -a "$out" = "bonjour /tmp 1000:1000"

r run --rm --cap-add NET_ADMIN --cap-drop chown --security-opt seccomp=unconfined \
    --security-opt no-new-privileges busybox grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
check "--cap-add/--cap-drop/--security-opt: Docker's default less CHOWN plus NET_ADMIN, no filter, no new privileges" \
    test "$(echo $out)" = "CapEff: 00000000a80435fa NoNewPrivs: 1 Seccomp: 0"

# --- a detached container -----------------------------------------------------------------------
r run -d --name x --log-opt max-size=64k --log-opt max-file=2 busybox sh -c 'trap "echo got TERM; exit 0" TERM; echo started; while :; do sleep 1; done'
id=$out
check "run -d prints the container ID" test "$status" -eq 0 -a "${#id}" -eq 64
short=${id:0:12}

r ps
check "ps shows x running" eval '[[ "$out" == *"$short"*"Up "*" x"* ]]'

for _ in $(seq 1 100); do
    r logs x
    [[ "$out" == *started* ]] && break
    sleep 0.2
done
check "logs x has its output" eval '[[ "$out" == *started* ]]'

r exec x hostname
check "exec x hostname prints the short ID" test "$status" -eq 0 -a "$out" = "$short"

r top x
check "top x lists its shell and its sleep" eval '[ "$status" -eq 0 ] && [[ "$out" == "UID"*"PID"*"CMD"*"sh -c"*"sleep 1"* ]]'

# x's log is rotated as Docker's json-file driver rotates (max-size=64k, max-file=2): 3000 lines
# written to x's own stdout from an exec (about 250 kB of log) go through several rotations.
r inspect x
check "inspect x shows its log options" eval '[[ "$out" == *"\"LogConfig\""*"\"max-file\": \"2\""* ]] && [[ "$out" == *"\"max-size\": \"64k\""* ]]'
r exec x sh -c 'i=0; while [ $i -lt 3000 ]; do echo "filler $i"; i=$((i+1)); done >/proc/1/fd/1'
check "exec x writes 3000 lines to x's stdout" test "$status" -eq 0
for _ in $(seq 1 150); do
    r logs -n 1 x
    [ "$out" = "filler 2999" ] && break
    sleep 0.2
done
check "logs -n 1 x shows the last line, past the rotations" test "$out" = "filler 2999"
log=$root/containers/$id/$id-json.log
check "x's log is its current file and one rotated file, each at most 64k" eval \
    '[ -s "$log.1" ] && [ ! -e "$log.2" ] && [ "$(stat -c %s "$log.1")" -le 64000 ] && [ "$(stat -c %s "$log")" -le 64000 ]'
r logs x
first=$(grep -m1 '^filler ' <<<"$out" | cut -d' ' -f2)
count=$(grep -c '^filler ' <<<"$out")
check "logs x reads the rotated file then the current one, without a gap" \
    test -n "$first" -a "$((first + count - 1))" -eq 2999 -a "$count" -gt 700

r stats --no-stream x
row=$(grep " x " <<<"$out")
check "stats --no-stream x: a row with CPU %, memory against the VM's and pids" \
    eval '[ "$status" -eq 0 ] && [[ "$out" == "CONTAINER ID"*"PIDS"* ]] && [[ "$row" == "$short"*"%"*"B / "*"iB"*"%"* ]] && [ "$(awk "{print \$NF}" <<<"$row")" -ge 1 ]'

r inspect x
vmm_pid=$(echo "$out" | sed -n 's/.*"Vmm": \([0-9]*\).*/\1/p' | head -1)
monitor_pid=$(echo "$out" | sed -n 's/.*"Monitor": \([0-9]*\).*/\1/p' | head -1)
check "inspect names the VMM and monitor processes" test -n "$vmm_pid" -a -n "$monitor_pid"

r pause x
check "pause x" test "$status" -eq 0 -a "$out" = x
r ps
check "ps shows x paused" eval '[[ "$out" == *"Up "*"(Paused)"*" x"* ]]'
r inspect x
check "inspect says Paused" eval '[[ "$out" == *'"'"'"Paused": true'"'"'* ]]'
r exec x true
check "exec into a paused container is refused" eval '[ "$status" -ne 0 ] && [[ "$err" == *"is paused"* ]]'
r pause x
check "pause of a paused container fails" eval '[ "$status" -eq 1 ] && [[ "$err" == *"already paused"* ]]'
r unpause x
check "unpause x" test "$status" -eq 0 -a "$out" = x
r exec x echo thawed
check "exec works again after unpause" test "$status" -eq 0 -a "$out" = thawed
r pause x

r rm x
check "rm of a running container is refused" test "$status" -eq 1

r stop x
check "stop x (paused: thawed first)" test "$status" -eq 0
r ps -a
check "x exited through its TERM trap (exit 0, not SIGKILL's 137)" eval '[[ "$out" == *"Exited (0)"*" x"* ]]'
r logs x
check "logs x shows the trap ran" eval '[[ "$out" == *"got TERM"* ]]'

r rm x
check "rm x" test "$status" -eq 0
check "rm x leaves no container directory" test ! -e "$root/containers/$id"
check "rm x leaves no sockets" test ! -e "$root/run/$id"
gone=true
for pid in $vmm_pid $monitor_pid; do
    if [ -e "/proc/$pid" ] && ! grep -q '^[^)]*) Z' "/proc/$pid/stat" 2>/dev/null; then gone=false; fi
done
check "rm x leaves no VMM or monitor process" $gone

# --- create, start, wait, restart ---------------------------------------------------------------
r create --name later busybox sh -c 'echo ran; exit 5'
check "create prints the container ID" test "$status" -eq 0 -a "${#out}" -eq 64
r ps -a
check "ps -a shows the created container as Created" eval '[[ "$out" == *"Created"*" later"* ]]'
r start -a later
check "start -a of the created container: its output and exit code 5" test "$status" -eq 5 -a "$out" = ran
r start later
check "start of the exited container again" test "$status" -eq 0 -a "$out" = later
r wait later
check "wait prints its exit code, 5" test "$status" -eq 0 -a "$out" = 5
r logs later
check "logs show both runs" test "$out" = "$(printf 'ran\nran')"
r rm later
check "rm of the created container" test "$status" -eq 0

r run -d --name again busybox sh -c 'trap "exit 0" TERM; echo boot; while :; do sleep 1; done'
until_logs() { # NAME TEXT COUNT: waits until TEXT is COUNT lines of NAME's logs
    for _ in $(seq 1 150); do
        r logs "$1"
        [ "$(grep -cx "$2" <<<"$out")" -ge "$3" ] && return 0
        sleep 0.2
    done
    return 1
}
until_logs again boot 1
r restart -t 5 again
check "restart" test "$status" -eq 0 -a "$out" = again
r ps
check "ps shows it running after restart" eval '[[ "$out" == *"Up "*" again"* ]]'
check "the restarted container ran again, its logs kept" until_logs again boot 2
r logs -n 1 --since 10m again
check "logs -n 1 --since 10m shows the last line" test "$status" -eq 0 -a "$out" = boot
r rename again renamed
check "rename again renamed" test "$status" -eq 0
r ps
check "ps shows the new name" eval '[[ "$out" == *" renamed"* ]] && [[ "$out" != *" again"* ]]'
r rename renamed renamed
check "rename to its own name is refused" eval '[ "$status" -eq 1 ] && [[ "$err" == *"same name"* ]]'
r stop -t 5 renamed
r wait renamed
check "wait of a stopped container prints its exit code at once" test "$status" -eq 0 -a "$out" = 0
r rm renamed

r run -d --rm --name ephemeral busybox sleep 600
r restart -t 1 ephemeral
check "restart keeps a --rm container" test "$status" -eq 0 -a "$out" = ephemeral
r ps
check "the --rm container runs again after restart" eval '[[ "$out" == *"Up "*" ephemeral"* ]]'
r stop -t 1 ephemeral
r ps -a
check "stop then removes it (--rm)" eval '[[ "$out" != *ephemeral* ]]'

# --- a VMM killed under a running container ------------------------------------------------------
r run -d --name victim busybox sleep 600
r inspect victim
vmm_pid=$(echo "$out" | sed -n 's/.*"Vmm": \([0-9]*\).*/\1/p' | head -1)
if [ -n "$vmm_pid" ]; then
    kill -9 "$vmm_pid"
    for _ in $(seq 1 100); do
        r ps -a
        [[ "$out" == *Exited*victim* ]] && break
        sleep 0.2
    done
fi
check "kill -9 of the VMM: ps -a shows the container exited 137, as the shim reports it" \
    eval '[[ "$out" == *"Exited (137)"*victim* ]]'
r rm victim
check "rm of the killed container" test "$status" -eq 0 -a -z "$(ls "$root/containers" 2>/dev/null)"

# --- memory limit ---------------------------------------------------------------------------------
r run --rm --memory 64m busybox tail /dev/zero
check "--memory 64m: an endless allocation is OOM-killed, exit 137" test "$status" -eq 137

e2e_finish

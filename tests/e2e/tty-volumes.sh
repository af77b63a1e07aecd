#!/bin/bash
# tests/e2e/tty-volumes.sh: named volumes, interactive terminals and bad input of `rvm run`
# end to end in the lab (issues #6 and #8), with the real rvm-vmm, guest kernel and rvm-agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && agent/build-initramfs \
#       && tests/lab/run -- tests/e2e/tty-volumes.sh
#
# Checks, as a Docker user would:
#   - volumes: a file written to `-v data:/data` in one run is read by the next VM; `:ro` refuses
#     writes; a new volume mounted over an image directory (/etc) is filled from the image
#     (copy-up) and keeps its own content afterwards; `rvm volume ls/inspect/rm`, rm refused
#     while a container refers to the volume; a damaged volume another VM wrote is refused
#     before a VM mounts it; a volume written by a running VM is refused to a
#     second one (exit 125, one line naming the holder);
#   - bad input: a duplicate --name is refused with Docker's "Conflict." line, exit 125;
#   - terminals, driven through tmux: `run -it busybox sh` shows a prompt, runs
#     `echo $((6*7))` -> 42, follows a window resize (stty size), ^C interrupts a foreground
#     `sleep`, `exit` ends rvm with 0 and the terminal's settings are restored; `exit 5` -> 5;
#     `exec -it` into a running container the same way.
# Binaries: RVM_BIN (else target/debug/rvm, else target/release/rvm) with rvm-vmm beside it;
# guest artifacts in RVM_GUEST_DIR (else target/rvm-guest). Setup, r and check: tests/e2e/lib.sh.
# Exit 0 when every check passed.
set -uo pipefail
e2e_name=e2e-tty-volumes
command_timeout=${RVM_E2E_TIMEOUT:-300}
# How long a terminal check waits for the screen to show what it expects (the lab is emulated).
screen_timeout=${RVM_E2E_SCREEN_TIMEOUT:-120}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4 tmux

e2e_setup_root
tmux_socket=$tmp/tmux.sock
tmux() { command tmux -S "$tmux_socket" -f /dev/null "$@"; }
# Called by lib.sh's cleanup on exit, before it removes the containers.
e2e_extra_cleanup() {
    tmux kill-server >/dev/null 2>&1 || true
}

# --- the image --------------------------------------------------------------------------------
e2e_load_image

# --- volumes ------------------------------------------------------------------------------------
r run --rm -v data:/data -v etcvol:/etc busybox sh -c \
    'echo kept > /data/file; grep -c "^root:" /etc/passwd; echo mine > /etc/marker'
check "a new volume over /etc is filled from the image (copy-up)" test "$status" -eq 0 -a "$out" = 1

r volume ls -q
check "volume ls lists both volumes" test "$status" -eq 0 -a "$out" = "$(printf 'data\netcvol')"
r volume inspect data
check "volume inspect names its disk" eval '[[ "$out" == *"\"Mountpoint\": \"$root/volumes/data.ext4\""* ]]'

# One VM holds both volumes for the rest of the test: data read-only, etcvol read-write.
r run -d --name holder -v data:/data:ro -v etcvol:/etc busybox sleep 600
holder=$out
check "run -d with two volumes" test "$status" -eq 0 -a "${#holder}" -eq 64

r exec holder sh -c 'cat /data/file; cat /etc/marker; echo x > /data/other && echo wrote'
check "the next VM reads what the first wrote" eval '[[ "$out" == kept*mine* ]]'
check ":ro refuses writes" eval '[[ "$out" != *wrote* && "$err" == *"Read-only file system"* ]]'

r run --rm -v etcvol:/etc busybox true
check "a volume written by a running VM is refused to a second VM (125, one line)" \
    eval '[ "$status" -eq 125 ] && [[ "$err" == *"volume \"etcvol\" is in use by running container \"/holder\""* ]] && [ "$(wc -l <"$tmp/err")" -eq 1 ]'

r volume rm data
check "volume rm of a volume in use is refused (exit 1)" \
    eval '[ "$status" -eq 1 ] && [[ "$err" == *"volume is in use - [$holder]"* ]]'

r run --name holder busybox true
check "a duplicate --name is refused with Docker's Conflict line (125)" \
    eval '[ "$status" -eq 125 ] && [[ "$err" == *"Conflict. The container name \"/holder\" is already in use by container \"$holder\""* ]] && [ "$(wc -l <"$tmp/err")" -eq 1 ]'

# --- terminals through tmux -------------------------------------------------------------------------
# session NAME STATUSFILE RVM-ARGS...: starts rvm in a tmux window of 80x24; when rvm ends, its
# exit status goes to STATUSFILE, followed by "restored" if the terminal settings are as before.
session() {
    local name=$1 status_file=$2
    shift 2
    cat >"$tmp/$name.sh" <<EOF
#!/bin/bash
saved=\$(stty -g)
"$rvm" --root "$root" "\$@"
code=\$?
[ "\$(stty -g)" = "\$saved" ] && restored=restored || restored=changed
echo "\$code \$restored" >"$status_file.tmp"
mv "$status_file.tmp" "$status_file"
EOF
    chmod +x "$tmp/$name.sh"
    tmux new-session -d -s "$name" -x 80 -y 24 "$tmp/$name.sh $*"
}

# screen_has NAME TEXT: waits until the window shows a line holding TEXT.
screen_has() {
    local deadline=$((SECONDS + screen_timeout))
    while [ $SECONDS -lt $deadline ]; do
        if tmux capture-pane -p -t "$1" 2>/dev/null | grep -qF -- "$2"; then
            return 0
        fi
        sleep 0.2
    done
    echo "    screen of $1 (no \"$2\" after $screen_timeout s):"
    tmux capture-pane -p -t "$1" 2>/dev/null | sed 's/^/    | /'
    return 1
}

# ended STATUSFILE: waits for the session's rvm to end.
ended() {
    local deadline=$((SECONDS + screen_timeout))
    while [ $SECONDS -lt $deadline ]; do
        [ -f "$1" ] && return 0
        sleep 0.2
    done
    return 1
}

status=-; out=; err=
session s1 "$tmp/s1.status" run -it --rm busybox sh
check "run -it busybox sh shows a prompt" screen_has s1 '/ #'
tmux send-keys -t s1 'echo $((6*7))' Enter
check "a command runs: echo \$((6*7)) prints 42" screen_has s1 '42'
tmux send-keys -t s1 'stty size' Enter
check "the pty has the window's size (24 80)" screen_has s1 '24 80'
tmux resize-window -t s1 -x 100 -y 30
tmux send-keys -t s1 'clear; stty size' Enter
check "a window resize reaches the pty (30 100)" screen_has s1 '30 100'
tmux send-keys -t s1 'sleep 300' Enter
screen_has s1 'sleep 300' >/dev/null
tmux send-keys -t s1 C-c
tmux send-keys -t s1 'echo after-$((20+3))' Enter
check "^C interrupts the foreground sleep" screen_has s1 'after-23'
tmux send-keys -t s1 'exit' Enter
ended "$tmp/s1.status"
out=$(cat "$tmp/s1.status" 2>/dev/null)
check "exit ends rvm run -it with 0 and restores the terminal" test "$out" = "0 restored"

session s2 "$tmp/s2.status" run -it --rm busybox sh
check "second run -it shows a prompt" screen_has s2 '/ #'
tmux send-keys -t s2 'exit 5' Enter
ended "$tmp/s2.status"
out=$(cat "$tmp/s2.status" 2>/dev/null)
check "exit 5 ends rvm run -it with 5" test "$out" = "5 restored"

session s3 "$tmp/s3.status" exec -it holder sh
check "exec -it holder sh shows a prompt" screen_has s3 '/ #'
tmux send-keys -t s3 'echo $((6*7)); cat /data/file' Enter
check "exec -it: a command runs and sees the volume" screen_has s3 'kept'
tmux send-keys -t s3 'exit 7' Enter
ended "$tmp/s3.status"
out=$(cat "$tmp/s3.status" 2>/dev/null)
check "exit 7 ends rvm exec -it with 7 and restores the terminal" test "$out" = "7 restored"

# --- volumes after their container is gone --------------------------------------------------------
r rm -f holder
check "rm -f holder" test "$status" -eq 0
# holder's VM wrote etcvol last (and data was checked with e2fsck before holder read it, as the
# first container wrote it). Garbage where a guest with the raw disk could put it, over the
# group descriptors: the next container is refused before any VM parses the image.
check "the last writer of a volume is recorded" test "$(cat "$root/volumes/etcvol.writer")" = "$holder"
head -c 4096 /dev/zero | tr '\0' '\245' | dd of="$root/volumes/etcvol.ext4" bs=4096 seek=1 conv=notrunc status=none
r run --rm -v etcvol:/etc busybox true
check "a damaged volume another VM wrote is refused before a VM mounts it (125, names it and its writer)" \
    eval '[ "$status" -eq 125 ] && [[ "$err" == *"volume \"etcvol\" was last written by container $holder"* ]]'
r volume rm data
check "volume rm once no container refers to it" test "$status" -eq 0 -a "$out" = data
check "volume rm deletes the disk" test ! -e "$root/volumes/data.ext4"
r volume rm data
check "volume rm of a missing volume (exit 1, Docker's words)" \
    eval '[ "$status" -eq 1 ] && [[ "$err" == *"get data: no such volume"* ]]'

e2e_finish

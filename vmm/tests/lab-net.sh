#!/bin/bash
# vmm/tests/lab-net.sh: in the lab, a guest on `--net tap=rvmtap0,mac=...` talks to the host side
# of the TAP, which lives in its own network namespace: the guest sees the MAC given, both sides
# ping each other, and RVM_NET_MIB (default 100) MiB cross in each direction over TCP (busybox nc
# on both ends) with matching SHA-256 sums. Also: a missing TAP makes rvm-vmm exit 2 naming it.
#   cargo build --release -p rvm-vmm && tests/lab/run -- vmm/tests/lab-net.sh
source "$(dirname "$0")/lab-lib.sh"

mib=${RVM_NET_MIB:-100}
bytes=$((mib * 1024 * 1024))
netns=rvmnet$$
tap=rvmtap0
mac=02:12:34:56:78:9a
host_ip=10.0.2.1
guest_ip=10.0.2.2
guest_timeout=${RVM_GUEST_TIMEOUT:-1800}
deadline_s=${RVM_NET_DEADLINE:-1200}

command -v ip >/dev/null || die "ip (iproute2) is needed on the host side"
# Host-side tools come from the host's busybox, like the guest's.
bb=$(command -v busybox) || die "busybox is needed on the host side"
in_ns() { ip netns exec "$netns" "$@"; }

# A missing TAP is bad input: exit 2, naming the flag.
status=0
"$vmm" --kernel "$vmlinux" --net tap=rvmnosuch0 >/dev/null 2>"$tmp/missing.err" || status=$?
if [ "$status" = 2 ] && grep -q -- '--net tap=rvmnosuch0' "$tmp/missing.err"; then
    say "ok: a missing TAP exits 2 naming --net tap=rvmnosuch0"
else
    fail "missing TAP: exit $status, stderr: $(cat "$tmp/missing.err")"
fi

# The lab kernel has TUN as a module.
if [ ! -c /dev/net/tun ]; then
    modprobe tun || die "cannot load the tun module"
    [ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
fi
ip netns add "$netns"
cleanup_hooks+=("ip netns del $netns")
in_ns ip link set lo up
in_ns ip tuntap add mode tap name "$tap"
in_ns ip addr add "$host_ip/24" dev "$tap"
in_ns ip link set "$tap" up

real_vmm=$vmm
vmm=$tmp/vmm-in-netns
printf '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' "$netns" "$real_vmm" >"$vmm"
chmod +x "$vmm"

cat >"$tmp/net.sh" <<GUEST
ip link set lo up
ip link set eth0 up
ip addr add $guest_ip/24 dev eth0
echo "GUEST-MAC \$(cat /sys/class/net/eth0/address)"
ping -c 3 -W 5 $host_ip >/dev/null && echo PING-HOST-OK
echo NET-UP
head -c $bytes /dev/urandom >/tmp/data
echo "SENT-SHA \$(sha256sum </tmp/data | cut -d' ' -f1)"
# The receiver must not see EOF on its stdin (busybox nc then half-closes and the sender quits).
nc $host_ip 5001 </tmp/data && echo SENT-DONE
rm /tmp/data
echo RECV-READY
nc -l -p 5002 | sha256sum | sed 's/ .*//; s/^/RECV-SHA /'
GUEST

# Waits until the guest console shows PATTERN, or the deadline passes.
wait_console() {
    local pattern=$1 end=$((SECONDS + deadline_s))
    while [ $SECONDS -lt $end ]; do
        grep -qE -- "$pattern" "$tmp/net.console" 2>/dev/null && return 0
        kill -0 "$guest_pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# Guest → host receiver, ready before the guest boots. Its stdin is a FIFO that never ends.
# (The FIFO lives in the lab's own /tmp: the repository's 9p share cannot hold one.)
hold=$(mktemp -u /tmp/lab-net-hold.XXXXXX)
mkfifo "$hold"
cleanup_hooks+=("rm -f $hold")
exec 9<>"$hold"
in_ns "$bb" nc -l -p 5001 <"$hold" >"$tmp/g2h.bin" &
receiver_pid=$!
cleanup_hooks+=("kill $receiver_pid 2>/dev/null")
head -c "$bytes" /dev/urandom >"$tmp/h2g.bin"

guest net "$tmp/net.sh" -- --memory 512 --net "tap=$tap,mac=$mac" &
guest_pid=$!

if wait_console '^NET-UP'; then
    if in_ns "$bb" ping -c 3 -W 5 "$guest_ip" >"$tmp/ping.out" 2>&1; then
        say "ok: the host pings the guest"
    else
        fail "the host cannot ping the guest: $(tail -n 3 "$tmp/ping.out")"
    fi
else
    fail "the guest did not bring eth0 up"
fi

start=$SECONDS
if wait_console '^(SENT-DONE|RECV-READY)'; then
    wait "$receiver_pid" || true
    say "guest → host: $(stat -c %s "$tmp/g2h.bin") bytes in $((SECONDS - start)) s"
else
    fail "the guest → host transfer did not finish"
fi

if wait_console '^RECV-READY'; then
    start=$SECONDS
    sent=
    end=$((SECONDS + 60))
    while [ $SECONDS -lt $end ]; do
        # Bounded: a guest that dies mid-transfer would leave nc waiting for TCP to give up.
        if timeout $((60 + 2 * mib)) ip netns exec "$netns" "$bb" nc "$guest_ip" 5002 <"$tmp/h2g.bin" 2>/dev/null; then
            sent=1
            break
        fi
        kill -0 "$guest_pid" 2>/dev/null || break
        sleep 0.5
    done
    [ -n "$sent" ] || fail "the host → guest transfer to port 5002 did not complete"
    say "host → guest: sent in $((SECONDS - start)) s"
fi

status=0
wait "$guest_pid" || status=$?
[ "$status" = 0 ] || fail "rvm-vmm exited $status"
check net '^GUEST-TEST-END' "the guest finished its script"
check net "^GUEST-MAC $mac" "the guest sees MAC $mac"
check net '^PING-HOST-OK' "the guest pings the host"
g2h=$(sha256sum <"$tmp/g2h.bin" | cut -d' ' -f1)
check net "^SENT-SHA $g2h" "guest → host: $mib MiB arrived intact"
h2g=$(sha256sum <"$tmp/h2g.bin" | cut -d' ' -f1)
check net "^RECV-SHA $h2g" "host → guest: $mib MiB arrived intact"
if [ ${#failures[@]} -gt 0 ]; then
    echo "--- net console (last 30 lines)"; tail -n 30 "$tmp/net.console" || true
    echo "--- net stderr"; tail -n 20 "$tmp/net.stderr" || true
fi
finish

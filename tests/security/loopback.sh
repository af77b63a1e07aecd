#!/bin/bash
# tests/security/loopback.sh: a guest the tenant controls must not reach the host's loopback
# (issue 22; the CVE-2020-8558 class), in the lab with the real rvm-vmm, guest kernel and agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- tests/security/loopback.sh
#
# rvm0 has route_localnet (ports published on 127.0.0.1 are forwarded through it), so a guest
# kernel the tenant controls (any container with NET_ADMIN or a path to guest root) could send
# packets addressed to 127.0.0.1 to the bridge. The attacker here is a network namespace plugged
# into rvm0 by a veth, set up exactly as such a guest would set itself up (no local route for
# 127.0.0.0/8, route_localnet on, 127.0.0.0/8 routed via the gateway): it sends UDP datagrams
# to a listener bound to the host's 127.0.0.1 only. Checks:
#   - the legitimate path: a port published on 127.0.0.1 answers `curl 127.0.0.1:PORT`;
#   - the attack is real: with rvm's guard chain deleted, the datagram reaches the listener;
#   - the next container's wiring puts the guard back (a table made by an older rvm gets it),
#     and then nothing reaches the listener.
# Binaries and guest artifacts as tests/e2e/run.sh. Exit 0 when every check passed.
set -uo pipefail
e2e_name=security-loopback
command_timeout=${RVM_E2E_TIMEOUT:-300}
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4 nft curl ip python3 busybox
e2e_require_tun

evil=rvmevil$$
evil_made=
e2e_extra_cleanup() {
    if [ -n "$evil_made" ]; then
        ip link del evilh0 2>/dev/null
        ip netns del "$evil" 2>/dev/null
    fi
}
e2e_setup_root


e2e_load_image

# --- the legitimate path ---------------------------------------------------------------------------
r run -d --name web -p 127.0.0.1:8090:80 busybox sh -c 'mkdir -p /srv && echo hi > /srv/index.html && exec httpd -f -p 80 -h /srv'
check "run -d -p 127.0.0.1:8090:80 starts" test "$status" -eq 0
fetch() { page=$(curl -s --max-time 5 http://127.0.0.1:8090/index.html) && [ "$page" = hi ]; }
page=
until_ok 60 fetch
check "curl 127.0.0.1:8090 reaches the published port" test "${page:-}" = hi

# --- the attacker: a namespace on rvm0 that routes 127.0.0.0/8 to the gateway ------------------------
ip netns add "$evil" && evil_made=1
ip link add evilh0 type veth peer name evil0 netns "$evil"
ip link set evilh0 master rvm0 up
ip -n "$evil" link set lo up
ip -n "$evil" addr add 10.88.255.250/16 dev evil0
ip -n "$evil" link set evil0 up
ip netns exec "$evil" sysctl -qw net.ipv4.conf.evil0.route_localnet=1
ip -n "$evil" route del local 127.0.0.0/8 dev lo table local 2>/dev/null
ip -n "$evil" route del local 127.0.0.1 dev lo table local 2>/dev/null
ip -n "$evil" route add 127.0.0.0/8 via 10.88.0.1 dev evil0
check "the attacker reaches the gateway (it is on the bridge)" \
    until_ok 20 ip netns exec "$evil" busybox ping -c 1 -W 2 10.88.0.1

# attack: starts a UDP listener on the host's 127.0.0.1:8097 only, has the attacker send to it for
# a few seconds, and prints what the listener received ("" when nothing came).
attack() {
    python3 - <<'PY' &
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 8097))
s.settimeout(8)
try:
    data, peer = s.recvfrom(100)
    print(data.decode(errors="replace"), peer[0])
except socket.timeout:
    pass
PY
    local listener=$!
    sleep 1
    for _ in 1 2 3 4 5; do
        ip netns exec "$evil" python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"evil", ("127.0.0.1", 8097))' 2>/dev/null
        sleep 1
    done
    wait "$listener"
}

nft delete chain ip rvm guard 2>/dev/null
got=$(attack)
check "without rvm's guard the attack reaches the host's 127.0.0.1 (got '$got'): the test is real" \
    test "${got%% *}" = evil

r run --rm busybox true
check "the next container's wiring puts the guard chain back" nft list chain ip rvm guard
got=$(attack)
check "with the guard nothing from the bridge reaches the host's 127.0.0.1 (got '$got')" test -z "$got"
fetch
check "the published port on 127.0.0.1 still answers" test "${page:-}" = hi

e2e_finish

#!/bin/bash
# tests/security/forward.sh: the host forwards to containers only what was published, and keeps
# guests off the cloud metadata service (issue 22), in the lab with the real rvm-vmm, guest
# kernel and agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- tests/security/forward.sh
#
# rvm turns ip_forward on, so a neighbour on the LAN that routes 10.88.0.0/16 via this host
# would reach every port of every container. The LAN here is a network namespace joined to the
# host by a veth (10.77.0.0/24), with that route. The "cloud" is another namespace holding
# 169.254.169.254 with an HTTP server, routed from the host as a cloud's metadata service is.
# A container (web) serves a published port (8092 -> 80) and an unpublished one (81). Checks:
#   - the legitimate paths: the LAN reaches the published port; the container reaches the LAN;
#   - the LAN cannot reach the unpublished port, nor the published one's container port
#     directly; the attack is real: without rvm's forward chain both answer; the next
#     container start puts the chain back;
#   - a default container cannot reach 169.254.169.254; with RVM_CLOUD_METADATA=allow it can
#     (the block is what stops it), and the next default start blocks it again.
# Binaries and guest artifacts as tests/e2e/run.sh. Exit 0 when every check passed.
set -uo pipefail
e2e_name=security-forward
command_timeout=${RVM_E2E_TIMEOUT:-300}
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4 nft curl ip busybox
e2e_require_tun

lan=rvmlan$$
cloud=rvmcloud$$
namespaces_made=
e2e_extra_cleanup() {
    if [ -n "$namespaces_made" ]; then
        ip netns pids "$cloud" 2>/dev/null | xargs -r kill 2>/dev/null
        ip link del lanh0 2>/dev/null
        ip link del cloudh0 2>/dev/null
        ip route del 169.254.169.254/32 2>/dev/null
        ip netns del "$lan" 2>/dev/null
        ip netns del "$cloud" 2>/dev/null
    fi
}
e2e_setup_root
e2e_load_image

# --- the LAN and the cloud -------------------------------------------------------------------------
ip netns add "$lan" && ip netns add "$cloud" && namespaces_made=1
ip link add lanh0 type veth peer name lan0 netns "$lan"
ip addr add 10.77.0.1/24 dev lanh0
ip link set lanh0 up
ip -n "$lan" addr add 10.77.0.2/24 dev lan0
ip -n "$lan" link set lan0 up
ip -n "$lan" link set lo up
ip -n "$lan" route add 10.88.0.0/16 via 10.77.0.1
ip link add cloudh0 type veth peer name cloud0 netns "$cloud"
ip addr add 10.78.0.1/24 dev cloudh0
ip link set cloudh0 up
ip -n "$cloud" addr add 10.78.0.2/24 dev cloud0
ip -n "$cloud" addr add 169.254.169.254/32 dev cloud0
ip -n "$cloud" link set cloud0 up
ip -n "$cloud" link set lo up
ip -n "$cloud" route add default via 10.78.0.1
ip route add 169.254.169.254/32 via 10.78.0.2 dev cloudh0
mkdir -p "$tmp/metadata" && echo credentials >"$tmp/metadata/index.html"
ip netns exec "$cloud" busybox httpd -p 169.254.169.254:80 -h "$tmp/metadata"
ip netns exec "$lan" busybox httpd -p 10.77.0.2:80 -h "$tmp/metadata"
check "the host reaches the metadata server" \
    until_ok 20 curl -s --max-time 3 -o /dev/null http://169.254.169.254/index.html

r run -d --name web -p 8092:80 busybox sh -c 'mkdir -p /srv && echo hi > /srv/index.html && httpd -p 81 -h /srv && exec httpd -f -p 80 -h /srv'
check "run -d -p 8092:80 starts" test "$status" -eq 0
r inspect web
web_ip=$(sed -n 's/^ *"IPAddress": "\(10\.88\.[0-9.]*\)".*/\1/p' <<<"$out" | head -1)
check "web has an address ($web_ip)" test -n "$web_ip"

# from_lan URL: what the LAN gets from URL ("" when nothing answers).
from_lan() { ip netns exec "$lan" curl -s --max-time 4 "$1" 2>/dev/null; }
published() { [ "$(from_lan http://10.77.0.1:8092/index.html)" = hi ]; }
# metadata_from_web: whether web can read the metadata server. (Debian busybox's `wget -T`
# segfaults once connected: the time limit is `timeout`'s.)
metadata_from_web() {
    r exec web timeout 5 wget -q -O - http://169.254.169.254/index.html
    [ "$status" -eq 0 ] && [ "$out" = credentials ]
}

# --- the legitimate paths ----------------------------------------------------------------------------
check "the LAN reaches the published port (10.77.0.1:8092)" until_ok 60 published
r exec web timeout 5 wget -q -O - http://10.77.0.2/index.html
check "the container reaches the LAN" test "$status" -eq 0 -a "$out" = credentials

# --- the attacks ------------------------------------------------------------------------------------
check "the LAN cannot reach the unpublished port 81" test -z "$(from_lan "http://$web_ip:81/index.html")"
check "the LAN cannot reach port 80 directly at $web_ip" test -z "$(from_lan "http://$web_ip:80/index.html")"
check "a default container cannot reach the metadata address" test "$(metadata_from_web && echo reached)" = ""

nft delete chain ip rvm forward
check "without rvm's forward chain the LAN reaches the unpublished port (the test is real)" \
    test "$(from_lan "http://$web_ip:81/index.html")" = hi
r run --rm busybox true
check "the next container start puts the forward chain back" eval "nft list chain ip rvm forward >/dev/null"
check "then the LAN cannot reach the unpublished port" test -z "$(from_lan "http://$web_ip:81/index.html")"
check "and the published port still answers" published

RVM_CLOUD_METADATA=allow r run --rm busybox timeout 5 wget -q -O - http://169.254.169.254/index.html
check "with RVM_CLOUD_METADATA=allow a container reads the metadata server (the block is real)" \
    test "$status" -eq 0 -a "$out" = credentials
RVM_CLOUD_METADATA=sometimes r run --rm busybox true
check "a bad RVM_CLOUD_METADATA is refused by name" \
    test "$status" -ne 0 -a -n "$(grep -F 'RVM_CLOUD_METADATA="sometimes"' <<<"$err")"
r run --rm busybox true
check "the next default start blocks the metadata address again" \
    test "$(metadata_from_web && echo reached)" = ""

e2e_finish

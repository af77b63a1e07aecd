#!/bin/bash
# tests/security/spoof.sh: a guest the tenant controls must not spoof its neighbours on the
# bridge (issue 22; the CVE-2020-13401 class), in the lab with the real rvm-vmm, kernel and agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- tests/security/spoof.sh
#
# Two containers on rvm0: victim (httpd, -p 8091:80) and attacker, whose --cap-add NET_ADMIN
# --cap-add NET_RAW stands in for a guest kernel the tenant fully controls. The attacker:
#   - announces the gateway's address as its own (gratuitous ARP): victim's neighbour entry for
#     the gateway must keep the bridge's MAC;
#   - sends pings from victim's address: none may reach the host (an nft counter on rvm0);
#   - changes its MAC: nothing it sends gets through.
# The legitimate path works before and after: the published port, attacker -> victim by IP.
# The attack is shown to be real: with rvm's guard table deleted, the ARP poisoning succeeds;
# `rvm restart` of both containers puts the guard back.
# Binaries and guest artifacts as tests/e2e/run.sh. Exit 0 when every check passed.
set -uo pipefail
e2e_name=security-spoof
command_timeout=${RVM_E2E_TIMEOUT:-300}
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4 nft curl ip
if [ ! -c /dev/net/tun ]; then
    modprobe tun 2>/dev/null
    [ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
fi
e2e_extra_cleanup() { nft delete table ip rvmspoof 2>/dev/null; }
e2e_setup_root

until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

e2e_load_image

r run -d --name victim -p 8091:80 busybox sh -c 'mkdir -p /srv && echo hi > /srv/index.html && exec httpd -f -p 80 -h /srv'
check "victim starts" test "$status" -eq 0
r run -d --name attacker --cap-add NET_ADMIN --cap-add NET_RAW busybox sleep 600
check "attacker starts" test "$status" -eq 0
r inspect victim
victim_ip=$(sed -n 's/^ *"IPAddress": "\(10\.88\.[0-9.]*\)".*/\1/p' <<<"$out" | head -1)
check "victim has an address ($victim_ip)" test -n "$victim_ip"
bridge_mac=$(cat /sys/class/net/rvm0/address)

page=
fetch() { page=$(curl -s --max-time 5 http://localhost:8091/index.html) && [ "$page" = hi ]; }
legit() {
    page=
    until_ok 60 fetch
    check "$1: the published port answers" test "${page:-}" = hi
    r exec attacker wget -q -O - "http://$victim_ip/index.html"
    check "$1: attacker reaches victim by its address" test "$status" -eq 0 -a "$out" = hi
}
legit "before the attacks"

# poison: victim learns the gateway, then attacker claims the gateway's address; prints victim's
# neighbour entry for the gateway.
poison() {
    r exec victim ping -c 1 -W 5 10.88.0.1
    sleep 2 # past the neighbour entry's locktime (1 s), so a gratuitous ARP could override it
    r exec attacker sh -c 'ip addr add 10.88.0.1/32 dev eth0 2>/dev/null;
        arping -U -c 3 -I eth0 -s 10.88.0.1 10.88.0.1; ip addr del 10.88.0.1/32 dev eth0'
    r exec victim ip neigh show 10.88.0.1
}
attacker_mac=$("$rvm" --root "$root" exec attacker cat /sys/class/net/eth0/address)
poison
check "gratuitous ARP for the gateway: victim keeps the bridge's MAC ($bridge_mac; attacker is $attacker_mac)" \
    eval '[[ "$out" == *"$bridge_mac"* && "$out" != *"$attacker_mac"* ]]'

# Pings from victim's address: counted where they would reach the host.
nft -f - <<NFT
table ip rvmspoof {
    chain pre {
        type filter hook prerouting priority -400; policy accept;
        iifname "rvm0" ip saddr $victim_ip icmp type echo-request counter
    }
}
NFT
r exec attacker sh -c "ip addr add $victim_ip/32 dev eth0 && ping -c 3 -W 1 -I $victim_ip 10.88.0.1; ip addr del $victim_ip/32 dev eth0"
counted=$(nft list chain ip rvmspoof pre | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
check "pings with victim's address as source: none reach the host (counted ${counted:-?})" \
    test "${counted:-x}" = 0

r exec attacker sh -c 'ip link set eth0 address 02:de:ad:be:ef:01 && echo changed;
    ping -c 2 -W 2 10.88.0.1 && echo GOT-THROUGH; ip link set eth0 address '"$attacker_mac"
check "a changed MAC gets nothing through (got '$(echo $out)')" \
    eval '[[ "$out" == changed* && "$out" != *GOT-THROUGH* ]]'

legit "after the attacks"

# The attack is real: without the guard, the same poisoning succeeds.
nft delete table bridge rvm
poison
check "without rvm's guard the gratuitous ARP poisons victim (the test is real; got '$out')" \
    eval '[[ "$out" == *"$attacker_mac"* ]]'
r restart victim attacker
check "restart of both puts the guard back" nft list table bridge rvm
legit "after the restart"

e2e_finish

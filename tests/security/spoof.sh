#!/bin/bash
# tests/security/spoof.sh: a guest the tenant controls must not spoof its neighbours on the
# bridge (issue 22; the CVE-2020-13401 class), in the lab with the real rvm-vmm, kernel and agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && guest-kernel/build && agent/build-initramfs \
#       && tests/lab/run -- tests/security/spoof.sh
#
# victim (httpd, -p 8091:80) and two attackers on rvm0:
#   - rvm0 has accept_ra 0 (guests get no IPv6; router advertisements never configure the host);
#   - a container with --cap-add NET_ADMIN --cap-add NET_RAW sends pings from victim's address:
#     none may reach the host (an nft counter on rvm0);
#   - a forged guest: our guest kernel has no packet sockets, so raw frames (gratuitous ARP, a
#     changed MAC) come from a network namespace plugged into rvm0 by a veth named like a
#     container's TAP, given a MAC and address in rvm's guard set exactly as a TAP is. It claims
#     the gateway's address (victim's neighbour entry for the gateway must keep the bridge's MAC)
#     and changes its MAC (nothing it sends then gets through).
# The legitimate path works before and after: the published port, attacker -> victim by IP.
# The attacks are shown to be real: with rvm's guard table deleted, both succeed; `rvm restart`
# of the containers puts the guard back.
# Binaries and guest artifacts as tests/e2e/run.sh. Exit 0 when every check passed.
set -uo pipefail
e2e_name=security-spoof
command_timeout=${RVM_E2E_TIMEOUT:-300}
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4 nft curl ip busybox
e2e_require_tun
forged=rvmforged$$
forged_port=rvmf0000000001 # matches the guard's "rvm*" as a container's TAP does
forged_mac=02:fe:00:00:00:01
forged_ip=10.88.255.251
forged_made=
e2e_extra_cleanup() {
    nft delete table ip rvmspoof 2>/dev/null
    if [ -n "$forged_made" ]; then
        ip link del "$forged_port" 2>/dev/null
        ip netns del "$forged" 2>/dev/null
    fi
}
e2e_setup_root

in_forged() { ip netns exec "$forged" "$@"; }

e2e_load_image

r run -d --name victim -p 8091:80 busybox sh -c 'mkdir -p /srv && echo hi > /srv/index.html && exec httpd -f -p 80 -h /srv'
check "victim starts" test "$status" -eq 0
r run -d --name attacker --cap-add NET_ADMIN --cap-add NET_RAW busybox sleep 600
check "attacker starts" test "$status" -eq 0
r inspect victim
victim_ip=$(sed -n 's/^ *"IPAddress": "\(10\.88\.[0-9.]*\)".*/\1/p' <<<"$out" | head -1)
check "victim has an address ($victim_ip)" test -n "$victim_ip"
bridge_mac=$(cat /sys/class/net/rvm0/address)
ra=/proc/sys/net/ipv6/conf/rvm0/accept_ra
check "rvm0 takes no router advertisements (accept_ra $(cat "$ra" 2>/dev/null || echo '-, no IPv6'))" \
    eval '[ ! -e "$ra" ] || [ "$(cat "$ra")" = 0 ]'

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

# The forged guest, allowed as rvm allows a TAP (its own MAC and address only).
ip netns add "$forged" && forged_made=1
ip link add "$forged_port" type veth peer name eth0 netns "$forged"
in_forged ip link set eth0 address "$forged_mac"
nft add element bridge rvm senders "{ \"$forged_port\" . $forged_mac . $forged_ip }"
ip link set "$forged_port" master rvm0 up
in_forged ip addr add "$forged_ip/16" dev eth0
in_forged ip link set eth0 up
check "the forged guest, as itself, reaches the gateway" \
    until_ok 20 in_forged busybox ping -c 1 -W 2 10.88.0.1

# poison: victim learns the gateway, then the forged guest claims the gateway's address;
# prints victim's neighbour entry for the gateway.
poison() {
    r exec victim ping -c 1 -W 5 10.88.0.1
    sleep 2 # past the neighbour entry's locktime (1 s), so a gratuitous ARP could override it
    # arping binds to the address it claims: the forged guest takes it for the attack.
    in_forged ip addr add 10.88.0.1/32 dev eth0
    in_forged busybox arping -U -c 3 -I eth0 -s 10.88.0.1 10.88.0.1 >"$tmp/arping" 2>&1
    arping_status=$?
    in_forged ip addr del 10.88.0.1/32 dev eth0
    r exec victim ip neigh show 10.88.0.1
}
poison
check "the forged guest sent its gratuitous ARPs ($(tr '\n' ' ' <"$tmp/arping"))" test "$arping_status" -eq 0
# The attack's aim is victim's entry for the gateway pointing at the forged MAC; an entry still
# being resolved (a lab run showed FAILED after the probes) is not the attack succeeding.
check "gratuitous ARP for the gateway: victim's entry never takes the forged MAC ($forged_mac; got '$out', bridge $bridge_mac)" \
    eval '[ "$status" -eq 0 ] && [[ "$out" == *10.88.0.1* && "$out" != *"$forged_mac"* ]]'

changed_mac() {
    in_forged ip link set eth0 address 02:de:ad:be:ef:01 || return 2
    in_forged busybox ping -c 2 -W 2 10.88.0.1 >/dev/null 2>&1
    local got=$?
    in_forged ip link set eth0 address "$forged_mac"
    return "$got"
}
changed_mac
check "a changed MAC gets nothing through" test $? -eq 1

# Pings from victim's address, from the container: counted where they would reach the host.
nft -f - <<NFT
table ip rvmspoof {
    chain pre {
        type filter hook prerouting priority -400; policy accept;
        iifname "rvm0" ip saddr $victim_ip icmp type echo-request counter
    }
}
NFT
spoofed_pings() {
    r exec attacker sh -c "ip addr add $victim_ip/32 dev eth0 && ping -c 3 -W 1 -I $victim_ip 10.88.0.1; ip addr del $victim_ip/32 dev eth0"
    nft list chain ip rvmspoof pre | sed -n 's/.*counter packets \([0-9]*\).*/\1/p'
}
counted=$(spoofed_pings)
check "pings with victim's address as source: none reach the host (counted ${counted:-?})" \
    test "${counted:-x}" = 0

legit "after the attacks"

# The attacks are real: without the guard they succeed.
nft delete table bridge rvm
poison
check "without rvm's guard the gratuitous ARP poisons victim (the test is real; got '$out')" \
    eval '[[ "$out" == *"$forged_mac"* ]]'
changed_mac
check "without rvm's guard a changed MAC gets through (the test is real)" test $? -eq 0
counted=$(spoofed_pings)
check "without rvm's guard the spoofed pings reach the host (the test is real; counted ${counted:-?})" \
    test "${counted:-0}" -gt 0
r restart victim attacker
check "restart of both puts the guard back" nft list table bridge rvm
legit "after the restart"

e2e_finish

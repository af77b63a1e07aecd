#!/bin/bash
# tests/e2e/net.sh: container networking end to end in the lab (issue #8), with the real rvm-vmm,
# guest kernel and rvm-agent:
#
#   cargo build -p rvm-cli -p rvm-vmm && agent/build-initramfs && tests/lab/run -- tests/e2e/net.sh
#
# Loads a busybox image into a fresh --root, then checks, as a Docker user would:
#   - `run -d --name web -p 8080:80 busybox httpd`: `curl localhost:8080` gets its file (DNAT
#     from the host's loopback), and so does a client in another network namespace (outside);
#     `ps` shows `0.0.0.0:8080->80/tcp`, `inspect` the address;
#   - the container pings the bridge gateway, has Docker's /etc/hosts and a /etc/resolv.conf;
#   - a second container fetches the first one's page by IP;
#   - `port web` lists the mapping as Docker does, `port web 80/tcp` its host side, `port web 81`
#     fails;
#   - `-p 8080` again, and a port a host socket listens on, are refused with exit 125;
#   - `--network none` has only lo;
#   - `stop` + `rm` leave no TAP, no nft element and no address allocation; neither does `rm` of a
#     container whose monitor was killed.
# Three VMs boot (web, client, a --network none run); the refused ones never boot.
# Needs a /dev/kvm that boots Linux (the lab's), nft, curl. Binaries, setup, r and check:
# tests/e2e/lib.sh.
set -uo pipefail
e2e_name=e2e-net
command_timeout=${RVM_E2E_TIMEOUT:-600}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

e2e_find_rvm
e2e_require_lab
e2e_require_tools mkfs.erofs mkfs.ext4 nft curl ip ss busybox
e2e_require_tun

listener=
cleanup_netns=
# Called by lib.sh's cleanup on exit, before it removes the containers.
e2e_extra_cleanup() {
    [ -n "$listener" ] && kill "$listener" 2>/dev/null
    if [ -n "$cleanup_netns" ]; then
        ip link del rvmout0 2>/dev/null
        ip netns del "$cleanup_netns" 2>/dev/null
    fi
}
e2e_setup_root


# --- the image --------------------------------------------------------------------------------
e2e_load_image

# --- a web server with a published port ---------------------------------------------------------
r run -d --name web -p 8080:80 busybox sh -c 'mkdir -p /srv && echo hi > /srv/index.html && exec httpd -f -p 80 -h /srv'
web=$out
check "run -d --name web -p 8080:80 starts" test "$status" -eq 0 -a "${#web}" -eq 64
short=${web:0:12}

fetch() { page=$(curl -s --max-time 5 "$1") && [ "$page" = hi ]; }
until_ok 60 fetch http://localhost:8080/index.html
check "curl localhost:8080/index.html returns the file" test "${page:-}" = hi
r port web
check "port web lists 80/tcp -> 0.0.0.0:8080" test "$status" -eq 0 -a "$out" = "80/tcp -> 0.0.0.0:8080"
r port web 80/tcp
check "port web 80/tcp prints the host side" test "$status" -eq 0 -a "$out" = "0.0.0.0:8080"
r port web 81
check "port web 81 (not published) fails naming it" eval '[ "$status" -eq 1 ] && [[ "$err" == *"81/tcp"* ]]'

# From outside: a client in its own network namespace, linked to the host by a veth pair.
outside=rvmout$$
ip netns add "$outside" && cleanup_netns=$outside
ip link add rvmout0 type veth peer name eth0 netns "$outside"
ip addr add 192.168.77.1/24 dev rvmout0 && ip link set rvmout0 up
ip -n "$outside" addr add 192.168.77.2/24 dev eth0
ip -n "$outside" link set eth0 up
ip -n "$outside" link set lo up
page=
fetch_outside() { page=$(ip netns exec "$outside" curl -s --max-time 5 http://192.168.77.1:8080/index.html) && [ "$page" = hi ]; }
until_ok 30 fetch_outside
check "curl 192.168.77.1:8080 from another network namespace (outside) returns the file" test "${page:-}" = hi

r ps
check "ps shows 0.0.0.0:8080->80/tcp" eval '[[ "$out" == *"0.0.0.0:8080->80/tcp"*web* ]]'
r inspect web
web_ip=$(echo "$out" | sed -n 's/^ *"IPAddress": "\(10\.88\.[0-9.]*\)".*/\1/p' | head -1)
check "inspect shows the address in 10.88.0.0/16" test -n "$web_ip"

r exec web ping -c 1 -W 5 10.88.0.1
check "web pings the bridge gateway 10.88.0.1" test "$status" -eq 0
r exec web cat /etc/hosts
check "/etc/hosts has localhost" eval '[[ "$out" == *"127.0.0.1"*localhost* ]]'
check "/etc/hosts has the container's address and hostname" eval '[[ "$out" == *"$web_ip"*"$short"* ]]'
r exec web cat /etc/resolv.conf
check "/etc/resolv.conf has a nameserver" eval '[[ "$out" == *nameserver* ]]'
r exec web ip -4 -o addr show eth0
check "eth0 has the address" eval '[[ "$out" == *"$web_ip/16"* ]]'

# --- two containers talk -----------------------------------------------------------------------
r run -d --name client -p 8081:80 busybox sleep 600
client=$out
check "a second container starts" test "$status" -eq 0
r exec client wget -q -O - "http://$web_ip/index.html"
check "the second container fetches web's page by IP" test "$status" -eq 0 -a "$out" = hi

# --- ports already taken -------------------------------------------------------------------------
r run -d --name dup -p 8080:80 busybox true
check "a second -p 8080 is refused with exit 125" test "$status" -eq 125
check "the refusal is one line naming the port" eval '[ "$(echo "$err" | wc -l)" -eq 1 ] && [[ "$err" == *8080* ]]'

busybox nc -l -p 8099 </dev/null >/dev/null 2>&1 &
listener=$!
until_ok 20 eval 'ss -ltn | grep -q ":8099 "'
check "a host socket listens on 8099" eval 'ss -ltn | grep -q ":8099 "'
r run -d --name hostport -p 8099:80 busybox true
check "a port a host socket listens on is refused with exit 125" test "$status" -eq 125 -a -n "$err"
kill "$listener" 2>/dev/null
listener=

# --- no network --------------------------------------------------------------------------------
r run --rm --network none busybox ip -o link
check "--network none: only lo" eval '[ "$status" -eq 0 ] && [[ "$out" == *": lo:"* ]] && [[ "$out" != *eth0* ]]'

# --- cleanup -------------------------------------------------------------------------------------
# httpd is the container's PID 1 and ignores SIGTERM: a short grace period ends it with SIGKILL.
r stop -t 2 web
check "stop web" test "$status" -eq 0
r rm web
check "rm web" test "$status" -eq 0
out=$(ip -o link)
check "no TAP of web is left" eval '[[ "$out" != *"rvm$short"* ]]'
out=$(nft list table ip rvm 2>&1)
check "no nft element for web's address or port 8080 is left" eval '[[ "$out" != *"$web_ip"* ]] && [[ "$out" != *8080* ]]'
out=$(cat "$root/network/allocations.json" 2>/dev/null)
check "no address allocation of web is left" eval '[[ "$out" != *"$web"* ]]'

# The second container's monitor is killed (its VMM dies with it): rm cleans what it left.
r inspect client
monitor_pid=$(echo "$out" | sed -n 's/.*"Monitor": \([0-9]*\).*/\1/p' | head -1)
[ -n "$monitor_pid" ] && kill -9 "$monitor_pid"
monitor_gone() { [ ! -e "/proc/$monitor_pid" ] || grep -q '^[^)]*) Z' "/proc/$monitor_pid/stat" 2>/dev/null; }
[ -n "$monitor_pid" ] && until_ok 30 monitor_gone
r rm -f client
check "rm -f of a container whose monitor was killed" test "$status" -eq 0
out=$(ip -o link; nft list table ip rvm 2>&1; cat "$root/network/allocations.json" 2>/dev/null)
check "...leaves no TAP, nft element or allocation" eval '[[ "$out" != *"rvm${client:0:12}"* ]] && [[ "$out" != *8081* ]] && [[ "$out" != *"$client"* ]]'

e2e_finish

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
#   - `-p 8080` again, and a port a host socket listens on, are refused with exit 125;
#   - `--network none` has only lo;
#   - `stop` + `rm` leave no TAP, no nft element and no address allocation; neither does `rm` of a
#     container whose monitor was killed.
# Three VMs boot (web, client, a --network none run); the refused ones never boot.
# Needs a /dev/kvm that boots Linux (the lab's), nft, curl. Binaries as tests/e2e/run.sh finds them.
set -uo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export RVM_GUEST_DIR=${RVM_GUEST_DIR:-$target/rvm-guest}
command_timeout=${RVM_E2E_TIMEOUT:-600}

die() { echo "e2e-net: error: $*" >&2; exit 1; }
say() { echo "e2e-net: $*"; }

rvm=${RVM_BIN:-}
if [ -z "$rvm" ]; then
    for candidate in "$target/release/rvm" "$target/debug/rvm"; do
        if [ -x "$candidate" ]; then rvm=$candidate; break; fi
    done
fi
[ -n "$rvm" ] && [ -x "$rvm" ] || die "no rvm binary: cargo build -p rvm-cli -p rvm-vmm first"
[ -x "$(dirname "$rvm")/rvm-vmm" ] || die "no rvm-vmm beside $rvm: cargo build -p rvm-vmm"
for file in vmlinux initramfs.img; do
    [ -f "$RVM_GUEST_DIR/$file" ] || die "$RVM_GUEST_DIR/$file is missing (guest-kernel/build, agent/build-initramfs)"
done
[ -c /dev/kvm ] || die "/dev/kvm is missing"
[ ! -d /sys/module/kvm_pvm ] || die "/dev/kvm is KVM-PVM (cannot boot Linux); run: tests/lab/run -- $0"
for tool in mkfs.erofs mkfs.ext4 nft curl ip ss busybox; do
    command -v "$tool" >/dev/null || die "'$tool' is missing (tools/install-deps)"
done
if [ ! -c /dev/net/tun ]; then
    modprobe tun 2>/dev/null
    [ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/e2e-net.XXXXXX")
root=$tmp/root
listener=
cleanup_netns=
cleanup() {
    [ -n "$listener" ] && kill "$listener" 2>/dev/null
    if [ -n "$cleanup_netns" ]; then
        ip link del rvmout0 2>/dev/null
        ip netns del "$cleanup_netns" 2>/dev/null
    fi
    if [ -d "$root/containers" ]; then
        "$rvm" --root "$root" ps -aq 2>/dev/null | while read -r id; do
            timeout 60 "$rvm" --root "$root" rm -f "$id" >/dev/null 2>&1 || true
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
ok() { echo "ok   $*"; }

# r ARGS...: runs rvm with this root; output in $out/$err, status in $status.
r() {
    timeout "$command_timeout" "$rvm" --root "$root" "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

check() {
    local name=$1
    shift
    if "$@"; then
        ok "$name"
    else
        fail "$name (status $status, stdout: ${out:0:400}, stderr: ${err:0:500})"
    fi
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

# --- the image --------------------------------------------------------------------------------
image=${RVM_E2E_IMAGE:-}
if [ -z "$image" ]; then
    [ -x "$repo/tools/busybox-image" ] || die "tools/busybox-image is missing; set RVM_E2E_IMAGE"
    image=$tmp/busybox-oci.tar
    "$repo/tools/busybox-image" "$image" >/dev/null || die "tools/busybox-image failed"
fi
r load -i "$image"
[ "$status" -eq 0 ] || die "rvm load -i $image failed ($status): $err"

# --- a web server with a published port ---------------------------------------------------------
r run -d --name web -p 8080:80 busybox sh -c 'mkdir -p /srv && echo hi > /srv/index.html && exec httpd -f -p 80 -h /srv'
web=$out
check "run -d --name web -p 8080:80 starts" test "$status" -eq 0 -a "${#web}" -eq 64
short=${web:0:12}

fetch() { page=$(curl -s --max-time 5 "$1") && [ "$page" = hi ]; }
until_ok 60 fetch http://localhost:8080/index.html
check "curl localhost:8080/index.html returns the file" test "${page:-}" = hi

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

if [ "$failures" -eq 0 ]; then
    say "all checks passed"
else
    say "$failures check(s) failed"
fi
[ "$failures" -eq 0 ]

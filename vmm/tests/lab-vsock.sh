#!/bin/bash
# vmm/tests/lab-vsock.sh: in the lab, virtio-vsock with the hybrid Unix socket. The guest runs an
# echo server on vsock port 1024 (tests/guest/vsock-test.c, built static here); the host side
# (lab-vsock-host.py) connects through the UDS with CONNECT 1024 and checks a 10 MiB echo both
# ways, 16 connections at once, EOF for a port nobody listens on and for bad CONNECT lines. The
# guest connects to host port 5000 (the host listens on UDS_5000) and checks a 10 MiB echo, and
# that a port without a host listener is refused.
#   cargo build --release -p rvm-vmm && tests/lab/run -- vmm/tests/lab-vsock.sh
source "$(dirname "$0")/lab-lib.sh"

command -v gcc >/dev/null || die "gcc is needed to build the guest's vsock-test"
gcc -static -O2 -o "$tmp/vsock-test" "$repo/tests/guest/vsock-test.c"

cat >"$tmp/vsock.sh" <<'GUEST'
/bin/vsock-test echo-server 1024 >/tmp/server.log 2>&1 &
i=0
while ! grep -q LISTENING /tmp/server.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "VSOCK-SERVER $(cat /tmp/server.log)"
head -c 10485760 /dev/urandom >/tmp/g.bin
want=$(sha256sum </tmp/g.bin | cut -d' ' -f1)
/bin/vsock-test connect 2 5000 </tmp/g.bin >/tmp/back.bin
echo "VSOCK-GUEST-ECHO-EXIT $? $(wc -c </tmp/back.bin) bytes back"
got=$(sha256sum </tmp/back.bin | cut -d' ' -f1)
if [ "$want" = "$got" ]; then echo "VSOCK-GUEST-ECHO-OK $got"; else echo "VSOCK-GUEST-ECHO-BAD want $want got $got"; fi
if /bin/vsock-test connect 2 5999 </dev/null; then echo VSOCK-NO-HOST-LISTENER-CONNECTED; else echo VSOCK-NO-HOST-LISTENER-REFUSED; fi
/bin/vsock-test accept-one 1099 && echo VSOCK-HOST-DONE
GUEST

# Unix sockets cannot live on the lab's shared repository filesystem: use its private /tmp.
sockdir=$(mktemp -d /tmp/lab-vsock.XXXXXX)
cleanup_hooks+=("rm -rf $sockdir")
uds=$sockdir/v.sock
python3 "$repo/vmm/tests/lab-vsock-host.py" "$uds" >"$tmp/host.log" 2>&1 &
host_pid=$!
cleanup_hooks+=("kill $host_pid 2>/dev/null")
deadline=$((SECONDS + 300))
until grep -q HOST-READY "$tmp/host.log" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "the host side did not start: $(cat "$tmp/host.log")"
    kill -0 "$host_pid" 2>/dev/null || die "the host side exited: $(cat "$tmp/host.log")"
    sleep 0.1
done

export RUST_LOG=${RUST_LOG:-rvm_vmm::devices::virtio::vsock=debug}
status=0
guest vsock "$tmp/vsock.sh" "$tmp/vsock-test:/bin/vsock-test" -- \
    --memory 256 --vsock "cid=3,uds=$uds" || status=$?
[ "$status" = 0 ] || fail "rvm-vmm exited $status"
host_status=0
wait "$host_pid" || host_status=$?
sed 's/^/host: /' "$tmp/host.log"
[ "$host_status" = 0 ] || fail "the host side reported failures (exit $host_status)"
for check in GUEST-REACHED ECHO-10MIB PARALLEL-16 NO-LISTENER-EOF BAD-PORT-CLOSED \
    LONG-LINE-CLOSED NOT-CONNECT-CLOSED SILENT-CLOSED STILL-WORKS GUEST-RELEASED; do
    if grep -q "^HOST-$check ok" "$tmp/host.log"; then say "ok: host $check"; else fail "host $check"; fi
done
check vsock '^VSOCK-SERVER LISTENING 1024' "the guest listens on vsock port 1024"
check vsock '^VSOCK-GUEST-ECHO-OK' "guest-initiated 10 MiB echo through UDS_5000"
check vsock '^VSOCK-NO-HOST-LISTENER-REFUSED' "guest connect to a port without host listener is refused"
check vsock '^VSOCK-HOST-DONE' "the host released the guest"
[ ! -e "$uds" ] || fail "rvm-vmm left its socket $uds behind"
if [ ${#failures[@]} -gt 0 ]; then
    echo "--- vsock console"; cat "$tmp/vsock.console"
    echo "--- rvm-vmm stderr (last 40 lines)"; tail -n 40 "$tmp/vsock.stderr"
fi
finish

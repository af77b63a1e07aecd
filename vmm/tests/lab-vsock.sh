#!/bin/bash
# vmm/tests/lab-vsock.sh: in the lab, virtio-vsock with the hybrid Unix socket. The guest runs an
# echo server on vsock port 1024 (tests/guest/vsock-test.c, built static here); the host side
# (lab-vsock-host.py) connects through the UDS with CONNECT 1024 and checks a 10 MiB echo both
# ways, 16 connections at once, EOF for a port nobody listens on and for bad CONNECT lines. The
# host side never listens for the guest: the guest's connects are refused, to host port 5000
# even though a host process listens on UDS_5000 (the VMM does not connect there), and to a
# port without any listener.
#   cargo build --release -p rvm-vmm && tests/lab/run -- vmm/tests/lab-vsock.sh
source "$(dirname "$0")/lab-lib.sh"

command -v gcc >/dev/null || die "gcc is needed to build the guest's vsock-test"
gcc -static -O2 -o "$tmp/vsock-test" "$repo/tests/guest/vsock-test.c"

cat >"$tmp/vsock.sh" <<'GUEST'
/bin/vsock-test echo-server 1024 >/tmp/server.log 2>&1 &
i=0
while ! grep -q LISTENING /tmp/server.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "VSOCK-SERVER $(cat /tmp/server.log)"
if /bin/vsock-test connect 2 5000 </dev/null; then echo VSOCK-GUEST-CONNECT-ACCEPTED; else echo VSOCK-GUEST-CONNECT-REFUSED; fi
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
check vsock '^VSOCK-GUEST-CONNECT-REFUSED' "guest connect to host port 5000 is refused (UDS_5000 is not used)"
if grep -q '^HOST-SERVED' "$tmp/host.log"; then fail "the VMM connected to UDS_5000"; else say "ok: nothing connected to UDS_5000"; fi
check vsock '^VSOCK-NO-HOST-LISTENER-REFUSED' "guest connect to a port without host listener is refused"
check vsock '^VSOCK-HOST-DONE' "the host released the guest"
# The socket stays: the VMM's seccomp filter forbids unlink (the runtime removes the directory).
[ -S "$uds" ] || fail "rvm-vmm's socket $uds is gone"
if [ ${#failures[@]} -gt 0 ]; then
    echo "--- vsock console"; cat "$tmp/vsock.console"
    echo "--- rvm-vmm stderr (last 40 lines)"; tail -n 40 "$tmp/vsock.stderr"
fi
finish

#!/usr/bin/env python3
"""vmm/tests/lab-vsock-host.py UDS: the host side of lab-vsock.sh.

Listens on UDS_5000, where an older VMM connected guest-initiated connections (reads to EOF,
echoes everything back, prints HOST-SERVED: the VMM must no longer come), waits for the guest's echo server on port 1024 through the hybrid socket, then runs
the host-initiated checks and prints one "HOST-... ok|FAIL ..." line each. Finally connects to
guest port 1099, which tells the guest to finish. Exits 1 if any check failed.
"""
import hashlib
import os
import socket
import sys
import threading
import time

UDS = sys.argv[1]
DEADLINE = time.monotonic() + float(os.environ.get("VSOCK_READY_TIMEOUT", "900"))
MIB = 1024 * 1024
failures = []


def report(name, ok, detail=""):
    print(f"HOST-{name} {'ok' if ok else 'FAIL'} {detail}".rstrip(), flush=True)
    if not ok:
        failures.append(name)


def serve_guest(listener):
    def one(conn):
        with conn:
            data = bytearray()
            while chunk := conn.recv(MIB):
                data += chunk
            print(f"HOST-SERVED guest-initiated connection: {len(data)} bytes in, "
                  f"sha256 {hashlib.sha256(data).hexdigest()[:16]}", flush=True)
            conn.sendall(data)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def hybrid_connect(port, timeout=30):
    """CONNECT through the hybrid socket; returns (socket, reply line or None on EOF)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(UDS)
    s.sendall(f"CONNECT {port}\n".encode())
    line = b""
    while not line.endswith(b"\n"):
        try:
            byte = s.recv(1)
        except ConnectionResetError:
            byte = b""
        if not byte:
            return s, None
        line += byte
    return s, line.decode()


def wait_for_guest():
    while time.monotonic() < DEADLINE:
        if os.path.exists(UDS):
            try:
                s, reply = hybrid_connect(1024, timeout=10)
                if reply and reply.startswith("OK "):
                    return s
                s.close()
            except OSError:
                pass
        time.sleep(0.2)
    return None


def echo_check(s, size, seed):
    """Sends `size` bytes and reads the echo concurrently; True if the sha256 sums match."""
    data = hashlib.shake_256(seed.encode()).digest(size)
    sent = hashlib.sha256(data).hexdigest()

    def writer():
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    got = hashlib.sha256()
    total = 0
    while chunk := s.recv(MIB):
        got.update(chunk)
        total += len(chunk)
    t.join()
    s.close()
    return got.hexdigest() == sent and total == size, f"{total} bytes, sha256 {got.hexdigest()[:16]}"


def main():
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(UDS + "_5000")
    listener.listen(16)
    threading.Thread(target=serve_guest, args=(listener,), daemon=True).start()
    print("HOST-READY", flush=True)

    first = wait_for_guest()
    report("GUEST-REACHED", first is not None, "CONNECT 1024 answered OK")
    if first is None:
        return 1
    first.settimeout(120)
    ok, detail = echo_check(first, 10 * MIB, "ten")
    report("ECHO-10MIB", ok, detail)

    results = [None] * 16

    def parallel(i):
        try:
            s, reply = hybrid_connect(1024)
            if not (reply and reply.startswith("OK ")):
                results[i] = (False, f"reply {reply!r}")
                return
            s.settimeout(120)
            results[i] = echo_check(s, MIB, f"conn{i}")
        except OSError as e:
            results[i] = (False, str(e))
    threads = [threading.Thread(target=parallel, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    good = sum(1 for r in results if r and r[0])
    report("PARALLEL-16", good == 16, f"{good}/16 echoed 1 MiB intact {[r for r in results if not (r and r[0])]}")

    s, reply = hybrid_connect(4444)
    report("NO-LISTENER-EOF", reply is None, f"reply {reply!r}")
    s.close()

    for name, line in [("BAD-PORT", b"CONNECT abc\n"), ("LONG-LINE", b"C" * 100),
                       ("NOT-CONNECT", b"HELLO 1024\n")]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(UDS)
        try:
            s.sendall(line)
            closed = s.recv(64) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        report(f"{name}-CLOSED", closed, repr(line[:20]))
        s.close()

    # Silent client: no newline ever; the VMM closes it after its handshake timeout.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(UDS)
    s.sendall(b"CONNECT 10")
    try:
        closed = s.recv(64) == b""
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        closed = False
    report("SILENT-CLOSED", closed, "partial line without newline")
    s.close()

    # The device still works after all that.
    s, reply = hybrid_connect(1024)
    ok = bool(reply and reply.startswith("OK "))
    if ok:
        s.settimeout(60)
        ok, detail = echo_check(s, 64 * 1024, "after")
    report("STILL-WORKS", ok, f"reply {reply!r}")

    # The guest listens on 1099 once its own checks are done: retry until then.
    released = False
    while not released and time.monotonic() < DEADLINE:
        s, reply = hybrid_connect(1099)
        released = bool(reply and reply.startswith("OK "))
        s.close()
        if not released:
            time.sleep(0.5)
    report("GUEST-RELEASED", released, "guest port 1099 answered")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

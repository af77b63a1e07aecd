#!/usr/bin/env python3
"""vmm/tests/lab-block-slots-host.py SOCKET CONSOLE IMAGE1 IMAGE2: the host side of the disk-slot
case in lab-block.sh, speaking rvm-vmm's --api protocol by hand (one request per line, the
image's descriptor as SCM_RIGHTS on the ATTACH line's message).

Follows the guest through its console log: when it shows SLOT-WAITING, attaches IMAGE1 to slot 0
as serial slot-one (and checks that a second ATTACH is refused); at SLOT-READ detaches it; at
SLOT-EMPTY attaches IMAGE2 as slot-two; sends a garbage line and a half line in between. Prints
one "HOST-<STEP> <reply>" line per request. Exits 1 if the guest never got to a step.
"""
import os
import socket
import sys
import time

SOCKET, CONSOLE, IMAGE1, IMAGE2 = sys.argv[1:5]
DEADLINE = time.monotonic() + float(os.environ.get("SLOT_HOST_TIMEOUT", "600"))


def wait_for(marker):
    while time.monotonic() < DEADLINE:
        try:
            with open(CONSOLE, "rb") as console:
                if marker.encode() in console.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    print(f"HOST-TIMEOUT waiting for {marker}", flush=True)
    sys.exit(1)


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(SOCKET)
    return s


def reply(s):
    line = b""
    while not line.endswith(b"\n"):
        byte = s.recv(1)
        if not byte:
            return "EOF"
        line += byte
    return line.decode(errors="replace").rstrip("\n")


def request(step, line, image=None):
    with connect() as s:
        data = (line + "\n").encode()
        if image is None:
            s.sendall(data)
        else:
            with open(image, "rb") as f:
                socket.send_fds(s, [data], [f.fileno()])
        print(f"HOST-{step} {reply(s)}", flush=True)


def garbage():
    """A line of garbage (answered with ERR) and a half line left behind by a client that goes."""
    with connect() as s:
        s.sendall(b"\x00\xffNOT A REQUEST\n")
        print(f"HOST-GARBAGE {reply(s)}", flush=True)
    with connect() as s:
        s.sendall(b"ATTACH 0 half")


wait_for("SLOT-WAITING")
garbage()
request("ATTACH", "ATTACH 0 slot-one", IMAGE1)
request("ATTACH-AGAIN", "ATTACH 0 again", IMAGE2)
wait_for("SLOT-READ")
request("DETACH", "DETACH 0")
wait_for("SLOT-EMPTY")
request("ATTACH2", "ATTACH 0 slot-two", IMAGE2)
print("HOST-DONE", flush=True)

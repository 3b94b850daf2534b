"""The fake NIC's wire, made real: what the bridge puts on fk0's wire goes out of a
veth, and what comes in on that veth is injected on fk0's wire.

    python wire_relay.py CTL_SOCKET NIC IFNAME

runs in the namespace of IFNAME and talks to the fake netmap module through its
control socket (tests/fakenetmap/README.md: `read NIC wire MS`, `inject NIC wire
HEX`, `stats`), over one connection: the shim serves one at a time. It prints
READY once it runs and, at SIGTERM, one JSON object: the frames each way, the
longest frame the bridge put on the wire, how many were too long for the veth
to send (not sent), and the shim's counters.

Standard library only: it runs in a test's namespace, outside pytest.
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import sys
from typing import Any

ETH_P_ALL = 3
PACKET_OUTGOING = 4
#: the longest wait of one read of the wire: how late the relay sees what comes in
READ_MS = 2


class Ctl:
    """One connection to the shim's control socket, one request at a time."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.pending = b""

    def request(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        while b"\n" not in self.pending:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the shim closed its control socket")
            self.pending += chunk
        reply, _, self.pending = self.pending.partition(b"\n")
        return reply.decode()


def main(ctl_path: str, nic: str, ifname: str) -> None:
    stop = False

    def on_term(_signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    ctl = Ctl(ctl_path)
    veth = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    veth.bind((ifname, ETH_P_ALL))
    veth.setblocking(False)
    to_veth = from_veth = longest = too_long = 0
    print("READY", flush=True)
    while not stop:
        reply = ctl.request(f"read {nic} wire {READ_MS}")
        if reply.startswith("frame "):
            frame = bytes.fromhex(reply[6:])
            longest = max(longest, len(frame))
            try:
                veth.send(frame)
            except OSError as exc:  # a wire of the veth's MTU would not carry it either
                if exc.errno != errno.EMSGSIZE:
                    raise
                too_long += 1
            to_veth += 1
        while True:
            try:
                data, addr = veth.recvfrom(1 << 17)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:  # what the relay itself sent
                continue
            answer = ctl.request(f"inject {nic} wire {data.hex()}")
            if answer != "ok":
                raise RuntimeError(f"inject: {answer}")
            from_veth += 1
    stats = dict(w.split("=") for w in ctl.request("stats").split())
    print(json.dumps({"to_veth": to_veth, "from_veth": from_veth, "longest": longest,
                      "too_long": too_long,
                      "shim": {k: int(v) for k, v in stats.items()}}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""The two ends of a filter test's bridge (run inside its namespace): send frames on
one veth end, capture on the other what crossed; a frame's VLAN tag, which the kernel
takes out, is put back from its auxdata as libpcap does.

stdin: {"send": {IFACE: [hex, ...]}, "expect": {IFACE: n}, "mark": hex, "timeout": s}
stdout: {IFACE: [hex, ...]}, the frames received on each IFACE of "expect" whose source
MAC starts with "mark", in order; after the n expected, it waits a little for any extra.
Not a test module.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

ETH_P_ALL = 3
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
GRACE = 0.3  # seconds to wait for frames beyond the expected ones


def with_tag(frame: bytes, ancdata: list[tuple[int, int, bytes]]) -> bytes:
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
            status, _len, _snap, _mac, _net, tci, tpid = AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                if not (status & TP_STATUS_VLAN_TPID_VALID and tpid):
                    tpid = 0x8100
                return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return frame


def main() -> None:
    req = json.load(sys.stdin)
    mark = bytes.fromhex(req["mark"])
    rx = {}
    for ifname in req["expect"]:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # nothing until bound
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.bind((ifname, ETH_P_ALL))
        s.settimeout(0.02)
        rx[ifname] = s
    for ifname, frames in req["send"].items():
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.bind((ifname, 0))
        for f in frames:
            tx.send(bytes.fromhex(f))
        tx.close()
    got: dict[str, list[str]] = {ifname: [] for ifname in rx}
    deadline = time.monotonic() + req["timeout"]
    done_at = None
    while time.monotonic() < (deadline if done_at is None else done_at):
        for ifname, s in rx.items():
            try:
                frame, anc, _flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(AUXDATA.size))
            except (TimeoutError, socket.timeout):
                continue
            if addr[2] == PACKET_OUTGOING or frame[6:6 + len(mark)] != mark:
                continue
            got[ifname].append(with_tag(frame, anc).hex())
        if done_at is None and all(len(got[i]) >= n for i, n in req["expect"].items()):
            done_at = time.monotonic() + GRACE
    json.dump(got, sys.stdout)


if __name__ == "__main__":
    main()

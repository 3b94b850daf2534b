"""Frames from a kernel port to a packet: port, through the real C loop.

A packet: port gets its TX frames only from the other port of its bridge; a
kernel netmap port is the one that can hand it a slot shorter than an
Ethernet header (a program writing into a netmap pipe puts any length). The
bridge runs in a child process with the shim preloaded, inside a network
namespace of its own that holds the veth pair of the packet: port.
"""

from __future__ import annotations

from typing import Any

import pytest
from namespaces import add_veth

FakeKernel = Any  # the `fake` fixture's class (tests/kernel/conftest.py)

pytestmark = pytest.mark.root


#: pipe end pa}1 (this program) -> pa{1 -> the bridge -> packet:pk0 -> veth -> pk0p
SHORT_TO_PACKET = r'''
import socket

DST = b"\x02\x00\x00\x00\x00\x02"
peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
peer.bind(("pk0p", 0))
peer.settimeout(0.2)
a, b = open_ports("netmap:pa{1", "packet:pk0")
(writer,) = open_ports("netmap:pa}1")
bridge = engine.Bridge(a, b, rx_usecs=0)
short, whole = frame(0, tag=b"s")[:10], frame(1, 60, tag=b"w")
send(writer, [short, whole])
deadline = time.monotonic() + 5
while bridge.forwarded < 2 and time.monotonic() < deadline:
    bridge.run(50)
dropped = bridge.flush()
got = []
deadline = time.monotonic() + 1
while time.monotonic() < deadline:  # the peer's own traffic (IPv6) has other addresses
    try:
        data = peer.recv(65536)
    except socket.timeout:  # not TimeoutError on Python 3.9
        continue
    if data[:6] == DST:
        got.append(data.hex())
rings = [[r.port, r.direction, r.ringid] for r in bridge.rings()]
result(forwarded=bridge.forwarded, dropped=dropped, rings=rings, counters=bridge.counters(),
       got=got, whole=whole.hex())
engine.close_ports([a, b, writer])
'''


def test_a_frame_shorter_than_an_ethernet_header_is_dropped_and_counted(
    fake: FakeKernel, netns: str
) -> None:
    """A 10-byte slot from a kernel port is no frame a packet socket sends as it
    is: the kernel skips it without a word (PACKET_LOSS; seen here even as root),
    or pads it to 14 bytes for a sender with CAP_SYS_RAWIO (af_packet.c). Either
    way it would pass for forwarded: nmbridge drops it and counts it as drop_tx
    on the packet: port's TX ring, and only the 60-byte frame behind it arrives."""
    add_veth(netns, "pk0", "pk0p")
    r = fake.run_py(SHORT_TO_PACKET, netns=netns).result
    counters = {tuple(ring): c for ring, c in zip(r["rings"], r["counters"])}
    tx = counters[(1, "tx", 0)]
    # the loop moved both onto the TX ring; the port's txsync refused one
    assert r["forwarded"] == 2 and tx["frames"] == 2, r["counters"]
    assert tx["drop_tx"] == 1 and r["dropped"] == 0, r["counters"]
    assert r["got"] == [r["whole"]], r["got"]

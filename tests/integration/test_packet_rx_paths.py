"""A packet: port's two receive paths, with real frames in namespaces (root).

The kernel takes a frame's outer VLAN tag out before a packet socket sees it. The
TPACKET ring says so in each frame's header; the recvmmsg path (interfaces whose
MTU is above 16276, or where the rings cannot be set up) only in each frame's
auxdata. A tag not put back is a frame that crosses into another VLAN: tagged 42 it
crossed untagged, double-tagged [42, 7] it crossed as [7]. Here each path carries
tagged frames (802.1Q, QinQ, 802.1ad, a priority tag) to the TAP, where a socket
that reads the auxdata itself sees them exactly as they were sent.

And a port whose TX ring cannot be had (no descriptor for its second socket) falls
back to the batched syscalls with its RX ring released: it used to keep the ring
attached and unmapped, open with 0, and never receive a frame.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from namespaces import add_veth
from reliability_lab import Lab

from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

DST = bytes.fromhex("020000000002")
SRC = bytes.fromhex("020000000001")
ETHERTYPE = b"\x88\xb5"  # local experimental: no stack on the way answers it


def _frame(i: int, tags: list[tuple[int, int]]) -> bytes:
    body = DST + SRC + b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags)
    body += ETHERTYPE + b"nmbvlan-%03d-" % i
    return body + bytes(range(max(0, 80 - len(body))))


#: (name, tags): outer first
TAGGINGS = [
    ("untagged", []),
    ("vid 42", [(0x8100, 42)]),
    ("qinq 42/7", [(0x8100, 42), (0x8100, 7)]),
    ("802.1ad 100/7", [(0x88A8, 100), (0x8100, 7)]),
    ("priority 5, vid 0", [(0x8100, 5 << 13)]),
    ("vid 4095, pcp 7, dei", [(0x8100, 0xFFFF)]),
]

SEND = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for frame in sys.argv[2:]:
    s.send(bytes.fromhex(frame))
"""

#: what arrives on an interface as it arrived: the outer tag put back from the auxdata
OBSERVE = r"""
import select, socket, struct, sys, time
SOL_PACKET, PACKET_AUXDATA = 263, 8
VLAN_VALID, VLAN_TPID_VALID = 0x10, 0x40
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
s.bind((sys.argv[1], 0))
want, deadline = int(sys.argv[2]), time.monotonic() + 15
print("ready", flush=True)
while want and time.monotonic() < deadline:
    if not select.select([s], [], [], 0.2)[0]:
        continue
    data, anc, _flags, addr = s.recvmsg(70000, socket.CMSG_SPACE(32))
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    for level, kind, c in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA:
            status, _l, _s, _m, _n, tci, tpid = struct.unpack("IIIHHHH", c[:20])
            if status & VLAN_VALID:
                tpid = tpid if status & VLAN_TPID_VALID and tpid else 0x8100
                data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
    if b"nmbvlan-" in data:
        print(data.hex(), flush=True)
        want -= 1
"""


def _maps_a_socket(pid: int) -> bool:
    """Whether a process has a socket's memory mapped (a TPACKET ring)."""
    with open(f"/proc/{pid}/maps") as f:
        return any(re.search(r"socket:\[\d+\]", line) for line in f)


@pytest.mark.parametrize("path", ["ring", "recvmmsg"])
def test_vlan_tags_cross_as_they_were_sent(path: str,
                                           make_sandbox: Callable[..., Sandbox]) -> None:
    """wire -> packet: -> tap: with every tagging; the TAP sees each frame byte for
    byte. MTU 1500: the TPACKET ring; MTU 20000: recvmmsg (the ring's frames would be
    too large), the path that lost the tags."""
    sb = make_sandbox(mtu=1500 if path == "ring" else 20000)
    lab = Lab(sb)
    bridge = lab.start_bridge(name="vlan")
    assert _maps_a_socket(bridge.pid) == (path == "ring")
    sent = [_frame(i, tags) for i, (_name, tags) in enumerate(TAGGINGS)]
    observer = sb.popen(sb.bridge_ns, [sys.executable, "-c", OBSERVE, sb.tap_if,
                                       str(len(sent))],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert observer.stdout is not None
        assert observer.stdout.readline().strip() == "ready", observer.stderr
        sb.run(sb.wire_ns, [sys.executable, "-c", SEND, sb.wire_if,
                            *(f.hex() for f in sent)], timeout=30)
        got = [bytes.fromhex(line) for line in observer.stdout.read().split()]
    finally:
        sb.stop(observer)
    names = [name for name, _tags in TAGGINGS]
    assert dict(zip(names, got)) == dict(zip(names, sent))


FALLBACK = r"""
import os, resource, socket, sys, time
from nmbridge._ffi._core import ffi, lib
rings = ffi.new("uint32_t[]", [1, 0, 1, 0])
out = ffi.new("struct nmb_region **")
assert lib.nmb_region_new(1, rings, 1024, 2048, out) == 0
port = lib.nmb_port_new()
port.region = out[0]
assert lib.nmb_port_bind(port, lib.nmb_region_if(out[0], 0)) == 0
ifindex = socket.if_nametoindex(sys.argv[1])
assert lib.nmb_ctl_socket() >= 0
# room for exactly one descriptor: the port's socket gets it, its TX socket none
lowest = os.open("/dev/null", os.O_RDONLY)
os.close(lowest)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest + 1, hard))
rc = lib.nmb_packet_open(port, ifindex, 1518, 0)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
assert rc == 0, rc
maps = open("/proc/self/maps").read()
print("ready", "socket:[" in maps, flush=True)
stats = ffi.new("struct nmb_ring_stats *")
ring = port.rx[0]
got, deadline = 0, time.monotonic() + 10
while got < int(sys.argv[2]) and time.monotonic() < deadline:
    n = lib.nmb_eport_rxsync(port, stats)
    assert n >= 0, n
    slots = lib.nmb_ring_slots(ring)
    while ring.head != ring.tail:
        s = slots[ring.head]
        buf = ffi.cast("char *", ring) + ring.buf_ofs + s.buf_idx * ring.nr_buf_size
        if b"nmbvlan-" in ffi.buffer(buf, s.len)[:]:
            got += 1
        ring.head = ring.cur = (ring.head + 1) % ring.num_slots
    time.sleep(0.01)
print("received", got, flush=True)
"""


def test_a_port_without_its_tx_ring_still_receives(
        make_netns: Callable[[str], str]) -> None:
    ns = make_netns("fallback")
    add_veth(ns, "nmbfa0", "nmbfb0")
    frames = [_frame(i, [(0x8100, 42)] if i % 2 else []) for i in range(10)]
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", FALLBACK,
                             "nmbfa0", str(len(frames))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready == ["ready", "False"], (ready, proc.stderr.read() if ready == [] else "")
        time.sleep(0.2)
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SEND, "nmbfb0",
                        *(f.hex() for f in frames)], check=True, timeout=30)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.split() == ["received", str(len(frames))], out + err

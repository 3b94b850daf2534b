"""A packet: port's TX ring keeps giving its slots back, with real frames (root).

The port transmits through a TPACKET_V2 TX ring: it writes a frame into a slot,
marks it SEND_REQUEST, and a send() hands every such slot to the kernel, which
marks each SENDING and then AVAILABLE once its skb is freed. A slot the kernel
refuses (the peer's backlog full, the send buffer full, no carrier) goes back to
SEND_REQUEST, and the kernel takes nothing more until a later send(). A writer
that calls send() only when it has queued new frames stalls for good once its
ring is full of refused frames: nothing new can be queued, so nothing is ever
sent again, and every later frame is lost. On kernel 6.18 the shared bench's
reference forwarder (fwdref, TX-ring mode) stops that way after a few hundred
thousand frames.

Here a port on a veth streams 100 ring-fulls, its netmap TX ring twice the
socket's TX ring, so that the socket's ring is full at every sync. Its TX socket
gets the smallest send buffer and the peer's receive work another core (RPS),
where there is one: a few frames are in flight at a time and nearly every
send() leaves frames SEND_REQUEST, as under load. Then the peer goes down while
a ring-full waits, every send() is refused, and the peer comes back: the port,
given no new frame, must send them all. Every frame must arrive (the peer's
rx_packets) and every slot come back. A stall shows as a sync loop that gets
nowhere: it ends after STALL_S with what the ring still held.

No addresses: the frames (local experimental EtherType 0x88b5) exist only on
the veth pair of a namespace the test makes and removes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from namespaces import add_veth

pytestmark = pytest.mark.root

#: a ring that makes no progress for this long has stalled (a hang guard, not a timing)
STALL_S = 10.0
#: frames streamed: 100 ring-fulls of the socket's TX ring
FRAMES = 102400

PUSH = r"""
import json, os, socket, subprocess, sys, time
from nmbridge._ffi._core import ffi, lib

ifname, peer, total, stall_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
SLOTS = 2048  # the netmap TX ring: twice the socket's TX ring (1024 frames)
HEAD = bytes.fromhex("020000000002" "020000000001" "88b5") + b"nmbtx-"

cpus = sorted(os.sched_getaffinity(0))
if len(cpus) > 1:
    # the sender on one core, the peer's receive work on another: frames wait in
    # that core's backlog, the send buffer fills, the kernel refuses some
    os.sched_setaffinity(0, {cpus[0]})
    with open(f"/sys/class/net/{peer}/queues/rx-0/rps_cpus", "w") as f:
        f.write(f"{1 << cpus[1]:x}")

rings = ffi.new("uint32_t[]", [1, 0, 1, 0])
out = ffi.new("struct nmb_region **")
assert lib.nmb_region_new(1, rings, SLOTS, 2048, out) == 0
port = lib.nmb_port_new()
port.region = out[0]
assert lib.nmb_port_bind(port, lib.nmb_region_if(out[0], 0)) == 0
assert lib.nmb_ctl_socket() >= 0

def sockets():
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                out.add(int(fd))
        except OSError:
            pass
    return out

before = sockets()
assert lib.nmb_packet_open(port, socket.if_nametoindex(ifname), 1518, 4 << 20) == 0
with open("/proc/self/maps") as f:
    ring_mapped = "socket:[" in f.read()
# the port's TX socket (the one it opened besides its own) gets the smallest send
# buffer: a few frames in flight, and send() refuses the rest (EAGAIN) until they
# are freed; frames left SEND_REQUEST at nearly every sync
(txfd,) = sockets() - before - {port.fd}
tx = socket.socket(fileno=os.dup(txfd))
tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
tx.close()

ring = port.tx[0]
slots = lib.nmb_ring_slots(ring)
bufs = ffi.cast("char *", ring) + ring.buf_ofs
stats = ffi.new("struct nmb_ring_stats *")
seq = 0

def delivered():
    with open(f"/sys/class/net/{peer}/statistics/rx_packets") as f:
        return int(f.read())

def free():
    return (ring.tail - ring.head) % SLOTS

def fill(n):
    global seq
    for _ in range(n):
        s = slots[ring.head]
        frame = HEAD + seq.to_bytes(8, "big") + bytes(40)
        ffi.memmove(bufs + s.buf_idx * ring.nr_buf_size, frame, len(frame))
        s.len, s.flags = len(frame), 0
        ring.head = ring.cur = (ring.head + 1) % SLOTS
        seq += 1

def tx_dropped():
    with open(f"/sys/class/net/{ifname}/statistics/tx_dropped") as f:
        return int(f.read())

left_behind = 0

def sync():
    global left_behind
    rc = lib.nmb_eport_txsync(port, stats)
    assert rc == 0, rc
    left_behind += bool(lib.nmb_eport_tx_pending(port))

def push(until):
    # as the loop does: refill what came back and txsync, until `until` frames
    # were queued, then txsync while the port says it holds frames, until every
    # slot is back; stall_s without progress is a stall (False)
    last, since = None, time.monotonic()
    while seq < until or lib.nmb_eport_tx_pending(port) or free() != SLOTS - 1:
        fill(min(free(), until - seq))
        sync()
        now = (free(), lib.nmb_eport_tx_pending(port), delivered())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall_s:
            return False
        else:
            time.sleep(0.0002)
    return True

start, dropped = delivered(), tx_dropped()
# streaming: the socket's ring stays full
drained = push(total)
streamed = {"sent": seq, "delivered": delivered() - start, "drained": drained,
            "syncs_leaving_frames": left_behind, "refused_by_veth": tx_dropped() - dropped}

# refused: no carrier while a ring-full waits; then only syncs, no new frame
subprocess.run(["ip", "link", "set", peer, "down"], check=True)
start, before = delivered(), seq
fill(free())
for _ in range(20):
    sync()
held = {"pending": bool(lib.nmb_eport_tx_pending(port)), "delivered": delivered() - start}
subprocess.run(["ip", "link", "set", peer, "up"], check=True)
drained = push(seq)
refused = {"sent": seq - before, "delivered": delivered() - start, "drained": drained,
           "while_down": held}

print(json.dumps({"ring": ring_mapped, "streamed": streamed, "refused": refused,
                  "drop_tx": stats.drop_tx, "free": free(),
                  "pending": bool(lib.nmb_eport_tx_pending(port))}), flush=True)
lib.nmb_port_free(port)
lib.nmb_region_free(out[0])
"""


def test_tx_ring_slots_keep_coming_back(make_netns: Callable[[str], str]) -> None:
    ns = make_netns("txring")
    add_veth(ns, "nmbtr0", "nmbtr1")
    # the product's TX path, whatever the caller's environment says
    env = {k: v for k, v in os.environ.items() if k != "NMBRIDGE_PACKET_TX"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PUSH,
                           "nmbtr0", "nmbtr1", str(FRAMES), str(STALL_S)],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["ring"], "the port did not get its TPACKET rings"
    streamed, refused = got["streamed"], got["refused"]
    assert streamed["drained"] and refused["drained"], f"the TX ring stalled: {got}"
    assert streamed["sent"] == FRAMES
    assert streamed["delivered"] == FRAMES, got
    # while the peer was down nothing went, and the port knew it held frames
    assert refused["while_down"] == {"pending": True, "delivered": 0}, got
    assert refused["delivered"] == refused["sent"] == 2047, got
    assert got["drop_tx"] == 0, got
    assert got["free"] == 2047 and not got["pending"], got

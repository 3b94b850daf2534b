"""Virtio-net headers chosen by whoever sits on a veth (root).

A program on the far end of the veth behind a `packet:` port writes its frames
through a packet socket with PACKET_VNET_HDR: the header in front of each frame
becomes the skb's offload state, its GSO metadata marked SKB_GSO_DODGY, which the
kernel checks only where it segments. A veth does not segment: the super-frame
reaches nmbridge's packet socket whole, header and all. The attacker
(tests/integration/hostile_peer.py) sends hostile headers and frames, each
with a good frame on either side, through

    packet-tap:    [wire ns] nmbw0 ==veth== nmbv0 [bridge ns] nmbt0 (TAP) 198.18.0.2
                   nmbridge -i packet:nmbv0 -i tap:nmbt0
    packet-packet: [a ns] nmba0 ==veth== nmbd0 [bridge ns] nmbd1 ==veth== nmbb0
                   198.18.0.2 [b ns];  nmbridge -i packet:nmbd0 -i packet:nmbd1

and checks that the bridge keeps running, that every frame it did not forward
is counted (the drop_* fields of the attacker's RX ring: what came in on the
attacker's port and was not forwarded is what did not reach the receiver's
interface, and everything forwarded did), that the good frames reach the
receiver's socket whole and in order, and that the receiving stack counts no
checksum error.

What the kernel (6.18) itself refuses at sendto(), so that nmbridge never sees
it: gso_size 0 and unknown gso types (EINVAL), a csum_offset other than the
L4 type's, TCPV6 on an IPv4 frame, hdr_len past the frame, USO with more
segments than UDP_MAX_SEGMENTS and USO with the ECN bit (EINVAL); csum_start
anywhere but the transport header it finds by dissecting the frame (at the IP
header, in the IP options, inside the TCP header, at the payload), a TCP doff
past the frame, an IP header length under 20, UDP inside a TCPV4 super-frame,
a super-frame that is not IP, TCPv6 behind a fragment header (ENOMEM: the
dissector finds no transport header where csum_start says). Older
kernels accept some of these: nmbridge's own check then drops them (hence they
stay in the list, and the test takes a refusal or a drop for them).

What the kernel takes and repairs on the way, so that a sound frame reaches
nmbridge: gso_size bigger than the payload (no GSO at all then), a super-frame
without NEEDS_CSUM (it sets it), an unknown header flag (cleared), UFO (the
veth fragments it). What it takes as it is and nmbridge must drop: gso_size 1
(more segments than nmbridge makes), an IP total length short of or past the
frame, an IP fragment, three VLAN tags, a UDP length that disagrees with the
frame, an IPv6 payload length that disagrees with it, IPv6 extension headers
that put the TCP header past 256 bytes (sound to the kernel: nmbridge keeps a
super-frame's headers within GSO_MAX_HDRS). Each case says which of these it
is (hostile_peer.py, hostile()); the good frames include the largest USO
super-frame a veth passes whole (65535 bytes from the Ethernet header on).

Namespaces, links and processes are removed after each test, whatever happens.
Only 198.18.0.0/15. Timeouts only stop a hang.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peers
import pytest
from hostile_peer import GOOD, judge
from peers import ready
from test_offloads import Bridge, Topology, csum_errors, packet_packet

from nmbridge.lab import sandbox
from nmbridge.lab.sandbox import TAP_MAC, Sandbox

pytestmark = pytest.mark.root

PEER = str(Path(__file__).resolve().parent / "hostile_peer.py")
B_MAC = "02:00:c6:12:01:02"  # test_offloads.py's packet-packet receiver
TIMEOUT = 8.0


class Setup:
    """A topology and where its attacker, its receiver and the bridge's ports sit."""

    def __init__(self, topo: Topology, attacker_if: str, dst_mac: str, port_if: str,
                 receiver_if: str) -> None:
        self.topo = topo
        self.attacker_if = attacker_if  # in topo.a_ns
        self.dst_mac = dst_mac
        self.port_if = port_if  # the attacker's side of the bridge, in topo.bridge_ns
        self.receiver_if = receiver_if  # in topo.b_ns

    def peer(self, ns: str, *args: str) -> subprocess.Popen[str]:
        return self.topo.popen(ns, [sys.executable, "-I", PEER, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rx_packets(ns: str, ifname: str) -> int:
    path = f"/sys/class/net/{ifname}/statistics/rx_packets"
    return int(sandbox.run(sandbox.netns_exec(ns, ["cat", path])).stdout)


@pytest.fixture(params=["packet-tap", "packet-packet"])
def setup(request: pytest.FixtureRequest, make_sandbox: Callable[..., Sandbox],
          make_netns: Callable[[str], str], tmp_path: Path) -> Iterator[Setup]:
    if request.param == "packet-tap":
        sb = make_sandbox()
        topo = Topology("packet-tap", sb.wire_ns, sb.bridge_ns, sb.bridge_ns,
                        (sb.wire_port, sb.host_port), [], sb.tempdir("stats"),
                        sb.tempdir("log"), sb.popen)
        made = Setup(topo, sb.wire_if, TAP_MAC, sb.veth_if, sb.tap_if)
    else:
        stats = tmp_path / "stats"
        stats.mkdir(mode=0o700)
        topo = packet_packet(make_netns, str(stats), str(tmp_path), [])
        made = Setup(topo, "nmba0", B_MAC, "nmbd0", "nmbb0")
    try:
        yield made
    finally:  # the sandbox stops its own; these run in namespaces of make_netns
        for proc in topo.procs:
            Sandbox.stop(proc)


def finish(proc: subprocess.Popen[str], what: str) -> Any:
    """The JSON a peer printed last."""
    return peers.report(proc, what, TIMEOUT + 5, opener="[")


def test_hostile_headers_are_dropped_counted_and_good_frames_pass(setup: Setup) -> None:
    topo = setup.topo
    bridge = Bridge(topo)
    before_in = rx_packets(topo.bridge_ns, setup.port_if)
    before_out = rx_packets(topo.b_ns, setup.receiver_if)
    errors_before = csum_errors(topo.b_ns)
    capture = setup.peer(topo.b_ns, "capture", setup.receiver_if, f"{TIMEOUT:g}")
    ready(capture, "the receiver's capture")
    receiver = setup.peer(topo.b_ns, "udp-recv", "198.18.0.2", f"{TIMEOUT:g}")
    ready(receiver, "the receiver")
    sent = finish(setup.peer(topo.a_ns, "send", setup.attacker_if, setup.dst_mac), "attacker")
    arrived = finish(capture, "the receiver's capture")
    datagrams = finish(receiver, "the receiver")
    rings = bridge.settled_rings()
    came_in = rx_packets(topo.bridge_ns, setup.port_if) - before_in
    went_out = rx_packets(topo.b_ns, setup.receiver_if) - before_out
    assert bridge.proc.poll() is None, "the bridge is gone"

    outcome, wrong = judge(sent, {a["marker"] for a in arrived})
    table = "\n".join(f"  {name}: {what}" for name, what in outcome.items())
    print(f"\n{topo.name}:\n{table}")
    assert not wrong, "\n".join(wrong)

    # the good frames at the receiver's socket: every datagram, whole, in order
    good = [s for s in sent if s["expect"] == GOOD]
    want = [s["marker"] for s in good for _ in range(s["datagrams"])]
    got = [d for d in datagrams if d["marker"].startswith("NMBG")]
    assert [d["marker"] for d in got] == want, datagrams
    assert all(d["whole"] for d in got), datagrams

    # the books: what came in and was not forwarded is counted, and is what did not arrive
    port_rx = [r for r in rings if r["port_name"] == topo.ports[0] and r["direction"] == "rx"]
    other_tx = [r for r in rings if r["port_name"] == topo.ports[1] and r["direction"] == "tx"]
    forwarded = sum(r["frames"] for r in port_rx)
    dropped = sum(r["drops"] for r in port_rx)  # every reason: header, gso, oversize, ...
    print(f"in {came_in}, forwarded {forwarded}, dropped {dropped}, out {went_out}: "
          f"{port_rx}")
    assert forwarded + dropped == came_in, port_rx
    assert dropped == sum(1 for what in outcome.values() if what == "dropped"), port_rx
    assert went_out == forwarded, (went_out, port_rx)
    assert all(r["drops"] == 0 and r["errors"] == 0 for r in other_tx), other_tx
    assert csum_errors(topo.b_ns) == errors_before
    bridge.stop()


"""Frames the destination port cannot take, at the emulated ports (root): longer than
its interface's MTU lets it send. Each is dropped and counted once, and no part of it is
forwarded; the frames around it pass intact and in order.

(The engine's own cases -- a slot over the buffer size, 0-byte slots, a NS_MOREFRAG
chain that never ends -- are in tests/ffi/test_engine.py: emulated ports always hand
the engine whole chains of real frames, so they cannot make those. Frames longer than
the *source* port's buffers, the MTU raised after it opened, are in test_bridge.py.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from reliability_lab import Lab, account, delta

from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

#: UDP payloads: frames of 106 bytes, and of 1942 (over MTU 1500, within one 2048-byte
#: buffer) and 8042 (a chain of four buffers), cycled
SMALL, OVER, BIG = 64, 1900, 8000
ROUNDS = 200  # of each


@pytest.fixture
def jumbo_lab(make_sandbox: Callable[..., Sandbox]) -> Lab:
    return Lab(make_sandbox(mtu=9000))


@pytest.mark.parametrize("narrow", ["tap", "wire"])
def test_frames_over_the_destination_mtu_are_dropped_whole_and_counted(
        jumbo_lab: Lab, narrow: str) -> None:
    """The sender's side has MTU 9000, the bridge's other port 1500: each frame over
    1500 (one buffer or a chain of four) counts as one drop on that port's TX ring, and
    nothing of it gets out."""
    lab = jumbo_lab
    sb = lab.sb
    if narrow == "tap":
        sb.ip(sb.bridge_ns, "link", "set", "dev", sb.tap_if, "mtu", "1500")
        stream = lab.streams()[0]  # wire -> host
        label, out_if = f"{sb.wire_port}->{sb.host_port}", sb.tap_if
    else:
        for ns, ifname in ((sb.wire_ns, sb.wire_if), (sb.bridge_ns, sb.veth_if)):
            sb.ip(ns, "link", "set", "dev", ifname, "mtu", "1500")
        stream = lab.streams()[1]  # host -> wire
        label, out_if = f"{sb.host_port}->{sb.wire_port}", sb.veth_if
    bridge = lab.start_bridge(name="mtu")
    before = lab.counters()
    lab.run_round([stream], 10, count=3 * ROUNDS, rate=1000, sizes=f"{SMALL},{OVER},{BIG}",
                  idle=1)
    inst = bridge.settled_stats()
    kernel = delta(lab.counters(), before)
    (ledger,) = account(lab, [stream], inst, kernel)
    books = ledger.describe()
    d = next(x for x in inst["directions"] if x["label"] == label)
    print(f"\nbad frames: {narrow} at MTU 1500: {d}\n{books}")

    assert stream.sent == 3 * ROUNDS, stream.sends
    # the small ones: all there, whole, once, in order
    (report,) = stream.recvs
    assert report["unique"] == ROUNDS, report
    assert report["first_missing"][:4] == [1, 2, 4, 5], report
    assert stream.damaged() == {"duplicates": 0, "out_of_order": 0, "corrupt": 0,
                                "foreign": 0}
    # the big ones: one drop each, and not one frame more out of the bridge
    assert d["frames"] == 3 * ROUNDS and d["drops"] == 2 * ROUNDS, d
    assert d["drops_by_reason"]["tx"] == 2 * ROUNDS, d
    assert kernel["links"][out_if]["rx_packets" if narrow == "tap" else "tx_packets"] == \
        ROUNDS, books
    assert ledger.unaccounted() == {}, books

"""Soak: UDP at the senders' maximum rate, both ways at once, through emulated ports
(packet: on a veth, tap:) in throw-away namespaces, for NMBRIDGE_SOAK_SECONDS
(default 10; the long form is NMBRIDGE_SOAK_SECONDS=60).

Afterwards every frame sent is either delivered or counted as dropped, by
nmbridge (`nmbridge stats --json`, and the totals line it prints when it
stops) or by the kernel (interface rx_dropped/tx_dropped, UDP errors) — hop by
hop, zero unaccounted; every frame delivered is intact, once, in order; the
bridge's RSS and open descriptors stay flat after the warm-up.

Rates, drops, RSS and the stop latency are printed (pytest -s, or -rP).
"""

from __future__ import annotations

import os
import time

import pytest
from reliability_lab import MAX_ROUND_COUNT, Lab, account, delta, rss_sampler

from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

SOAK_SECONDS = float(os.environ.get("NMBRIDGE_SOAK_SECONDS", "10"))
#: one sender runs at most this long (each sends at most traffic.MAX_COUNT datagrams)
ROUND_SECONDS = 10.0
#: RSS is sampled from this far into the run: the socket rings and the region are
#: touched page by page by the first frames, which is growth, not a leak
WARM_UP = max(2.0, SOAK_SECONDS / 5)
#: how much RSS may still move after the warm-up (the interpreter's own allocator noise)
RSS_SLACK_KIB = 1024
#: a soak that did not carry at least this much per direction did not test anything
MIN_FPS = 1000


def test_soak_every_frame_is_delivered_or_counted(capsys: pytest.CaptureFixture[str],
                                                   sb: Sandbox) -> None:
    assert SOAK_SECONDS > 0, "NMBRIDGE_SOAK_SECONDS must be positive"
    lab = Lab(sb)
    bridge = lab.start_bridge(name="soak")
    streams = lab.streams()
    before = lab.counters()
    started = time.monotonic()
    end = started + SOAK_SECONDS
    rounds = 0
    with rss_sampler(bridge) as samples:
        while time.monotonic() < end - 0.5:
            lab.run_round(streams, min(ROUND_SECONDS, end - time.monotonic()),
                          count=MAX_ROUND_COUNT, idle=2.0)
            rounds += 1
    soaked = time.monotonic() - started
    # the receivers are done: nothing is in flight, once the counters are published
    inst = bridge.settled_stats()
    kernel = delta(lab.counters(), before)
    status, stop_s = bridge.stop()
    totals = bridge.totals()

    ledgers = account(lab, streams, inst, kernel)
    books = "\n".join(x.describe() for x in ledgers)
    after_warm = [rss for t, rss, _fds in samples if t >= WARM_UP]
    fds = {n for t, _rss, n in samples if t >= WARM_UP}
    with capsys.disabled():
        print(f"\nsoak: {soaked:.1f} s in {rounds} round(s), {len(samples)} RSS samples")
        for s, d in zip(streams, inst["directions"]):
            busy = sum(float(x.get("seconds", 0)) for x in s.sends) or soaked
            print(f"soak: {s.label}: sent {s.sent} in {busy:.1f} s ({s.sent / busy:,.0f}/s), "
                  f"delivered {s.unique}, nmbridge forwarded {d['frames']} "
                  f"({d['frames'] / busy:,.0f} fps, {d['bytes'] * 8 / busy / 1e6:,.0f} "
                  f"Mbit/s), drops {d['drops_by_reason']}, tx_full {d['tx_full']}")
        print(f"soak: RSS KiB first {samples[0][1] if samples else '?'}, after warm-up "
              f"min {min(after_warm, default=0)} max {max(after_warm, default=0)}, "
              f"last {samples[-1][1] if samples else '?'}; fds {sorted(fds)}")
        print(f"soak: SIGTERM to exit {stop_s * 1000:.0f} ms, status {status}")
        print(books)

    assert status == 0, bridge.log()
    for ledger in ledgers:
        assert ledger.unaccounted() == {}, books
    for s in streams:
        assert s.damaged() == {"duplicates": 0, "out_of_order": 0, "corrupt": 0,
                               "foreign": 0}, s.recvs
        assert s.unique >= MIN_FPS * SOAK_SECONDS, f"{s.label}: too little went through: {books}"
    # the stats file and the totals line say the same
    assert {label: frames for label, (frames, _b, _d) in totals.items()} == {
        d["label"]: d["frames"] for d in inst["directions"]}, (totals, inst["directions"])
    assert {label: dropped for label, (_f, _b, dropped) in totals.items()} == {
        d["label"]: d["drops"] for d in inst["directions"]}
    assert all(d["errors"] == 0 for d in inst["directions"]), inst["directions"]
    # flat: after the warm-up RSS moves by less than the slack, and no descriptor leaks
    assert len(after_warm) >= 3, samples
    assert max(after_warm) - after_warm[0] <= RSS_SLACK_KIB, samples
    assert len(fds) == 1, samples

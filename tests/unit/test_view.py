"""view.py: snapshots -> tables and lines, rendered at a fixed width without colour."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from nmbridge import view
from nmbridge.counters import RingCounters, Snapshot

FIELDS = ("frames", "bytes", "drop_oversize", "drop_chain", "drop_rx", "drop_tx", "txfull",
          "syncs", "errors")
EMULATED = [
    {"name": "packet:nva", "kind": "packet", "backend": "packet", "role": None},
    {"name": "tap:nvb", "kind": "tap", "backend": "tap", "role": None},
]
KERNEL = [
    {"name": "netmap:eth0", "kind": "nic", "backend": "kernel", "role": "wire"},
    {"name": "netmap:eth0^", "kind": "host", "backend": "kernel", "role": "host"},
]


def values(**kw: int) -> dict[str, int]:
    return {f: kw.get(f, 0) for f in FIELDS}


def snapshot(ports: list[dict[str, Any]] = EMULATED, zero_copy: bool = True,
             frames: tuple[int, int] = (100, 30), taken_ns: int = 5_000_000_000,
             **kw: Any) -> Snapshot:
    rings = [
        RingCounters(0, "rx", 0, False, values(frames=frames[0], bytes=frames[0] * 100)),
        RingCounters(0, "tx", 0, False, values(frames=frames[1], bytes=frames[1] * 100)),
        RingCounters(1, "rx", 0, False, values(frames=frames[1], bytes=frames[1] * 100)),
        RingCounters(1, "tx", 0, False, values(frames=frames[0], bytes=frames[0] * 100)),
    ]
    base: dict[str, Any] = dict(
        path="/run/nmbridge/x.stats", instance="x", pid=4242, started_ns=1, live=True,
        state="running", heartbeat_ns=1, ports=ports, zero_copy=zero_copy, rings=rings,
        taken_ns=taken_ns)
    base.update(kw)
    return Snapshot(**base)


def render(renderable: Any, width: int = 200) -> str:
    console = Console(width=width, color_system=None, force_terminal=False, record=True)
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


# ---------------------------------------------------------------- where frames are copied


@pytest.mark.parametrize(("ports", "zero_copy", "why", "text"), [
    (KERNEL, True, "", "zero-copy"),
    (KERNEL, False, "--no-zero-copy", "copy (--no-zero-copy)"),
    (EMULATED, True, "", "zero-copy inside the bridge (the kernel copies at the sockets)"),
    (EMULATED, False, "--no-zero-copy",
     "copy (--no-zero-copy; the kernel copies at the sockets too)"),
    ([KERNEL[0], EMULATED[0]], False, "the ports do not share memory",
     "copy (the ports do not share memory; the kernel copies at packet:nva's socket too)"),
])
def test_copy_mode_says_where_frames_are_copied(ports: list[dict[str, Any]], zero_copy: bool,
                                                why: str, text: str) -> None:
    assert view.copy_mode(zero_copy, ports, why) == text


def test_the_live_title_of_emulated_ports_does_not_claim_zero_copy_on() -> None:
    out = render(view.bridge_table(snapshot(), None, 2.0))
    title = " ".join(out.split())
    assert "zero-copy on" not in title
    assert "zero-copy inside the bridge (the kernel copies at the sockets)" in title
    kernel = " ".join(render(view.bridge_table(snapshot(KERNEL), None, 2.0)).split())
    assert "netmap:eth0 <-> netmap:eth0^ zero-copy up 0:02" in kernel

"""view.py: snapshots -> tables and lines, rendered at a fixed width without colour."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rich.console import Console

from nmbridge import view
from nmbridge.counters import RingCounters, Snapshot
from nmbridge.view import bridge_table, direction_totals, log_line, totals_phrase

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


# ---------------------------------------------------------------- rates


def test_a_single_read_has_no_rate_never_a_false_zero() -> None:
    snap = snapshot(heartbeat_ns=2_000_000_000)
    line = view.log_line(snap, None)
    assert line == ("packet:nva->tap:nvb 100 frames - - drops 0; "
                    "tap:nvb->packet:nva 30 frames - - drops 0")
    table = render(view.bridge_table(snap, None, 2.0))
    assert "0 fps" not in table and "0 bit/s" not in table


def test_rates_are_over_the_bridges_own_publishes() -> None:
    """dt is the heartbeat difference (when the counters were published), not when the
    reader happened to read them."""
    prev = snapshot(frames=(100, 30), heartbeat_ns=1_000_000_000, taken_ns=1)
    snap = snapshot(frames=(600, 30), heartbeat_ns=1_500_000_000, taken_ns=9_000_000_000)
    (out, back) = view.rows(snap, prev)
    assert (out.fps, out.bps) == (1000.0, 1000.0 * 100 * 8)
    assert (back.fps, back.bps) == (0.0, 0.0)  # nothing moved: a true 0
    assert view.log_line(snap, prev) == ("packet:nva->tap:nvb 600 frames 1.00 kfps "
                                         "800.00 kbit/s drops 0; tap:nvb->packet:nva 30 "
                                         "frames 0 fps 0 bit/s drops 0")


@pytest.mark.parametrize("change", [
    {"heartbeat_ns": 1_000_000_000},  # nothing published between the reads
    {"pid": 99},  # another process of the same name
    {"started_ns": 7},
])
def test_no_rate_without_a_publish_of_the_same_bridge(change: dict[str, Any]) -> None:
    prev = snapshot(heartbeat_ns=1_000_000_000)
    snap = snapshot(frames=(600, 30), **{"heartbeat_ns": 2_000_000_000, **change})
    assert [(r.fps, r.bps) for r in view.rows(snap, prev)] == [(None, None)] * 2
    s = view.summary(snap, prev, 0)
    assert (s.out_fps, s.back_fps) == (None, None)


# ---------------------------------------------------------------- fitting a terminal


def table_lines(renderable: Any, width: int) -> list[str]:
    return render(renderable, width).splitlines()


def two_instances() -> tuple[list[Snapshot], dict[str, Snapshot]]:
    snaps = [snapshot(instance="packet:nva--tap:nvb", pid=4194303, state="link-wait",
                      heartbeat_ns=2_000_000_000),
             snapshot(KERNEL, instance="eth0", pid=17, heartbeat_ns=2_000_000_000)]
    prevs = {s.instance: snapshot(s.ports, instance=s.instance, pid=s.pid, frames=(0, 0),
                                  heartbeat_ns=1_000_000_000) for s in snaps}
    return snaps, prevs


def test_stats_at_80_columns_never_cuts_the_name_pid_or_state() -> None:
    snaps, prevs = two_instances()
    lines = table_lines(view.instances_table(snaps, prevs, 5_000_000_000, 80), 80)
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in "".join(lines)
    header = lines[0].split()
    # the ports wrap at their spaces first; then uptime, the rates, the drops go
    assert header[:4] == ["instance", "pid", "state", "ports"]
    assert "uptime" not in header and "fps" not in header and "drops" not in header
    assert lines[0].split("ports")[1].split() == ["frames", "->"]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line[:1] != " "}
    assert rows["packet:nva--tap:nvb"][1:4] == ["4194303", "link-wait", "packet:nva"]
    assert rows["eth0"][1:3] == ["17", "running"]
    assert any(line.split() == ["tap:nvb"] for line in lines)  # the wrapped port


def test_stats_drops_columns_in_the_documented_order() -> None:
    snaps, prevs = two_instances()
    kept = []
    for width in range(160, 60, -1):
        header = table_lines(view.instances_table(snaps, prevs, 5_000_000_000, width),
                             width)[0]
        cols = [c for c in view.INSTANCE_COLUMNS if f" {c}" in f" {header} "
                or header.startswith(c)]
        if not kept or kept[-1] != cols:
            kept.append(cols)
    gone = [next(c for c in a if c not in b) for a, b in zip(kept, kept[1:])]
    order = [c for c in view.INSTANCE_DROP_ORDER if not c.startswith("filtered")]  # none here
    assert gone == order[:len(gone)]
    assert len(gone) >= 5


def test_a_name_too_long_for_the_rest_folds_the_ports_not_the_name() -> None:
    long = "packet:nva-long-name0--tap:nvb-long-nam"
    snaps = [snapshot([{"name": "packet:nva-long-name0", "backend": "packet"},
                       {"name": "tap:nvb-long-nam", "backend": "tap"}],
                      instance=long, pid=1234567, state="link-wait")]
    lines = table_lines(view.instances_table(snaps, None, 5_000_000_000, 80), 80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[2].split()[:3] == [long, "1234567", "link-wait"]


def test_without_a_width_every_column_at_full_width() -> None:
    snaps, prevs = two_instances()
    lines = table_lines(view.instances_table(snaps, prevs, 5_000_000_000, None), 1000)
    unfiltered = [c for c in view.INSTANCE_COLUMNS if not c.startswith("filtered")]
    assert [c for c in view.INSTANCE_COLUMNS if c in lines[0]] == unfiltered
    assert max(len(line) for line in lines) > 80


def test_stats_name_at_80_columns_keeps_the_direction_whole() -> None:
    snap = snapshot([{"name": "packet:nva-long0", "backend": "packet"},
                     {"name": "tap:nvb-long0", "backend": "tap"}])
    lines = table_lines(view.bridge_table(snap, None, 3.0, 80), 80)
    assert all(len(line) <= 80 for line in lines)
    text = "".join(lines)
    assert "packet:nva-long0->tap:nvb-long0" in text and "…" not in text
    header = next(line for line in lines if "direction" in line)
    assert "tx full" not in header  # the first to go
    assert "frames" in header


def test_a_looped_port_totals_both_opens_under_its_one_label() -> None:
    ports = [{"name": "netmap:eth0", "backend": "kernel"}] * 2
    totals = view.direction_totals(snapshot(ports, frames=(100, 30)))
    assert list(totals) == ["netmap:eth0->netmap:eth0"]
    assert totals["netmap:eth0->netmap:eth0"]["frames"] == 130


# ---------------------------------------------------------------- filters


def filtered_snapshot(filtered: int) -> Snapshot:
    ports: list[dict[str, Any]] = [{"name": "packet:a", "role": "wire"},
                                   {"name": "tap:b", "role": "host"}]
    rings = [
        RingCounters(0, "rx", 0, False, {"frames": 5, "bytes": 300, "drop_rx": 1,
                                         "filtered": filtered}),
        RingCounters(0, "tx", 0, False, {"frames": 2, "bytes": 120}),
        RingCounters(1, "rx", 0, False, {"frames": 2, "bytes": 120}),
        RingCounters(1, "tx", 0, False, {"frames": 5, "bytes": 300}),
    ]
    return Snapshot(path="/x", instance="i", pid=1, started_ns=0, live=True, state="running",
                    heartbeat_ns=1, ports=ports, zero_copy=True, rings=rings, taken_ns=5)


def test_the_totals_line_says_filtered_frames_apart() -> None:
    assert totals_phrase(direction_totals(filtered_snapshot(7))) == (
        "wire->host 5 frames 300 bytes 1 dropped, 7 filtered; "
        "host->wire 2 frames 120 bytes 0 dropped")
    assert "filtered" not in totals_phrase(direction_totals(filtered_snapshot(0)))


def test_the_log_line_says_filtered_frames_apart() -> None:
    line = log_line(filtered_snapshot(7), None)
    assert line is not None
    assert "wire->host 5 frames" in line and "drops 1 filtered 7;" in line
    assert "filtered" not in (log_line(filtered_snapshot(0), None) or "")
    # a filter refusing frames is activity worth a line
    assert log_line(filtered_snapshot(9), filtered_snapshot(7)) is not None


def test_the_live_table_has_a_filtered_column_beside_drops() -> None:
    console = Console(width=160, color_system=None, record=True)
    console.print(bridge_table(filtered_snapshot(7), None, 1.0))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "direction" in line)
    cells = [c.strip() for c in re.split("[│┃]", header) if c.strip()]
    assert cells[cells.index("drops") + 1] == "filtered"
    row = next(line for line in lines if line.startswith("│ wire->host"))
    values = [c.strip() for c in row.split("│") if c.strip()]
    assert values[cells.index("drops")] == "1" and values[cells.index("filtered")] == "7"

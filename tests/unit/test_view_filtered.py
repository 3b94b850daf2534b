"""view.py's phrases and tables with a filter's counts: filtered frames are said apart
from drops, never added to them."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console

from nmbridge.counters import RingCounters, Snapshot
from nmbridge.view import bridge_table, direction_totals, log_line, totals_phrase


def snapshot(filtered: int) -> Snapshot:
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
    assert totals_phrase(direction_totals(snapshot(7))) == (
        "wire->host 5 frames 300 bytes 1 dropped, 7 filtered; "
        "host->wire 2 frames 120 bytes 0 dropped")
    assert "filtered" not in totals_phrase(direction_totals(snapshot(0)))


def test_the_log_line_says_filtered_frames_apart() -> None:
    line = log_line(snapshot(7), None)
    assert line is not None
    assert "wire->host 5 frames" in line and "drops 1 filtered 7;" in line
    assert "filtered" not in (log_line(snapshot(0), None) or "")
    # a filter refusing frames is activity worth a line
    assert log_line(snapshot(9), snapshot(7)) is not None


def test_the_live_table_has_a_filtered_column_beside_drops() -> None:
    console = Console(width=160, color_system=None, record=True)
    console.print(bridge_table(snapshot(7), None, 1.0))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "direction" in line)
    cells = [c.strip() for c in re.split("[│┃]", header) if c.strip()]
    assert cells[cells.index("drops") + 1] == "filtered"
    row = next(line for line in lines if line.startswith("│ wire->host"))
    values = [c.strip() for c in row.split("│") if c.strip()]
    assert values[cells.index("drops")] == "1" and values[cells.index("filtered")] == "7"

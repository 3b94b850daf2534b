"""Counters snapshots -> rich renderables (pure), and the live refresh.

The renderers take snapshots and return tables; they never read files or
clocks, so tests render them at a fixed width without colour.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nmbridge.counters import DROP_FIELDS, RingCounters, Snapshot, dropped

if TYPE_CHECKING:
    from rich.table import Table



@dataclass(frozen=True)
class Row:
    direction: str
    ring: str
    frames: int
    bytes: int
    fps: float | None  # None: no rate known (one read, or no publish since the last)
    bps: float | None
    drops: int
    txfull: int
    errors: int
    filtered: int = 0  # refused by the filter: not a drop
    captured: int = 0
    capture_dropped: int = 0


def direction_label(snap: Snapshot, port: int) -> str:
    """'wire->host' for an interface's two sides, else 'A->B' with the port names."""
    ports = snap.ports
    if len(ports) != 2:
        return f"port{port}"
    src, dst = ports[port], ports[1 - port]
    if src.get("role") and dst.get("role"):
        return f"{src['role']}->{dst['role']}"
    return f"{src.get('name', port)}->{dst.get('name', 1 - port)}"


def _ring_name(r: RingCounters) -> str:
    return f"{'host ' if r.host else ''}{r.direction} {r.ring}"


def _drops(values: dict[str, int]) -> int:
    """An RX ring's drops (the TX side's are the other port's, added to the row)."""
    return dropped(values) - values.get("drop_tx", 0)


def rate_interval(snap: Snapshot, prev: Snapshot | None) -> float | None:
    """Seconds between the bridge's publishes of prev and snap, by its own clock (the
    heartbeat, CLOCK_MONOTONIC): the interval their counters' difference took. None when
    no rate can be told: no prev, another process, or nothing published in between (a
    single read has no rate; 0 frames/s would be a lie)."""
    if (
        prev is None
        or (prev.pid, prev.started_ns) != (snap.pid, snap.started_ns)
        or snap.heartbeat_ns <= prev.heartbeat_ns
        or not prev.heartbeat_ns
    ):
        return None
    return (snap.heartbeat_ns - prev.heartbeat_ns) / 1e9


def rows(snap: Snapshot, prev: Snapshot | None) -> list[Row]:
    """One row per RX ring (a direction's input), with rates against prev."""
    out: list[Row] = []
    dt = rate_interval(snap, prev)
    prev_by_key = {}
    if prev is not None:
        prev_by_key = {(r.port, r.direction, r.ring): r for r in prev.rings}
    for r in snap.rings:
        if r.direction != "rx":
            continue
        v = r.values
        p = prev_by_key.get((r.port, r.direction, r.ring))
        fps = bps = None
        if p is not None and dt is not None:
            fps = max(0, v["frames"] - p.values["frames"]) / dt
            bps = max(0, v["bytes"] - p.values["bytes"]) * 8 / dt
        # frames this direction's TX side could not send are drops of this direction
        tx_drop = sum(
            t.values.get("drop_tx", 0)
            for t in snap.rings
            if t.direction == "tx" and t.port != r.port
        )
        first_rx = min(x.ring for x in snap.rings if x.port == r.port and x.direction == "rx")
        out.append(
            Row(
                direction=direction_label(snap, r.port),
                ring=_ring_name(r),
                frames=v["frames"],
                bytes=v["bytes"],
                fps=fps,
                bps=bps,
                drops=_drops(v) + (tx_drop if r.ring == first_rx else 0),
                txfull=v.get("txfull", 0),
                errors=v.get("errors", 0),
                filtered=v.get("filtered", 0),
                captured=v.get("captured", 0),
                capture_dropped=v.get("capture_dropped", 0),
            )
        )
    return out


#: the backends of emulated ports: the kernel copies every frame at their sockets (in and
#: out), whatever the bridge does between its rings
SOCKET_BACKENDS = ("packet", "tap")


def socket_copied(ports: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the ports whose frames the kernel copies at a socket."""
    return [str(p.get("name", "?")) for p in ports if p.get("backend") in SOCKET_BACKENDS]


def copy_mode(zero_copy: bool, ports: Sequence[Mapping[str, Any]], why: str = "") -> str:
    """Where frames are copied, as it is: 'zero-copy' (kernel ports of one region),
    'copy', or between emulated ports 'zero-copy inside the bridge (the kernel copies
    at the sockets)': the bridge swaps buffers, but each socket's recv and send copy.
    `why` (a reason for copying) goes in the parentheses."""
    at = socket_copied(ports)
    head = "zero-copy" if zero_copy else "copy"
    notes = [why] if why else []
    if at:
        if zero_copy:
            head = "zero-copy inside the bridge"
        where = "the sockets" if len(at) == len(ports) else f"{at[0]}'s socket"
        notes.append(f"the kernel copies at {where}" + ("" if zero_copy else " too"))
    return head + (f" ({'; '.join(notes)})" if notes else "")


def human_rate(value: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


#: what a table shows for a rate it cannot know
NO_RATE = "-"


def rate_text(value: float | None, unit: str) -> str:
    return NO_RATE if value is None else human_rate(value, unit)


def _sum_rates(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v or 0.0 for v in values)


def human_duration(seconds: float) -> str:
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


#: the live and `stats NAME` table's columns (name, justify), and the order in which
#: they go when the table does not fit the terminal; direction and frames always stay
BRIDGE_COLUMNS = (("direction", "left"), ("ring", "left"), ("frames", "right"),
                  ("frames/s", "right"), ("bits/s", "right"), ("drops", "right"),
                  ("filtered", "right"), ("tx full", "right"), ("errors", "right"),
                  ("captured", "right"), ("capture drops", "right"))
BRIDGE_DROP_ORDER = ("tx full", "errors", "capture drops", "captured", "bits/s", "ring",
                     "filtered", "drops", "frames/s")


def bridge_table(snap: Snapshot, prev: Snapshot | None, uptime_s: float,
                 width: int | None = None) -> Table:
    """The live table: a header with the ports, then a row per ring and totals.

    width: the terminal's; columns go (BRIDGE_DROP_ORDER) until the table fits, and
    what is left wraps, never cut. None (not a terminal): every column, full width."""
    names = " <-> ".join(str(p.get("name", "?")) for p in snap.ports)
    title = (
        f"nmbridge {snap.instance}: {names}  "
        f"{copy_mode(snap.zero_copy, snap.ports)}  up {human_duration(uptime_s)}  "
        f"[{snap.state}]"
    )
    all_rows = rows(snap, prev)
    # the capture's columns only while a capture (--pcap) counts something
    capturing = any(r.captured or r.capture_dropped for r in all_rows)
    columns = [c for c, _ in BRIDGE_COLUMNS]
    if not capturing:
        columns = columns[:-2]
    body = [
        [row.direction, row.ring, f"{row.frames:,}", rate_text(row.fps, "fps"),
         rate_text(row.bps, "bit/s"), f"{row.drops:,}", f"{row.filtered:,}",
         f"{row.txfull:,}", f"{row.errors:,}", f"{row.captured:,}",
         f"{row.capture_dropped:,}"]
        for row in all_rows
    ]
    total = None
    if all_rows:
        total = [
            "total",
            "",
            f"{sum(r.frames for r in all_rows):,}",
            rate_text(_sum_rates([r.fps for r in all_rows]), "fps"),
            rate_text(_sum_rates([r.bps for r in all_rows]), "bit/s"),
            f"{sum(r.drops for r in all_rows):,}",
            f"{sum(r.filtered for r in all_rows):,}",
            f"{sum(r.txfull for r in all_rows):,}",
            f"{sum(r.errors for r in all_rows):,}",
            f"{sum(r.captured for r in all_rows):,}",
            f"{sum(r.capture_dropped for r in all_rows):,}",
        ]

    def make(keep: list[int], wrap: int) -> Table:
        from rich.markup import escape
        from rich.table import Table

        # escaped: "[running]" and port names like netmap:pipe{1 are text, not markup
        table = Table(title=escape(title), title_justify="left", expand=False)
        for i in keep:
            col, justify = BRIDGE_COLUMNS[i]
            table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for cells in body:
            _add_text_row(table, *(cells[i] for i in keep))
        if total is not None:
            table.add_section()
            _add_text_row(table, *(total[i] for i in keep))
        return table

    return _fitting(make, columns, [c for c in BRIDGE_DROP_ORDER if c in columns], width)


def _fitting(make: Callable[[list[int], int], Table], names: Sequence[str],
             drop_order: Sequence[str], width: int | None) -> Table:
    """make(the columns kept, by index; how far cells may wrap: 0 not, 1 at their
    spaces, 2 folded as a last resort) with them wrapped at their spaces and then the
    columns of drop_order dropped, in that order, until it fits width; once nothing is
    left to drop, folded. With width None (not a terminal), the whole table."""
    keep = list(range(len(names)))
    if width is None:
        return make(keep, 0)
    for name in (None, *drop_order):
        if name is not None:
            keep.remove(names.index(name))
        for wrap in (0, 1):
            table = make(keep, wrap)
            if _natural_width(table) <= width:
                return table
    return make(keep, 2)


def _natural_width(table: Table) -> int:
    """The width a table takes when nothing limits it."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=100_000, file=io.StringIO(), color_system=None)
    return Measurement.get(console, console.options, table).maximum


def log_line(snap: Snapshot, prev: Snapshot | None) -> str | None:
    """A compact line per interval for logs; None when nothing moved (idle is quiet)."""
    moved = ("frames", "bytes", *DROP_FIELDS, "errors", "filtered")
    if prev is None:
        if not any(r.values.get(k) for r in snap.rings for k in moved):
            return None
    elif len(snap.rings) == len(prev.rings) and all(
        a.values.get(k) == b.values.get(k) for a, b in zip(snap.rings, prev.rings) for k in moved
    ):
        return None
    by_dir: dict[str, list[Row]] = {}
    for row in rows(snap, prev):
        by_dir.setdefault(row.direction, []).append(row)
    parts = []
    for direction, rs in by_dir.items():
        filtered = sum(r.filtered for r in rs)
        parts.append(
            f"{direction} {sum(r.frames for r in rs)} frames "
            f"{rate_text(_sum_rates([r.fps for r in rs]), 'fps')} "
            f"{rate_text(_sum_rates([r.bps for r in rs]), 'bit/s')} "
            f"drops {sum(r.drops for r in rs)}" + (f" filtered {filtered}" if filtered else "")
        )
    return "; ".join(parts)


@dataclass(frozen=True)
class Summary:
    """One instance in `nmbridge stats`: port 0 -> port 1 is "out", the reverse "back"."""

    instance: str
    pid: int
    state: str
    ports: str
    uptime_s: float | None  # None for a stale file
    out_frames: int
    out_drops: int
    back_frames: int
    back_drops: int
    out_fps: float | None  # None without a previous read to compare with
    back_fps: float | None
    out_filtered: int = 0  # refused by a filter: not drops
    back_filtered: int = 0


def _direction_sums(snap: Snapshot, port: int) -> tuple[int, int]:
    return snap.totals(port).get("frames", 0), snap.dropped(port)


def direction_totals(snap: Snapshot) -> dict[str, dict[str, int]]:
    """Each direction's totals, by its label; a port looped on itself (-L) has one label
    for both of its opens, and one sum."""
    out: dict[str, dict[str, int]] = {}
    for port in range(len(snap.ports)):
        into = out.setdefault(direction_label(snap, port), {})
        for key, value in snap.totals(port).items():
            into[key] = into.get(key, 0) + value
    return out


def totals_phrase(directions: dict[str, dict[str, int]]) -> str:
    """'wire->host 5 frames 420 bytes 0 dropped; host->wire ...': the totals line of a
    stop, and of systemd's STATUS=; '..., 3 filtered' where a filter refused frames."""
    return "; ".join(
        f"{label} {v.get('frames', 0)} frames {v.get('bytes', 0)} bytes {dropped(v)} dropped"
        + (f", {v['filtered']} filtered" if v.get("filtered") else "")
        + _capture_phrase(v)
        for label, v in directions.items()
    )


def _capture_phrase(v: dict[str, int]) -> str:
    """', 5 captured, 0 capture_dropped' while a capture saw the direction, else ''."""
    if not v.get("captured") and not v.get("capture_dropped"):
        return ""
    return f", {v.get('captured', 0)} captured, {v.get('capture_dropped', 0)} capture_dropped"


def summary(snap: Snapshot, prev: Snapshot | None, now_ns: int) -> Summary:
    """The summary row of an instance; rates against prev if it is the same process."""
    out_f, out_d = _direction_sums(snap, 0) if snap.ports else (0, 0)
    back_f, back_d = _direction_sums(snap, 1) if len(snap.ports) > 1 else (0, 0)
    out_fps = back_fps = None
    dt = rate_interval(snap, prev)
    if prev is not None and dt is not None:
        p_out = _direction_sums(prev, 0)[0] if prev.ports else 0
        p_back = _direction_sums(prev, 1)[0] if len(prev.ports) > 1 else 0
        out_fps = max(0, out_f - p_out) / dt
        back_fps = max(0, back_f - p_back) / dt
    return Summary(
        instance=snap.instance,
        pid=snap.pid,
        state=snap.state,
        ports=" <-> ".join(str(p.get("name", "?")) for p in snap.ports),
        uptime_s=max(0.0, (now_ns - snap.started_ns) / 1e9) if snap.live else None,
        out_frames=out_f,
        out_drops=out_d,
        back_frames=back_f,
        back_drops=back_d,
        out_fps=out_fps,
        back_fps=back_fps,
        out_filtered=snap.totals(0).get("filtered", 0) if snap.ports else 0,
        back_filtered=snap.totals(1).get("filtered", 0) if len(snap.ports) > 1 else 0,
    )


#: `nmbridge stats`: the columns, and the order in which they go when the table does
#: not fit the terminal; instance, pid, state and ports always stay (ports may wrap)
INSTANCE_COLUMNS = ("instance", "pid", "state", "ports", "uptime", "frames ->", "fps ->",
                    "drops ->", "frames <-", "fps <-", "drops <-", "filtered ->",
                    "filtered <-")
INSTANCE_DROP_ORDER = ("uptime", "fps <-", "fps ->", "filtered <-", "filtered ->",
                       "drops <-", "drops ->", "frames <-", "frames ->")


def instances_table(
    snaps: list[Snapshot], prevs: dict[str, Snapshot] | None, now_ns: int,
    width: int | None = None,
) -> Table:
    """`nmbridge stats`: a row per instance; rate columns when prevs is given.

    "->" is from the first port listed to the second, "<-" the reverse. The filtered
    columns come last, when an instance's filter refused frames. width: the
    terminal's; columns go (INSTANCE_DROP_ORDER) until the table fits, and the instance,
    pid and state are never cut (they fold). None (not a terminal): full width.
    """
    sums = [summary(snap, (prevs or {}).get(snap.instance), now_ns)
            for snap in sorted(snaps, key=lambda s: s.instance)]
    # the filtered columns only when an instance's filter refused frames
    filtering = any(s.out_filtered or s.back_filtered for s in sums)
    names = [c for c in INSTANCE_COLUMNS
             if (prevs is not None or not c.startswith("fps"))
             and (filtering or not c.startswith("filtered"))]
    body = []
    for s in sums:
        cells = {
            "instance": s.instance,
            "pid": str(s.pid),
            "state": s.state,
            "ports": s.ports,
            "uptime": human_duration(s.uptime_s) if s.uptime_s is not None else "-",
            "frames ->": f"{s.out_frames:,}",
            "fps ->": rate_text(s.out_fps, "fps"),
            "drops ->": f"{s.out_drops:,}",
            "frames <-": f"{s.back_frames:,}",
            "fps <-": rate_text(s.back_fps, "fps"),
            "drops <-": f"{s.back_drops:,}",
            "filtered ->": f"{s.out_filtered:,}",
            "filtered <-": f"{s.back_filtered:,}",
        }
        body.append([cells[c] for c in names])

    def make(keep: list[int], wrap: int) -> Table:
        if wrap == 2 and width is not None and "ports" in names:
            # the last resort, before a name, a pid or a state would be cut: the ports
            # fold into what the other columns leave
            others = _natural_width(make_at(keep, 1, 1)) - len("ports")
            return make_at(keep, 1, max(len("ports"), width - others))
        return make_at(keep, wrap, None)

    def make_at(keep: list[int], wrap: int, fold: int | None) -> Table:
        from rich import box
        from rich.table import Table

        table = Table(expand=False, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i in keep:
            col = names[i]
            text = col in ("instance", "state", "ports")
            # the width is chosen here (_fitting), not by rich, which would cut cells to
            # make them fit: a cell folds only where even the narrowest table is too wide
            table.add_column(col, justify="left" if text else "right", overflow="fold",
                             no_wrap=True)
        for cells in body:
            shown = [cells[i] for i in keep]
            if wrap and "ports" in names:
                at = keep.index(names.index("ports"))
                lines = shown[at].replace(" <-> ", " <->\n").split("\n")
                if fold:
                    lines = [line[i:i + fold] for line in lines
                             for i in range(0, len(line), fold)]
                shown[at] = "\n".join(lines)
            _add_text_row(table, *shown)
        return table

    return _fitting(make, names, [c for c in INSTANCE_DROP_ORDER if c in names], width)


def _add_text_row(table: Table, *cells: str) -> None:
    """A row of plain text: names from a stats file ('[/]x', '[link=...]') are shown,
    never read as rich markup (which a forged file made crash `nmbridge stats`)."""
    from rich.text import Text

    table.add_row(*(Text(c) for c in cells))


class Refresher:
    """Calls `tick` every `interval` seconds in a thread until stopped."""

    def __init__(self, interval: float, tick: Callable[[], None]) -> None:
        self._interval = interval
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nmbridge-view", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


def live_display() -> Any:
    """A rich Live bound to the stdout console."""
    from rich.live import Live

    from nmbridge.terminal import stdout

    return Live(console=stdout(), auto_refresh=False, transient=False)

"""Counters snapshots -> machine-readable output: a JSON document and Prometheus text.

Pure functions: they take snapshots (and the time, where they need it) and
return data; they read no file and no clock. The JSON schema is written down
in docs/stats-json.md; the metric names in the same file and in nmbridge(8).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from nmbridge.counters import (
    CAPTURE_FIELDS,
    DROP_REASONS,
    OFFLOAD_FIELDS,
    RingCounters,
    Snapshot,
)
from nmbridge.view import direction_label, socket_copied

#: bump only for a change that can break a reader (a key removed, renamed or
#: retyped); new keys are added without a bump
SCHEMA_VERSION = 1

#: the states a snapshot can be in; "stale": the file of an instance that died
STATES = ("starting", "running", "link-wait", "stopped", "stale")


# ---------------------------------------------------------------- JSON


def _drops(values: dict[str, int], reasons: Iterable[str] = DROP_REASONS) -> dict[str, int]:
    return {reason: int(values.get(DROP_REASONS[reason], 0)) for reason in reasons}


def _ring_dict(snap: Snapshot, r: RingCounters) -> dict[str, Any]:
    v = r.values
    drops = _drops(v)
    return {
        "port": r.port,
        "port_name": _port_name(snap, r.port),
        "direction": r.direction,
        "ring": r.ring,
        "host": r.host,
        "frames": int(v.get("frames", 0)),
        "bytes": int(v.get("bytes", 0)),
        "drops": sum(drops.values()),
        "drops_by_reason": drops,
        "tx_full": int(v.get("txfull", 0)),
        "filtered": int(v.get("filtered", 0)),
        "syncs": int(v.get("syncs", 0)),
        "errors": int(v.get("errors", 0)),
        "offloads": {key: int(v.get(f, 0)) for key, f in OFFLOAD_FIELDS.items()},
        **{key: int(v.get(f, 0)) for key, f in CAPTURE_FIELDS.items()},
    }


def _port_name(snap: Snapshot, index: int) -> str:
    if 0 <= index < len(snap.ports):
        return str(snap.ports[index].get("name", f"port{index}"))
    return f"port{index}"


def direction_dicts(snap: Snapshot) -> list[dict[str, Any]]:
    """One entry per port: what entered on its RX rings and went to the other port.

    frames/bytes/tx_full/filtered and the RX-side drops come from the port's RX rings;
    the "tx" drops and part of the errors from the other port's TX rings.
    """
    out: list[dict[str, Any]] = []
    for port in range(len(snap.ports)):
        rx = [r for r in snap.rings if r.port == port and r.direction == "rx"]
        tx = [r for r in snap.rings if r.port != port and r.direction == "tx"]
        sums = snap.totals(port)
        sums["errors"] = sum(int(r.values.get("errors", 0)) for r in (*rx, *tx))
        drops = _drops(sums)
        others = [p for p in range(len(snap.ports)) if p != port]
        out.append(
            {
                "label": direction_label(snap, port),
                "from_port": port,
                "to_port": others[0] if len(others) == 1 else None,
                "frames": sums.get("frames", 0),
                "bytes": sums.get("bytes", 0),
                "drops": sum(drops.values()),
                "drops_by_reason": drops,
                "tx_full": sums.get("txfull", 0),
                "filtered": sums.get("filtered", 0),
                "errors": sums.get("errors", 0),
                "offloads": {key: sums.get(f, 0) for key, f in OFFLOAD_FIELDS.items()},
                **{key: sums.get(f, 0) for key, f in CAPTURE_FIELDS.items()},
            }
        )
    return out


def uptime_seconds(snap: Snapshot, now_ns: int) -> float | None:
    """Seconds since the instance started (wall clock); None for a stale file."""
    if not snap.live:
        return None
    return max(0.0, (now_ns - snap.started_ns) / 1e9)


def instance_dict(snap: Snapshot, now_ns: int) -> dict[str, Any]:
    """One instance in the JSON schema (docs/stats-json.md)."""
    return {
        "name": snap.instance,
        "pid": snap.pid,
        "live": snap.live,
        "state": snap.state,
        "start_time": snap.started_ns / 1e9,
        "uptime_seconds": uptime_seconds(snap, now_ns),
        "zero_copy": snap.zero_copy,
        "socket_copies": bool(socket_copied(snap.ports)),
        "stats_file": snap.path,
        "ports": [
            {
                "index": i,
                "name": str(p.get("name", f"port{i}")),
                "kind": p.get("kind"),
                "backend": p.get("backend"),
                "role": p.get("role"),
            }
            for i, p in enumerate(snap.ports)
        ],
        "directions": direction_dicts(snap),
        "rings": [_ring_dict(snap, r) for r in snap.rings],
    }


def json_document(
    snaps: Sequence[Snapshot], now_ns: int, stats_dir: str, version: str
) -> dict[str, Any]:
    """The whole `nmbridge stats --json` document: one read of the instances asked for."""
    return {
        "schema_version": SCHEMA_VERSION,
        "nmbridge_version": version,
        "time": now_ns / 1e9,
        "stats_dir": stats_dir,
        "instances": [instance_dict(s, now_ns) for s in sorted(snaps, key=lambda s: s.instance)],
    }


# ---------------------------------------------------------------- Prometheus


def escape_label_value(value: str) -> str:
    """A label value for the text exposition format: backslash, quote, newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


# (metric, help, field, the ring directions whose records count it)
_RING_COUNTERS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("nmbridge_frames_total", "Frames moved through the ring.", "frames", ("rx", "tx")),
    ("nmbridge_bytes_total", "Bytes of the frames moved through the ring.", "bytes",
     ("rx", "tx")),
    ("nmbridge_tx_full_total",
     "Times the destination TX ring was full while frames waited on this RX ring.", "txfull",
     ("rx",)),
    ("nmbridge_syncs_total", "Syncs of the ring.", "syncs", ("rx", "tx")),
    ("nmbridge_ring_errors_total", "Ring errors recovered from (POLLERR, ring reinit).",
     "errors", ("rx", "tx")),
    ("nmbridge_gso_frames_total",
     "Super-frames from this RX ring segmented in software for the other port.", "gso_frames",
     ("rx",)),
    ("nmbridge_gso_segments_total", "Segments made in software, sent on this TX ring.",
     "gso_segments", ("tx",)),
    ("nmbridge_csum_sw_total", "Checksums finished in software for frames on this TX ring.",
     "csum_sw", ("tx",)),
    ("nmbridge_filtered_total", "Frames from this RX ring that the filter did not let cross "
     "(not counted in nmbridge_drops_total).", "filtered", ("rx",)),
    ("nmbridge_captured_total",
     "Frames from this RX ring that crossed and were copied for the capture (--pcap).",
     "captured", ("rx",)),
    ("nmbridge_capture_dropped_total",
     "Frames from this RX ring that crossed but the capture could not take (its ring full, "
     "or its writer stopped).", "capture_dropped", ("rx",)),
)
# which drop reasons each ring direction counts
_DROP_REASONS_BY_DIRECTION = {"rx": ("oversize", "chain", "rx", "header", "gso"), "tx": ("tx",)}


class _Families:
    """Samples grouped by metric, in the order metrics were first declared."""

    def __init__(self) -> None:
        self._order: list[str] = []
        self._head: dict[str, str] = {}
        self._samples: dict[str, list[str]] = {}

    def declare(self, name: str, kind: str, help_text: str) -> None:
        if name not in self._head:
            self._order.append(name)
            self._head[name] = f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n"
            self._samples[name] = []

    def add(self, name: str, labels: Sequence[tuple[str, str]], value: float) -> None:
        self._samples[name].append(f"{name}{_labels(labels)} {_number(value)}\n")

    def text(self) -> str:
        return "".join(self._head[n] + "".join(self._samples[n]) for n in self._order)


def prometheus_text(snaps: Sequence[Snapshot]) -> str:
    """Prometheus text exposition (format 0.0.4) of the snapshots, no timestamps.

    Fit for node_exporter's textfile collector and for a scrape. A stale
    instance exports only nmbridge_up 0, its start time and state: counters
    of a process that is gone would read as a flat line, not as "down".
    """
    fam = _Families()
    fam.declare("nmbridge_up", "gauge", "1 if the instance is running, 0 if its stats file is "
                "stale (the process died).")
    fam.declare("nmbridge_start_time_seconds", "gauge",
                "Start time of the instance since the Unix epoch in seconds.")
    fam.declare("nmbridge_state", "gauge", "The instance's state: 1 for the current one.")
    fam.declare("nmbridge_info", "gauge", "Constant 1, with the instance's process id and mode.")
    fam.declare("nmbridge_port_info", "gauge", "Constant 1 per bridged port, with its kind and "
                "role.")
    for name, help_text, _field, _dirs in _RING_COUNTERS[:2]:
        fam.declare(name, "counter", help_text)
    fam.declare("nmbridge_drops_total", "counter", "Frames dropped, by reason: oversize (longer "
                "than the destination buffer), chain (bad NS_MOREFRAG chain), rx (lost by the "
                "port before the ring), tx (the port failed to send), header (a virtio-net "
                "header that does not fit its frame), gso (a super-frame that cannot be "
                "segmented).")
    for name, help_text, _field, _dirs in _RING_COUNTERS[2:]:
        fam.declare(name, "counter", help_text)

    for snap in sorted(snaps, key=lambda s: s.instance):
        inst = ("instance", snap.instance)
        fam.add("nmbridge_up", [inst], 1 if snap.live else 0)
        fam.add("nmbridge_start_time_seconds", [inst], snap.started_ns / 1e9)
        states = STATES if snap.state in STATES else (*STATES, snap.state)
        for state in states:
            fam.add("nmbridge_state", [inst, ("state", state)], 1 if state == snap.state else 0)
        fam.add(
            "nmbridge_info",
            [inst, ("pid", str(snap.pid)), ("zero_copy", "true" if snap.zero_copy else "false")],
            1,
        )
        for i, p in enumerate(snap.ports):
            fam.add(
                "nmbridge_port_info",
                [inst, ("port", _port_name(snap, i)), ("index", str(i)),
                 ("kind", str(p.get("kind") or "")), ("role", str(p.get("role") or ""))],
                1,
            )
        if not snap.live:
            continue
        for r in snap.rings:
            ring = [inst, ("port", _port_name(snap, r.port)), ("ring", str(r.ring)),
                    ("direction", r.direction)]
            for name, _help, field, dirs in _RING_COUNTERS:
                value = int(r.values.get(field, 0))
                if r.direction in dirs or value:
                    fam.add(name, ring, value)
            counted = _DROP_REASONS_BY_DIRECTION.get(r.direction, ())
            for reason, field in DROP_REASONS.items():
                value = int(r.values.get(field, 0))
                if reason in counted or value:
                    fam.add("nmbridge_drops_total", [*ring, ("reason", reason)], value)
    return fam.text()

"""export.py: snapshots -> the JSON document (docs/stats-json.md) and Prometheus text.

Pure: snapshots are made by hand. The Prometheus text is read back with
prometheus_client's own parser, the reference a scraper would agree with.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nmbridge.counters import DROP_REASONS, OFFLOAD_FIELDS, RingCounters, Snapshot
from nmbridge.export import (
    SCHEMA_VERSION,
    escape_label_value,
    instance_dict,
    json_document,
    prometheus_text,
)

NOW_NS = 1_800_000_100_000_000_000
STARTED_NS = 1_800_000_000_500_000_000

FIELDS = ("frames", "bytes", "drop_oversize", "drop_chain", "drop_rx", "drop_tx", "txfull",
          "syncs", "errors", "captured", "capture_dropped")


def values(**kw: int) -> dict[str, int]:
    return {f: kw.get(f, 0) for f in FIELDS}


def snapshot(name: str = "eth0", live: bool = True, ports: list[dict[str, Any]] | None = None,
             rings: list[RingCounters] | None = None) -> Snapshot:
    if ports is None:
        ports = [
            {"name": "netmap:eth0", "kind": "kernel", "backend": "kernel", "role": "wire"},
            {"name": "netmap:eth0^", "kind": "kernel", "backend": "kernel", "role": "host"},
        ]
    if rings is None:
        rings = [
            RingCounters(0, "rx", 0, False, values(frames=10, bytes=1000, drop_oversize=1,
                                                   drop_chain=2, drop_rx=3, txfull=4, syncs=9,
                                                   errors=1)),
            RingCounters(0, "rx", 1, False, values(frames=5, bytes=500, syncs=8)),
            RingCounters(0, "tx", 0, False, values(frames=7, bytes=700, drop_tx=6, syncs=3)),
            RingCounters(1, "rx", 2, True, values(frames=7, bytes=700, syncs=2)),
            RingCounters(1, "tx", 2, True, values(frames=15, bytes=1500, drop_tx=20, syncs=4,
                                                  errors=2)),
        ]
    return Snapshot(
        path=f"/run/nmbridge/{name}.stats", instance=name, pid=4242, started_ns=STARTED_NS,
        live=live, state="running" if live else "stale", heartbeat_ns=1, ports=ports,
        zero_copy=True, rings=rings, taken_ns=5,
    )


# ---------------------------------------------------------------- JSON

TOP = {"schema_version": int, "nmbridge_version": str, "time": float, "stats_dir": str,
       "instances": list}
INSTANCE = {"name": str, "pid": int, "live": bool, "state": str, "start_time": float,
            "uptime_seconds": (float, type(None)), "zero_copy": bool, "socket_copies": bool,
            "stats_file": str,
            "ports": list, "directions": list, "rings": list}
PORT = {"index": int, "name": str, "kind": (str, type(None)), "backend": (str, type(None)),
        "role": (str, type(None))}
COUNTS = {"frames": int, "bytes": int, "drops": int, "drops_by_reason": dict, "tx_full": int,
          "filtered": int, "errors": int, "offloads": dict, "captured": int,
          "capture_dropped": int}
DIRECTION = {"label": str, "from_port": int, "to_port": (int, type(None)), **COUNTS}
RING = {"port": int, "port_name": str, "direction": str, "ring": int, "host": bool,
        "syncs": int, **COUNTS}


def check_shape(obj: dict[str, Any], shape: dict[str, Any]) -> None:
    assert set(obj) == set(shape)
    for key, kind in shape.items():
        assert isinstance(obj[key], kind), (key, obj[key])
        if kind is int:
            assert not isinstance(obj[key], bool), key


def test_json_schema_keys_and_types() -> None:
    doc = json_document([snapshot("b"), snapshot("a", live=False)], NOW_NS, "/run/nmbridge",
                        "9.9")
    doc = json.loads(json.dumps(doc))  # what a consumer sees
    check_shape(doc, TOP)
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert doc["nmbridge_version"] == "9.9"
    assert [i["name"] for i in doc["instances"]] == ["a", "b"]  # sorted by name
    for inst in doc["instances"]:
        check_shape(inst, INSTANCE)
        assert inst["state"] in ("starting", "running", "link-wait", "stopped", "stale",
                                 "unknown")
        for p in inst["ports"]:
            check_shape(p, PORT)
        for d in inst["directions"]:
            check_shape(d, DIRECTION)
            assert set(d["drops_by_reason"]) == set(DROP_REASONS)
            assert set(d["offloads"]) == set(OFFLOAD_FIELDS)
            assert d["drops"] == sum(d["drops_by_reason"].values())
        for r in inst["rings"]:
            check_shape(r, RING)
            assert set(r["offloads"]) == set(OFFLOAD_FIELDS)
            assert r["direction"] in ("rx", "tx")
            assert set(r["drops_by_reason"]) == set(DROP_REASONS)
            assert r["drops"] == sum(r["drops_by_reason"].values())


@pytest.mark.parametrize(("backends", "copies"), [
    (("kernel", "kernel"), False), (("packet", "tap"), True), (("kernel", "packet"), True),
])
def test_json_says_whether_the_kernel_copies_at_a_socket(backends: tuple[str, str],
                                                         copies: bool) -> None:
    ports = [{"name": f"p{i}", "kind": b, "backend": b, "role": None}
             for i, b in enumerate(backends)]
    doc = instance_dict(snapshot(ports=ports), NOW_NS)
    assert (doc["zero_copy"], doc["socket_copies"]) == (True, copies)


def test_offload_counters_of_a_direction_come_from_both_ports() -> None:
    """Super-frames segmented count where they came in, segments and checksums where they
    left; the header and gso drops are the RX side's."""
    rings = [
        RingCounters(0, "rx", 0, False, {**values(frames=3), "gso_frames": 2, "drop_header": 1,
                                         "drop_gso": 4}),
        RingCounters(0, "tx", 0, False, {**values(), "gso_segments": 99, "csum_sw": 99}),
        RingCounters(1, "rx", 0, False, {**values(), "gso_frames": 50}),
        RingCounters(1, "tx", 0, False, {**values(frames=90), "gso_segments": 88, "csum_sw": 7}),
    ]
    doc = instance_dict(snapshot(rings=rings), NOW_NS)
    first = doc["directions"][0]
    assert first["offloads"] == {"gso_frames": 2, "gso_segments": 88, "csum_sw": 7}
    assert first["drops_by_reason"]["header"] == 1
    assert first["drops_by_reason"]["gso"] == 4
    assert first["drops"] == 5
    text = prometheus_text([snapshot(rings=rings)])
    assert 'nmbridge_gso_segments_total{instance="eth0",port="netmap:eth0^",ring="0",' \
        'direction="tx"} 88' in text
    assert 'reason="header"} 1' in text


def test_filtered_frames_are_counted_apart_from_drops() -> None:
    """A direction's filtered frames are its RX rings' (never a drop); Prometheus has them
    per RX ring."""
    rings = [
        RingCounters(0, "rx", 0, False, {**values(frames=3, drop_rx=1), "filtered": 5}),
        RingCounters(0, "rx", 1, False, {**values(frames=1), "filtered": 2}),
        RingCounters(0, "tx", 0, False, values()),
        RingCounters(1, "rx", 0, False, values(frames=4)),
        RingCounters(1, "tx", 0, False, values(frames=4)),
    ]
    doc = instance_dict(snapshot(rings=rings), NOW_NS)
    first, second = doc["directions"]
    assert (first["frames"], first["filtered"], first["drops"]) == (4, 7, 1)
    assert (second["filtered"], second["drops"]) == (0, 0)
    assert [r["filtered"] for r in doc["rings"]] == [5, 2, 0, 0, 0]
    filtered = {(lb["port"], lb["ring"], lb["direction"]): v
                for lb, v in samples(prometheus_text([snapshot(rings=rings)]),
                                     "nmbridge_filtered_total")}
    assert filtered == {("netmap:eth0", "0", "rx"): 5, ("netmap:eth0", "1", "rx"): 2,
                        ("netmap:eth0^", "0", "rx"): 0}


def test_capture_counters_of_a_direction_are_its_rx_rings() -> None:
    rings = [
        RingCounters(0, "rx", 0, False, values(frames=9, captured=7, capture_dropped=2)),
        RingCounters(0, "rx", 1, False, values(frames=1, captured=1)),
        RingCounters(0, "tx", 0, False, values()),
        RingCounters(1, "rx", 0, False, values()),
        RingCounters(1, "tx", 0, False, values(frames=10)),
    ]
    doc = instance_dict(snapshot(rings=rings), NOW_NS)
    first = doc["directions"][0]
    assert (first["captured"], first["capture_dropped"]) == (8, 2)
    assert first["drops"] == 0  # they crossed
    assert (doc["rings"][0]["captured"], doc["rings"][0]["capture_dropped"]) == (7, 2)
    text = prometheus_text([snapshot(rings=rings)])
    assert 'nmbridge_captured_total{instance="eth0",port="netmap:eth0",ring="0",' \
        'direction="rx"} 7' in text
    assert 'nmbridge_capture_dropped_total{instance="eth0",port="netmap:eth0",ring="0",' \
        'direction="rx"} 2' in text
    assert 'nmbridge_captured_total{instance="eth0",port="netmap:eth0",ring="0",' \
        'direction="tx"}' not in text


def test_json_values() -> None:
    inst = instance_dict(snapshot(), NOW_NS)
    assert inst["name"] == "eth0"
    assert inst["pid"] == 4242
    assert inst["start_time"] == pytest.approx(1_800_000_000.5)
    assert inst["uptime_seconds"] == pytest.approx(99.5)
    assert [p["role"] for p in inst["ports"]] == ["wire", "host"]
    wire_to_host, host_to_wire = inst["directions"]
    assert wire_to_host == {
        "label": "wire->host", "from_port": 0, "to_port": 1,
        # both RX rings of port 0; tx drops from port 1's TX ring; errors from both sides
        "frames": 15, "bytes": 1500, "drops": 1 + 2 + 3 + 20,
        "drops_by_reason": {"oversize": 1, "chain": 2, "rx": 3, "tx": 20, "header": 0, "gso": 0},
        "tx_full": 4, "filtered": 0, "errors": 1 + 2,
        "offloads": {"gso_frames": 0, "gso_segments": 0, "csum_sw": 0},
        "captured": 0, "capture_dropped": 0,
    }
    assert host_to_wire["label"] == "host->wire"
    assert (host_to_wire["frames"], host_to_wire["drops"]) == (7, 6)
    host_rx = inst["rings"][3]
    assert host_rx == {
        "port": 1, "port_name": "netmap:eth0^", "direction": "rx", "ring": 2, "host": True,
        "frames": 7, "bytes": 700, "drops": 0,
        "drops_by_reason": {"oversize": 0, "chain": 0, "rx": 0, "tx": 0, "header": 0, "gso": 0},
        "tx_full": 0, "filtered": 0, "syncs": 2, "errors": 0,
        "offloads": {"gso_frames": 0, "gso_segments": 0, "csum_sw": 0},
        "captured": 0, "capture_dropped": 0,
    }


def test_json_stale_instance_has_no_uptime_but_keeps_its_last_counters() -> None:
    inst = instance_dict(snapshot(live=False), NOW_NS)
    assert inst["live"] is False
    assert inst["state"] == "stale"
    assert inst["uptime_seconds"] is None
    assert inst["directions"][0]["frames"] == 15


def test_json_missing_fields_read_as_zero() -> None:
    """A file whose records lack a field (an older or newer layout) still exports."""
    snap = snapshot(rings=[RingCounters(0, "rx", 0, False, {"frames": 3})])
    inst = instance_dict(snap, NOW_NS)
    assert inst["rings"][0]["frames"] == 3
    assert inst["rings"][0]["bytes"] == 0
    assert inst["directions"][1]["frames"] == 0


def test_json_document_of_nothing() -> None:
    assert json_document([], NOW_NS, "/d", "1")["instances"] == []


# ---------------------------------------------------------------- Prometheus


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name]


def test_prometheus_parses_with_the_reference_parser() -> None:
    text = prometheus_text([snapshot("eth0"), snapshot("eth1")])
    fams = families(text)
    assert {n: f.type for n, f in fams.items()} == {
        "nmbridge_up": "gauge",
        "nmbridge_start_time_seconds": "gauge",
        "nmbridge_state": "gauge",
        "nmbridge_info": "gauge",
        "nmbridge_port_info": "gauge",
        "nmbridge_frames": "counter",
        "nmbridge_bytes": "counter",
        "nmbridge_drops": "counter",
        "nmbridge_tx_full": "counter",
        "nmbridge_syncs": "counter",
        "nmbridge_ring_errors": "counter",
        "nmbridge_gso_frames": "counter",
        "nmbridge_gso_segments": "counter",
        "nmbridge_csum_sw": "counter",
        "nmbridge_filtered": "counter",
        "nmbridge_captured": "counter",
        "nmbridge_capture_dropped": "counter",
    }
    for fam in fams.values():
        assert fam.documentation
        for s in fam.samples:
            assert s.timestamp is None  # the textfile collector refuses timestamps
            assert s.labels["instance"] in ("eth0", "eth1")
            if fam.type == "counter":
                assert s.name == fam.name + "_total"
                assert set(s.labels) >= {"instance", "port", "ring", "direction"}


def test_prometheus_values() -> None:
    text = prometheus_text([snapshot()])
    assert samples(text, "nmbridge_up") == [({"instance": "eth0"}, 1.0)]
    assert samples(text, "nmbridge_start_time_seconds") == [
        ({"instance": "eth0"}, pytest.approx(1_800_000_000.5))
    ]
    states = {labels["state"]: v for labels, v in samples(text, "nmbridge_state")}
    assert states == {"starting": 0, "running": 1, "link-wait": 0, "stopped": 0, "stale": 0}
    assert samples(text, "nmbridge_info") == [
        ({"instance": "eth0", "pid": "4242", "zero_copy": "true"}, 1.0)
    ]
    frames = {(lb["port"], lb["ring"], lb["direction"]): v
              for lb, v in samples(text, "nmbridge_frames_total")}
    assert frames == {
        ("netmap:eth0", "0", "rx"): 10, ("netmap:eth0", "1", "rx"): 5,
        ("netmap:eth0", "0", "tx"): 7, ("netmap:eth0^", "2", "rx"): 7,
        ("netmap:eth0^", "2", "tx"): 15,
    }
    drops = {(lb["port"], lb["ring"], lb["direction"], lb["reason"]): v
             for lb, v in samples(text, "nmbridge_drops_total")}
    assert drops[("netmap:eth0", "0", "rx", "oversize")] == 1
    assert drops[("netmap:eth0", "0", "rx", "chain")] == 2
    assert drops[("netmap:eth0", "0", "rx", "rx")] == 3
    assert drops[("netmap:eth0^", "2", "tx", "tx")] == 20
    # each ring direction exports the reasons it counts, and no always-zero others
    assert ("netmap:eth0", "0", "rx", "tx") not in drops
    assert ("netmap:eth0", "0", "tx", "oversize") not in drops
    txfull = {(lb["port"], lb["ring"], lb["direction"]): v
              for lb, v in samples(text, "nmbridge_tx_full_total")}
    assert txfull == {("netmap:eth0", "0", "rx"): 4, ("netmap:eth0", "1", "rx"): 0,
                      ("netmap:eth0^", "2", "rx"): 0}
    errors = {(lb["port"], lb["direction"]): v
              for lb, v in samples(text, "nmbridge_ring_errors_total") if v}
    assert errors == {("netmap:eth0", "rx"): 1, ("netmap:eth0^", "tx"): 2}


def test_prometheus_unexpected_nonzero_counts_are_not_hidden() -> None:
    snap = snapshot(rings=[RingCounters(0, "tx", 0, False, values(drop_oversize=3, txfull=2))])
    text = prometheus_text([snap])
    assert ({"instance": "eth0", "port": "netmap:eth0", "ring": "0", "direction": "tx",
             "reason": "oversize"}, 3) in samples(text, "nmbridge_drops_total")
    assert samples(text, "nmbridge_tx_full_total")[0][1] == 2


def test_prometheus_stale_instance_is_down_without_counters() -> None:
    text = prometheus_text([snapshot("dead", live=False), snapshot("alive")])
    assert samples(text, "nmbridge_up") == [({"instance": "alive"}, 1.0),
                                            ({"instance": "dead"}, 0.0)]
    states = {lb["state"]: v for lb, v in samples(text, "nmbridge_state")
              if lb["instance"] == "dead"}
    assert states["stale"] == 1 and states["running"] == 0
    assert all(lb["instance"] == "alive" for lb, _ in samples(text, "nmbridge_frames_total"))


def test_prometheus_each_family_once_and_grouped() -> None:
    """Samples of one metric stay together, a HELP/TYPE pair each (the format requires it)."""
    text = prometheus_text([snapshot("a"), snapshot("b"), snapshot("c", live=False)])
    names = [line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names))
    seen: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = re.match(r"[a-z_]+", line)
        assert name is not None
        if not seen or seen[-1] != name.group(0):
            assert name.group(0) not in seen, f"{name.group(0)} is split"
            seen.append(name.group(0))
    assert text.endswith("\n")
    assert all(n.startswith("nmbridge_") for n in seen)


def test_prometheus_of_nothing_is_only_help() -> None:
    text = prometheus_text([])
    assert all(line.startswith("#") for line in text.splitlines())
    assert all(not f.samples for f in text_string_to_metric_families(text))


@pytest.mark.parametrize(
    "value",
    ['plain', 'a"quote', "back\\slash", "new\nline", 'all\\"of\nthem\\n', "netmap:pipe{1",
     "vale0:a}b", "ünïcode", ""],
)
def test_label_values_are_escaped(value: str) -> None:
    ports = [{"name": value, "kind": "tap", "role": value},
             {"name": "tap:x", "kind": "tap", "role": None}]
    snap = snapshot(ports=ports,
                    rings=[RingCounters(0, "rx", 0, False, values(frames=1))])
    text = prometheus_text([snap])
    fams = list(text_string_to_metric_families(text))
    # a newline in a value is escaped: one line per sample plus HELP and TYPE per metric
    assert len(text.splitlines()) == sum(len(f.samples) + 2 for f in fams)
    got = samples(text, "nmbridge_frames_total")
    assert got == [({"instance": "eth0", "port": value, "ring": "0", "direction": "rx"}, 1.0)]
    port_info = samples(text, "nmbridge_port_info")
    assert port_info[0][0]["role"] == value


def test_escape_label_value() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_big_counters_are_exact_in_the_text() -> None:
    big = 2**64 - 1
    snap = snapshot(rings=[RingCounters(0, "rx", 0, False, values(frames=big))])
    text = prometheus_text([snap])
    assert f' {big}\n' in text


# ---------------------------------------------------------------- the capture in the views


def _render(table: Any) -> str:
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        con = Console(width=200, color_system=None, record=True, file=sink)
        con.print(table)
        return con.export_text()


def test_the_table_shows_the_capture_only_while_it_counts() -> None:
    from nmbridge.view import bridge_table

    plain = _render(bridge_table(snapshot(), None, 1.0))
    assert "captured" not in plain
    rings = [RingCounters(0, "rx", 0, False, values(frames=9, captured=7, capture_dropped=2)),
             RingCounters(1, "rx", 0, False, values(frames=4, captured=4))]
    text = _render(bridge_table(snapshot(rings=rings), None, 1.0))
    assert "captured" in text and "capture drops" in text
    total = [c for c in next(line for line in text.splitlines() if "total" in line).split()
             if c != "│"]
    assert total[-2:] == ["11", "2"]


def test_the_totals_line_says_what_the_capture_took() -> None:
    from nmbridge.commands.demo import parse_totals
    from nmbridge.view import totals_phrase

    phrase = totals_phrase({"a->b": values(frames=9, bytes=900, captured=7, capture_dropped=2),
                            "b->a": values(frames=1, bytes=60)})
    assert phrase == ("a->b 9 frames 900 bytes 0 dropped, 7 captured, 2 capture_dropped; "
                      "b->a 1 frames 60 bytes 0 dropped")
    totals = parse_totals([f"nmbridge: stopped (signal) after 1.0 s: {phrase}"])
    assert totals is not None and totals.directions["a->b"] == (9, 900, 0)

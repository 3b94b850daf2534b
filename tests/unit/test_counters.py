"""The stats file without root: writer and reader round trip, the seqlock,
liveness through the writer's flock, and every way a file can be unreadable.

The ring layout here is made up (not the C core's): the reader must follow
whatever layout the file's metadata describes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nmbridge import counters
from nmbridge.counters import (
    FORMAT_VERSION,
    MAGIC,
    StatsWriter,
    list_instances,
    read_snapshot,
    stats_path,
)
from nmbridge.errors import NotRunning, PortBusy, StatsCorrupt, UsageError

FIELDS = ["frames", "bytes", "drop_oversize", "drop_chain", "drop_rx", "drop_tx", "txfull",
          "syncs", "errors"]
RECORD_SIZE = 8 * len(FIELDS) + 24  # spare words after the named ones, as the C record has
HEADER = {"seq": 0, "heartbeat_ns": 8, "nrings": 16, "state": 24}
HEADER_SIZE = 64
RINGS = [
    {"port": 0, "direction": "rx", "ring": 0, "host": False},
    {"port": 0, "direction": "rx", "ring": 1, "host": False},
    {"port": 0, "direction": "tx", "ring": 0, "host": False},
    {"port": 1, "direction": "rx", "ring": 1, "host": True},
    {"port": 1, "direction": "tx", "ring": 1, "host": True},
]
PORTS = [
    {"name": "netmap:eth9", "kind": "kernel", "backend": "kernel", "role": "wire"},
    {"name": "netmap:eth9^", "kind": "kernel", "backend": "kernel", "role": "host"},
]
FIXED = struct.Struct("<8sIIIIQQ")


def make_writer(stats_dir: Path, name: str = "eth9", rings: list[dict[str, Any]] | None = None,
                **kw: Any) -> StatsWriter:
    return StatsWriter(
        str(stats_dir), name, ports=PORTS, rings=RINGS if rings is None else rings,
        record_fields=FIELDS, record_size=RECORD_SIZE, counters_header=HEADER,
        counters_header_size=HEADER_SIZE, zero_copy=kw.get("zero_copy", True),
    )


def put_header(w: StatsWriter, key: str, value: int) -> None:
    struct.pack_into("<Q", w.map, w.counters_offset + HEADER[key], value)


def put_ring(w: StatsWriter, index: int, values: dict[str, int]) -> None:
    base = w.counters_offset + HEADER_SIZE + index * RECORD_SIZE
    for name, value in values.items():
        struct.pack_into("<Q", w.map, base + 8 * FIELDS.index(name), value)


def ring_values(index: int) -> dict[str, int]:
    """Distinct made-up values per ring and field."""
    return {f: 1000 * (index + 1) + i for i, f in enumerate(FIELDS)}


@pytest.fixture
def stats_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


# ---------------------------------------------------------------- round trip


def test_round_trip(stats_dir: Path) -> None:
    w = make_writer(stats_dir)
    try:
        for i in range(len(RINGS)):
            put_ring(w, i, ring_values(i))
        put_header(w, "state", 1)
        put_header(w, "heartbeat_ns", 123456789)
        put_header(w, "nrings", len(RINGS))
        snap = read_snapshot(w.path)
    finally:
        w.close()
    assert snap.instance == "eth9"
    assert snap.pid == os.getpid()
    assert snap.live is True
    assert snap.state == "running"
    assert snap.heartbeat_ns == 123456789
    assert snap.ports == PORTS
    assert snap.zero_copy is True
    assert abs(snap.started_ns - time.time_ns()) < 60e9
    assert [(r.port, r.direction, r.ring, r.host) for r in snap.rings] == [
        (r["port"], r["direction"], r["ring"], r["host"]) for r in RINGS
    ]
    for i, ring in enumerate(snap.rings):
        assert ring.values == ring_values(i)


def test_states(stats_dir: Path) -> None:
    w = make_writer(stats_dir)
    try:
        seen = []
        for code in (0, 1, 2, 3, 99):
            put_header(w, "state", code)
            seen.append(read_snapshot(w.path).state)
    finally:
        w.close()
    assert seen == ["starting", "running", "link-wait", "stopped", "unknown"]


def test_counters_start_at_zero_and_layout_is_page_aligned(stats_dir: Path) -> None:
    w = make_writer(stats_dir)
    try:
        assert w.counters_offset % 4096 == 0
        assert os.path.getsize(w.path) == w.counters_offset + HEADER_SIZE + RECORD_SIZE * len(RINGS)
        snap = read_snapshot(w.path)
    finally:
        w.close()
    assert all(v == 0 for r in snap.rings for v in r.values.values())
    assert snap.state == "starting"


def test_file_mode_is_0644_whatever_the_umask(stats_dir: Path) -> None:
    old = os.umask(0o077)
    try:
        w = make_writer(stats_dir)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(w.path).st_mode) == 0o644
    finally:
        w.close()


def test_close_removes_the_file_and_leaves_no_temporary(stats_dir: Path) -> None:
    w = make_writer(stats_dir)
    assert w.path == stats_dir / "eth9.stats"
    assert sorted(os.listdir(stats_dir)) == [".eth9.lock", "eth9.stats"]  # the lock stays
    w.close()
    w.close()  # twice is harmless
    assert os.listdir(stats_dir) == [".eth9.lock"]
    with pytest.raises(NotRunning):
        read_snapshot(w.path)


def test_close_leaves_a_newer_instance_file_alone(stats_dir: Path) -> None:
    """A writer whose file was replaced (its name reused after a crash) must not remove it."""
    w = make_writer(stats_dir)
    os.rename(w.path, stats_dir / "old")
    other = stats_dir / "eth9.stats"
    other.write_bytes(b"x")
    w.close()
    assert other.exists()


def test_list_instances(stats_dir: Path) -> None:
    assert list(list_instances(str(stats_dir))) == []  # no directory yet: nothing, no error
    a = make_writer(stats_dir, "b-inst")
    b = make_writer(stats_dir, "a-inst")
    (stats_dir / ".a-inst.stats.123.tmp").write_bytes(b"")
    (stats_dir / "README").write_bytes(b"")
    try:
        assert [p.name for p in list_instances(str(stats_dir))] == ["a-inst.stats", "b-inst.stats"]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "x" * 65, "sp ace", "é"])
def test_bad_instance_names(stats_dir: Path, name: str) -> None:
    with pytest.raises(UsageError):
        stats_path(str(stats_dir), name)


@pytest.mark.parametrize("name", ["eth0", "packet:veth0--tap:nmb0", "netmap:pipe{1", "eth0^",
                                  "a@b", "x" * 64])
def test_good_instance_names(stats_dir: Path, name: str) -> None:
    assert stats_path(str(stats_dir), name).name == f"{name}.stats"


# ---------------------------------------------------------------- the seqlock


def test_reader_waits_while_seq_is_odd(stats_dir: Path) -> None:
    w = make_writer(stats_dir)
    try:
        put_ring(w, 0, {"frames": 1})
        put_header(w, "seq", 1)  # the writer is mid-update
        put_ring(w, 0, {"frames": 5})  # half-written: must not be seen with seq odd

        def finish() -> None:
            time.sleep(0.03)
            put_ring(w, 0, {"frames": 7, "bytes": 700})
            put_header(w, "seq", 2)

        t = threading.Thread(target=finish)
        t.start()
        start = time.monotonic()
        snap = read_snapshot(w.path)
        waited = time.monotonic() - start
        t.join()
    finally:
        w.close()
    assert waited >= 0.02
    assert snap.rings[0].values["frames"] == 7
    assert snap.rings[0].values["bytes"] == 700


def test_reader_retries_when_seq_moved_during_the_copy(
    stats_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = make_writer(stats_dir)
    put_ring(w, 0, {"frames": 1})
    real_pread = os.pread
    area = HEADER_SIZE + RECORD_SIZE * len(RINGS)
    copies = []

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        if n == area:
            copies.append(data)
            if len(copies) == 1:  # the writer publishes while the first copy is taken
                put_ring(w, 0, {"frames": 2})
                put_header(w, "seq", 2)
        return data

    monkeypatch.setattr(counters.os, "pread", pread)
    try:
        snap = read_snapshot(w.path)
    finally:
        monkeypatch.undo()
        w.close()
    assert len(copies) == 2
    assert snap.rings[0].values["frames"] == 2


def test_live_writer_stuck_mid_update_is_reported_not_hung(stats_dir: Path) -> None:
    w = make_writer(stats_dir)
    try:
        put_header(w, "seq", 3)
        start = time.monotonic()
        with pytest.raises(StatsCorrupt, match="never settled"):
            read_snapshot(w.path)
        assert time.monotonic() - start < 5
    finally:
        w.close()


# ---------------------------------------------------------------- liveness

CHILD = """
import struct, sys, time
from nmbridge.counters import StatsWriter
w = StatsWriter(sys.argv[1], sys.argv[2], ports=[{"name": "a"}, {"name": "b"}],
                rings=[{"port": 0, "direction": "rx", "ring": 0}],
                record_fields=["frames", "bytes"], record_size=16,
                counters_header={"seq": 0, "heartbeat_ns": 8, "nrings": 16, "state": 24},
                counters_header_size=32, zero_copy=False)
struct.pack_into("<QQ", w.map, w.counters_offset + 32, 42, 4200)
struct.pack_into("<Q", w.map, w.counters_offset + 24, 1)
struct.pack_into("<Q", w.map, w.counters_offset, int(sys.argv[3]))
print("ready", flush=True)
time.sleep(60)
"""


def _child_writer(stats_dir: Path, name: str, seq: int = 2) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(stats_dir), name, str(seq)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        pytest.fail(f"the child writer did not start: {line!r}")
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_other_process_writer_reads_live(stats_dir: Path) -> None:
    proc = _child_writer(stats_dir, "child")
    try:
        snap = read_snapshot(stats_dir / "child.stats")
        assert snap.live is True
        assert snap.state == "running"
        assert snap.pid == proc.pid
        assert snap.rings[0].values == {"frames": 42, "bytes": 4200}
    finally:
        _kill(proc)


@pytest.mark.parametrize("seq", [2, 5], ids=["settled", "killed-mid-update"])
def test_sigkilled_writer_leaves_a_stale_file(stats_dir: Path, seq: int) -> None:
    proc = _child_writer(stats_dir, "child", seq)
    pid = proc.pid
    _kill(proc)
    snap = read_snapshot(stats_dir / "child.stats")
    assert snap.live is False
    assert snap.state == "stale"
    assert snap.pid == pid
    # its last counters are still there to read, even with seq left odd
    assert snap.rings[0].values == {"frames": 42, "bytes": 4200}


def test_new_writer_replaces_a_stale_file(stats_dir: Path) -> None:
    proc = _child_writer(stats_dir, "eth9")
    _kill(proc)
    old_ino = os.stat(stats_dir / "eth9.stats").st_ino
    w = make_writer(stats_dir, "eth9")
    try:
        assert os.stat(w.path).st_ino != old_ino
        snap = read_snapshot(w.path)
        assert snap.live is True
        assert snap.pid == os.getpid()
        assert len(snap.rings) == len(RINGS)
    finally:
        w.close()


def test_second_live_writer_of_a_name_is_busy(stats_dir: Path) -> None:
    proc = _child_writer(stats_dir, "eth9")
    try:
        with pytest.raises(PortBusy, match=rf"already running \(pid {proc.pid}\)"):
            make_writer(stats_dir, "eth9")
        # the failed writer left nothing behind and did not disturb the running one
        assert sorted(os.listdir(stats_dir)) == [".eth9.lock", "eth9.stats"]
        assert read_snapshot(stats_dir / "eth9.stats").live is True
    finally:
        _kill(proc)


def test_second_writer_in_the_same_process_is_busy(stats_dir: Path) -> None:
    w = make_writer(stats_dir, "eth9")
    try:
        with pytest.raises(PortBusy):
            make_writer(stats_dir, "eth9")
    finally:
        w.close()


RACER = """
import sys, time
from nmbridge.counters import StatsWriter
from nmbridge.errors import PortBusy
while time.time() < float(sys.argv[3]):
    pass
try:
    w = StatsWriter(sys.argv[1], sys.argv[2], ports=[], rings=[], record_fields=["frames"],
                    record_size=8,
                    counters_header={"seq": 0, "heartbeat_ns": 8, "nrings": 16, "state": 24},
                    counters_header_size=32, zero_copy=False)
except PortBusy:
    print("busy", flush=True)
    sys.exit(0)
print("ok", flush=True)
time.sleep(60)
"""


def test_writers_starting_together_one_wins(stats_dir: Path) -> None:
    stats_dir.mkdir()
    go = time.time() + 1.0
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(stats_dir), "race", str(go)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        answers = sorted((p.stdout.readline().strip() if p.stdout else "") for p in procs)
    finally:
        for p in procs:
            _kill(p)
    assert answers == ["busy", "busy", "busy", "ok"]


# ---------------------------------------------------------------- unreadable files


def _raw_file(path: Path, *, magic: bytes = MAGIC, version: int = FORMAT_VERSION,
              meta: dict[str, Any] | bytes | None = None, counters_ofs: int = 4096,
              size: int | None = None, meta_len: int | None = None) -> None:
    if meta is None:
        meta = {"instance": "x", "ports": PORTS, "rings": RINGS, "fields": FIELDS,
                "record_size": RECORD_SIZE, "counters_header": HEADER,
                "counters_header_size": HEADER_SIZE, "zero_copy": True}
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    head = FIXED.pack(magic, version, len(raw) if meta_len is None else meta_len, 1, 0, 0,
                      counters_ofs) + raw
    full = max(counters_ofs, len(head)) + HEADER_SIZE + RECORD_SIZE * len(RINGS)
    data = head.ljust(full, b"\0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: full if size is None else size])


def test_hand_made_file_reads(stats_dir: Path) -> None:
    """The helper below makes a valid file; each corruption test changes one thing."""
    _raw_file(stats_dir / "x.stats")
    snap = read_snapshot(stats_dir / "x.stats")
    assert snap.live is False
    assert len(snap.rings) == len(RINGS)


def _meta(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"instance": "x", "ports": PORTS, "rings": RINGS, "fields": FIELDS,
                            "record_size": RECORD_SIZE, "counters_header": HEADER,
                            "counters_header_size": HEADER_SIZE, "zero_copy": True}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


CORRUPT: dict[str, tuple[dict[str, Any], str]] = {
    "empty": ({"size": 0}, "no header"),
    "truncated-header": ({"size": 20}, "no header"),
    "bad-magic": ({"magic": b"NOTSTATS"}, "bad magic"),
    "newer-version": ({"version": FORMAT_VERSION + 1}, "newer than this nmbridge reads"),
    "version-zero": ({"version": 0}, "bad stats format version"),
    "truncated-metadata": ({"size": FIXED.size + 10}, "truncated stats file .metadata"),
    "meta-len-too-big": ({"meta_len": 1 << 30}, "truncated stats file .metadata"),
    "truncated-counters": ({"size": 4096 + HEADER_SIZE + 10}, "truncated stats file .counters"),
    "counters-missing": ({"size": 4096}, "truncated stats file .counters"),
    "metadata-not-json": ({"meta": b"{not json"}, "bad metadata"),
    "metadata-not-utf8": ({"meta": b"\xff\xfe"}, "bad metadata"),
    "metadata-a-list": ({"meta": b"[1, 2]"}, "bad metadata"),
    "no-fields": ({"meta": _meta(fields=None)}, "bad metadata"),
    "fields-a-string": ({"meta": _meta(fields="frames")}, "bad metadata"),
    "header-a-list": ({"meta": _meta(counters_header=[0, 8])}, "bad metadata"),
    "port-not-object": ({"meta": _meta(ports=["a", "b"])}, "bad metadata"),
    "no-seq": ({"meta": _meta(counters_header={"heartbeat_ns": 8, "nrings": 16, "state": 24})},
               "bad record layout"),
    "seq-outside-header": ({"meta": _meta(counters_header={**HEADER, "seq": 4000})},
                           "bad record layout"),
    "seq-negative": ({"meta": _meta(counters_header={**HEADER, "seq": -8})}, "bad record layout"),
    "record-too-small": ({"meta": _meta(record_size=8)}, "bad record layout"),
    # json writes these as Infinity and NaN; 1e400 reads as infinity too
    "record-size-infinite": ({"meta": _meta(record_size=float("inf"))}, "bad metadata"),
    "header-size-1e400": ({"meta": json.dumps(_meta()).replace(
        f'"counters_header_size": {HEADER_SIZE}', '"counters_header_size": 1e400').encode()},
        "bad metadata"),
    "ring-port-1e400": ({"meta": json.dumps(_meta(rings=[{"port": 0, "direction": "rx",
                                                          "ring": 0}])).replace(
        '"port": 0', '"port": 1e400').encode()}, "bad metadata"),
    "counters-overlap-metadata": ({"counters_ofs": 16}, "bad record layout"),
    "ring-bad-direction": ({"meta": _meta(rings=[{"port": 0, "direction": "up", "ring": 0}])},
                           "bad ring metadata"),
    "ring-bad-port": ({"meta": _meta(rings=[{"port": 7, "direction": "rx", "ring": 0}])},
                      "bad ring metadata"),
    "ring-no-port": ({"meta": _meta(rings=[{"direction": "rx", "ring": 0}])},
                     "bad ring metadata"),
    "ring-a-list": ({"meta": _meta(rings=[[0, "rx", 0]])}, "bad ring metadata"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_unreadable_files_are_stats_corrupt(stats_dir: Path, case: str) -> None:
    kwargs, message = CORRUPT[case]
    path = stats_dir / "x.stats"
    _raw_file(path, **kwargs)
    with pytest.raises(StatsCorrupt, match=message) as info:
        read_snapshot(path)
    assert str(path) in info.value.message
    assert "\n" not in info.value.message
    assert info.value.exit_status == 9


def test_newer_version_says_upgrade(stats_dir: Path) -> None:
    _raw_file(stats_dir / "x.stats", version=FORMAT_VERSION + 1)
    with pytest.raises(StatsCorrupt, match="upgrade nmbridge"):
        read_snapshot(stats_dir / "x.stats")


def test_missing_file_is_not_running(stats_dir: Path) -> None:
    with pytest.raises(NotRunning):
        read_snapshot(stats_dir / "nope.stats")

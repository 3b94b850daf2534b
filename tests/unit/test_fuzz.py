"""Bad input, fuzzed with hypothesis: whatever a user or a damaged file hands nmbridge
ends in a result or in one of its errors (an NmbridgeError subclass, or click's usage
error), with one line on stderr and a documented exit status -- never a traceback,
never a hang.

What is fuzzed here and not elsewhere:
- port names and the IFACE argument through the command line (test_portspec.py
  fuzzes parse_port itself on any text);
- every option of `bridge`, `stats`, `demo` and `explain`: a value either fails as a
  usage error or reaches the command within its documented range (finite numbers,
  a valid instance name) -- checked where the bridge would start opening things;
- the stats-file reader on mutated bytes and on metadata of any JSON shape
  (test_counters.py has one test per corruption made by hand), and everything that
  renders what the reader accepted: the table, the log line, JSON and Prometheus.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmbridge import cli, export, terminal, view
from nmbridge.commands import bridge as runner
from nmbridge.commands import stats as statscmd
from nmbridge.counters import (
    FORMAT_VERSION,
    MAGIC,
    Snapshot,
    read_snapshot,
    valid_instance_name,
)
from nmbridge.errors import EXIT_STATUSES, NotRunning, StatsCorrupt
from nmbridge.portspec import parse_port

#: the fuzz tests together stay within a few seconds
FAST = settings(max_examples=300, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


class _Reached(Exception):
    """Raised where run_bridge would start touching the system: the options passed."""


# ------------------------------------------------------------------ the command line


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """nmbridge's entry point in-process: (status, stdout, stderr). A Python exception
    escaping it is what a user would see as a traceback: it fails the test."""
    capsys.readouterr()
    status = cli.run(argv)
    out, err = capsys.readouterr()
    return status, out, err


def assert_clean_failure(status: int, err: str) -> None:
    """A documented status, one `nmbridge: error:` line (usage errors may add the help)."""
    assert status in EXIT_STATUSES, (status, err)
    assert status != 0
    assert "Traceback" not in err
    first = err.splitlines()[0] if err else ""
    assert first.startswith("nmbridge: error: ") or first.startswith("Usage:"), err
    if first.startswith("nmbridge: error: "):
        assert len(err.splitlines()) == 1, err


@pytest.fixture
def bridge_reached(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[runner.BridgeOptions]]:
    """run_bridge runs for real up to the stats directory check, which stops it."""
    seen: list[runner.BridgeOptions] = []
    real = runner.run_bridge

    def stop_at_stats_dir(stats_dir: str) -> None:
        raise _Reached(stats_dir)

    def recording(opts: runner.BridgeOptions) -> runner.Totals:
        seen.append(opts)
        return real(opts)

    monkeypatch.setattr(runner, "check_stats_dir", stop_at_stats_dir)
    monkeypatch.setattr(runner, "run_bridge", recording)
    terminal.set_verbosity(0)
    yield seen
    terminal.set_verbosity(0)


def bridge_outcome(argv: list[str], capsys: pytest.CaptureFixture[str],
                   seen: list[runner.BridgeOptions]) -> runner.BridgeOptions | None:
    """The options that reached run_bridge's first side effect, or None after a clean
    failure."""
    seen.clear()
    try:
        status, _out, err = run_cli(argv, capsys)
    except _Reached:
        assert len(seen) == 1
        return seen[0]
    if status == 0:  # only help gets out of the command without starting it
        assert {"--help", "-h"} & set(argv) and _out.startswith("Usage:"), argv
        return None
    assert_clean_failure(status, err)
    return None


def check_reached(opts: runner.BridgeOptions) -> None:
    """What run_bridge may rely on once the options passed."""
    for port in opts.ports:
        parse_port(port)  # the ports it will open are names it can read
    for value in (opts.wait_link, opts.duration, opts.interval):
        assert value is None or math.isfinite(value), opts
    assert opts.wait_link >= 0 and opts.interval >= 0.1
    assert opts.duration is None or opts.duration > 0
    assert 1 <= opts.burst <= 8192 and 1 <= opts.poll_timeout_ms <= 1000
    assert opts.rx_usecs is not None and 0 <= opts.rx_usecs <= 10000
    assert opts.count is None or opts.count >= 1
    assert opts.name is None or valid_instance_name(opts.name), opts.name


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
NUMBERS = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "+inf", "infinity", "1e309", "-0", "0",
                     "0.0", "0x10", "1_000", " 5", "5 ", "", "1e-400", "0.09", "0.1",
                     "8192", "8193", "1000", "1001", "\x00", "١٢", "٣.٥"]),
    TEXT,
)
PORTS = st.one_of(
    TEXT,
    st.sampled_from(["packet:veth0", "tap:nmb0", "netmap:eth0", "netmap:eth0^", "vale0:a",
                     "netmap:pipe{1", "packet:", "tap:", "packet:a/b", "tap:" + "x" * 16,
                     "netmap:eth0@conf:rings=4", "eth0", "-", "--help", "-i"]),
)
OPTIONS = {
    "--burst": NUMBERS, "--wait-link": NUMBERS, "--poll-timeout": NUMBERS, "--rx-usecs": NUMBERS,
    "--duration": NUMBERS, "--count": NUMBERS, "--interval": NUMBERS,
    "--name": st.one_of(TEXT, st.sampled_from(["a", ".hidden", "x" * 64, "x" * 65, "a/b",
                                                "..", "eth0^", "vale0:a{1"])),
    "--metrics-listen": st.one_of(NUMBERS, st.sampled_from(
        ["9417", "127.0.0.1:9417", "[::1]:9417", ":9417", "0", "65536", "localhost:80",
         "1.2.3.4:", "a:b:c"])),
}


@st.composite
def bridge_argv(draw: st.DrawFn) -> list[str]:
    argv = ["bridge"]
    if draw(st.booleans()):
        argv.append(draw(PORTS))
    else:
        for _ in range(draw(st.integers(0, 3))):
            argv += ["-i", draw(PORTS)]
    for opt in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=4, unique=True)):
        argv += [opt, draw(OPTIONS[opt])]
    argv += draw(st.lists(st.sampled_from(["--no-zero-copy", "--busy-poll", "--live",
                                           "--no-live", "-v", "-q", "--isolate"]),
                          max_size=2))
    return argv


@FAST
@given(argv=bridge_argv())
def test_bridge_options_fail_cleanly_or_reach_the_bridge_valid(
        argv: list[str], capsys: pytest.CaptureFixture[str],
        bridge_reached: list[runner.BridgeOptions]) -> None:
    opts = bridge_outcome(argv, capsys, bridge_reached)
    if opts is not None:
        check_reached(opts)


@FAST
@given(option=st.sampled_from(sorted(OPTIONS)), value=NUMBERS)
def test_each_option_alone(option: str, value: str, capsys: pytest.CaptureFixture[str],
                           bridge_reached: list[runner.BridgeOptions]) -> None:
    opts = bridge_outcome(["-i", "packet:veth0", "-i", "tap:nmb0", option, value], capsys,
                          bridge_reached)
    if opts is not None:
        check_reached(opts)


@pytest.mark.parametrize("option", ["--wait-link", "--duration", "--interval"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309"])
def test_seconds_must_be_finite(option: str, value: str, capsys: pytest.CaptureFixture[str],
                                bridge_reached: list[runner.BridgeOptions]) -> None:
    """A sleep of NaN or infinity seconds is an exception in a thread, or a bridge
    that never stops: refused as a usage error."""
    status, _out, err = run_cli(["-i", "packet:veth0", "-i", "tap:nmb0", option, value],
                                capsys)
    assert status == 2, err
    assert err.startswith("nmbridge: error: ") and option in err, err


@pytest.mark.parametrize("name", ["a/b", ".hidden", "x" * 65, "a b", "é"])
def test_bad_instance_name_fails_before_anything_is_touched(
        name: str, capsys: pytest.CaptureFixture[str],
        bridge_reached: list[runner.BridgeOptions]) -> None:
    status, _out, err = run_cli(["-i", "packet:veth0", "-i", "tap:nmb0", "--name", name],
                                capsys)
    assert status == 2, err
    assert "bad instance name" in err


@FAST
@given(iface=TEXT)
def test_iface_argument(iface: str, capsys: pytest.CaptureFixture[str],
                        bridge_reached: list[runner.BridgeOptions]) -> None:
    opts = bridge_outcome(["--", iface], capsys, bridge_reached)
    if opts is not None:
        check_reached(opts)
        assert opts.ports == (f"netmap:{iface.removeprefix('netmap:')}",
                              f"netmap:{iface.removeprefix('netmap:')}^")


@FAST
@given(names=st.lists(PORTS, min_size=1, max_size=3), as_json=st.booleans())
def test_explain_any_names(names: list[str], as_json: bool,
                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", *(["--json"] if as_json else []), "--", *names]
    status, out, err = run_cli(argv, capsys)
    if status == 0:
        if as_json:
            assert [json.loads(x)["name"] for x in out.splitlines()] == names
    else:
        assert_clean_failure(status, err)
        assert status == 2


@FAST
@given(words=st.lists(st.sampled_from(["--interval", "--json", "--prometheus", "--watch",
                                       "-w", "--bogus"]) | TEXT, max_size=4),
       number=NUMBERS)
def test_stats_options(words: list[str], number: str, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shown: list[dict[str, Any]] = []

    def record(stats_dir: str, name: str | None, fmt: str, watch: bool = False,
               interval: float = 1.0) -> None:
        shown.append({"name": name, "fmt": fmt, "watch": watch, "interval": interval})

    monkeypatch.setattr(statscmd, "show", record)
    argv = ["stats", "--stats-dir", str(tmp_path)]
    for w in words:
        argv += [w, number] if w == "--interval" else [w]
    status, out, err = run_cli(argv, capsys)
    if status == 0 and out.startswith("Usage:"):
        assert not shown
    elif status == 0:
        assert len(shown) == 1
        assert math.isfinite(shown[0]["interval"]) and shown[0]["interval"] >= 0.1
    else:
        assert_clean_failure(status, err)


@FAST
@given(duration=NUMBERS, rate=NUMBERS)
def test_demo_options(duration: str, rate: str, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    from nmbridge.commands import demo

    got: list[Any] = []
    monkeypatch.setattr(demo, "run_demo", got.append)
    status, _out, err = run_cli(["demo", "--duration", duration, "--rate", rate], capsys)
    if status == 0:
        (opts,) = got
        assert math.isfinite(opts.duration) and opts.duration >= 1
        assert 1 <= opts.rate <= 20000
    else:
        assert_clean_failure(status, err)


# ------------------------------------------------------------------ the stats file

FIELDS = ["frames", "bytes", "drop_oversize", "drop_chain", "drop_rx", "drop_tx", "txfull",
          "syncs", "errors"]
RECORD_SIZE = 8 * len(FIELDS) + 56
HEADER = {"seq": 0, "heartbeat_ns": 8, "nrings": 16, "state": 24}
HEADER_SIZE = 64
FIXED = struct.Struct("<8sIIIIQQ")


def good_meta() -> dict[str, Any]:
    return {
        "instance": "fz",
        "ports": [{"name": "packet:veth0", "kind": "packet", "backend": "packet",
                   "role": None},
                  {"name": "tap:nmb0", "kind": "tap", "backend": "tap", "role": None}],
        "rings": [{"port": p, "direction": d, "ring": 0, "host": False}
                  for p in (0, 1) for d in ("rx", "tx")],
        "fields": FIELDS, "record_size": RECORD_SIZE, "counters_header": HEADER,
        "counters_header_size": HEADER_SIZE, "zero_copy": True,
    }


def file_bytes(meta: Any, counters: bytes | None = None, version: int = FORMAT_VERSION,
               counters_ofs: int = 4096, nrings: int = 4) -> bytes:
    raw = json.dumps(meta).encode()
    head = FIXED.pack(MAGIC, version, len(raw), 4242, 0, 1_700_000_000 * 10**9,
                      counters_ofs) + raw
    area = HEADER_SIZE + RECORD_SIZE * nrings
    body = counters if counters is not None else bytes(
        (i * 7) & 0xFF for i in range(area))
    return head.ljust(max(counters_ofs, len(head)), b"\0") + body


def read_and_render(path: Path) -> Snapshot | None:
    """read_snapshot, then every renderer on what it accepted; only the stats errors
    may come out."""
    started = time.monotonic()
    try:
        snap = read_snapshot(path)
    except (StatsCorrupt, NotRunning) as exc:
        assert "\n" not in exc.message
        assert exc.exit_status in (8, 9)
        return None
    finally:
        assert time.monotonic() - started < 5, "the reader must not hang"
    now = time.time_ns()
    json.dumps(export.json_document([snap], now, str(path.parent), "0"))
    export.prometheus_text([snap])
    view.bridge_table(snap, snap, 1.0)
    view.instances_table([snap], {snap.instance: snap}, now)
    view.log_line(snap, snap)
    view.summary(snap, snap, now)
    return snap


@pytest.fixture
def stats_file(tmp_path: Path) -> Path:
    return tmp_path / "fz.stats"


def test_the_unmutated_file_reads(stats_file: Path) -> None:
    """The base the mutations start from is a good file: they test the reader, not it."""
    stats_file.write_bytes(file_bytes(good_meta()))
    snap = read_and_render(stats_file)
    assert snap is not None and len(snap.rings) == 4 and not snap.live


@FAST
@given(flips=st.lists(st.tuples(st.integers(0, 4096 + HEADER_SIZE + 4 * RECORD_SIZE),
                                st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, 4096 + HEADER_SIZE + 4 * RECORD_SIZE),
       tail=st.binary(max_size=64))
def test_mutated_bytes(stats_file: Path, flips: list[tuple[int, int]], cut: int | None,
                       tail: bytes) -> None:
    data = bytearray(file_bytes(good_meta()))
    for at, value in flips:
        if at < len(data):
            data[at] = value
    if cut is not None:
        del data[cut:]
    stats_file.write_bytes(bytes(data) + tail)
    read_and_render(stats_file)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
META_KEYS = sorted(good_meta())


@FAST
@given(changes=st.dictionaries(st.sampled_from(META_KEYS), JSON, min_size=1, max_size=3))
def test_metadata_of_any_shape(stats_file: Path, changes: dict[str, Any]) -> None:
    meta = good_meta()
    meta.update(changes)
    stats_file.write_bytes(file_bytes(meta))
    read_and_render(stats_file)


PORT_ENTRY = st.dictionaries(st.sampled_from(["name", "kind", "backend", "role", "x"]),
                             JSON, max_size=5)
RING_ENTRY = st.fixed_dictionaries(
    {"port": st.integers(-1, 3) | JSON, "direction": st.sampled_from(["rx", "tx"]) | JSON,
     "ring": st.integers(-2**63, 2**64) | JSON},
    optional={"host": JSON})


@FAST
@given(ports=st.lists(PORT_ENTRY, max_size=3), rings=st.lists(RING_ENTRY, max_size=6),
       fields=st.lists(st.sampled_from(FIELDS) | TEXT, max_size=12, unique=True),
       live=st.booleans())
def test_ports_rings_and_fields_of_any_shape(stats_file: Path, ports: list[Any],
                                             rings: list[Any], fields: list[str],
                                             live: bool) -> None:
    meta = good_meta()
    meta.update(ports=ports, rings=rings, fields=fields)
    stats_file.write_bytes(file_bytes(meta, nrings=len(rings)))
    if not live:
        read_and_render(stats_file)
        return
    # a live file: another open file description holds the writer's lock
    fd = os.open(stats_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        read_and_render(stats_file)
    finally:
        os.close(fd)


@FAST
@given(counters=st.binary(max_size=HEADER_SIZE + 4 * RECORD_SIZE))
def test_counter_values_of_any_size(stats_file: Path, counters: bytes) -> None:
    """Counters are whatever the file holds, u64 each: huge values, a seq left odd by a
    killed writer, a truncated area."""
    stats_file.write_bytes(file_bytes(good_meta(), counters=counters))
    read_and_render(stats_file)


@FAST
@given(files=st.lists(st.tuples(st.sampled_from(["good", "bytes", "json"]),
                                st.binary(max_size=300), JSON), min_size=1, max_size=4))
def test_stats_command_on_a_directory_of_bad_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        files: list[tuple[str, bytes, Any]]) -> None:
    """`nmbridge stats` over a directory: what reads is shown, what does not gets a line
    each; status 0, 8 or 9 only."""
    stats_dir = tmp_path / f"d{time.monotonic_ns()}"
    stats_dir.mkdir()
    for i, (kind, raw, meta) in enumerate(files):
        if kind == "good":
            data = file_bytes(good_meta())
        elif kind == "bytes":
            data = raw
        else:
            data = file_bytes(meta)
        (stats_dir / f"i{i}.stats").write_bytes(data)
    for fmt in ([], ["--json"], ["--prometheus"]):
        status, out, err = run_cli(["stats", "--stats-dir", str(stats_dir), *fmt], capsys)
        assert status in (0, 8, 9), (status, err)
        assert "Traceback" not in err
        assert all(line.startswith("nmbridge: ") for line in err.splitlines()), err
        if fmt == ["--json"] and status == 0:
            json.loads(out)
        bad = sum(1 for line in err.splitlines() if line.startswith("nmbridge: error: "))
        assert (status == 9) == (bad > 0)


def test_instance_names_of_any_text_are_judged_without_touching_files() -> None:
    """valid_instance_name is the gate for paths: nothing it accepts leaves the directory."""

    @FAST
    @given(name=TEXT)
    def check(name: str) -> None:
        if valid_instance_name(name):
            assert "/" not in name and name not in (".", "..") and not name.startswith(".")
            assert "\0" not in name

    check()


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/../../b", "/etc/passwd", "\0"])
def test_stats_name_cannot_leave_the_directory(name: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    status, _out, err = run_cli(["stats", "--stats-dir", str(tmp_path), "--", name], capsys)
    assert status == 2, err


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket", "symlink-to-fifo",
                                  "dangling-symlink"])
def test_special_files_in_the_stats_directory(kind: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Anything named *.stats that is not a regular file: a clean error, never a hang
    (a FIFO used to block `nmbridge stats` for ever, and a bridge of that name at start)."""
    import socket

    path = tmp_path / "odd.stats"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    else:
        path.symlink_to(tmp_path / "nothing")
    (tmp_path / "good.stats").write_bytes(file_bytes(good_meta()))
    started = time.monotonic()
    with pytest.raises((StatsCorrupt, NotRunning)) as info:
        read_snapshot(path)
    assert "\n" not in info.value.message
    status, out, err = run_cli(["stats", "--json", "--stats-dir", str(tmp_path)], capsys)
    assert time.monotonic() - started < 5
    assert "Traceback" not in err
    if kind == "socket":  # cannot be opened: as if it had vanished
        assert status == 0, err
    elif kind.endswith("symlink") or kind.startswith("symlink"):  # never followed
        assert status == 9, err
        assert err.splitlines()[-1] == f"nmbridge: error: {path}: a symbolic link, not a stats file"
    else:
        assert status == 9, err
        assert err.splitlines()[-1] == f"nmbridge: error: {path}: not a regular file"
    # the readable instance is still shown
    assert [i["name"] for i in json.loads(out)["instances"]] == ["fz"]


# ------------------------------------------------ sizes and names a file claims


def _sparse_file(path: Path, meta: dict[str, Any], size: int) -> None:
    """A file of `size` bytes, almost all hole: cheap to make, whatever it claims."""
    raw = json.dumps(meta).encode()
    head = FIXED.pack(MAGIC, FORMAT_VERSION, len(raw), 4242, 0, 1, 4096) + raw
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


@pytest.mark.parametrize("claim", ["fields", "rings", "record_size", "header_size", "ports"])
def test_a_file_claiming_more_than_any_bridge_writes_is_corrupt(
        claim: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review item 6: a 500 KB sparse file naming many fields and rings took `nmbridge
    stats` to 6 GB and a MemoryError, which ended the whole listing with status 1. Now
    that one file is corrupt (status 9) and the others are still listed."""
    meta = good_meta()
    size = 1 << 30  # a hole: what the layout needs fits, so only the limits refuse it
    if claim == "fields":
        meta["fields"] = ["frames", "bytes"] + [f"f{i}" for i in range(20000)]
        meta["record_size"] = 8 * len(meta["fields"])
    elif claim == "rings":
        meta["rings"] = [{"port": 0, "direction": "rx", "ring": i} for i in range(20000)]
    elif claim == "record_size":
        meta["record_size"] = 1 << 20
    elif claim == "header_size":
        meta["counters_header_size"] = 1 << 20
    else:
        meta["ports"] = [{"name": f"p{i}"} for i in range(1000)]
    path = tmp_path / "big.stats"
    _sparse_file(path, meta, size)
    with pytest.raises(StatsCorrupt, match="larger than any bridge writes"):
        read_snapshot(path)
    (tmp_path / "good.stats").write_bytes(file_bytes(good_meta()))
    status, out, err = run_cli(["stats", "--json", "--stats-dir", str(tmp_path)], capsys)
    assert status == 9, err
    assert [i["name"] for i in json.loads(out)["instances"]] == ["fz"]


def test_deeply_nested_metadata_is_corrupt_not_a_recursion_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.stats"
    raw = b"[" * 200_000 + b"]" * 200_000
    path.write_bytes(FIXED.pack(MAGIC, FORMAT_VERSION, len(raw), 1, 0, 1, 4096 * 100) + raw)
    with pytest.raises(StatsCorrupt, match="bad metadata"):
        read_snapshot(path)
    status, _out, err = run_cli(["stats", "--stats-dir", str(tmp_path)], capsys)
    assert status == 9 and "Traceback" not in err, err


def test_names_in_a_stats_file_reach_the_terminal_escaped(
        stats_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review item 6: instance and port names were printed raw; an escape sequence in a
    forged file (clear the screen, retitle the window) reached the reader's terminal."""
    meta = good_meta()
    meta["instance"] = "fz\x1b[2J\x1b]0;pwned\x07"
    meta["ports"][0]["name"] = "packet:v\x1b[31m0\r"
    stats_file.write_bytes(file_bytes(meta))
    snap = read_snapshot(stats_file)
    assert snap.instance == "fz\\x1b[2J\\x1b]0;pwned\\x07"
    assert snap.ports[0]["name"] == "packet:v\\x1b[31m0\\r"
    for argv in (["stats"], ["stats", "fz"], ["stats", "--json"], ["stats", "--prometheus"]):
        status, out, err = run_cli([*argv, "--stats-dir", str(stats_file.parent)], capsys)
        assert status == 0, err
        assert "\x1b" not in out + err and "\r" not in out + err and "\x07" not in out + err


@pytest.mark.parametrize("name", ["[/]x", "[link=http://198.18.0.1/]y[/link]", "[bold]z"])
def test_markup_in_names_is_shown_not_obeyed(
        name: str, stats_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review of this session: a port name '[/]x' in a forged file made the tables end
    in a rich MarkupError traceback; '[link=...]' would emit OSC-8 sequences."""
    meta = good_meta()
    meta["ports"][0]["name"] = name
    stats_file.write_bytes(file_bytes(meta))
    for argv in (["stats"], ["stats", "fz"]):
        status, out, err = run_cli([*argv, "--stats-dir", str(stats_file.parent)], capsys)
        assert status == 0, err
        assert "\x1b" not in out and "Traceback" not in err

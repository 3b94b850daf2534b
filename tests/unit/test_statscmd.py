"""`nmbridge stats` and `--metrics-listen` without root: stats directories made
in tmp_path by StatsWriter (a made-up ring layout), stale files left by
SIGKILLed children, corrupt files; the CLI entry point `nmbridge.cli.run`
so that exit statuses and the one-line messages are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nmbridge import terminal
from nmbridge.cli import run
from nmbridge.commands import stats as statscmd
from nmbridge.counters import StatsWriter
from nmbridge.errors import NotRunning, PortBusy, UsageError

FIELDS = ["frames", "bytes", "drop_oversize", "drop_chain", "drop_rx", "drop_tx", "txfull",
          "syncs", "errors", "filtered"]
RECORD_SIZE = 8 * len(FIELDS) + 8
HEADER = {"seq": 0, "heartbeat_ns": 8, "nrings": 16, "state": 24}
HEADER_SIZE = 32
RINGS = [
    {"port": 0, "direction": "rx", "ring": 0, "host": False},
    {"port": 0, "direction": "tx", "ring": 0, "host": False},
    {"port": 1, "direction": "rx", "ring": 0, "host": False},
    {"port": 1, "direction": "tx", "ring": 0, "host": False},
]
PORTS = [
    {"name": "packet:veth9", "kind": "packet", "backend": "packet", "role": None},
    {"name": "tap:nmb9", "kind": "tap", "backend": "tap", "role": None},
]
NMBRIDGE = Path(sys.executable).with_name("nmbridge")


class Instance:
    """A live instance in this process: a StatsWriter whose counters the test sets."""

    def __init__(self, stats_dir: Path, name: str) -> None:
        self.w = StatsWriter(str(stats_dir), name, ports=PORTS, rings=RINGS,
                             record_fields=FIELDS, record_size=RECORD_SIZE,
                             counters_header=HEADER, counters_header_size=HEADER_SIZE,
                             zero_copy=True)
        struct.pack_into("<Q", self.w.map, self.w.counters_offset + HEADER["state"], 1)

    def publish(self, heartbeat_ns: int) -> None:
        """What the C loop does with each publish: the time of it, by CLOCK_MONOTONIC."""
        struct.pack_into("<Q", self.w.map, self.w.counters_offset + HEADER["heartbeat_ns"],
                         heartbeat_ns)

    def set(self, ring: int, **values: int) -> None:
        base = self.w.counters_offset + HEADER_SIZE + ring * RECORD_SIZE
        for name, value in values.items():
            struct.pack_into("<Q", self.w.map, base + 8 * FIELDS.index(name), value)

    def close(self) -> None:
        self.w.close()


@pytest.fixture
def stats_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def instances(stats_dir: Path) -> Iterator[list[Instance]]:
    made: list[Instance] = []
    yield made
    for inst in made:
        inst.close()


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NMBRIDGE_STATS_DIR", raising=False)
    monkeypatch.setenv("COLUMNS", "160")
    terminal.set_verbosity(0)
    terminal._consoles.clear()  # consoles made for another test's streams


def two_instances(stats_dir: Path, instances: list[Instance]) -> None:
    a = Instance(stats_dir, "alpha")
    a.set(0, frames=100, bytes=6400, drop_rx=2, txfull=1)
    a.set(1, frames=30, bytes=3000)
    a.set(2, frames=30, bytes=3000)
    a.set(3, frames=100, bytes=6400, drop_tx=5)
    b = Instance(stats_dir, "beta")
    b.set(0, frames=7, bytes=700)
    b.set(3, frames=7, bytes=700)
    instances += [a, b]


def stats(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = run(["stats", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


CHILD = """
import struct, sys, time
from nmbridge.counters import StatsWriter
w = StatsWriter(sys.argv[1], sys.argv[2], ports=[{"name": "packet:a"}, {"name": "tap:b"}],
                rings=[{"port": 0, "direction": "rx", "ring": 0},
                       {"port": 1, "direction": "rx", "ring": 0}],
                record_fields=["frames", "bytes"], record_size=16,
                counters_header={"seq": 0, "heartbeat_ns": 8, "nrings": 16, "state": 24},
                counters_header_size=32, zero_copy=False)
struct.pack_into("<QQ", w.map, w.counters_offset + 32, 11, 1100)
struct.pack_into("<Q", w.map, w.counters_offset + 24, 1)
print("ready", flush=True)
time.sleep(60)
"""


def child_instance(stats_dir: Path, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(stats_dir), name],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def stale_instance(stats_dir: Path, name: str) -> int:
    proc = child_instance(stats_dir, name)
    kill(proc)
    return proc.pid


# ---------------------------------------------------------------- nothing to show


def test_nothing_running_missing_dir(capsys: pytest.CaptureFixture[str], stats_dir: Path) -> None:
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir))
    assert status == NotRunning.exit_status == 8
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("nmbridge: error: no nmbridge instance is running")
    assert str(stats_dir) in err


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--prometheus"]])
def test_nothing_running_empty_dir(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                                   fmt: list[str]) -> None:
    stats_dir.mkdir()
    (stats_dir / ".x.stats.1.tmp").write_bytes(b"")  # a writer's temporary: not an instance
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), *fmt)
    assert (status, out) == (8, "")
    assert "no nmbridge instance is running" in err


def test_unknown_name(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                      instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), "gamma")
    assert (status, out) == (8, "")
    assert err == (f"nmbridge: error: no instance named 'gamma' is running: no stats file in "
                   f"{stats_dir} (instances there: alpha, beta)\n")


def test_bad_name_is_a_usage_error(capsys: pytest.CaptureFixture[str], stats_dir: Path) -> None:
    status, _out, err = stats(capsys, "--stats-dir", str(stats_dir), "../etc")
    assert status == 2
    assert "bad instance name" in err


# ---------------------------------------------------------------- tables


def test_list(capsys: pytest.CaptureFixture[str], stats_dir: Path,
              instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    alpha = next(line for line in lines if line.startswith("alpha"))
    beta = next(line for line in lines if line.startswith("beta"))
    assert lines.index(alpha) < lines.index(beta)
    # name, pid, state, ports, uptime, frames and drops each way
    assert alpha.split()[:6] == ["alpha", str(os.getpid()), "running", "packet:veth9", "<->",
                                 "tap:nmb9"]
    # -> : 100 frames, drops 2 (rx) + 5 (tx on the other port); <- : 30 frames, no drops;
    # no rate: these writers publish nothing between the two reads
    assert alpha.split()[-6:] == ["100", "-", "7", "30", "-", "0"]
    assert beta.split()[-6:] == ["7", "-", "0", "0", "-", "0"]
    header = next(line for line in lines if "instance" in line)
    for col in ("pid", "state", "ports", "uptime", "frames ->", "drops ->", "frames <-",
                "drops <-"):
        assert col in header


def test_one_shot_shows_the_rate_the_bridge_published(
        capsys: pytest.CaptureFixture[str], stats_dir: Path, instances: list[Instance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a steady flow a one-shot read shows a true rate, never a false 0: the rate
    between two publishes of the bridge, by its own clock (heartbeat_ns)."""
    two_instances(stats_dir, instances)
    alpha = instances[0]
    alpha.publish(10_000_000_000)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the bridge publishes meanwhile: 500 frames in 0.25 s
        slept.append(seconds)
        frames = 100 + 500 * len(slept)
        alpha.set(0, frames=frames, bytes=frames * 64)
        alpha.publish(10_000_000_000 + 250_000_000 * len(slept))

    monkeypatch.setattr(statscmd.time, "sleep", sleep)
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir))
    assert (status, err, slept) == (0, "", [statscmd.RATE_GAP_S])
    row = next(line for line in out.splitlines() if line.startswith("alpha"))
    # -> 500 frames in 0.25 s; <- nothing moved between the publishes: a true 0
    assert row.split()[-8:] == ["600", "2.00", "kfps", "7", "30", "0", "fps", "0"], row
    beta = next(line for line in out.splitlines() if line.startswith("beta"))
    assert beta.split()[-6:] == ["7", "-", "0", "0", "-", "0"]  # published nothing: no rate

    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), "alpha")
    ring = next(line for line in out.splitlines() if "packet:veth9->tap:nmb9" in line)
    assert "2.00 kfps" in ring and "1.02 Mbit/s" in ring, ring


def test_one_shot_of_an_instance_that_publishes_nothing_shows_no_rate(
        capsys: pytest.CaptureFixture[str], stats_dir: Path, instances: list[Instance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    two_instances(stats_dir, instances)
    monkeypatch.setattr(statscmd.time, "sleep", lambda s: None)
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "alpha")
    assert status == 0
    ring = next(line for line in out.splitlines() if "packet:veth9->tap:nmb9" in line)
    cells = [c.strip() for c in ring.split("│") if c.strip()]
    assert cells[2:5] == ["100", "-", "-"], ring
    assert " 0 fps" not in out and "0 bit/s" not in out


def test_without_a_tty_the_table_is_plain_text_at_full_width(
        capsys: pytest.CaptureFixture[str], stats_dir: Path, instances: list[Instance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Into a pipe or a file, COLUMNS=80 or not: every column, nothing cut, no escape."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(statscmd.time, "sleep", lambda s: None)
    instances.append(Instance(stats_dir, "a-rather-long-instance-name-of-forty-chars"))
    two_instances(stats_dir, instances)
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert max(len(line) for line in lines) > 80
    assert "…" not in out and "\x1b" not in out
    assert all(line == line.rstrip() for line in lines)
    for col in ("uptime", "frames ->", "fps ->", "drops ->", "frames <-", "fps <-", "drops <-"):
        assert col in lines[0]
    row = next(line for line in lines if line.startswith("a-rather"))
    assert row.split()[:3] == ["a-rather-long-instance-name-of-forty-chars", str(os.getpid()),
                               "running"]
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), "alpha")
    assert "tx full" in out and "errors" in out and "packet:veth9->tap:nmb9" in out


def test_installed_into_a_pipe_is_full_width(stats_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NMBRIDGE_STATS_DIR"}
    env["COLUMNS"] = "40"
    proc = child_instance(stats_dir, "child-instance-with-a-long-name")
    try:
        res = subprocess.run([str(NMBRIDGE), "stats", "--stats-dir", str(stats_dir)],
                             capture_output=True, text=True, env=env, timeout=60)
    finally:
        kill(proc)
    assert (res.returncode, res.stderr) == (0, "")
    row = next(line for line in res.stdout.splitlines() if line.startswith("child"))
    assert row.split()[:6] == ["child-instance-with-a-long-name", str(proc.pid), "running",
                               "packet:a", "<->", "tap:b"]


def test_filtered_frames_are_shown_apart_from_drops(capsys: pytest.CaptureFixture[str],
                                                    stats_dir: Path,
                                                    instances: list[Instance]) -> None:
    """Frames a filter refused have columns of their own, after the drops, once an
    instance has any; JSON and Prometheus carry them always."""
    two_instances(stats_dir, instances)
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir))
    assert status == 0 and "filtered" not in out
    instances[0].set(0, filtered=40)
    instances[0].set(2, filtered=3)
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir))
    assert status == 0
    lines = out.splitlines()
    header = next(line for line in lines if "instance" in line)
    assert header.split()[-6:] == ["drops", "<-", "filtered", "->", "filtered", "<-"]
    alpha = next(line for line in lines if line.startswith("alpha"))
    beta = next(line for line in lines if line.startswith("beta"))
    # drops unchanged (and no rate: nothing published between the reads)
    assert alpha.split()[-8:] == ["100", "-", "7", "30", "-", "0", "40", "3"]
    assert beta.split()[-2:] == ["0", "0"]
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "alpha", "--json")
    out_dir, back_dir = json.loads(out)["instances"][0]["directions"]
    assert (out_dir["filtered"], out_dir["drops"], back_dir["filtered"]) == (40, 7, 3)
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "--prometheus")
    fams = {f.name: f for f in text_string_to_metric_families(out)}
    filtered = {(s.labels["instance"], s.labels["port"]): s.value
                for s in fams["nmbridge_filtered"].samples}
    assert filtered == {("alpha", "packet:veth9"): 40, ("alpha", "tap:nmb9"): 3,
                        ("beta", "packet:veth9"): 0, ("beta", "tap:nmb9"): 0}


def test_env_var_names_the_directory(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                                     instances: list[Instance],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    two_instances(stats_dir, instances)
    monkeypatch.setenv("NMBRIDGE_STATS_DIR", str(stats_dir))
    status, out, _err = stats(capsys)
    assert status == 0
    assert "alpha" in out


def test_one_instance_rings(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                            instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), "alpha")
    assert (status, err) == (0, "")
    assert "nmbridge alpha: packet:veth9 <-> tap:nmb9" in out
    assert "[running]" in out
    # the bridge swaps buffers, the sockets copy: never "zero-copy on" for these ports
    assert "zero-copy inside the bridge (the kernel copies at the sockets)" in " ".join(
        out.split())
    rows = [line for line in out.splitlines() if "rx 0" in line]
    assert len(rows) == 2
    assert "packet:veth9->tap:nmb9" in rows[0] and " 100 " in rows[0]
    assert "tap:nmb9->packet:veth9" in rows[1] and " 30 " in rows[1]
    assert "beta" not in out


def test_stale_is_shown_as_stale(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                                 instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    pid = stale_instance(stats_dir, "dead")
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir))
    assert status == 0
    dead = next(line for line in out.splitlines() if line.startswith("dead"))
    assert dead.split()[:3] == ["dead", str(pid), "stale"]
    assert " - " in dead  # no uptime
    assert "running" not in dead
    assert err.startswith("nmbridge: warning: 'dead' is not running")
    assert err.count("\n") == 1

    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), "dead")
    assert status == 0
    assert "[stale]" in out
    assert "'dead' is not running" in err


def test_only_stale_files_still_show(capsys: pytest.CaptureFixture[str], stats_dir: Path) -> None:
    stale_instance(stats_dir, "dead")
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "--json")
    assert status == 0
    (inst,) = json.loads(out)["instances"]
    assert (inst["live"], inst["state"], inst["uptime_seconds"]) == (False, "stale", None)


# ---------------------------------------------------------------- JSON, Prometheus


def test_json(capsys: pytest.CaptureFixture[str], stats_dir: Path,
              instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), "--json")
    assert (status, err) == (0, "")
    doc = json.loads(out)
    assert doc["schema_version"] == 1
    assert doc["stats_dir"] == str(stats_dir)
    assert [i["name"] for i in doc["instances"]] == ["alpha", "beta"]
    alpha = doc["instances"][0]
    assert (alpha["pid"], alpha["live"], alpha["state"]) == (os.getpid(), True, "running")
    assert alpha["uptime_seconds"] >= 0
    out_dir, back_dir = alpha["directions"]
    assert (out_dir["frames"], out_dir["bytes"], out_dir["drops"]) == (100, 6400, 7)
    assert out_dir["drops_by_reason"] == {"oversize": 0, "chain": 0, "rx": 2, "tx": 5,
                                          "header": 0, "gso": 0}
    assert out_dir["tx_full"] == 1
    assert (back_dir["frames"], back_dir["drops"]) == (30, 0)
    assert [r["frames"] for r in alpha["rings"]] == [100, 30, 30, 100]


def test_json_one_instance(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                           instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "beta", "--json")
    assert status == 0
    doc = json.loads(out)
    assert [i["name"] for i in doc["instances"]] == ["beta"]


def test_prometheus(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                    instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    stale_instance(stats_dir, "dead")
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), "--prometheus")
    assert (status, err) == (0, "")
    fams = {f.name: f for f in text_string_to_metric_families(out)}
    up = {s.labels["instance"]: s.value for s in fams["nmbridge_up"].samples}
    assert up == {"alpha": 1, "beta": 1, "dead": 0}
    frames = {(s.labels["instance"], s.labels["port"], s.labels["direction"]): s.value
              for s in fams["nmbridge_frames"].samples}
    assert frames[("alpha", "packet:veth9", "rx")] == 100
    assert frames[("alpha", "tap:nmb9", "tx")] == 100
    assert frames[("beta", "packet:veth9", "rx")] == 7
    assert not any(k[0] == "dead" for k in frames)
    drops = {(s.labels["instance"], s.labels["port"], s.labels["reason"]): s.value
             for s in fams["nmbridge_drops"].samples}
    assert drops[("alpha", "packet:veth9", "rx")] == 2
    assert drops[("alpha", "tap:nmb9", "tx")] == 5


def test_live_instance_of_another_process(capsys: pytest.CaptureFixture[str],
                                          stats_dir: Path) -> None:
    proc = child_instance(stats_dir, "child")
    try:
        status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "--json")
    finally:
        kill(proc)
    assert status == 0
    (inst,) = json.loads(out)["instances"]
    assert (inst["pid"], inst["live"], inst["state"]) == (proc.pid, True, "running")
    assert inst["directions"][0]["frames"] == 11


# ---------------------------------------------------------------- unreadable files


def test_corrupt_alone(capsys: pytest.CaptureFixture[str], stats_dir: Path) -> None:
    stats_dir.mkdir()
    (stats_dir / "bad.stats").write_bytes(b"garbage " * 100)
    for args in ([], ["bad"], ["--json"], ["--prometheus"], ["bad", "--json"]):
        status, out, err = stats(capsys, "--stats-dir", str(stats_dir), *args)
        assert (status, out) == (9, ""), args
        assert err == (f"nmbridge: error: {stats_dir}/bad.stats: not an nmbridge stats file "
                       "(bad magic)\n")


def test_truncated_and_newer(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                             instances: list[Instance]) -> None:
    inst = Instance(stats_dir, "cut")
    instances.append(inst)
    os.truncate(inst.w.path, 30)
    status, _out, err = stats(capsys, "--stats-dir", str(stats_dir), "cut")
    assert status == 9
    assert "truncated stats file" in err and err.count("\n") == 1

    newer = Instance(stats_dir, "newer")
    instances.append(newer)
    struct.pack_into("<I", newer.w.map, 8, 2)
    status, _out, err = stats(capsys, "--stats-dir", str(stats_dir), "newer")
    assert status == 9
    assert "stats format version 2 is newer than this nmbridge reads" in err


@pytest.mark.parametrize("fmt", ["table", "json", "prometheus"])
def test_corrupt_among_good_ones(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                                 instances: list[Instance], fmt: str) -> None:
    two_instances(stats_dir, instances)
    (stats_dir / "bad.stats").write_bytes(b"NMBSTATS")
    args = [] if fmt == "table" else [f"--{fmt}"]
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), *args)
    assert status == 9
    assert err == f"nmbridge: error: {stats_dir}/bad.stats: truncated stats file (no header)\n"
    assert "alpha" in out and "beta" in out
    if fmt == "json":
        assert [i["name"] for i in json.loads(out)["instances"]] == ["alpha", "beta"]


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("args", [["--json", "--prometheus"], ["--watch", "--json"],
                                  ["-w", "--prometheus"], ["--interval", "0"]])
def test_bad_combinations(capsys: pytest.CaptureFixture[str], stats_dir: Path,
                          instances: list[Instance], args: list[str]) -> None:
    two_instances(stats_dir, instances)
    status, out, err = stats(capsys, "--stats-dir", str(stats_dir), *args)
    assert (status, out) == (2, "")
    assert err.startswith("nmbridge: error: ") and err.count("\n") == 1


def test_watch_refreshes_with_rates_until_ctrl_c(
    capsys: pytest.CaptureFixture[str], stats_dir: Path, instances: list[Instance],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two_instances(stats_dir, instances)
    alpha = instances[0]
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 3:
            raise KeyboardInterrupt
        alpha.set(0, frames=100 + 1000 * len(ticks))
        alpha.publish(500_000_000 * len(ticks))  # 1000 frames a publish 0.5 s apart

    monkeypatch.setattr(statscmd.time, "sleep", sleep)
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "--watch",
                              "--interval", "0.5")
    assert status == 0
    assert ticks == [0.5, 0.5, 0.5]
    assert "fps ->" in out
    assert "2,100" in out  # the last read
    alpha_rows = [line for line in out.splitlines() if line.startswith("alpha")]
    assert alpha_rows and "2.00 kfps" in alpha_rows[-1]


def test_watch_keeps_going_when_the_instance_goes(
    capsys: pytest.CaptureFixture[str], stats_dir: Path, instances: list[Instance],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two_instances(stats_dir, instances)
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            instances.pop(0).close()  # alpha stops
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(statscmd.time, "sleep", sleep)
    status, out, _err = stats(capsys, "--stats-dir", str(stats_dir), "-w", "alpha")
    assert status == 0
    assert "no instance named 'alpha' is running" in out


def test_installed_command(stats_dir: Path) -> None:
    """The real thing: the console script in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "NMBRIDGE_STATS_DIR"}
    res = subprocess.run([str(NMBRIDGE), "stats", "--stats-dir", str(stats_dir)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 8
    assert res.stdout == ""
    assert res.stderr.startswith("nmbridge: error: no nmbridge instance is running")
    proc = child_instance(stats_dir, "child")
    try:
        res = subprocess.run([str(NMBRIDGE), "stats", "--stats-dir", str(stats_dir), "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
    finally:
        kill(proc)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["instances"][0]["pid"] == proc.pid


def test_help_mentions_the_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["stats", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--json", "--prometheus", "--watch", "--stats-dir", "NMBRIDGE_STATS_DIR"):
        assert opt in out


# ---------------------------------------------------------------- --metrics-listen


@pytest.mark.parametrize("text,expected", [
    ("9417", ("127.0.0.1", 9417)),
    ("127.0.0.1:9417", ("127.0.0.1", 9417)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:9417", ("127.0.0.1", 9417)),
    ("[::1]:9417", ("::1", 9417)),
    ("[::]:65535", ("::", 65535)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert statscmd.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "0", "65536", "http", "abc:9417", "1.2.3:9417",
                                  "::1:9417", ":9417", "127.0.0.1:", "127.0.0.1:-1",
                                  "[::1]", "example.com:9417", "²", "127.0.0.1:٩٤١٧"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        statscmd.parse_listen(text)


def test_bridge_bad_metrics_listen_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    status = run(["-i", "packet:x", "-i", "tap:y", "--stats-dir", str(tmp_path),
                  "--metrics-listen", "nowhere:99999"])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert err.count("\n") == 1
    assert "--metrics-listen" in err
    assert "Traceback" not in err


def test_metrics_port_in_use() -> None:
    """One line and status 6 (the bridge command's path is in tests/integration)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortBusy) as info:
            statscmd.MetricsServer("127.0.0.1", port, Path("/nonexistent"))
    assert info.value.exit_status == 6
    assert info.value.message == (f"cannot serve metrics on 127.0.0.1:{port}: the address "
                                  "is already in use (choose another port)")


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_server(stats_dir: Path, instances: list[Instance]) -> None:
    two_instances(stats_dir, instances)
    alpha = instances[0]
    server = statscmd.MetricsServer("127.0.0.1", 0, alpha.w.path)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, ctype, body = _get(base + "/metrics")
        assert status == 200
        assert ctype == "text/plain; version=0.0.4; charset=utf-8"
        fams: dict[str, Any] = {f.name: f for f in text_string_to_metric_families(body)}
        assert [s.labels["instance"] for s in fams["nmbridge_up"].samples] == ["alpha"]
        frames = {(s.labels["port"], s.labels["direction"]): s.value
                  for s in fams["nmbridge_frames"].samples}
        assert frames[("packet:veth9", "rx")] == 100
        alpha.set(0, frames=150)
        assert "nmbridge_frames_total{instance=\"alpha\",port=\"packet:veth9\",ring=\"0\"," \
               "direction=\"rx\"} 150" in _get(base + "/metrics")[2]
        assert _get(base + "/")[0] == 200
        assert _get(base + "/nope")[0] == 404
        instances.pop(0).close()  # the file is gone: unavailable, not a crash
        status, _ctype, body = _get(base + "/metrics")
        assert status == 503
        assert "no stats file" in body
    finally:
        server.close()


def test_serving_metrics_nothing_when_not_asked(tmp_path: Path) -> None:
    with statscmd.serving_metrics(None, tmp_path / "x.stats"):
        pass

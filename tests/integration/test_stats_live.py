"""`nmbridge stats` against a real bridge (root): emulated ports in a network
namespace made here, real frames sent with AF_PACKET, the counters read from
another process and scraped over HTTP, then the bridge SIGKILLed.

The namespace comes from the suite's `make_netns` (tests/conftest.py): a name
unique to this process and test, always removed. Under CI=true a missing
privilege fails the run instead of skipping it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from namespaces import add_veth
from polling import wait_for
from prometheus_client.parser import text_string_to_metric_families

from nmbridge.counters import read_snapshot

pytestmark = pytest.mark.root

NMBRIDGE = str(Path(sys.executable).with_name("nmbridge"))
PYTHON = sys.executable
METRICS_PORT = 9417  # the namespace's own loopback: no clash with the host
FRAME_SIZE = 128
ETHERTYPE = 0x88B5  # IEEE local experimental: nothing in the kernel answers it

SENDER = """
import socket, struct, sys, time
ifname, count, size, src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
head = b"\\xff" * 6 + bytes.fromhex(src) + struct.pack("!H", 0x88B5)
for i in range(count):
    s.send((head + struct.pack("!I", i)).ljust(size, b"\\0"))
    if i % 32 == 31:
        time.sleep(0.002)  # stay under the bridge's socket buffer: these tests count, not load
"""

SCRAPER = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    sys.stdout.write(r.headers["Content-Type"] + "\\n" + r.read().decode())
"""


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {res.returncode}: {res.stderr.strip()}")
    return res


@dataclass
class Lab:
    """A namespace with a veth pair a0 (the bridge's) / a1 (the traffic's)."""

    ns: str
    stats_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.ns, *argv, check=check)

    def bridge(self, name: str, tap: str, *extra: str) -> subprocess.Popen[bytes]:
        log = self.stats_dir.parent / f"{name}.{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, NMBRIDGE, "-i", "packet:a0", "-i", f"tap:{tap}",
                 "--stats-dir", str(self.stats_dir), "--name", name, "--no-live", "-q", *extra],
                stdout=out, stderr=subprocess.STDOUT,
            )
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def send(self, ifname: str, count: int, src: str) -> None:
        self.exec(PYTHON, "-c", SENDER, ifname, str(count), str(FRAME_SIZE), src)

    def stats(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`nmbridge stats` from another process, outside the namespace."""
        return _run(NMBRIDGE, "stats", "--stats-dir", str(self.stats_dir), *args, check=False)


@pytest.fixture
def lab(tmp_path: Path, make_netns: Callable[[str], str]) -> Iterator[Lab]:
    lab = Lab(make_netns("st"), tmp_path / "run")
    try:
        # no IPv6: router solicitations and MLD reports would add frames to the counts
        lab.exec("sh", "-c", "for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 "
                 "/proc/sys/net/ipv6/conf/default/disable_ipv6; do [ -e $f ] && echo 1 > $f; "
                 "done; true")
        add_veth(lab.ns, "a0", "a1")
        yield lab
    finally:
        for proc in lab.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _directions(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    inst = next(i for i in doc["instances"] if i["name"] == name)
    return list(inst["directions"])


def test_counters_match_traffic_then_stale_after_sigkill(lab: Lab) -> None:
    n_out, n_back = 500, 300
    proc = lab.bridge("live", "tpl", "--metrics-listen", f"127.0.0.1:{METRICS_PORT}")
    path = lab.stats_dir / "live.stats"
    snap = wait_for("the bridge's stats file", lambda: (s := read_snapshot(path)).live and
                    s.state == "running" and s, 15, proc, Path(proc.log))
    assert snap.pid == proc.pid
    idle = json.loads(lab.stats("live", "--json").stdout)
    assert [d["frames"] for d in _directions(idle, "live")] == [0, 0], "a quiet namespace"

    lab.send("a1", n_out, "020000000001")  # veth peer -> a0: packet:a0 -> tap
    lab.send("tpl", n_back, "020000000002")  # the TAP's kernel side -> tap: tap -> packet:a0

    def settled() -> dict[str, Any] | None:
        res = lab.stats("live", "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        frames = [d["frames"] for d in _directions(doc, "live")]
        return doc if frames == [n_out, n_back] else None

    doc = wait_for("the counters to reach what was sent", settled, 15, proc, Path(proc.log))
    time.sleep(0.5)
    doc = json.loads(lab.stats("--json").stdout)  # nothing more arrives afterwards
    assert doc["schema_version"] == 1
    (inst,) = doc["instances"]
    assert (inst["name"], inst["pid"], inst["live"], inst["state"]) == (
        "live", proc.pid, True, "running")
    out, back = inst["directions"]
    assert (out["label"], out["frames"], out["bytes"], out["drops"]) == (
        "packet:a0->tap:tpl", n_out, n_out * FRAME_SIZE, 0)
    assert (back["label"], back["frames"], back["bytes"], back["drops"]) == (
        "tap:tpl->packet:a0", n_back, n_back * FRAME_SIZE, 0)
    tx = {r["port_name"]: r["frames"] for r in inst["rings"] if r["direction"] == "tx"}
    assert tx == {"tap:tpl": n_out, "packet:a0": n_back}

    # the table, from another process
    res = lab.stats()
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("live"))
    assert row.split()[:3] == ["live", str(proc.pid), "running"]

    # scraped over HTTP inside the namespace, parsed by the reference parser
    scraped = lab.exec(PYTHON, "-c", SCRAPER, f"http://127.0.0.1:{METRICS_PORT}/metrics")
    ctype, _, body = scraped.stdout.partition("\n")
    assert ctype.startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    assert [(s.labels, s.value) for s in fams["nmbridge_up"].samples] == [
        ({"instance": "live"}, 1.0)]
    frames = {(s.labels["port"], s.labels["direction"]): s.value
              for s in fams["nmbridge_frames"].samples}
    assert frames == {("packet:a0", "rx"): n_out, ("tap:tpl", "tx"): n_out,
                      ("tap:tpl", "rx"): n_back, ("packet:a0", "tx"): n_back}
    assert all(s.value == 0 for s in fams["nmbridge_drops"].samples)
    assert sum(s.value for s in fams["nmbridge_bytes"].samples) == \
        2 * (n_out + n_back) * FRAME_SIZE

    # SIGKILL: no cleanup runs, the file stays, and must read as stale
    proc.kill()
    proc.wait(timeout=30)
    assert path.exists()
    res = lab.stats()
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith("live"))
    assert row.split()[:3] == ["live", str(proc.pid), "stale"]
    assert "running" not in row
    assert "'live' is not running" in res.stderr
    (inst,) = json.loads(lab.stats("--json").stdout)["instances"]
    assert (inst["live"], inst["state"], inst["uptime_seconds"]) == (False, "stale", None)
    assert inst["directions"][0]["frames"] == n_out  # its last counters
    prom = lab.stats("--prometheus").stdout
    up = {s.labels["instance"]: s.value for f in text_string_to_metric_families(prom)
          for s in f.samples if s.name == "nmbridge_up"}
    assert up == {"live": 0}

    # a new bridge of the same name takes the stale file's place
    again = lab.bridge("live", "tpl2", "--duration", "3")
    wait_for("the new instance", lambda: (s := read_snapshot(path)).live and s.pid == again.pid,
             15, again, Path(again.log))
    assert again.wait(timeout=30) == 0
    assert not path.exists()
    res = lab.stats()
    assert res.returncode == 8
    assert "no nmbridge instance is running" in res.stderr


def test_metrics_listen_port_in_use(lab: Lab) -> None:
    first = lab.bridge("one", "tpa", "--metrics-listen", str(METRICS_PORT))
    wait_for("the first bridge", lambda: read_snapshot(lab.stats_dir / "one.stats").live,
             15, first, Path(first.log))
    second = lab.bridge("two", "tpb", "--metrics-listen", str(METRICS_PORT))
    assert second.wait(timeout=30) == 6
    log = Path(second.log).read_text()  # type: ignore[attr-defined]
    assert log == (f"nmbridge: error: cannot serve metrics on 127.0.0.1:{METRICS_PORT}: the "
                   "address is already in use (choose another port)\n")
    assert not (lab.stats_dir / "two.stats").exists()

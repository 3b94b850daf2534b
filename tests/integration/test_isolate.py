"""`--isolate`: a packet: port's interface taken from the host stack while the bridge runs.

The sandbox's veth nmbv0 (the bridge's wire port) gets an address of its own,
198.18.1.2, so that the bridge namespace's own stack answers pings sent to it
from the wire namespace. Without --isolate it keeps answering while the bridge
runs (AF_PACKET only watches); with --isolate the echo requests reach the bridge
(counted, forwarded to the TAP, whose stack ignores a frame for another MAC) and
never the stack; once the bridge exits, the stack answers again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nmbridge.lab.sandbox import VETH_MAC, WIRE_MAC, Sandbox

pytestmark = pytest.mark.root

NMBRIDGE = str(Path(sys.executable).parent / "nmbridge")
WIRE_ADDR2 = "198.18.1.1"
VETH_ADDR2 = "198.18.1.2"


@pytest.fixture
def sb(sb: Sandbox) -> Sandbox:
    """The shared sandbox (tests/integration/conftest.py), nmbv0 with an address."""
    sb.ip(sb.wire_ns, "addr", "add", f"{WIRE_ADDR2}/24", "dev", sb.wire_if)
    sb.ip(sb.bridge_ns, "addr", "add", f"{VETH_ADDR2}/24", "dev", sb.veth_if)
    sb.ip(sb.wire_ns, "neigh", "replace", VETH_ADDR2, "lladdr", VETH_MAC, "dev", sb.wire_if,
          "nud", "permanent")
    sb.ip(sb.bridge_ns, "neigh", "replace", WIRE_ADDR2, "lladdr", WIRE_MAC, "dev", sb.veth_if,
          "nud", "permanent")
    return sb


def replies(sb: Sandbox, count: int = 3) -> int:
    res = sb.run(sb.wire_ns, ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1",
                              VETH_ADDR2], check=False, timeout=15)
    m = re.search(r"(\d+) received", res.stdout)
    assert m, res.stdout + res.stderr
    return int(m.group(1))


def start(sb: Sandbox, stats_dir: str, *extra: str) -> subprocess.Popen[str]:
    proc = sb.popen(
        sb.bridge_ns,
        [NMBRIDGE, "-i", sb.wire_port, "-i", sb.host_port, "--no-live", "--name", "iso",
         "--stats-dir", stats_dir, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 15
    while not (Path(stats_dir) / "iso.stats").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the bridge did not start"
        time.sleep(0.05)
    return proc


def wire_to_host(sb: Sandbox, stats_dir: str) -> dict[str, int]:
    res = subprocess.run([NMBRIDGE, "stats", "--json", "iso", "--stats-dir", stats_dir],
                         capture_output=True, text=True, timeout=15, check=True)
    doc = json.loads(res.stdout)
    (inst,) = doc["instances"]
    (direction,) = [d for d in inst["directions"] if d["from_port"] == 0]  # -i packet:nmbv0
    return direction


def test_without_isolate_the_host_stack_still_answers(sb: Sandbox) -> None:
    proc = start(sb, sb.tempdir("stats"))
    assert replies(sb) == 3
    assert sb.stop(proc) == 0


def test_isolate_takes_the_interface_from_the_stack_until_exit(sb: Sandbox) -> None:
    assert replies(sb) == 3  # the stack answers before
    stats_dir = sb.tempdir("stats")
    proc = start(sb, stats_dir, "--isolate")
    try:
        assert replies(sb) == 0
        assert wire_to_host(sb, stats_dir)["frames"] >= 3  # ...the bridge got them
    finally:
        status = sb.stop(proc)
        _out, err = proc.communicate()
    assert status == 0, err
    assert "taken from the host stack" in err
    assert replies(sb) == 3  # given back


def test_isolate_is_undone_when_the_bridge_is_killed(sb: Sandbox) -> None:
    proc = start(sb, sb.tempdir("stats"), "--isolate")
    assert replies(sb, 1) == 0
    proc.kill()
    proc.wait(10)
    assert replies(sb) == 3


def test_isolate_without_a_packet_port_is_a_usage_error(sb: Sandbox) -> None:
    res = sb.run(sb.bridge_ns, [NMBRIDGE, "-i", "tap:nmbx0", "-i", "tap:nmbx1", "--isolate",
                                "--stats-dir", sb.tempdir("stats")], check=False)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "--isolate applies to packet: ports" in res.stderr

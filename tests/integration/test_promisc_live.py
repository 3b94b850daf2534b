"""Promiscuous mode: a NIC that takes frames for the bridge is promiscuous while the
bridge runs, and no longer once it stops -- a SIGKILL too (the kernel takes back a
socket's PACKET_MR_PROMISC membership); --no-promisc leaves it alone. The interface's
promiscuity count is read with `ip -d link`, in the bridge's namespace."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from polling import wait_for

from nmbridge.counters import read_snapshot
from nmbridge.lab.sandbox import Sandbox

NMBRIDGE = str(Path(sys.executable).parent / "nmbridge")

pytestmark = pytest.mark.root


def promiscuity(sb: Sandbox, ns: str, ifname: str) -> int:
    out = sb.run(ns, ["ip", "-d", "link", "show", "dev", ifname], timeout=10).stdout
    m = re.search(r"promiscuity (\d+)", out)
    assert m, out
    return int(m.group(1))


def start(sb: Sandbox, *options: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    stats_dir = Path(sb.tempdir("stats"))
    log = Path(sb.tempdir("log")) / "stderr"
    argv = [NMBRIDGE, "-i", sb.wire_port, "-i", sb.host_port, "--name", "pm",
            "--stats-dir", str(stats_dir), "--no-live", *options]
    with open(log, "wb") as err:
        proc = sb.popen(sb.bridge_ns, argv, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=err)
    wait_for("the bridge to run",
             lambda: (s := read_snapshot(stats_dir / "pm.stats")).live and s.state == "running",
             20, proc, log)
    return proc, stats_dir, log


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_wire_is_promiscuous_while_the_bridge_runs(sb: Sandbox, how: str) -> None:
    assert promiscuity(sb, sb.bridge_ns, sb.veth_if) == 0
    proc, _stats, log = start(sb)
    try:
        assert promiscuity(sb, sb.bridge_ns, sb.veth_if) == 1
        assert promiscuity(sb, sb.bridge_ns, sb.tap_if) == 0  # the host side: not a NIC
        said = [line for line in log.read_text().splitlines() if "promiscuous" in line]
        assert said == [f"nmbridge: {sb.veth_if}: promiscuous while the bridge runs (undone "
                        "when it exits, however it exits; --no-promisc: not)"]
    finally:
        if how == "SIGKILL":
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        else:
            assert sb.stop(proc, 10) == 0, log.read_text()
    deadline = time.monotonic() + 5
    while promiscuity(sb, sb.bridge_ns, sb.veth_if) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert promiscuity(sb, sb.bridge_ns, sb.veth_if) == 0


def test_no_promisc_leaves_the_nic_alone(sb: Sandbox) -> None:
    proc, _stats, log = start(sb, "--no-promisc")
    try:
        assert promiscuity(sb, sb.bridge_ns, sb.veth_if) == 0
        assert "promiscuous" not in log.read_text()
    finally:
        assert sb.stop(proc, 10) == 0, log.read_text()

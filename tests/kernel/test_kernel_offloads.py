"""--offloads on a NIC the fake module plays (root): the interface is a real veth
(its offloads are real, set through ethtool's ioctl), netmap is the shim.

`nmbridge fk0` turns off the offloads netmap mode needs off, and turns exactly
those back on when it stops: after SIGTERM, after an error that ends it before it
forwards, and, when it was killed, at the stop of the next bridge of that NIC.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest
from test_kernel_bridge import RunningBridge

from nmbridge.nic import NETMAP_OFFLOADS

FakeKernel = Any  # the `fake` fixture's class (tests/kernel/conftest.py)

pytestmark = pytest.mark.root

READ = "import json, sys; from nmbridge import engine; " \
       "print(json.dumps(engine.ethtool.read_offloads(sys.argv[1])))"


def offloads(netns: str, ifname: str) -> dict[str, bool]:
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", READ, ifname],
                         capture_output=True, text=True, timeout=30, check=True)
    return {k: bool(v) for k, v in json.loads(out.stdout).items() if k in NETMAP_OFFLOADS}


def on(states: dict[str, bool]) -> set[str]:
    return {k for k, v in states.items() if v}


def test_offloads_are_off_while_bridging_and_back_after(fake: FakeKernel,
                                                       nic_netns: str) -> None:
    before = offloads(nic_netns, "fk0")
    assert on(before) >= {"tx-checksumming", "tcp-segmentation-offload"}, before  # a veth's
    bridge = RunningBridge(fake, ["fk0", "--no-live"], nic_netns)
    try:
        bridge.wait_ready("fk0", users=2)
        assert on(offloads(nic_netns, "fk0")) == set()
        (said,) = bridge.matching(r"fk0: offloads off for netmap mode")
        assert all(name in said for name in on(before)), said
        assert not bridge.matching(r"warning: fk0: offloads on")  # nothing left to warn of
        bridge.stop()
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert offloads(nic_netns, "fk0") == before
    assert not list(fake.stats_dir.glob(".offloads.*"))  # the record goes with the bridge


FEATURES = "import json, sys; from nmbridge import engine; " \
    "engine.ethtool.set_features(sys.argv[1], json.loads(sys.argv[2])); " \
    "print(json.dumps({k: v[0] for k, v in engine.ethtool.read_features(sys.argv[1]).items()}))"


def features(netns: str, ifname: str, change: dict[str, bool] | None = None) -> dict[str, bool]:
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", FEATURES, ifname,
                          json.dumps(change or {})],
                         capture_output=True, text=True, timeout=30, check=True)
    return {k: bool(v) for k, v in json.loads(out.stdout).items()}


def test_a_finer_feature_that_was_off_stays_off(fake: FakeKernel, nic_netns: str) -> None:
    """Review of this session: through ethtool -K's groups, 'tso on' at the stop turned
    on tx-tcp6-segmentation too, which the administrator had turned off. The bridge
    restores feature bits, each as it was."""
    before = features(nic_netns, "fk0", {"tx-tcp6-segmentation": False,
                                          "tx-scatter-gather-fraglist": False})
    assert before["tx-tcp-segmentation"] and not before["tx-tcp6-segmentation"], before
    bridge = RunningBridge(fake, ["fk0", "--no-live"], nic_netns)
    try:
        bridge.wait_ready("fk0", users=2)
        during = features(nic_netns, "fk0")
        assert not during["tx-tcp-segmentation"] and not during["tx-checksum-ip-generic"]
        bridge.stop()
    finally:
        bridge.kill()
    assert features(nic_netns, "fk0") == before


def test_offloads_come_back_after_an_error(fake: FakeKernel, nic_netns: str) -> None:
    """fk1's ring 5 does not exist: the register fails after both NICs' offloads were
    turned off; both come back."""
    before = {nic: offloads(nic_netns, nic) for nic in ("fk0", "fk1")}
    run = fake.run_cli(["-i", "netmap:fk0", "-i", "netmap:fk1-5", "--no-live"],
                       netns=nic_netns)
    assert run.returncode == 7, run.describe()
    assert "offloads" not in run.stderr  # changed, then back: nothing to tell but the error
    assert {nic: offloads(nic_netns, nic) for nic in ("fk0", "fk1")} == before


def test_keep_leaves_them_and_warns(fake: FakeKernel, nic_netns: str) -> None:
    before = offloads(nic_netns, "fk0")
    bridge = RunningBridge(fake, ["fk0", "--no-live", "--offloads", "keep"], nic_netns)
    try:
        bridge.wait_ready("fk0", users=2)
        assert offloads(nic_netns, "fk0") == before
        assert len(bridge.matching(r"warning: fk0: offloads on \(")) == 1
        bridge.stop()
    finally:
        bridge.kill()
    assert offloads(nic_netns, "fk0") == before


def test_a_killed_bridges_offloads_come_back_with_the_next_one(fake: FakeKernel,
                                                              nic_netns: str) -> None:
    """As under the unit: killed (the watchdog, OOM), restarted. The first bridge's
    record tells the next one what was on before either of them."""
    before = offloads(nic_netns, "fk0")
    first = RunningBridge(fake, ["fk0", "--no-live"], nic_netns)
    try:
        first.wait_ready("fk0", users=2)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.kill()
    assert on(offloads(nic_netns, "fk0")) == set()  # nobody put them back
    second = RunningBridge(fake, ["fk0", "--no-live"], nic_netns)
    try:
        second.wait_ready("fk0", users=2)
        assert second.matching(r"left off by a bridge before this one")
        second.stop()
    finally:
        second.kill()
    assert second.proc.returncode == 0, second.stderr()
    assert offloads(nic_netns, "fk0") == before

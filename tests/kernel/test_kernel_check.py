"""`nmbridge check IFACE` against the fake netmap module, in a namespace where
the interface is a real veth (its link, MTU and offloads are real; netmap is
the fake): what it says about netmap and the rings, and its exit status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kernel_snippets import FakeKernel, open_each
from namespaces import ip

pytestmark = pytest.mark.root


def netmap_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[4:].startswith(("netmap:", "rings:"))]


def test_check_reads_rings_from_netmap_and_fixes_offloads(fake: FakeKernel,
                                                          nic_netns: str) -> None:
    before = fake.run_cli(["check", "fk1"], netns=nic_netns)
    assert before.returncode == 10, before.describe()
    # what a register of the NIC and of its host rings answers
    wire, host = (w for _n, _o, w in open_each(fake, ["netmap:fk1", "netmap:fk1^"]))
    reply = wire["reply"]
    assert netmap_lines(before.stdout) == [
        f"ok  netmap: {fake.device} present, API 14 accepted",
        f"ok  rings: {reply['nr_tx_rings']} TX / {reply['nr_rx_rings']} RX NIC rings of "
        f"{reply['nr_tx_slots']}/{reply['nr_rx_slots']} slots, "
        f"{len(host['bound_tx'])} TX / {len(host['bound_rx'])} RX host rings, "
        f"memory region {reply['nr_mem_id']}",
    ]
    assert "2 TX / 2 RX NIC rings of 1024/1024 slots" in before.stdout
    assert "ok  link: up" in before.stdout
    assert "NO  offloads:" in before.stdout
    assert before.stderr.strip() == "nmbridge: error: fk1 is not ready for netmap"

    fixed = fake.run_cli(["check", "--fix", "fk1"], netns=nic_netns)
    assert fixed.returncode == 0, fixed.describe()
    assert "fixed: " in fixed.stdout and "ok  offloads: all off" in fixed.stdout
    assert fixed.stdout.splitlines()[-1] == "fk1: ready for netmap"

    again = fake.run_cli(["check", "fk1", "--json"], netns=nic_netns)
    assert again.returncode == 0, again.describe()
    report = json.loads(again.stdout)
    assert report["ready"] is True and report["interface"] == "fk1"
    items = {f["item"]: f for f in report["findings"]}
    assert items["netmap"]["ok"] and items["rings"]["ok"]
    assert items["rings"]["value"].startswith("2 TX / 2 RX NIC rings")
    # check only asks; it leaves nothing registered behind
    assert [e for e in fake.events("register") if e["name"] == "fk1"]  # the open_each above
    for ex in fake.exit_stats():
        assert int(ex["open_fds"]) == 0 and int(ex["live_maps"]) == 0


def check_netmap_finding(fake: FakeKernel, netns: str, env: dict[str, str],
                         iface: str = "fk0") -> dict[str, Any]:
    run = fake.run_cli(["check", iface, "--json"], netns=netns, env=env)
    assert run.returncode == 10, run.describe()
    assert run.stderr.strip() == f"nmbridge: error: {iface} is not ready for netmap"
    report = json.loads(run.stdout)
    finding = next(f for f in report["findings"] if f["item"] == "netmap")
    assert finding["ok"] is False and report["ready"] is False
    assert all(f["item"] != "rings" for f in report["findings"])
    return finding


def test_check_without_netmap_says_how_to_load_it(fake: FakeKernel, nic_netns: str,
                                                  tmp_path: Any) -> None:
    missing = str(tmp_path / "missing" / "netmap")
    f = check_netmap_finding(fake, nic_netns, {"NMBRIDGE_NETMAP_DEVICE": missing})
    assert f["value"] == f"{missing} missing"
    for phrase in ("modprobe netmap", "kldload netmap", "packet:IFACE"):
        assert phrase in f["advice"]


def test_check_names_an_older_netmap_api(fake: FakeKernel, nic_netns: str) -> None:
    f = check_netmap_finding(fake, nic_netns, {"FAKENETMAP_LEGACY_API": "11"})
    assert "cannot be used" in f["value"]
    assert "API 11" in f["advice"]


def test_check_of_an_interface_netmap_cannot_open(fake: FakeKernel, nic_netns: str) -> None:
    # an interface of the host that the (fake) module has no adapter for: ENXIO
    ip("-n", nic_netns, "link", "add", "zz0", "type", "veth", "peer", "name", "zz0p")
    f = check_netmap_finding(fake, nic_netns, {}, iface="zz0")
    assert "no interface or port 'zz0'" in f["advice"]

"""Filter correctness against tcpdump itself (root, tcpdump): a set of frames (IPv4,
IPv6, VLAN, ARP, TCP flags, port ranges, fragments) is replayed through a real bridge
with each of a dozen expressions, and what crossed must be, frame by frame and in
order, exactly what `tcpdump -r FILE EXPR` selects from the same frames; the bridge
counts the others as filtered, and as nothing else.

    [ns] fa0 ==veth== fa1   nmbridge -i packet:fa1 -i packet:fb1   fb1 ==veth== fb0

Each bridge runs two expressions, --filter-in for the frames sent on fa0 (they come in
by the first port) and --filter-out for those sent on fb0; no address anywhere, so the
namespace's own stack sends nothing. tests/integration/filter_peer.py sends and
captures. Everything is removed after each test, whatever happens.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import filter_frames as ff
import pytest
from namespaces import add_veth
from polling import wait_for

from nmbridge.counters import read_snapshot
from nmbridge.lab import sandbox
from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

NMBRIDGE = str(Path(sys.executable).parent / "nmbridge")
PEER = str(Path(__file__).with_name("filter_peer.py"))
START_TIMEOUT = 10.0

#: (--filter-in, --filter-out): twelve expressions, two per bridge
PAIRS = [
    ("udp port 9", "tcp"),
    ("ip6", "arp"),
    ("vlan", "vlan 100 and udp"),
    ("tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)"),
    ("portrange 1000-2000", "udp dst portrange 5000-5100"),
    ("ip[6:2] & 0x3fff != 0", "not ip and not ip6 or icmp or ip proto 47"),
]
#: the source MAC of the frames sent each way (their index in its last byte)
MARK_IN, MARK_OUT = bytes([2, 0, 0, 0xA1]), bytes([2, 0, 0, 0xB2])


def replay_set(mark: bytes) -> list[bytes]:
    """The frames, each with a source MAC of its own, as long as on a wire."""
    return [ff.padded(f[:6] + mark + bytes([0, i]) + f[12:]) for i, f in enumerate(ff.frames())]


def tcpdump_selects(frames: list[bytes], expression: str, tmp: Path) -> list[bytes]:
    """What `tcpdump -r FILE EXPR` selects from the frames (it writes them, as pcap)."""
    path = tmp / "frames.pcap"
    path.write_bytes(ff.pcap_file(frames))
    res = subprocess.run(["tcpdump", "-r", str(path), "-w", "-", expression],
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return ff.pcap_frames(res.stdout)


def bridge_stats(stats_dir: str, name: str) -> dict[str, Any]:
    res = subprocess.run([NMBRIDGE, "stats", "--json", name, "--stats-dir", stats_dir],
                         capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
    assert res.returncode == 0, res.stderr
    inst: dict[str, Any] = json.loads(res.stdout)["instances"][0]
    return inst


@pytest.mark.parametrize(("filter_in", "filter_out"), PAIRS)
def test_what_crosses_is_what_tcpdump_selects(
        make_netns: Callable[[str], str], tmp_path: Path,
        unavailable: Callable[[str], NoReturn], filter_in: str, filter_out: str) -> None:
    if shutil.which("tcpdump") is None:
        unavailable("needs tcpdump (Debian package tcpdump)")
    sent_in, sent_out = replay_set(MARK_IN), replay_set(MARK_OUT)
    want_in = tcpdump_selects(sent_in, filter_in, tmp_path)
    want_out = tcpdump_selects(sent_out, filter_out, tmp_path)
    # not vacuous: each expression selects some of the frames and leaves some out
    for want, sent in ((want_in, sent_in), (want_out, sent_out)):
        assert 0 < len(want) < len(sent)

    ns = make_netns("filter")
    add_veth(ns, "fa0", "fa1")
    add_veth(ns, "fb0", "fb1")
    stats_dir = tmp_path / "stats"
    stats_dir.mkdir(mode=0o700)
    log = tmp_path / "bridge.log"
    name = "filt"
    argv = [NMBRIDGE, "-i", "packet:fa1", "-i", "packet:fb1", "--filter-in", filter_in,
            "--filter-out", filter_out, "--name", name, "--stats-dir", str(stats_dir),
            "--no-live"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(sandbox.netns_exec(ns, argv), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        stats_file = stats_dir / f"{name}.stats"
        wait_for("the bridge to run", lambda: (s := read_snapshot(stats_file)).live
                 and s.state == "running" and s.pid == proc.pid, START_TIMEOUT, proc, log)
        request = {"send": {"fa0": [f.hex() for f in sent_in],
                            "fb0": [f.hex() for f in sent_out]},
                   "expect": {"fb0": len(want_in), "fa0": len(want_out)},
                   "mark": MARK_IN[:3].hex(), "timeout": 5.0}
        res = subprocess.run(sandbox.netns_exec(ns, [sys.executable, PEER]),
                             input=json.dumps(request), capture_output=True, text=True,
                             timeout=30, check=False)
        assert res.returncode == 0, res.stderr
        got = {k: [bytes.fromhex(f) for f in v] for k, v in json.loads(res.stdout).items()}
        inst = bridge_stats(str(stats_dir), name)
    finally:
        Sandbox.stop(proc)
    text = log.read_text(errors="replace")

    def names(frames: list[bytes], sent: list[bytes]) -> list[int]:
        return [sent.index(f) if f in sent else -1 for f in frames]

    # frame by frame, in order: the indexes of the frames sent
    assert names(got["fb0"], sent_in) == names(want_in, sent_in), (filter_in, text)
    assert names(got["fa0"], sent_out) == names(want_out, sent_out), (filter_out, text)
    assert got["fb0"] == want_in and got["fa0"] == want_out  # and their bytes intact
    d_in, d_out = inst["directions"]
    assert (d_in["frames"], d_in["filtered"], d_in["drops"]) == \
        (len(want_in), len(sent_in) - len(want_in), 0), d_in
    assert (d_out["frames"], d_out["filtered"], d_out["drops"]) == \
        (len(want_out), len(sent_out) - len(want_out), 0), d_out
    # the start says the filters once
    said = [line for line in text.splitlines() if line.startswith("filter ")]
    assert said == [f"filter packet:fa1->packet:fb1 '{filter_in}', packet:fb1->packet:fa1 "
                    f"'{filter_out}': frames that do not match are dropped, counted as "
                    "filtered"], text
    assert proc.returncode == 0, text

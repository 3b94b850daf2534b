"""--pcap with real traffic through the installed nmbridge (issue 12, item 2): what
crossed, read back by tshark and tcpdump themselves (Debian packages; tools/setup.sh
installs them): every frame, on the interface of its direction and flagged so, its
bytes intact; rotation leaves the files tcpdump leaves; `--pcap -` piped into
`tcpdump -r -`.

The sandbox (tests/integration/conftest.py: namespaces, veth, TAP, addresses of
198.18.0.0/15) is removed after every test, whatever happens; the sandbox's
neighbours are static and IPv6 off, so only the tests' datagrams cross.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest
from polling import wait_for
from test_bridge import (
    NMBRIDGE,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TRAFFIC_TIMEOUT,
    Bridge,
    assert_complete,
    streams,
    ways,
)

from nmbridge.commands.demo import parse_totals
from nmbridge.counters import read_snapshot
from nmbridge.lab import traffic
from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root


def tool(name: str, unavailable: Callable[[str], NoReturn]) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"'{name}' is missing (Debian: {name}; tools/setup.sh installs it)")
    return str(path)


def tshark_fields(tshark: str, path: str, *fields: str) -> list[list[str]]:
    res = subprocess.run([tshark, "-r", path, "-T", "fields", "-E", "separator=|",
                          *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, timeout=TRAFFIC_TIMEOUT, check=False)
    assert res.returncode == 0, res.stderr
    return [line.split("|") for line in res.stdout.splitlines()]


def written(log: str) -> int:
    m = re.search(r"nmbridge: capture: (\d+) frames written", log)
    assert m, log
    return int(m.group(1))


def test_every_frame_that_crossed_is_in_the_file_with_its_direction_and_bytes(
        sb: Sandbox, unavailable: Callable[[str], NoReturn]) -> None:
    tshark = tool("tshark", unavailable)
    tcpdump = tool("tcpdump", unavailable)
    path = os.path.join(sb.tempdir("pcap"), "c.pcapng")
    bridge = Bridge(sb, "--pcap", path)
    sent = streams(sb, 300, "--size-range", "32:1472")
    for s in sent:
        assert_complete(s, *s.reports())
    crossed = bridge.counted({w.label: 300 for w in ways(sb)})
    totals = bridge.stop()
    log = bridge.log.read_text()
    for way in ways(sb):
        d = crossed[way.label]
        assert d["frames"] == 300 and d["drops"] == 0
        assert (d["captured"], d["capture_dropped"]) == (300, 0)
        assert totals.directions[way.label][0] == 300
    assert written(log) == 600
    assert f"{ways(sb)[0].label} 300 frames" in log and "300 captured, 0 capture_dropped" in log

    rows = tshark_fields(tshark, path, "frame.interface_id", "frame.interface_name",
                         "frame.packet_flags_direction", "ip.src", "frame.len", "frame.cap_len",
                         "udp.payload")
    assert len(rows) == 600
    for s, (ifid, flag) in zip(sent, (("0", 0x1), ("1", 0x2))):
        way = s.way
        mine = [r for r in rows if r[0] == ifid]
        assert {r[1] for r in mine} == {way.label}
        assert {int(r[2], 16) & 3 for r in mine} == {flag}  # inbound, outbound
        assert {r[3] for r in mine} == {sb.wire_addr if ifid == "0" else sb.host_addr}
        seqs = []
        for r in mine:
            got = traffic.check_payload(bytes.fromhex(r[6]), int(s.run_id))
            assert got is not None and got[1], r  # one of the run's datagrams, intact
            assert int(r[4]) == int(r[5]) == len(r[6]) // 2 + traffic.FRAME_OVERHEAD
            seqs.append(got[0])
        assert seqs == list(range(300))  # every one, in order
    # tcpdump reads the same file
    res = subprocess.run([tcpdump, "-n", "-r", path], capture_output=True, text=True,
                         timeout=TRAFFIC_TIMEOUT, check=False)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 600


class PipedBridge:
    """The installed nmbridge with --pcap - and its standard output piped into a reader."""

    def __init__(self, sb: Sandbox, reader: list[str], *options: str) -> None:
        self.sb = sb
        self.stats_dir = sb.tempdir("stats")
        logs = Path(sb.tempdir("log"))
        self.log, self.read_log = logs / "stderr", logs / "reader"
        argv = [NMBRIDGE, "-i", sb.wire_port, "-i", sb.host_port, "--name", "it",
                "--stats-dir", self.stats_dir, "--pcap", "-", *options]
        with open(self.log, "wb") as err:
            self.proc = sb.popen(sb.bridge_ns, argv, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=err)
        with open(self.read_log, "wb") as out:
            self.reader = sb.popen(sb.bridge_ns, reader, stdin=self.proc.stdout, stdout=out,
                                   stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()  # the reader holds it now
        stats = Path(self.stats_dir) / "it.stats"
        wait_for("the bridge to run", lambda: (s := read_snapshot(stats)).live
                 and s.state == "running" and s.pid == self.proc.pid, START_TIMEOUT,
                 self.proc, self.log)

    def stop(self) -> tuple[str, str]:
        """(the bridge's stderr, what the reader printed), both having exited 0."""
        assert self.sb.stop(self.proc, STOP_TIMEOUT) == 0, self.log.read_text()
        assert self.reader.wait(TRAFFIC_TIMEOUT) == 0, self.read_log.read_text()
        return self.log.read_text(), self.read_log.read_text(errors="replace")


def send_both_ways(sb: Sandbox, count: int, *options: str) -> None:
    for s in streams(sb, count, *options):
        assert_complete(s, *s.reports())


def test_pcap_to_standard_output_piped_into_tcpdump(
        sb: Sandbox, unavailable: Callable[[str], NoReturn]) -> None:
    tcpdump = tool("tcpdump", unavailable)
    bridge = PipedBridge(sb, [tcpdump, "-n", "-r", "-"])
    send_both_ways(sb, 200)
    log, lines = bridge.stop()
    assert "Traceback" not in log and "warning" not in log, log
    totals = parse_totals(log.splitlines())
    assert totals is not None and written(log) == 400
    udp = [line for line in lines.splitlines() if " UDP, length " in line]
    assert len(udp) == 400
    assert sum(f"IP {sb.wire_addr}." in line for line in udp) == 200
    assert sum(f"IP {sb.host_addr}." in line for line in udp) == 200


def test_rotation_leaves_the_files_tcpdump_leaves(
        sb: Sandbox, unavailable: Callable[[str], NoReturn]) -> None:
    """The same traffic written by nmbridge with --pcap-size 1 --pcap-files 3, and by
    tcpdump -C 1 -W 3 from nmbridge's --pcap -: the same file names; each a whole file."""
    tcpdump = tool("tcpdump", unavailable)
    tshark = tool("tshark", unavailable)
    mine, theirs = Path(sb.tempdir("mine")), Path(sb.tempdir("theirs"))
    bridge = Bridge(sb, "--pcap", str(mine / "c"), "--pcap-size", "1", "--pcap-files", "3")
    send_both_ways(sb, 2500, "--size", "1400")  # 7 MB: more than 3 files, the first reused
    bridge.stop()
    assert written(bridge.log.read_text()) == 5000
    piped = PipedBridge(sb, [tcpdump, "-r", "-", "-w", str(theirs / "c"), "-C", "1", "-W", "3",
                             "-Z", "root"])
    send_both_ways(sb, 2500, "--size", "1400")
    piped.stop()
    assert sorted(os.listdir(mine)) == sorted(os.listdir(theirs)) == ["c0", "c1", "c2"]
    for name in ("c0", "c1", "c2"):
        size = (mine / name).stat().st_size
        rows = tshark_fields(tshark, str(mine / name), "frame.len")
        assert rows, name
        # a new file once the current one is larger than a million bytes
        assert size <= 1_000_000 + 1500 + 100, (name, size)


def test_a_reader_that_goes_away_stops_the_capture_not_the_bridge(sb: Sandbox) -> None:
    """`--pcap - | head -c 2000`: the writer meets EPIPE, says so once, and the bridge
    forwards on, counting what crosses from then on as capture_dropped."""
    bridge = PipedBridge(sb, ["head", "-c", "2000"])
    send_both_ways(sb, 300)
    log, _ = bridge.stop()
    assert log.count("capture stopped: Broken pipe") == 1, log
    totals = parse_totals(log.splitlines())
    assert totals is not None
    assert all(frames == 300 and dropped == 0
               for frames, _bytes, dropped in totals.directions.values())
    counts = [tuple(map(int, m)) for m in re.findall(r"(\d+) captured, (\d+) capture_dropped",
                                                     log)]
    assert len(counts) == 2 and all(a + b == 300 for a, b in counts), log
    assert sum(b for _, b in counts) > 0


def test_the_capture_filter_leaves_out_what_it_does_not_select(
        sb: Sandbox, unavailable: Callable[[str], NoReturn]) -> None:
    """--pcap-filter: every frame crosses; only those it selects are captured, and the
    others are neither captured nor capture_dropped."""
    tshark = tool("tshark", unavailable)
    path = os.path.join(sb.tempdir("pcap"), "c.pcapng")
    bridge = Bridge(sb, "--pcap", path, "--pcap-filter", f"src host {sb.wire_addr}")
    send_both_ways(sb, 200)
    crossed = bridge.counted({w.label: 200 for w in ways(sb)})
    bridge.stop()
    there, back = (crossed[w.label] for w in ways(sb))
    assert (there["frames"], there["captured"], there["capture_dropped"]) == (200, 200, 0)
    assert (back["frames"], back["captured"], back["capture_dropped"]) == (200, 0, 0)
    rows = tshark_fields(tshark, path, "ip.src")
    assert rows == [[sb.wire_addr]] * 200

"""Real packets through the installed nmbridge (issue 3, "The bridge runs").

Each test builds a nmbridge.lab.sandbox.Sandbox: a wire namespace whose nmbw0
(198.18.0.1) is a host on the wire, and a bridge namespace holding the veth
peer nmbv0 and the TAP nmbt0 (198.18.0.2, the host stack). The installed
`nmbridge -i packet:nmbv0 -i tap:nmbt0` runs in the bridge namespace, and
nmbridge.lab.traffic sends pings and numbered UDP datagrams through it, both ways.
The sandbox's neighbours are static and IPv6 is off, so nothing but the test's
traffic crosses the bridge: its counters must equal what was sent, exactly.

The sandbox (namespaces, links, processes, temporary directories) is removed
after every test, whatever happens (the `sb` and `make_sandbox` fixtures of
tests/integration/conftest.py). Only addresses of 198.18.0.0/15 are used.
Timeouts are generous and only there to stop a hang; nothing here is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from polling import wait_for

from nmbridge.commands.demo import BridgeTotals, parse_totals
from nmbridge.counters import read_snapshot
from nmbridge.engine import DEFAULT_BUF_SIZE
from nmbridge.lab import traffic
from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

NMBRIDGE = str(Path(sys.executable).parent / "nmbridge")
#: seconds, only against hangs: a loaded 2-core machine is slow, never this slow
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
TRAFFIC_TIMEOUT = 60.0
#: Ethernet + IPv4 + ICMP echo header + the 56 bytes nmbridge.lab.traffic's ping sends
PING_FRAME = 14 + 20 + 8 + 56
#: UDP payload -> frame on the wire
OVERHEAD = traffic.FRAME_OVERHEAD
#: datagrams per second: a paced stream, as a real source is; the sockets on the
#: way (the TAP's queue, the veth backlog) hold ~1000 frames, not a 2-core stall
RATE = 4000

T = TypeVar("T")


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Way:
    """One direction through the bridge."""

    name: str  # "wire->host"
    label: str  # the bridge's name for it: "packet:nmbv0->tap:nmbt0"
    src_ns: str
    dst_ns: str
    dst_addr: str


def ways(sb: Sandbox) -> list[Way]:
    return [
        Way("wire->host", f"{sb.wire_port}->{sb.host_port}", sb.wire_ns, sb.bridge_ns,
            sb.host_addr),
        Way("host->wire", f"{sb.host_port}->{sb.wire_port}", sb.bridge_ns, sb.wire_ns,
            sb.wire_addr),
    ]


class Bridge:
    """The installed nmbridge in the sandbox's bridge namespace, packet:nmbv0 <-> tap:nmbt0."""

    def __init__(self, sb: Sandbox, *options: str, name: str = "it") -> None:
        self.sb = sb
        self.name = name
        self.stats_dir = sb.tempdir("stats")
        self.stats_file = Path(self.stats_dir) / f"{name}.stats"
        logs = Path(sb.tempdir("log"))
        self.log, self.out = logs / "stderr", logs / "stdout"
        argv = [NMBRIDGE, "-i", sb.wire_port, "-i", sb.host_port, "--name", name,
                "--stats-dir", self.stats_dir, "--no-live", *options]
        with open(self.log, "wb") as err, open(self.out, "wb") as out:
            self.proc = sb.popen(sb.bridge_ns, argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err)
        self.started = time.monotonic()
        wait_for("the bridge to run", lambda: (s := read_snapshot(self.stats_file)).live
                 and s.state == "running" and s.pid == self.proc.pid, START_TIMEOUT,
                 self.proc, self.log)

    def stats(self) -> dict[str, Any]:
        """This instance in `nmbridge stats --json NAME`, run as a user would, from outside."""
        res = subprocess.run([NMBRIDGE, "stats", "--json", self.name, "--stats-dir",
                              self.stats_dir], capture_output=True, text=True,
                             timeout=TRAFFIC_TIMEOUT, check=False)
        assert res.returncode == 0, res.stderr
        (inst,) = json.loads(res.stdout)["instances"]
        assert inst["name"] == self.name and inst["pid"] == self.proc.pid
        return dict(inst)

    def directions(self) -> dict[str, dict[str, Any]]:
        return {d["label"]: d for d in self.stats()["directions"]}

    def counted(self, frames: dict[str, int]) -> dict[str, dict[str, Any]]:
        """The directions once their frame counters reach `frames` (published every 200 ms)."""
        def reached() -> dict[str, dict[str, Any]] | None:
            d = self.directions()
            done = all(d[label]["frames"] + d[label]["drops"] >= n
                       for label, n in frames.items())
            return d if done else None

        return wait_for(f"the counters to reach {frames}", reached, TRAFFIC_TIMEOUT,
                        self.proc, self.log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> BridgeTotals:
        """SIGTERM; it must exit 0 with its totals, its stats file gone."""
        status = self.sb.stop(self.proc, STOP_TIMEOUT)
        return self._ended(status, "signal")

    def wait(self, reason: str) -> BridgeTotals:
        """Wait for a bridge that stops by itself (--duration, --count)."""
        try:
            status = self.proc.wait(TRAFFIC_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = self.sb.stop(self.proc, STOP_TIMEOUT)
            pytest.fail(f"the bridge did not stop by itself ({reason}); killed: {status}")
        return self._ended(status, reason)

    def _ended(self, status: int, reason: str) -> BridgeTotals:
        log = self.log.read_text(errors="replace")
        assert status == 0, f"exit status {status}:\n{log}"
        assert "Traceback" not in log and "nmbridge: error" not in log, log
        assert self.out.read_text() == ""
        totals = parse_totals(log.splitlines())
        assert totals is not None, f"no totals line:\n{log}"
        assert totals.reason == reason, log
        assert not self.stats_file.exists(), "the stats file outlived the bridge"
        return totals


class Stream:
    """Numbered UDP datagrams one way: the receiver is bound before the sender starts."""

    def __init__(self, sb: Sandbox, way: Way, count: int, *send_options: str,
                 rate: int = RATE, recv_timeout: float = TRAFFIC_TIMEOUT,
                 idle: float = 5.0) -> None:
        self.sb, self.way, self.count = sb, way, count
        self.run_id = str(traffic.new_run_id())
        common = ["--count", str(count), "--run-id", self.run_id]
        self.recv = sb.popen(way.dst_ns, traffic.command(
            "udp-recv", way.dst_addr, *common, "--timeout", f"{recv_timeout:g}",
            "--idle", f"{idle:g}"), stdout=subprocess.PIPE, text=True)
        traffic.wait_ready(self.recv, START_TIMEOUT)
        self.recv_timeout = recv_timeout
        self.send_options = [*common, "--rate", str(rate), *send_options]
        self.send: subprocess.Popen[str] | None = None

    def start(self) -> Stream:
        self.send = self.sb.popen(self.way.src_ns, traffic.command(
            "udp-send", self.way.dst_addr, *self.send_options, "--timeout",
            f"{TRAFFIC_TIMEOUT:g}"), stdout=subprocess.PIPE, text=True)
        return self

    def stop_sender(self) -> None:
        assert self.send is not None
        self.sb.stop(self.send, STOP_TIMEOUT)

    def reports(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what was sent, what arrived); both must be there."""
        assert self.send is not None
        sent = traffic.read_report(self.send, TRAFFIC_TIMEOUT + 10)
        got = traffic.read_report(self.recv, self.recv_timeout + 10)
        assert sent and got, f"{self.way.name}: a traffic process gave no report"
        return sent, got


def streams(sb: Sandbox, count: int, *send_options: str, **kw: Any) -> list[Stream]:
    """A stream each way at once, both receivers bound before either sender starts."""
    made = [Stream(sb, way, count, *send_options, **kw) for way in ways(sb)]
    return [s.start() for s in made]


def assert_complete(stream: Stream, sent: dict[str, Any], got: dict[str, Any]) -> None:
    name = stream.way.name
    assert sent["sent"] == stream.count, f"{name}: sent {sent}"
    assert got["complete"] and got["in_order"], f"{name}: {got}"
    assert (got["unique"], got["received"], got["lost"]) == (stream.count, stream.count, 0)
    assert (got["out_of_order"], got["duplicates"], got["corrupt"], got["foreign"]) == (
        0, 0, 0, 0), f"{name}: {got}"
    assert got["frame_bytes"] == sent["frame_bytes"]


def ping(sb: Sandbox, way: Way, count: int = 3) -> subprocess.Popen[str]:
    return sb.popen(way.src_ns, traffic.command(
        "ping", way.dst_addr, "--count", str(count), "--interval", "0.2", "--wait", "5"),
        stdout=subprocess.PIPE, text=True)


@pytest.fixture
def jumbo_sb(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox(mtu=9000)


# ---------------------------------------------------------------- tests


def test_ping_both_ways(sb: Sandbox) -> None:
    bridge = Bridge(sb)
    pings = [(way, ping(sb, way)) for way in ways(sb)]
    for way, proc in pings:
        report = traffic.read_report(proc, TRAFFIC_TIMEOUT)
        assert (report.get("sent"), report.get("received")) == (3, 3), f"{way.name}: {report}"
    # each way: 3 requests one way and 3 replies the other, and not a frame more
    expected = {way.label: 6 for way in ways(sb)}
    live = bridge.counted(expected)
    for way in ways(sb):
        d = live[way.label]
        assert (d["frames"], d["bytes"], d["drops"]) == (6, 6 * PING_FRAME, 0), d
    totals = bridge.stop()
    assert totals.directions == {way.label: (6, 6 * PING_FRAME, 0) for way in ways(sb)}


def test_udp_stream_arrives_complete_and_in_order_both_ways(sb: Sandbox) -> None:
    count = 3000
    bridge = Bridge(sb)
    running = streams(sb, count, "--size", "64")
    sent: dict[str, dict[str, Any]] = {}
    for stream in running:
        s, got = stream.reports()
        assert_complete(stream, s, got)
        sent[stream.way.label] = s
    assert {s["frame_bytes"] for s in sent.values()} == {count * (64 + OVERHEAD)}

    live = bridge.counted({label: count for label in sent})
    inst = bridge.stats()
    assert (inst["live"], inst["state"]) == (True, "running")
    for label, s in sent.items():
        d = live[label]
        assert (d["frames"], d["bytes"], d["drops"], d["errors"]) == (
            count, s["frame_bytes"], 0, 0), d
    # per ring: what one port received, the other transmitted
    rx = {r["port_name"]: (r["frames"], r["bytes"]) for r in inst["rings"]
          if r["direction"] == "rx"}
    tx = {r["port_name"]: (r["frames"], r["bytes"]) for r in inst["rings"]
          if r["direction"] == "tx"}
    assert rx[sb.wire_port] == tx[sb.host_port] == (count, sent[ways(sb)[0].label]["frame_bytes"])
    assert rx[sb.host_port] == tx[sb.wire_port] == (count, sent[ways(sb)[1].label]["frame_bytes"])
    assert all(r["drops"] == 0 and r["errors"] == 0 for r in inst["rings"])

    totals = bridge.stop()
    assert totals.directions == {label: (count, s["frame_bytes"], 0) for label, s in sent.items()}


def rx_syncs(bridge: Bridge, port: str) -> int:
    return sum(r["syncs"] for r in bridge.stats()["rings"]
               if r["port_name"] == port and r["direction"] == "rx")


def test_sustained_load_is_coalesced_into_fewer_passes_and_loses_nothing(sb: Sandbox) -> None:
    # 1000 datagrams/s, one every millisecond: woken per frame, the loop reads the
    # socket at least once a frame; gathering 10 ms at a time, about a tenth as often
    count, way = 2000, ways(sb)[0]
    syncs = {}
    for usecs in ("0", "10000"):
        bridge = Bridge(sb, "--rx-usecs", usecs, name=f"rx{usecs}")
        stream = Stream(sb, way, count, rate=1000).start()
        sent, got = stream.reports()
        assert_complete(stream, sent, got)
        bridge.counted({way.label: count})
        syncs[usecs] = rx_syncs(bridge, sb.wire_port)
        assert bridge.stop().directions[way.label] == (count, sent["frame_bytes"], 0)
    assert syncs["0"] >= count, syncs
    assert syncs["10000"] * 3 < syncs["0"], syncs


def test_coalescing_starts_again_after_the_load_stopped(sb: Sandbox) -> None:
    # a sleep that gathers nothing ends coalescing (the load stopped) and asks for a
    # longer run of busy wake-ups next time: the next load must be coalesced all the same
    count, way = 1500, ways(sb)[0]
    bridge = Bridge(sb, "--rx-usecs", "10000")
    before = 0
    for burst in range(3):
        stream = Stream(sb, way, count, rate=1000).start()
        assert_complete(stream, *stream.reports())
        bridge.counted({way.label: count * (burst + 1)})
        syncs = rx_syncs(bridge, sb.wire_port) - before
        before += syncs
        assert syncs * 3 < count, (burst, syncs)
        time.sleep(0.5)  # idle: the sleeps gather nothing
    bridge.stop()


def test_sparse_traffic_is_not_held_back_by_coalescing(sb: Sandbox) -> None:
    # a ping and its answer, 0.2 s apart, are no sustained load: with 10 ms of
    # coalescing allowed, a crossing held back would add 10 ms to every round trip
    bridge = Bridge(sb, "--rx-usecs", "10000")
    way = ways(sb)[0]
    report = traffic.read_report(ping(sb, way, count=9), TRAFFIC_TIMEOUT)
    assert report["received"] == 9, report
    rtts = sorted(report["rtt_ms"])
    assert rtts[len(rtts) // 2] < 10.0, rtts
    bridge.stop()


def test_every_frame_size_from_60_to_1514_bytes(sb: Sandbox) -> None:
    lo, hi = 60 - OVERHEAD, 1514 - OVERHEAD  # UDP payloads 18..1472: every frame size once
    count = hi - lo + 1
    frame_bytes = sum(size + OVERHEAD for size in range(lo, hi + 1))
    cross_exactly(sb, count, frame_bytes, ["--size-range", f"{lo}:{hi}"], rate=3000)


def cross_exactly(sb: Sandbox, count: int, frame_bytes: int, sizes: list[str],
                  rate: int) -> None:
    """A bridge carries `count` datagrams of these `sizes` each way, every byte intact,
    and counts exactly them, live and in its totals."""
    bridge = Bridge(sb)
    running = streams(sb, count, *sizes, rate=rate)
    for stream in running:
        sent, got = stream.reports()
        assert_complete(stream, sent, got)  # every byte of every datagram checked
        assert sent["frame_bytes"] == frame_bytes
    live = bridge.counted({way.label: count for way in ways(sb)})
    for way in ways(sb):
        d = live[way.label]
        assert (d["frames"], d["bytes"], d["drops"]) == (count, frame_bytes, 0), d
    totals = bridge.stop()
    assert totals.directions == {way.label: (count, frame_bytes, 0) for way in ways(sb)}


def test_frames_longer_than_a_buffer_cross_whole(jumbo_sb: Sandbox) -> None:
    """MTU 9000: frames over one 2048-byte buffer cross as NS_MOREFRAG chains, intact."""
    sb = jumbo_sb
    assert DEFAULT_BUF_SIZE == 2048  # the premise: these frames need 2 to 5 buffers
    frames = [60, 1514, 2048, 2049, 4000, 4097, 6000, 8192, 9000, 9014]
    sizes = [f - OVERHEAD for f in frames]
    count = 40 * len(frames)
    frame_bytes = 40 * sum(frames)
    cross_exactly(sb, count, frame_bytes, ["--sizes", ",".join(map(str, sizes))], rate=1000)


def test_frames_longer_than_the_ports_take_are_counted_as_drops(sb: Sandbox) -> None:
    """The MTU raised after the ports opened: 4000-byte frames are dropped and counted."""
    bridge = Bridge(sb)  # its ports sized for MTU 1500
    for ns, ifname in ((sb.wire_ns, sb.wire_if), (sb.bridge_ns, sb.veth_if),
                       (sb.bridge_ns, sb.tap_if)):
        sb.ip(ns, "link", "set", "dev", ifname, "mtu", "9000")
    big = 20
    for stream in streams(sb, big, "--size", str(4000 - OVERHEAD), rate=500, recv_timeout=3,
                          idle=1):
        sent, got = stream.reports()
        assert sent["sent"] == big
        assert got["received"] == 0, f"{stream.way.name}: a frame too long was forwarded"
    live = bridge.counted({way.label: big for way in ways(sb)})
    for way in ways(sb):
        d = live[way.label]
        assert (d["frames"], d["bytes"], d["drops"]) == (0, 0, big), d
        assert d["drops_by_reason"]["oversize"] == big, d
    # and the bridge goes on: frames that fit still cross
    count = 200
    for stream in streams(sb, count, "--size", "1000"):
        assert_complete(stream, *stream.reports())
    totals = bridge.stop()
    assert totals.directions == {
        way.label: (count, count * (1000 + OVERHEAD), big) for way in ways(sb)}


def test_sigterm_mid_traffic_flushes_prints_totals_and_exits_0(sb: Sandbox) -> None:
    count = 20 * 2000  # far more than is sent before the SIGTERM
    bridge = Bridge(sb)
    running = streams(sb, count, "--size", "200", rate=2000, idle=3)
    wait_for("traffic both ways", lambda: all(
        d["frames"] >= 500 for d in bridge.directions().values()), TRAFFIC_TIMEOUT,
        bridge.proc, bridge.log)
    totals = bridge.stop()  # exit status 0, totals printed, stats file removed
    for stream in running:
        stream.stop_sender()
        sent, got = stream.reports()
        frames, nbytes, dropped = totals.directions[stream.way.label]
        # frames still on an RX ring at the stop are counted as dropped, not lost
        assert frames >= 500 and frames + dropped <= sent["sent"] < count
        # every frame the bridge counted was flushed out and arrived, in order, intact
        assert (got["unique"], got["received"], got["frame_bytes"]) == (
            frames, frames, nbytes), f"{stream.way.name}: {got} vs {totals}"
        assert got["in_order"] and got["corrupt"] == 0, got
        assert got["first_missing"][0] == frames  # the first ones, none skipped


#: the engine alone in the bridge namespace: its ports open, its loop never run, then
#: the flush a stop ends with; prints what the flush did as one JSON line
FLUSH_ONLY = """
import json, sys
from nmbridge.engine import Bridge
from nmbridge.ports import close_ports, open_ports
from nmbridge.portspec import parse_port
ports = open_ports([parse_port(name) for name in sys.argv[1:3]])
bridge = Bridge(*ports)
print("ready", flush=True)
sys.stdin.readline()
dropped = bridge.flush(1000)
rings = [f"{r.port}{r.direction}" for r in bridge.rings()]
print(json.dumps({"dropped": dropped, "forwarded": bridge.forwarded,
                  "rings": dict(zip(rings, bridge.counters()))}), flush=True)
close_ports(ports)
"""


def test_a_stop_forwards_what_the_sockets_already_hold(sb: Sandbox) -> None:
    """Frames the kernel put in the packet: socket's ring and the TAP's queue before the
    stop, that no pass of the loop took: the flush takes them in and forwards them (they
    used to go with the sockets, neither forwarded nor counted). The loop never runs
    here, so every frame is still in a socket when the flush starts."""
    count = 200  # fewer than a TAP queues (500) or an RX ring holds (1023)
    engine = sb.popen(sb.bridge_ns, [sys.executable, "-c", FLUSH_ONLY, sb.wire_port,
                                     sb.host_port],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert engine.stdin is not None and engine.stdout is not None
    assert engine.stdout.readline() == "ready\n"
    running = streams(sb, count, "--size", "200", recv_timeout=15)
    sent = [traffic.read_report(s.send, TRAFFIC_TIMEOUT) for s in running if s.send]
    wait_for("the frames in nmbv0's socket", lambda: json.loads(sb.ip(
        sb.bridge_ns, "-s", "-j", "link", "show", "dev", sb.veth_if).stdout)[0]["stats64"][
        "rx"]["packets"] >= count, TRAFFIC_TIMEOUT)
    # the veth counts a frame before the backlog softirq hands it to the socket: let
    # that run (microseconds) so that the stop finds every frame in the socket
    time.sleep(0.5)
    engine.stdin.write("stop\n")
    engine.stdin.flush()
    flushed = json.loads(engine.stdout.readline())
    assert engine.wait(STOP_TIMEOUT) == 0
    for stream, report in zip(running, sent):
        assert_complete(stream, report, traffic.read_report(stream.recv, 30))
    assert (flushed["dropped"], flushed["forwarded"]) == (0, 2 * count), flushed
    assert [(r["frames"], r["drop_rx"], r["drop_tx"]) for r in flushed["rings"].values()] == [
        (count, 0, 0)] * 4, flushed


def test_duration_stops_the_bridge(sb: Sandbox) -> None:
    bridge = Bridge(sb, "--duration", "2")
    pings = [ping(sb, way) for way in ways(sb)]
    totals = bridge.wait("duration")
    assert time.monotonic() - bridge.started >= 2.0
    assert totals.seconds >= 2.0
    for proc in pings:
        assert traffic.read_report(proc, TRAFFIC_TIMEOUT)["received"] == 3
    assert totals.directions == {way.label: (6, 6 * PING_FRAME, 0) for way in ways(sb)}


def test_the_start_line_says_the_sockets_copy(sb: Sandbox) -> None:
    """packet: <-> tap: swap buffers between their rings, but the kernel copies at each
    socket: the start line and stats --json say both, never a bare "zero-copy"."""
    bridge = Bridge(sb, "--duration", "2")
    inst = bridge.stats()
    assert (inst["zero_copy"], inst["socket_copies"]) == (True, True)
    pings = [ping(sb, way) for way in ways(sb)]
    bridge.wait("duration")
    for proc in pings:
        traffic.read_report(proc, TRAFFIC_TIMEOUT)
    lines = bridge.log.read_text().splitlines()
    start = next(line for line in lines if " <-> " in line)
    assert (f"{sb.wire_port} <-> {sb.host_port}, zero-copy inside the bridge (the kernel "
            "copies at the sockets), burst") in start, start
    # the first log line's rates are against the counters at the start: frames moved, so
    # not "0 fps" (nor "-")
    first = next(line for line in lines if " frames " in line and "->" in line)
    assert " 0 fps" not in first and " - " not in first, first


def test_count_stops_the_bridge_after_exactly_n_frames(sb: Sandbox) -> None:
    limit, count = 100, 300
    bridge = Bridge(sb, "--count", str(limit))
    # as fast as the sockets take them: more than --count waits in the bridge at once
    running = streams(sb, count, "--size", "100", rate=0, recv_timeout=4, idle=2)
    totals = bridge.wait("limit")
    assert sum(frames for frames, _, _ in totals.directions.values()) == limit
    for stream in running:
        sent, got = stream.reports()
        frames, nbytes, dropped = totals.directions[stream.way.label]
        assert (got["unique"], got["frame_bytes"]) == (frames, nbytes), got
        assert frames + dropped <= sent["sent"] == count
        assert got["in_order"] and got["corrupt"] == 0, got
        assert got["first_missing"][0] == frames  # the first ones, none skipped


@pytest.mark.parametrize("side", ["wire", "bridge"])
def test_link_flap_does_not_stop_the_bridge(sb: Sandbox, side: str) -> None:
    """nmbw0 (the peer on the wire) or nmbv0 (the bridge's own port) down, then up."""
    ns, ifname = (sb.wire_ns, sb.wire_if) if side == "wire" else (sb.bridge_ns, sb.veth_if)
    bridge = Bridge(sb)
    for stream in streams(sb, 500):
        assert_complete(stream, *stream.reports())

    sb.set_link(ns, ifname, False)
    wait_for("the bridge to see the link down",
             lambda: read_snapshot(bridge.stats_file).state == "link-wait", TRAFFIC_TIMEOUT,
             bridge.proc, bridge.log)
    time.sleep(0.5)
    assert bridge.alive()
    sb.set_link(ns, ifname, True)
    wait_for("the bridge to see the link up",
             lambda: read_snapshot(bridge.stats_file).state == "running", TRAFFIC_TIMEOUT,
             bridge.proc, bridge.log)

    # traffic resumes (after an ARP exchange: taking nmbw0 down flushed its neighbours)
    def pinged() -> bool:
        res = sb.run(sb.wire_ns, traffic.command("ping", sb.host_addr, "--count", "1",
                                                 "--wait", "1"), timeout=30, check=False)
        return res.returncode == 0

    wait_for("a ping through the bridge after the flap", pinged, TRAFFIC_TIMEOUT,
             bridge.proc, bridge.log)
    before = bridge.directions()
    count = 1000
    for stream in streams(sb, count):
        assert_complete(stream, *stream.reports())
    after = bridge.counted({label: d["frames"] + count for label, d in before.items()})
    for label, d in after.items():
        assert d["frames"] - before[label]["frames"] >= count
        assert d["drops"] == 0, d
    totals = bridge.stop()
    assert all(dropped == 0 for _, _, dropped in totals.directions.values())



def test_back_to_back_requests_and_answers_are_not_held_back(sb: Sandbox) -> None:
    # pings back to back: every wake-up comes well within 10 ms of the last, but
    # each sleep would gather one frame, the next request waiting on the answer:
    # coalescing must give up on it (a crossing held back adds 10 ms to a round trip)
    bridge = Bridge(sb, "--rx-usecs", "10000")
    way = ways(sb)[0]
    proc = sb.popen(way.src_ns, traffic.command(
        "ping", way.dst_addr, "--count", "200", "--interval", "0.0001", "--wait", "5"),
        stdout=subprocess.PIPE, text=True)
    report = traffic.read_report(proc, TRAFFIC_TIMEOUT)
    assert report["received"] == 200, report
    held = [rtt for rtt in report["rtt_ms"] if rtt >= 10.0]
    # it tries again after a run of fast wake-ups that doubles each time: 8, 16, ...
    assert len(held) <= 10, sorted(report["rtt_ms"])[-20:]
    bridge.stop()


def test_wait_link_is_link_wait_and_one_clock_for_uptime(sb: Sandbox) -> None:
    """While --wait-link waits, stats --json says "link-wait" (not "starting"); the
    uptime stats gives and the bridge's own ("stopped after") are one clock's."""
    sb.set_link(sb.bridge_ns, sb.veth_if, False)
    stats_dir = sb.tempdir("stats")
    log = Path(sb.tempdir("log")) / "stderr"
    argv = [NMBRIDGE, "-i", sb.wire_port, "-i", sb.host_port, "--name", "lw",
            "--stats-dir", stats_dir, "--no-live", "--wait-link", "30"]
    with open(log, "wb") as err:
        proc = sb.popen(sb.bridge_ns, argv, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=err)

    def inst() -> dict[str, Any]:
        res = subprocess.run([NMBRIDGE, "stats", "--json", "lw", "--stats-dir", stats_dir],
                             capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout)["instances"][0])

    try:
        wait_for("the stats file", lambda: (Path(stats_dir) / "lw.stats").exists(),
                 START_TIMEOUT, proc, log)
        waiting = wait_for("link-wait", lambda: (i := inst())["state"] == "link-wait" and i,
                           START_TIMEOUT, proc, log)
        assert waiting["state"] == "link-wait"
        time.sleep(1.5)
        assert inst()["state"] == "link-wait"
        sb.set_link(sb.bridge_ns, sb.veth_if, True)
        wait_for("running", lambda: inst()["state"] == "running", START_TIMEOUT, proc, log)
        uptime = inst()["uptime_seconds"]
        asked = time.monotonic()
    finally:
        status = sb.stop(proc, 10)
    stopped = time.monotonic()
    assert status == 0, log.read_text()
    totals = parse_totals(log.read_text().splitlines())
    assert totals is not None, log.read_text()
    # the bridge's figure is the stats file's uptime plus the time since it was read,
    # printed to a tenth of a second (2.03 s reads "2.0 s")
    assert uptime >= 1.5
    assert uptime - 0.06 <= totals.seconds <= uptime + (stopped - asked) + 0.5, (
        uptime, totals.seconds)

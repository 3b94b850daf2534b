"""Traffic from stacks whose veths keep Linux's default offloads (issue 15).

A veth as Linux makes it has TSO, GSO and TX checksum offload on: the sending
stack hands it TCP and UDP GSO super-frames of up to 64 KiB and leaves the
checksums to finish. A `packet:` port on the veth's peer receives them so.
Through a running nmbridge, in two topologies:

    packet-tap:    [wire ns] nmbw0 198.18.0.1 ==veth== nmbv0 [bridge ns] nmbt0 (TAP) 198.18.0.2
                   nmbridge -i packet:nmbv0 -i tap:nmbt0 (nmbridge.lab.sandbox.Sandbox)
    packet-packet: [a ns] nmba0 198.18.0.1 ==veth== nmbd0 [bridge ns] nmbd1 ==veth== nmbb0
                   198.18.0.2 [b ns];  nmbridge -i packet:nmbd0 -i packet:nmbd1

each test checks, both ways at once (198.18.0.1 -> .2 and .2 -> .1):

- TCP: a few MB of pseudo-random bytes over one connection arrive whole, every
  byte checked by the receiver (nmbridge.lab.traffic tcp-send, tcp-recv);
- UDP with UDP_SEGMENT (GSO, segments of GSO_SIZE bytes): buffers of 8,000 to
  60,000 bytes arrive as datagrams of the segment size, each one intact;
- the receiving stacks count no checksum errors (TcpInCsumErrors,
  UdpInCsumErrors in /proc/net/snmp of their namespace);
- the bridge's counters (`nmbridge stats --json`) show frames each way and no
  drop of any kind: every `drop*` field of every ring (drop_header and
  drop_gso among them) and every `drops_by_reason` is 0.

The UDP peers are tests/integration/offload_peer.py. Each test runs on
packet:<->tap: and packet:<->packet: with the veths' offloads as Linux makes
them, and on packet:<->tap: with TSO, GSO and TX checksum off on every veth:
the TAP still hands the bridge super-frames, which the kernel must segment for
the veth that cannot take them (through a packet socket's qdisc bypass it
drops them instead: the bug this case caught).

Namespaces, links, processes and directories are removed after each test,
whatever happens. Only 198.18.0.0/15. Timeouts only stop a hang; nothing here
is timed.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import peers
import pytest
from namespaces import ip
from polling import wait_for

from nmbridge.counters import read_snapshot
from nmbridge.lab import sandbox
from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

NMBRIDGE = str(Path(sys.executable).parent / "nmbridge")
PEER = str(Path(__file__).resolve().parent / "offload_peer.py")
#: the TCP streams' ends: the demo's (every byte checked against the run's stream)
TCP_PEER = ("-m", "nmbridge.lab.traffic")
#: ethtool -K names turned off for veth offloads "off"
OFFLOADS = ("tso", "gso", "tx")
#: ethtool -k features that must be on for veth offloads "on"
SENDER_FEATURES = ("tcp-segmentation-offload", "generic-segmentation-offload",
                   "tx-checksumming")

TCP_BYTES = 4_000_000
#: UDP_SEGMENT: payload bytes a segment (1428-byte IPv4 packets, under the MTU)
GSO_SIZE = 1400
#: buffers handed to the stack whole, each one a GSO super-frame on a veth; every
#: last segment is long enough for offload_peer.py's header
UDP_BUFFERS = (8_000, 12_345, 20_000, 33_333, 45_000, 60_000) * 4
#: seconds, only against hangs; the whole test stays well under 20 s
START_TIMEOUT = 10.0
TRAFFIC_TIMEOUT = 8.0
A_ADDR, B_ADDR = "198.18.0.1", "198.18.0.2"
A_MAC, D0_MAC, D1_MAC, B_MAC = (f"02:00:c6:12:01:{i:02x}" for i in (1, 0x10, 0x11, 2))


@dataclass
class Topology:
    """Two stacks a and b with a bridge between them, and how to run things there."""

    name: str
    a_ns: str  # 198.18.0.1
    b_ns: str  # 198.18.0.2
    bridge_ns: str
    ports: tuple[str, str]
    veths: list[tuple[str, str]]  # (namespace, interface) of every veth end
    stats_dir: str
    log_dir: str
    popen: Callable[..., subprocess.Popen[Any]]
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    #: "on": the veths as Linux makes them; "off": TSO, GSO and TX checksum off on every
    #: veth (a TAP still hands the bridge super-frames: the kernel must segment them for
    #: the veth that cannot take them)
    offloads: str = "on"

    def start(self, ns: str, *argv: str) -> subprocess.Popen[str]:
        """A peer (PEER or TCP_PEER, then its arguments) run by this Python in ns."""
        return self.popen(ns, [sys.executable, "-I", *argv], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def ethtool(ns: str, *args: str) -> str:
    res = sandbox.run(sandbox.netns_exec(ns, ["ethtool", *args]), check=False)
    assert res.returncode == 0, f"ethtool {' '.join(args)}: {res.stderr.strip()}"
    return res.stdout


def set_up_offloads(topo: Topology) -> None:
    """"off": the three off on every veth end; "on": check they are on, so that a
    kernel with other defaults does not pass these tests without a GSO frame."""
    for ns, dev in topo.veths:
        if topo.offloads == "off":
            ethtool(ns, "-K", dev, *(w for o in OFFLOADS for w in (o, "off")))
            continue
        shown = dict(line.split(":", 1) for line in ethtool(ns, "-k", dev).splitlines()
                     if ":" in line)
        off = [f for f in SENDER_FEATURES if not shown.get(f, "").strip().startswith("on")]
        assert not off, f"{dev}: {', '.join(off)} off by default here: nothing to test"


def popen_in(procs: list[subprocess.Popen[Any]]) -> Callable[..., subprocess.Popen[Any]]:
    def popen(ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(sandbox.netns_exec(ns, argv),
                                                       start_new_session=True, **kw)
        procs.append(proc)
        return proc
    return popen


def packet_packet(make_netns: Callable[[str], str], stats_dir: str, log_dir: str,
                  procs: list[subprocess.Popen[Any]]) -> Topology:
    a, br, b = make_netns("a"), make_netns("br"), make_netns("b")
    for ns, end, mac, addr, peer, peer_mac, peer_addr in (
            (a, "nmba0", A_MAC, A_ADDR, "nmbd0", D0_MAC, B_ADDR),
            (b, "nmbb0", B_MAC, B_ADDR, "nmbd1", D1_MAC, A_ADDR)):
        ip("-n", ns, "link", "add", end, "address", mac, "type", "veth", "peer", "name", peer,
           "address", peer_mac, "netns", br)
        for n, dev in ((ns, end), (br, peer)):
            # no IPv6 address, so nothing but the test's traffic crosses
            ip("-n", n, "link", "set", dev, "addrgenmode", "none")
            ip("-n", n, "link", "set", dev, "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", end)
        # static: no ARP; the other end's MAC is the one behind the bridge
        ip("-n", ns, "neigh", "replace", peer_addr, "lladdr", B_MAC if ns == a else A_MAC,
           "dev", end, "nud", "permanent")
    return Topology("packet-packet", a, b, br, ("packet:nmbd0", "packet:nmbd1"),
                    [(a, "nmba0"), (br, "nmbd0"), (br, "nmbd1"), (b, "nmbb0")], stats_dir,
                    log_dir, popen_in(procs), procs)


@pytest.fixture(params=[("packet-tap", "on"), ("packet-packet", "on"), ("packet-tap", "off")],
                ids=lambda p: f"{p[0]}-offloads-{p[1]}")
def topo(request: pytest.FixtureRequest, make_sandbox: Callable[..., Sandbox],
         make_netns: Callable[[str], str], tmp_path: Path,
         unavailable: Callable[[str], NoReturn]) -> Iterator[Topology]:
    if shutil.which("ethtool") is None:
        unavailable("needs the ethtool command (Debian package ethtool)")
    name, offloads = request.param
    if name == "packet-tap":
        sb = make_sandbox()
        made = Topology("packet-tap", sb.wire_ns, sb.bridge_ns, sb.bridge_ns,
                        (sb.wire_port, sb.host_port),
                        [(sb.wire_ns, sb.wire_if), (sb.bridge_ns, sb.veth_if)],
                        sb.tempdir("stats"), sb.tempdir("log"), sb.popen)
    else:
        stats = tmp_path / "stats"
        stats.mkdir(mode=0o700)
        made = packet_packet(make_netns, str(stats), str(tmp_path), [])
    made.offloads = offloads
    try:
        set_up_offloads(made)
        yield made
    finally:  # the sandbox stops its own; these run in namespaces of make_netns
        for proc in made.procs:
            Sandbox.stop(proc)


class Bridge:
    """nmbridge between the topology's two ports, in its bridge namespace."""

    def __init__(self, topo: Topology) -> None:
        self.topo, self.name = topo, "ofl"
        self.log = Path(topo.log_dir) / "bridge.log"
        argv = [NMBRIDGE, "-i", topo.ports[0], "-i", topo.ports[1], "--name", self.name,
                "--stats-dir", topo.stats_dir, "--no-live"]
        with open(self.log, "wb") as log:
            self.proc = topo.popen(topo.bridge_ns, argv, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
        stats_file = Path(topo.stats_dir) / f"{self.name}.stats"
        wait_for("the bridge to run", lambda: (s := read_snapshot(stats_file)).live
                 and s.state == "running" and s.pid == self.proc.pid, START_TIMEOUT,
                 self.proc, self.log)

    def rings(self) -> list[dict[str, Any]]:
        res = subprocess.run([NMBRIDGE, "stats", "--json", self.name, "--stats-dir",
                              self.topo.stats_dir], capture_output=True, text=True,
                             timeout=START_TIMEOUT, check=False)
        assert res.returncode == 0, res.stderr
        (inst,) = json.loads(res.stdout)["instances"]
        return list(inst["rings"])

    def settled_rings(self) -> list[dict[str, Any]]:
        """The rings once two readings agree but for their syncs, which an idle loop
        goes on counting (the counters are published every 200 ms)."""
        last: list[list[dict[str, Any]]] = [[]]

        def same() -> list[dict[str, Any]] | None:
            now = self.rings()
            counts = [{k: v for k, v in r.items() if k != "syncs"} for r in now]
            done = now if counts == last[0] else None
            last[0] = counts
            return done

        return wait_for("the bridge's counters to settle", same, START_TIMEOUT, self.proc,
                        self.log, step=0.3)

    def stop(self) -> None:
        status = Sandbox.stop(self.proc)
        assert status == 0, f"exit status {status}:\n{self.log.read_text(errors='replace')}"


def report(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """The JSON line a peer printed at its end."""
    return dict(peers.report(proc, what, TRAFFIC_TIMEOUT + 5))


def ready(proc: subprocess.Popen[str], what: str) -> None:
    peers.ready(proc, what, START_TIMEOUT)


def ways(topo: Topology) -> list[tuple[str, str, str, str]]:
    """(name, sender's namespace, receiver's namespace, receiver's address)."""
    return [("a->b", topo.a_ns, topo.b_ns, B_ADDR), ("b->a", topo.b_ns, topo.a_ns, A_ADDR)]


def csum_errors(ns: str) -> dict[str, int]:
    """TcpInCsumErrors and UdpInCsumErrors of namespace ns."""
    text = sandbox.run(sandbox.netns_exec(ns, ["cat", "/proc/net/snmp"])).stdout
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        proto, _, values = line.partition(":")
        rows.setdefault(proto, []).append(values.split())
    out = {}
    for proto in ("Tcp", "Udp"):
        names, values = rows[proto]
        out[f"{proto}InCsumErrors"] = int(values[names.index("InCsumErrors")])
    return out


def assert_no_checksum_errors(topo: Topology) -> None:
    for ns in (topo.a_ns, topo.b_ns):
        errors = csum_errors(ns)
        assert not any(errors.values()), f"receiver in {ns}: {errors}"


def assert_bridge_dropped_nothing(bridge: Bridge, topo: Topology) -> None:
    """Frames each way, and no drop field of any ring above 0 (drop_header, drop_gso,
    the drops_by_reason of today and any to come)."""
    rings = bridge.settled_rings()
    for port in topo.ports:
        assert sum(r["frames"] for r in rings if r["port_name"] == port
                   and r["direction"] == "rx") > 0, f"{port} received nothing"
    for r in rings:
        where = f"{r['port_name']} {r['direction']} ring {r['ring']}"
        drops = {k: v for k, v in r.items() if k.startswith("drop") and isinstance(v, int)}
        drops |= {f"drops_by_reason.{k}": v for k, v in r.get("drops_by_reason", {}).items()}
        assert not any(drops.values()), f"{where}: {drops}"
        assert r["errors"] == 0, f"{where}: {r}"
        gso = {k: r[k] for k in ("gso_frames", "gso_segments", "csum_sw") if k in r}
        print(f"{where}: {r['frames']} frames, {r['bytes']} bytes {gso}")


# ---------------------------------------------------------------- tests


def test_tcp_stream_arrives_intact_both_ways(topo: Topology) -> None:
    bridge = Bridge(topo)
    receivers, run_ids = {}, {}
    for name, _src, dst_ns, dst_addr in ways(topo):
        run_ids[name] = str(secrets.randbits(31))
        receivers[name] = topo.start(dst_ns, *TCP_PEER, "tcp-recv", dst_addr, "--run-id",
                                     run_ids[name], "--timeout", f"{TRAFFIC_TIMEOUT + 2:g}")
        ready(receivers[name], f"{name} receiver")
    senders = {name: topo.start(src_ns, *TCP_PEER, "tcp-send", dst_addr, "--bytes",
                                str(TCP_BYTES), "--run-id", run_ids[name],
                                "--timeout", f"{TRAFFIC_TIMEOUT:g}")
               for name, src_ns, _dst, dst_addr in ways(topo)}
    for name in senders:
        sent = report(senders[name], f"{name} sender")
        got = report(receivers[name], f"{name} receiver")
        # tcp-recv checks every byte against the run's stream: intact = all of it, to EOF
        assert (sent["bytes"], sent["error"], got["bytes"], got["intact"]) == (
            TCP_BYTES, "", TCP_BYTES, True), f"{name}: sender: {sent}, receiver: {got}"
    assert_no_checksum_errors(topo)
    assert_bridge_dropped_nothing(bridge, topo)
    # the super-frames crossed whole (zero-copy), not cut into MTU frames on the way
    rx = [r for r in bridge.settled_rings() if r["direction"] == "rx"]
    if topo.offloads == "on":
        assert all(r["bytes"] > 4 * 1514 * r["frames"] for r in rx if r["bytes"] > TCP_BYTES), rx
    assert not any(r["offloads"]["gso_frames"] for r in rx), rx
    assert "offloads carried end to end" in bridge.log.read_text(errors="replace")
    bridge.stop()


def test_udp_gso_buffers_arrive_as_datagrams_of_the_segment_size(topo: Topology) -> None:
    datagrams = sum(math.ceil(size / GSO_SIZE) for size in UDP_BUFFERS)
    expected_sizes: dict[str, int] = {}
    for size in UDP_BUFFERS:
        for start in range(0, size, GSO_SIZE):
            n = str(min(GSO_SIZE, size - start))
            expected_sizes[n] = expected_sizes.get(n, 0) + 1
    bridge = Bridge(topo)
    receivers, run_ids = {}, {}
    for name, _src, dst_ns, dst_addr in ways(topo):
        run_ids[name] = secrets.randbits(31)
        receivers[name] = topo.start(dst_ns, PEER, "udp-recv", dst_addr, "--run-id",
                                     str(run_ids[name]), "--count", str(datagrams),
                                     "--timeout", f"{TRAFFIC_TIMEOUT:g}", "--idle", "2")
        ready(receivers[name], f"{name} receiver")
    senders = {name: topo.start(src_ns, PEER, "udp-send", dst_addr, "--run-id", str(run_ids[name]),
                                "--sizes", ",".join(map(str, UDP_BUFFERS)),
                                "--gso", str(GSO_SIZE))
               for name, src_ns, _dst, dst_addr in ways(topo)}
    for name in senders:
        sent = report(senders[name], f"{name} sender")
        got = report(receivers[name], f"{name} receiver")
        assert (sent["sent"], sent["segments"], sent["error"]) == (
            len(UDP_BUFFERS), datagrams, ""), f"{name}: the sender: {sent}"
        assert (got["received"], got["bytes"]) == (datagrams, sum(UDP_BUFFERS)), (
            f"{name}: {got['received']} of {datagrams} datagrams, {got['bytes']:,} of "
            f"{sum(UDP_BUFFERS):,} bytes arrived: {got}")
        assert got["sizes"] == expected_sizes, f"{name}: not cut at {GSO_SIZE} bytes: {got}"
        assert (got["unique"], got["corrupt"], got["duplicates"]) == (datagrams, 0, 0), got
    assert_no_checksum_errors(topo)
    assert_bridge_dropped_nothing(bridge, topo)
    bridge.stop()

"""Super-frames from a packet: port to a kernel port, segmented into the fake
module's fixed 2048-byte buffers (issue 15), against real stacks at both ends.

    [a ns] a0 198.18.0.1 ==veth== pk0 [bridge ns] fk0: the fake NIC  ~~ wire_relay.py ~~
    b0p ==veth== b0 198.18.0.2 [b ns]

    nmbridge -i packet:pk0 -i netmap:fk0   (the shim plays netmap for fk0)

a0 keeps Linux's default offloads (TSO, GSO, TX checksum): its stack hands the
veth TCP and UDP super-frames of up to 64 KiB with their checksums left to
finish, and pk0 reads them so, behind their virtio-net headers. fk0's rings
carry no header and 2048-byte buffers: nmbridge segments and checksums in
software (nmb_gso_segment, csum_sw). What the bridge puts on fk0's wire, the
relay (tests/kernel/wire_relay.py, through the shim's control socket) sends out
of b0p to the real stack in b; what that stack sends back comes in on fk0's
wire, and reaches a0 behind a zero header. b0 has its offloads off and b0p its
GRO: the relay carries plain frames of the MTU, as a wire would.

Checked: the bytes arrive whole (every one checked by nmbridge.lab.traffic's
tcp-recv), the UDP_SEGMENT buffers
arrive as datagrams of the segment size, the receiving stacks count no
checksum errors, the bridge's counters show super-frames in (gso_frames) and
more segments out (gso_segments), no frame on the wire longer than the MTU, no
slot the shim found over its buffer size, no drop anywhere. The UDP peers are
tests/integration/offload_peer.py. Timeouts only stop a hang.
"""

from __future__ import annotations

import importlib.util
import math
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import peers
import pytest
from namespaces import ip
from peers import ready
from test_kernel_bridge import RunningBridge, stats_json

FakeKernel = Any  # the `fake` fixture's class (tests/kernel/conftest.py)

pytestmark = pytest.mark.root

HERE = Path(__file__).resolve().parent
PEER = str(HERE.parent / "integration" / "offload_peer.py")
#: the TCP streams' ends: the demo's (every byte checked against the run's stream)
TCP_PEER = ("-m", "nmbridge.lab.traffic")
RELAY = str(HERE / "wire_relay.py")
HOSTILE = str(HERE.parent / "integration" / "hostile_peer.py")
A_ADDR, B_ADDR = "198.18.0.1", "198.18.0.2"
A_MAC, B_MAC = "02:00:c6:12:02:01", "02:00:c6:12:02:02"
NAME = "kseg"
#: the fake's buffers
BUF_SIZE = 2048
MTU_FRAME = 1514
TCP_BYTES = 2_000_000
GSO_SIZE = 1400
UDP_BUFFERS = (8_000, 20_000, 33_333, 60_000) * 3
TIMEOUT = 12.0
SENDER_FEATURES = ("tcp-segmentation-offload", "generic-segmentation-offload",
                   "tx-checksumming")


def netns_exec(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ethtool(ns: str, *args: str) -> str:
    res = subprocess.run(netns_exec(ns, ["ethtool", *args]), capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 0, f"ethtool {' '.join(args)}: {res.stderr.strip()}"
    return res.stdout


def csum_errors(ns: str) -> dict[str, int]:
    """TcpInCsumErrors and UdpInCsumErrors of namespace ns (/proc/net/snmp)."""
    text = subprocess.run(netns_exec(ns, ["cat", "/proc/net/snmp"]), capture_output=True,
                          text=True, timeout=30, check=True).stdout
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        proto, _, words = line.partition(":")
        rows.setdefault(proto, []).append(words.split())
    out = {}
    for proto in ("Tcp", "Udp"):
        names, values = rows[proto]
        out[f"{proto}InCsumErrors"] = int(values[names.index("InCsumErrors")])
    return out


@dataclass
class Lab:
    fake: FakeKernel
    a_ns: str
    b_ns: str
    br_ns: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    bridges: list[RunningBridge] = field(default_factory=list)

    def start(self, ns: str, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(netns_exec(ns, [sys.executable, "-I", *argv]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        return proc


@pytest.fixture
def lab(fake: FakeKernel, nic_netns: str, make_netns: Callable[[str], str],
        unavailable: Callable[[str], NoReturn]) -> Iterator[Lab]:
    if shutil.which("ethtool") is None:
        unavailable("needs the ethtool command (Debian package ethtool)")
    a, b, br = make_netns("a"), make_netns("b"), nic_netns
    for ns, end, mac, addr, peer, peer_addr, peer_mac in (
            (a, "a0", A_MAC, A_ADDR, "pk0", B_ADDR, B_MAC),
            (b, "b0", B_MAC, B_ADDR, "b0p", A_ADDR, A_MAC)):
        ip("-n", ns, "link", "add", end, "address", mac, "type", "veth", "peer", "name", peer,
           "netns", br)
        for n, dev in ((ns, end), (br, peer)):
            ip("-n", n, "link", "set", dev, "addrgenmode", "none")  # nothing of their own
            ip("-n", n, "link", "set", dev, "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", end)
        ip("-n", ns, "neigh", "replace", peer_addr, "lladdr", peer_mac, "dev", end, "nud",
           "permanent")
    shown = dict(line.split(":", 1) for line in ethtool(a, "-k", "a0").splitlines()
                 if ":" in line)
    off = [f for f in SENDER_FEATURES if not shown.get(f, "").strip().startswith("on")]
    assert not off, f"a0: {', '.join(off)} off by default here: nothing to test"
    # the far side is a wire of MTU frames: no super-frame comes back from it
    ethtool(b, "-K", "b0", "tso", "off", "gso", "off", "tx", "off")
    ethtool(br, "-K", "b0p", "gro", "off")
    made = Lab(fake, a, b, br)
    try:
        yield made
    finally:  # the namespaces go with make_netns; what runs in them first
        for bridge in made.bridges:
            bridge.kill()
        for proc in made.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def report(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """The JSON object a program printed last."""
    return dict(peers.report(proc, what, TIMEOUT + 5))


def report_list(proc: subprocess.Popen[str], what: str) -> list[dict[str, Any]]:
    """The JSON list a program printed last."""
    return list(peers.report(proc, what, TIMEOUT + 5, opener="["))


class Bridged:
    """The bridge and the relay running; stop() ends both and gives their books."""

    def __init__(self, lab: Lab, native: str = "") -> None:
        self.lab = lab
        env = {"FAKENETMAP_NATIVE": native} if native else None
        self.bridge = RunningBridge(lab.fake, ["-i", "packet:pk0", "-i", "netmap:fk0",
                                               "--name", NAME, "--no-live"], lab.br_ns, env)
        lab.bridges.append(self.bridge)
        self.bridge.wait_line(r"nmbridge: packet:pk0 <-> netmap:fk0")
        deadline = time.monotonic() + 10
        while lab.fake.ctl_request("users fk0") != "1":
            assert time.monotonic() < deadline, f"fk0 never opened\n{self.bridge.stderr()}"
            time.sleep(0.02)
        self.relay = lab.start(lab.br_ns, RELAY, str(lab.fake.ctl), "fk0", "b0p")
        ready(self.relay, "the wire relay")

    def settled_rings(self) -> list[dict[str, Any]]:
        """The rings once two readings agree but for their syncs."""
        last: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while True:
            rings = list(stats_json(self.lab.fake, NAME)["rings"])
            counts = [{k: v for k, v in r.items() if k != "syncs"} for r in rings]
            if counts == last or time.monotonic() > deadline:
                return rings
            last = counts
            time.sleep(0.3)

    def stop(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        try:
            rings = self.settled_rings()
            self.relay.terminate()
            relay = report(self.relay, "the wire relay")
            self.bridge.stop()
        finally:
            self.bridge.kill()
        assert self.bridge.proc.returncode == 0, self.bridge.stderr()
        return rings, relay


def ring(rings: list[dict[str, Any]], port: str, direction: str) -> dict[str, Any]:
    (r,) = [r for r in rings if r["port_name"] == port and r["direction"] == direction]
    return r


def check_books(lab: Lab, rings: list[dict[str, Any]], relay: dict[str, Any]) -> None:
    """Super-frames in from a0, more segments out to fk0's 2048-byte buffers, none over
    the MTU on the wire; frames from the wire to pk0; no drop, no error anywhere."""
    for r in rings:
        print(f"{r['port_name']} {r['direction']} {r['ring']}: {r['frames']} frames "
              f"{r['bytes']} bytes {r['offloads']} drops {r['drops']}")
    print(f"relay: {relay}")
    for r in rings:
        assert r["drops"] == 0 and r["errors"] == 0, r
    pk_rx, fk_tx = ring(rings, "packet:pk0", "rx"), ring(rings, "netmap:fk0", "tx")
    assert pk_rx["offloads"]["gso_frames"] > 0, pk_rx
    assert fk_tx["offloads"]["gso_segments"] > pk_rx["offloads"]["gso_frames"], (pk_rx, fk_tx)
    shim = relay["shim"]
    # every slot the bridge wrote held at most a buffer (the shim counts any other as bad),
    # and no frame on the wire was a chain of them: each is a segment of the MTU at most
    assert shim["bad_slots"] == 0 and shim["reinits"] == 0, shim
    assert 0 < relay["longest"] <= MTU_FRAME and relay["too_long"] == 0, relay
    assert shim["wire_tx"] == relay["to_veth"] == fk_tx["frames"], (shim, relay, fk_tx)
    fk_rx, pk_tx = ring(rings, "netmap:fk0", "rx"), ring(rings, "packet:pk0", "tx")
    assert shim["wire_rx"] == relay["from_veth"] == fk_rx["frames"] == pk_tx["frames"] > 0, (
        shim, relay, fk_rx, pk_tx)
    for ns in (lab.a_ns, lab.b_ns):
        assert not any(csum_errors(ns).values()), f"{ns}: {csum_errors(ns)}"


#: fk0 as the generic adapter, and as a native driver with a TX ring of 64 slots, which
#: gives finished slots back only when forced (NIOCTXSYNC) or full: a 64 KiB super-frame
#: takes 45 of them once segmented, more than the 33 buffers it came in (a bridge that
#: counted 33 waited for ever with 33 to 44 free)
NICS = pytest.mark.parametrize("native", ["", "fk0/64"], ids=["generic", "native-64"])


@NICS
def test_tcp_both_ways_through_a_fake_nic(lab: Lab, native: str) -> None:
    """a -> b: super-frames segmented for fk0; b -> a: MTU frames from fk0's wire, to pk0
    behind a zero header. One connection each way, at the same time."""
    bridged = Bridged(lab, native)
    ways = (("a->b", lab.a_ns, lab.b_ns, B_ADDR), ("b->a", lab.b_ns, lab.a_ns, A_ADDR))
    receivers, run_ids = {}, {}
    for name, _src, dst_ns, dst_addr in ways:
        run_ids[name] = str(secrets.randbits(31))
        receivers[name] = lab.start(dst_ns, *TCP_PEER, "tcp-recv", dst_addr, "--run-id",
                                    run_ids[name], "--timeout", f"{TIMEOUT:g}")
        ready(receivers[name], f"{name} receiver")
    senders = {name: lab.start(src_ns, *TCP_PEER, "tcp-send", dst_addr, "--bytes",
                               str(TCP_BYTES), "--run-id", run_ids[name], "--timeout",
                               f"{TIMEOUT - 2:g}")
               for name, src_ns, _dst, dst_addr in ways}
    for name in senders:
        sent = report(senders[name], f"{name} sender")
        got = report(receivers[name], f"{name} receiver")
        # tcp-recv checks every byte against the run's stream: intact = all of it, to EOF
        assert (sent["bytes"], sent["error"], got["bytes"], got["intact"]) == (
            TCP_BYTES, "", TCP_BYTES, True), f"{name}: sender: {sent}, receiver: {got}"
    rings, relay = bridged.stop()
    check_books(lab, rings, relay)


@NICS
def test_udp_segment_burst_through_a_fake_nic(lab: Lab, native: str) -> None:
    """UDP_SEGMENT buffers of up to 60,000 bytes from a: each a USO super-frame on pk0,
    datagrams of GSO_SIZE bytes on fk0's wire. A few datagrams from b come back."""
    datagrams = sum(math.ceil(size / GSO_SIZE) for size in UDP_BUFFERS)
    bridged = Bridged(lab, native)
    ways = (("a->b", lab.a_ns, lab.b_ns, B_ADDR, UDP_BUFFERS),
            ("b->a", lab.b_ns, lab.a_ns, A_ADDR, (1400,) * 5))
    receivers, run_ids = {}, {}
    for name, _src, dst_ns, dst_addr, sizes in ways:
        run_ids[name] = secrets.randbits(31)
        count = sum(math.ceil(size / GSO_SIZE) for size in sizes)
        receivers[name] = lab.start(dst_ns, PEER, "udp-recv", dst_addr, "--run-id",
                                    str(run_ids[name]), "--count", str(count),
                                    "--timeout", f"{TIMEOUT - 2:g}", "--idle", "2")
        ready(receivers[name], f"{name} receiver")
    senders = {name: lab.start(src_ns, PEER, "udp-send", dst_addr, "--run-id",
                               str(run_ids[name]), "--sizes", ",".join(map(str, sizes)),
                               "--gso", str(GSO_SIZE), "--gap", "0.02")
               for name, src_ns, _dst, dst_addr, sizes in ways}
    for name, _src, _dst, _addr, sizes in ways:
        count = sum(math.ceil(size / GSO_SIZE) for size in sizes)
        sent = report(senders[name], f"{name} sender")
        got = report(receivers[name], f"{name} receiver")
        assert (sent["sent"], sent["segments"], sent["error"]) == (len(sizes), count, ""), sent
        assert (got["received"], got["bytes"]) == (count, sum(sizes)), got
        assert (got["unique"], got["corrupt"], got["duplicates"]) == (count, 0, 0), got
        assert max(int(k) for k in got["sizes"]) <= GSO_SIZE, got
    assert datagrams > len(UDP_BUFFERS)
    rings, relay = bridged.stop()
    check_books(lab, rings, relay)


def load_hostile_peer() -> Any:
    """tests/integration/hostile_peer.py as a module: its cases' verdicts, judge()."""
    spec = importlib.util.spec_from_file_location("hostile_peer", HOSTILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("hostile_peer", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def rx_packets(ns: str, ifname: str) -> int:
    path = f"/sys/class/net/{ifname}/statistics/rx_packets"
    return int(subprocess.run(netns_exec(ns, ["cat", path]), capture_output=True, text=True,
                              timeout=30, check=True).stdout)


@NICS
def test_hostile_headers_toward_a_fake_nic(lab: Lab, native: str) -> None:
    """The hostile headers of tests/integration/test_hostile_headers.py, from a0, where
    the bridge segments what it passes (nmb_gso_segment on a header the far end chose):
    what the kernel takes as it is and nmbridge must drop is dropped and counted, the
    rest arrives in MTU frames with their checksums right, the good frames whole and in
    order."""
    peer = load_hostile_peer()
    bridged = Bridged(lab, native)
    before_in, before_out = rx_packets(lab.br_ns, "pk0"), rx_packets(lab.b_ns, "b0")
    capture = lab.start(lab.b_ns, HOSTILE, "capture", "b0", f"{TIMEOUT:g}")
    ready(capture, "the receiver's capture")
    receiver = lab.start(lab.b_ns, HOSTILE, "udp-recv", B_ADDR, f"{TIMEOUT:g}")
    ready(receiver, "the receiver")
    attacker = lab.start(lab.a_ns, HOSTILE, "send", "a0", B_MAC)
    sent, arrived, datagrams = (report_list(p, what) for p, what in (
        (attacker, "the attacker"), (capture, "the capture"), (receiver, "the receiver")))
    rings, relay = bridged.stop()
    came_in = rx_packets(lab.br_ns, "pk0") - before_in
    went_out = rx_packets(lab.b_ns, "b0") - before_out

    outcome, wrong = peer.judge(sent, {a["marker"] for a in arrived}, segmented=True)
    print("\n".join(f"  {name}: {what}" for name, what in outcome.items()))
    assert not wrong, "\n".join(wrong)
    good = [s for s in sent if s["expect"] == peer.GOOD]
    want = [s["marker"] for s in good for _ in range(s["datagrams"])]
    got = [d for d in datagrams if d["marker"].startswith("NMBG")]
    assert [d["marker"] for d in got] == want and all(d["whole"] for d in got), datagrams

    pk_rx, fk_tx = ring(rings, "packet:pk0", "rx"), ring(rings, "netmap:fk0", "tx")
    print(f"in {came_in}, out {went_out}: {pk_rx} {fk_tx} {relay}")
    assert pk_rx["frames"] + pk_rx["drops"] == came_in, pk_rx
    assert pk_rx["drops"] == list(outcome.values()).count("dropped"), pk_rx
    assert fk_tx["drops"] == 0 and fk_tx["frames"] == relay["to_veth"] == went_out, fk_tx
    assert fk_tx["offloads"]["gso_segments"] > pk_rx["offloads"]["gso_frames"] > 0
    assert relay["longest"] <= MTU_FRAME and relay["too_long"] == 0, relay
    assert relay["shim"]["bad_slots"] == 0, relay
    assert not any(csum_errors(lab.b_ns).values()), csum_errors(lab.b_ns)

"""The bench that test_soak.py and test_faults.py share: a Sandbox (nmbridge.lab.sandbox,
addresses on 198.18.0.0/15 only), the installed `nmbridge` started in its bridge
namespace, UDP streams from nmbridge.lab.traffic, and every counter that can say
where a frame went:

- the senders' and receivers' reports (sent; arrived, unique, intact, in order),
- nmbridge's counters (`nmbridge stats NAME --json`, read from another process,
  and the totals line the bridge prints when it stops),
- the kernel's: each interface's packets and rx_dropped/tx_dropped
  (`ip -s -j link`), each namespace's UDP counters (/proc/net/snmp).

`account()` turns them into one ledger per direction whose every line must
balance: a frame that nobody counted shows up as a non-zero "unaccounted".

Not a test module (no test_ prefix): pytest puts this directory on sys.path
when it imports the tests next to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

from nmbridge.counters import read_open_snapshot, read_snapshot
from nmbridge.lab import traffic
from nmbridge.lab.sandbox import Sandbox

NMBRIDGE = str(Path(sys.executable).with_name("nmbridge"))
START_TIMEOUT = 15.0
#: the totals line the bridge prints when it stops (runner._print_totals)
TOTALS_RE = re.compile(r"nmbridge: stopped \((\w+)\) after ([\d.]+) s: (.*)$")
DIRECTION_RE = re.compile(r"(\S+) (\d+) frames (\d+) bytes (\d+) dropped")
#: UDP payload sizes: Ethernet frames of 60 to 1514 bytes, swept
PAYLOAD_RANGE = "18:1472"
#: the most datagrams one traffic process sends (nmbridge.lab.traffic's bound)
MAX_ROUND_COUNT = traffic.MAX_COUNT


class _Lines(threading.Thread):
    """Collects a child's stderr lines, with when each came (and keeps the pipe drained)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(name="bridge-stderr", daemon=True)
        self._stream = stream
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        for line in self._stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        return "\n".join(line for _t, line in self.lines)


@dataclass
class Bridge:
    """A running `nmbridge` process in the sandbox's bridge namespace."""

    proc: subprocess.Popen[str]
    name: str
    stats_dir: str
    stderr: _Lines
    held: int = -1  # an fd of its stats file, kept open to read the last counters

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stats_path(self) -> Path:
        return Path(self.stats_dir) / f"{self.name}.stats"

    def log(self) -> str:
        return self.stderr.text()

    def wait_running(self, timeout: float = START_TIMEOUT) -> None:
        """Until its stats file is there, live, from this process, and the loop runs."""
        wait_for(f"bridge '{self.name}' to forward", lambda: (
            (s := read_snapshot(self.stats_path)).live and s.pid == self.pid
            and s.state in ("running", "link-wait")), timeout, self.proc, self.log)

    def hold_stats(self) -> None:
        """Keep the stats file open: its last counters stay readable after the bridge
        removes it on exit (they are published after the flush, before the unlink)."""
        if self.held < 0:
            self.held = os.open(self.stats_path, os.O_RDONLY | os.O_CLOEXEC)

    def final_stats(self) -> dict[str, Any]:
        """The held stats file's last counters, as `nmbridge stats --json` shows one
        instance."""
        from nmbridge.export import instance_dict

        assert self.held >= 0, "hold_stats() first"
        snap = read_open_snapshot(self.held, str(self.stats_path))
        inst = instance_dict(snap, time.time_ns())
        os.close(self.held)
        self.held = -1
        return inst

    def wait_exit(self, timeout: float) -> int:
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the bridge did not exit within {timeout:g} s: {self.log()}",
                        pytrace=False)
        self.stderr.join(5)
        return status

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds from the signal to the exit)."""
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        status = self.wait_exit(timeout)
        return status, time.monotonic() - sent

    @contextlib.contextmanager
    def paused(self, timeout: float = 10.0) -> Iterator[None]:
        """SIGSTOP for the block, SIGCONT after: inside it every thread of the bridge is
        stopped at the edge of user space, none half way through a system call (a send()).
        Don't read its stats meanwhile: it may have stopped in the middle of a publish."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            wait_for(f"bridge '{self.name}' to stop (SIGSTOP)", self._stopped, timeout,
                     self.proc, self.log)
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def _stopped(self) -> bool:
        states = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                states.append(task.joinpath("stat").read_text().rpartition(")")[2].split()[0])
        return bool(states) and all(s in ("T", "t") for s in states)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def totals(self) -> dict[str, tuple[int, int, int]]:
        """The totals line of a stopped bridge: direction -> (frames, bytes, dropped)."""
        for _t, line in reversed(self.stderr.lines):
            m = TOTALS_RE.search(line)
            if m:
                return {d.group(1): (int(d.group(2)), int(d.group(3)), int(d.group(4)))
                        for d in DIRECTION_RE.finditer(m.group(3))}
        pytest.fail(f"no totals line from the bridge: {self.log()}", pytrace=False)

    def settled_stats(self, timeout: float = 10.0) -> dict[str, Any]:
        """stats() once the counters stop moving: the loop publishes them every pass of
        its budget (200 ms), so a receiver that has every datagram can be ahead of them."""
        last: list[str] = []

        def settled() -> dict[str, Any] | None:
            inst = self.stats()
            # every count of a frame; the syncs move on while idle
            now = json.dumps([inst["directions"], [(r["frames"], r["drops_by_reason"])
                                                   for r in inst["rings"]]], sort_keys=True)
            same = bool(last) and last[-1] == now
            last.append(now)
            return inst if same else None

        return dict(wait_for(f"the counters of '{self.name}' to settle", settled, timeout,
                             self.proc, self.log, step=0.3))

    def stats(self) -> dict[str, Any]:
        """`nmbridge stats NAME --json` from another process (outside the namespaces)."""
        res = subprocess.run([NMBRIDGE, "stats", self.name, "--json", "--stats-dir",
                              self.stats_dir], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"nmbridge stats: {res.returncode}: {res.stderr}"
        (inst,) = json.loads(res.stdout)["instances"]
        return dict(inst)


@dataclass
class Stream:
    """One UDP stream through the bridge (maybe in rounds): who sends where."""

    label: str  # "wire->host"
    src_ns: str
    dst_ns: str
    dst_addr: str
    port: int
    sends: list[dict[str, Any]] = field(default_factory=list)
    recvs: list[dict[str, Any]] = field(default_factory=list)
    #: the round's udp-send while run_round runs it: `during` may end it early (SIGTERM:
    #: it stops and reports what it sent)
    sender: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def sent(self) -> int:
        return sum(int(s.get("sent", 0)) for s in self.sends)

    @property
    def unique(self) -> int:
        return sum(int(r.get("unique", 0)) for r in self.recvs)

    @property
    def received(self) -> int:
        return sum(int(r.get("received", 0)) + int(r.get("foreign", 0)) for r in self.recvs)

    def damaged(self) -> dict[str, int]:
        """Datagrams that arrived twice, out of order, or not as sent: must all be 0."""
        return {k: sum(int(r.get(k, 0)) for r in self.recvs)
                for k in ("duplicates", "out_of_order", "corrupt", "foreign")}


class Lab:
    """A Sandbox with helpers to run nmbridge and traffic in it and read every counter."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.stats_dir = sb.tempdir("stats")
        self.bridges: list[Bridge] = []

    # ------------------------------------------------------------ the bridge

    def start_bridge(self, *extra: str, name: str = "rel", ports: Sequence[str] | None = None,
                     stats_dir: str | None = None, wait: bool = True) -> Bridge:
        sb = self.sb
        ports = ports or (sb.wire_port, sb.host_port)
        argv = [NMBRIDGE, *(a for p in ports for a in ("-i", p)), "--name", name,
                "--stats-dir", stats_dir or self.stats_dir, "--no-live", *extra]
        proc = sb.popen(sb.bridge_ns, argv, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines = _Lines(proc.stderr)
        lines.start()
        bridge = Bridge(proc, name, stats_dir or self.stats_dir, lines)
        self.bridges.append(bridge)
        if wait:
            bridge.wait_running()
        return bridge

    # ------------------------------------------------------------ traffic

    def streams(self, port: int = traffic.DEFAULT_PORT) -> list[Stream]:
        """Both directions: wire -> host (packet: -> tap:) and host -> wire."""
        sb = self.sb
        return [Stream("wire->host", sb.wire_ns, sb.bridge_ns, sb.host_addr, port),
                Stream("host->wire", sb.bridge_ns, sb.wire_ns, sb.wire_addr, port + 1)]

    def run_round(self, streams: Sequence[Stream], seconds: float, count: int,
                  rate: float = 0.0, sizes: str = PAYLOAD_RANGE, idle: float = 3.0,
                  during: Callable[[], None] | None = None) -> None:
        """Every stream at once for up to `seconds` (or `count` datagrams each, at `rate`
        per second, 0: as fast as it goes); `during` runs meanwhile. Reports are kept.
        sizes: UDP payload sizes, "LOW:HIGH" swept or "A,B,..." cycled."""
        procs = []
        for s in streams:
            run_id = traffic.new_run_id()
            common = ["--count", str(count), "--run-id", str(run_id), "--port", str(s.port)]
            recv = self.sb.popen(s.dst_ns, traffic.command(
                "udp-recv", s.dst_addr, *common, "--timeout", f"{seconds + 60:g}",
                "--idle", f"{idle:g}"), stdout=subprocess.PIPE, text=True)
            traffic.wait_ready(recv, 15)
            procs.append((s, recv))
        sends = []
        for s, recv in procs:
            send = self.sb.popen(s.src_ns, traffic.command(
                "udp-send", s.dst_addr, "--count", str(count), "--run-id", _run_id(recv),
                "--port", str(s.port),
                "--rate", f"{rate:g}", "--sizes" if "," in sizes else "--size-range", sizes,
                "--timeout", f"{seconds:g}"), stdout=subprocess.PIPE, text=True)
            s.sender = send
            sends.append((s, send, recv))
        if during is not None:
            during()
        for s, send, _recv in sends:
            s.sends.append(traffic.read_report(send, seconds + 30))
        for s, _send, recv in sends:
            s.recvs.append(traffic.read_report(recv, idle + 60))

    def start_sender(self, stream: Stream, seconds: float, rate: float,
                     count: int = MAX_ROUND_COUNT) -> subprocess.Popen[str]:
        """A sender alone (no receiver, no report kept): frames on the way for a fault."""
        return self.sb.popen(stream.src_ns, traffic.command(
            "udp-send", stream.dst_addr, "--count", str(count), "--port", str(stream.port),
            "--rate", f"{rate:g}", "--size-range", PAYLOAD_RANGE, "--timeout", f"{seconds:g}"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)

    # ------------------------------------------------------------ the kernel's counters

    def links(self) -> dict[str, dict[str, int]]:
        """Every sandbox interface (by name): packets and drops, both ways."""
        out: dict[str, dict[str, int]] = {}
        for ns in (self.sb.wire_ns, self.sb.bridge_ns):
            doc = json.loads(self.sb.ip(ns, "-s", "-j", "link", "show").stdout)
            for link in doc:
                st = link.get("stats64", {})
                out[link["ifname"]] = {f"{d}_{k}": int(st.get(d, {}).get(k, 0))
                                       for d in ("rx", "tx")
                                       for k in ("packets", "dropped", "errors")}
        return out

    def udp(self) -> dict[str, dict[str, int]]:
        """Each namespace's UDP counters (/proc/net/snmp is per namespace)."""
        out = {}
        for ns in (self.sb.wire_ns, self.sb.bridge_ns):
            lines = [x.split() for x in self.sb.run(ns, ["cat", "/proc/net/snmp"]).stdout
                     .splitlines() if x.startswith("Udp:")]
            out[ns] = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))
        return out

    def counters(self) -> dict[str, Any]:
        return {"links": self.links(), "udp": self.udp()}


def _run_id(recv: subprocess.Popen[str]) -> str:
    argv = list(recv.args)  # type: ignore[arg-type]
    return str(argv[argv.index("--run-id") + 1])


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """after - before, key by key, at any depth (a key new in after counts from 0)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out[key] = delta(value, before.get(key, {}))
        else:
            out[key] = value - before.get(key, 0)
    return out


def _ring(inst: dict[str, Any], port_name: str, direction: str) -> dict[str, Any]:
    (ring,) = [r for r in inst["rings"]
               if r["port_name"] == port_name and r["direction"] == direction]
    return dict(ring)


@dataclass
class Ledger:
    """One direction's books: hops, each `what went in = what came out + what it dropped`,
    and the whole way: sent = delivered + every drop counted on the way."""

    label: str
    hops: list[tuple[str, int, dict[str, int]]]  # (hop, in, {out and drop terms})

    def unaccounted(self) -> dict[str, int]:
        """hop -> frames that went in and are neither out nor counted dropped (0s left out)."""
        return {what: n - sum(terms.values()) for what, n, terms in self.hops
                if n != sum(terms.values())}

    def end_to_end(self) -> tuple[int, dict[str, int]]:
        return self.hops[0][1], self.hops[0][2]

    def describe(self) -> str:
        rows = [f"{self.label}:"]
        for what, n, terms in self.hops:
            rest = n - sum(terms.values())
            rows.append(f"  {what}: {n} = " + " + ".join(f"{k} {v}" for k, v in terms.items())
                        + (f"  UNACCOUNTED {rest:+d}" if rest else ""))
        return "\n".join(rows)


def account(lab: Lab, streams: Sequence[Stream], inst: dict[str, Any],
            kernel: dict[str, Any]) -> list[Ledger]:
    """The books of both directions, from the traffic reports, nmbridge's counters (an
    instance of `nmbridge stats --json`) and the kernel's counter deltas over the run.

    wire->host: udp-send in the wire namespace -> nmbw0 =veth= nmbv0 -> nmbridge's packet
    socket -> nmbridge -> TAP nmbt0 -> the bridge namespace's stack -> udp-recv;
    host->wire the other way. A veth drop is counted twice by the kernel (tx_dropped of
    the sender, rx_dropped of the peer): only the sender's count is used.
    """
    return [_ledger(lab, s, inst, kernel) for s in streams]


def _ledger(lab: Lab, s: Stream, inst: dict[str, Any], kernel: dict[str, Any]) -> Ledger:
    """One direction's books (see account)."""
    sb = lab.sb
    links, udp = kernel["links"], kernel["udp"]
    w, v, t = links[sb.wire_if], links[sb.veth_if], links[sb.tap_if]
    forward = s.label == "wire->host"
    rx_port, tx_port = (sb.wire_port, sb.host_port) if forward else (sb.host_port,
                                                                      sb.wire_port)
    d = next(x for x in inst["directions"] if x["label"] == f"{rx_port}->{tx_port}")
    by = d["drops_by_reason"]
    src = udp[s.src_ns]
    dst = udp[s.dst_ns]
    rx_ring, tx_ring = _ring(inst, rx_port, "rx"), _ring(inst, tx_port, "tx")
    sndbuf = src.get("SndbufErrors", 0)
    if forward:
        # the sender's stack hands frames to nmbw0; the veth passes them to nmbv0,
        # where nmbridge's packet socket sees each one (rx_packets). A frame the veth
        # drops is in nmbw0's tx_dropped and comes back to the sender as ENOBUFS,
        # counted again as SndbufErrors: the hop starts from what the sender sent.
        into_link = ("sender stack -> veth", s.sent,
                     {"nmbv0 rx_packets": v["rx_packets"],
                      "nmbw0 tx_dropped": w["tx_dropped"]})
        offered = v["rx_packets"]
        leave = {"nmbt0 rx_packets": t["rx_packets"], "nmbt0 rx_dropped": t["rx_dropped"]}
        arrived = t["rx_packets"]
        kernel_drops = {"nmbw0 tx_dropped": w["tx_dropped"],
                        "nmbt0 rx_dropped": t["rx_dropped"]}
    else:
        # the stack queues frames on the TAP (its qdisc may refuse some: SndbufErrors);
        # nmbridge reads them (tx_packets) or the TAP's queue is full and the kernel
        # drops them (tx_dropped)
        into_link = ("sender stack -> TAP", s.sent,
                     {"nmbt0 tx_packets": t["tx_packets"],
                      "nmbt0 tx_dropped": t["tx_dropped"], "SndbufErrors": sndbuf})
        offered = t["tx_packets"]
        leave = {"nmbw0 rx_packets": w["rx_packets"], "nmbv0 tx_dropped": v["tx_dropped"]}
        arrived = w["rx_packets"]
        kernel_drops = {"SndbufErrors": sndbuf, "nmbt0 tx_dropped": t["tx_dropped"],
                        "nmbv0 tx_dropped": v["tx_dropped"]}
    hops = [
        ("sent = delivered + drops", s.sent, {
            "delivered": s.unique,
            **kernel_drops,
            "nmbridge drops": d["drops"],
            "receiver InErrors": dst.get("InErrors", 0),
            "receiver NoPorts": dst.get("NoPorts", 0),
        }),
        ("sender", s.sent, {"OutDatagrams": src.get("OutDatagrams", 0),
                            "SndbufErrors": sndbuf}),
        into_link,
        ("into nmbridge", offered, {"nmbridge RX frames": rx_ring["frames"],
                                    "drop_rx": by["rx"], "drop_oversize": by["oversize"],
                                    "drop_chain": by["chain"]}),
        ("through nmbridge", rx_ring["frames"], {"nmbridge TX frames": tx_ring["frames"]}),
        ("out of nmbridge", tx_ring["frames"], {**leave, "drop_tx": by["tx"]}),
        ("receiver stack", arrived, {"InDatagrams": dst.get("InDatagrams", 0),
                                     "InErrors": dst.get("InErrors", 0),
                                     "NoPorts": dst.get("NoPorts", 0)}),
        ("receiver", dst.get("InDatagrams", 0), {"read by udp-recv": s.received}),
    ]
    return Ledger(s.label, hops)


@contextlib.contextmanager
def rss_sampler(bridge: Bridge, every: float = 0.5) -> Iterator[list[tuple[float, int, int]]]:
    """(seconds, VmRSS KiB, open fds) of the bridge every `every` s, in a thread."""
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, StopIteration):
                samples.append((time.monotonic() - started, bridge.rss_kib(), bridge.fds()))
            stop.wait(every)

    th = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    th.start()
    try:
        yield samples
    finally:
        stop.set()
        th.join(5)

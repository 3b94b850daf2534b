"""`nmbridge demo`: a bridge between a veth and a TAP in throw-away network
namespaces (nmbridge.lab.sandbox), real traffic through it both ways (pings, a
UDP stream, then TCP at full speed with the offloads Linux turns on), the live
counters, and a summary that says whether every frame and byte arrived.

The bridge is the installed nmbridge itself, started in the bridge namespace
(`ip netns exec`); the demo reads its stats file as `nmbridge stats` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from nmbridge import terminal
from nmbridge.counters import Snapshot, read_snapshot
from nmbridge.errors import NmbridgeError, PortFailed, SystemFailure
from nmbridge.lab import python_m, traffic
from nmbridge.lab.sandbox import Sandbox, check_privileges, check_tun, ip_command, reap_stale

INSTANCE = "demo"
#: seconds the bridge gets to start, and to stop after SIGTERM
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PING_COUNT = 3
#: UDP payload sizes swept by the streams: Ethernet frames of 60 to 1514 bytes
PAYLOAD_RANGE = "18:1472"
#: seconds of TCP at the end (a quarter of --duration if that is shorter)
TCP_SECONDS = 2.0
#: the largest frame an Ethernet MTU allows: a larger one crossed as a super-frame
MTU_FRAME = 1514

_TOTALS_RE = re.compile(r"nmbridge: stopped \((\w+)\) after ([\d.]+) s: (.*)$")
_DIRECTION_RE = re.compile(r"(\S+) (\d+) frames (\d+) bytes (\d+) dropped")


@dataclass
class DemoOptions:
    duration: float = 10.0
    rate: int = 1000  # UDP datagrams per second, each way
    live: bool | None = None  # None: a live table on a terminal


@dataclass
class Direction:
    """One way through the bridge: who sends, who receives, what arrived."""

    label: str  # "wire -> host"
    src_ns: str
    dst_ns: str
    src_addr: str
    dst_addr: str
    ping: dict[str, Any] = field(default_factory=dict)
    sent: dict[str, Any] = field(default_factory=dict)
    received: dict[str, Any] = field(default_factory=dict)
    tcp_sent: dict[str, Any] = field(default_factory=dict)
    tcp_received: dict[str, Any] = field(default_factory=dict)
    tcp_frames: tuple[int, int] | None = None  # frames, bytes the bridge took in meanwhile


@dataclass
class BridgeTotals:
    reason: str
    seconds: float
    directions: dict[str, tuple[int, int, int]]  # name -> frames, bytes, dropped


def parse_totals(lines: list[str]) -> BridgeTotals | None:
    """The bridge's last line: "nmbridge: stopped (REASON) after S s: A->B N frames ..."."""
    for line in reversed(lines):
        m = _TOTALS_RE.search(line)
        if m:
            dirs = {
                d.group(1): (int(d.group(2)), int(d.group(3)), int(d.group(4)))
                for d in _DIRECTION_RE.finditer(m.group(3))
            }
            return BridgeTotals(m.group(1), float(m.group(2)), dirs)
    return None


def run_demo(opts: DemoOptions) -> None:
    """Set up, bridge, drive traffic, show, summarise, clean up; PortFailed if a frame
    was lost or a ping went unanswered."""
    check_privileges()
    ip_command()
    check_tun()
    with _sigterm_as_interrupt():
        for ns in reap_stale():
            terminal.debug(f"nmbridge demo: removed namespace {ns} of a killed run")
        with Sandbox() as sb:
            _Demo(sb, sb.tempdir("stats"), opts).run()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM cleans up as Ctrl-C does (the default action would leave the sandbox)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def child_error(lines: list[str]) -> str:
    """What a failed child said: its own error line, or, where it died before it could
    write one (a traceback: an import that failed), the last line it wrote."""
    errors = [x for x in lines if x.startswith("nmbridge: error: ")]
    if errors:
        return errors[-1].removeprefix("nmbridge: error: ")
    said = [x.strip() for x in lines if x.strip()]
    return terminal.printable(said[-1]) if said else ""


class _LineReader(threading.Thread):
    """Collects a child's stderr lines (and keeps its pipe from filling)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(name="nmbridge-demo-stderr", daemon=True)
        self._stream = stream
        self.lines: list[str] = []

    def run(self) -> None:
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))


class _Demo:
    def __init__(self, sb: Sandbox, stats_dir: str, opts: DemoOptions) -> None:
        self.sb = sb
        self.opts = opts
        self.stats_path = os.path.join(stats_dir, f"{INSTANCE}.stats")
        self.stats_dir = stats_dir
        self.bridge: subprocess.Popen[str] | None = None
        self.reader: _LineReader | None = None
        self.directions = [
            Direction("wire -> host", sb.wire_ns, sb.bridge_ns, sb.wire_addr, sb.host_addr),
            Direction("host -> wire", sb.bridge_ns, sb.wire_ns, sb.host_addr, sb.wire_addr),
        ]
        self.started = 0.0
        live = opts.live if opts.live is not None else sys.stdout.isatty()
        self.live_mode = live and terminal.verbosity() >= 0
        self.live: Any = None

    # ------------------------------------------------------------ the run

    def run(self) -> None:
        sb = self.sb
        terminal.info(
            f"nmbridge demo: {sb.wire_if} {sb.wire_addr} [{sb.wire_ns}] --veth-- "
            f"{sb.veth_if} | nmbridge {sb.wire_port} <-> {sb.host_port} | "
            f"{sb.tap_if} {sb.host_addr} [{sb.bridge_ns}]"
        )
        self._start_bridge()
        try:
            self._drive()
        finally:
            self._stop_view()
        totals = self._stop_bridge()
        self._summary(totals)

    def _start_bridge(self) -> None:
        argv = [
            *python_m("nmbridge"), "-i", self.sb.wire_port, "-i", self.sb.host_port,
            "--stats-dir", self.stats_dir, "--name", INSTANCE, "--no-live",
            # a bound even if this process is killed before it can stop the bridge
            "--duration", f"{self.opts.duration + 60:g}",
        ]
        self.bridge = self.sb.popen(self.sb.bridge_ns, argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
        self.reader = _LineReader(self.bridge.stderr)
        self.reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.bridge.poll() is not None:
                self.reader.join(1)
                why = child_error(self.reader.lines)
                raise SystemFailure(
                    f"the bridge did not start (exit status {self.bridge.returncode})"
                    + (f": {why}" if why else "")
                )
            snap = self._snapshot()
            if snap is not None and snap.live:
                self.started = time.monotonic()
                return
            time.sleep(0.02)
        raise SystemFailure(f"the bridge did not start in {START_TIMEOUT:g} s")

    def _drive(self) -> None:
        """Pings and a UDP stream each way, then TCP each way, until --duration, with the
        view."""
        tcp_s = min(TCP_SECONDS, self.opts.duration / 4)
        end = self.started + self.opts.duration - tcp_s
        self._start_view()
        pings = [
            (d, self.sb.popen(d.src_ns, traffic.command(
                "ping", d.dst_addr, "--count", str(PING_COUNT), "--interval", "0.2"),
                stdout=subprocess.PIPE, text=True))
            for d in self.directions
        ]
        stream_s = max(0.5, end - time.monotonic() - 1.5)
        count = max(1, int(self.opts.rate * stream_s))
        streams = []
        for d in self.directions:
            run_id = traffic.new_run_id()
            common = ["--count", str(count), "--run-id", str(run_id)]
            recv = self.sb.popen(d.dst_ns, traffic.command(
                "udp-recv", d.dst_addr, *common, "--timeout", f"{stream_s + 30:g}"),
                stdout=subprocess.PIPE, text=True)
            traffic.wait_ready(recv, 10)
            send = self.sb.popen(d.src_ns, traffic.command(
                "udp-send", d.dst_addr, *common, "--rate", str(self.opts.rate),
                "--size-range", PAYLOAD_RANGE, "--timeout", f"{stream_s + 30:g}"),
                stdout=subprocess.PIPE, text=True)
            streams.append((d, send, recv))
        procs = [p for _, p in pings] + [p for _, s, r in streams for p in (s, r)]
        prev = self._watch(procs, end, None)
        for d, p in pings:
            d.ping = traffic.read_report(p, 5)
        for d, send, recv in streams:
            d.sent = traffic.read_report(send, 5)
            d.received = traffic.read_report(recv, 5)
        prev = self._tcp(tcp_s, prev)
        self._show(prev)

    def _watch(self, procs: list[subprocess.Popen[str]], until: float,
               prev: Snapshot | None) -> Snapshot | None:
        """Show the counters until `until` and until every process has ended."""
        while time.monotonic() < until or any(p.poll() is None for p in procs):
            if time.monotonic() > until + 30:
                break  # every process has its own bound; this is the demo's
            time.sleep(min(1.0, max(0.05, until - time.monotonic())))
            prev = self._show(prev)
        return prev

    def _tcp(self, seconds: float, prev: Snapshot | None) -> Snapshot | None:
        """One TCP connection each way, one after the other, as fast as it goes for half
        of seconds each. The sandbox's veths and the TAP keep Linux's default offloads:
        the stacks hand the bridge TSO super-frames, which cross whole. The frames the
        bridge took from the sending side meanwhile are the stream's (its ACKs come
        back by the other port)."""
        time.sleep(0.3)  # the bridge publishes its counters every 200 ms
        before = self._snapshot()
        for port, d in enumerate(self.directions):
            run_id = traffic.new_run_id()
            common = ["--run-id", str(run_id), "--timeout", f"{seconds + 30:g}"]
            recv = self.sb.popen(d.dst_ns, traffic.command("tcp-recv", d.dst_addr, *common),
                                 stdout=subprocess.PIPE, text=True)
            traffic.wait_ready(recv, 10)
            send = self.sb.popen(d.src_ns, traffic.command(
                "tcp-send", d.dst_addr, *common, "--seconds", f"{seconds / 2:g}"),
                stdout=subprocess.PIPE, text=True)
            prev = self._watch([recv, send], time.monotonic() + seconds / 2, prev)
            d.tcp_sent = traffic.read_report(send, 5)
            d.tcp_received = traffic.read_report(recv, 5)
            time.sleep(0.3)
            after = self._snapshot()
            if before is not None and after is not None:
                a, b = after.totals(port), before.totals(port)
                d.tcp_frames = (a.get("frames", 0) - b.get("frames", 0),
                                a.get("bytes", 0) - b.get("bytes", 0))
            before = after  # the next connection's start
        return prev

    def _snapshot(self) -> Snapshot | None:
        try:
            return read_snapshot(self.stats_path)
        except NmbridgeError:
            return None

    def _stop_bridge(self) -> BridgeTotals | None:
        assert self.bridge is not None and self.reader is not None
        status = self.sb.stop(self.bridge, STOP_TIMEOUT)
        self.reader.join(2)
        if status != 0:
            why = child_error(self.reader.lines)
            raise PortFailed(f"the bridge exited with status {status}"
                             + (f": {why}" if why else ""))
        return parse_totals(self.reader.lines)

    # ------------------------------------------------------------ the view

    def _start_view(self) -> None:
        if self.live_mode:
            from nmbridge.view import live_display

            self.live = live_display()
            self.live.start()

    def _stop_view(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _show(self, prev: Snapshot | None) -> Snapshot | None:
        snap = self._snapshot()
        if snap is None:
            return prev
        from nmbridge.view import bridge_table, log_line

        if self.live is not None:
            self.live.update(bridge_table(snap, prev, time.monotonic() - self.started,
                                          terminal.table_width()), refresh=True)
        elif terminal.verbosity() >= 0:
            line = log_line(snap, prev)
            if line:
                terminal.info(line)
        return snap

    # ------------------------------------------------------------ the summary

    def _summary(self, totals: BridgeTotals | None) -> None:
        out = terminal.print_out
        failures: list[str] = []
        secs = f" after {totals.seconds:.1f} s" if totals else ""
        out(f"nmbridge demo: {self.sb.wire_port} <-> {self.sb.host_port}{secs}")
        for d in self.directions:
            p = d.ping
            got, sent = p.get("received", 0), p.get("sent", 0)
            rtts = p.get("rtt_ms") or []
            avg = f", rtt avg {sum(rtts) / len(rtts):.2f} ms" if rtts else ""
            out(f"  ping {d.label}  {d.src_addr} -> {d.dst_addr}: {got}/{PING_COUNT} "
                f"replies{avg}")
            if got != PING_COUNT or sent != PING_COUNT:
                failures.append(f"ping {d.label}: {got} of {PING_COUNT} replies")
        for d in self.directions:
            s, r = d.sent, d.received
            n_sent, lost = s.get("sent", 0), r.get("lost", r.get("expected", 0))
            flags = []
            if r.get("out_of_order") or r.get("duplicates"):
                flags.append(f"{r.get('out_of_order', 0)} out of order, "
                             f"{r.get('duplicates', 0)} duplicated")
            if r.get("corrupt"):
                flags.append(f"{r['corrupt']} corrupt")
            state = ", ".join(flags) or "complete, in order, intact"
            out(f"  udp  {d.label}  {n_sent} sent, {r.get('unique', 0)} received, "
                f"{lost} lost ({state})")
            if not s or not r or lost or flags:
                failures.append(f"UDP {d.label}: {lost} of {r.get('expected', n_sent)} lost"
                                + (f", {'; '.join(flags)}" if flags else ""))
        for d in self.directions:
            line, failure = _tcp_summary(d)
            out(line)
            if failure:
                failures.append(failure)
        if totals is not None:
            for name, (frames, nbytes, dropped) in totals.directions.items():
                out(f"  bridge {name}: {frames} frames, {nbytes} bytes, {dropped} dropped")
        else:
            out("  bridge: no totals line from the bridge")
        out(f"result: {'FAILED' if failures else 'ok'}")
        if failures:
            raise PortFailed("demo: " + "; ".join(failures))


def _tcp_summary(d: Direction) -> tuple[str, str]:
    """The summary's lines for one way's TCP connection, and what failed ("" if nothing)."""
    s, r = d.tcp_sent, d.tcp_received
    got = int(r.get("bytes", 0))
    secs = float(r.get("seconds", 0.0))
    rate = f" ({got * 8 / secs / 1e9:.2f} Gbit/s)" if got and secs > 0 else ""
    line = (f"  tcp  {d.label}  {d.src_addr} -> {d.dst_addr}: {got / 1e6:,.1f} MB in "
            f"{secs:.1f} s{rate}")
    error = s.get("error") or r.get("error") or ("no report" if not s or not r else "")
    sent = int(s.get("bytes", 0))
    if r.get("intact") and got > 0 and got == sent and not error:
        line += ", every byte intact"
        failure = ""
    else:
        why = error or (f"{r.get('corrupt_reads', 0)} reads differed" if r.get("corrupt_reads")
                        else "the stream did not end" if not r.get("eof")
                        else f"{got:,} of {sent:,} bytes arrived" if got != sent
                        else "no bytes")
        line += f": {why}"
        failure = f"TCP {d.label}: {why}"
    if d.tcp_frames is not None and d.tcp_frames[0] > 0:
        frames, nbytes = d.tcp_frames
        mean = nbytes // frames
        line += (f"\n       the bridge took {frames:,} frames of {mean:,} B on average"
                 + (" (TSO super-frames, carried whole)" if mean > MTU_FRAME else ""))
    return line, failure

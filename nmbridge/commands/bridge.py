"""Running one bridge: open the ports, publish counters, run the C loop until
told to stop, flush, close, report. The CLI calls run_bridge(); the demo too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from nmbridge import sysfs, terminal, tunables
from nmbridge.counters import (
    DEFAULT_DIR,
    Snapshot,
    StatsWriter,
    already_running,
    open_stats_dir,
    read_snapshot,
    running_pid,
    stats_dir_error,
    stats_path,
)
from nmbridge.errors import NoSuchPort, UsageError
from nmbridge.pcap import PcapOptions
from nmbridge.pcapfilter import Program
from nmbridge.portspec import (
    NIC_KINDS,
    NIC_RING_KINDS,
    PortSpec,
    one_way_reason,
    parse_port,
    same_interface,
    share_rings,
    vnet_hdr_refusal,
)

#: how long the C loop runs before Python looks at signals, the clock and the links
LOOP_BUDGET_MS = 200


@dataclass
class BridgeOptions:
    ports: tuple[str, str]
    roles: tuple[str, str] | None = None  # ("wire", "host") for `nmbridge IFACE`
    burst: int = tunables.BURST.default
    zero_copy: bool = True
    wait_link: float = 0.0
    busy_poll: bool = False
    poll_timeout_ms: int = tunables.POLL_TIMEOUT_MS.default
    rx_usecs: int = tunables.RX_USECS.default
    duration: float | None = None
    count: int | None = None
    name: str | None = None
    stats_dir: str = DEFAULT_DIR
    live: bool | None = None  # None: a live table on a TTY, log lines otherwise
    interval: float = 1.0
    on_ready: Callable[[], None] | None = None  # called once the bridge forwards
    on_tick: Callable[[Snapshot], None] | None = None  # called every interval
    on_loop: Callable[[], None] | None = None  # every pass of the loop (<= LOOP_BUDGET_MS apart)
    on_stop: Callable[[str], None] | None = None  # once the loop ends (the reason), before flush
    metrics_listen: tuple[str, int] | None = None  # (address, port) to serve /metrics on
    isolate: bool = False  # packet: ports: their interfaces taken from the host stack
    offloads: str = "off"  # NIC ports: "off" (turned off, restored at the stop) or "keep"
    vnet_hdr: tuple[tuple[str, int], ...] = ()  # (VALE port as given, header length)
    loopback: bool = False  # ports[0] == ports[1]: one port looped back on itself (-L)
    promisc: bool = True  # NICs that take frames for others held promiscuous (--no-promisc)
    pcap: PcapOptions | None = None  # --pcap: a copy of what crosses, in pcapng
    # tcpdump expressions for the frames from port 0 and from port 1 (None: all cross)
    filters: tuple[str | None, str | None] = (None, None)


@dataclass
class Totals:
    instance: str
    seconds: float
    forwarded: int
    directions: dict[str, dict[str, int]]
    reason: str


def instance_name(ports: tuple[str, str], roles: tuple[str, str] | None) -> str:
    """The default instance name: the interface for `nmbridge IFACE`, else both ports."""
    text = ports[0].removeprefix("netmap:") if roles is not None else f"{ports[0]}--{ports[1]}"
    return re.sub(r"[^A-Za-z0-9._:@^{}-]", "_", text)[:64]


def check_stats_dir(stats_dir: str) -> None:
    """Fail before any port is opened if the stats file cannot be written there: make
    the directory if missing and check that nobody else can write in it, then create
    and remove a file in it (root passes the os.access() test on a read-only file
    system, and a full disk passes it too)."""
    try:
        dfd = open_stats_dir(stats_dir)
    except OSError as exc:
        raise stats_dir_error(f"cannot create the stats directory {stats_dir}", exc) from None
    probe = f".probe.{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        os.close(fd)
        os.unlink(probe, dir_fd=dfd)
    except OSError as exc:
        raise stats_dir_error(f"cannot write in the stats directory {stats_dir}", exc) \
            from None
    finally:
        os.close(dfd)


def check_not_running(stats_dir: str, name: str) -> None:
    """Refuse a second instance of a name before opening its ports: they would be
    busy, and the message would not say why."""
    pid = running_pid(stats_dir, name)
    if pid is not None:
        raise already_running(name, pid)


class _StopSignals:
    """SIGINT and SIGTERM ask the loop to stop; the previous handlers come back after."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        self._old: dict[int, Any] = {}
        self.received: int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        self._on_stop()

    def __enter__(self) -> _StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _port_meta(spec: PortSpec, role: str | None, kind: str) -> dict[str, Any]:
    return {"name": spec.text, "kind": spec.kind, "backend": kind, "role": role}


@contextlib.contextmanager
def _capturing(opts: PcapOptions | None, specs: list[PortSpec]) -> Iterator[Any]:
    """The capture, running from before the ports open (a file that cannot be written
    stops the start) until after the bridge's last flush."""
    if opts is None:
        yield None
        return
    from nmbridge.pcap import CaptureWatch, open_capture

    watch = CaptureWatch(open_capture(opts, (specs[0].text, specs[1].text)), opts)
    try:
        yield watch
    finally:
        watch.close()


@contextlib.contextmanager
def _opened(specs: list[PortSpec]) -> Iterator[list[Any]]:
    from nmbridge import ports as bridge_ports

    ports = bridge_ports.open_ports(specs)
    try:
        yield ports
    finally:
        bridge_ports.close_ports(ports)


def run_bridge(opts: BridgeOptions) -> Totals:
    """Bridge two ports until stopped; returns the final totals."""
    specs = with_vnet_hdr([parse_port(p) for p in opts.ports], opts.vnet_hdr)
    name = opts.name if opts.name is not None else instance_name(opts.ports, opts.roles)
    stats_path(opts.stats_dir, name)  # a bad --name is a usage error before anything is made
    for spec in specs:
        if (why := one_way_reason(spec)) is not None:
            raise UsageError(f"{spec.text}: {why}; nmbridge bridges both ways")
    if opts.loopback:
        check_loopback(specs[0])
    elif share_rings(*specs):
        raise UsageError(f"{specs[0].text} and {specs[1].text} are the same rings: a bridge "
                         "between them would send every frame back where it came from")
    if not opts.loopback and same_interface(*specs):
        raise UsageError(f"{specs[0].text} and {specs[1].text} are the same interface, "
                         f"{specs[0].ifname}: a bridge between them would send every frame "
                         "back where it came from")
    if opts.isolate and not any(s.kind == "packet" for s in specs):
        raise UsageError("--isolate applies to packet: ports (netmap ports are isolated by "
                         "netmap itself)")
    programs = compile_filters(opts.filters)
    from nmbridge import engine, nic, privileges

    for spec in specs:
        ifname = nic.port_interface(spec)
        if ifname is not None and spec.kind != "tap" and not sysfs.exists(ifname):
            raise NoSuchPort(f"{spec.text}: no interface named '{ifname}'")
    # what the ports need before the stats directory, whose error would only lead here
    privileges.require(specs, engine.ports.NETMAP_DEVICE)
    check_stats_dir(opts.stats_dir)
    check_not_running(opts.stats_dir, name)
    if any(not s.emulated for s in specs):
        engine.ports.require_netmap()  # before a NIC is touched
    # a NIC's offloads off before netmap takes it, back on whatever ends the bridge
    # (a SIGTERM before the loop's own handling too: by default it ends the process
    # without unwinding, and the offloads would stay off)
    with _early_sigterm() as startup:
        try:
            return _start(opts, specs, name, startup, programs)
        except _StoppedEarly:
            terminal.info("nmbridge: stopped (signal) before forwarding")
            return Totals(name, 0.0, 0, {}, "signal")


def check_loopback(spec: PortSpec) -> None:
    """-L: one netmap port opened twice, each open's RX ring forwarded to the other's TX
    ring -- the same rings, as netmap's bridge -L does. An emulated port cannot: two
    sockets on one interface would each receive every frame and send it back twice."""
    if spec.emulated:
        raise UsageError(f"-L {spec.text}: loopback needs a netmap port (netmap:IFACE, "
                         "vale, pipe); an emulated port's two sockets would each take every "
                         "frame and send it back twice")


def compile_filters(filters: tuple[str | None, str | None]) -> list[Program | None]:
    """Each direction's expression compiled by libpcap (a bad one, or no libpcap, is a
    usage error that names the option); the same expression is compiled once."""
    from nmbridge.pcapfilter import FilterSyntax, compile_filter

    out: list[Program | None] = []
    for i, expr in enumerate(filters):
        if expr is None:
            out.append(None)
        elif i == 1 and expr == filters[0]:
            out.append(out[0])
        else:
            option = "--filter" if filters[0] == filters[1] else \
                ("--filter-in", "--filter-out")[i]
            try:
                out.append(compile_filter(expr))
            except FilterSyntax as exc:
                raise FilterSyntax(f"{option} {exc.message}") from None
    return out


def filter_note(labels: tuple[str, str], programs: list[Program | None]) -> str | None:
    """The line that says the filters once, or None without any."""
    if programs[0] is None and programs[1] is None:
        return None
    tail = ": frames that do not match are dropped, counted as filtered"
    if programs[0] is not None and programs[0] == programs[1]:
        return f"filter '{programs[0].expression}' both ways{tail}"
    ways = [f"{label} '{p.expression}'" for label, p in zip(labels, programs) if p is not None]
    return f"filter {', '.join(ways)}{tail}"


def with_vnet_hdr(specs: list[PortSpec], asked: tuple[tuple[str, int], ...]) -> list[PortSpec]:
    """The ports, those named by --vnet-hdr PORT=LEN given their header length; a name
    that is not one of them, twice, or not a VALE port is a usage error."""
    out = list(specs)
    seen: set[str] = set()
    for name, length in asked:
        where = [i for i, spec in enumerate(specs) if spec.text == name]
        if not where:
            ports = " and ".join(spec.text for spec in specs)
            raise UsageError(f"--vnet-hdr {name}={length}: '{name}' is not a port of this "
                             f"bridge ({ports}); name it as given with -i")
        if name in seen:
            raise UsageError(f"--vnet-hdr: {name} is given twice")
        seen.add(name)
        for i in where:
            if (why := vnet_hdr_refusal(specs[i])) is not None:
                raise UsageError(f"--vnet-hdr {name}={length}: {name} is {why}")
            out[i] = dataclasses.replace(specs[i], vnet_hdr=length)
    return out


class _StoppedEarly(BaseException):  # not caught by a handler of Exception on the way
    """SIGTERM came while the bridge was starting."""


class _Startup:
    """While starting, SIGTERM unwinds (what was changed is undone); once the loop's
    own handling is in place, and during the clean-up after it, it does nothing."""

    starting = True
    late: int | None = None  # a SIGTERM once starting ended: _forward's to act on

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.starting:
            self.starting = False
            raise _StoppedEarly
        self.late = signum


@contextlib.contextmanager
def _early_sigterm() -> Iterator[_Startup]:
    startup = _Startup()
    old = signal.signal(signal.SIGTERM, startup.handler)
    try:
        yield startup
    finally:
        signal.signal(signal.SIGTERM, old)


def _start(opts: BridgeOptions, specs: list[PortSpec], name: str, startup: _Startup,
           programs: list[Program | None]) -> Totals:
    from nmbridge import engine, nic
    from nmbridge.commands.stats import serving_metrics

    nics = list(dict.fromkeys(s.ifname for s in specs if not s.emulated and s.kind in NIC_KINDS))
    from nmbridge.promisc import Promiscuous, needs_promisc

    with _capturing(opts.pcap, specs) as capture, \
            nic.NicOffloads(nics if opts.offloads == "off" else [], opts.stats_dir) as offloads, \
            serving_metrics(opts.metrics_listen, stats_path(opts.stats_dir, name)) as serve, \
            Promiscuous(needs_promisc(specs) if opts.promisc else []) as promisc, \
            _opened(specs) as ports:
        serve()
        offloads.announce()
        promisc.announce()
        for port in ports:
            if port.c.hdr_len and port.kind == "kernel":
                terminal.info(f"{port.spec.text}: {port.c.hdr_len}-byte virtio-net headers "
                              "(TSO and checksum offload through the VALE switch)")
        for spec in specs:
            for line in nic.port_warnings(spec, specs):
                terminal.warn(line)
        if any(s.kind in NIC_RING_KINDS for s in specs):
            for line in nic.netmap_fwd_warning():
                terminal.warn(line)
        if opts.isolate:
            for port in ports:
                if port.kind == "packet":
                    port.isolate()
                    terminal.info(f"{port.spec.text}: taken from the host stack until exit")
        watcher = nic.LinkWatcher([(p.spec, p) for p in ports])
        bridge = engine.Bridge(
            ports[0],
            ports[1],
            burst=opts.burst,
            zero_copy=opts.zero_copy,
            busy_poll=opts.busy_poll,
            poll_timeout_ms=opts.poll_timeout_ms,
            count=opts.count or 0,
            rx_usecs=opts.rx_usecs,
        )
        for line in bridge.offload_notes():
            terminal.info(line)
        if capture is not None:
            bridge.set_capture(capture.capture)
        for i, program in enumerate(programs):
            if program is not None:
                bridge.set_filter(i, engine.filter.Filter(program.insns))
        labels = (f"{opts.roles[0]}->{opts.roles[1]}", f"{opts.roles[1]}->{opts.roles[0]}") \
            if opts.roles else (f"{specs[0].text}->{specs[1].text}",
                                f"{specs[1].text}->{specs[0].text}")
        if (note := filter_note(labels, programs)) is not None:
            terminal.info(note)
        roles = opts.roles or (None, None)
        writer = StatsWriter(
            opts.stats_dir,
            name,
            ports=[_port_meta(p.spec, roles[i], p.kind) for i, p in enumerate(ports)],
            rings=[
                {"port": r.port, "direction": r.direction, "ring": r.ringid, "host": r.host}
                for r in bridge.rings()
            ],
            record_fields=engine.stats.record_fields(),
            record_size=engine.stats.record_size(),
            counters_header=engine.stats.header_offsets(),
            counters_header_size=engine.stats.header_size(),
            zero_copy=bridge.zero_copy,
        )
        try:
            bridge.attach_shared(writer.map, writer.counters_offset)
            startup.starting = False  # _forward's own handling comes at once
            return _forward(opts, name, bridge, writer, watcher, ports, capture, startup)
        finally:
            bridge.detach_shared()
            writer.close()
            watcher.close()


def _forward(
    opts: BridgeOptions, name: str, bridge: Any, writer: StatsWriter, watcher: Any,
    ports: list[Any], capture: Any = None, startup: _Startup | None = None,
) -> Totals:
    from nmbridge.view import copy_mode

    why = ""
    if not bridge.zero_copy and bridge.zero_copy_possible:
        why = "--no-zero-copy"
    elif not bridge.zero_copy:
        why = "the ports do not share memory"
    mode = copy_mode(bridge.zero_copy, [{"name": p.spec.text, "backend": p.kind} for p in ports],
                     why)
    terminal.info(
        f"nmbridge: {ports[0].spec.text} <-> {ports[1].spec.text}, {mode}, "
        f"burst {opts.burst}, instance '{name}'"
    )
    # SIGTERM while waiting for the links (systemctl stop) stops the bridge as cleanly as
    # later: STOPPING=1, the stats file removed, exit 0 -- and no READY=1 before it
    with _StopSignals(bridge.request_stop) as stops:
        # a SIGTERM between startup's handling and this one (right after the start line,
        # where a test or systemd sends it) was lost, and the bridge ran on: it counts
        if startup is not None and startup.late is not None:
            stops.received = startup.late
            bridge.request_stop()
        if opts.wait_link > 0 and not watcher.all_up():
            bridge.publish_state("link-wait")  # what stats says while waiting
        watcher.wait_up(opts.wait_link, stop=lambda: stops.received is not None)
        # --duration counts forwarding; the uptime (the view's, the totals') counts from
        # the stats file's start, as `nmbridge stats` does: one clock, one figure
        deadline = time.monotonic() + opts.duration if opts.duration else None
        started = writer.started_monotonic
        view = _View(opts, writer, started)
        reason = "stop"
        errors = _ErrorLog(bridge)
        ready_sent = False
        view.start()
        try:
            while True:
                if stops.received:
                    reason = "signal"
                    break
                if opts.on_loop:
                    opts.on_loop()
                watcher.poll()
                res = bridge.run(LOOP_BUDGET_MS)
                errors.check()
                if capture is not None:
                    capture.check()
                if not ready_sent:
                    ready_sent = True
                    if opts.on_ready:
                        opts.on_ready()
                if res.reason in ("stop", "limit"):
                    reason = "signal" if stops.received else res.reason
                    break
                if stops.received:
                    reason = "signal"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    reason = "duration"
                    break
        finally:
            if opts.on_stop:
                opts.on_stop(reason if sys.exc_info()[0] is None else "error")
            view.stop()
            dropped = bridge.flush(1000)
            if dropped and sys.exc_info()[0] is None:
                terminal.warn(f"{dropped} frame{'s' if dropped > 1 else ''} could not be "
                              "forwarded before the stop (a link down?): counted as dropped")
    final = read_snapshot(writer.path)
    view.final(final)
    seconds = time.monotonic() - started
    from nmbridge.view import direction_totals

    totals = Totals(name, seconds, bridge.forwarded, direction_totals(final), reason)
    _print_totals(totals)
    return totals


def _print_totals(t: Totals) -> None:
    from nmbridge.view import totals_phrase

    terminal.info(f"nmbridge: stopped ({t.reason}) after {t.seconds:.1f} s: "
                  + totals_phrase(t.directions))


class _ErrorLog:
    """Ring errors are recovered from and counted; they are logged at most once per
    ERROR_LOG_INTERVAL, with the count since the last line."""

    ERROR_LOG_INTERVAL = 10.0

    def __init__(self, bridge: Any) -> None:
        self._bridge = bridge
        self._rings = bridge.rings()
        self._logged = [0, 0]
        self._last = -self.ERROR_LOG_INTERVAL

    def check(self) -> None:
        now = time.monotonic()
        if now - self._last < self.ERROR_LOG_INTERVAL:
            return
        totals = [0, 0]
        for ring, rec in zip(self._rings, self._bridge.counters()):
            totals[ring.port] += rec["errors"]
        for i, port in enumerate(self._bridge.ports):
            new = totals[i] - self._logged[i]
            if new > 0:
                terminal.warn(f"{port.spec.text}: {new} ring error{'s' if new > 1 else ''} "
                              "recovered (poll error or ring reinit)")
                self._logged[i] = totals[i]
                self._last = now


class _View:
    """The live table on a TTY, or a log line per interval when something moved."""

    def __init__(self, opts: BridgeOptions, writer: StatsWriter, started: float) -> None:
        from nmbridge.view import Refresher

        self._opts = opts
        self._path = writer.path
        self._started = started
        self._prev: Snapshot | None = None
        live = opts.live if opts.live is not None else sys.stdout.isatty()
        self._live_mode = live and terminal.verbosity() >= 0
        self._live: Any = None
        self._refresher = Refresher(opts.interval, self._tick)

    def start(self) -> None:
        # the first line's rates are against the counters at the start, not a false 0
        with contextlib.suppress(Exception):
            self._prev = read_snapshot(self._path)
        if self._live_mode:
            from nmbridge.view import live_display

            self._live = live_display()
            self._live.start()
        self._refresher.start()

    def _tick(self) -> None:
        try:
            snap = read_snapshot(self._path)
        except Exception:  # the file is ours; a failed read only skips one refresh
            return
        if self._opts.on_tick:
            self._opts.on_tick(snap)
        self._show(snap)
        self._prev = snap

    def _show(self, snap: Snapshot) -> None:
        from nmbridge.view import bridge_table, log_line

        if self._live is not None:
            self._live.update(bridge_table(snap, self._prev, time.monotonic() - self._started,
                                           terminal.table_width()), refresh=True)
        elif terminal.verbosity() >= 0:
            line = log_line(snap, self._prev)
            if line:
                terminal.info(line)

    def final(self, snap: Snapshot) -> None:
        if self._live is not None:
            self._show(snap)
            self._live.stop()

    def stop(self) -> None:
        self._refresher.stop()

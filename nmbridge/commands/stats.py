"""`nmbridge stats`: read the stats files of running instances and show them;
and the bridge's `--metrics-listen` endpoint, which serves the same metrics.

The renderers are view.py's (tables) and export.py's (JSON, Prometheus); this
module reads the files, picks the output, and turns what it meets into the
documented errors.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from nmbridge import __version__, terminal
from nmbridge.counters import Snapshot, list_instances, read_snapshot, stats_path
from nmbridge.errors import (
    NmbridgeError,
    NotRunning,
    PermissionDenied,
    PortBusy,
    StatsCorrupt,
    UsageError,
)

FORMATS = ("table", "json", "prometheus")
#: a one-shot table reads the stats files twice, this far apart: longer than the bridge's
#: publish period (LOOP_BUDGET_MS, 200 ms), so that the rates are those of the counters
#: the bridge published in between, over its own clock; a single read has no rate
RATE_GAP_S = 0.3
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Reading:
    """One pass over the stats directory: what could be read, and what could not."""

    snaps: list[Snapshot] = field(default_factory=list)
    errors: list[StatsCorrupt] = field(default_factory=list)


def read_instances(stats_dir: str, name: str | None) -> Reading:
    """Snapshots of the instance NAME, or of every instance in stats_dir.

    Raises NotRunning when there is nothing to show. With NAME a corrupt
    file raises StatsCorrupt; without, corrupt files are collected so that
    the others still show.
    """
    if name is not None:
        path = stats_path(stats_dir, name)
        if not path.exists():
            raise NotRunning(_no_such_instance(stats_dir, name))
        try:
            return Reading([read_snapshot(path)])
        except NotRunning:  # gone between the check and the read
            raise NotRunning(_no_such_instance(stats_dir, name)) from None
    out = Reading()
    for path in list_instances(stats_dir):
        try:
            out.snaps.append(read_snapshot(path))
        except NotRunning:  # stopped since the listing
            continue
        except StatsCorrupt as exc:
            out.errors.append(exc)
    if not out.snaps and not out.errors:
        raise NotRunning(
            f"no nmbridge instance is running (no stats files in {stats_dir}; "
            "--stats-dir or NMBRIDGE_STATS_DIR names another directory)"
        )
    return out


def _no_such_instance(stats_dir: str, name: str) -> str:
    others = []
    with contextlib.suppress(NmbridgeError):
        others = [p.name.removesuffix(".stats") for p in list_instances(stats_dir)]
    hint = f" (instances there: {', '.join(others)})" if others else ""
    return f"no instance named '{name}' is running: no stats file in {stats_dir}{hint}"


def _stale_warning(snap: Snapshot) -> str:
    return (
        f"'{snap.instance}' is not running: {snap.path} was left by process {snap.pid}, "
        "which died; these are its last counters"
    )


def output_format(as_json: bool, prometheus: bool) -> str:
    if as_json and prometheus:
        raise UsageError("give --json or --prometheus, not both")
    return "json" if as_json else "prometheus" if prometheus else "table"


def show(
    stats_dir: str,
    name: str | None = None,
    fmt: str = "table",
    watch: bool = False,
    interval: float = 1.0,
) -> None:
    """Run `nmbridge stats`. Files that cannot be read get a line each on stderr,
    after what could be read is printed; the last one is raised (exit status 9).
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format '{fmt}'")
    if watch and fmt != "table":
        raise UsageError("--watch shows the table; it does not combine with --json or --prometheus")
    reading = read_instances(stats_dir, name)
    if watch:
        _watch(stats_dir, name, interval, reading)
        return
    prevs: dict[str, Snapshot] = {}
    if fmt == "table" and any(s.live for s in reading.snaps):
        reading, prevs = _read_again(stats_dir, name, reading)
    now_ns = time.time_ns()
    if reading.snaps:
        if fmt == "json":
            doc = _export().json_document(reading.snaps, now_ns, stats_dir, __version__)
            terminal.print_out(json.dumps(doc, indent=2))
        elif fmt == "prometheus":
            terminal.print_out(_export().prometheus_text(reading.snaps))
        else:
            terminal.render(_table(reading.snaps, name, prevs, now_ns))
            for snap in reading.snaps:
                if not snap.live:
                    terminal.warn(_stale_warning(snap))
    for exc in reading.errors[:-1]:
        terminal.error(exc.message)
    if reading.errors:
        raise reading.errors[-1]


def _read_again(stats_dir: str, name: str | None,
                first: Reading) -> tuple[Reading, dict[str, Snapshot]]:
    """A second reading RATE_GAP_S after the first, with the first as the rates' base;
    if the instances went meanwhile, the first reading alone (and no rates)."""
    time.sleep(RATE_GAP_S)
    try:
        return read_instances(stats_dir, name), {s.instance: s for s in first.snaps}
    except NmbridgeError:
        return first, {}


def _export() -> Any:
    from nmbridge import export

    return export


def _table(
    snaps: list[Snapshot], name: str | None, prevs: dict[str, Snapshot] | None, now_ns: int
) -> Any:
    from nmbridge import view

    if name is not None and snaps:
        snap = snaps[0]
        prev = (prevs or {}).get(snap.instance)
        if prev is not None and (prev.pid, prev.started_ns) != (snap.pid, snap.started_ns):
            prev = None
        uptime = max(0.0, (now_ns - snap.started_ns) / 1e9) if snap.live else 0.0
        return view.bridge_table(snap, prev, uptime, terminal.table_width())
    return view.instances_table(snaps, prevs, now_ns, terminal.table_width())


def _watch(stats_dir: str, name: str | None, interval: float, first: Reading) -> None:
    """Redraw every interval until Ctrl-C (which ends with status 0)."""
    from rich.console import Group
    from rich.text import Text

    from nmbridge.view import live_display

    prevs: dict[str, Snapshot] = {}
    reading: Reading | None = first
    # on a terminal the table is redrawn in place; into a pipe or file, one after another
    live = live_display() if terminal.stdout().is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            now_ns = time.time_ns()
            parts: list[Any] = []
            if reading is None:
                try:
                    reading = read_instances(stats_dir, name)
                except NmbridgeError as exc:
                    reading = None
                    parts.append(Text(f"{exc.message} (waiting; Ctrl-C ends)"))
            if reading is not None:
                if reading.snaps:
                    parts.append(_table(reading.snaps, name, prevs, now_ns))
                parts += [Text(e.message) for e in reading.errors]
                parts += [Text(_stale_warning(s)) for s in reading.snaps if not s.live]
                prevs = {s.instance: s for s in reading.snaps}
            if live is not None:
                live.update(Group(*parts), refresh=True)
            else:
                terminal.render(Group(*parts))
            reading = None
            time.sleep(interval)
    except KeyboardInterrupt:
        pass  # the way to end --watch: status 0
    finally:
        if live is not None:
            live.stop()


# ---------------------------------------------------------------- --metrics-listen


def parse_listen(text: str) -> tuple[str, int]:
    """`PORT`, `ADDR:PORT` or `[V6ADDR]:PORT` -> (address, port); a bare port is loopback."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(
            f"bad --metrics-listen '{text}': write an IPv6 address in brackets, [::1]:9417"
        )
    # isascii: str.isdigit() is true of '²', which int() refuses
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise UsageError(
            f"bad --metrics-listen '{text}': the port must be a number from 1 to 65535"
        )
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"bad --metrics-listen '{text}': give an IP address and a port (127.0.0.1:9417), "
            "or only a port for loopback"
        ) from None
    return host, int(port_text)


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: a scrape is one short request: a client gets this long for all of it
REQUEST_SECONDS = 5.0
#: connections served at once; more are closed at once (each holds a descriptor and a
#: thread of the bridge's process: half-sent requests once took it to its fd limit)
MAX_CONNECTIONS = 16


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"nmbridge/{__version__}"
    timeout = REQUEST_SECONDS  # each read and write of the request (StreamRequestHandler)

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        if route == "/metrics":
            try:
                snap = read_snapshot(self.server.stats_file)
            except NmbridgeError as exc:
                self._reply(503, "text/plain; charset=utf-8", exc.message + "\n")
                return
            self._reply(200, PROMETHEUS_CONTENT_TYPE, _export().prometheus_text([snap]))
        elif route == "/":
            self._reply(200, "text/html; charset=utf-8",
                        '<html><body><a href="/metrics">/metrics</a></body></html>\n')
        else:
            self._reply(404, "text/plain; charset=utf-8", "not found: try /metrics\n")

    def _reply(self, status: int, ctype: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every few seconds is not news (terminal.py writes the terminal)."""


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them, each ended after
    REQUEST_SECONDS however slowly its client sends (the per-read timeout alone lets a
    client that sends a byte every few seconds hold its connection for ever)."""

    daemon_threads = True
    stats_file: Path

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed now, nothing read
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that hung up or was cut off is not the bridge's error (the
        default prints a traceback on the bridge's stderr)."""

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        cutoff = threading.Timer(REQUEST_SECONDS, _cut, (request,))
        cutoff.daemon = True
        cutoff.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cutoff.cancel()
            self._slots.release()


def _cut(request: socket.socket) -> None:
    """End a connection that outlived its time: its thread's read returns at once."""
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """GET /metrics with the Prometheus text of one stats file, from a daemon thread."""

    def __init__(self, host: str, port: int, stats_file: Path) -> None:
        cls = _Server6 if ":" in host else _Server
        where = format_listen(host, port)
        try:
            self._httpd = cls((host, port), _Handler)
        except OSError as exc:
            raise _listen_error(where, exc) from None
        self._httpd.stats_file = stats_file
        self.port = int(self._httpd.server_address[1])  # the bound one, if 0 was asked
        self.address = format_listen(host, self.port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
            name="nmbridge-metrics", daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=2)
        self._httpd.server_close()


def _listen_error(where: str, exc: OSError) -> NmbridgeError:
    what = f"cannot serve metrics on {where}"
    if exc.errno == errno.EADDRINUSE:
        return PortBusy(f"{what}: the address is already in use (choose another port)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{what}: permission denied (ports below 1024 need root)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return UsageError(f"{what}: no interface of this host has that address")
    return UsageError(f"{what}: {exc.strerror or exc}")


@contextlib.contextmanager
def serving_metrics(listen: tuple[str, int] | None, stats_file: Path) -> Iterator[
        Callable[[], None]]:
    """Bind listen for the block (nothing if None) and yield start(), which serves
    stats_file's metrics from then on. The bridge binds before it opens its ports (an
    address in use is an error before a NIC enters netmap mode) and starts serving
    after them: what serving costs (a thread and a descriptor a connection) never
    stands between the bridge and its ports."""
    if listen is None:
        yield lambda: None
        return
    server = MetricsServer(listen[0], listen[1], stats_file)

    def start() -> None:
        server.start()
        terminal.info(f"nmbridge: metrics on http://{server.address}/metrics")

    try:
        yield start
    finally:
        server.close()

"""The command line: parse, call, map errors to exit statuses. No logic here.

`nmbridge IFACE` and `nmbridge -i A -i B` run the default command, `bridge`;
the other commands (stats, explain, ...) sit beside it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from nmbridge import __version__, completion, terminal
from nmbridge.counters import DEFAULT_DIR as DEFAULT_STATS_DIR
from nmbridge.counters import DIR_ENV as STATS_DIR_ENV
from nmbridge.errors import (
    EXIT_STATUSES,
    INTERRUPTED_STATUS,
    USAGE_STATUS,
    NmbridgeError,
    UsageError,
)
from nmbridge.tunables import BURST, POLL_TIMEOUT_MS, RX_USECS

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem



CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Seconds(click.FloatRange):
    """A FloatRange of finite numbers: NaN or infinity seconds would be a sleep that
    raises in a thread, or a bridge that never stops."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        seconds = float(super().convert(value, param, ctx))
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


def _exit_status_epilog() -> str:
    lines = ["Exit status:"]
    lines += [f"  {code:>3}  {text}" for code, text in EXIT_STATUSES.items()]
    return "\n".join(lines)


class _StdoutClosed(Exception):
    """The reader of stdout went away (`nmbridge stats | head -1`): not an error.

    click's main() turns a BrokenPipeError into exit status 1 (here: "a port
    failed") even with standalone_mode=False, so it is carried past click as this.
    """


@contextlib.contextmanager
def _closed_stdout_is_not_an_error() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError as exc:
        raise _StdoutClosed from exc


class _DefaultToBridge(click.Group):
    """Runs `bridge` when the first word is not a command: `nmbridge eth0`."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _closed_stdout_is_not_an_error():  # --help, --version
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _closed_stdout_is_not_an_error():
            return super().invoke(ctx)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in (
            "-h",
            "--help",
            "--version",
        ):
            args = ["bridge", *args]
        return super().parse_args(ctx, args)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The first word is a command or, as in `nmbridge eth0`, an interface."""
        items = super().shell_complete(ctx, incomplete)
        if not incomplete.startswith("-"):
            items += completion.interface_items(incomplete)
        return items

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the default command's options: `nmbridge -i A -i B -b 512 -w 5` needs no
        # `bridge` word, so its options belong in the first help a user reads
        bridge = self.commands["bridge"]
        with click.Context(bridge, info_name="bridge", parent=ctx) as sub:
            records = [r for p in bridge.get_params(sub) if isinstance(p, click.Option)
                       and (r := p.get_help_record(sub)) is not None]
        with formatter.section("Bridge options (nmbridge [bridge] ...)"):
            formatter.write_dl(records)
        formatter.write_paragraph()
        with formatter.indentation():
            for line in _exit_status_epilog().splitlines():
                formatter.write_text(line)


def _verbosity(verbose: int, quiet: int) -> None:
    terminal.set_verbosity(verbose - quiet)


@click.group(cls=_DefaultToBridge, context_settings=CONTEXT)
@click.version_option(
    __version__, "--version", prog_name="nmbridge", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Bridge netmap ports: a NIC and its host stack, or any two ports.

    \b
      nmbridge eth0                    netmap:eth0 <-> netmap:eth0^ (wire <-> host stack)
      nmbridge -i A -i B               any two ports, in netmap's port-name syntax
      nmbridge -i A -i B -b 512 -w 5   netmap's bridge command line, as it is
      nmbridge A B 512                 ... and its IFA [IFB [BURST]] form
      nmbridge -i packet:veth0 -i tap:nmb0   emulated ports, no netmap module needed
      nmbridge stats                   the counters of running instances
      nmbridge explain PORT...         what a port name means, without opening it

    See nmbridge(8) for port names, files and exit statuses.
    """


@cli.command("bridge", context_settings=CONTEXT)
@click.argument("iface", required=False, metavar="[IFACE]", shell_complete=completion.interfaces)
@click.argument("ifb", required=False, metavar="[IFB]")
@click.argument("burst_word", required=False, metavar="[BURST]",
                type=click.IntRange(BURST.low, BURST.high))
@click.option("-i", "--port", "ports", multiple=True, metavar="PORT",
              shell_complete=completion.ports,
              help="A port to bridge; give two (netmap:eth0, vale0:a, packet:veth0, "
                   "tap:nmb0, ...), or one NIC to bridge with its host stack.")
@click.option("-b", "--burst", type=click.IntRange(BURST.low, BURST.high), default=BURST.default,
              show_default=True,
              help="Most frames moved from one RX ring per pass.")
@click.option("-c", "--no-zero-copy", is_flag=True,
              help="Copy frames even where ports share memory.")
@click.option("-L", "--loopback", is_flag=True,
              help="One port: send what it receives back out of it (netmap ports).")
@click.option("-w", "--wait-link", type=Seconds(min=0), default=0.0, metavar="SECONDS",
              help="At start, wait up to SECONDS for the links to come up.")
@click.option("--busy-poll", is_flag=True, help="Never sleep in poll(): lower latency, one "
              "core at 100%.")
@click.option("--poll-timeout", type=click.IntRange(POLL_TIMEOUT_MS.low, POLL_TIMEOUT_MS.high),
              default=POLL_TIMEOUT_MS.default, show_default=True,
              metavar="MS", help="Longest sleep in poll() before the loop looks around.")
@click.option("--rx-usecs", type=click.IntRange(RX_USECS.low, RX_USECS.high),
              default=RX_USECS.default, show_default=True,
              metavar="USECS", help="Emulated ports under a sustained load: gather frames "
              "for USECS between wake-ups instead of waking for each (less CPU, up to USECS "
              "more latency while the load lasts); 0: never.")
@click.option("--duration", type=Seconds(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop after SECONDS.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N frames forwarded (both directions).")
@click.option("--name", default=None, metavar="NAME",
              help="Instance name for the stats file (default: from the ports).")
@click.option("--stats-dir", default=DEFAULT_STATS_DIR, show_default=True, envvar=STATS_DIR_ENV,
              metavar="DIR", help=f"Where stats files live (env {STATS_DIR_ENV}).")
@click.option("--live/--no-live", default=None,
              help="A live table (default on a terminal) or a log line per interval.")
@click.option("--interval", type=Seconds(min=0.1), default=1.0, show_default=True,
              metavar="SECONDS", help="Refresh interval of the table or log line.")
@click.option("--metrics-listen", default=None, metavar="[ADDR:]PORT",
              callback=lambda _ctx, _param, value: _listen(value),
              help="Serve Prometheus metrics at http://ADDR:PORT/metrics (ADDR: 127.0.0.1).")
@click.option("--isolate", is_flag=True,
              help="packet: ports: take their interfaces from the host stack, as netmap "
                   "does (frames reach the bridge, not the kernel's protocols) until exit.")
@click.option("--offloads", type=click.Choice(["off", "keep"]), default="off",
              show_default=True,
              help="NIC ports: turn the NIC's offloads off while it bridges (netmap mode "
                   "needs them off; what was on comes back at the stop), or keep them.")
@click.option("--no-promisc", is_flag=True,
              help="Leave the NICs as they are: by default a NIC that takes frames for "
                   "the bridge (netmap mode or packet:, bridged to anything but its own "
                   "host stack) is promiscuous while it runs.")
@click.option("--vnet-hdr", "vnet_hdr", multiple=True, metavar="PORT=LEN",
              callback=lambda _ctx, _param, value: _vnet_hdr(value),
              help="VALE port PORT (as given with -i) carries a virtio-net header of LEN "
                   "bytes (10 or 12) in front of each frame, as QEMU's netmap backend "
                   "sets it: TSO and checksum offload pass through the switch.")
@click.option("--filter", "filter_both", default=None, metavar="EXPR",
              help="Only frames that match EXPR cross, both ways; the others are dropped and "
                   "counted as filtered. EXPR is tcpdump's filter language (pcap-filter(7)), "
                   "compiled by libpcap.")
@click.option("--filter-in", default=None, metavar="EXPR",
              help="As --filter, for the frames that come in by the first port (IFACE's "
                   "wire) and go to the second; in place of --filter that way.")
@click.option("--filter-out", default=None, metavar="EXPR",
              help="As --filter, for the frames that go out by the first port (from the "
                   "second: IFACE's host stack to its wire); in place of --filter that way.")
@click.option("--pcap", "pcap", default=None, metavar="FILE",
              help="Write every frame that crosses, both ways, to FILE in pcapng (- for "
                   "standard output: pipe it to tshark -r - or tcpdump -r -): an interface "
                   "per direction, nanosecond timestamps. Forwarding never waits for it: "
                   "what the writer cannot keep up with is counted as capture_dropped.")
@click.option("--snaplen", type=click.IntRange(0, 262144), default=None, metavar="BYTES",
              help="--pcap: keep at most BYTES of each frame (as tcpdump -s; default and 0: "
                   "262144).")
@click.option("--pcap-size", type=click.IntRange(min=1), default=None, metavar="MB",
              help="--pcap: start a new file once the current one is larger than MB "
                   "millions of bytes, named FILE1, FILE2, ... (as tcpdump -C).")
@click.option("--pcap-files", type=click.IntRange(min=1), default=None, metavar="N",
              help="--pcap-size: keep a ring of N files, FILE0 to FILE<N-1>, each written "
                   "over in turn (as tcpdump -W).")
@click.option("--pcap-filter", default=None, metavar="EXPR",
              help="--pcap: capture only the frames the tcpdump expression EXPR selects "
                   "(they all cross).")
@click.option("-v", "--verbose", count=True, help="More messages.")
@click.option("-q", "--quiet", count=True, help="Fewer messages (-q: no table or log lines).")
def bridge_cmd(iface: str | None, ifb: str | None, burst_word: int | None,
               ports: tuple[str, ...], burst: int, no_zero_copy: bool, loopback: bool,
               wait_link: float, busy_poll: bool, poll_timeout: int, rx_usecs: int,
               duration: float | None,
               count: int | None, name: str | None, stats_dir: str, live: bool | None,
               interval: float, metrics_listen: tuple[str, int] | None, isolate: bool,
               offloads: str, no_promisc: bool, vnet_hdr: tuple[tuple[str, int], ...],
               filter_both: str | None, filter_in: str | None, filter_out: str | None,
               pcap: str | None, snaplen: int | None, pcap_size: int | None,
               pcap_files: int | None, pcap_filter: str | None, verbose: int,
               quiet: int) -> None:
    """Bridge IFACE's wire and host stack, or the two ports given with -i.

    netmap's bridge command line works as it is: -i A [-i B], or IFA [IFB [BURST]];
    a lone NIC (or the same one twice) is bridged with its host stack, -L loops it.
    Runs until Ctrl-C or SIGTERM (or --duration / --count), then flushes the TX
    rings, prints the totals and exits 0.
    """
    from nmbridge.commands.bridge import LOOP_BUDGET_MS, BridgeOptions, run_bridge
    from nmbridge.commands.bridgeargs import port_pair
    from nmbridge.pcap import STDOUT, pcap_options
    from nmbridge.systemd import bridge_hooks

    _verbosity(verbose, quiet)
    capture = pcap_options(pcap, snaplen, pcap_size, pcap_files, pcap_filter)
    if capture is not None and capture.path == STDOUT:
        if live:
            raise UsageError("--live: standard output carries the capture (--pcap -)")
        live = False
    if burst_word is not None:
        ctx = click.get_current_context()
        if ctx.get_parameter_source("burst") is not click.core.ParameterSource.DEFAULT:
            raise UsageError(f"give the burst once: -b/--burst {burst} and BURST {burst_word}")
        burst = burst_word
    chosen = port_pair(tuple(w for w in (iface, ifb) if w is not None), ports, loopback)
    pair, roles = chosen.ports, chosen.roles
    run_bridge(BridgeOptions(
        ports=pair, roles=roles, burst=burst, zero_copy=not no_zero_copy, wait_link=wait_link,
        busy_poll=busy_poll, poll_timeout_ms=poll_timeout, rx_usecs=rx_usecs,
        duration=duration, count=count,
        name=name, stats_dir=stats_dir, live=live, interval=interval,
        metrics_listen=metrics_listen, isolate=isolate, offloads=offloads, vnet_hdr=vnet_hdr,
        filters=(filter_in if filter_in is not None else filter_both,
                 filter_out if filter_out is not None else filter_both),
        filter_options=("--filter-in" if filter_in is not None else "--filter",
                        "--filter-out" if filter_out is not None else "--filter"),
        pcap=capture,
        loopback=chosen.loopback, promisc=not no_promisc,
        **bridge_hooks(loop_budget_s=LOOP_BUDGET_MS / 1000),  # {} unless $NOTIFY_SOCKET is set
    ))


def _vnet_hdr(values: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """PORT=LEN, each: the port name may hold '=' itself (@conf:rings=2), LEN is last."""
    from nmbridge.portspec import VNET_HDR_LENS

    out = []
    for value in values:
        port, equals, length = value.rpartition("=")
        if not equals or not port:
            raise click.BadParameter(f"'{value}' is not PORT=LEN (vale0:a=12)")
        if length not in [str(n) for n in VNET_HDR_LENS]:
            raise click.BadParameter(
                f"'{value}': LEN must be 10 (struct virtio_net_hdr) or 12 (with num_buffers)"
            )
        out.append((port, int(length)))
    return tuple(out)


def _listen(value: str | None) -> tuple[str, int] | None:
    from nmbridge.commands.stats import parse_listen

    if value is None:
        return None
    try:
        return parse_listen(value)
    except UsageError as exc:
        raise click.BadParameter(exc.message.split(": ", 1)[-1]) from None


@cli.command("stats", context_settings=CONTEXT)
@click.argument("name", required=False, metavar="[NAME]", shell_complete=completion.instances)
@click.option("--stats-dir", default=DEFAULT_STATS_DIR, show_default=True, envvar=STATS_DIR_ENV,
              metavar="DIR", help=f"Where stats files live (env {STATS_DIR_ENV}).")
@click.option("-w", "--watch", is_flag=True, help="Redraw every interval, with rates, "
              "until Ctrl-C.")
@click.option("--interval", type=Seconds(min=0.1), default=1.0, show_default=True,
              metavar="SECONDS", help="Refresh interval of --watch.")
@click.option("--json", "as_json", is_flag=True, help="One JSON snapshot (docs/stats-json.md).")
@click.option("--prometheus", is_flag=True,
              help="Prometheus text format (for node_exporter's textfile collector).")
def stats_cmd(name: str | None, stats_dir: str, watch: bool, interval: float, as_json: bool,
              prometheus: bool) -> None:
    """Show the counters of running instances: a row each, or NAME's rings.

    Rates are between two of the bridge's publishes (two reads 0.3 s apart); "-" where
    none can be told. A stale instance (its process died) is shown as stale. Exit status 8 when
    there is no instance to show, 9 when a stats file cannot be read.
    """
    from nmbridge.commands.stats import output_format, show

    show(stats_dir, name, output_format(as_json=as_json, prometheus=prometheus), watch=watch,
         interval=interval)


@cli.command("check", context_settings=CONTEXT)
@click.argument("iface", metavar="IFACE", shell_complete=completion.interfaces)
@click.option("--fix", is_flag=True, help="Turn the NIC offloads off (all of them).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def check_cmd(iface: str, fix: bool, as_json: bool) -> None:
    """Tell whether IFACE is ready for netmap: the module and its API, link, MTU
    against the buffer size, rings, offloads. Exit 0 if ready, 10 if not."""
    import json

    from nmbridge.commands.check import check_interface, raise_unless_ready

    report = check_interface(iface, fix=fix)
    if as_json:
        terminal.print_out(json.dumps(report.as_dict()))
    else:
        for line in report.lines():
            terminal.print_out(line)
    raise_unless_ready(report)


@cli.command("explain", context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True, metavar="PORT...")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per name.")
def explain_cmd(names: tuple[str, ...], as_json: bool) -> None:
    """Show what nmbridge makes of port names, without opening anything."""
    import json

    from nmbridge.portspec import describe, describe_lines, parse_port

    specs = [parse_port(n) for n in names]
    for i, spec in enumerate(specs):
        if as_json:
            terminal.print_out(json.dumps(describe(spec), sort_keys=False))
        else:
            if i:
                terminal.print_out("")
            for line in describe_lines(spec):
                terminal.print_out(line)


@cli.command("demo", context_settings=CONTEXT)
@click.option("--duration", type=Seconds(min=1), default=10.0, show_default=True,
              metavar="SECONDS", help="How long traffic runs through the bridge.")
@click.option("--rate", type=click.IntRange(1, 20000), default=1000, show_default=True,
              metavar="FPS", help="UDP datagrams per second, each way.")
@click.option("--live/--no-live", default=None,
              help="A live table (default on a terminal) or a log line per second.")
@click.option("-q", "--quiet", count=True, help="Only the summary.")
def demo_cmd(duration: float, rate: int, live: bool | None, quiet: int) -> None:
    """Bridge a veth and a TAP in throw-away network namespaces and send real
    traffic through it (ping and UDP, then TCP with Linux's default offloads,
    both ways); print what arrived. Needs root.

    Everything it creates is removed when it ends, also on Ctrl-C. Exit 1 if a
    frame was lost, a ping went unanswered or a TCP stream did not arrive whole.
    """
    from nmbridge.commands.demo import DemoOptions, run_demo

    _verbosity(0, quiet)
    run_demo(DemoOptions(duration=duration, rate=rate, live=live))


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and a documented status for every error."""
    status = run(argv)
    sys.exit(status)


def run(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        status = cli.main(args=args, prog_name="nmbridge", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            click.echo(exc.ctx.get_help(), err=True)
            return USAGE_STATUS
        terminal.error(_click_message(exc))
        return USAGE_STATUS
    except click.exceptions.Abort:
        return INTERRUPTED_STATUS
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        terminal.error(exc.format_message())
        return int(exc.exit_code)
    except NmbridgeError as exc:
        terminal.error(exc.message)
        return exc.exit_status
    except KeyboardInterrupt:
        return INTERRUPTED_STATUS
    except (BrokenPipeError, _StdoutClosed):
        _silence_stdout()
        return 0
    # with standalone_mode=False, click returns an Exit's status instead of raising
    return status if isinstance(status, int) else 0


def _click_message(exc: click.UsageError) -> str:
    cmd = exc.ctx.command_path if exc.ctx else "nmbridge"
    return f"{exc.format_message()} (see '{cmd} --help')"


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


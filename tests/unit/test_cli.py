"""The command line without root: parsing, and every message a user can cause.

Two ways in, as STYLE.md habit 8 says. click's CliRunner (stdout and stderr
apart, catch_exceptions=False: an exception that escapes is a traceback the
user would see, and fails the test) drives `nmbridge.cli.main`, the console
script's own entry point, so that the exit statuses and the one-line messages
are the real ones. Then the installed `nmbridge` command in a subprocess.

Nothing here opens a port: every run fails, by design, before one is opened,
or names a stats directory of the test's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import pytest
from click.testing import CliRunner, Result

from nmbridge import __version__, cli, pcapfilter, terminal
from nmbridge.commands.bridge import compile_filters, filter_note
from nmbridge.errors import EXIT_STATUSES

NMBRIDGE = str(Path(sys.executable).parent / "nmbridge")
USAGE, NO_NETMAP, NO_SUCH_PORT, NOT_RUNNING = 2, 3, 5, 8


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def console_script(args: tuple[str, ...]) -> None:
    """What the installed `nmbridge` runs: cli.main(argv), which exits with the status."""
    cli.main(list(args))


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    # a stats directory of the test's own, never /run/nmbridge; no systemd; and
    # wherever /dev/netmap exists, a kernel port still cannot be opened here
    monkeypatch.setenv(cli.STATS_DIR_ENV, str(tmp_path / "run"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.setattr("nmbridge.engine.ports.NETMAP_DEVICE", str(tmp_path / "no-netmap"))
    terminal.set_verbosity(0)
    yield
    terminal.set_verbosity(0)


def nmbridge(*args: str) -> Result:
    return CliRunner().invoke(console_script, list(args), catch_exceptions=False)


def error_line(res: Result, status: int) -> str:
    """The one line a failure prints: on stderr, nothing on stdout, the documented status."""
    assert res.exit_code == status, (res.exit_code, res.stdout, res.stderr)
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and res.stderr.endswith("\n"), res.stderr
    assert lines[0].startswith("nmbridge: error: ")
    return lines[0].removeprefix("nmbridge: error: ")


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("value", ["0", "-1", "8193", "x", "1.5", "", "1e3"])
def test_bad_burst(value: str) -> None:
    msg = error_line(nmbridge("-i", "packet:v0", "-i", "tap:t0", "--burst", value), USAGE)
    assert msg.startswith("Invalid value for '-b' / '--burst': ")  # netmap bridge's -b too
    assert f"{value!r}" in msg or f" {value} " in msg
    assert msg.endswith("(see 'nmbridge bridge --help')")


@pytest.mark.parametrize("value", ["1", "8192"])
def test_burst_bounds_are_accepted(value: str) -> None:
    # parsed: the run goes on, to the missing interface
    msg = error_line(nmbridge("-i", "packet:nmbnosuch0", "-i", "tap:t0", "--burst", value),
                     NO_SUCH_PORT)
    assert msg == "packet:nmbnosuch0: no interface named 'nmbnosuch0'"


@pytest.mark.parametrize(("option", "value"), [
    ("--duration", "0"), ("--duration", "-1"), ("--duration", "soon"),
    ("--count", "0"), ("--count", "-5"),
    ("--poll-timeout", "0"), ("--poll-timeout", "1001"),
    ("--rx-usecs", "-1"), ("--rx-usecs", "10001"), ("--rx-usecs", "0.5"),
    ("--wait-link", "-1"), ("--interval", "0.01"),
    ("--metrics-listen", "99999"), ("--metrics-listen", "::1:9417"),
])
def test_bad_option_values(option: str, value: str) -> None:
    msg = error_line(nmbridge("nmbnosuch0", option, value), USAGE)
    assert msg.startswith("Invalid value for ") and f"'{option}': " in msg


def test_option_without_its_value() -> None:
    msg = error_line(nmbridge("nmbnosuch0", "--burst"), USAGE)
    assert msg.startswith("Option '--burst' requires an argument")


@pytest.mark.parametrize("args", [["--bogus"], ["eth0", "--bogus"], ["bridge", "--bogus"]])
def test_unknown_option(args: list[str]) -> None:
    msg = error_line(nmbridge(*args), USAGE)
    assert msg.startswith("No such option '--bogus'")
    assert msg.endswith("(see 'nmbridge bridge --help')")


def test_unknown_option_of_a_command() -> None:
    msg = error_line(nmbridge("stats", "--bogus"), USAGE)
    assert msg.startswith("No such option '--bogus'")
    assert msg.endswith("(see 'nmbridge stats --help')")


def test_version() -> None:
    res = nmbridge("--version")
    assert (res.exit_code, res.stdout, res.stderr) == (0, f"nmbridge {__version__}\n", "")


def test_help_lists_every_exit_status() -> None:
    res = nmbridge("--help")
    assert res.exit_code == 0 and res.stderr == ""
    assert res.stdout.startswith("Usage: nmbridge ")
    text = " ".join(res.stdout.split())  # the epilog wraps long lines
    for code, meaning in EXIT_STATUSES.items():
        assert f"{code} {' '.join(meaning.split())}" in text


def test_no_arguments_is_help_on_stderr() -> None:
    res = nmbridge()
    assert res.exit_code == USAGE and res.stdout == ""
    assert res.stderr.startswith("Usage: nmbridge ") and "Traceback" not in res.stderr


# ---------------------------------------------------------------- ports


@pytest.mark.parametrize(("name", "why"), [
    ("netmap:eth0^^", "unexpected '^' after the mode '^'"),
    ("netmap:eth0*3", "unexpected '3' after the mode '*'"),
    ("netmap:eth0/q", "unknown flag 'q' after '/'"),
    ("netmap:eth0@", "nothing after '@'"),
    ("netmap:eth0-", "ends with '-'"),
    ("netmap:", "empty interface name"),
    ("netmap:pipe{", "empty pipe id after '{'"),
    ("vale0:", "empty VALE port name after 'vale0:'"),
    ("packet:", "empty interface name after 'packet:'"),
    ("packet:v0/x", "packet ports take no mode, flag, memory region or option ('/x')"),
    ("tap:", "empty interface name after 'tap:'"),
    ("tap:" + "t" * 16, "is 16 bytes long, Linux allows 15"),
    ("bad:x", "unknown prefix 'bad:'"),
    ("", "the name is empty"),
])
@pytest.mark.parametrize("position", [0, 1])
def test_bad_port_name(name: str, why: str, position: int) -> None:
    ports = ["tap:t0", "tap:t0"]
    ports[position] = name
    msg = error_line(nmbridge("-i", ports[0], "-i", ports[1]), USAGE)
    assert msg.startswith(f"bad port name '{name}': ")
    assert why in msg


@pytest.mark.parametrize(("args", "got"), [
    (["-i", "packet:v0"], "got 1 port"),
    (["-i", "packet:v0", "-i", "tap:t0", "-i", "tap:t1"], "got 3 ports"),
    (["bridge"], "got 0 ports"),
    (["--burst", "8"], "got 0 ports"),
])
def test_one_or_three_ports(args: list[str], got: str) -> None:
    assert error_line(nmbridge(*args), USAGE) == (
        f"give an interface (nmbridge eth0) or exactly two ports (-i A -i B); {got}")


@pytest.mark.parametrize("ports", [["-i", "packet:v0"], ["-i", "packet:v0", "-i", "tap:t0"]])
def test_iface_and_ports(ports: list[str]) -> None:
    assert error_line(nmbridge("eth0", *ports), USAGE) == (
        "give either IFACE or two -i ports, not both")


@pytest.mark.parametrize(("a", "b"), [("netmap:nmbnosuch0", "netmap:nmbnosuch0*"),
                                      ("vale0:a", "vale0:a")])
def test_two_ports_on_the_same_rings(a: str, b: str) -> None:
    assert error_line(nmbridge("-i", a, "-i", b), USAGE) == (
        f"{a} and {b} are the same rings: a bridge between them would send every frame "
        "back where it came from")


@pytest.mark.parametrize(("a", "b"), [("packet:nva", "packet:nva"), ("tap:nvt", "tap:nvt"),
                                      ("packet:nmbtx", "tap:nmbtx"),
                                      ("netmap:nmbnosuch0", "packet:nmbnosuch0"),
                                      ("packet:nmbnosuch0", "netmap:nmbnosuch0^")])
def test_two_ports_on_the_same_interface(a: str, b: str) -> None:
    """One interface twice, or through two kinds of port: a loop, refused before anything
    is opened (it used to say 'busy', held by nmbridge's own pid, or to loop)."""
    iface = a.split(":", 1)[1].rstrip("^")
    assert error_line(nmbridge("-i", a, "-i", b), USAGE) == (
        f"{a} and {b} are the same interface, {iface}: a bridge between them would send "
        "every frame back where it came from")


@pytest.mark.parametrize(("a", "b"), [("netmap:nmbnosuch0", "netmap:nmbnosuch0^"),
                                      ("vale0:nva", "packet:nva"),
                                      ("netmap:nva{1", "packet:nva")])
def test_ports_of_one_name_that_are_not_one_interface(a: str, b: str) -> None:
    from nmbridge.portspec import parse_port, same_interface

    assert not same_interface(parse_port(a, lambda _n: False), parse_port(b, lambda _n: False))


@pytest.mark.parametrize(("port", "why"), [
    ("netmap:nmbnosuch0/r", "a monitor port only receives copies"),
    ("netmap:nmbnosuch0/tz", "a monitor port only receives copies"),
    ("vale0:a/t", "a monitor port only receives copies"),
    ("netmap:nmbnosuch0/R", "/R binds the RX rings only"),
    ("netmap:nmbnosuch0^/T", "/T binds the TX rings only"),
])
def test_one_way_ports_are_refused_before_anything_is_opened(port: str, why: str) -> None:
    # whichever side it is on; without root or /dev/netmap: refused before either is opened
    for ports in (("-i", port, "-i", "tap:t0"), ("-i", "tap:t0", "-i", port)):
        msg = error_line(nmbridge(*ports), USAGE)
        assert msg.startswith(f"{port}: {why}") and msg.endswith("; nmbridge bridges both ways")


@pytest.mark.parametrize("port", ["netmap:eth0/x", "netmap:eth0@conf:rings=2", "vale0:a"])
def test_two_way_flags_are_not_one_way(port: str) -> None:
    from nmbridge.portspec import one_way_reason, parse_port

    assert one_way_reason(parse_port(port)) is None


VALE_PAIR = ("-i", "vale0:a", "-i", "vale0:b")


@pytest.mark.parametrize(("ports", "value", "message"), [
    (("-i", "vale0:a", "-i", "tap:t0"), "tap:t0=12",
     "--vnet-hdr tap:t0=12: tap:t0 is not a VALE port: netmap sets virtio-net headers only "
     "on VALE ports (valeX:PORT)"),
    (("-i", "vale0:a", "-i", "netmap:pa{1"), "netmap:pa{1=10",
     "--vnet-hdr netmap:pa{1=10: netmap:pa{1 is not a VALE port: netmap sets virtio-net "
     "headers only on VALE ports (valeX:PORT)"),
    (("eth0",), "netmap:eth0=12",
     "--vnet-hdr netmap:eth0=12: netmap:eth0 is not a VALE port: netmap sets virtio-net "
     "headers only on VALE ports (valeX:PORT)"),
    (("eth0",), "eth0=12",
     "--vnet-hdr eth0=12: 'eth0' is not a port of this bridge (netmap:eth0 and "
     "netmap:eth0^); name it as given with -i"),
    (VALE_PAIR, "vale0:x=12",
     "--vnet-hdr vale0:x=12: 'vale0:x' is not a port of this bridge (vale0:a and vale0:b); "
     "name it as given with -i"),
])
def test_vnet_hdr_on_a_port_that_cannot_take_it(ports: tuple[str, ...], value: str,
                                                message: str) -> None:
    # refused before the netmap device is looked for (there is none here: status 3)
    assert error_line(nmbridge(*ports, "--vnet-hdr", value), USAGE) == message


@pytest.mark.parametrize(("value", "why"), [
    ("vale0:a=0", "LEN must be 10 (struct virtio_net_hdr) or 12 (with num_buffers)"),
    ("vale0:a=11", "LEN must be 10"),
    ("vale0:a=012", "LEN must be 10"),
    ("vale0:a", "'vale0:a' is not PORT=LEN (vale0:a=12)"),
    ("=12", "'=12' is not PORT=LEN"),
])
def test_bad_vnet_hdr_values(value: str, why: str) -> None:
    msg = error_line(nmbridge(*VALE_PAIR, "--vnet-hdr", value), USAGE)
    assert msg.startswith("Invalid value for '--vnet-hdr': ") and why in msg


def test_vnet_hdr_given_twice_for_one_port() -> None:
    msg = error_line(nmbridge(*VALE_PAIR, "--vnet-hdr", "vale0:a=12", "--vnet-hdr",
                              "vale0:a=10"), USAGE)
    assert msg == "--vnet-hdr: vale0:a is given twice"


def test_vnet_hdr_port_names_may_hold_equals_signs() -> None:
    from nmbridge.commands.bridge import with_vnet_hdr
    from nmbridge.portspec import parse_port

    specs = [parse_port("vale0:a@conf:slots=512"), parse_port("vale0:b")]
    asked = cli._vnet_hdr(("vale0:a@conf:slots=512=12", "vale0:b=10"))
    assert asked == (("vale0:a@conf:slots=512", 12), ("vale0:b", 10))
    assert [s.vnet_hdr for s in with_vnet_hdr(specs, asked)] == [12, 10]
    assert [s.vnet_hdr for s in specs] == [0, 0]  # the parsed names are left as they were


def test_valid_vnet_hdr_gets_as_far_as_the_netmap_device() -> None:
    msg = error_line(nmbridge(*VALE_PAIR, "--vnet-hdr", "vale0:b=10"), NO_NETMAP)
    assert "/dev/netmap does not exist" in msg


@pytest.mark.parametrize("iface", ["eth0^", "netmap:eth0^", "eth0*", "eth0/x", "vale0:a",
                                   "netmap:", "pipe{1"])
def test_iface_must_be_an_interface_name(iface: str) -> None:
    assert error_line(nmbridge(iface), USAGE) == (
        f"'{iface}' is not an interface name; use -i for netmap port names")


def test_nonexistent_interface() -> None:
    assert error_line(nmbridge("nmbnosuch0"), NO_SUCH_PORT) == (
        "netmap:nmbnosuch0: no interface named 'nmbnosuch0'")


@pytest.mark.parametrize("ports", [("packet:nmbnosuch0", "tap:t0"),
                                   ("tap:t0", "packet:nmbnosuch0")])
def test_nonexistent_interface_of_a_packet_port(ports: tuple[str, str], tmp_path: Path) -> None:
    assert error_line(nmbridge("-i", ports[0], "-i", ports[1]), NO_SUCH_PORT) == (
        "packet:nmbnosuch0: no interface named 'nmbnosuch0'")
    assert list((tmp_path / "run").glob("*")) == []  # no stats file was made (nor the dir)


def test_no_netmap_module() -> None:
    # lo exists everywhere; the netmap device is made absent by the fixture
    msg = error_line(nmbridge("lo"), NO_NETMAP)
    assert msg.startswith("netmap is not available: /dev/netmap does not exist; load the module")
    assert "nmbridge -i packet:IFACE -i tap:NAME" in msg


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "x" * 65, ""])
def test_bad_instance_name(name: str) -> None:
    msg = error_line(nmbridge("-i", "packet:nmbnosuch0", "-i", "tap:t0", "--name", name),
                     USAGE)
    assert msg.startswith(f"bad instance name '{name}': ")


def test_stats_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    msg = error_line(nmbridge("lo", "--stats-dir", str(blocker)), USAGE)
    assert msg.startswith(f"cannot create the stats directory {blocker}: ")


# ---------------------------------------------------------------- explain


def test_explain_text() -> None:
    res = nmbridge("explain", "netmap:eth0^1/x")
    assert (res.exit_code, res.stderr) == (0, "")
    fields = dict(line.split(": ", 1) for line in res.stdout.splitlines())
    assert fields["name"] == "netmap:eth0^1/x"
    assert fields["kind"] == "host-ring"
    assert fields["interface"] == "eth0"
    assert fields["nr_mode"] == "NR_REG_ONE_SW"
    assert fields["nr_ringid"] == "1"
    assert fields["nr_flags"] == "NR_EXCLUSIVE"
    assert fields["emulated"] == "no"


def test_explain_several_names_one_block_each() -> None:
    res = nmbridge("explain", "packet:veth0", "tap:nmb0", "vale0:a")
    assert (res.exit_code, res.stderr) == (0, "")
    blocks = res.stdout.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "name: packet:veth0", "name: tap:nmb0", "name: vale0:a"]


@pytest.mark.parametrize(("name", "expected"), [
    ("vale0:a", {"kind": "vale", "interface": "a", "emulated": False, "nr_name": "vale0:a",
                 "nr_mode": "NR_REG_ALL_NIC", "nr_ringid": 0, "nr_flags": []}),
    ("eth0", {"name": "eth0", "kind": "nic", "nr_name": "eth0", "nr_mode": "NR_REG_ALL_NIC"}),
    ("netmap:eth0*", {"kind": "nic+host", "nr_mode": "NR_REG_NIC_SW"}),
    ("netmap:pipe{1", {"kind": "pipe-master", "nr_name": "pipe{1"}),
    ("netmap:pipe}1", {"kind": "pipe-slave", "nr_name": "pipe}1"}),
    ("packet:veth0", {"kind": "packet", "interface": "veth0", "emulated": True}),
    ("tap:nmb0", {"kind": "tap", "interface": "nmb0", "emulated": True}),
])
def test_explain_json(name: str, expected: dict[str, Any]) -> None:
    res = nmbridge("explain", "--json", name)
    assert (res.exit_code, res.stderr) == (0, "")
    (line,) = res.stdout.splitlines()
    doc = json.loads(line)
    assert doc["name"] == name
    assert {k: doc[k] for k in expected} == expected


def test_explain_json_one_object_per_name() -> None:
    res = nmbridge("explain", "--json", "vale0:a", "packet:veth0")
    assert res.exit_code == 0
    assert [json.loads(line)["name"] for line in res.stdout.splitlines()] == [
        "vale0:a", "packet:veth0"]


def test_explain_a_bad_name_among_good_ones_prints_nothing_else() -> None:
    msg = error_line(nmbridge("explain", "vale0:a", "netmap:eth0^^", "tap:t0"), USAGE)
    assert msg == "bad port name 'netmap:eth0^^': unexpected '^' after the mode '^'"


def test_explain_needs_a_name() -> None:
    msg = error_line(nmbridge("explain"), USAGE)
    assert msg == "Missing argument 'PORT...'. (see 'nmbridge explain --help')"


# ---------------------------------------------------------------- stats


def test_stats_nonexistent_dir(tmp_path: Path) -> None:
    where = tmp_path / "none"
    assert error_line(nmbridge("stats", "--stats-dir", str(where)), NOT_RUNNING) == (
        f"no nmbridge instance is running (no stats files in {where}; --stats-dir or "
        "NMBRIDGE_STATS_DIR names another directory)")


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--prometheus"]])
def test_stats_empty_dir(tmp_path: Path, fmt: list[str]) -> None:
    where = tmp_path / "empty"
    where.mkdir()
    msg = error_line(nmbridge("stats", *fmt, "--stats-dir", str(where)), NOT_RUNNING)
    assert msg.startswith(f"no nmbridge instance is running (no stats files in {where}")


def test_stats_dir_from_the_environment(tmp_path: Path) -> None:
    msg = error_line(nmbridge("stats"), NOT_RUNNING)
    assert f"no stats files in {tmp_path / 'run'};" in msg


def test_stats_unknown_name(tmp_path: Path) -> None:
    where = tmp_path / "empty"
    where.mkdir()
    assert error_line(nmbridge("stats", "--json", "nope", "--stats-dir", str(where)),
                      NOT_RUNNING) == (
        f"no instance named 'nope' is running: no stats file in {where}")


def test_stats_in_a_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert error_line(nmbridge("stats", "--stats-dir", str(blocker)), NOT_RUNNING) == (
        f"cannot read {blocker}: Not a directory")


@pytest.mark.parametrize(("args", "text"), [
    (["--json", "--prometheus"], "give --json or --prometheus, not both"),
    (["--watch", "--json"], "--watch shows the table; it does not combine with --json or "
                            "--prometheus"),
    (["--interval", "0"], "Invalid value for '--interval'"),
])
def test_stats_bad_combinations(args: list[str], text: str) -> None:
    assert text in error_line(nmbridge("stats", *args), USAGE)


def test_check_needs_an_interface() -> None:
    assert error_line(nmbridge("check"), USAGE) == (
        "Missing argument 'IFACE'. (see 'nmbridge check --help')")


# ---------------------------------------------------------------- the installed command


def installed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NMBRIDGE, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def one_error_line(res: subprocess.CompletedProcess[str], status: int) -> str:
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith("nmbridge: error: ")
    return line


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    import os

    out = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    out[cli.STATS_DIR_ENV] = str(tmp_path / "run")
    out["NMBRIDGE_NETMAP_DEVICE"] = str(tmp_path / "no-netmap")
    return out


def test_installed_version() -> None:
    res = installed("--version")
    assert (res.returncode, res.stdout, res.stderr) == (0, f"nmbridge {__version__}\n", "")


def test_installed_python_m() -> None:
    res = subprocess.run([sys.executable, "-m", "nmbridge", "--version"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert (res.returncode, res.stdout) == (0, f"nmbridge {__version__}\n")


@pytest.mark.parametrize(("args", "status", "text"), [
    (["-i", "packet:", "-i", "tap:t0"], USAGE, "bad port name 'packet:'"),
    (["--burst", "0", "eth0"], USAGE, "Invalid value for '-b' / '--burst'"),
    (["-i", "packet:v0"], USAGE, "got 1 port"),
    (["eth0", "-i", "tap:t0"], USAGE, "not both"),
    (["--bogus"], USAGE, "No such option '--bogus'"),
    (["nmbnosuch0"], NO_SUCH_PORT, "no interface named 'nmbnosuch0'"),
    (["lo"], NO_NETMAP, "netmap is not available"),
    (["stats"], NOT_RUNNING, "no nmbridge instance is running"),
    (["stats", "nope"], NOT_RUNNING, "no instance named 'nope' is running"),
    (["explain", "bad:x"], USAGE, "unknown prefix 'bad:'"),
])
def test_installed_errors(env: dict[str, str], args: Sequence[str], status: int,
                          text: str) -> None:
    assert text in one_error_line(installed(*args, env=env), status)


def test_installed_explain_json(env: dict[str, str]) -> None:
    res = installed("explain", "--json", "vale0:a", "tap:nmb0", env=env)
    assert (res.returncode, res.stderr) == (0, "")
    assert [json.loads(line)["kind"] for line in res.stdout.splitlines()] == ["vale", "tap"]


def test_installed_no_arguments(env: dict[str, str]) -> None:
    res = installed(env=env)
    assert (res.returncode, res.stdout) == (USAGE, "")
    assert res.stderr.startswith("Usage: nmbridge ") and "Exit status:" in res.stderr


def test_installed_output_into_a_closed_pipe(env: dict[str, str]) -> None:
    """`nmbridge explain ... | head -0`: no traceback, no complaint, exit 0."""
    proc = subprocess.Popen([NMBRIDGE, "explain", *(f"vale0:p{i}" for i in range(2000))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""


def test_rx_usecs_reaches_the_bridge_with_the_one_default_and_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from nmbridge.commands import bridge as runner
    from nmbridge.tunables import RX_USECS

    seen: list[runner.BridgeOptions] = []
    monkeypatch.setattr(runner, "run_bridge", seen.append)
    base = ["bridge", "-i", "tap:x", "-i", "tap:y", "--stats-dir", str(tmp_path)]
    for extra in ([], ["--rx-usecs", "0"], ["--rx-usecs", str(RX_USECS.high)]):
        result = CliRunner().invoke(cli.cli, [*base, *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert [o.rx_usecs for o in seen] == [RX_USECS.default, 0, RX_USECS.high]
    result = CliRunner().invoke(cli.cli, [*base, "--rx-usecs", str(RX_USECS.high + 1)])
    assert result.exit_code == USAGE


# ---------------------------------------------------------------- filters


@pytest.fixture
def libpcap(unavailable: Callable[[str], NoReturn]) -> None:
    """libpcap is there (tools/setup.sh installs it): missing, the test is skipped, or
    under CI=true fails."""
    if not pcapfilter.available():
        unavailable("needs libpcap (Debian package libpcap0.8)")


needs_libpcap = pytest.mark.usefixtures("libpcap")


@needs_libpcap
@pytest.mark.parametrize("option", ["--filter", "--filter-in", "--filter-out"])
def test_a_bad_filter_is_a_usage_error_with_libpcaps_message(option: str) -> None:
    assert error_line(nmbridge(*VALE_PAIR, option, "udp prot 9"), USAGE) == (
        f"{option} 'udp prot 9': can't parse filter expression: syntax error")
    msg = error_line(nmbridge("eth0", option, "ip broadcast"), USAGE)
    assert msg == f"{option} 'ip broadcast': netmask not known, so 'ip broadcast' not supported"


@needs_libpcap
def test_a_bad_filter_names_the_option_it_came_with() -> None:
    msg = error_line(nmbridge(*VALE_PAIR, "--filter", "udp", "--filter-out", "nope"), USAGE)
    assert msg.startswith("--filter-out 'nope': ")
    msg = error_line(nmbridge(*VALE_PAIR, "--filter", "nope", "--filter-out", "udp"), USAGE)
    assert msg.startswith("--filter 'nope': ")


@needs_libpcap
def test_valid_filters_get_as_far_as_the_netmap_device() -> None:
    msg = error_line(nmbridge(*VALE_PAIR, "--filter", "udp port 9", "--filter-out", "arp"),
                     NO_NETMAP)
    assert "/dev/netmap does not exist" in msg


def test_without_libpcap_a_filter_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcapfilter, "LIBRARY_NAMES", ("libpcap-not-here.so.0.8",))
    monkeypatch.setattr(pcapfilter.ctypes.util, "find_library", lambda _name: None)
    pcapfilter._libpcap.cache_clear()
    try:
        assert error_line(nmbridge(*VALE_PAIR, "--filter", "udp"), USAGE) == (
            "libpcap is not installed (Debian package libpcap0.8): cannot load "
            "libpcap-not-here.so.0.8")
        # and nothing else needs it
        assert "/dev/netmap" in error_line(nmbridge(*VALE_PAIR), NO_NETMAP)
    finally:
        pcapfilter._libpcap.cache_clear()


@needs_libpcap
def test_the_filters_are_said_once_per_direction() -> None:
    labels = ("wire->host", "host->wire")
    udp = pcapfilter.compile_filter("udp")
    arp = pcapfilter.compile_filter("arp")
    tail = ": frames that do not match are dropped, counted as filtered"
    assert filter_note(labels, [None, None]) is None
    assert filter_note(labels, compile_filters(("udp", "udp"))) == f"filter 'udp' both ways{tail}"
    assert filter_note(labels, [udp, arp]) == \
        f"filter wire->host 'udp', host->wire 'arp'{tail}"
    assert filter_note(labels, [None, arp]) == f"filter host->wire 'arp'{tail}"
    programs = compile_filters(("udp", "udp"))
    assert programs[0] is programs[1]  # compiled once


# ---------------------------------------------------------------- --pcap


@pytest.mark.parametrize(("args", "says"), [
    (["--snaplen", "100"], "--snaplen applies to a capture: give --pcap FILE too"),
    (["--pcap-size", "1"], "--pcap-size applies to a capture: give --pcap FILE too"),
    (["--pcap-filter", "udp"], "--pcap-filter applies to a capture: give --pcap FILE too"),
    (["--pcap", "c.pcapng", "--pcap-files", "3"], "--pcap-files N needs --pcap-size MB"),
    (["--pcap", "-", "--pcap-size", "1"], "--pcap-size: standard output cannot be rotated"),
    (["--pcap", "-", "--live"], "--live: standard output carries the capture (--pcap -)"),
    (["--pcap", ""], "--pcap: give a file name, or - for standard output"),
])
def test_capture_options_that_cannot_go_together(args: list[str], says: str) -> None:
    assert error_line(nmbridge("-i", "packet:v0", "-i", "tap:t0", *args), USAGE).startswith(
        says)


@pytest.mark.parametrize(("option", "value"), [
    ("--snaplen", "-1"), ("--snaplen", "262145"), ("--pcap-size", "0"), ("--pcap-files", "0"),
])
def test_bad_capture_values(option: str, value: str) -> None:
    msg = error_line(nmbridge("nmbnosuch0", "--pcap", "x", option, value), USAGE)
    assert msg.startswith(f"Invalid value for '{option}': ")


def test_a_capture_file_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    where = tmp_path / "no" / "such" / "dir" / "c.pcapng"
    # tap: ports: no interface to look for first; the file fails before they are made
    msg = error_line(nmbridge("-i", "tap:t0", "-i", "tap:t1", "--pcap", str(where)), USAGE)
    assert msg == f"--pcap {where}: cannot write {where}: No such file or directory"


def test_a_ring_of_capture_files_starts_with_file0(tmp_path: Path) -> None:
    where = tmp_path / "no" / "c"
    msg = error_line(nmbridge("-i", "tap:t0", "-i", "tap:t1", "--pcap", str(where),
                              "--pcap-size", "1", "--pcap-files", "10"), USAGE)
    assert msg.endswith(f"cannot write {where}0: No such file or directory")


@needs_libpcap
def test_a_bad_capture_filter_is_a_usage_error_before_the_file_is_made(tmp_path: Path) -> None:
    where = tmp_path / "c.pcapng"
    msg = error_line(nmbridge("-i", "tap:t0", "-i", "tap:t1", "--pcap", str(where),
                              "--pcap-filter", "udp prot 9"), USAGE)
    assert msg == "--pcap-filter 'udp prot 9': can't parse filter expression: syntax error"
    assert not where.exists()


# ---------------------------------------------------------------- check


def _report(ready: bool) -> Any:
    from nmbridge.commands.check import CheckReport

    report = CheckReport("nmbfake0")
    report.add("link", "up", True)
    report.add("offloads", "all off" if ready else "tso on", ready,
               "" if ready else "nmbridge check --fix nmbfake0")
    return report


def test_check_says_not_ready_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The findings on stdout, the verdict once: the error line on stderr, not also a
    'not ready' line on stdout."""
    monkeypatch.setattr("nmbridge.commands.check.check_interface",
                        lambda iface, fix=False: _report(False))
    res = nmbridge("check", "nmbfake0")
    assert res.exit_code == 10, res.stderr
    assert res.stdout.splitlines() == [
        "ok  link: up", "NO  offloads: tso on  (nmbridge check --fix nmbfake0)"]
    assert res.stderr == "nmbridge: error: nmbfake0 is not ready for netmap\n"
    assert "not ready" not in res.stdout


def test_check_ready_ends_with_the_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nmbridge.commands.check.check_interface",
                        lambda iface, fix=False: _report(True))
    res = nmbridge("check", "nmbfake0")
    assert (res.exit_code, res.stderr) == (0, "")
    assert res.stdout.splitlines()[-1] == "nmbfake0: ready for netmap"


def test_installed_check_says_not_ready_once(env: dict[str, str]) -> None:
    # lo exists everywhere; the netmap device named by the environment does not
    res = installed("check", "lo", env=env)
    assert res.returncode == 10, (res.stdout, res.stderr)
    assert res.stderr == "nmbridge: error: lo is not ready for netmap\n"
    assert "NO  netmap:" in res.stdout and "not ready" not in res.stdout


# ---------------------------------------------------------------- privileges


def test_without_privileges_the_first_word_is_what_is_needed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not the stats directory (unwritable here too), which only led to the real error."""
    monkeypatch.setattr("nmbridge.privileges.own_caps", lambda: 0)
    msg = error_line(nmbridge("-i", "packet:lo", "-i", "tap:nmbt0", "--stats-dir",
                              str(tmp_path / "file" / "x")), 4)
    assert msg == ("permission denied: packet:lo needs CAP_NET_RAW, tap:nmbt0 needs "
                   "CAP_NET_ADMIN (run as root, or with CAP_NET_ADMIN and CAP_NET_RAW)")
    assert EXIT_STATUSES[4] == "permission denied (needs root, or CAP_NET_ADMIN and CAP_NET_RAW)"


def test_with_the_capabilities_the_run_goes_on(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    caps = 1 << 12 | 1 << 13  # CAP_NET_ADMIN, CAP_NET_RAW and nothing else
    monkeypatch.setattr("nmbridge.privileges.own_caps", lambda: caps)
    blocker = tmp_path / "file"
    blocker.write_text("")
    msg = error_line(nmbridge("-i", "packet:lo", "-i", "tap:nmbt0", "--stats-dir",
                              str(blocker)), USAGE)
    assert msg.startswith(f"cannot create the stats directory {blocker}")


def test_a_missing_interface_is_said_before_privileges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nmbridge.privileges.own_caps", lambda: 0)
    msg = error_line(nmbridge("-i", "packet:nmbnosuch0", "-i", "tap:t0"), NO_SUCH_PORT)
    assert msg == "packet:nmbnosuch0: no interface named 'nmbnosuch0'"


def unprivileged(unavailable: Callable[[str], NoReturn]) -> list[str]:
    """A prefix that runs a command without CAP_NET_ADMIN and CAP_NET_RAW: as root,
    setpriv drops them from the bounding set; anyone else lacks them already."""
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        unavailable("setpriv (util-linux) is missing")  # under CI=true: a failure
    return [setpriv, "--bounding-set=-net_admin,-net_raw", "--inh-caps=-all"]


def test_installed_without_privileges(env: dict[str, str], tmp_path: Path,
                                      unavailable: Callable[[str], NoReturn]) -> None:
    res = subprocess.run([*unprivileged(unavailable), NMBRIDGE, "-i", "packet:lo", "-i",
                          "tap:nmbt0", "--stats-dir", str(tmp_path / "file" / "x")],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    line = one_error_line(res, 4)
    assert line.startswith("nmbridge: error: permission denied: packet:lo needs CAP_NET_RAW")
    assert "stats" not in line


def test_a_sigterm_in_the_hand_over_to_the_loop_is_kept_not_lost() -> None:
    """While starting, SIGTERM unwinds; once the start is done and before the loop's own
    handlers are in, it is kept for them (it was swallowed there, and the bridge ran on)."""
    import signal as sig

    from nmbridge.commands import bridge as bridge_cmd

    startup = bridge_cmd._Startup()
    with pytest.raises(bridge_cmd._StoppedEarly):
        startup.handler(sig.SIGTERM, None)
    assert startup.pending is None
    startup.handler(sig.SIGTERM, None)  # starting is over: kept
    assert startup.pending == sig.SIGTERM

"""netmap's `bridge` command line, run unchanged by nmbridge: every line of
tests/data/netmap-bridge-examples.sh (bridge's documented example and usage forms)
through nmbridge's CLI (cli.main, as the console script runs it), with the bridge
itself replaced by a recorder of what it was asked."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nmbridge import cli, terminal
from nmbridge.commands import bridge as runner

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "netmap-bridge-examples.sh"


def script_lines() -> list[list[str]]:
    """The script's commands, $BRIDGE's arguments each."""
    out = []
    for line in SCRIPT.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "$BRIDGE":
            out.append(words[1:])
    return out


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[runner.BridgeOptions]]:
    seen: list[runner.BridgeOptions] = []
    monkeypatch.setattr(runner, "run_bridge", seen.append)
    monkeypatch.setenv(cli.STATS_DIR_ENV, str(tmp_path / "run"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    yield seen
    terminal.set_verbosity(0)


def nmbridge(args: list[str]) -> Result:
    @cli.click.command(context_settings={"ignore_unknown_options": True,
                                         "help_option_names": []})
    @cli.click.argument("args", nargs=-1, type=cli.click.UNPROCESSED)
    def console_script(args: tuple[str, ...]) -> None:
        cli.main(list(args))

    return CliRunner().invoke(console_script, args, catch_exceptions=False)


# (ports, roles, burst, wait_link, zero_copy, loopback, verbosity) for each script line
EXPECTED = [
    (("netmap:eth3", "netmap:eth1"), None, 1024, 10.0, True, False, 0),
    (("netmap:eth0", "netmap:eth0^"), ("wire", "host"), 1024, 0.0, True, False, 0),
    (("netmap:eth0", "netmap:eth0^"), ("wire", "host"), 1024, 0.0, True, False, 0),
    (("netmap:eth0", "netmap:eth0^"), ("wire", "host"), 1024, 0.0, True, False, 0),
    (("netmap:eth0", "netmap:eth1"), None, 1024, 0.0, True, False, 0),
    (("netmap:eth0", "netmap:eth1"), None, 512, 0.0, True, False, 0),
    (("netmap:eth0", "netmap:eth1"), None, 512, 5.0, False, False, 1),
    (("vale0:a", "vale0:b"), None, 64, 0.0, True, False, 0),
    (("netmap:eth0", "netmap:eth0"), None, 1024, 0.0, True, True, 0),
    (("netmap:eth0", "netmap:eth0"), None, 1024, 0.0, True, True, 0),
    (("netmap:eth0", "netmap:eth0"), None, 256, 2.0, True, True, 1),
]


def test_the_script_is_the_documented_forms() -> None:
    lines = script_lines()
    assert ["-w", "10", "-i", "netmap:eth3", "-i", "netmap:eth1"] in lines  # bridge's example
    assert len(lines) == len(EXPECTED)


@pytest.mark.parametrize(("args", "want"), list(zip(script_lines(), EXPECTED)),
                         ids=[" ".join(a) for a in script_lines()])
def test_a_netmap_bridge_command_line_runs_unchanged(
        args: list[str], want: tuple[object, ...], asked: list[runner.BridgeOptions]) -> None:
    res = nmbridge(args)
    assert (res.exit_code, res.stderr) == (0, ""), res.stderr
    (opts,) = asked
    got = (opts.ports, opts.roles, opts.burst, opts.wait_link, opts.zero_copy, opts.loopback,
           terminal.verbosity())
    assert got == want


@pytest.mark.parametrize(("args", "message"), [
    (["-b", "512", "netmap:eth0", "netmap:eth1", "256"],
     "give the burst once: -b/--burst 512 and BURST 256"),
    (["-L", "-i", "netmap:eth0", "-i", "netmap:eth1"],
     "-L loops one port back on itself; got two, netmap:eth0 and netmap:eth1"),
    (["-i", "netmap:eth0", "netmap:eth1"], "give either IFACE or two -i ports, not both"),
    (["netmap:eth0", "netmap:eth1", "9000"], "Invalid value for '[BURST]'"),
    (["-i", "vale0:a"],
     "give an interface (nmbridge eth0) or exactly two ports (-i A -i B); got 1 port"),
    (["vale0:a"], "'vale0:a' is not an interface name; use -i for netmap port names"),
])
def test_what_cannot_be_bridged_is_one_line(args: list[str], message: str,
                                            asked: list[runner.BridgeOptions]) -> None:
    res = nmbridge(args)
    assert res.exit_code == 2 and res.stdout == "" and asked == []
    assert res.stderr.startswith(f"nmbridge: error: {message}"), res.stderr
    assert res.stderr.count("\n") == 1


def test_loopback_of_an_emulated_port_says_what_is_missing(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.STATS_DIR_ENV, str(tmp_path / "run"))
    res = nmbridge(["-L", "-i", "packet:lo"])
    assert res.exit_code == 2, res.stderr
    assert res.stderr == ("nmbridge: error: -L packet:lo: loopback needs a netmap port "
                          "(netmap:IFACE, vale, pipe); an emulated port's two sockets would "
                          "each take every frame and send it back twice\n")


def test_top_level_help_shows_the_bridge_options() -> None:
    res = CliRunner().invoke(cli.cli, ["--help"], catch_exceptions=False)
    assert res.exit_code == 0
    text = res.output
    assert "Bridge options (nmbridge [bridge] ...):" in text
    for opt in ("-i, --port PORT", "-b, --burst", "-w, --wait-link SECONDS",
                "-c, --no-zero-copy", "-L, --loopback", "-v, --verbose"):
        assert opt in text, opt
    assert text.index("Bridge options") < text.index("Exit status:")


@pytest.mark.parametrize("args", [
    ["-w", "10", "-i", "netmap:nmbnosuch3", "-i", "netmap:nmbnosuch1"],
    ["-v", "-c", "netmap:nmbnosuch3", "netmap:nmbnosuch1", "512"],
    ["-L", "-i", "netmap:nmbnosuch3"],
    ["-i", "netmap:nmbnosuch3"],
])
def test_the_installed_command_takes_bridges_line(args: list[str], tmp_path: Path) -> None:
    """Parsed, and on to the ports: none of these interfaces exists (exit status 5)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env[cli.STATS_DIR_ENV] = str(tmp_path / "run")
    res = subprocess.run([str(Path(sys.executable).parent / "nmbridge"), *args],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert res.returncode == 5, res.stderr
    assert res.stderr == ("nmbridge: error: netmap:nmbnosuch3: no interface named "
                          "'nmbnosuch3'\n")

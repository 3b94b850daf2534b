"""promisc.py: which interfaces a bridge makes promiscuous (pure), and --no-promisc."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nmbridge import cli
from nmbridge.portspec import parse_port
from nmbridge.promisc import needs_promisc


@pytest.mark.parametrize(("a", "b", "ifnames"), [
    ("netmap:eth0", "netmap:eth0^", []),  # the wire and its own host stack
    ("netmap:eth0^", "netmap:eth0", []),
    ("netmap:eth0", "netmap:eth1", ["eth0", "eth1"]),
    ("netmap:eth0-1", "vale0:a", ["eth0"]),  # one ring of the NIC: frames for others too
    ("netmap:eth0*", "vale0:a", ["eth0"]),
    ("netmap:eth0", "netmap:eth1^", ["eth0"]),  # another NIC's host stack: not its own
    ("packet:veth0", "tap:nmb0", ["veth0"]),  # a TAP is a host stack, never promiscuous
    ("packet:veth0", "packet:veth1", ["veth0", "veth1"]),
    ("vale0:a", "netmap:pipe{1", []),
    ("netmap:eth0", "netmap:eth0", ["eth0"]),  # -L: the wire back to the wire
])
def test_which_nics_take_frames_for_other_stations(a: str, b: str, ifnames: list[str]) -> None:
    assert needs_promisc([parse_port(a), parse_port(b)]) == ifnames


def test_no_promisc_reaches_the_bridge(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nmbridge.commands import bridge as runner

    seen: list[runner.BridgeOptions] = []
    monkeypatch.setattr(runner, "run_bridge", seen.append)
    base = ["-i", "packet:a", "-i", "tap:b", "--stats-dir", str(tmp_path)]
    for extra in ([], ["--no-promisc"]):
        res = CliRunner().invoke(cli.cli, ["bridge", *base, *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    assert [o.promisc for o in seen] == [True, False]


def test_nothing_is_said_before_announce(capsys: pytest.CaptureFixture[str]) -> None:
    """A bridge that fails to open its ports says only its error line: what promiscuous
    mode did waits for announce(), which the bridge calls once the ports are open."""
    from nmbridge.promisc import Promiscuous

    with Promiscuous(["nmbnosuch0"]) as held:
        assert capsys.readouterr().err == ""
        held.announce()
    err = capsys.readouterr().err
    assert err.startswith("nmbridge: warning: nmbnosuch0: cannot make it promiscuous (")
    assert err.count("\n") == 1 and "(None)" not in err

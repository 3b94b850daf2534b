"""systemd notification (nmbridge/systemd.py), against a real listening socket.

The protocol is checked against a bound AF_UNIX datagram socket, at a path and
in the abstract namespace (tests/notify_listener.py). A real bridge notifying
as systemd runs it is tests/integration/test_service.py; the unit itself is
tests/unit/test_unit_file.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from notify_listener import Listener, bind

from nmbridge import systemd
from nmbridge.counters import RingCounters, Snapshot


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    lis = bind(request.param, tmp_path)
    try:
        yield lis
    finally:
        lis.close()


# ------------------------------------------------------------ environment


def test_notify_address_forms() -> None:
    assert systemd.notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert systemd.notify_address("@/org/freedesktop/x") == b"\0/org/freedesktop/x"
    for bad in (None, "", "@", "relative/path", "vsock:2:1234"):
        assert systemd.notify_address(bad) is None


def test_watchdog_interval_and_pid() -> None:
    pid = os.getpid()
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "2500000"}) == 2.5
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "ten"}) is None
    ours = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(pid)}
    assert systemd.watchdog_interval(ours) == 1.0
    # the variables were inherited by a process they are not meant for: no pings
    theirs = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(pid + 1)}
    assert systemd.watchdog_interval(theirs) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"}) is None


def test_no_notify_socket_means_no_hooks() -> None:
    assert systemd.Notifier.from_environ({}) is None
    assert systemd.bridge_hooks({}) == {}
    assert systemd.bridge_hooks({"WATCHDOG_USEC": "1000000"}) == {}


def test_unusable_notify_socket_warns_and_does_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert systemd.bridge_hooks({"NOTIFY_SOCKET": "relative"}) == {}
    assert "NOTIFY_SOCKET" in capsys.readouterr().err


# ------------------------------------------------------ the Notifier alone


def test_notifier_sends_each_message_as_one_datagram(listener: Listener) -> None:
    n = systemd.Notifier.from_environ(
        {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "4000000"}
    )
    assert n is not None
    n.ready()
    n.status("forwarding: 3 frames")
    n.status("forwarding: 3 frames")  # unchanged: not sent again
    n.status("two\nlines")  # a newline would start another assignment
    n.stopping("signal")
    n.stopping("signal")  # once
    n.close()
    listener.wait_for("STOPPING")
    assert listener.messages() == [
        "READY=1\nSTATUS=forwarding\nWATCHDOG=1",
        "STATUS=forwarding: 3 frames",
        "STATUS=two lines",
        "STOPPING=1\nSTATUS=stopping (signal): flushing the TX rings",
    ]


def test_watchdog_pings_at_least_every_half_period(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(systemd.time, "monotonic", lambda: clock[0])
    period, budget = 2.0, 0.2
    hooks = systemd.bridge_hooks(
        {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": str(int(period * 1e6))},
        loop_budget_s=budget,
    )
    sent = []
    real_send = systemd.Notifier.send

    def send(self: systemd.Notifier, *a: str) -> bool:
        sent.append((clock[0], a))
        return real_send(self, *a)

    monkeypatch.setattr(systemd.Notifier, "send", send)
    hooks["on_ready"]()
    # the loop's passes: the C loop's budget each, sometimes a little more
    for i in range(100):
        clock[0] += budget + (0.04 if i % 3 == 0 else 0.0)
        hooks["on_loop"]()
    end = clock[0]
    hooks["on_stop"]("signal")
    for _ in range(10):  # after STOPPING=1 the watchdog is the manager's business
        clock[0] += budget
        hooks["on_loop"]()
    pings = [t for t, a in sent if "WATCHDOG=1" in a]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) <= period / 2
    assert end - pings[-1] <= period / 2
    # ... but not on every pass either
    assert len(pings) < 100 / 2
    assert all(t <= end for t in pings)
    listener.wait_for("STOPPING")
    assert len(listener.assignments("WATCHDOG")) == len(pings)


def test_no_watchdog_no_pings(listener: Listener) -> None:
    hooks = systemd.bridge_hooks({"NOTIFY_SOCKET": listener.env_value})
    hooks["on_ready"]()
    for _ in range(5):
        hooks["on_loop"]()
    hooks["on_stop"]("duration")
    listener.wait_for("STOPPING")
    assert listener.messages() == [
        "READY=1\nSTATUS=forwarding",
        "STOPPING=1\nSTATUS=stopping (duration): flushing the TX rings",
    ]


def test_a_vanished_socket_warns_once_and_never_raises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = systemd.Notifier(str(tmp_path / "gone.sock"), watchdog=1.0)
    assert n.send("READY=1") is False
    assert n.send("STATUS=x") is False
    assert capsys.readouterr().err.count("cannot notify systemd") == 1


def _snapshot() -> Snapshot:
    def ring(port: int, direction: str, frames: int, drops: int) -> RingCounters:
        values = {"frames": frames, "bytes": frames * 100, "drop_oversize": drops,
                  "drop_tx": 0}
        return RingCounters(port, direction, 0, False, values)

    return Snapshot(
        path="/x", instance="eth0", pid=1, started_ns=0, live=True, state="running",
        heartbeat_ns=0, zero_copy=True,
        ports=[{"name": "netmap:eth0", "role": "wire"}, {"name": "netmap:eth0^", "role": "host"}],
        rings=[ring(0, "rx", 7, 1), ring(1, "tx", 7, 0), ring(1, "rx", 2, 0), ring(0, "tx", 2, 0)],
    )


def test_status_text_has_the_totals_per_direction() -> None:
    assert systemd.status_text(_snapshot()) == (
        "forwarding: wire->host 7 frames 700 bytes 1 dropped; "
        "host->wire 2 frames 200 bytes 0 dropped"
    )


def test_bridge_command_wires_the_hooks_when_notify_socket_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from nmbridge import cli
    from nmbridge.commands import bridge as runner

    seen = []
    monkeypatch.setattr(runner, "run_bridge", lambda opts: seen.append(opts))
    args = ["bridge", "-i", "tap:x", "-i", "tap:y", "--stats-dir", str(tmp_path)]
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "1000000"}
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert CliRunner().invoke(cli.cli, args, catch_exceptions=False).exit_code == 0
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert CliRunner().invoke(cli.cli, args, catch_exceptions=False).exit_code == 0
    plain, notified = seen
    assert (plain.on_ready, plain.on_tick, plain.on_loop, plain.on_stop) == (None,) * 4
    assert all((notified.on_ready, notified.on_tick, notified.on_loop, notified.on_stop))

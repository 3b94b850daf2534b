"""systemd notification (nmbridge/systemd.py) and the unit (systemd/nmbridge@.service).

The protocol is checked against a real listening AF_UNIX datagram socket, at a
path and in the abstract namespace: first the Notifier alone, then (root) a
real bridge of emulated ports in a network namespace made here, started with
NOTIFY_SOCKET pointing at the socket. The unit is checked by
`systemd-analyze verify` and `systemd-analyze security`.

Root tests and the systemd tools: under CI=true, missing ones fail the run;
elsewhere they skip with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from nmbridge import systemd
from nmbridge.counters import RingCounters, Snapshot

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "nmbridge@.service"
MAN = ROOT / "man" / "nmbridge.8"
NMBRIDGE = str(Path(sys.executable).with_name("nmbridge"))
CLONE_NEWNET = 0x40000000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


# ------------------------------------------------------------------ a listener


@dataclass
class Listener:
    """A bound AF_UNIX datagram socket and the datagrams it received, with times."""

    sock: socket.socket
    env_value: str  # what NOTIFY_SOCKET says
    received: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Listener:
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self.sock.close()

    def messages(self) -> list[str]:
        return [m for _, m in self.received]

    def assignments(self, key: str) -> list[tuple[float, str]]:
        """(time, value) of every KEY=value line received, in order."""
        out = []
        for t, m in list(self.received):
            for line in m.split("\n"):
                k, _, v = line.partition("=")
                if k == key:
                    out.append((t, v))
        return out

    def wait_for(self, key: str, pred=lambda v: True, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, v in self.assignments(key):
                if pred(v):
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {key}= matching within {timeout} s; got {self.messages()}")


def _bind(kind: str, tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        return sock, path
    name = f"nmbridge-test-{os.getpid()}-{secrets.token_hex(4)}"
    sock.bind(b"\0" + name.encode())
    return sock, "@" + name


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock, value = _bind(request.param, tmp_path)
    lis = Listener(sock, value).start()
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
    from nmbridge import cli, runner

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


# ------------------------------------------- a real bridge, as systemd runs it


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and res.returncode:
        raise AssertionError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace with veth pairs a0/a1 and b0/b1, all up; always removed."""
    if os.geteuid() != 0:
        _unavailable("the end-to-end notify test needs root (network namespaces)")
    if shutil.which("ip") is None:
        _unavailable("the 'ip' command is missing (Debian: iproute2)")
    name = f"nmbsd-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        for a, b in (("a0", "a1"), ("b0", "b1")):
            _ip("-n", name, "link", "add", a, "type", "veth", "peer", "name", b)
        for ifname in ("a0", "a1", "b0", "b1"):
            _ip("-n", name, "link", "set", ifname, "up")
        yield name
    finally:
        res = _ip("netns", "del", name, check=False)
        if res.returncode and "No such file" not in res.stderr:
            raise AssertionError(f"cannot remove namespace {name}: {res.stderr.strip()}")


def _bind_in_netns(ns: str, address: bytes) -> socket.socket:
    """An abstract socket lives in a network namespace: bind it in the bridge's.

    setns() moves only the calling thread, so a short-lived thread does it."""
    out: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(address)
            out.append(sock)
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


SENDER = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for i in range(int(sys.argv[2])):
    s.send((b"\\xff" * 6 + bytes.fromhex("02000000a000") + b"\\x88\\xb5").ljust(64, b"\\0"))
"""


@pytest.mark.root
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_a_real_bridge_notifies_ready_status_watchdog_stopping(
    netns: str, kind: str, tmp_path: Path
) -> None:
    if kind == "path":
        sock, value = _bind("path", tmp_path)
    else:
        name = f"nmbridge-test-{os.getpid()}-{secrets.token_hex(4)}"
        sock, value = _bind_in_netns(netns, b"\0" + name.encode()), "@" + name
    lis = Listener(sock, value).start()
    env = {**os.environ, "NOTIFY_SOCKET": value, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    argv = ["ip", "netns", "exec", netns, NMBRIDGE, "-i", "packet:a1", "-i", "packet:b1",
            "--no-live", "--interval", "0.2", "--stats-dir", str(tmp_path / "stats")]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ready_at = lis.wait_for("READY", lambda v: v == "1")
        # forwarding from READY=1 on: frames sent now cross, and STATUS= counts them
        subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", SENDER, "a0", "5"],
                       check=True, timeout=10)
        lis.wait_for("STATUS", lambda v: re.search(
            r"packet:a1->packet:b1 ([5-9]|\d\d+) frames \d+ bytes 0 dropped", v) is not None)
        time.sleep(1.0)  # a few watchdog periods' worth of loop passes
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        stopping_at = lis.wait_for("STOPPING", lambda v: v == "1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lis.close()
    statuses = [v for t, v in lis.assignments("STATUS") if ready_at < t < stopping_at]
    assert statuses and all(v.startswith("forwarding") for v in statuses)
    pings = [t for t, _ in lis.assignments("WATCHDOG") if ready_at <= t <= stopping_at]
    gaps = [b - a for a, b in zip([ready_at, *pings], [*pings, stopping_at])]
    assert len(pings) >= 3 and max(gaps) <= 0.5, gaps  # WATCHDOG_USEC: 1 s
    assert lis.messages()[-1].startswith("STOPPING=1\nSTATUS=stopping (signal)")
    assert sum(m.startswith("READY=1") for m in lis.messages()) == 1


# ------------------------------------------------------------------ the unit


def _unit_lines() -> list[str]:
    return UNIT.read_text().splitlines()


def _directives() -> list[tuple[str, str, str]]:
    """(section, key, value) of every directive, in order."""
    out, section = [], ""
    for line in _unit_lines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((section, key, value))
    return out


def _values(key: str) -> list[str]:
    return [v for _s, k, v in _directives() if k == key]


def test_unit_is_a_notify_template_that_uses_its_instance() -> None:
    assert _values("Type") == ["notify"]
    assert _values("Documentation") == ["man:nmbridge(8)"]
    assert _values("Restart") == ["on-failure"]
    assert _values("EnvironmentFile") == ["-/etc/nmbridge/%i.conf"]
    assert _values("RuntimeDirectory") == ["nmbridge"]
    assert _values("RuntimeDirectoryPreserve") == ["yes"]  # /run/nmbridge is shared
    assert _values("WatchdogSec")
    assert "NMBRIDGE_STATS_DIR=%t/nmbridge" in _values("Environment")
    (exec_start,) = _values("ExecStart")
    argv = shlex.split(exec_start)
    assert argv[0] == "nmbridge" and argv[-1] == "%i"
    assert "--no-live" in argv and "$NMBRIDGE_OPTS" in argv


def test_unit_exec_start_parses_as_the_cli_reads_it() -> None:
    from nmbridge.cli import cli

    (exec_start,) = _values("ExecStart")
    argv = [a.replace("%i", "eth0") for a in shlex.split(exec_start)[1:] if a != "$NMBRIDGE_OPTS"]
    cmd = cli.commands[argv[0]]
    ctx = cmd.make_context(argv[0], argv[1:])
    assert ctx.params["iface"] == "eth0" and ctx.params["live"] is False


def test_every_unit_directive_is_commented() -> None:
    """Each directive follows a comment line, directly or after one other directive."""
    lines = _unit_lines()
    for i, line in enumerate(lines):
        if not line or line.startswith(("#", "[")):
            continue
        assert any(b.startswith("#") for b in lines[max(0, i - 2):i]), f"uncommented: {line}"


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        _unavailable("systemd-analyze is missing (Debian: systemd; tools/setup.sh installs it)")
    return str(path)


def _testable_unit(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The unit with ExecStart naming the nmbridge under test (systemd's search path
    does not hold a venv), and a MANPATH where Documentation=man:nmbridge(8) is found."""
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    text = UNIT.read_text()
    changed = text.replace("\nExecStart=nmbridge ", f"\nExecStart={NMBRIDGE} ")
    assert changed.count(NMBRIDGE) == 1
    unit = unit_dir / "nmbridge@.service"
    unit.write_text(changed)
    (tmp_path / "man" / "man8").mkdir(parents=True)
    (tmp_path / "man" / "man8" / "nmbridge.8").symlink_to(MAN)
    return unit, {**os.environ, "MANPATH": str(tmp_path / "man"), "SYSTEMD_LOG_COLOR": "0"}


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    unit, env = _testable_unit(tmp_path)
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         env=env, timeout=30)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    # verify is meaningful: the unchanged unit's bare ExecStart is not on this machine's
    # search path, and a unit without its man page is refused
    broken = unit.with_name("nmbridge-broken@.service")
    broken.write_text(unit.read_text().replace("man:nmbridge(8)", "man:nmbridge-nope(8)"))
    res = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True,
                         env=env, timeout=30)
    assert res.returncode != 0 and "nmbridge-nope" in res.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    unit, env = _testable_unit(tmp_path)
    instance = unit.with_name("nmbridge@eth0.service")
    instance.write_text(unit.read_text())
    res = subprocess.run([analyze, "security", "--offline=true", str(instance)],
                         capture_output=True, text=True, env=env, timeout=30)
    if "--offline" in res.stderr and res.returncode:
        pytest.skip(f"this systemd-analyze has no --offline: {res.stderr.strip()}")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    # 2.3 with systemd 252 (README): root with two capabilities and the host's network
    assert float(m.group(1)) <= 3.0, res.stdout
    with contextlib.suppress(OSError):
        instance.unlink()

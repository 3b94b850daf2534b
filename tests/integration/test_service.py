"""The bridge as systemd runs it (root): the unit's own ExecStart= and
Environment=, an instance's NMBRIDGE_OPTS, and a service manager's notify
socket, with real traffic through emulated ports in a Sandbox.

The unit's %i names a NIC for netmap, which CI does not have: here the
instance's options give the Sandbox's emulated ports (-i packet:nmbv0 -i
tap:nmbt0) in place of %i, as an /etc/nmbridge/IFACE.conf could. What
systemd does around ExecStart is done here: the environment file read,
$NMBRIDGE_OPTS split into words, %t replaced by a runtime directory made
here, NOTIFY_SOCKET and WATCHDOG_USEC set, WATCHDOG_PID set to the process
that execs nmbridge, SIGTERM to stop.

Under CI=true a missing privilege fails the run instead of skipping it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_listener import Listener, bind, bind_abstract_in_netns

from nmbridge.lab import sandbox
from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "nmbridge@.service"
NMBRIDGE = str(Path(sys.executable).with_name("nmbridge"))
PINGS = 5
#: the watchdog period the test's manager asks for (the unit's 10 s would take too long)
WATCHDOG_S = 1.0


def unit_values(key: str) -> list[str]:
    return [
        line.partition("=")[2] for line in UNIT.read_text().splitlines()
        if line.partition("=")[0] == key and not line.startswith("#")
    ]


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, values optionally in double quotes, as systemd reads them."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            out[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return out


def service_argv(conf: Path, runtime_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart as systemd expands it for this instance, and the Environment=."""
    env = {}
    for assignment in unit_values("Environment"):
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%t", str(runtime_dir))
    assert unit_values("EnvironmentFile") == ["-/etc/nmbridge/%i.conf"]
    env.update(read_environment_file(conf))
    (exec_start,) = unit_values("ExecStart")
    argv: list[str] = []
    for word in shlex.split(exec_start):
        if word == "$NMBRIDGE_OPTS":
            argv += env.get("NMBRIDGE_OPTS", "").split()
        elif word != "%i":  # the ports come from NMBRIDGE_OPTS (see the module's doc)
            argv.append(word)
    assert argv[0] == "nmbridge"
    return [NMBRIDGE, *argv[1:]], env


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, sb: Sandbox) -> Iterator[Listener]:
    """The notify socket of a service manager, reachable from the bridge's namespace."""
    if request.param == "path":
        lis = bind("path", Path(sb.tempdir("notify")))
    else:
        lis = bind_abstract_in_netns(f"/run/netns/{sb.bridge_ns}")
    try:
        yield lis
    finally:
        lis.close()


def stats_json(sb: Sandbox, env: dict[str, str]) -> dict:
    res = subprocess.run([NMBRIDGE, "stats", "--json"], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_the_service_notifies_as_it_forwards(sb: Sandbox, manager: Listener) -> None:
    runtime = Path(sb.tempdir("run"))
    (runtime / "nmbridge").mkdir()  # RuntimeDirectory=nmbridge
    conf = Path(sb.tempdir("etc")) / "test.conf"
    conf.write_text(
        "# as /etc/nmbridge/IFACE.conf: the instance's options\n"
        f'NMBRIDGE_OPTS="--interval 0.2 --wait-link 30 -i {sb.wire_port} -i {sb.host_port}"\n'
    )
    argv, unit_env = service_argv(conf, runtime)
    env = {**os.environ, **unit_env, "NOTIFY_SOCKET": manager.env_value,
           "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
    # systemd sets WATCHDOG_PID to the main process, the one that execs ExecStart=
    launcher = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *argv]
    # the wire is down: the bridge opens its ports and waits (--wait-link), not ready yet
    sb.set_link(sb.bridge_ns, sb.veth_if, False)
    proc = sb.popen(sb.bridge_ns, launcher, env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    try:
        stats_file = runtime / "nmbridge" / f"{sb.wire_port}--{sb.host_port}.stats"
        deadline = time.monotonic() + 10
        while not stats_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats_file.exists(), proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(1.0)
        assert manager.messages() == [], "READY=1 before the links are up"
        sb.set_link(sb.bridge_ns, sb.veth_if, True)
        ready_at = manager.wait_for("READY", lambda v: v == "1")
        ping = sb.run(sb.wire_ns, ["ping", "-c", str(PINGS), "-i", "0.2", "-W", "2", "-q",
                                    sb.host_addr], timeout=20, check=False)
        assert f"{PINGS} received" in ping.stdout, ping.stdout + ping.stderr
        # STATUS= carries the totals: each echo request one way, each reply the other
        both = re.compile(rf"forwarding: \S+ {PINGS} frames \d+ bytes 0 dropped; "
                          rf"\S+ {PINGS} frames \d+ bytes 0 dropped")
        manager.wait_for("STATUS", lambda v: both.fullmatch(v) is not None)
        # the counters a monitoring system reads, from the unit's stats directory
        snap = stats_json(sb, {"NMBRIDGE_STATS_DIR": unit_env["NMBRIDGE_STATS_DIR"]})
        (instance,) = snap["instances"]
        assert instance["live"] and instance["state"] == "running"
        time.sleep(3 * WATCHDOG_S)  # a few watchdog periods of an idle bridge
        assert sb.stop(proc) == 0
        out, err = proc.communicate(timeout=10)
        stopping_at = manager.wait_for("STOPPING", lambda v: v == "1")
    finally:
        sb.stop(proc)
    assert not stats_file.exists()  # an instance removes its own file as it stops
    # --no-live: log lines for the journal, no table on stdout
    assert out == "", out
    assert "stopped (signal)" in err
    messages = manager.messages()
    assert sum(m.startswith("READY=1") for m in messages) == 1
    assert messages[-1].startswith("STOPPING=1\nSTATUS=stopping (signal)")
    statuses = [v for t, v in manager.assignments("STATUS") if ready_at < t < stopping_at]
    assert statuses and all(v.startswith("forwarding") for v in statuses)
    pings = [t for t, _ in manager.assignments("WATCHDOG") if ready_at <= t <= stopping_at]
    gaps = [b - a for a, b in zip([ready_at, *pings], [*pings, stopping_at])]
    assert len(pings) >= 3 and max(gaps) <= WATCHDOG_S / 2, gaps


def test_the_service_stops_cleanly_before_it_is_ready(sb: Sandbox, manager: Listener) -> None:
    """systemctl stop while the bridge still waits for its links: STOPPING=1, exit 0,
    no READY=1 ever, no stats file left behind."""
    runtime = Path(sb.tempdir("run"))
    (runtime / "nmbridge").mkdir()
    conf = Path(sb.tempdir("etc")) / "test.conf"
    conf.write_text(f'NMBRIDGE_OPTS="--wait-link 60 -i {sb.wire_port} -i {sb.host_port}"\n')
    argv, unit_env = service_argv(conf, runtime)
    env = {**os.environ, **unit_env, "NOTIFY_SOCKET": manager.env_value}
    sb.set_link(sb.bridge_ns, sb.veth_if, False)
    proc = sb.popen(sb.bridge_ns, argv, env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    stats_file = runtime / "nmbridge" / f"{sb.wire_port}--{sb.host_port}.stats"
    deadline = time.monotonic() + 10
    while not stats_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats_file.exists()
    assert sb.stop(proc, grace=sandbox.STOP_GRACE) == 0, proc.communicate()[1]
    assert "stopped (signal)" in proc.communicate(timeout=10)[1]
    assert not stats_file.exists()
    manager.wait_for("STOPPING", lambda v: v == "1")
    assert not any(m.startswith("READY=1") for m in manager.messages())

"""A local user against a root bridge: each attack of the security review, played
for real by an unprivileged process (uid 65534, nobody) on this host.

What the attacker may do is what any user can: open what is world-readable, lock
what it can open, bind abstract Unix sockets, connect to a listening port, plant
links in a directory it can write. None of it may stop, blind or hang a bridge, nor
make root follow a link. Needs root (to be root, and to become nobody).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from nmbridge.commands import bridge as runner
from nmbridge.commands.stats import MAX_CONNECTIONS, REQUEST_SECONDS, MetricsServer
from nmbridge.counters import StatsWriter, read_snapshot
from nmbridge.errors import PortBusy, StatsCorrupt, UsageError
from nmbridge.ports import InterfaceClaim
from nmbridge.portspec import parse_port

pytestmark = pytest.mark.root

NOBODY = 65534


def _nobody_can_run(path: str) -> bool:
    """Every directory on the way and the file itself open to others (o+x)."""
    real = Path(os.path.realpath(path))
    return real.is_file() and all(
        os.stat(p).st_mode & stat.S_IXOTH for p in [real, *real.parents])


#: the attacker runs a Python that nobody can: the suite's own may sit in root's home
PYTHON = next((p for p in ("/usr/bin/python3", os.path.join(sys.base_prefix, "bin", "python3"),
                           sys.executable) if _nobody_can_run(p)), None)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the attacker can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="nmb-attack-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Attacker:
    """A Python program run as nobody; it says 'ready' once it holds what it took."""

    def __init__(self, code: str, *args: str) -> None:
        assert PYTHON is not None
        self.proc = subprocess.Popen(
            [PYTHON, "-c", code, *args], user=NOBODY, group=NOBODY, extra_groups=[],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        )
        self.said: list[str] = []
        while True:
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            if not line:
                raise AssertionError(f"the attacker died: {self.proc.stderr.read()}")
            self.said.append(line.strip())
            if line.strip() == "ready":
                return

    def stop(self) -> str:
        self.proc.kill()
        out, _err = self.proc.communicate(timeout=10)
        return out


@pytest.fixture
def attackers(unavailable: Callable[[str], NoReturn]) -> Iterator[list[Attacker]]:
    """The attackers a test starts (appended); each is killed at the end."""
    if PYTHON is None:
        unavailable("no Python that uid 65534 can run (Debian: apt-get install python3)")
    started: list[Attacker] = []
    try:
        yield started
    finally:
        for a in started:
            if a.proc.poll() is None:
                a.stop()


def _writer(stats_dir: Path, name: str = "victim") -> StatsWriter:
    return StatsWriter(str(stats_dir), name, ports=[{"name": "a"}, {"name": "b"}],
                       rings=[{"port": 0, "direction": "rx", "ring": 0}],
                       record_fields=["frames", "bytes"], record_size=16,
                       counters_header={"seq": 0, "heartbeat_ns": 8, "nrings": 16,
                                        "state": 24},
                       counters_header_size=32, zero_copy=True)


def _start_within(stats_dir: Path, seconds: float) -> StatsWriter:
    """A writer's start, which must end (well or not) within seconds: it used to wait
    for ever behind a lock any user could hold."""
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(_try(lambda: _writer(stats_dir))),
                              daemon=True)
    thread.start()
    thread.join(seconds)
    assert done, f"the bridge's stats file did not come within {seconds} s: start-up hangs"
    if isinstance(done[0], BaseException):
        raise done[0]
    assert isinstance(done[0], StatsWriter)
    return done[0]


def _try(fn: object) -> object:
    try:
        return fn()  # type: ignore[operator]
    except BaseException as exc:
        return exc


HOLD_SHARED_LOCKS = r"""
import fcntl, os, sys
d = sys.argv[1]
fcntl.flock(os.open(d, os.O_RDONLY | os.O_DIRECTORY), fcntl.LOCK_SH)
print("dir locked", flush=True)
try:
    fcntl.flock(os.open(os.path.join(d, ".victim.lock"), os.O_RDONLY), fcntl.LOCK_SH)
    print("lock file locked", flush=True)
except OSError as e:
    print("lock file refused", e.errno, flush=True)
print("ready", flush=True)
sys.stdin.read() if False else __import__("time").sleep(120)
"""


def test_a_shared_lock_on_the_stats_directory_does_not_hold_up_a_start(
        shared_dir: Path, attackers: list[Attacker]) -> None:
    """Review item 1: a LOCK_SH on /run/nmbridge (0755, so anyone can) hung the bridge
    for ever, its NIC in netmap mode and nothing forwarded."""
    _writer(shared_dir).close()  # the start-up lock file exists, for the attacker to try
    attackers.append(Attacker(HOLD_SHARED_LOCKS, str(shared_dir)))
    assert attackers[0].said[:2] == ["dir locked", f"lock file refused {13}"], attackers[0].said
    w = _start_within(shared_dir, 10)
    try:
        assert read_snapshot(w.path).live
    finally:
        w.close()
    mode = stat.S_IMODE(os.stat(shared_dir / ".victim.lock").st_mode)
    assert mode == 0o600, oct(mode)


STALE_WRITER = r"""
import sys, time
from nmbridge.counters import StatsWriter
StatsWriter(sys.argv[1], "victim", ports=[{"name": "a"}, {"name": "b"}],
            rings=[{"port": 0, "direction": "rx", "ring": 0}],
            record_fields=["frames", "bytes"], record_size=16,
            counters_header={"seq": 0, "heartbeat_ns": 8, "nrings": 16, "state": 24},
            counters_header_size=32, zero_copy=True)
print("ready", flush=True)
time.sleep(120)
"""

LOCK_WHEN_FREE = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)  # 0644: anyone may open it
print("ready", flush=True)
fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the writer to die, then holds it
print("locked", flush=True)
__import__("time").sleep(120)
"""


def test_a_lock_on_a_dead_bridges_stats_file_does_not_keep_it_alive(
        shared_dir: Path, attackers: list[Attacker]) -> None:
    """Review of this session's fix: a stats file is 0644 and flock() works on a
    read-only descriptor; a user who took the lock once its bridge was killed made
    the stale file look live, and every restart exit with "already running"."""
    writer = subprocess.Popen([sys.executable, "-c", STALE_WRITER, str(shared_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        attacker = Attacker(LOCK_WHEN_FREE, str(shared_dir / "victim.stats"))
        attackers.append(attacker)
        writer.kill()
        writer.wait(10)
        assert attacker.proc.stdout is not None
        assert attacker.proc.stdout.readline().strip() == "locked"
    finally:
        if writer.poll() is None:
            writer.kill()
    assert not read_snapshot(shared_dir / "victim.stats").live  # its writer is dead
    w = _start_within(shared_dir, 10)  # the restart
    try:
        assert read_snapshot(w.path).live
    finally:
        w.close()


RACE_THE_TEMPORARY = r"""
import fcntl, os, sys, time
d = sys.argv[1]
held, opened = [], 0
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for n in os.listdir(d):
        if not n.endswith(".tmp"):
            continue
        try:
            fd = os.open(os.path.join(d, n), os.O_RDONLY)
        except OSError:
            continue
        opened += 1
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held.append(fd)
        except OSError:
            os.close(fd)
print("opened", opened, "locked", len(held), flush=True)
"""


def test_the_temporary_stats_file_cannot_be_locked_first(
        shared_dir: Path, attackers: list[Attacker]) -> None:
    """Review item 1: the temporary file was created 0644 and locked later; a racer that
    locked it first made 20 of 20 starts exit with status 2 (never restarted)."""
    racer = Attacker(RACE_THE_TEMPORARY, str(shared_dir), "20")
    attackers.append(racer)
    for _ in range(20):
        _start_within(shared_dir, 10).close()
    racer.proc.kill()
    out, _ = racer.proc.communicate(timeout=10)
    assert "locked" not in out or "locked 0" in out, out


def test_a_planted_link_is_never_followed(shared_dir: Path, tmp_path: Path,
                                         attackers: list[Attacker]) -> None:
    """Review item 7: in a directory others can write (here sticky and root's, as /tmp
    is), a user plants NAME.stats -> a root file. The bridge refuses the directory
    (others could make its names first), and root's reader does not follow the link."""
    os.chmod(shared_dir, 0o1777)
    secret = tmp_path / "secret"
    secret.write_text("root's own\n")
    os.chmod(secret, 0o600)
    plant = ("import os, sys; os.symlink(sys.argv[2], os.path.join(sys.argv[1], "
             "'victim.stats')); print('ready', flush=True)")
    attackers.append(Attacker(plant, str(shared_dir), str(secret)))
    planted = shared_dir / "victim.stats"
    assert planted.is_symlink()
    with pytest.raises(StatsCorrupt, match="a symbolic link"):
        read_snapshot(planted)
    with pytest.raises(UsageError, match="is writable by others"):
        _writer(shared_dir)
    assert planted.is_symlink()  # nothing written there
    assert secret.read_text() == "root's own\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_a_stats_directory_of_another_user_is_refused(shared_dir: Path) -> None:
    """Review item 7: whoever owns the directory can swap the files in it."""
    theirs = shared_dir / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UsageError, match="belongs to uid 65534"):
        runner.check_stats_dir(str(theirs))
    with pytest.raises(UsageError, match="belongs to uid 65534"):
        _writer(theirs)
    assert os.listdir(theirs) == []


SQUAT_THE_CLAIM = r"""
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0nmbridge/packet/" + sys.argv[2])  # the claim of nmbridge 0.x
s.listen(1)
try:
    os.open(os.path.join(sys.argv[1], "squat.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    print("planted", flush=True)
except OSError as e:
    print("refused", e.errno, flush=True)
print("ready", flush=True)
__import__("time").sleep(120)
"""


def test_the_interface_claim_cannot_be_squatted(shared_dir: Path,
                                               attackers: list[Attacker]) -> None:
    """Review item 4: any user could bind the abstract socket that was the claim, and
    root's bridge then refused to start ('busy', status 6). The claim is now a lock in
    a directory only root writes; the bridge's own second claim is still refused."""
    claims = shared_dir / "claims"
    spec = parse_port("packet:lo")
    first = InterfaceClaim(spec, str(claims))
    first.release()  # the directory exists, for the attacker to try
    squatter = Attacker(SQUAT_THE_CLAIM, str(claims), str(socket.if_nametoindex("lo")))
    attackers.append(squatter)
    assert squatter.said[0] == "refused 13", squatter.said
    claim = InterfaceClaim(spec, str(claims))
    try:
        with pytest.raises(PortBusy, match=rf"busy: nmbridge \(pid {os.getpid()}\) is "
                                           "bridging lo"):
            InterfaceClaim(spec, str(claims))
    finally:
        claim.release()
    InterfaceClaim(spec, str(claims)).release()  # released: free again


HALF_SENT_REQUESTS = r"""
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        held.append(s)
    except OSError:
        pass  # closed or refused at once: the cap
print("ready", len(held) > 0, flush=True)
print("ready", flush=True)
while True:
    for s in held:
        try:
            s.send(b"X")  # a byte now and then: each read's timeout never fires
        except OSError:
            pass
    time.sleep(1)
"""


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_half_sent_metrics_requests_cannot_exhaust_the_bridges_descriptors(
        tmp_path: Path, attackers: list[Attacker]) -> None:
    """Review item 3: 1,017 half-sent requests took the bridge to its 1,024-descriptor
    limit (a thread and a descriptor each, no timeout). Connections are capped and
    each ends after REQUEST_SECONDS however slowly it sends; a scrape then gets in."""
    w = _writer(tmp_path)
    server = MetricsServer("127.0.0.1", 0, w.path)
    server.start()
    try:
        before = _open_fds()
        attackers.append(Attacker(HALF_SENT_REQUESTS, str(server.port), "300"))
        assert _open_fds() <= before + MAX_CONNECTIONS + 4  # + the attacker's two pipes
        assert threading.active_count() <= 2 * MAX_CONNECTIONS + 8  # each: its thread, its cutoff
        # the attacker still holds its connections, sending a byte a second: they end
        # after REQUEST_SECONDS, and a scrape gets in
        deadline = time.monotonic() + REQUEST_SECONDS + 5
        body = ""
        while time.monotonic() < deadline and "nmbridge_up" not in body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics",
                                            timeout=2) as reply:
                    body = reply.read().decode()
            except OSError:
                time.sleep(0.2)
        assert "nmbridge_up" in body
        assert attackers[0].proc.poll() is None  # it was still there
    finally:
        server.close()
        w.close()

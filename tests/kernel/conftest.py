"""Fixtures for the tests of nmbridge's kernel-port path.

`shim` builds the fake netmap module (tests/fakenetmap/fakenetmap.c, an
LD_PRELOAD library) once per session into a temporary directory; `fake` gives
each test its own fake device file, event log and control socket, and runs
Python snippets or the installed `nmbridge` in a subprocess with the shim
preloaded. The shim is never loaded into the pytest process itself.

A snippet is run after DRIVER, a prelude of helpers that open ports through
nmbridge.engine and move frames through their rings with nmbridge's own cffi
declarations; it reports with result(key=value, ...), which the test reads
back as Run.result. The same prelude runs against the real netmap module in
test_real_netmap.py (there the fake's control functions are absent).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from namespaces import add_veth

REPO = Path(__file__).resolve().parents[2]
SHIM_SOURCE = REPO / "tests" / "fakenetmap" / "fakenetmap.c"
ABI_INCLUDE = REPO / "nmbridge" / "_ffi" / "src"
PYTHON = sys.executable
NMBRIDGE = Path(sys.executable).parent / "nmbridge"
#: the fake NICs every test gets: fk0 with 1 ring pair, fk1 with 2
FAKE_NICS = "fk0,fk1/2"

DRIVER = r'''
import ctypes
import dataclasses
import json
import os
import runpy
import select
import sys
import threading
import time

from nmbridge import engine
from nmbridge import ports as bridge_ports
from nmbridge._ffi._core import ffi, lib
from nmbridge.portspec import parse_port

_SELF = ctypes.CDLL(None)
try:
    _SELF.fakenetmap_inject
    FAKE = True
except AttributeError:
    FAKE = False
if FAKE:
    _C = ctypes
    _SELF.fakenetmap_inject.argtypes = [_C.c_char_p, _C.c_char_p, _C.c_char_p, _C.c_uint]
    _SELF.fakenetmap_read.argtypes = [_C.c_char_p, _C.c_char_p, _C.c_char_p, _C.c_uint,
                                      _C.c_int]
    _SELF.fakenetmap_set_link.argtypes = [_C.c_char_p, _C.c_int]
    _SELF.fakenetmap_users.argtypes = [_C.c_char_p]
    _SELF.fakenetmap_stat.argtypes = [_C.c_char_p]
    _SELF.fakenetmap_stat.restype = _C.c_longlong

ETHERTYPE = b"\x88\xb5"


def result(**kw):
    print("RESULT " + json.dumps(kw), flush=True)


def open_ports(*names):
    """As a bridge opens them: the control plane's checks and claims, then the engine."""
    return bridge_ports.open_ports([parse_port(n) for n in names])


def frame(i, size=60, tag=b"nmb", dst=b"\x02\x00\x00\x00\x00\x02",
          src=b"\x02\x00\x00\x00\x00\x01"):
    body = dst + src + ETHERTYPE + b"%s-%06d-" % (tag, i)
    return body + bytes(i % 251 for i in range(size - len(body)))


def slots(ring):
    return lib.nmb_ring_slots(ring)


def buf(ring, idx):
    return ffi.cast("char *", ring) + ring.buf_ofs + idx * ring.nr_buf_size


def addr(ptr):
    return int(ffi.cast("uintptr_t", ptr))


def ring_state(ring):
    s = slots(ring)
    return {
        "head": ring.head, "cur": ring.cur, "tail": ring.tail, "dir": ring.dir,
        "ringid": ring.ringid, "num_slots": ring.num_slots, "nr_buf_size": ring.nr_buf_size,
        "flags": ring.flags,
        "first": [[s[i].buf_idx, s[i].len, s[i].flags] for i in range(4)],
        "buf_idx": sorted({s[i].buf_idx for i in range(ring.num_slots)}),
    }


def walk(port):
    """The netmap_if of a port and what nmbridge bound from it."""
    c = port.c
    nif = c.nifp
    counts = [nif.ni_tx_rings, nif.ni_host_tx_rings, nif.ni_rx_rings, nif.ni_host_rx_rings]
    ofs = [int(nif.ring_ofs[i]) for i in range(sum(counts))]
    base = addr(nif)
    return {
        "name": port.spec.text,
        "ni_name": ffi.string(nif.ni_name).decode(),
        "ni_flags": nif.ni_flags,
        "counts": counts,
        "ring_ofs": ofs,
        "bound_tx": [addr(c.tx[i]) - base for i in range(c.ntx)],
        "bound_rx": [addr(c.rx[i]) - base for i in range(c.nrx)],
        "reply": dataclasses.asdict(port.reply),
        "tx": [ring_state(c.tx[i]) for i in range(c.ntx)],
        "rx": [ring_state(c.rx[i]) for i in range(c.nrx)],
        "ring_info": [[r.direction, r.ringid, r.host] for r in port.rings(0)],
    }


def put(port, frames, ring=0):
    """Write frames into a TX ring while it has room; returns how many went in."""
    r = port.c.tx[ring]
    s = slots(r)
    n = 0
    for data in frames:
        if r.head == r.tail:  # user space owns [head, tail): the ring is full
            break
        h = r.head
        ffi.memmove(buf(r, s[h].buf_idx), data, len(data))
        s[h].len = len(data)
        s[h].flags = 0
        r.head = r.cur = (h + 1) % r.num_slots
        n += 1
    return n


def wait_fd(port, events, ms):
    p = select.poll()
    p.register(port.fd, events)
    return p.poll(ms)


def send(port, frames, ring=0, timeout=5.0):
    frames = list(frames)
    deadline = time.monotonic() + timeout
    while True:
        frames = frames[put(port, frames, ring):]
        assert lib.nmb_kport_txsync(port.c) == 0
        if not frames:
            return
        assert time.monotonic() < deadline, "TX ring stayed full"
        wait_fd(port, select.POLLOUT, 100)


def take(port):
    """Every complete frame in the RX rings, released: [(bytes, flags of its first slot)]."""
    out = []
    for i in range(port.c.nrx):
        r = port.c.rx[i]
        s = slots(r)
        h = r.head
        chunks, first = [], None
        while h != r.tail:
            if first is None:
                first = s[h].flags
            chunks.append(ffi.buffer(buf(r, s[h].buf_idx), s[h].len)[:])
            more = s[h].flags & lib.NS_MOREFRAG
            h = (h + 1) % r.num_slots
            if not more:
                out.append((b"".join(chunks), first))
                chunks, first = [], None
                r.head = r.cur = h
    return out


def recv_slots(port, count, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        assert lib.nmb_kport_rxsync(port.c) == 0
        got += take(port)
        if len(got) < count:
            wait_fd(port, select.POLLIN, 50)
    assert lib.nmb_kport_rxsync(port.c) == 0  # release what was read
    return got


def recv(port, count, timeout=5.0):
    return [data for data, _flags in recv_slots(port, count, timeout)]


def inject(nic, side, data):
    rc = _SELF.fakenetmap_inject(nic.encode(), side.encode(), data, len(data))
    assert rc == 0, f"inject {nic} {side}: {rc}"


def read_side(nic, side, timeout_ms=2000):
    b = ctypes.create_string_buffer(70000)
    n = _SELF.fakenetmap_read(nic.encode(), side.encode(), b, len(b), timeout_ms)
    return b.raw[:n] if n >= 0 else None


def read_many(nic, side, count, timeout_ms=3000):
    out = []
    while len(out) < count:
        f = read_side(nic, side, timeout_ms)
        if f is None:
            break
        out.append(f)
    return out


def set_link(nic, up):
    assert _SELF.fakenetmap_set_link(nic.encode(), 1 if up else 0) == 0


def users(name):
    return _SELF.fakenetmap_users(name.encode())


def wait_users(name, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while users(name) < n:
        assert time.monotonic() < deadline, f"{name} never got {n} users"
        time.sleep(0.01)


def stat(key):
    return _SELF.fakenetmap_stat(key.encode())


def audit():
    return _SELF.fakenetmap_audit()


def fake_stats():
    keys = ("registers", "register_errors", "reinits", "tail_restored", "bad_slots",
            "link_blocks", "audit_errors", "mmaps", "munmaps", "live_maps", "open_fds")
    return {k: stat(k) for k in keys}


def run_cli(args):
    """The installed nmbridge script, run in this process: its exit status."""
    sys.argv = ["nmbridge", *args]
    try:
        runpy.run_path(os.environ["NMB_TEST_SCRIPT"], run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
'''


@dataclass
class Run:
    """A finished subprocess: its status, output, and the RESULT lines it printed."""

    returncode: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for r in self.results:
            merged.update(r)
        return merged

    def describe(self) -> str:
        return f"status {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _results(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]


def _netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


class Runner:
    """Runs driver snippets and the installed command, with or without the shim."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.base_env = env
        self.stats_dir = workdir / "stats"
        self.stats_dir.mkdir(exist_ok=True)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith(("FAKENETMAP_", "NMBRIDGE_")) or key == "LD_PRELOAD":
                del env[key]
        env.update(self.base_env)
        env["NMBRIDGE_STATS_DIR"] = str(self.stats_dir)
        if "NMBRIDGE_CLAIMS_DIR" in os.environ:  # the suite's own (tests/conftest.py)
            env["NMBRIDGE_CLAIMS_DIR"] = os.environ["NMBRIDGE_CLAIMS_DIR"]
        env["NMB_TEST_SCRIPT"] = str(NMBRIDGE)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def run_py(
        self,
        body: str,
        *,
        env: dict[str, str] | None = None,
        timeout: float = 30,
        netns: str | None = None,
        check: bool = True,
    ) -> Run:
        script = self.workdir / f"driver-{uuid.uuid4().hex[:8]}.py"
        script.write_text(DRIVER + "\n" + body)
        run = self._run([*_netns_prefix(netns), PYTHON, str(script)], env, timeout)
        if check:
            assert run.returncode == 0, run.describe()
        return run

    def run_cli(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 30,
        netns: str | None = None,
    ) -> Run:
        assert NMBRIDGE.exists(), f"the installed command is missing: {NMBRIDGE}"
        return self._run([*_netns_prefix(netns), str(NMBRIDGE), *args], env, timeout)

    def popen_cli(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, netns: str | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*_netns_prefix(netns), str(NMBRIDGE), *args],
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def _run(self, cmd: list[str], env: dict[str, str] | None, timeout: float) -> Run:
        try:
            proc = subprocess.run(
                cmd,
                env=self.env(env),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            pytest.fail(
                f"{cmd} did not finish in {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}"
            )
        return Run(proc.returncode, proc.stdout, proc.stderr, _results(proc.stdout))


class FakeKernel(Runner):
    """One test's fake netmap module: device file, event log, control socket."""

    def __init__(self, lib: Path, workdir: Path) -> None:
        self.lib = lib
        self.device = workdir / "netmap"
        self.device.write_text("")
        self.log = workdir / "fakenetmap.log"
        self.ctl = Path("/tmp") / f"fakenetmap-{uuid.uuid4().hex[:12]}.sock"
        super().__init__(
            workdir,
            {
                "LD_PRELOAD": str(lib),
                "FAKENETMAP_PATH": str(self.device),
                "FAKENETMAP_NICS": FAKE_NICS,
                "FAKENETMAP_LOG": str(self.log),
                "FAKENETMAP_CTL": str(self.ctl),
                "NMBRIDGE_NETMAP_DEVICE": str(self.device),
            },
        )

    def events(self, kind: str | None = None) -> list[dict[str, str]]:
        """The shim's event log: one dict per line, "event" is its first word."""
        out = []
        if not self.log.exists():
            return out
        for line in self.log.read_text().splitlines():
            words = line.split()
            ev: dict[str, str] = {}
            for w in words:
                key, eq, value = w.partition("=")
                if eq:
                    ev[key] = value
                elif "event" not in ev:
                    ev["event"] = w
            if kind is None or ev.get("event") == kind:
                out.append(ev)
        return out

    def exit_stats(self) -> list[dict[str, str]]:
        return self.events("exit")

    def ctl_request(self, line: str, timeout: float = 10.0) -> str:
        """One request of the shim's control protocol (see fakenetmap.c, ctl_handle)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout)
                    s.connect(str(self.ctl))
                    s.sendall(line.encode() + b"\n")
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = s.recv(1 << 20)
                        if not chunk:
                            break
                        data += chunk
                    return data.decode().strip()
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory,
         unavailable: Callable[[str], NoReturn]) -> tuple[Path, str]:
    """The shim, compiled once per session: (library path, compiler messages)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        unavailable("no C compiler: the fake netmap module cannot be built")
    out = tmp_path_factory.mktemp("fakenetmap") / "libfakenetmap.so"
    proc = subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-I", str(ABI_INCLUDE), "-o", str(out),
         str(SHIM_SOURCE), "-ldl", "-lpthread"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"building the fake netmap module failed:\n{proc.stderr}"
    return out, proc.stderr


@pytest.fixture
def fake(shim: tuple[Path, str], tmp_path: Path) -> Iterator[FakeKernel]:
    kernel = FakeKernel(shim[0], tmp_path)
    yield kernel
    kernel.ctl.unlink(missing_ok=True)


@pytest.fixture
def netns(make_netns: Callable[[str], str]) -> str:
    """A network namespace of its own (lo up), removed afterwards."""
    return make_netns("k")


@pytest.fixture
def nic_netns(netns: str) -> str:
    """A namespace holding real interfaces named like the fake NICs (fk0, fk1), each
    a veth up with its peer (fk0p, fk1p), so that `nmbridge fk0` finds the interface,
    watches its link through netlink and reads its offloads, while the shim plays
    netmap for it (FAKENETMAP_LINK_SYSFS=1 makes the fake link follow the veth)."""
    for nic in (n.split("/")[0] for n in FAKE_NICS.split(",")):
        add_veth(netns, nic, f"{nic}p")
    return netns


@pytest.fixture
def real(tmp_path: Path, unavailable: Callable[[str], NoReturn]) -> Runner:
    """Runs the same driver snippets against the real netmap module: no shim. Skipped,
    with the reason, where the module is not loaded (also under CI: only the fake
    stands in for it there); under CI=true, a module that is there but cannot be
    used by this user fails the run instead."""
    if not os.path.exists("/dev/netmap"):
        pytest.skip("no /dev/netmap: the netmap kernel module is not loaded on this machine")
    if not os.access("/dev/netmap", os.R_OK | os.W_OK):
        unavailable("/dev/netmap exists but is not readable and writable by this user (root?)")
    return Runner(tmp_path, {})

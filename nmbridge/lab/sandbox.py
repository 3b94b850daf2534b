"""Network namespaces for the demo and the integration tests.

A Sandbox is two namespaces that exist only while it does:

    wire namespace                    bridge namespace
    +-------------------+             +-------------------------------------+
    | nmbw0 198.18.0.1  |--- veth ----| nmbv0 (no address)    nmbridge      |
    +-------------------+             |   packet:nmbv0 <-> tap:nmbt0        |
                                      | nmbt0 (TAP) 198.18.0.2 = host stack |
                                      +-------------------------------------+

nmbw0 plays a host on the wire; nmbv0 is the bridge's wire port and nmbt0 its
host-stack port, so traffic between 198.18.0.1 and 198.18.0.2 crosses the
bridge both ways, and only it (IPv6 is off, neighbours are static: the
bridge's counters see exactly what the traffic sent).

Names are unique (``nmb-<pid>-<random>-``) and everything is removed on exit,
after an exception and after Ctrl-C: deleting a namespace deletes its veth
and TAP. A run killed before it could clean up leaves namespaces whose pid is
dead; reap_stale() removes them. Every command is an argument list and has a
timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

from nmbridge.counters import pid_alive
from nmbridge.errors import NmbridgeError, PermissionDenied, SystemFailure

PREFIX = "nmb-"
#: seconds any one command may take
TIMEOUT = 10.0
#: seconds a process in the sandbox gets to exit after SIGTERM before SIGKILL
STOP_GRACE = 3.0

WIRE_IF = "nmbw0"  # wire namespace: a host on the wire
VETH_IF = "nmbv0"  # bridge namespace: the bridge's wire port (packet:)
TAP_IF = "nmbt0"  # bridge namespace: the bridge's host-stack port (tap:)
WIRE_ADDR = "198.18.0.1"
HOST_ADDR = "198.18.0.2"
PREFIX_LEN = 24
# locally administered, fixed: the static neighbour entries name them
WIRE_MAC = "02:00:c6:12:00:01"
VETH_MAC = "02:00:c6:12:00:fe"
TAP_MAC = "02:00:c6:12:00:02"

_NAME_RE = re.compile(r"^nmb-(\d+)-([0-9a-f]+)-")
_GONE = ("no such file", "cannot find device", "does not exist", "not found")
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

# Runs inside a namespace: net.* sysctls are per namespace, so they must be
# written by a process in it. The keys are this module's constants.
_SYSCTL_SCRIPT = (
    "import sys\n"
    "for kv in sys.argv[1:]:\n"
    "    k, v = kv.split('=', 1)\n"
    "    open('/proc/sys/' + k.replace('.', '/'), 'w').write(v)\n"
)
_SYSCTLS_BOTH = (
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
)
# nmbv0 has no address and must not answer ARP for the TAP's address
_SYSCTLS_BRIDGE = ("net.ipv4.conf.all.arp_ignore=1",)


def ip_command() -> str:
    """The path of `ip`, or a one-line error naming the Debian package."""
    path = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise SystemFailure(
            "the 'ip' command is missing: install iproute2 (Debian: apt-get install iproute2)"
        )
    return path


def effective_capabilities() -> int:
    """The CapEff mask of this process (0 if it cannot be read)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_privileges(what: str = "nmbridge demo") -> None:
    """Namespaces need CAP_SYS_ADMIN, links and TAPs CAP_NET_ADMIN: one line if missing."""
    caps = effective_capabilities()
    if not (caps >> CAP_NET_ADMIN) & 1 or not (caps >> CAP_SYS_ADMIN) & 1:
        raise PermissionDenied(
            f"{what} needs root (CAP_NET_ADMIN, and CAP_SYS_ADMIN for network namespaces)"
        )


def check_tun() -> None:
    if not os.path.exists("/dev/net/tun"):
        raise SystemFailure("/dev/net/tun is missing: load the tun module (modprobe tun)")


def _first_line(text: str) -> str:
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[0] if lines else ""


def run(
    argv: Sequence[str], timeout: float = TIMEOUT, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (an argument list, no shell) with a timeout; SystemFailure if it fails.

    The child gets a session of its own so that a Ctrl-C at the terminal does
    not kill it half way: the caller decides when to stop.
    """
    try:
        res = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SystemFailure(f"'{' '.join(argv)}' did not finish in {timeout:g} s") from None
    except FileNotFoundError:
        raise SystemFailure(f"'{argv[0]}' is missing") from None
    if check and res.returncode != 0:
        why = _first_line(res.stderr) or f"exit status {res.returncode}"
        raise SystemFailure(f"'{' '.join(argv)}' failed: {why}")
    return res


def netns_exec(ns: str, argv: Sequence[str]) -> list[str]:
    """The argument list that runs argv inside namespace ns."""
    return [ip_command(), "netns", "exec", ns, *argv]


def list_namespaces() -> list[str]:
    res = run([ip_command(), "netns", "list"])
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def _kill_namespace_pids(ns: str) -> None:
    """SIGKILL what still runs in one of our namespaces: a namespace outlives its
    file while a process is in it, and its veth and TAP with it."""
    res = run([ip_command(), "netns", "pids", ns], check=False)
    for word in res.stdout.split():
        if word.isdigit() and int(word) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(word), signal.SIGKILL)


def delete_namespace(ns: str) -> None:
    """Delete a namespace; one that is already gone is fine, any other failure is not."""
    if not ns.startswith(PREFIX):
        raise ValueError(f"refusing to delete namespace '{ns}': not one of nmbridge's")
    _kill_namespace_pids(ns)
    res = run([ip_command(), "netns", "delete", ns], check=False)
    if res.returncode != 0 and not any(g in res.stderr.lower() for g in _GONE):
        raise SystemFailure(f"cannot delete namespace {ns}: {_first_line(res.stderr)}")


def _stale(name: str) -> bool:
    m = _NAME_RE.match(name)
    return m is not None and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1)))


def reap_stale() -> list[str]:
    """Delete the namespaces and temporary directories of sandboxes whose process is
    dead; returns their names."""
    reaped = []
    for ns in list_namespaces():
        if _stale(ns):
            delete_namespace(ns)
            reaped.append(ns)
    tmp = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(tmp):
            path = os.path.join(tmp, name)
            if _stale(name) and os.path.isdir(path) and not os.path.islink(path) and (
                os.stat(path).st_uid == os.geteuid()
            ):
                shutil.rmtree(path, ignore_errors=True)
                reaped.append(path)
    return reaped


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then deliver them.

    Clean-up must not be cut short by a second Ctrl-C. Only the main thread
    can set handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(got):
            signal.raise_signal(signum)


class Sandbox:
    """Two namespaces joined by a veth, a TAP with the host address, removed on exit.

    Use it as a context manager. mtu applies to the veth pair and the TAP.
    """

    def __init__(self, mtu: int = 1500, timeout: float = TIMEOUT) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"mtu {mtu} is out of range 68..65535")
        self.mtu = mtu
        self.timeout = timeout
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-"
        self.wire_ns = self.tag + "wire"
        self.bridge_ns = self.tag + "br"
        self.wire_if = WIRE_IF
        self.veth_if = VETH_IF
        self.tap_if = TAP_IF
        self.wire_addr = WIRE_ADDR
        self.host_addr = HOST_ADDR
        self._ip = ""
        self._created: list[str] = []
        self._dirs: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._closed = False

    # the ports a bridge in the bridge namespace opens
    @property
    def wire_port(self) -> str:
        return f"packet:{self.veth_if}"

    @property
    def host_port(self) -> str:
        return f"tap:{self.tap_if}"

    def __enter__(self) -> Sandbox:
        try:
            with signals_deferred():
                self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except NmbridgeError as err:  # the exception in flight says more
            from nmbridge import terminal

            terminal.warn(err.message)

    # ------------------------------------------------------------ commands

    def ip(
        self, ns: str | None, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ip [-n ns] args...`."""
        argv = [self._ip or ip_command()]
        if ns is not None:
            argv += ["-n", ns]
        return run([*argv, *args], timeout=self.timeout, check=check)

    def run(
        self, ns: str, argv: Sequence[str], timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside namespace ns and wait for it (with a timeout)."""
        return run(netns_exec(ns, argv), timeout=timeout or self.timeout, check=check)

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside namespace ns; it is stopped when the sandbox closes.

        It gets a session of its own (no terminal Ctrl-C): stop it with stop().
        """
        self._check_open()
        kwargs.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(netns_exec(ns, argv), **kwargs)
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], grace: float = STOP_GRACE) -> int:
        """SIGTERM, then SIGKILL after grace seconds; returns the exit status."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
        return int(proc.returncode)

    def tempdir(self, what: str) -> str:
        """A new temporary directory, removed with the sandbox (and by reap_stale)."""
        self._check_open()
        path = tempfile.mkdtemp(prefix=f"{self.tag}{what}-")
        self._dirs.append(path)
        return path

    def set_link(self, ns: str, ifname: str, up: bool) -> None:
        self.ip(ns, "link", "set", "dev", ifname, "up" if up else "down")

    def delete_link(self, ns: str, ifname: str) -> None:
        self.ip(ns, "link", "delete", "dev", ifname)

    def link_exists(self, ns: str, ifname: str) -> bool:
        return self.ip(ns, "link", "show", "dev", ifname, check=False).returncode == 0

    # ------------------------------------------------------------ set-up

    def _check_open(self) -> None:
        if self._closed:
            raise SystemFailure("the sandbox is closed")

    def _sysctl(self, ns: str, settings: Sequence[str]) -> None:
        self.run(ns, [sys.executable, "-I", "-S", "-c", _SYSCTL_SCRIPT, *settings])

    def _create(self) -> None:
        self._check_open()
        self._ip = ip_command()
        check_tun()
        w, b, mtu = self.wire_ns, self.bridge_ns, str(self.mtu)
        for ns in (w, b):
            self._created.append(ns)  # before: a timed-out add may still have made it
            res = self.ip(None, "netns", "add", ns, check=False)
            if res.returncode != 0:
                err = _first_line(res.stderr)
                if "permission" in err.lower() or "not permitted" in err.lower():
                    raise PermissionDenied(f"cannot create a network namespace: {err}")
                raise SystemFailure(f"cannot create network namespace {ns}: {err}")
        self._sysctl(w, _SYSCTLS_BOTH)
        self._sysctl(b, (*_SYSCTLS_BOTH, *_SYSCTLS_BRIDGE))
        for ns in (w, b):
            self.ip(ns, "link", "set", "dev", "lo", "up")
        self.ip(w, "link", "add", self.wire_if, "address", WIRE_MAC, "mtu", mtu, "type", "veth",
                "peer", "name", self.veth_if, "address", VETH_MAC, "mtu", mtu, "netns", b)
        self.ip(w, "addr", "add", f"{WIRE_ADDR}/{PREFIX_LEN}", "dev", self.wire_if)
        self.ip(b, "tuntap", "add", "dev", self.tap_if, "mode", "tap")
        self.ip(b, "link", "set", "dev", self.tap_if, "address", TAP_MAC, "mtu", mtu)
        self.ip(b, "addr", "add", f"{HOST_ADDR}/{PREFIX_LEN}", "dev", self.tap_if)
        # static neighbours: no ARP, so the bridge carries only the traffic sent
        self.ip(w, "neigh", "replace", HOST_ADDR, "lladdr", TAP_MAC, "dev", self.wire_if,
                "nud", "permanent")
        self.ip(b, "neigh", "replace", WIRE_ADDR, "lladdr", WIRE_MAC, "dev", self.tap_if,
                "nud", "permanent")
        self.set_link(w, self.wire_if, True)
        self.set_link(b, self.veth_if, True)
        self.set_link(b, self.tap_if, True)

    # ------------------------------------------------------------ clean-up

    def close(self) -> None:
        """Stop what runs in the sandbox and delete its namespaces (and so its links)."""
        if self._closed:
            return
        self._closed = True
        with signals_deferred():
            errors: list[str] = []
            for proc in self._procs:
                try:
                    self.stop(proc)
                except (OSError, subprocess.SubprocessError) as exc:
                    errors.append(f"process {proc.pid}: {exc}")
            for ns in reversed(self._created):
                try:
                    delete_namespace(ns)
                except NmbridgeError as exc:
                    errors.append(exc.message)
            self._created.clear()
            for path in self._dirs:
                shutil.rmtree(path, ignore_errors=True)
            self._dirs.clear()
            if errors:
                raise SystemFailure("sandbox clean-up: " + "; ".join(errors))

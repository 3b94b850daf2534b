"""The service manager's end of sd_notify for the tests: a bound AF_UNIX datagram
socket that records what it receives, with the time it arrived.

Shared by tests/unit/test_systemd.py (the Notifier alone) and
tests/integration/test_service.py (a real bridge). Importable because pytest
puts tests/, the directory of the root conftest.py, on sys.path.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000


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
        return [m for _, m in list(self.received)]

    def assignments(self, key: str) -> list[tuple[float, str]]:
        """(time, value) of every KEY=value line received, in order."""
        out = []
        for t, m in list(self.received):
            for line in m.split("\n"):
                k, _, v = line.partition("=")
                if k == key:
                    out.append((t, v))
        return out

    def wait_for(
        self, key: str, pred: Callable[[str], bool] = lambda v: True, timeout: float = 10.0
    ) -> float:
        """The time the first KEY=value with pred(value) arrived, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, v in self.assignments(key):
                if pred(v):
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {key}= matching within {timeout} s; got {self.messages()}")


def abstract_name() -> str:
    return f"nmbridge-test-{os.getpid()}-{secrets.token_hex(4)}"


def bind(kind: str, directory: Path) -> Listener:
    """A started Listener at a path in directory ("path") or an abstract name ("abstract")."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        path = str(directory / "notify.sock")
        sock.bind(path)
        return Listener(sock, path).start()
    name = abstract_name()
    sock.bind(b"\0" + name.encode())
    return Listener(sock, "@" + name).start()


def bind_abstract_in_netns(netns_path: str) -> Listener:
    """A started Listener on an abstract socket of another network namespace.

    An abstract socket lives in a network namespace, so a bridge run there
    reaches only one bound there. setns() moves only the calling thread: a
    short-lived thread binds the socket, which stays in that namespace.
    """
    name = abstract_name()
    out: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(b"\0" + name.encode())
            out.append(sock)
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    if not out:
        raise AssertionError("binding in the namespace did not finish in 5 s")
    if isinstance(out[0], BaseException):
        raise out[0]
    return Listener(out[0], "@" + name).start()

"""systemd's notification protocol (sd_notify(3)) and its watchdog, without libsystemd.

A service of ``Type=notify`` finds the address of the service manager's socket
in ``$NOTIFY_SOCKET``: an absolute path, or an abstract socket when it starts
with ``@`` (the ``@`` stands for the leading NUL byte). Each notification is
one datagram of newline-separated ``KEY=VALUE`` assignments. When the variable
is unset, nothing is sent and every call here is a no-op.

``$WATCHDOG_USEC`` is set when the unit has ``WatchdogSec=``: the manager
expects ``WATCHDOG=1`` at least once per that many microseconds and kills the
service otherwise. ``$WATCHDOG_PID``, if set, names the process meant; any
other process (a child that inherited the environment) must not ping.

The bridge reports through BridgeOptions' hooks (see bridge_hooks()):
``READY=1`` once the loop forwards, ``STATUS=`` with the totals every interval,
``WATCHDOG=1`` from the forwarding loop itself (a ping proves that loop still
turns, which a timer thread would not), ``STOPPING=1`` when the loop ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Union

from nmbridge import terminal
from nmbridge.counters import Snapshot

SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

Address = Union[str, bytes]


def notify_address(value: str | None) -> Address | None:
    """The socket address in $NOTIFY_SOCKET: a path, abstract bytes, or None (unusable)."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # relative paths are refused by sd_notify too; vsock: is not supported


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between the pings the manager expects, or None when there is no watchdog
    for this process ($WATCHDOG_USEC unset, not a positive number, or $WATCHDOG_PID
    naming another process)."""
    try:
        usec = int(environ.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    wpid = environ.get(WATCHDOG_PID_ENV)
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def status_text(snap: Snapshot) -> str:
    """The STATUS= line: frames, bytes and drops per direction since the start."""
    from nmbridge.view import direction_totals, totals_phrase

    return "forwarding: " + totals_phrase(direction_totals(snap))


class Notifier:
    """Sends notifications to one socket; thread-safe (the live view's thread sends too)."""

    def __init__(self, address: Address, watchdog: float | None = None, slack: float = 0.0):
        """`watchdog`: the manager's period in seconds (None: no watchdog). `slack`: the
        longest the caller may take between two calls to on_loop(); pings are sent early
        by that much so that no two are more than half a period apart."""
        self.address = address
        self.watchdog = watchdog
        self.ping_every = max(0.0, watchdog / 2 - slack) if watchdog else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_ping: float | None = None
        self._last_status: str | None = None
        self._warned = False
        self.stopping_sent = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, slack: float = 0.0
    ) -> Notifier | None:
        """A Notifier for $NOTIFY_SOCKET, or None when it is unset (not run by systemd)."""
        env = os.environ if environ is None else environ
        value = env.get(SOCKET_ENV)
        if not value:
            return None
        address = notify_address(value)
        if address is None:
            terminal.warn(f"{SOCKET_ENV}={value!r} is not a socket path or @abstract name: "
                          "systemd will not hear from nmbridge")
            return None
        return cls(address, watchdog_interval(env), slack=slack)

    def send(self, *assignments: str) -> bool:
        """One datagram of KEY=VALUE lines; False (and one warning) if it cannot be sent."""
        message = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(message, self.address)
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    terminal.warn(f"cannot notify systemd: {exc.strerror or exc}")
                return False
        return True

    def ready(self) -> None:
        self._last_ping = time.monotonic()
        watchdog = ("WATCHDOG=1",) if self.watchdog else ()
        self.send("READY=1", "STATUS=forwarding", *watchdog)

    def status(self, text: str) -> None:
        """STATUS=text, unless it says what the last one said."""
        text = " ".join(text.split())  # one line: a newline would start a new assignment
        if text == self._last_status:
            return
        self._last_status = text
        self.send(f"STATUS={text}")

    def tick(self, snap: Snapshot) -> None:
        self.status(status_text(snap))

    def loop(self) -> None:
        """Called on every pass of the forwarding loop: WATCHDOG=1 when one is due."""
        if self.ping_every is None or self.stopping_sent:
            return
        now = time.monotonic()
        if self._last_ping is None or now - self._last_ping >= self.ping_every:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def stopping(self, reason: str = "stop") -> None:
        if self.stopping_sent:
            return
        self.stopping_sent = True
        self.send("STOPPING=1", f"STATUS=stopping ({reason}): flushing the TX rings")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.close()
                self._sock = None


def bridge_hooks(
    environ: Mapping[str, str] | None = None, loop_budget_s: float = 0.2
) -> dict[str, Any]:
    """BridgeOptions hooks that keep systemd informed; {} when $NOTIFY_SOCKET is unset.

    `loop_budget_s`: the longest the forwarding loop stays in C between two passes.
    """
    # a pass also reads link events and the clock: allow for more than the budget
    notifier = Notifier.from_environ(environ, slack=loop_budget_s + 0.1)
    if notifier is None:
        return {}
    return {
        "on_ready": notifier.ready,
        "on_tick": notifier.tick,
        "on_loop": notifier.loop,
        "on_stop": notifier.stopping,
    }

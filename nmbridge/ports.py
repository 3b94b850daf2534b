"""Opening a bridge's ports: what the control plane decides around the engine.

Before anything is opened: each interface exists, a tap: name that exists is a
TAP, the largest frame each emulated port must take, and one bridge per
packet: interface (the claim, which no other user can take first). Then
engine.open_ports does it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Sequence

from nmbridge import counters, engine, sysfs
from nmbridge.engine import EmulatedSetup, Port
from nmbridge.errors import NoSuchPort, PortBusy, from_errno
from nmbridge.portspec import PortSpec

#: a TAP that nmbridge creates: Ethernet MTU + header + one VLAN tag
NEW_TAP_MAX_FRAME = 1518


def emulated_setup(spec: PortSpec) -> EmulatedSetup:
    """What an emulated port needs from its interface; raise if it cannot be one."""
    if spec.kind == "tap":
        if not sysfs.exists(spec.ifname):
            return EmulatedSetup(NEW_TAP_MAX_FRAME, create=True)
        if not sysfs.is_tap(spec.ifname):
            raise PortBusy(f"{spec.text}: '{spec.ifname}' exists and is not a TAP device")
        return EmulatedSetup(sysfs.max_frame(spec.ifname))
    if not sysfs.exists(spec.ifname):
        raise NoSuchPort(f"{spec.text}: no interface named '{spec.ifname}'")
    return EmulatedSetup(sysfs.max_frame(spec.ifname))


#: where the claims live: a directory only root can write (the unit's RuntimeDirectory),
#: whatever --stats-dir says, so that every bridge of the host sees every claim;
#: NMBRIDGE_CLAIMS_DIR names another (the tests' own)
CLAIMS_DIR = "/run/nmbridge/claims"
CLAIMS_DIR_ENV = "NMBRIDGE_CLAIMS_DIR"


class InterfaceClaim:
    """One bridge per packet: interface. Nothing in the kernel stops two AF_PACKET
    sockets on one interface, and two bridges there would each forward every frame.

    The claim is an exclusive flock() on a 0600 file in CLAIMS_DIR named after the
    network namespace (its inode) and the interface index: no other user can open
    it, so none can take a claim first (an abstract Unix socket, which any user can
    bind, could be squatted). The kernel drops the lock when the process ends, however
    it ends; the file holds the claimant's pid for the busy message."""

    def __init__(self, spec: PortSpec, claims_dir: str | None = None) -> None:
        where = claims_dir or os.environ.get(CLAIMS_DIR_ENV) or CLAIMS_DIR
        try:
            ifindex = socket.if_nametoindex(spec.ifname)
        except OSError:
            raise NoSuchPort(f"{spec.text}: no interface named '{spec.ifname}'") from None
        self._name = f"net{sysfs.netns_inode()}-if{ifindex}.lock"
        what = f"{spec.text}: cannot claim {spec.ifname} ({where})"
        try:
            self._dfd = counters.open_stats_dir(where, "the claims directory")
        except OSError as exc:
            raise from_errno(exc.errno or errno.EIO, what) from None
        try:
            self._fd = self._lock(spec, what)
        except BaseException:
            os.close(self._dfd)
            raise

    def _lock(self, spec: PortSpec, what: str) -> int:
        while True:
            try:
                fd = os.open(self._name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=self._dfd)
            except OSError as exc:
                raise from_errno(exc.errno or errno.EIO, what) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                who = f"nmbridge (pid {pid})" if pid > 0 else "another nmbridge"
                raise PortBusy(f"{spec.text}: busy: {who} is bridging {spec.ifname}") from None
            # the file a releasing claimant unlinked before we locked it is no claim
            try:
                same = os.fstat(fd).st_ino == os.stat(
                    self._name, dir_fd=self._dfd, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            os.close(fd)

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._name, dir_fd=self._dfd)  # while locked: nobody holds it
        os.close(self._fd)
        os.close(self._dfd)
        self._fd = -1


def _read_pid(fd: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    return 0


def open_ports(specs: Sequence[PortSpec]) -> list[Port]:
    """Open a bridge's ports as the control plane decided them; close with close_ports."""
    setups = [emulated_setup(s) if s.emulated else None for s in specs]
    claims: list[InterfaceClaim | None] = []
    try:
        for spec in specs:
            claims.append(InterfaceClaim(spec) if spec.kind == "packet" else None)
        ports = engine.open_ports(specs, setups)
    except BaseException:
        for claim in claims:
            if claim is not None:
                claim.release()
        raise
    for port, claim in zip(ports, claims):
        if claim is not None:
            port.on_close(claim.release)
    return ports


def close_ports(ports: Sequence[Port]) -> None:
    engine.close_ports(ports)

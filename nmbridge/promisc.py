"""Promiscuous mode for the NICs a bridge takes frames from: a bridge forwards frames
addressed to other stations, which a NIC drops unless it is promiscuous.

Each interface is held promiscuous through an AF_PACKET socket's PACKET_MR_PROMISC
membership, for a netmap NIC and a packet: port alike: the kernel counts it in the
interface's promiscuity and takes it back when the socket closes, however the bridge
ends (a SIGKILL too), so that a crash cannot leave a NIC promiscuous. The socket
listens to no protocol: it receives nothing.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence
from types import TracebackType

from nmbridge import sysfs, terminal
from nmbridge.portspec import NIC_RING_KINDS, PortSpec

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
#: struct packet_mreq: ifindex, type, alen, address[8]
PACKET_MREQ = struct.Struct("=iHH8s")
IFF_PROMISC = 0x100


def needs_promisc(specs: Sequence[PortSpec]) -> list[str]:
    """The interfaces that must be promiscuous for this pair: a NIC in netmap mode or
    under a packet: port, bridged to anything but its own host stack."""
    out: list[str] = []
    for i, spec in enumerate(specs):
        other = specs[1 - i] if len(specs) == 2 else None
        takes_wire = spec.kind == "packet" or (not spec.emulated and spec.kind in NIC_RING_KINDS)
        if not takes_wire or not spec.ifname:
            continue
        if (other is not None and other.kind in ("host", "host-ring")
                and other.ifname == spec.ifname):
            continue  # the wire and its own host stack: the NIC's own frames only
        if spec.ifname not in out:
            out.append(spec.ifname)
    return out


def is_promiscuous(ifname: str) -> bool:
    flags = sysfs.read_int(ifname, "flags")
    return bool(flags is not None and flags & IFF_PROMISC)


class Promiscuous:
    """Holds the interfaces promiscuous from __enter__ to __exit__ (or the process's
    end); says so once. One that cannot be (no CAP_NET_RAW) is warned about."""

    def __init__(self, ifnames: Sequence[str]) -> None:
        self._ifnames = list(ifnames)
        self._socks: list[socket.socket] = []
        self._said: list[tuple[bool, str]] = []  # (a warning?, the line) for announce()

    def announce(self) -> None:
        """Say what was done, once the ports are open: a bridge that fails before it
        forwards says only its one error line."""
        for warning, line in self._said:
            (terminal.warn if warning else terminal.info)(line)
        self._said = []

    def __enter__(self) -> Promiscuous:
        for ifname in self._ifnames:
            try:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            except OSError as exc:
                self._said.append((True, f"{ifname}: cannot make it promiscuous "
                                   f"({exc.strerror or exc}): frames for other stations will not "
                                   "reach the bridge"))
                continue
            try:
                mreq = PACKET_MREQ.pack(socket.if_nametoindex(ifname), PACKET_MR_PROMISC, 0,
                                        b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            except OSError as exc:
                sock.close()
                self._said.append((True, f"{ifname}: cannot make it promiscuous "
                                   f"({exc.strerror or exc}): frames for other stations will not "
                                   "reach the bridge"))
                continue
            self._socks.append(sock)
            self._said.append((False, f"nmbridge: {ifname}: promiscuous while the bridge "
                                      "runs (undone when it exits, however it exits; "
                                      "--no-promisc: not)"))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        self._socks = []

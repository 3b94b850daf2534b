"""Opening a bridge's ports: what the control plane decides around the engine.

Before anything is opened: each interface exists, a tap: name that exists is a
TAP, the largest frame each emulated port must take, and one bridge per
packet: interface (the claim). Then engine.open_ports does it.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Sequence

from nmbridge import engine, sysfs
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


def claim_interface(spec: PortSpec) -> socket.socket:
    """One bridge per packet: interface. Nothing in the kernel stops two AF_PACKET
    sockets on one interface, and two bridges there would each forward every frame:
    the claim is a listening abstract Unix socket named after the interface index. Such
    names live in the network namespace, as the index does; the kernel frees it when
    the process ends, however it ends. Busy: the claimant's pid, from SO_PEERCRED."""
    try:
        ifindex = socket.if_nametoindex(spec.ifname)
    except OSError:
        raise NoSuchPort(f"{spec.text}: no interface named '{spec.ifname}'") from None
    address = f"\0nmbridge/packet/{ifindex}"
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(address)
        claim.listen(16)  # room for the busy callers below: they never wait
        return claim
    except OSError as exc:
        claim.close()
        if exc.errno != errno.EADDRINUSE:
            raise from_errno(exc.errno or errno.EIO,
                             f"{spec.text}: cannot claim {spec.ifname}") from None
    pid = 0
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        s.connect(address)
        pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    who = f"nmbridge (pid {pid})" if pid > 0 else "another nmbridge"
    raise PortBusy(f"{spec.text}: busy: {who} is bridging {spec.ifname}")


def open_ports(specs: Sequence[PortSpec]) -> list[Port]:
    """Open a bridge's ports as the control plane decided them; close with close_ports."""
    setups = [emulated_setup(s) if s.emulated else None for s in specs]
    claims: list[socket.socket | None] = []
    try:
        for spec in specs:
            claims.append(claim_interface(spec) if spec.kind == "packet" else None)
        ports = engine.open_ports(specs, setups)
    except BaseException:
        for claim in claims:
            if claim is not None:
                claim.close()
        raise
    for port, claim in zip(ports, claims):
        if claim is not None:
            port.on_close(claim.close)
    return ports


def close_ports(ports: Sequence[Port]) -> None:
    engine.close_ports(ports)

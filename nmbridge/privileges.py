"""What a bridge's ports need of the process's privileges, asked before anything is
made: a user without them hears what is needed, not a symptom (a stats directory
that cannot be written, a socket refused) that leads to it only after a detour.

Only what is needed for certain is asked: a packet: port's AF_PACKET socket needs
CAP_NET_RAW; a tap: port needs CAP_NET_ADMIN, unless it is a persistent TAP this
user owns; a kernel port needs read and write access to the netmap device (netmap
itself asks for no capability).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from nmbridge import sysfs
from nmbridge.errors import PermissionDenied
from nmbridge.portspec import PortSpec

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW"}
#: what PermissionDenied says a user can do about it
REMEDY = "run as root, or with CAP_NET_ADMIN and CAP_NET_RAW"


def effective_caps(status: str) -> int | None:
    """The CapEff mask of a /proc/PID/status text; None if it has none."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            try:
                return int(value.strip(), 16)
            except ValueError:
                return None
    return None


def own_caps() -> int | None:
    """This process's effective capabilities; None where they cannot be read (not
    Linux): then nothing is asked in advance, and the kernel's refusal says it."""
    try:
        with open("/proc/self/status") as f:
            return effective_caps(f.read())
    except OSError:
        return None


def _owns_persistent_tap(ifname: str) -> bool:
    """A persistent TAP whose owner (or group) is this user: TUNSETIFF lets them attach
    without CAP_NET_ADMIN."""
    if not sysfs.is_tap(ifname):
        return False
    owner = sysfs.read_int(ifname, "owner")
    group = sysfs.read_int(ifname, "group")
    return (owner is not None and owner == os.geteuid()) or (
        group is not None and group >= 0 and group in (os.getegid(), *os.getgroups()))


def missing(specs: Sequence[PortSpec], caps: int | None, netmap_device: str) -> list[str]:
    """What each port lacks, a phrase each ('packet:veth0 needs CAP_NET_RAW'); empty if
    nothing is known to be missing."""
    out = []
    for spec in specs:
        if spec.kind == "packet":
            need = CAP_NET_RAW
        elif spec.kind == "tap":
            if _owns_persistent_tap(spec.ifname or ""):
                continue
            need = CAP_NET_ADMIN
        else:
            if os.path.exists(netmap_device) and not os.access(
                    netmap_device, os.R_OK | os.W_OK,
                    effective_ids=os.access in os.supports_effective_ids):
                out.append(f"{spec.text} needs read and write access to {netmap_device}")
            continue
        if caps is not None and not caps >> need & 1:
            out.append(f"{spec.text} needs {CAP_NAMES[need]}")
    return out


def require(specs: Sequence[PortSpec], netmap_device: str) -> None:
    """Raise PermissionDenied naming what the ports need and this process lacks."""
    lacking = missing(specs, own_caps(), netmap_device)
    if lacking:
        raise PermissionDenied(f"permission denied: {', '.join(lacking)} ({REMEDY})")

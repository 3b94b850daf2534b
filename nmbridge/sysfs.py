"""The host's interfaces as /sys/class/net shows them: one reader for every
module that asks whether an interface exists, is a TAP, or what its MTU is."""

from __future__ import annotations

import os

SYSFS_NET = "/sys/class/net"


def read(ifname: str, attr: str) -> str | None:
    """An attribute of an interface, stripped; None if there is none to read."""
    try:
        with open(f"{SYSFS_NET}/{ifname}/{attr}") as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(ifname: str, attr: str) -> int | None:
    """An integer attribute (decimal, or 0x... as flags are written); None if absent."""
    value = read(ifname, attr)
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None


def exists(ifname: str) -> bool:
    return os.path.isdir(f"{SYSFS_NET}/{ifname}")


def is_tap(ifname: str) -> bool:
    """A TUN/TAP device (only those have tun_flags)."""
    return os.path.exists(f"{SYSFS_NET}/{ifname}/tun_flags")


def max_frame(ifname: str) -> int:
    """The largest frame an interface passes: MTU + Ethernet header + one VLAN tag."""
    return (read_int(ifname, "mtu") or 1500) + 18


def netns_inode() -> int:
    """The network namespace this process is in, by its inode: interface names and
    indices are only unique within one."""
    return os.stat("/proc/self/ns/net").st_ino

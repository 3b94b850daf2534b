"""The bridge's ports from its command line, in nmbridge's words and in netmap's
`bridge`'s: `-i A -i B`, `IFACE`, and `bridge`'s positional `IFA [IFB [BURST]]`, where a
missing IFB (or IFB the same as IFA) means IFA's host stack, and -L loops IFA back on
itself. Pure: names in, names out, UsageError for what cannot be bridged."""

from __future__ import annotations

from dataclasses import dataclass

from nmbridge.errors import UsageError


@dataclass(frozen=True)
class PortPair:
    ports: tuple[str, str]
    roles: tuple[str, str] | None  # ("wire", "host") for an interface and its host stack
    loopback: bool = False  # one port, its RX sent back out of its own TX


def nic_name(name: str) -> str | None:
    """The interface of a name that is a whole NIC (eth0, netmap:eth0), else None."""
    base = name.removeprefix("netmap:")
    if not base or any(c in base for c in "^*/@{}:") or "-" in base[:1]:
        return None
    return base


def port_pair(words: tuple[str, ...], ports: tuple[str, ...], loopback: bool) -> PortPair:
    """words: the positional IFA [IFB] (nmbridge's IFACE is IFA alone); ports: the -i
    names. netmap's bridge takes either; so does nmbridge, but not both at once."""
    if words and ports:
        raise UsageError("give either IFACE or two -i ports, not both")
    names = list(words or ports)
    if len(names) == 2 and names[0] != names[1]:
        if loopback:
            raise UsageError(f"-L loops one port back on itself; got two, {names[0]} and "
                             f"{names[1]}")
        return PortPair((names[0], names[1]), None)
    if len(names) not in (1, 2):
        raise UsageError(
            "give an interface (nmbridge eth0) or exactly two ports (-i A -i B); "
            f"got {len(names)} port{'s' if len(names) != 1 else ''}"
        )
    name = names[0]
    if loopback:
        return PortPair((name, name), None, loopback=True)
    base = nic_name(name)
    if base is None:
        if len(names) == 2:  # the same non-NIC port twice: refused later, naming the loop
            return PortPair((name, name), None)
        if words:
            raise UsageError(f"'{name}' is not an interface name; use -i for netmap port "
                             "names")
        raise UsageError(
            "give an interface (nmbridge eth0) or exactly two ports (-i A -i B); got 1 port")
    return PortPair((f"netmap:{base}", f"netmap:{base}^"), ("wire", "host"))

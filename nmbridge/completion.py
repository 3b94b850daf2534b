"""What the shell may complete for arguments: interfaces, port names, instances.

Shell completion itself is click's: `_NMBRIDGE_COMPLETE=bash_source nmbridge`
(or zsh_source, fish_source) prints the script a shell sources. These
functions only list candidates; they read /sys/class/net and the stats
directory, never fail, and never open a port.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

_SYS_NET = "/sys/class/net"
#: prefixes of port names that take an interface name
_IFACE_PREFIXES = ("netmap:", "packet:", "tap:")


def _interfaces() -> list[str]:
    try:
        return sorted(os.listdir(_SYS_NET))
    except OSError:
        return []


def _items(words: list[str], incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(w) for w in words if w.startswith(incomplete)]


def interface_items(incomplete: str) -> list[CompletionItem]:
    """The network interfaces of this namespace that start with `incomplete`."""
    return _items(_interfaces(), incomplete)


def interfaces(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The network interfaces of this namespace."""
    return interface_items(incomplete)


def ports(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """netmap:IF, packet:IF, tap:IF for each interface, then vale0: (a VALE switch)."""
    names = [f"{prefix}{ifname}" for prefix in _IFACE_PREFIXES for ifname in _interfaces()]
    return _items([*names, "vale0:"], incomplete)


def instances(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The instance names that have a stats file in --stats-dir."""
    from nmbridge.counters import DEFAULT_DIR, DIR_ENV, SUFFIX

    stats_dir = ctx.params.get("stats_dir") or os.environ.get(DIR_ENV) or DEFAULT_DIR
    try:
        names = sorted(
            f[: -len(SUFFIX)]
            for f in os.listdir(stats_dir)
            if f.endswith(SUFFIX) and not f.startswith(".")
        )
    except OSError:
        names = []
    return _items(names, incomplete)

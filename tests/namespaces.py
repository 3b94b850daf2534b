"""The suite's one way to make a network namespace (the `make_netns` fixture in
tests/conftest.py and the module-scoped fixtures use it).

A namespace is named ``nmb-<pid>-<random>-<what>``: unique to this process and
this call, and in the form nmbridge.lab.sandbox.reap_stale() recognizes, so one
left by a run killed before its clean-up is reaped once its pid is dead (as
`nmbridge demo` does). It is always deleted, whatever the body did; a namespace
already gone is fine, any other failure to delete it fails loudly. Every `ip`
runs with a timeout.

Not a test module: pytest puts tests/ on sys.path when it loads tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from typing import NoReturn

from nmbridge.errors import SystemFailure
from nmbridge.lab import sandbox

#: seconds any one `ip` may take: only against a hang, on a loaded machine
TIMEOUT = 30.0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ip args...` with a timeout; with check, a failure is an AssertionError."""
    res = sandbox.run([sandbox.ip_command(), *args], timeout=TIMEOUT, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def unique_name(what: str) -> str:
    return f"{sandbox.PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{what}"


def listed() -> set[str]:
    """The namespaces `ip netns list` shows now."""
    return set(sandbox.list_namespaces())


@contextlib.contextmanager
def namespace(what: str, unavailable: Callable[[str], NoReturn]) -> Iterator[str]:
    """A new network namespace with lo up; deleted on exit, whatever happened.

    Where one cannot be made (no root, no `ip`), unavailable(reason): the test is
    skipped, or under CI=true fails. A deletion that meets anything but "already
    gone" raises (nmbridge.lab.sandbox.delete_namespace, which also stops what
    still runs in it: a namespace outlives its file while a process is in it).
    """
    name = unique_name(what)
    try:
        command = sandbox.ip_command()
    except SystemFailure as err:
        unavailable(err.message)
    try:
        made = sandbox.run([command, "netns", "add", name], timeout=TIMEOUT, check=False)
    except SystemFailure:  # timed out: it may have been made all the same
        sandbox.delete_namespace(name)
        raise
    if made.returncode != 0:  # not made, so not deleted: the name may be another's
        unavailable(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sandbox.delete_namespace(name)


def add_veth(ns: str, name: str, peer: str) -> None:
    """A veth pair inside namespace ns, both ends up and quiet: no IPv6 address is
    made on them (addrgenmode none), so the kernel sends nothing of its own (router
    solicitations, MLD reports) for a test to count as traffic."""
    ip("-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer)
    for end in (peer, name):
        ip("-n", ns, "link", "set", end, "addrgenmode", "none")
        ip("-n", ns, "link", "set", end, "up")

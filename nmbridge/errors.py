"""Every failure a user can cause or meet, each with its exit status.

The table EXIT_STATUSES is the one source of the exit statuses: the CLI maps
exceptions through it, the man page lists it, and a test checks that the two
agree.
"""

from __future__ import annotations

import errno
import os
from typing import ClassVar

#: exit status -> what it means (the man page's EXIT STATUS section says the same)
EXIT_STATUSES: dict[int, str] = {
    0: "success (also after SIGINT or SIGTERM: the bridge stopped cleanly)",
    1: "a port failed while the bridge was running (interface removed, persistent ring errors)",
    2: "usage error: bad option value or bad port name",
    3: "netmap is not available (no /dev/netmap)",
    4: "permission denied (needs root, or CAP_NET_ADMIN and CAP_NET_RAW)",
    5: "no such interface or port",
    6: "the interface or port is busy (opened by another program, or a packet: interface "
       "another nmbridge bridges)",
    7: "the kernel refused the request (netmap API mismatch, option refused)",
    8: "no running instance, or its stats file is missing",
    9: "a stats file is corrupt, truncated, or of a newer format",
    10: "nmbridge check: the interface is not ready for netmap",
    11: "a system call failed in a way not listed above",
    130: "interrupted by Ctrl-C where the bridge's signal handling does not catch it "
         "(while the ports are being opened, for instance)",
}


class NmbridgeError(Exception):
    """Base class: a failure with one line of explanation and an exit status."""

    exit_status: ClassVar[int] = 11

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PortFailed(NmbridgeError):
    """A port failed while forwarding (interface vanished, errors that persist)."""

    exit_status = 1


class UsageError(NmbridgeError):
    """A bad option value or combination."""

    exit_status = 2


class BadPortName(UsageError):
    """A port name that cannot be read; the message names the bad part."""

    exit_status = 2


class NetmapMissing(NmbridgeError):
    """/dev/netmap does not exist: the netmap module is not loaded."""

    exit_status = 3


class PermissionDenied(NmbridgeError):
    """The operation needs root, or CAP_NET_ADMIN and CAP_NET_RAW."""

    exit_status = 4


class NoSuchPort(NmbridgeError):
    """The interface or port does not exist."""

    exit_status = 5


class PortBusy(NmbridgeError):
    """The interface or port is already opened by someone else."""

    exit_status = 6


class KernelRefused(NmbridgeError):
    """The kernel refused a request: API mismatch, bad ring, unsupported option."""

    exit_status = 7


class NotRunning(NmbridgeError):
    """No running instance, or its stats file is missing."""

    exit_status = 8


class StatsCorrupt(NmbridgeError):
    """A stats file that cannot be read: corrupt, truncated, newer format."""

    exit_status = 9


class NotReady(NmbridgeError):
    """`nmbridge check` found the interface not ready for netmap."""

    exit_status = 10


class SystemFailure(NmbridgeError):
    """A system call failed in a way that has no more specific class."""

    exit_status = 11


#: the statuses the CLI returns without an exception of ours (click's usage errors, Ctrl-C)
USAGE_STATUS = UsageError.exit_status
INTERRUPTED_STATUS = 130


def from_errno(err: int, what: str) -> NmbridgeError:
    """The exception for an errno met while doing `what` (a system call of nmbridge's
    or the C core's negative return code)."""
    reason = os.strerror(err)
    if err in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{what}: permission denied (run as root or with CAP_NET_ADMIN)")
    if err in (errno.ENXIO, errno.ENODEV):
        return NoSuchPort(f"{what}: no such interface or port")
    if err == errno.EBUSY:
        return PortBusy(f"{what}: busy (another program has it open)")
    if err in (errno.EINVAL, errno.EOPNOTSUPP):
        return KernelRefused(f"{what}: refused by the kernel ({reason})")
    return SystemFailure(f"{what}: {reason}")


def all_error_classes() -> list[type[NmbridgeError]]:
    """Every error class, for the tests that check the table and the man page."""
    seen: list[type[NmbridgeError]] = []
    stack: list[type[NmbridgeError]] = [NmbridgeError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen

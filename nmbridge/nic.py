"""Interfaces as the control plane sees them: links (through netlink), MTU,
and the warnings a port gets before the bridge starts.

Rule 8 of the design lives here: on netmap's generic adapter poll() and the
sync ioctls block unkillably while a port's link is down, so the link of
every kernel port is watched through netlink and the C loop is told to keep
out of the kernel until it is up again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from nmbridge import sysfs, terminal
from nmbridge.errors import NmbridgeError, UsageError
from nmbridge.portspec import NIC_KINDS, NIC_RING_KINDS, PortSpec

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
NLMSG_HDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

#: port kinds whose name is a real interface of this host
#: netmap's fwd parameter: 1 copies every released NIC RX slot to the host stack
NETMAP_FWD_PARAM = "/sys/module/netmap/parameters/fwd"


def link_up(ifname: str) -> bool:
    """Administratively up and with carrier (IFF_UP and IFF_LOWER_UP)."""
    flags = sysfs.read_int(ifname, "flags")
    if flags is None or not flags & IFF_UP:
        return False
    return sysfs.read(ifname, "carrier") == "1"


def port_interface(spec: PortSpec) -> str | None:
    """The host interface behind a port, if it has one."""
    if spec.emulated or spec.kind in NIC_KINDS:
        return spec.ifname
    return None


def port_warnings(spec: PortSpec, all_specs: Sequence[PortSpec]) -> list[str]:
    """What a user should know before this port forwards."""
    out: list[str] = start_warnings(spec) if spec.kind != "host" else []
    if spec.kind in ("host", "host-ring") and not any(
        s.kind in NIC_RING_KINDS and s.ifname == spec.ifname for s in all_specs
    ):
        out.append(
            f"{spec.text}: the host rings alone see no traffic unless the NIC rings of "
            f"{spec.ifname} are in netmap mode too (bridge it with netmap:{spec.ifname})"
        )
    return out


class LinkWatcher:
    """Follows the links of a bridge's ports through a netlink socket."""

    def __init__(self, ports: Sequence[tuple[PortSpec, Any]]) -> None:
        # ifindex -> (name, its ports, any of them a kernel port); one interface can
        # carry two ports (`nmbridge eth0`: the wire and the host rings), and both
        # must keep out of the kernel while its link is down
        self._tracked: dict[int, tuple[str, list[tuple[Any, bool]], bool]] = {}
        self._state: dict[int, bool] = {}
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        for spec, port in ports:
            ifname = port_interface(spec)
            if ifname is None:
                continue
            try:
                index = socket.if_nametoindex(ifname)
            except OSError:
                continue
            name, on_link, kernel = self._tracked.get(index, (ifname, [], False))
            on_link.append((port, not spec.emulated))
            self._tracked[index] = (name, on_link, kernel or not spec.emulated)
        if not self._tracked:
            return
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_LINK))
            sock.settimeout(0.2)
            self._sock = sock
        except OSError as exc:
            terminal.warn(f"cannot watch links through netlink ({exc.strerror})")
        for index, (ifname, _port, _k) in self._tracked.items():
            self._apply(index, link_up(ifname), initial=True)
        if self._sock is not None:
            # its own thread: the C loop holds no GIL, so a link that goes down is seen
            # at once, not at the loop's next return to Python
            self._thread = threading.Thread(target=self._watch, name="nmbridge-link", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._closing.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                data = sock.recv(65536)
            except socket.timeout:  # TimeoutError from 3.10 on; not on 3.9
                continue
            except OSError:
                return
            self._parse(data)

    def _apply(self, index: int, up: bool, initial: bool = False) -> None:
        with self._lock:
            self._apply_locked(index, up)

    def _apply_locked(self, index: int, up: bool) -> None:
        ifname, on_link, kernel = self._tracked[index]
        before = self._state.get(index)
        self._state[index] = up
        # emulated ports too: a packet socket retries a frame the link refuses, at
        # full speed (a core busy, tx_dropped counting attempts, not frames), and a
        # TAP that is down refuses writes: the frames wait on the ring instead, and
        # what does not fit there is dropped and counted once, where it arrives
        for port, _is_kernel in on_link:
            port.set_link_down(not up)
        if before is None and up:
            return
        if before == up:
            return
        if up:
            terminal.info(f"nmbridge: link of {ifname} is up: forwarding")
        elif kernel:
            terminal.warn(f"link of {ifname} is down: waiting for it (the ring stays untouched)")
        else:
            terminal.warn(f"link of {ifname} is down: frames for it wait, then the kernel "
                          "drops them")

    def poll(self) -> None:
        """Catch up with the links where netlink is not available (never blocks)."""
        if self._thread is not None:
            return
        for index, (ifname, _p, _k) in self._tracked.items():
            up = link_up(ifname)
            if self._state.get(index) != up:
                self._apply(index, up)

    def _parse(self, data: bytes) -> None:
        off = 0
        while off + NLMSG_HDR.size <= len(data):
            length, mtype, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
            if length < NLMSG_HDR.size:
                return
            body = off + NLMSG_HDR.size
            if mtype in (RTM_NEWLINK, RTM_DELLINK) and body + IFINFOMSG.size <= len(data):
                _family, _type, index, flags, _change = IFINFOMSG.unpack_from(data, body)
                if index in self._tracked:
                    up = mtype == RTM_NEWLINK and bool(flags & IFF_UP) and bool(
                        flags & IFF_LOWER_UP
                    )
                    self._apply(index, up)
            off += (length + 3) & ~3

    def all_up(self) -> bool:
        return all(self._state.get(i, False) for i in self._tracked)

    def wait_up(self, seconds: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Wait up to `seconds` for every watched link to be up, or until stop() is true."""
        if seconds <= 0 or self.all_up():
            return
        down = [self._tracked[i][0] for i in self._tracked if not self._state.get(i)]
        terminal.info(f"nmbridge: waiting up to {seconds:g} s for the link of {', '.join(down)}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.all_up() and not stop():
            time.sleep(0.05)
            for index, (ifname, _p, _k) in self._tracked.items():
                if not self._state.get(index) and link_up(ifname):
                    self._apply(index, True)

    def close(self) -> None:
        if not self._tracked:
            return
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


#: offloads that break a NIC in netmap mode (the host stack loses TCP through the host
#: rings, or frames arrive merged or unchecksummed): all of them off
NETMAP_OFFLOADS = (
    "rx-checksumming",
    "tx-checksumming",
    "scatter-gather",
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "large-receive-offload",
)
#: for an AF_PACKET port: offloads that hand it frames larger than the MTU
PACKET_OFFLOADS = ("generic-receive-offload", "large-receive-offload")


def netmap_buf_size(default: int = 2048) -> int:
    """The netmap buffer size from the module's parameters, or netmap's default."""
    try:
        with open("/sys/module/netmap/parameters/buf_size") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default


def offloads_on(ifname: str, which: Sequence[str] = NETMAP_OFFLOADS) -> list[str]:
    from nmbridge import engine

    states = engine.ethtool.read_offloads(ifname)
    return [name for name in which if states.get(name)]


def netmap_fwd_warning(path: str = NETMAP_FWD_PARAM) -> list[str]:
    """With dev.netmap.fwd=1 netmap itself passes released NIC RX slots to the host stack:
    the buffers a zero-copy bridge swapped in, so stale frames would reach the stack."""
    try:
        with open(path) as f:
            on = f.read().strip() not in ("", "0")
    except OSError:
        return []
    if on:
        return ["netmap's fwd parameter is on: released NIC frames are also copied to the "
                "host stack (stale ones, under zero-copy); turn it off: "
                f"echo 0 > {path}"]
    return []


def start_warnings(spec: PortSpec) -> list[str]:
    """Warnings about an interface's settings, given when a bridge starts."""
    ifname = port_interface(spec)
    if ifname is None or not sysfs.exists(ifname):
        return []
    try:
        if spec.emulated:
            if spec.kind != "packet":
                return []
            on = offloads_on(ifname, PACKET_OFFLOADS)
            if on:
                return [f"{ifname}: {', '.join(on)} on: merged frames larger than the MTU "
                        "are dropped (run 'nmbridge check --fix " + ifname + "')"]
            return []
        on = offloads_on(ifname)
    except Exception:  # a NIC that cannot be asked gets no warning, not a failure
        return []
    if on:
        return [f"{ifname}: offloads on ({', '.join(on)}): TCP through the host rings fails "
                f"silently; turn them off with 'nmbridge check --fix {ifname}'"]
    return []


def _groups(bits: Sequence[str]) -> list[str]:
    """The ethtool -K names that the feature bits fall in, in NETMAP_OFFLOADS order."""
    from nmbridge import engine

    return [g for g in NETMAP_OFFLOADS if set(engine.ethtool.FEATURE_GROUPS[g]) & set(bits)]


class NicOffloads:
    """--offloads off: the offloads a NIC in netmap mode must not have, turned off
    before the bridge opens it and turned back on, exactly those, when it stops.

    What was on is recorded in the stats directory (a 0600 file per interface and
    network namespace, locked while the bridge runs), so that a bridge killed with
    them off is followed by one that puts them back: a restarted unit reads the
    record its predecessor left and merges it with what it finds on. A record
    locked by a running bridge is that bridge's: its interface is left alone. The
    unit of change is the kernel's feature bit (ETHTOOL_GFEATURES), not ethtool -K's
    group: a bit of a group that was off by itself (tx-tcp6-segmentation) stays off.
    """

    def __init__(self, ifnames: Sequence[str], stats_dir: str) -> None:
        self._ifnames = list(dict.fromkeys(ifnames))
        self._stats_dir = stats_dir
        self._dfd = -1
        self._held: list[tuple[str, int, list[str]]] = []  # (ifname, record fd, names)
        self._said: list[tuple[bool, str]] = []  # (a warning?, the line) for announce()

    def __enter__(self) -> NicOffloads:
        if not self._ifnames:
            return self
        from nmbridge import counters

        try:
            self._dfd = counters.open_stats_dir(self._stats_dir)
        except OSError as exc:
            raise counters.stats_dir_error(
                f"cannot keep the offloads' record in {self._stats_dir}", exc) from None
        try:
            for ifname in self._ifnames:
                try:
                    self._turn_off(ifname)
                except OSError as exc:
                    raise counters.stats_dir_error(
                        f"cannot keep {ifname}'s offloads' record in {self._stats_dir}",
                        exc) from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def _record_name(self, ifname: str) -> str:
        return f".offloads.net{sysfs.netns_inode()}.{ifname}"

    def _turn_off(self, ifname: str) -> None:
        import fcntl
        import json

        from nmbridge import engine

        name = self._record_name(ifname)
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o600, dir_fd=self._dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
                raise UsageError(f"{self._stats_dir}/{name} is not nmbridge's own: remove it")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return  # another bridge's: its offloads are its own
        except BaseException:
            os.close(fd)
            raise
        bits = [b for group in NETMAP_OFFLOADS for b in engine.ethtool.FEATURE_GROUPS[group]]
        try:
            earlier = [str(n) for n in json.loads(os.pread(fd, 4096, 0) or b"[]") if n in bits]
        except (ValueError, TypeError):
            earlier = []
        try:
            names = engine.ethtool.feature_names(ifname)
            states = engine.ethtool.read_features(ifname, names)
        except BaseException:
            os.close(fd)
            raise
        active = [b for b in bits if states.get(b, (False, False))[0]]
        wanted = [b for b in bits if b in active or b in earlier]
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(wanted).encode(), 0)  # before any change: a kill finds it
        self._held.append((ifname, fd, wanted))  # an interrupt from here on restores these
        changeable = [b for b in active if states[b][1]]
        if changeable:
            try:
                engine.ethtool.set_features(ifname, {b: False for b in changeable}, names)
            except NmbridgeError as exc:
                terminal.warn(exc.message)
        after = engine.ethtool.read_features(ifname, names)
        turned = [b for b in active if not after.get(b, (False, False))[0]]
        fixed = [b for b in active if b not in turned]
        off = [b for b in bits if b in turned or (b in earlier and b not in fixed)]
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(off).encode(), 0)
        self._held[-1] = (ifname, fd, off)
        if turned:
            self._said.append((False, f"nmbridge: {ifname}: offloads off for netmap mode "
                               f"({', '.join(_groups(turned))}); back on when the bridge "
                               "stops"))
        if fixed:
            self._said.append((True, f"{ifname}: cannot turn off {', '.join(fixed)} (the "
                               "driver keeps them): TCP through the host rings may fail"))
        left = [b for b in off if b not in turned]
        if left:
            self._said.append((False, f"nmbridge: {ifname}: {', '.join(left)} left off by a "
                               "bridge before this one: back on when it stops"))

    def announce(self) -> None:
        """Say what was changed: once the bridge runs (a start that fails changed
        nothing in the end, and says only why it failed)."""
        for warning, line in self._said:
            (terminal.warn if warning else terminal.info)(line)
        self._said = []

    def __exit__(self, *exc: object) -> None:
        from nmbridge import engine

        for ifname, fd, off in reversed(self._held):
            # exactly the feature bits it turned off: one request, the kernel orders them
            failed = False
            if off:
                try:
                    names = engine.ethtool.feature_names(ifname)
                    engine.ethtool.set_features(ifname, {b: True for b in off}, names)
                    after = engine.ethtool.read_features(ifname, names)
                    failed = not all(after.get(b, (False, False))[0] for b in off)
                except NmbridgeError as err:
                    failed = True
                    terminal.warn(f"{err.message} (they were on before the bridge)")
                if failed:
                    terminal.warn(f"{ifname}: not all of {', '.join(off)} came back on")
            if not failed:
                with contextlib.suppress(OSError):
                    os.unlink(self._record_name(ifname), dir_fd=self._dfd)
            os.close(fd)
        self._held = []
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

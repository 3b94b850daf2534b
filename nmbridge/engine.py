"""The one module that touches nmbridge's C core (cffi `ffi` and `lib`).

It checks arguments before calling C, turns every negative errno the core
returns into a nmbridge exception, and hands plain Python types upwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nmbridge import __version__
from nmbridge.errors import (
    KernelRefused,
    NetmapMissing,
    NmbridgeError,
    NoSuchPort,
    PermissionDenied,
    PortBusy,
    PortFailed,
    SystemFailure,
    UsageError,
)
from nmbridge.portspec import NIC_KINDS, PortSpec, RegisterRequest

try:
    from nmbridge._ffi._core import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "nmbridge's C core is not built: install the package with 'pip install .'"
    ) from exc


def _verify_core_version() -> None:
    built = ffi.string(lib.nmb_version()).decode()
    if built != __version__:
        raise ImportError(
            f"nmbridge's C core was built for version {built}, the package is {__version__}: "
            "reinstall nmbridge"
        )


_verify_core_version()

#: the netmap control device; NMBRIDGE_NETMAP_DEVICE names another (tests use a fake one)
NETMAP_DEVICE = os.environ.get("NMBRIDGE_NETMAP_DEVICE", "/dev/netmap")
DEFAULT_SLOTS = 1024
DEFAULT_BUF_SIZE = 2048
SOCKET_BUFFER = 4 * 1024 * 1024

RUN_BUDGET = lib.NMB_RUN_BUDGET
RUN_STOP = lib.NMB_RUN_STOP
RUN_LIMIT = lib.NMB_RUN_LIMIT
RUN_SIGNAL = lib.NMB_RUN_SIGNAL

STATE_NAMES = {
    lib.NMB_STATE_STARTING: "starting",
    lib.NMB_STATE_RUNNING: "running",
    lib.NMB_STATE_LINK_WAIT: "link-wait",
    lib.NMB_STATE_STOPPED: "stopped",
}


def constant(name: str) -> int:
    """A netmap constant by name (NR_REG_ALL_NIC, NR_EXCLUSIVE, NS_MOREFRAG...)."""
    value = getattr(lib, name, None)
    if not isinstance(value, int):
        raise KeyError(name)
    return value


def ioctl_numbers() -> dict[str, int]:
    """The ioctl request numbers as the C headers compute them."""
    names = ("NIOCCTRL", "NIOCTXSYNC", "NIOCRXSYNC", "NIOCREGIF", "NIOCGINFO")
    return {name: int(lib.nmb_ioctl_number(i)) for i, name in enumerate(names)}


def _error_for(err: int, what: str) -> NmbridgeError:
    """The nmbridge exception for an errno met while doing `what`."""
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


# ---------------------------------------------------------------- requests


def _fill_request(req: RegisterRequest, hdr: Any, reg: Any) -> None:
    name = req.nr_name.encode()
    if len(name) >= lib.NETMAP_REQ_IFNAMSIZ:
        raise UsageError(f"port name '{req.nr_name}' is longer than netmap allows")
    hdr.nr_version = lib.NETMAP_API
    hdr.nr_reqtype = lib.NETMAP_REQ_REGISTER
    hdr.nr_name = name
    reg.nr_mode = constant(req.nr_mode)
    reg.nr_ringid = req.nr_ringid
    flags = 0
    for flag in req.nr_flags:
        flags |= constant(flag)
    reg.nr_flags = flags
    reg.nr_mem_id = req.nr_mem_id
    reg.nr_tx_slots = req.nr_tx_slots
    reg.nr_rx_slots = req.nr_rx_slots
    reg.nr_tx_rings = req.nr_tx_rings
    reg.nr_rx_rings = req.nr_rx_rings
    reg.nr_host_tx_rings = req.nr_host_tx_rings
    reg.nr_host_rx_rings = req.nr_host_rx_rings


def register_request_bytes(req: RegisterRequest) -> tuple[bytes, bytes]:
    """The nmreq_header (pointers zeroed) and nmreq_register bytes for a request."""
    hdr = ffi.new("struct nmreq_header *")
    reg = ffi.new("struct nmreq_register *")
    _fill_request(req, hdr, reg)
    return bytes(ffi.buffer(hdr)), bytes(ffi.buffer(reg))


# ---------------------------------------------------------------- ports


@dataclass(frozen=True)
class RingInfo:
    """One ring of a port, as the stats and the live view name it."""

    port: int
    direction: str  # "rx" or "tx"
    ringid: int
    host: bool


@dataclass
class RegisterReply:
    """What the kernel answered to a register (the fields `nmbridge check` shows)."""

    nr_memsize: int
    nr_offset: int
    nr_mem_id: int
    nr_tx_rings: int
    nr_rx_rings: int
    nr_host_tx_rings: int
    nr_host_rx_rings: int
    nr_tx_slots: int
    nr_rx_slots: int


class Port:
    """An open port: a C `struct nmb_port` and what keeps its memory alive."""

    def __init__(self, spec: PortSpec, cport: Any, keepalive: Any = None) -> None:
        self.spec = spec
        self._c = cport
        self._keepalive = keepalive
        self.reply: RegisterReply | None = None
        self.created_tap = False
        self._isolation_fd: int | None = None
        self._claim: socket.socket | None = None  # packet: ports: the interface's claim

    @property
    def c(self) -> Any:
        return self._c

    @property
    def kind(self) -> str:
        return {
            lib.NMB_PORT_KERNEL: "kernel",
            lib.NMB_PORT_PACKET: "packet",
            lib.NMB_PORT_TAP: "tap",
        }.get(self._c.kind, "unknown")

    @property
    def fd(self) -> int:
        return int(self._c.fd)

    def rings(self, index: int) -> list[RingInfo]:
        c = self._c
        nif = c.nifp
        out = []
        for direction, count, rings, nic in (
            ("rx", c.nrx, c.rx, nif.ni_rx_rings),
            ("tx", c.ntx, c.tx, nif.ni_tx_rings),
        ):
            for r in range(count):
                ringid = int(rings[r].ringid)
                out.append(RingInfo(index, direction, ringid, host=ringid >= nic))
        return out

    def set_link_down(self, down: bool) -> None:
        self._c.link_down = 1 if down else 0

    def isolate(self) -> None:
        """Take a packet: port's interface away from the host stack, as netmap mode does:
        what it receives reaches the bridge and no longer the kernel's protocols. Undone
        on close, and by the kernel when the process ends, however it ends."""
        assert self.kind == "packet"
        fd = ffi.new("int *")
        rc = lib.nmb_isolate_ingress(self._c.ifindex, fd)
        if rc == -errno.EINVAL:
            raise KernelRefused(
                f"{self.spec.text}: --isolate needs Linux 6.6 or newer (a tcx ingress hook)"
            )
        if rc < 0:
            raise _error_for(-rc, f"{self.spec.text}: cannot take the interface from the "
                             "host stack")
        self._isolation_fd = fd[0]

    def close(self) -> None:
        if self._isolation_fd is not None:
            os.close(self._isolation_fd)  # the host stack has the interface back
            self._isolation_fd = None
        if self._c is not None:
            ffi.release(self._c)  # runs nmb_port_free now, once
            self._c = None
        if self._claim is not None:
            self._claim.close()  # after the socket: the next bridge finds it free
            self._claim = None


class _KernelRegion:
    """One mmap of a netmap memory region, shared by the ports opened in it."""

    def __init__(self, base: Any, size: int, owner: Any = None) -> None:
        self.base = base
        self.size = size
        self.users = 0
        self._owner = owner  # an _ExtMem whose mapping this is

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.base is not None:
            if self._owner is not None:
                self._owner.release()
            else:
                lib.nmb_munmap_region(self.base, self.size)
            self.base = None


class _EmulatedRegion:
    """A user-space region holding the rings of a bridge's emulated ports."""

    def __init__(self, nports: int, slots: int, buf_size: int) -> None:
        rings = ffi.new("uint32_t[]", [1, 0, 1, 0] * nports)
        out = ffi.new("struct nmb_region **")
        rc = lib.nmb_region_new(nports, rings, slots, buf_size, out)
        if rc < 0:
            raise UsageError(f"cannot lay out a region of {slots} slots of {buf_size} bytes")
        self.c = out[0]
        self.users = 0

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.c is not None:
            lib.nmb_region_free(self.c)
            self.c = None


def _sysfs_int(ifname: str, attr: str) -> int | None:
    try:
        with open(f"/sys/class/net/{ifname}/{attr}") as f:
            return int(f.read().strip(), 0)
    except (OSError, ValueError):
        return None


def max_frame_for(ifname: str) -> int:
    """The largest frame an interface passes: MTU + Ethernet header + one VLAN tag."""
    mtu = _sysfs_int(ifname, "mtu") or 1500
    return mtu + 18


def _check_fd(rc: int, what: str) -> None:
    if rc < 0:
        raise _error_for(-rc, what)


def _claim_interface(spec: PortSpec, ifindex: int) -> socket.socket:
    """One bridge per packet: interface. Nothing in the kernel stops two AF_PACKET
    sockets on one interface, and two bridges there would each forward every frame:
    the claim is a listening abstract Unix socket named after the interface index. Such
    names live in the network namespace, as the index does; the kernel frees it when
    the process ends, however it ends. Busy: the claimant's pid, from SO_PEERCRED."""
    address = f"\0nmbridge/packet/{ifindex}"
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(address)
        claim.listen(16)  # room for the busy callers below: they never wait
        return claim
    except OSError as exc:
        claim.close()
        if exc.errno != errno.EADDRINUSE:
            raise _error_for(exc.errno or errno.EIO, f"{spec.text}: cannot claim "
                             f"{spec.ifname}") from None
    pid = 0
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        s.connect(address)
        pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    who = f"nmbridge (pid {pid})" if pid > 0 else "another nmbridge"
    raise PortBusy(f"{spec.text}: busy: {who} is bridging {spec.ifname}")


def _open_packet(spec: PortSpec, region: _EmulatedRegion, index: int) -> Port:
    try:
        ifindex = socket.if_nametoindex(spec.ifname)
    except OSError:
        raise NoSuchPort(f"{spec.text}: no interface named '{spec.ifname}'") from None
    claim = _claim_interface(spec, ifindex)
    try:
        cport = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
        cport.region = region.c
        port = Port(spec, cport, region)
        _check_fd(lib.nmb_port_bind(cport, lib.nmb_region_if(region.c, index)), spec.text)
        rc = lib.nmb_packet_open(cport, ifindex, max_frame_for(spec.ifname), SOCKET_BUFFER)
        if rc in (-errno.EPERM, -errno.EACCES):
            raise PermissionDenied(f"{spec.text}: cannot open an AF_PACKET socket: "
                                   "permission denied (needs root or CAP_NET_RAW)")
        if rc < 0:
            raise _error_for(-rc, f"{spec.text}: cannot open an AF_PACKET socket")
    except BaseException:
        claim.close()
        raise
    port._claim = claim
    return port


def _open_tap(spec: PortSpec, region: _EmulatedRegion, index: int) -> Port:
    existed = os.path.exists(f"/sys/class/net/{spec.ifname}")
    if existed and not os.path.exists(f"/sys/class/net/{spec.ifname}/tun_flags"):
        raise PortBusy(f"{spec.text}: '{spec.ifname}' exists and is not a TAP device")
    cport = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
    cport.region = region.c
    port = Port(spec, cport, region)
    _check_fd(lib.nmb_port_bind(cport, lib.nmb_region_if(region.c, index)), spec.text)
    max_frame = max_frame_for(spec.ifname) if existed else 1518
    rc = lib.nmb_tap_open(cport, spec.ifname.encode(), max_frame, 0 if existed else 1)
    if rc < 0:
        if -rc == errno.ENOENT:
            raise SystemFailure(f"{spec.text}: /dev/net/tun is missing (load the tun module)")
        raise _error_for(-rc, f"{spec.text}: cannot open the TAP device")
    port.created_tap = not existed
    return port


def _netmap_missing() -> NetmapMissing:
    return NetmapMissing(
        "netmap is not available: /dev/netmap does not exist; load the module "
        "('modprobe netmap' on Linux, 'kldload netmap' on FreeBSD), or try the emulated "
        "ports: nmbridge -i packet:IFACE -i tap:NAME"
    )


def _open_device(text: str) -> Any:
    if not os.path.exists(NETMAP_DEVICE):
        raise _netmap_missing()
    cport = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
    rc = lib.nmb_kport_open(cport, NETMAP_DEVICE.encode())
    if rc < 0:
        if -rc == errno.ENOENT:
            raise _netmap_missing()
        raise _error_for(-rc, f"{text}: cannot open {NETMAP_DEVICE}")
    return cport


def _share_mem_id(spec: PortSpec, share: str) -> int:
    """@share=PORT: the memory region PORT is in (NETMAP_REQ_PORT_INFO_GET)."""
    from nmbridge.portspec import parse_port

    other = parse_port(share)
    if other.request is None:
        raise UsageError(f"{spec.text}: @share needs a netmap port, not '{share}'")
    return port_info(other).nr_mem_id


class _ExtMem:
    """@extmem:file=PATH: the file mapped as the memory of the port's region."""

    def __init__(self, spec: PortSpec, keys: dict[str, str]) -> None:
        path = keys["file"]
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"{spec.text}: cannot open '{path}': {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise UsageError(f"{spec.text}: '{path}' is empty: it cannot hold a region")
            base = ffi.new("void **")
            rc = lib.nmb_mmap_region(fd, size, base)
            if rc < 0:
                raise _error_for(-rc, f"{spec.text}: cannot map '{path}'")
        finally:
            os.close(fd)
        self.base = base[0]
        self.size = size
        opt = ffi.new("struct nmreq_opt_extmem *")
        opt.nro_opt.nro_reqtype = lib.NETMAP_REQ_OPT_EXTMEM
        opt.nro_usrptr = int(ffi.cast("uintptr_t", self.base))
        info = opt.nro_info
        info.nr_memsize = size
        for key, field in (
            ("if_num", "nr_if_pool_objtotal"),
            ("if_size", "nr_if_pool_objsize"),
            ("ring_num", "nr_ring_pool_objtotal"),
            ("ring_size", "nr_ring_pool_objsize"),
            ("buf_num", "nr_buf_pool_objtotal"),
            ("buf_size", "nr_buf_pool_objsize"),
        ):
            if key in keys:
                setattr(info, field, int(keys[key]))
        self.option = opt

    def release(self) -> None:
        if self.base is not None:
            lib.nmb_munmap_region(self.base, self.size)
            self.base = None


def _open_kernel(spec: PortSpec, regions: dict[int, _KernelRegion]) -> Port:
    req = spec.request
    assert req is not None
    if req.offset is not None:
        raise UsageError(
            f"{spec.text}: @offset is not for bridging: nmbridge's engine moves whole "
            "buffers and does not use buffer offsets; open the port without it"
        )
    cport = _open_device(spec.text)
    hdr = ffi.new("struct nmreq_header *")
    reg = ffi.new("struct nmreq_register *")
    _fill_request(req, hdr, reg)
    if req.share is not None:
        reg.nr_mem_id = _share_mem_id(spec, req.share)
    extmem = _ExtMem(spec, req.extmem) if req.extmem is not None else None
    if extmem is not None:
        hdr.nr_options = int(ffi.cast("uintptr_t", extmem.option))
    hdr.nr_body = int(ffi.cast("uintptr_t", reg))
    try:
        rc = lib.nmb_kport_register(cport, hdr)
        if rc < 0:
            raise _register_error(spec, -rc, extmem)
    except BaseException:
        if extmem is not None:
            extmem.release()
        raise
    port = Port(spec, cport)
    port.reply = RegisterReply(
        nr_memsize=int(reg.nr_memsize),
        nr_offset=int(reg.nr_offset),
        nr_mem_id=int(reg.nr_mem_id),
        nr_tx_rings=int(reg.nr_tx_rings),
        nr_rx_rings=int(reg.nr_rx_rings),
        nr_host_tx_rings=int(reg.nr_host_tx_rings),
        nr_host_rx_rings=int(reg.nr_host_rx_rings),
        nr_tx_slots=int(reg.nr_tx_slots),
        nr_rx_slots=int(reg.nr_rx_slots),
    )
    region = regions.get(port.reply.nr_mem_id)
    if region is None:
        if extmem is not None:
            region = _KernelRegion(extmem.base, extmem.size, owner=extmem)
        else:
            base = ffi.new("void **")
            rc = lib.nmb_mmap_region(cport.fd, reg.nr_memsize, base)
            if rc < 0:
                raise _error_for(-rc, f"{spec.text}: cannot map the netmap region")
            region = _KernelRegion(base[0], int(reg.nr_memsize))
        regions[port.reply.nr_mem_id] = region
    elif extmem is not None:
        extmem.release()
    region.users += 1
    port._keepalive = region
    nifp = ffi.cast("struct netmap_if *", ffi.cast("char *", region.base) + reg.nr_offset)
    rc = lib.nmb_port_bind(cport, nifp)
    if rc < 0:
        close_ports([port])  # its mapping too, unless another port uses it
        if rc == -errno.E2BIG:
            raise UsageError(
                f"{spec.text}: more rings than nmbridge bridges ({lib.NMB_MAX_RINGS} each way); "
                f"open fewer (netmap:{spec.ifname}-N for one ring pair)"
            )
        raise _error_for(-rc, spec.text)
    if spec.ifname and spec.kind in NIC_KINDS:
        with contextlib.suppress(OSError):  # the loop tells a NIC that went away by it
            cport.ifindex = socket.if_nametoindex(spec.ifname)
    return port


def _legacy_api() -> int:
    """The API version the module names through the legacy NIOCGINFO (0 if it names none):
    modules before NIOCCTRL answer a version they do not speak with their own."""
    api = ffi.new("uint32_t *")
    lib.nmb_kport_legacy_api(NETMAP_DEVICE.encode(), api)
    return int(api[0])


def _api_mismatch(spec: PortSpec, api: int) -> KernelRefused:
    fix = "update nmbridge" if api > lib.NETMAP_MAX_API else "update the netmap module"
    return KernelRefused(
        f"{spec.text}: the netmap module speaks API {api}, nmbridge speaks "
        f"{lib.NETMAP_API}..{lib.NETMAP_MAX_API}: {fix}"
    )


def _register_error(spec: PortSpec, err: int, extmem: _ExtMem | None) -> NmbridgeError:
    assert spec.request is not None
    if err == errno.ENOTTY:  # no NIOCCTRL: a module older than API 14
        return _api_mismatch(spec, _legacy_api())
    if err == errno.ENXIO:
        return NoSuchPort(f"{spec.text}: no interface or port '{spec.request.nr_name}'")
    if err == errno.EBUSY:
        return PortBusy(f"{spec.text}: busy (another program has these rings open)")
    if err == errno.EOPNOTSUPP and extmem is not None:
        return KernelRefused(f"{spec.text}: the kernel refused @extmem (built without it?)")
    if err == errno.EINVAL:
        api = _legacy_api()  # a version out of the module's range is EINVAL too
        if api and not lib.NETMAP_API <= api <= lib.NETMAP_MAX_API:
            return _api_mismatch(spec, api)
        return KernelRefused(
            f"{spec.text}: the kernel refused the register (EINVAL): a ring that does not "
            "exist, or a mode the port does not support"
        )
    return _error_for(err, spec.text)


def open_ports(
    specs: Sequence[PortSpec], slots: int = DEFAULT_SLOTS, buf_size: int = DEFAULT_BUF_SIZE
) -> list[Port]:
    """Open the ports of one bridge; emulated ports share one region, kernel ports
    of one netmap memory region share one mapping."""
    emulated = [s for s in specs if s.emulated]
    eregion = _EmulatedRegion(len(emulated), slots, buf_size) if emulated else None
    kregions: dict[int, _KernelRegion] = {}
    ports: list[Port] = []
    try:
        e_index = 0
        for spec in specs:
            if spec.emulated:
                assert eregion is not None
                opener = _open_tap if spec.kind == "tap" else _open_packet
                port = opener(spec, eregion, e_index)
                eregion.users += 1
                e_index += 1
            else:
                port = _open_kernel(spec, kregions)
            ports.append(port)
    except BaseException:
        close_ports(ports)
        if eregion is not None and eregion.users == 0:
            eregion.users = 1
            eregion.release()
        raise
    return ports


def close_ports(ports: Sequence[Port]) -> None:
    for port in ports:
        keep = port._keepalive
        port.close()
        if isinstance(keep, (_KernelRegion, _EmulatedRegion)):
            keep.release()


# ---------------------------------------------------------------- stats layout


def stats_record_fields() -> list[str]:
    """Field names of one ring's counter record, in memory order (all u64)."""
    fields = ffi.typeof("struct nmb_ring_stats").fields
    names: list[str] = []
    for name, field in fields:
        if name == "spare":
            continue
        names.append(name)
        assert field.type is ffi.typeof("uint64_t")
    return names


def stats_record_size() -> int:
    return int(ffi.sizeof("struct nmb_ring_stats"))


def stats_header_size() -> int:
    """Size of the shared counters header that precedes the ring records."""
    return int(ffi.offsetof("struct nmb_stats_shared", "ring"))


def stats_header_offsets() -> dict[str, int]:
    return {
        name: int(ffi.offsetof("struct nmb_stats_shared", name))
        for name in ("seq", "heartbeat_ns", "nrings", "state")
    }


# ---------------------------------------------------------------- the bridge


@dataclass
class RunResult:
    reason: str  # "budget", "stop", "limit", "signal"
    forwarded: int


#: coalescing of emulated ports (Bridge's rx_usecs): 400 us gathers ~30 frames a
#: wake-up at 80k frames/s, half the CPU of waking for each (benchmarks/l2fwd.py)
DEFAULT_RX_USECS = 400
RX_USECS_MAX = 10000  # longer would be a stall, not a batch


class Bridge:
    """Two open ports and the C loop between them.

    rx_usecs: under a sustained load, emulated ports gather frames this long
    between wake-ups instead of waking for each (0: never).
    """

    def __init__(
        self,
        a: Port,
        b: Port,
        burst: int = 1024,
        zero_copy: bool = True,
        busy_poll: bool = False,
        poll_timeout_ms: int = 100,
        count: int = 0,
        rx_usecs: int = DEFAULT_RX_USECS,
    ) -> None:
        if not 1 <= burst <= 8192:
            raise UsageError(f"burst {burst} is out of range 1..8192")
        if not 0 <= rx_usecs <= RX_USECS_MAX:
            raise UsageError(f"rx-usecs {rx_usecs} is out of range 0..{RX_USECS_MAX}")
        self.ports = (a, b)
        c = lib.nmb_bridge_new(a.c, b.c, burst)
        if c == ffi.NULL:
            raise UsageError(
                "cannot bridge these ports: each needs at least one RX and one TX ring"
            )
        self._c = ffi.gc(c, lib.nmb_bridge_free)
        self.zero_copy_possible = bool(self._c.zerocopy)
        if not zero_copy:
            self._c.zerocopy = 0
        self._c.busy = 1 if busy_poll else 0
        self._c.coalesce_us = rx_usecs
        self._c.poll_timeout_ms = poll_timeout_ms
        self._c.count_limit = count
        self._shared_keep: Any = None

    @property
    def zero_copy(self) -> bool:
        return bool(self._c.zerocopy)

    @property
    def forwarded(self) -> int:
        return int(self._c.forwarded)

    def rings(self) -> list[RingInfo]:
        """The rings in the order of the stats records."""
        out: list[RingInfo] = []
        for i, port in enumerate(self.ports):
            out.extend(port.rings(i))
        return out

    def attach_shared(self, buffer: Any, offset: int) -> None:
        """Publish counters into a writable buffer (the stats file's mmap) at offset."""
        ptr = ffi.from_buffer(buffer)
        self._shared_keep = ptr
        self._c.shared = ffi.cast("struct nmb_stats_shared *", ptr + offset)
        lib.nmb_bridge_publish(self._c)

    def detach_shared(self) -> None:
        self._c.shared = ffi.NULL
        if self._shared_keep is not None:
            ffi.release(self._shared_keep)
        self._shared_keep = None

    def run(self, budget_ms: int) -> RunResult:
        """Forward for at most budget_ms (the GIL is released meanwhile)."""
        rc = lib.nmb_bridge_run(self._c, budget_ms)
        if rc < 0:
            idx = int(self._c.failed_port)
            port = self.ports[idx] if idx in (0, 1) else self.ports[0]
            err = int(self._c.failed_err)
            if err in (errno.ENODEV, errno.ENXIO, errno.EBADFD):
                raise PortFailed(f"{port.spec.text}: the interface went away")
            raise PortFailed(f"{port.spec.text}: {os.strerror(err)}")
        reason = {RUN_BUDGET: "budget", RUN_STOP: "stop", RUN_LIMIT: "limit"}.get(rc, "signal")
        return RunResult(reason, self.forwarded)

    def request_stop(self) -> None:
        lib.nmb_bridge_request_stop(self._c)

    def flush(self, timeout_ms: int = 1000) -> int:
        """Forward what the RX rings hold and push the TX rings out (for at most
        timeout_ms); what cannot go is counted as dropped. Returns that many frames."""
        return max(0, int(lib.nmb_bridge_flush(self._c, timeout_ms)))

    def counters(self) -> list[dict[str, int]]:
        """The private counters (the loop's own view); call between runs."""
        names = stats_record_fields()
        out = []
        for i in range(self._c.nstats):
            rec = self._c.stats[i]
            out.append({n: int(getattr(rec, n)) for n in names})
        return out

    def close(self) -> None:
        self.detach_shared()


# ---------------------------------------------------------------- NIC settings

#: offload name (as ethtool -k shows it) -> (get command, set command, flag bit or 0)
OFFLOADS: dict[str, tuple[int, int, int]] = {
    "rx-checksumming": (lib.ETHTOOL_GRXCSUM, lib.ETHTOOL_SRXCSUM, 0),
    "tx-checksumming": (lib.ETHTOOL_GTXCSUM, lib.ETHTOOL_STXCSUM, 0),
    "scatter-gather": (lib.ETHTOOL_GSG, lib.ETHTOOL_SSG, 0),
    "tcp-segmentation-offload": (lib.ETHTOOL_GTSO, lib.ETHTOOL_STSO, 0),
    "generic-segmentation-offload": (lib.ETHTOOL_GGSO, lib.ETHTOOL_SGSO, 0),
    "generic-receive-offload": (lib.ETHTOOL_GGRO, lib.ETHTOOL_SGRO, 0),
    "large-receive-offload": (lib.ETHTOOL_GFLAGS, lib.ETHTOOL_SFLAGS, lib.ETH_FLAG_LRO),
}


def read_offloads(ifname: str) -> dict[str, bool | None]:
    """Each offload's state through the ethtool ioctl; None where the NIC cannot say."""
    out: dict[str, bool | None] = {}
    value = ffi.new("uint32_t *")
    for name, (get, _set, bit) in OFFLOADS.items():
        rc = lib.nmb_ethtool_get(ifname.encode(), get, value)
        if rc == -errno.ENODEV:
            raise NoSuchPort(f"no interface named '{ifname}'")
        if rc < 0:
            out[name] = None
            continue
        out[name] = bool(value[0] & bit) if bit else bool(value[0])
    return out


def set_offload(ifname: str, name: str, on: bool) -> None:
    """Turn one offload on or off; raise if the NIC refuses."""
    get, set_, bit = OFFLOADS[name]
    if bit:
        value = ffi.new("uint32_t *")
        _check_fd(lib.nmb_ethtool_get(ifname.encode(), get, value), f"{ifname}: {name}")
        new = (value[0] | bit) if on else (value[0] & ~bit)
    else:
        new = 1 if on else 0
    rc = lib.nmb_ethtool_set(ifname.encode(), set_, new)
    if rc < 0:
        raise _error_for(-rc, f"{ifname}: cannot turn {name} {'on' if on else 'off'}")


def port_info(spec: PortSpec) -> RegisterReply:
    """Ring and slot counts of a netmap port without registering it (PORT_INFO_GET)."""
    assert spec.request is not None
    cport = _open_device(spec.text)
    hdr = ffi.new("struct nmreq_header *")
    info = ffi.new("struct nmreq_port_info_get *")
    hdr.nr_version = lib.NETMAP_API
    hdr.nr_reqtype = lib.NETMAP_REQ_PORT_INFO_GET
    hdr.nr_name = spec.request.nr_name.encode()
    hdr.nr_body = int(ffi.cast("uintptr_t", info))
    rc = lib.nmb_kport_register(cport, hdr)
    ffi.release(cport)
    if rc < 0:
        raise _register_error(spec, -rc, None)
    return RegisterReply(
        nr_memsize=int(info.nr_memsize),
        nr_offset=0,
        nr_mem_id=int(info.nr_mem_id),
        nr_tx_rings=int(info.nr_tx_rings),
        nr_rx_rings=int(info.nr_rx_rings),
        nr_host_tx_rings=int(info.nr_host_tx_rings),
        nr_host_rx_rings=int(info.nr_host_rx_rings),
        nr_tx_slots=int(info.nr_tx_slots),
        nr_rx_slots=int(info.nr_rx_slots),
    )

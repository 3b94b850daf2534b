"""Ports: open a bridge's ports in their memory regions, close them.

Kernel ports register on /dev/netmap and map the module's region (one mapping
per region, shared by its ports); emulated ports get a user-space region in
the same layout and open their sockets. What to open and how (the interface
exists, the largest frame, one bridge per interface) the control plane
decides; here each decision becomes C calls and each errno an exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nmbridge import sysfs
from nmbridge.engine._core import check, constant, ffi, lib
from nmbridge.errors import (
    KernelRefused,
    NetmapMissing,
    NmbridgeError,
    NoSuchPort,
    PermissionDenied,
    PortBusy,
    SystemFailure,
    UsageError,
    from_errno,
)
from nmbridge.portspec import NIC_KINDS, PortSpec, RegisterRequest

#: the netmap control device; NMBRIDGE_NETMAP_DEVICE names another (tests use a fake one)
NETMAP_DEVICE = os.environ.get("NMBRIDGE_NETMAP_DEVICE", "/dev/netmap")
DEFAULT_SLOTS = 1024
DEFAULT_BUF_SIZE = 2048
SOCKET_BUFFER = 4 * 1024 * 1024


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

    @classmethod
    def of(cls, reply: Any, nr_offset: int) -> RegisterReply:
        """From a struct nmreq_register or nmreq_port_info_get (same field names)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "nr_offset"]
        return cls(nr_offset=nr_offset, **{n: int(getattr(reply, n)) for n in names})


class Port:
    """An open port: a C `struct nmb_port` and what keeps its memory alive."""

    def __init__(self, spec: PortSpec, cport: Any, keepalive: Any = None) -> None:
        self.spec = spec
        self._c = cport
        self._keepalive = keepalive
        self.reply: RegisterReply | None = None
        self._isolation_fd: int | None = None
        #: called once the port is closed (the control plane's claim on its interface)
        self._on_close: list[Callable[[], None]] = []

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
            raise from_errno(-rc, f"{self.spec.text}: cannot take the interface from the "
                             "host stack")
        self._isolation_fd = fd[0]

    def close(self) -> None:
        if self._isolation_fd is not None:
            os.close(self._isolation_fd)  # the host stack has the interface back
            self._isolation_fd = None
        if self._c is not None:
            ffi.release(self._c)  # runs nmb_port_free now, once
            self._c = None
        while self._on_close:
            self._on_close.pop()()  # after the socket: the next bridge finds it free

    def on_close(self, release: Callable[[], None]) -> None:
        """Call release once this port is closed (or now, if it already is)."""
        self._on_close.append(release)
        if self._c is None:
            self.close()


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


@dataclass(frozen=True)
class EmulatedSetup:
    """What the control plane decided for an emulated port before it is opened."""

    max_frame: int  # the largest frame its interface passes
    create: bool = False  # tap: a TAP device to create (and bring up), not an existing one


def _open_packet(spec: PortSpec, setup: EmulatedSetup, region: _EmulatedRegion,
                 index: int) -> Port:
    try:
        ifindex = socket.if_nametoindex(spec.ifname)
    except OSError:
        raise NoSuchPort(f"{spec.text}: no interface named '{spec.ifname}'") from None
    cport = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
    cport.region = region.c
    port = Port(spec, cport, region)
    check(lib.nmb_port_bind(cport, lib.nmb_region_if(region.c, index)), spec.text)
    rc = lib.nmb_packet_open(cport, ifindex, setup.max_frame, SOCKET_BUFFER)
    if rc in (-errno.EPERM, -errno.EACCES):
        raise PermissionDenied(f"{spec.text}: cannot open an AF_PACKET socket: "
                               "permission denied (needs root or CAP_NET_RAW)")
    check(rc, f"{spec.text}: cannot open an AF_PACKET socket")
    return port


def _open_tap(spec: PortSpec, setup: EmulatedSetup, region: _EmulatedRegion,
              index: int) -> Port:
    cport = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
    cport.region = region.c
    port = Port(spec, cport, region)
    check(lib.nmb_port_bind(cport, lib.nmb_region_if(region.c, index)), spec.text)
    rc = lib.nmb_tap_open(cport, spec.ifname.encode(), setup.max_frame, int(setup.create))
    if rc == -errno.ENOENT:
        raise SystemFailure(f"{spec.text}: /dev/net/tun is missing (load the tun module)")
    check(rc, f"{spec.text}: cannot open the TAP device")
    return port


def _netmap_missing() -> NetmapMissing:
    return NetmapMissing(
        "netmap is not available: /dev/netmap does not exist; load the module "
        "('modprobe netmap' on Linux, 'kldload netmap' on FreeBSD), or try the emulated "
        "ports: nmbridge -i packet:IFACE -i tap:NAME"
    )


def require_netmap() -> None:
    """Raise NetmapMissing unless the netmap device is there."""
    if not os.path.exists(NETMAP_DEVICE):
        raise _netmap_missing()


def _open_device(text: str) -> Any:
    require_netmap()
    cport = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
    rc = lib.nmb_kport_open(cport, NETMAP_DEVICE.encode())
    if rc < 0:
        if -rc == errno.ENOENT:
            raise _netmap_missing()
        raise from_errno(-rc, f"{text}: cannot open {NETMAP_DEVICE}")
    return cport


def _share_mem_id(share: PortSpec) -> int:
    """@share=PORT: the memory region PORT is in (NETMAP_REQ_PORT_INFO_GET)."""
    return port_info(share).nr_mem_id


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
                raise from_errno(-rc, f"{spec.text}: cannot map '{path}'")
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
    if req.share_port is not None:
        reg.nr_mem_id = _share_mem_id(req.share_port)
    extmem = _ExtMem(spec, req.extmem) if req.extmem is not None else None
    if extmem is not None:
        hdr.nr_options = int(ffi.cast("uintptr_t", extmem.option))
    if spec.vnet_hdr:
        reg.nr_flags |= lib.NR_ACCEPT_VNET_HDR  # a port with headers already takes us
    hdr.nr_body = int(ffi.cast("uintptr_t", reg))
    try:
        rc = lib.nmb_kport_register(cport, hdr)
        if rc < 0:
            raise _register_error(spec, -rc, extmem)
        headerless = _set_vnet_hdr(cport, spec) if spec.vnet_hdr else False
    except BaseException:
        if extmem is not None:
            extmem.release()
        ffi.release(cport)  # closes the fd: the kernel unregisters the port
        raise
    port = Port(spec, cport)
    port.reply = RegisterReply.of(reg, int(reg.nr_offset))
    region = regions.get(port.reply.nr_mem_id)
    if region is None:
        if extmem is not None:
            region = _KernelRegion(extmem.base, extmem.size, owner=extmem)
        else:
            base = ffi.new("void **")
            rc = lib.nmb_mmap_region(cport.fd, reg.nr_memsize, base)
            if rc < 0:
                raise from_errno(-rc, f"{spec.text}: cannot map the netmap region")
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
        raise from_errno(-rc, spec.text)
    if spec.ifname and spec.kind in NIC_KINDS:
        with contextlib.suppress(OSError):  # the loop tells a NIC that went away by it
            cport.ifindex = socket.if_nametoindex(spec.ifname)
        mtu = sysfs.read_int(spec.ifname, "mtu")
        if mtu:  # segments of a super-frame longer than this are dropped, not sent
            cport.max_frame = sysfs.max_frame(spec.ifname)
    if headerless:
        _discard_headerless(cport)
    return port


def _port_hdr(cport: Any, spec: PortSpec, reqtype: int, length: int = 0) -> tuple[int, int]:
    """NETMAP_REQ_PORT_HDR_SET or _GET for the port spec names, asked on cport's control
    fd (bound or not: netmap looks the port up by name): (0 or -errno, nr_hdr_len)."""
    assert spec.request is not None
    hdr = ffi.new("struct nmreq_header *")
    body = ffi.new("struct nmreq_port_hdr *")
    hdr.nr_version = lib.NETMAP_API
    hdr.nr_reqtype = reqtype
    hdr.nr_name = spec.request.nr_name.encode()
    body.nr_hdr_len = length
    hdr.nr_body = int(ffi.cast("uintptr_t", body))
    rc = lib.nmb_kport_register(cport, hdr)  # NIOCCTRL, whatever the request
    return rc, int(body.nr_hdr_len)


def _set_vnet_hdr(cport: Any, spec: PortSpec) -> bool:
    """--vnet-hdr: the header length, set once the port is registered (netmap sets it
    only on a VALE port that exists, and the register is what creates one). A port that
    already carries headers of another length (a persistent port, set by the program
    that made it) is left as it is and refused: others may rely on it. Returns whether
    the length was set here (what came before it came without headers)."""
    want = spec.vnet_hdr
    rc, have = _port_hdr(cport, spec, lib.NETMAP_REQ_PORT_HDR_GET)
    if rc < 0:
        raise from_errno(-rc, f"{spec.text}: cannot read the port's virtio-net header length")
    if have not in (0, want):
        raise KernelRefused(
            f"{spec.text}: the port already carries {have}-byte virtio-net headers (set by "
            f"another program); ask for those: --vnet-hdr {spec.text}={have}"
        )
    if have == 0:
        rc, _ = _port_hdr(cport, spec, lib.NETMAP_REQ_PORT_HDR_SET, want)
        if rc == -errno.EINVAL:
            raise KernelRefused(
                f"{spec.text}: the kernel refused a {want}-byte virtio-net header (EINVAL)"
            )
        if rc < 0:
            raise from_errno(-rc, f"{spec.text}: cannot set a {want}-byte virtio-net header")
    cport.hdr_len = want
    cport.offloads = VALE_OFFLOADS
    return have == 0


#: what a VALE port with headers takes in them: the switch completes checksums and
#: segments TCP over IPv4 and IPv6 for its ports without headers (netmap_offloadings.c,
#: bdg_mismatch_datapath). Not GSO_UDP_L4: the switch drops it as a bad header; not
#: GSO_ECN: it repeats CWR in every segment, which the kernel's segmentation does not.
VALE_OFFLOADS = int(lib.NMB_OFL_CSUM | lib.NMB_OFL_TSO4 | lib.NMB_OFL_TSO6)


def _discard_headerless(cport: Any) -> int:
    """Release, unread, what reached the RX rings before the header length was set:
    those frames carry no header, and read as if they did they would be garbage. The
    loop has not started: nothing accepted is lost. Returns the slots released."""
    released = 0
    lib.nmb_kport_rxsync(cport)
    for i in range(cport.nrx):
        ring = cport.rx[i]
        released += (ring.tail - ring.head) % ring.num_slots
        ring.head = ring.cur = ring.tail
    lib.nmb_kport_rxsync(cport)
    return released


def _vnet_hdr_in_use(spec: PortSpec) -> int:
    """The header length a port carries, asked on a control fd of its own (0 if unknown)."""
    try:
        cport = _open_device(spec.text)
    except NmbridgeError:
        return 0
    rc, length = _port_hdr(cport, spec, lib.NETMAP_REQ_PORT_HDR_GET)
    ffi.release(cport)
    return length if rc == 0 else 0


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
    if err == errno.EIO and spec.kind == "vale" and not spec.vnet_hdr:
        # netmap refuses a register without NR_ACCEPT_VNET_HDR on a port with headers
        length = _vnet_hdr_in_use(spec)
        size = f"{length}-byte " if length else ""
        return KernelRefused(
            f"{spec.text}: the port carries {size}virtio-net headers (set by another "
            f"program): open it with --vnet-hdr {spec.text}={length or 'LEN'}"
        )
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
    return from_errno(err, spec.text)


def open_ports(
    specs: Sequence[PortSpec],
    setups: Sequence[EmulatedSetup | None] = (),
    slots: int = DEFAULT_SLOTS,
    buf_size: int = DEFAULT_BUF_SIZE,
) -> list[Port]:
    """Open the ports of one bridge (setups[i]: what the control plane decided for an
    emulated specs[i]); emulated ports share one region, kernel ports of one netmap
    memory region share one mapping."""
    emulated = [s for s in specs if s.emulated]
    eregion = _EmulatedRegion(len(emulated), slots, buf_size) if emulated else None
    kregions: dict[int, _KernelRegion] = {}
    ports: list[Port] = []
    try:
        e_index = 0
        for i, spec in enumerate(specs):
            if spec.emulated:
                setup = setups[i] if i < len(setups) else None
                assert eregion is not None and setup is not None, spec.text
                opener = _open_tap if spec.kind == "tap" else _open_packet
                port = opener(spec, setup, eregion, e_index)
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
    return RegisterReply.of(info, 0)


#: the netmap API this core speaks (`nmbridge check` shows it)
NETMAP_API = int(lib.NETMAP_API)

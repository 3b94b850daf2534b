"""Super-frames built by hand and the segments the kernel makes of them, in plain
Python: the independent model that tests/ffi/test_gso.py holds nmb_gso_segment to,
and the parser tests/integration/test_gso_reference.py reads captured frames with.

No scapy: each header is packed with struct, each checksum summed here from the
real pseudo-header (the C side finishes it from the sum the sender left in the
field, as the kernel does; the two must agree).

Not a test module: pytest puts tests/ on sys.path when it loads tests/conftest.py.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
TCP, UDP = 6, 17
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 0, 1, 3, 4, 5, 0x80
F_NEEDS_CSUM, F_DATA_VALID = 1, 2
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
EXT_HOP, EXT_ROUTING, EXT_DEST = 0, 43, 60

MAC_DST = bytes.fromhex("020000000002")
MAC_SRC = bytes.fromhex("020000000001")
V4_SRC, V4_DST = "198.18.0.1", "198.19.0.2"
V6_SRC, V6_DST = "2001:db8::1", "2001:db8:1::2"


@dataclass
class VnetHdr:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return struct.pack("<BBHHHH", self.flags, self.gso_type, self.hdr_len, self.gso_size,
                           self.csum_start, self.csum_offset)

    @classmethod
    def unpack(cls, raw: bytes) -> VnetHdr:
        return cls(*struct.unpack("<BBHHHH", raw[:10]))


# -- checksums -----------------------------------------------------------------

def csum_sum(data: bytes) -> int:
    """The ones' complement sum of data as big-endian 16-bit words, folded."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum(data: bytes) -> int:
    return ~csum_sum(data) & 0xFFFF


def pseudo_header(ipv4: bool, src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if ipv4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


# -- building frames -------------------------------------------------------------

def ethernet(ethertype: int, vlans: tuple[tuple[int, int], ...] = ()) -> bytes:
    """Ethernet header with tags (tpid, vid), outermost first."""
    hdr = MAC_DST + MAC_SRC
    for tpid, vid in vlans:
        hdr += struct.pack("!HH", tpid, vid)
    return hdr + struct.pack("!H", ethertype)


def ipv4_header(proto: int, l4_len: int, ident: int = 0x1234, options: bytes = b"",
                frag: int = 0x4000, src: str = V4_SRC, dst: str = V4_DST,
                tos: int = 0) -> bytes:
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + l4_len, ident, frag, 64,
                      proto, 0, ipaddress.IPv4Address(src).packed,
                      ipaddress.IPv4Address(dst).packed) + options
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]


def ipv6_header(proto: int, l4_len: int, exts: tuple[tuple[int, bytes], ...] = (),
                src: str = V6_SRC, dst: str = V6_DST, tclass: int = 0) -> bytes:
    """IPv6 with extension headers (type, body of 6 + 8k bytes) before the L4 one."""
    chain = b""
    types = [t for t, _ in exts] + [proto]
    for k, (_, body) in enumerate(exts):
        assert (len(body) + 2) % 8 == 0
        chain += struct.pack("!BB", types[k + 1], (len(body) + 2) // 8 - 1) + body
    first = types[0]
    return struct.pack("!IHBB16s16s", 0x60000000 | tclass << 20 | 0x12345, len(chain) + l4_len,
                       first, 64, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + chain


def tcp_header(seq: int, flags: int, options: bytes = b"", sport: int = 40000,
               dport: int = 5201, ack: int = 0x01020304, window: int = 512,
               urg: int = 0) -> bytes:
    assert len(options) % 4 == 0
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, doff << 4, flags,
                       window, 0, urg) + options


def udp_header(length: int, sport: int = 40000, dport: int = 5201) -> bytes:
    return struct.pack("!HHHH", sport, dport, length, 0)


@dataclass
class Built:
    """A super-frame, its header, and where its layers start."""

    vh: VnetHdr
    frame: bytes
    l3: int
    l4: int
    hdrs: int
    ipv4: bool
    tcp: bool
    payload: bytes = field(repr=False, default=b"")


def super_frame(kind: str, payload: bytes, mss: int, *,
                vlans: tuple[tuple[int, int], ...] = (), tcp_options: bytes = b"",
                ip_options: bytes = b"", exts: tuple[tuple[int, bytes], ...] = (),
                flags: int = ACK | PSH, seq: int = 1000, ident: int = 0x1234,
                ecn: bool = False) -> Built:
    """A super-frame as a sender with TSO/USO hands it down: kind tcp4, tcp6, udp4 or
    udp6; its L4 checksum field holds the pseudo-header sum (CHECKSUM_PARTIAL)."""
    ipv4 = kind.endswith("4")
    is_tcp = kind.startswith("tcp")
    l4hdr = tcp_header(seq, flags, tcp_options) if is_tcp else udp_header(8 + len(payload))
    l4_len = len(l4hdr) + len(payload)
    proto = TCP if is_tcp else UDP
    if ipv4:
        ip = ipv4_header(proto, l4_len, ident=ident, options=ip_options)
        src, dst = ip[12:16], ip[16:20]
    else:
        ip = ipv6_header(proto, l4_len, exts)
        src, dst = ip[8:24], ip[24:40]
    eth = ethernet(ETH_P_IP if ipv4 else ETH_P_IPV6, vlans)
    seed = csum_sum(pseudo_header(ipv4, src, dst, proto, l4_len))
    off = 16 if is_tcp else 6
    l4hdr = l4hdr[:off] + struct.pack("!H", seed) + l4hdr[off + 2:]
    frame = eth + ip + l4hdr + payload
    l3, l4 = len(eth), len(eth) + len(ip)
    gso = (GSO_TCPV4 if ipv4 else GSO_TCPV6) if is_tcp else GSO_UDP_L4
    if ecn:
        gso |= GSO_ECN
    vh = VnetHdr(F_NEEDS_CSUM, gso, l4 + len(l4hdr), mss, l4, off)
    return Built(vh, frame, l3, l4, l4 + len(l4hdr), ipv4, is_tcp, payload)


# -- the model ---------------------------------------------------------------------

@dataclass
class Parsed:
    l3: int
    l4: int
    hdrs: int
    ipv4: bool
    tcp: bool


def parse(frame: bytes) -> Parsed:
    """Where the layers of a (well-formed) TCP or UDP frame start."""
    l3 = 12
    (etype,) = struct.unpack_from("!H", frame, l3)
    while etype in (ETH_P_8021Q, ETH_P_8021AD):
        l3 += 4
        (etype,) = struct.unpack_from("!H", frame, l3)
    l3 += 2
    if etype == ETH_P_IP:
        l4 = l3 + (frame[l3] & 15) * 4
        proto = frame[l3 + 9]
    else:
        assert etype == ETH_P_IPV6, hex(etype)
        proto, l4 = frame[l3 + 6], l3 + 40
        while proto in (EXT_HOP, EXT_ROUTING, EXT_DEST):
            proto, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
    tcp = proto == TCP
    hdrs = l4 + ((frame[l4 + 12] >> 4) * 4 if tcp else 8)
    return Parsed(l3, l4, hdrs, etype == ETH_P_IP, tcp)


def l4_checksum(p: Parsed, seg: bytes) -> int:
    """The L4 checksum seg must carry (its field taken as zero)."""
    off = p.l4 + (16 if p.tcp else 6)
    body = seg[p.l4:off] + b"\0\0" + seg[off + 2:]
    if p.ipv4:
        src, dst = seg[p.l3 + 12:p.l3 + 16], seg[p.l3 + 16:p.l3 + 20]
    else:
        src, dst = seg[p.l3 + 8:p.l3 + 24], seg[p.l3 + 24:p.l3 + 40]
    return csum(pseudo_header(p.ipv4, src, dst, TCP if p.tcp else UDP, len(body)) + body)


def with_l4_checksum(p: Parsed, seg: bytes, mangle_zero: bool) -> bytes:
    c = l4_checksum(p, seg)
    if c == 0 and mangle_zero:
        c = 0xFFFF
    off = p.l4 + (16 if p.tcp else 6)
    return seg[:off] + struct.pack("!H", c) + seg[off + 2:]


def segment(vh: VnetHdr, frame: bytes) -> list[bytes]:
    """The frames the kernel's software GSO makes of a super-frame (no TSO, no TX
    checksum offload): payload <= gso_size goes whole with its checksum finished."""
    p = parse(frame)
    head, payload = frame[:p.hdrs], frame[p.hdrs:]
    mss = vh.gso_size
    if len(payload) <= mss:
        return [with_l4_checksum(p, frame, mangle_zero=True)]
    chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)]
    out = []
    for i, chunk in enumerate(chunks):
        h = bytearray(head)
        seg_len = len(head) + len(chunk)
        if p.ipv4:
            ihl = (h[p.l3] & 15) * 4
            (ident,) = struct.unpack_from("!H", h, p.l3 + 4)
            struct.pack_into("!HH", h, p.l3 + 2, seg_len - p.l3, (ident + i) & 0xFFFF)
            struct.pack_into("!H", h, p.l3 + 10, 0)
            struct.pack_into("!H", h, p.l3 + 10, csum(bytes(h[p.l3:p.l3 + ihl])))
        else:
            struct.pack_into("!H", h, p.l3 + 4, seg_len - p.l3 - 40)
        if p.tcp:
            (seq,) = struct.unpack_from("!I", h, p.l4 + 4)
            struct.pack_into("!I", h, p.l4 + 4, (seq + i * mss) & 0xFFFFFFFF)
            if i < len(chunks) - 1:
                h[p.l4 + 13] &= ~(FIN | PSH) & 0xFF
            if i > 0:
                h[p.l4 + 13] &= ~CWR & 0xFF
        else:
            struct.pack_into("!H", h, p.l4 + 4, seg_len - p.l4)
        out.append(with_l4_checksum(p, bytes(h) + chunk, mangle_zero=not p.tcp))
    return out

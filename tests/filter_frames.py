"""Ethernet frames for the filter tests: IPv4 and IPv6, VLAN tags, ARP, TCP flags,
ports in and out of ranges, fragments (addresses of 198.18.0.0/15 and 2001:db8::/32).

Not a test module: tests/ffi/test_filter.py runs compiled programs on them, and
tests/integration/test_filter_tcpdump.py replays them through a bridge.
"""

from __future__ import annotations

import struct

A4, B4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
C4 = bytes([198, 19, 7, 9])
A6 = bytes.fromhex("20010db8" + "00" * 11 + "01")
B6 = bytes.fromhex("20010db8" + "00" * 11 + "02")
BROADCAST = b"\xff" * 6


def mac(n: int, m: int = 0) -> bytes:
    return bytes([2, 0, 0, 0, m & 0xFF, n & 0xFF])


def ip4(proto: int, payload: bytes, src: bytes = A4, dst: bytes = B4, frag: int = 0,
        ihl: int = 5) -> bytes:
    options = bytes(4 * (ihl - 5))
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(options) + len(payload), 7,
                       frag, 64, proto, 0, src, dst) + options + payload


def ip6(nh: int, payload: bytes, src: bytes = B6, dst: bytes = A6) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, 64, src, dst) + payload


def udp(sport: int, dport: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 512, 0, 0)


def eth(ethertype: int, payload: bytes, dst: bytes = mac(2), src: bytes = mac(1),
        vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + struct.pack("!H", ethertype) + payload


SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def frames() -> list[bytes]:
    """One of each kind, unpadded (some shorter than 60 bytes)."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac(1), A4, bytes(6), B4)
    return [
        eth(0x0800, ip4(17, udp(1234, 9))),
        eth(0x0800, ip4(17, udp(9, 1234, b"x" * 600))),
        eth(0x0800, ip4(17, udp(1500, 5050, b"\xde\xad\xbe\xef"))),
        eth(0x0800, ip4(17, udp(4000, 5100))),
        eth(0x0800, ip4(17, udp(4000, 5101))),
        eth(0x0800, ip4(6, tcp(40000, 80, SYN))),
        eth(0x0800, ip4(6, tcp(80, 40000, SYN | ACK))),
        eth(0x0800, ip4(6, tcp(22, 1000, ACK))),
        eth(0x0800, ip4(6, tcp(2000, 2001, FIN | ACK))),
        eth(0x0800, ip4(6, tcp(999, 2001, RST))),
        eth(0x0800, ip4(6, tcp(3000, 1999, PSH | ACK), ihl=7)),
        eth(0x0800, ip4(1, b"\x08\x00" + bytes(30), dst=C4)),
        eth(0x0800, ip4(17, udp(53, 1053, bytes(40)), frag=0x2000)),  # a first fragment
        eth(0x0800, ip4(17, b"the rest of a datagram", frag=0x00B9)),  # a later one
        eth(0x0800, ip4(17, b"its last part", frag=0x00C0)),
        eth(0x0800, ip4(47, bytes(24))),
        eth(0x86DD, ip6(17, udp(1234, 9))),
        eth(0x86DD, ip6(6, tcp(5555, 1500, SYN))),
        eth(0x86DD, ip6(6, tcp(1500, 5555, SYN | ACK))),
        eth(0x86DD, ip6(58, b"\x80\x00" + bytes(30))),
        eth(0x86DD, ip6(44, struct.pack("!BBHI", 17, 0, 1, 7) + udp(9, 9))),  # fragment hdr
        eth(0x0800, ip4(17, udp(1234, 9)), vlan=100),
        eth(0x0800, ip4(6, tcp(1, 80, SYN)), vlan=200),
        eth(0x0800, ip4(17, udp(7, 5050)), vlan=100),
        eth(0x86DD, ip6(6, tcp(1, 22, PSH | ACK)), vlan=100),
        eth(0x0806, arp, dst=BROADCAST),
        eth(0x0806, arp[:7] + b"\x02" + arp[8:]),  # a reply
        eth(0x88CC, bytes(40)),
    ]


def padded(frame: bytes) -> bytes:
    """As on a wire: at least 60 bytes."""
    return frame.ljust(60, b"\0")


def pcap_file(frames: list[bytes], snaplen: int = 65535) -> bytes:
    """A classic pcap file (link type Ethernet, microseconds) of the frames."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1, i, len(f), len(f)) + f)
    return b"".join(out)


def pcap_frames(data: bytes) -> list[bytes]:
    """The frames of a classic pcap file (either byte order)."""
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, pos = [], 24
    while pos + 16 <= len(data):
        _sec, _frac, incl, _orig = struct.unpack(order + "IIII", data[pos:pos + 16])
        out.append(data[pos + 16:pos + 16 + incl])
        pos += 16 + incl
    return out

"""The programs test_hostile_headers.py runs inside its namespaces:

    python hostile_peer.py send IFNAME DST_MAC        (the attacker, on a veth)
    python hostile_peer.py capture IFNAME TIMEOUT     (what reaches the receiver's interface)
    python hostile_peer.py udp-recv ADDR TIMEOUT      (what reaches the receiver's socket)

The attacker writes every frame of CASES, in order, through a packet socket with
PACKET_VNET_HDR: a virtio-net header of its choosing in front of each, which the
kernel turns into the skb's offload state (GSO metadata marked SKB_GSO_DODGY,
checked only where something segments it). Each frame carries a marker at the
start of its L4 payload (b"NMBG0007": good frame 7, b"NMBH0003": hostile frame 3)
so that the other two programs can tell which of them arrived. Each program
prints READY once bound (the receivers) and one JSON object at its end.

Addresses: 198.18.0.1 -> 198.18.0.2 only. Standard library only: it runs in
other namespaces, outside pytest.
"""

from __future__ import annotations

import errno
import json
import math
import re
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
ETH_P_ALL = 3
SO_RCVBUFFORCE = 33
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 0, 1, 3, 4, 5, 0x80
SRC_MAC = bytes.fromhex("0200c6120001")
SRC_IP, DST_IP = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
DST_IP_TEXT = "198.18.0.2"
UDP_PORT = 47102  # the receiver's; good frames go there
TCP_PORT = 47103  # nobody listens: a hostile TCP frame that got through is answered by RST
ETH, IPH, TCPH, UDPH = 14, 20, 20, 8
L4 = ETH + IPH  # where the L4 header starts (no tag, no IP options)
IPV4 = b"\x08\x00"
#: the longest frame a veth passes as one super-frame: shorter than its gso_max_size
MAX_GSO_FRAME = 65535
MARKER = re.compile(rb"NMB([GH])(\d{4})")
READY = "READY"


def fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum(data: bytes) -> int:
    """The internet checksum of data: the value to store."""
    if len(data) % 2:
        data += b"\0"
    return ~fold(sum(struct.unpack(f"!{len(data) // 2}H", data))) & 0xFFFF


def pseudo(proto: int, l4_len: int) -> int:
    """The pseudo-header sum, folded, not complemented: what a sender leaves in the
    checksum field of a frame whose checksum it leaves to finish (NEEDS_CSUM)."""
    words = struct.unpack("!4H", SRC_IP + DST_IP)
    return fold(sum(words) + proto + l4_len)


def payload(tag: str, index: int, size: int) -> bytes:
    mark = b"NMB%s%04d" % (tag.encode(), index)
    return mark + bytes((index * 31 + k) % 251 for k in range(size - len(mark)))


def ipv4(proto: int, l4: bytes, ident: int, total: int | None = None, ihl: int = 5,
         frag: int = 0x4000) -> bytes:
    """An IPv4 header (ihl words: options of zeros past 20 bytes, a header length under
    20 as it is) in front of l4."""
    opts = bytes(max(0, ihl * 4 - IPH))
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total if total is not None
                    else IPH + len(opts) + len(l4), ident, frag, 64, proto, 0, SRC_IP, DST_IP)
    h += opts
    return h[:10] + struct.pack("!H", csum(h)) + h[12:]


def tcp(body: bytes, *, doff: int = 5, partial: bool = True) -> bytes:
    """A TCP segment to TCP_PORT: its checksum left to finish (the pseudo-header sum in
    the field) or finished."""
    h = struct.pack("!HHIIBBHHH", 40000, TCP_PORT, 1000, 0, doff << 4, 0x18, 65535, 0, 0)
    seg = h + body
    value = pseudo(6, len(seg)) if partial else 0
    seg = seg[:16] + struct.pack("!H", value) + seg[18:]
    if not partial:
        full = struct.pack("!4s4sBBH", SRC_IP, DST_IP, 0, 6, len(seg)) + seg
        seg = seg[:16] + struct.pack("!H", csum(full)) + seg[18:]
    return seg


def udp(body: bytes, *, partial: bool = True, length: int | None = None) -> bytes:
    n = UDPH + len(body)
    seg = struct.pack("!HHHH", 40001, UDP_PORT, length if length is not None else n, 0) + body
    if partial:
        return seg[:6] + struct.pack("!H", pseudo(17, n)) + seg[8:]
    full = struct.pack("!4s4sBBH", SRC_IP, DST_IP, 0, 17, n) + seg
    return seg[:6] + struct.pack("!H", csum(full) or 0xFFFF) + seg[8:]


def vnet(flags: int = 0, gso_type: int = GSO_NONE, gso_size: int = 0, csum_start: int = 0,
         csum_offset: int = 0, hdr_len: int = 0) -> bytes:
    return VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


#: what becomes of a frame: it reaches the receiver (GOOD, a good frame; PASSES, a
#: hostile one the kernel passes sound or makes sound on the way), the bridge drops it
#: (DROPPED: the kernel takes it as it is), or the kernel refuses it at sendto (REFUSED,
#: on Linux 6.18; an older kernel may take some, and then the bridge must drop them)
GOOD, PASSES, DROPPED, REFUSED = "good", "passes", "dropped", "refused"


@dataclass
class Case:
    name: str
    expect: str
    header: bytes
    frame: bytes  # from the EtherType on
    #: datagrams the receiver's socket gets from it (good frames only)
    datagrams: int = 1
    #: what becomes of it where the bridge segments it for a port without offloads, if
    #: not what expect says
    segmented: str = ""


def tcp_gso(index: int, size: int, gso_size: int, **kw: int) -> tuple[bytes, bytes]:
    """A TCPv4 super-frame from its EtherType on, right but for what kw changes (doff,
    total, ihl, frag, proto, vlans, ethertype; the header's flags, gso_type, csum_start,
    csum_offset, hdr_len)."""
    seg = tcp(payload("H", index, size), doff=kw.get("doff", 5))
    ihl = kw.get("ihl", 5)
    ip = ipv4(kw.get("proto", 6), seg, index, kw.get("total"), ihl, kw.get("frag", 0x4000))
    vlans = kw.get("vlans", 0)
    tags = b"".join(struct.pack("!HH", 0x8100, 10 + k) for k in range(vlans))
    start = L4 + 4 * vlans + 4 * max(0, ihl - 5)
    header = vnet(kw.get("flags", NEEDS_CSUM), kw.get("gso_type", GSO_TCPV4), gso_size,
                  kw.get("csum_start", start), kw.get("csum_offset", 16), kw.get("hdr_len", 0))
    ethertype = struct.pack("!H", kw.get("ethertype", 0x0800))
    return header, (tags[:2] + tags[2:] + ethertype if vlans else ethertype) + ip + seg


#: IPv6 addresses of the same two hosts: IPv4-mapped, so still in 198.18.0.0/15 (nobody
#: answers them; the capture at the receiver's interface is what sees them arrive)
SRC_IP6 = bytes(10) + b"\xff\xff" + SRC_IP
DST_IP6 = bytes(10) + b"\xff\xff" + DST_IP
IPV6 = b"\x86\xdd"


def tcp6_gso(index: int, size: int, gso_size: int, *, plen: int | None = None,
             exts: int = 0, ext: int = 60) -> tuple[bytes, bytes]:
    """A TCPv6 super-frame from its EtherType on, behind exts extension headers of type
    ext (8 bytes each), its payload length plen if given."""
    body = payload("H", index, size)
    h = struct.pack("!HHIIBBHHH", 40000, TCP_PORT, 1000, 0, 5 << 4, 0x18, 65535, 0, 0)
    seg = h + body
    words = struct.unpack("!16H", SRC_IP6 + DST_IP6)
    seg = seg[:16] + struct.pack("!H", fold(sum(words) + 6 + len(seg))) + seg[18:]
    chain = b"".join(struct.pack("!BB6x", ext if k + 1 < exts else 6, 0) for k in range(exts))
    first = ext if exts else 6
    ip = struct.pack("!IHBB16s16s", 6 << 28, plen if plen is not None else len(chain) + len(seg),
                     first, 64, SRC_IP6, DST_IP6)
    start = ETH + 40 + len(chain)
    return vnet(NEEDS_CSUM, GSO_TCPV6, gso_size, start, 16), IPV6 + ip + chain + seg


def udp_gso(index: int, size: int, gso_size: int, tag: str = "H",
            length: int | None = None, gso_type: int = GSO_UDP_L4) -> tuple[bytes, bytes]:
    seg = udp(payload(tag, index, size), length=length)
    return vnet(NEEDS_CSUM, gso_type, gso_size, L4, 6), IPV4 + ipv4(17, seg, index) + seg


def good(index: int, kind: int) -> Case:
    """Good frames, four kinds in turn: a plain datagram checksummed, one whose
    checksum is left to finish, a USO super-frame of three datagrams, and the
    largest USO super-frame a veth passes whole (47 datagrams): under its
    gso_max_size, 65536 bytes from the Ethernet header on (a larger one it
    segments itself)."""
    name = f"good-{index}"
    if kind == 0:
        seg = udp(payload("G", index, 200), partial=False)
        return Case(name, GOOD, vnet(), IPV4 + ipv4(17, seg, index) + seg)
    if kind == 1:
        seg = udp(payload("G", index, 300))
        return Case(name, GOOD, vnet(NEEDS_CSUM, csum_start=L4, csum_offset=6),
                    IPV4 + ipv4(17, seg, index) + seg)
    size, gso = (400, 3 * 400) if kind == 2 else (1400, MAX_GSO_FRAME - ETH - IPH - UDPH)
    body = b"".join(payload("G", index, min(size, gso - k)) for k in range(0, gso, size))
    seg = udp(body)
    return Case(name, GOOD, vnet(NEEDS_CSUM, GSO_UDP_L4, size, L4, 6),
                IPV4 + ipv4(17, seg, index) + seg, datagrams=math.ceil(gso / size))


def hostile() -> list[Case]:
    """The hostile frames: each a super-frame (or a header) wrong in one way."""
    cases: list[Case] = []

    def add(name: str, expect: str, make: Callable[..., tuple[bytes, bytes]], *args: int,
            segmented: str = "", **kw: int) -> None:
        cases.append(Case(name, expect, *make(len(cases), *args, **kw), segmented=segmented))

    add("tcp gso_size 1 (4000 segments)", DROPPED, tcp_gso, 4000, 1)
    add("tcp gso_size 0", REFUSED, tcp_gso, 4000, 0)
    # segments of 4054 bytes: a receiving stack takes the super-frame, a NIC of MTU 1500
    # would not send them (the kernel, forwarding it, drops it: is_skb_forwardable)
    add("tcp gso_size past the mtu", PASSES, tcp_gso, 12000, 4000, segmented=DROPPED)
    add("tcp gso_size bigger than the payload", PASSES, tcp_gso, 400, 1448)  # no GSO then
    add("ip total length short of the frame", DROPPED, tcp_gso, 4000, 1448, total=IPH + 2000)
    add("ip total length past the frame", DROPPED, tcp_gso, 4000, 1448, total=IPH + 9000)
    add("tcp doff past the frame", REFUSED, tcp_gso, 20, 8, doff=15)
    add("csum_start inside the tcp header", REFUSED, tcp_gso, 4000, 1448, csum_start=L4 + 4)
    add("csum_start at the ip header", REFUSED, tcp_gso, 4000, 1448, csum_start=ETH)
    add("tcp csum_offset of udp", REFUSED, tcp_gso, 4000, 1448, csum_offset=6)
    add("tcp gso without NEEDS_CSUM", PASSES, tcp_gso, 4000, 1448, flags=0)  # the kernel sets it
    add("tcpv6 gso on an ipv4 frame", REFUSED, tcp_gso, 4000, 1448, gso_type=GSO_TCPV6)
    add("unknown flag", PASSES, tcp_gso, 4000, 1448, flags=NEEDS_CSUM | 0x40)  # cleared
    add("hdr_len past the frame", REFUSED, tcp_gso, 4000, 1448, hdr_len=9000)
    add("ip header length under 20", REFUSED, tcp_gso, 4000, 1448, ihl=4)
    add("ip fragment (MF)", DROPPED, tcp_gso, 4000, 1448, frag=0x2000)
    add("udp inside a tcpv4 super-frame", REFUSED, tcp_gso, 4000, 1448, proto=17)
    add("not ip (EtherType 0x88b5)", REFUSED, tcp_gso, 4000, 1448, ethertype=0x88B5)
    add("three vlan tags", DROPPED, tcp_gso, 4000, 1448, vlans=3)
    add("csum_start at the tcp payload", REFUSED, tcp_gso, 4000, 1448, csum_start=L4 + 20)
    add("csum_start in the ip options", REFUSED, tcp_gso, 4000, 1448, ihl=6, csum_start=L4)
    add("tcpv6 super-frame, sound", PASSES, tcp6_gso, 4000, 1400)
    add("tcpv6 payload length disagreeing", DROPPED, tcp6_gso, 4000, 1400, plen=3000)
    add("tcpv6 behind two destination options", PASSES, tcp6_gso, 4000, 1400, exts=2)
    # sound to the kernel; nmbridge keeps a super-frame's headers within GSO_MAX_HDRS
    add("tcpv6 headers past 256 bytes (30 options)", DROPPED, tcp6_gso, 4000, 1400, exts=30)
    add("tcpv6 behind a fragment header", REFUSED, tcp6_gso, 4000, 1400, exts=1, ext=44)
    add("udp_l4 with 140 segments", REFUSED, udp_gso, 1400, 10)
    add("udp_l4 length disagreeing", DROPPED, udp_gso, 4000, 1000, length=900)
    add("udp_l4 with the ecn bit", REFUSED, udp_gso, 4000, 1000, gso_type=GSO_UDP_L4 | GSO_ECN)
    add("ufo (gso_type udp)", PASSES, udp_gso, 4000, 1000, gso_type=GSO_UDP)  # the veth fragments
    add("unknown gso_type 7", REFUSED, udp_gso, 4000, 1000, gso_type=7)
    return cases


def cases() -> list[Case]:
    """Every hostile frame with a good one on each side."""
    out: list[Case] = []
    n = 0
    for bad in hostile():
        out.append(good(n, n % 4))
        n += 1
        out.append(bad)
    out.append(good(n, n % 4))
    return out


def judge(sent: list[dict[str, Any]], seen: set[str],
          segmented: bool = False) -> tuple[dict[str, str], list[str]]:
    """What became of each frame send() reported, given the markers seen at the receiver
    (segmented: the bridge segments super-frames for the receiver's side): {name:
    outcome}, and every outcome that is not what its case expects."""
    outcome, wrong = {}, []
    for s in sent:
        if s["error"]:
            what = f"refused by the kernel ({s['error']})"
        else:
            what = "arrived" if s["marker"] in seen else "dropped"
        outcome[s["name"]] = what
        expect = (segmented and s["segmented"]) or s["expect"]
        ok = {GOOD: what == "arrived", PASSES: what == "arrived", DROPPED: what == "dropped",
              REFUSED: what != "arrived"}[expect]
        if not ok:
            wrong.append(f"{s['name']}: {what}, expected {expect}")
    return outcome, wrong


def send(ifname: str, dst_mac: str) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.bind((ifname, 0))
    dst = bytes.fromhex(dst_mac.replace(":", ""))
    out = []
    for case in cases():
        marker = MARKER.search(case.frame)
        assert marker is not None
        err = ""
        try:
            s.send(case.header + dst + SRC_MAC + case.frame)
        except OSError as exc:
            err = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        out.append({"name": case.name, "expect": case.expect, "segmented": case.segmented,
                    "error": err,
                    "datagrams": case.datagrams, "marker": marker[0].decode()})
        time.sleep(0.002)  # in order, one at a time: nothing queues up on the way
    print(json.dumps(out), flush=True)


def capture(ifname: str, timeout: float) -> None:
    """The marked frames that come in on ifname, in order: marker, header, length; until
    timeout, or 1 s after the last one."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    s.bind((ifname, ETH_P_ALL))
    print(READY, flush=True)
    got: list[dict[str, object]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not select.select([s], [], [], 1.0 if got else 0.2)[0]:
            if got:
                break
            continue
        data, _anc, _flags, addr = s.recvmsg(1 << 17)
        m = MARKER.search(data[10:])
        if addr[2] != PACKET_OUTGOING and m:
            got.append({"marker": m[0].decode(), "header": data[:10].hex(), "len": len(data) - 10})
    print(json.dumps(got), flush=True)


def udp_recv(addr: str, timeout: float) -> None:
    """The datagrams that reach the receiver's socket, in order, until timeout or 1 s after
    the last one: their markers, and whether each is whole (its bytes as sent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    s.bind((addr, UDP_PORT))
    print(READY, flush=True)
    got: list[dict[str, object]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not select.select([s], [], [], 1.0 if got else 0.2)[0]:
            if got:
                break
            continue
        data = s.recv(1 << 16)
        m = MARKER.match(data)
        whole = False
        if m:
            index = int(m[2])
            if m[1] == b"G":
                whole = data == payload("G", index, len(data))
        got.append({"marker": m[0].decode() if m else data[:8].hex(), "len": len(data),
                    "whole": whole})
    print(json.dumps(got), flush=True)


def main(argv: list[str]) -> None:
    cmd, args = argv[0], argv[1:]
    if cmd == "send":
        send(args[0], args[1])
    elif cmd == "capture":
        capture(args[0], float(args[1]))
    elif cmd == "udp-recv":
        if args[0] != DST_IP_TEXT:
            raise SystemExit(f"hostile_peer: only {DST_IP_TEXT}")
        udp_recv(args[0], float(args[1]))
    else:
        raise SystemExit(f"hostile_peer: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])

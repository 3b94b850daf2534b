"""The programs test_gso_reference.py runs inside its namespaces (`ip netns exec NS
python gso_lab.py COMMAND ...`): a TCP sink and senders, a capture of super-frames
with their virtio-net headers, and the kernel's own segmentation of them.

Frames travel as JSON on stdin and stdout: [header hex, frame hex] pairs. Standalone
(only the standard library): it runs in another namespace, outside pytest.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
ETH_P_ALL = 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
UDP_SEGMENT = 103
VNET_HDR_LEN = 10
MAX_FRAME = 65535 + 14 + 8 + VNET_HDR_LEN


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n))


def packet_socket(ifname: str, vnet: bool) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    if vnet:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: a burst of 64 KiB frames
    s.bind((ifname, ETH_P_ALL))
    return s


def receive(s: socket.socket, vnet: bool) -> tuple[bytes, bytes, int] | None:
    """One frame: (virtio-net header or b"", frame with its VLAN tag put back, pkttype)."""
    data, anc, flags, addr = s.recvmsg(MAX_FRAME, socket.CMSG_SPACE(20))
    if flags & socket.MSG_TRUNC:
        raise RuntimeError("a frame longer than the buffer")
    hdr, frame = (data[:VNET_HDR_LEN], data[VNET_HDR_LEN:]) if vnet else (b"", data)
    for level, kind, value in anc:
        if level != SOL_PACKET or kind != PACKET_AUXDATA:
            continue
        status, _, _, _, _, tci, tpid = struct.unpack("=IIIHHHH", value[:20])
        if status & TP_STATUS_VLAN_VALID:
            if not status & TP_STATUS_VLAN_TPID_VALID:
                tpid = 0x8100
            frame = frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
            if vnet:
                # the header counts from the frame as it was read, untagged
                flags_, gso_type, hdr_len, gso_size, start, off = struct.unpack("<BBHHHH", hdr)
                if flags_ & 1:
                    start += 4
                hdr = struct.pack("<BBHHHH", flags_, gso_type, hdr_len + 4, gso_size, start,
                                  off)
    return hdr, frame, addr[2]


def capture(ifname: str, count: int, timeout: float) -> None:
    """Print the first count super-frames (gso_type set) coming in on ifname."""
    s = packet_socket(ifname, vnet=True)
    print("ready", flush=True)
    got: list[list[str]] = []
    end = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < end:
        if not select.select([s], [], [], 0.2)[0]:
            continue
        hdr, frame, pkttype = receive(s, vnet=True)  # type: ignore[misc]
        if pkttype != PACKET_OUTGOING and hdr[1] != 0:
            got.append([hdr.hex(), frame.hex()])
    print(json.dumps(got), flush=True)


def reference(inj: str, cap: str) -> None:
    """Send each super-frame read on stdin out of inj with its header; print the
    frames that arrive on cap (inj's peer) for each."""
    frames = json.load(sys.stdin)
    rx = packet_socket(cap, vnet=False)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    tx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    tx.bind((inj, 0))
    out = []
    for hdr, frame in frames:
        tx.send(bytes.fromhex(hdr) + bytes.fromhex(frame))
        segs = []
        wait = 0.5  # for the first; then the rest come at once
        while select.select([rx], [], [], wait)[0]:
            _, seg, pkttype = receive(rx, vnet=False)  # type: ignore[misc]
            if pkttype != PACKET_OUTGOING:
                segs.append(seg.hex())
            wait = 0.3
        out.append(segs)
    print(json.dumps(out), flush=True)


def sink_tcp(addr: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, port))
        srv.listen(1)
        print("ready", flush=True)
        conn, _ = srv.accept()
        with conn:
            while conn.recv(1 << 20):
                pass


def send_tcp(addr: str, port: int, total: int) -> None:
    data = pattern(total)
    with socket.create_connection((addr, port), timeout=10) as s:
        # writes of odd sizes: super-frames of several sizes, some with PSH
        pos, step = 0, 30011
        while pos < total:
            s.sendall(data[pos:pos + step])
            pos += step
        s.shutdown(socket.SHUT_WR)


def send_udp(addr: str, port: int, sends: list[tuple[int, int]]) -> None:
    """Datagrams of (segment size, bytes), each one sendto with UDP_SEGMENT."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for gso_size, n in sends:
            s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, gso_size)
            s.sendto(pattern(n), (addr, port))
            time.sleep(0.02)


def main(argv: list[str]) -> None:
    cmd, args = argv[0], argv[1:]
    if cmd == "capture":
        capture(args[0], int(args[1]), float(args[2]))
    elif cmd == "reference":
        reference(args[0], args[1])
    elif cmd == "sink-tcp":
        sink_tcp(args[0], int(args[1]))
    elif cmd == "send-tcp":
        send_tcp(args[0], int(args[1]), int(args[2]))
    elif cmd == "send-udp":
        sends = [tuple(map(int, x.split(":"))) for x in args[2].split(",")]
        send_udp(args[0], int(args[1]), sends)  # type: ignore[arg-type]
    else:
        raise SystemExit(f"gso_lab: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])

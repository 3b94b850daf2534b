"""The two ends of the offload tests' UDP GSO traffic, run inside a test's namespaces:

    python offload_peer.py udp-recv 198.18.0.2 --run-id 5 --count 100 --timeout 10
    python offload_peer.py udp-send 198.18.0.2 --run-id 5 --sizes 8000,60000 --gso 1400

(Their TCP streams are nmbridge.lab.traffic's tcp-send and tcp-recv, the demo's.)
The receiver prints READY once bound, and each end prints one JSON object when
it is done. UDP: buffers sent with the UDP_SEGMENT socket option
(the stack makes one GSO super-frame of each and hands it to the device as
such where the device takes UDP segmentation, as a veth does): each segment
carries its own header (run id, sequence number, length) and bytes computed
from them, so that the receiver checks every datagram it gets on its own.
Only 198.18.0.0/15 is accepted; every wait is bounded.

Standard library only. Not a test module: test_offloads.py runs it by path.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time
from typing import Any

ALLOWED = ipaddress.ip_network("198.18.0.0/15")
UDP_PORT = 47101
SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not in every Python's socket module
HEADER = struct.Struct("!IIH")  # run id, sequence number, segment length
READY = "READY"


def address(text: str) -> str:
    if ipaddress.ip_address(text) not in ALLOWED:
        raise argparse.ArgumentTypeError(f"{text} is not in {ALLOWED}")
    return text


def segment(run_id: int, seq: int, length: int) -> bytes:
    """One datagram as the receiver must see it: a header, then bytes from (run id, seq)."""
    body = random.Random(run_id * 1_000_003 + seq).randbytes(length - HEADER.size)
    return HEADER.pack(run_id, seq, length) + body


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def ready() -> None:
    print(READY, flush=True)


def udp_recv(bind: str, run_id: int, count: int, timeout: float, idle: float) -> None:
    sizes: dict[int, int] = {}
    seen: set[int] = set()
    received = nbytes = corrupt = duplicates = foreign = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # as root: beyond rmem_max, so that a burst of segments is not lost here
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        sock.bind((bind, UDP_PORT))
        ready()
        deadline = time.monotonic() + timeout
        while received < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, idle) if received else left)
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                break
            if len(data) < HEADER.size:
                foreign += 1
                continue
            rid, seq, length = HEADER.unpack_from(data)
            if rid != run_id:
                foreign += 1
                continue
            received += 1
            nbytes += len(data)
            sizes[len(data)] = sizes.get(len(data), 0) + 1
            if length != len(data) or data != segment(run_id, seq, length):
                corrupt += 1
            elif seq in seen:
                duplicates += 1
            seen.add(seq)
    report(received=received, bytes=nbytes, sizes={str(k): v for k, v in sorted(sizes.items())},
           unique=len(seen), corrupt=corrupt, duplicates=duplicates, foreign=foreign)


def udp_send(dst: str, run_id: int, sizes: list[int], gso: int, gap: float) -> None:
    seq = sent = segments = nbytes = 0
    error = ""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, gso)
        for size in sizes:
            buf = bytearray()
            for start in range(0, size, gso):
                buf += segment(run_id, seq, min(gso, size - start))
                seq += 1
                segments += 1
            try:
                sock.sendto(bytes(buf), (dst, UDP_PORT))
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
                break
            sent += 1
            nbytes += size
            time.sleep(gap)  # paced: no socket on the way overflows
    report(sent=sent, segments=segments, bytes=nbytes, error=error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("udp-recv")
    p.add_argument("addr", type=address)
    p.add_argument("--run-id", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--idle", type=float, default=2.0)
    p = sub.add_parser("udp-send")
    p.add_argument("addr", type=address)
    p.add_argument("--run-id", type=int, required=True)
    p.add_argument("--sizes", required=True, help="comma-separated buffer sizes")
    p.add_argument("--gso", type=int, required=True, help="UDP_SEGMENT: bytes a segment")
    p.add_argument("--gap", type=float, default=0.005, help="seconds between two buffers")
    a = parser.parse_args(argv)
    if a.what == "udp-recv":
        udp_recv(a.addr, a.run_id, a.count, a.timeout, a.idle)
    else:
        udp_send(a.addr, a.run_id, [int(s) for s in a.sizes.split(",")], a.gso, a.gap)
    return 0


if __name__ == "__main__":
    sys.exit(main())

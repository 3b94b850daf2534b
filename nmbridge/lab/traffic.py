"""Test and demo traffic, pure Python, run inside a sandbox namespace:

    python -m nmbridge.lab.traffic ping 198.18.0.2 --count 3
    python -m nmbridge.lab.traffic udp-recv 198.18.0.2 --count 1000
    python -m nmbridge.lab.traffic udp-send 198.18.0.2 --count 1000 --size-range 18:1472
    python -m nmbridge.lab.traffic tcp-recv 198.18.0.2 --run-id 7
    python -m nmbridge.lab.traffic tcp-send 198.18.0.2 --run-id 7 --seconds 2
    python -m nmbridge.lab.traffic tcp-send 198.18.0.2 --run-id 7 --bytes 4000000

Each prints one JSON object on stdout when it is done (the receivers print
"READY" first, once their socket is bound). Every datagram carries a header
(magic, run id, sequence number, length) and a payload computed from its
sequence number, so the receiver tells exactly what arrived: complete, in
order, intact. A TCP stream is one block of bytes computed from the run id,
repeated: the receiver checks every byte it reads against it. Counts and
times are bounded, and only the sandbox's addresses (198.18.0.0/15) are
accepted as targets.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import random
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nmbridge.lab import python_m

#: the only addresses traffic may go to or come from (RFC 2544 benchmarking)
ALLOWED_NET = ipaddress.ip_network("198.18.0.0/15")
DEFAULT_PORT = 47000
MAX_COUNT = 1_000_000
MAX_SECONDS = 600.0
#: the header of every datagram: magic, run id, sequence number, payload length
HEADER = struct.Struct("!IIIH")
MAGIC = 0x4E4D4254  # "NMBT"
MIN_PAYLOAD = HEADER.size
MAX_PAYLOAD = 65507
#: Ethernet + IPv4 + UDP headers: frame length = payload + FRAME_OVERHEAD
FRAME_OVERHEAD = 14 + 20 + 8
READY = "READY"
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
_PATTERN = bytes(range(256)) * (MAX_PAYLOAD // 256 + 2)
#: a TCP stream repeats a block of this many bytes, computed from its run id
TCP_BLOCK = 1 << 20


class TrafficError(Exception):
    """A bad argument or a target outside the sandbox's range."""


def check_address(text: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise TrafficError(f"'{text}' is not an IPv4 address") from None
    if addr not in ALLOWED_NET:
        raise TrafficError(f"{text} is outside {ALLOWED_NET}: traffic stays in the sandbox")
    return text


def payload(run_id: int, seq: int, size: int) -> bytes:
    """The datagram with sequence number seq: header, then a pattern that depends on seq."""
    if not MIN_PAYLOAD <= size <= MAX_PAYLOAD:
        raise TrafficError(f"size {size} is out of range {MIN_PAYLOAD}..{MAX_PAYLOAD}")
    start = seq % 251
    return HEADER.pack(MAGIC, run_id, seq, size) + _PATTERN[start : start + size - HEADER.size]


def check_payload(data: bytes, run_id: int) -> tuple[int, bool] | None:
    """(seq, intact) for a datagram of this run; None if it is not one."""
    if len(data) < HEADER.size:
        return None
    magic, rid, seq, size = HEADER.unpack_from(data)
    if magic != MAGIC or rid != run_id:
        return None
    return seq, size == len(data) and data == payload(run_id, seq, size)


def sizes_for(count: int, size: int | None, sizes: Sequence[int] | None,
              size_range: tuple[int, int] | None) -> list[int]:
    """The payload size of each datagram: fixed, a list cycled, or a range swept."""
    if sizes:
        pattern = list(sizes)
    elif size_range:
        lo, hi = size_range
        pattern = list(range(lo, hi + 1))
    else:
        pattern = [size or 64]
    for s in pattern:
        if not MIN_PAYLOAD <= s <= MAX_PAYLOAD:
            raise TrafficError(f"size {s} is out of range {MIN_PAYLOAD}..{MAX_PAYLOAD}")
    return [pattern[i % len(pattern)] for i in range(count)]


# ---------------------------------------------------------------- UDP


@dataclass
class Deadline:
    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())


class _Stop:
    """SIGTERM and SIGINT end a run early; the report still comes out."""

    def __init__(self) -> None:
        self.requested = False
        if threading.current_thread() is not threading.main_thread():
            return  # signals are the main thread's: a run in a thread runs to its end
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.requested = True


def _send_one(sock: socket.socket, data: bytes, target: tuple[str, int], deadline: Deadline,
              stop: _Stop) -> bool:
    """Send one datagram; a full queue is not a loss: wait, as a paced source would."""
    while True:
        try:
            sock.sendto(data, target)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise
        if deadline.left() == 0 or stop.requested:
            return False
        time.sleep(0.0005)


def udp_send(dst: str, port: int, count: int, sizes: list[int], rate: float, run_id: int,
             timeout: float, bind: str | None = None) -> dict[str, Any]:
    """Send count datagrams at rate per second (0: as fast as the socket takes them)."""
    stop = _Stop()
    deadline = Deadline.after(timeout)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    if bind:
        sock.bind((bind, 0))
    sent = nbytes = 0
    started = time.monotonic()
    target = (dst, port)
    for seq in range(count):
        if stop.requested or deadline.left() == 0:
            break
        if rate > 0:
            due = started + seq / rate
            wait = due - time.monotonic()
            if wait > 0.0005:
                time.sleep(wait)
        data = payload(run_id, seq, sizes[seq])
        if not _send_one(sock, data, target, deadline, stop):
            break
        sent += 1
        nbytes += len(data)
    sock.close()
    return {"kind": "udp-send", "dst": dst, "port": port, "run_id": run_id, "sent": sent,
            "bytes": nbytes, "frame_bytes": nbytes + sent * FRAME_OVERHEAD,
            "seconds": round(time.monotonic() - started, 3)}


def udp_recv(bind: str, port: int, count: int, run_id: int, timeout: float, idle: float,
             ready: Any = None) -> dict[str, Any]:
    """Receive until count datagrams of this run arrived, or idle seconds pass after the
    last one, or timeout; report what arrived."""
    stop = _Stop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
            break
        except OSError:
            continue
    sock.bind((bind, port))
    sock.settimeout(0.1)
    if ready is not None:
        ready()
    deadline = Deadline.after(timeout)
    seen: set[int] = set()
    last_seq = -1
    out_of_order = duplicates = corrupt = foreign = nbytes = received = 0
    first = last = 0.0
    while len(seen) < count and not stop.requested and deadline.left() > 0:
        if received and idle > 0 and time.monotonic() - last > idle:
            break
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        now = time.monotonic()
        checked = check_payload(data, run_id)
        if checked is None:
            foreign += 1
            continue
        seq, intact = checked
        if not received:
            first = now
        received += 1
        last = now
        nbytes += len(data)
        if not intact:
            corrupt += 1
        if seq in seen:
            duplicates += 1
            continue
        if seq < last_seq:
            out_of_order += 1
        last_seq = max(last_seq, seq)
        seen.add(seq)
    sock.close()
    missing = sorted(set(range(count)) - seen)
    return {"kind": "udp-recv", "bind": bind, "port": port, "run_id": run_id,
            "expected": count, "received": received, "unique": len(seen),
            "lost": len(missing), "first_missing": missing[:10],
            "out_of_order": out_of_order, "duplicates": duplicates, "corrupt": corrupt,
            "foreign": foreign, "bytes": nbytes,
            "frame_bytes": nbytes + received * FRAME_OVERHEAD,
            "in_order": out_of_order == 0 and duplicates == 0,
            "complete": len(missing) == 0 and corrupt == 0,
            "seconds": round(last - first, 3) if received else 0.0}


# ---------------------------------------------------------------- TCP


def tcp_block(run_id: int) -> bytes:
    """The bytes a TCP stream of this run repeats (pseudo-random: no pattern a segmenter
    or a checksum could get right by chance)."""
    return random.Random(run_id).randbytes(TCP_BLOCK)


def tcp_send(dst: str, port: int, run_id: int, seconds: float, timeout: float,
             size: int | None = None) -> dict[str, Any]:
    """Send the run's stream as fast as TCP takes it, for seconds (or, given a size,
    exactly size bytes), then close."""
    stop = _Stop()
    block = memoryview(tcp_block(run_id))
    sent, error = 0, ""
    started = time.monotonic()
    try:
        with socket.create_connection((dst, port), timeout=timeout) as sock:
            sock.settimeout(timeout)  # a stalled send() is an error, not a hang
            end = time.monotonic() + seconds
            while not stop.requested and (sent < size if size is not None
                                          else time.monotonic() < end):
                left = TCP_BLOCK if size is None else size - sent
                off = sent % TCP_BLOCK
                sent += sock.send(block[off : off + left])
            sock.shutdown(socket.SHUT_WR)
            # wait for the receiver to close: every byte is in by then
            sock.recv(1)
    except OSError as exc:  # socket.timeout included
        error = f"{type(exc).__name__}: {exc}"
    return {"kind": "tcp-send", "dst": dst, "port": port, "run_id": run_id, "bytes": sent,
            "seconds": round(time.monotonic() - started, 3), "error": error}


def tcp_recv(bind: str, port: int, run_id: int, timeout: float,
             ready: Any = None) -> dict[str, Any]:
    """Take one connection and read it to its end, checking every byte against the
    run's stream."""
    stop = _Stop()
    block = tcp_block(run_id)
    twice = block + block  # a chunk that wraps around the block compares in one piece
    got = corrupt = 0
    eof, error = False, ""
    first = last = 0.0
    deadline = Deadline.after(timeout)
    with socket.create_server((bind, port)) as server:
        if ready is not None:
            ready()
        try:
            server.settimeout(timeout)
            conn, _ = server.accept()
            with conn:
                while not stop.requested:
                    conn.settimeout(max(0.01, deadline.left()))
                    data = conn.recv(1 << 18)
                    if not data:
                        eof = True
                        break
                    now = time.monotonic()
                    first = first or now
                    last = now
                    off = got % TCP_BLOCK
                    if data != twice[off : off + len(data)]:
                        corrupt += 1
                    got += len(data)
        except OSError as exc:  # socket.timeout included
            error = f"{type(exc).__name__}: {exc}"
    return {"kind": "tcp-recv", "bind": bind, "port": port, "run_id": run_id, "bytes": got,
            "eof": eof, "corrupt_reads": corrupt, "intact": eof and corrupt == 0 and not error,
            "seconds": round(last - first, 3), "error": error}


# ---------------------------------------------------------------- ping


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int, size: int) -> bytes:
    body = struct.pack("!d", time.monotonic()) + _PATTERN[: max(0, size - 8)]
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = _checksum(header + body)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, csum, ident, seq) + body


def ping(dst: str, count: int, interval: float, wait: float, size: int) -> dict[str, Any]:
    """ICMP echo over a raw socket: count requests, each waiting up to `wait` for its reply."""
    stop = _Stop()
    ident = secrets.randbits(16)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    rtts: list[float] = []
    sent = 0
    for seq in range(1, count + 1):
        if stop.requested:
            break
        started = time.monotonic()
        sock.sendto(_echo_request(ident, seq, size), (dst, 0))
        sent += 1
        end = started + wait
        while not stop.requested:
            left = end - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            packet, (src, _) = sock.recvfrom(65536)
            ihl = (packet[0] & 0x0F) * 4
            if len(packet) < ihl + 8 or src != dst:
                continue
            kind, _code, _csum, rid, rseq = struct.unpack_from("!BBHHH", packet, ihl)
            if kind == ICMP_ECHO_REPLY and rid == ident and rseq == seq:
                rtts.append(round((time.monotonic() - started) * 1000, 3))
                break
        if seq < count and not stop.requested:
            time.sleep(max(0.0, started + interval - time.monotonic()))
    sock.close()
    return {"kind": "ping", "dst": dst, "sent": sent, "received": len(rtts), "rtt_ms": rtts}


# ---------------------------------------------------------------- running it


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not LOW:HIGH") from None
    if a > b:
        raise argparse.ArgumentTypeError(f"'{text}': LOW is above HIGH")
    return a, b


def _count(text: str) -> int:
    n = int(text)
    if not 1 <= n <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"count {n} is out of range 1..{MAX_COUNT}")
    return n


def _seconds(text: str) -> float:
    s = float(text)
    if not 0 < s <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} s is out of range (0, {MAX_SECONDS:g}]")
    return s


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmbridge.lab.traffic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pg = sub.add_parser("ping", help="ICMP echo (raw socket)")
    pg.add_argument("dst")
    pg.add_argument("--count", type=_count, default=3)
    pg.add_argument("--interval", type=_seconds, default=0.2)
    pg.add_argument("--wait", type=_seconds, default=1.0, help="seconds to wait for each reply")
    pg.add_argument("--size", type=int, default=56, help="ICMP payload bytes")
    for name in ("udp-send", "udp-recv"):
        sp = sub.add_parser(name)
        sp.add_argument("addr", help="destination (send) or address to bind (recv)")
        sp.add_argument("--port", type=int, default=DEFAULT_PORT)
        sp.add_argument("--count", type=_count, required=True)
        sp.add_argument("--run-id", type=int, default=0)
        sp.add_argument("--timeout", type=_seconds, default=30.0)
    send = sub.choices["udp-send"]
    send.add_argument("--size", type=int, default=None, help="payload bytes of every datagram")
    send.add_argument("--sizes", type=lambda t: [int(x) for x in t.split(",")], default=None,
                      help="payload sizes, cycled")
    send.add_argument("--size-range", type=_range, default=None, metavar="LOW:HIGH",
                      help="payload sizes LOW, LOW+1, ... HIGH, cycled")
    send.add_argument("--rate", type=float, default=0.0, help="datagrams per second (0: max)")
    send.add_argument("--bind", default=None, help="source address")
    recv = sub.choices["udp-recv"]
    recv.add_argument("--idle", type=float, default=1.0,
                      help="stop this long after the last datagram (0: wait for timeout)")
    for name in ("tcp-send", "tcp-recv"):
        sp = sub.add_parser(name)
        sp.add_argument("addr", help="destination (send) or address to bind (recv)")
        sp.add_argument("--port", type=int, default=DEFAULT_PORT + 1)
        sp.add_argument("--run-id", type=int, default=0)
        sp.add_argument("--timeout", type=_seconds, default=30.0)
    tsend = sub.choices["tcp-send"]
    tsend.add_argument("--seconds", type=_seconds, default=2.0, help="how long to send")
    tsend.add_argument("--bytes", type=int, default=None,
                       help="send exactly this many bytes instead (--timeout bounds it)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ping":
            dst = check_address(args.dst)
            if not 0 <= args.size <= 65507 - 8:
                raise TrafficError(f"ping size {args.size} is out of range")
            report = ping(dst, args.count, args.interval, args.wait, args.size)
            ok = report["received"] == report["sent"] == args.count
        elif args.command == "udp-send":
            dst = check_address(args.addr)
            if args.bind:
                check_address(args.bind)
            sizes = sizes_for(args.count, args.size, args.sizes, args.size_range)
            report = udp_send(dst, args.port, args.count, sizes, args.rate, args.run_id,
                              args.timeout, args.bind)
            ok = report["sent"] == args.count
        elif args.command == "tcp-send":
            if args.bytes is not None and args.bytes < 0:
                raise TrafficError(f"--bytes {args.bytes} is negative")
            report = tcp_send(check_address(args.addr), args.port, args.run_id, args.seconds,
                              args.timeout, args.bytes)
            ok = not report["error"]
        else:
            addr = check_address(args.addr)

            def ready() -> None:
                sys.stdout.write(READY + "\n")
                sys.stdout.flush()

            if args.command == "tcp-recv":
                report = tcp_recv(addr, args.port, args.run_id, args.timeout, ready)
                ok = report["intact"]
            else:
                report = udp_recv(addr, args.port, args.count, args.run_id, args.timeout,
                                  args.idle, ready)
                ok = report["complete"] and report["in_order"]
    except TrafficError as exc:
        sys.stderr.write(f"nmbridge.lab.traffic: error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"nmbridge.lab.traffic: error: {exc.strerror or exc}\n")
        return 3
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0 if ok else 1


# ---------------------------------------------------------------- the parent's side


def command(*args: str) -> list[str]:
    """The argument list that runs this module with this interpreter."""
    return [*python_m("nmbridge.lab.traffic"), *args]


def new_run_id() -> int:
    return secrets.randbits(31)


def read_report(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Wait for a traffic process and return its JSON report ({} if it gave none)."""
    try:
        out, _err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _err = proc.communicate()
    for line in reversed((out or "").splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))
    return {}


def wait_ready(proc: subprocess.Popen[str], timeout: float) -> None:
    """Wait for a receiver (udp-recv, tcp-recv) to say READY."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = Deadline.after(timeout)
    line = b""
    # byte by byte from the fd: a buffered readline could swallow the report
    while not line.endswith(b"\n") and deadline.left() > 0:
        if not select.select([fd], [], [], deadline.left())[0]:
            break
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    if line.strip().decode(errors="replace") != READY:
        raise TrafficError(f"the receiver did not start (exit status {proc.poll()})")


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

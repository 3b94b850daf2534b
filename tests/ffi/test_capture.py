"""The capture (capture.c): the loop's copy into a bounded ring that never waits, and
the writer thread's pcapng, read back by the tests' own reader (tests/pcapng.py)."""

from __future__ import annotations

import os
import threading
import time

import pcapng
import pytest
from nmbridge._ffi._core import ffi, lib

from nmbridge.engine.capture import SNAPLEN_MAX, Capture, file_name
from nmbridge.engine.filter import Filter

NAMES = ("packet:a0->tap:t0", "tap:t0->packet:a0")


def frame(seq: int, size: int = 60) -> bytes:
    return seq.to_bytes(4, "big") + bytes((seq + k) & 0xFF for k in range(size - 4))


def give(cap: Capture, direction: int, data: bytes, split: int | None = None) -> int:
    """The engine's call: the frame as one iovec, or two cut at split."""
    pieces = [data] if split is None else [data[:split], data[split:]]
    bufs = [ffi.from_buffer(p) for p in pieces]
    iov = ffi.new("struct iovec[]", len(pieces))
    for k, buf in enumerate(bufs):
        iov[k].iov_base = buf
        iov[k].iov_len = len(pieces[k])
    return int(lib.nmb_capture_frame(cap.c, direction, iov, len(pieces), len(data)))


def open_file(path: str, **kw) -> Capture:  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return Capture(fd, NAMES, path=path, **kw)


def read(path: str) -> list[pcapng.Section]:
    with open(path, "rb") as f:
        return pcapng.read(f.read())


def test_the_file_has_a_section_an_interface_per_direction_and_each_frame(tmp_path) -> None:
    path = str(tmp_path / "c.pcapng")
    cap = open_file(path)
    frames = [(k % 2, frame(k, 60 + k)) for k in range(10)]
    before = time.time_ns()
    assert [give(cap, d, f, split=20 if k % 3 == 0 else None)
            for k, (d, f) in enumerate(frames)] == [1] * 10
    after = time.time_ns()
    counts = cap.close()
    assert (counts.written, counts.lost, counts.files, counts.error) == (10, 0, 1, 0)
    [section] = read(path)
    assert section.version == (1, 0)
    assert section.options[4].startswith(b"nmbridge ")
    assert [(i.linktype, i.snaplen, i.name, i.tsresol) for i in section.interfaces] == [
        (1, SNAPLEN_MAX, NAMES[0], 9), (1, SNAPLEN_MAX, NAMES[1], 9)]
    assert [(p.interface, p.data, p.wirelen) for p in section.packets] == [
        (d, f, len(f)) for d, f in frames]
    # direction 0 (from port 0, the wire side) inbound, direction 1 outbound
    assert [p.flags & 3 for p in section.packets] == [1 if d == 0 else 2 for d, _ in frames]
    stamps = [p.ts_ns for p in section.packets]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after


def test_an_empty_capture_is_still_a_whole_file(tmp_path) -> None:
    path = str(tmp_path / "c.pcapng")
    open_file(path).close()
    [section] = read(path)
    assert len(section.interfaces) == 2 and section.packets == []


def test_snaplen_keeps_the_first_bytes_and_the_length_on_the_wire(tmp_path) -> None:
    path = str(tmp_path / "c.pcapng")
    cap = open_file(path, snaplen=64)
    big = frame(1, 1514)
    assert give(cap, 0, big, split=30) == 1
    assert give(cap, 1, frame(2, 60)) == 1
    cap.close()
    [section] = read(path)
    assert section.interfaces[0].snaplen == 64
    assert [(p.caplen, p.wirelen, p.data) for p in section.packets] == [
        (64, 1514, big[:64]), (60, 60, frame(2, 60))]


def test_a_full_ring_refuses_at_once_and_keeps_the_order_of_what_it_took() -> None:
    """A writer stuck on a pipe nobody reads: the ring fills, frames are refused (0),
    never waited for; what was taken comes out whole and in order once it drains."""
    rfd, wfd = os.pipe()
    cap = Capture(wfd, NAMES, ring_bytes=1 << 20)
    took = []
    started = time.monotonic()
    for k in range(400):
        took.append(give(cap, k % 2, frame(k, 9000)))
    assert time.monotonic() - started < 2.0  # a blocking producer would never have returned
    assert 0 in took and 1 in took
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(rfd, 1 << 16),
                                                                 b"")))
    reader.start()
    counts = cap.close()
    reader.join(10)
    os.close(rfd)
    [section] = pcapng.read(b"".join(chunks))
    taken = [k for k, r in enumerate(took) if r == 1]
    assert [int.from_bytes(p.data[:4], "big") for p in section.packets] == taken
    assert all(p.data == frame(k, 9000) for p, k in zip(section.packets, taken))
    assert counts.written == len(taken)


def test_the_engine_counts_what_the_capture_took_and_what_it_could_not(make_region) -> None:
    region = make_region([(1, 0, 1, 0)], num_slots=64, buf_size=2048)
    rx, tx = region.rx(), region.tx()
    rfd, wfd = os.pipe()  # nobody reads until the end: the ring fills
    cap = Capture(wfd, NAMES, ring_bytes=1 << 20)
    hooks = ffi.new("struct nmb_frame_hooks *")
    hooks.capture = Capture.hook()
    hooks.cap = cap.c
    rx.engine_state.hooks = hooks
    rxs, txs = ffi.new("struct nmb_ring_stats *"), ffi.new("struct nmb_ring_stats *")
    moved = 0
    for _ in range(20):
        rx.deliver(*[frame(k, 1500) for k in range(48)])
        moved += lib.nmb_ring_move(rx.ptr, tx.ptr, 64, 1, rx.engine_state, rxs, txs)
        tx.transmit()
    assert moved == 960 == rxs.frames
    assert rxs.captured + rxs.capture_dropped == moved
    assert rxs.captured > 0 and rxs.capture_dropped > 0
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(rfd, 1 << 16),
                                                                 b"")))
    reader.start()
    assert cap.close().written == rxs.captured
    reader.join(10)
    os.close(rfd)
    assert len(pcapng.read(b"".join(chunks))[0].packets) == rxs.captured


def test_a_write_error_stops_the_capture_and_says_why() -> None:
    rfd, wfd = os.pipe()
    os.close(rfd)  # EPIPE (Python ignores SIGPIPE)
    cap = Capture(wfd, NAMES)
    deadline = time.monotonic() + 5
    while cap.error() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cap.error() == os.strerror(32)
    assert give(cap, 0, frame(0)) == 0  # refused: counted as capture_dropped by the engine
    counts = cap.close()
    assert (counts.written, counts.error) == (0, 32)


def test_the_capture_filter_leaves_frames_out(tmp_path) -> None:
    path = str(tmp_path / "c.pcapng")
    cap = open_file(path)
    # classic BPF: ldb [3]; jset #1 -> ret #0 (odd: left out); else ret #262144
    cap.set_filter(Filter([(0x30, 0, 0, 3), (0x45, 0, 1, 1), (0x06, 0, 0, 0),
                           (0x06, 0, 0, 262144)]))
    assert [give(cap, 0, frame(k)) for k in range(4)] == [1, -1, 1, -1]
    cap.close()
    assert [p.data for p in read(path)[0].packets] == [frame(0), frame(2)]


@pytest.mark.parametrize(("n", "files", "name"), [
    (0, 0, "f"), (1, 0, "f1"), (12, 0, "f12"),      # -C alone: FILE, FILE1, FILE2, ...
    (0, 1, "f"), (0, 3, "f0"), (2, 3, "f2"),        # -W: every file numbered
    (9, 10, "f9"), (0, 11, "f00"), (10, 11, "f10"),  # ... with the digits COUNT - 1 needs
])
def test_files_are_named_as_tcpdump_names_them(n, files, name) -> None:
    assert file_name("f", n, files) == name


def test_rotation_makes_whole_files_in_a_ring(tmp_path) -> None:
    base = str(tmp_path / "r.pcapng")
    cap = Capture(os.open(file_name(base, 0, 3), os.O_WRONLY | os.O_CREAT, 0o600), NAMES,
                  path=base, file_bytes=3000, files=3)
    for k in range(20):
        assert give(cap, k % 2, frame(k, 1000)) == 1
    counts = cap.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["r.pcapng0", "r.pcapng1", "r.pcapng2"]
    seqs = {}
    for name in names:
        [section] = read(str(tmp_path / name))
        assert len(section.interfaces) == 2
        seqs[name] = [int.from_bytes(p.data[:4], "big") for p in section.packets]
    # a file takes frames until it is larger than 3000 bytes: 3 of 1000 (the headers first)
    assert all(len(s) <= 3 for s in seqs.values())
    assert sorted(k for s in seqs.values() for k in s)[-1] == 19
    assert counts.files == 7 and counts.written == 20


def test_rotation_without_a_count_numbers_from_the_second_file(tmp_path) -> None:
    base = str(tmp_path / "r")
    cap = Capture(os.open(base, os.O_WRONLY | os.O_CREAT, 0o600), NAMES, path=base,
                  file_bytes=1000)
    for k in range(5):
        give(cap, 0, frame(k, 1000))
    cap.close()
    assert sorted(os.listdir(tmp_path)) == ["r", "r1", "r2", "r3", "r4"]


def _writer_tid() -> int:
    """This process's capture writer thread (named nmb-capture)."""
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as f:
            if f.read().strip() == "nmb-capture":
                return int(task)
    raise AssertionError("no nmb-capture thread")


def _writer_switches() -> int:
    """Context switches of the capture writer thread."""
    with open(f"/proc/self/task/{_writer_tid()}/status") as f:
        return sum(int(line.split()[1]) for line in f
                   if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))


def test_the_writer_yields_its_core_to_forwarding() -> None:
    """The writer runs as SCHED_IDLE (the loop's thread keeps its own policy): on a
    core both share, forwarding comes first and the capture takes what is left."""
    import select

    rfd, wfd = os.pipe()
    cap = Capture(wfd, NAMES)
    try:
        assert select.select([rfd], [], [], 5)[0]  # the headers: the writer is past its start
        os.read(rfd, 1 << 16)
        assert os.sched_getscheduler(_writer_tid()) == os.SCHED_IDLE
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
    finally:
        cap.close()
        os.close(rfd)


def test_an_idle_writer_dozes_and_the_loop_wakes_it_for_a_frame() -> None:
    import select

    rfd, wfd = os.pipe()
    cap = Capture(wfd, NAMES)
    try:
        assert select.select([rfd], [], [], 5)[0]
        headers = os.read(rfd, 1 << 16)
        time.sleep(0.1)  # idle: past its naps, dozing
        before = _writer_switches()
        time.sleep(1.0)
        assert _writer_switches() - before <= 15  # ~10 a second, not thousands
        data = headers
        for k in range(3):  # a writer left to its 100 ms doze would miss some of these
            time.sleep(0.15)
            assert give(cap, 0, frame(k)) == 1
            assert select.select([rfd], [], [], 0.04)[0], "the doorbell did not wake it"
            data += os.read(rfd, 1 << 16)
        [section] = pcapng.read(data)
        assert [p.data for p in section.packets] == [frame(k) for k in range(3)]
    finally:
        cap.close()
        os.close(rfd)


def _written_by(tid: int) -> int:
    """Bytes this thread has handed to write() and writev() (the kernel's wchar)."""
    with open(f"/proc/self/task/{tid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def test_the_closing_thread_writes_what_a_starved_writer_left(tmp_path) -> None:
    """On a core that others keep busy the SCHED_IDLE writer gets next to no time: the
    close does not wait for it to drain the ring, it writes the rest itself."""
    import subprocess
    import sys

    cpu = min(os.sched_getaffinity(0))
    mask = os.sched_getaffinity(0)
    path = str(tmp_path / "c.pcapng")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    cap = None
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        os.sched_setaffinity(0, {cpu})  # this thread, the writer (it inherits) and the hog
        cap = open_file(path)
        time.sleep(0.05)  # the writer is past its headers, the hog runs
        body = frame(0, 1514)[4:]
        frames = [k.to_bytes(4, "big") + body for k in range(15000)]  # 23 MB of 32 MiB
        assert [give(cap, k & 1, f) for k, f in enumerate(frames)] == [1] * len(frames)
        me = threading.get_native_id()
        before = _written_by(me)
        cap.close()
        wrote = _written_by(me) - before
    finally:
        if cap is not None:
            cap.close()  # a second close is a no-op
        os.sched_setaffinity(0, mask)
        hog.kill()
        hog.wait()
    [section] = read(path)
    assert [p.data for p in section.packets] == frames
    # far more than the doorbell's 8 bytes: runs of blocks went out by this thread; a
    # writer with next to no time cannot have written 23 MB meanwhile
    assert wrote > 1 << 20, f"the close left the ring to the writer (this thread wrote {wrote})"

"""nmb_iov_insert: n bytes opened inside a frame scattered over buffers, as a
packet: port puts back the VLAN tag the kernel took out of a frame it received
(eport_packet.c, restore_vlan). The frame is whoever sent it: any length, any
split over the buffers; nothing outside them may be read or written (the
sanitizer step runs this file under ASan)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nmbridge._ffi._core import ffi, lib

GUARD = b"\xa5" * 16


def insert(sizes: list[int], frame: bytes, at: int, ins: bytes) -> tuple[int, bytes, list[bytes]]:
    """Lay frame over buffers of the given sizes, insert; (rc, the frame read back
    over its new length, each buffer's guard bytes after the call)."""
    bufs = [ffi.new("uint8_t[]", size + 2 * len(GUARD)) for size in sizes]
    iov = ffi.new("struct iovec[]", len(sizes))
    pos = 0
    for k, (buf, size) in enumerate(zip(bufs, sizes)):
        ffi.memmove(buf, GUARD, len(GUARD))
        ffi.memmove(buf + len(GUARD) + size, GUARD, len(GUARD))
        piece = frame[pos:pos + size]
        ffi.memmove(buf + len(GUARD), piece, len(piece))
        iov[k].iov_base = buf + len(GUARD)
        iov[k].iov_len = size
        pos += size
    rc = lib.nmb_iov_insert(iov, len(sizes), len(frame), at, ins, len(ins))
    flat = b"".join(bytes(ffi.buffer(b + len(GUARD), s)) for b, s in zip(bufs, sizes))
    guards = [bytes(ffi.buffer(b, len(GUARD))) + bytes(ffi.buffer(b + len(GUARD) + s,
                                                                  len(GUARD)))
              for b, s in zip(bufs, sizes)]
    return rc, flat[:len(frame) + len(ins)], guards


def test_a_tag_goes_back_after_the_mac_addresses() -> None:
    frame = bytes(range(12)) + b"\x88\xb5payload"
    rc, got, _ = insert([2048], frame, 12, b"\x81\x00\x00\x2a")
    assert rc == 0
    assert got == frame[:12] + b"\x81\x00\x00\x2a" + frame[12:]


def test_what_follows_moves_across_buffer_boundaries() -> None:
    frame = bytes(i % 251 for i in range(2048 * 3 - 4))  # fills 3 buffers once tagged
    rc, got, _ = insert([2048] * 3, frame, 12, b"TAG!")
    assert rc == 0 and got == frame[:12] + b"TAG!" + frame[12:]


def test_no_room_for_the_tag_changes_nothing() -> None:
    frame = bytes(i % 251 for i in range(2048 * 2 - 3))
    rc, got, _ = insert([2048] * 2, frame, 12, b"TAG!")
    assert rc == -1
    assert got[:len(frame)] == frame


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 64), min_size=1, max_size=8),
       data=st.data(), ins=st.binary(min_size=0, max_size=8))
def test_any_split_any_length(sizes: list[int], data: st.DataObject, ins: bytes) -> None:
    room = sum(sizes)
    length = data.draw(st.integers(0, room))
    at = data.draw(st.integers(0, length + 2))
    frame = data.draw(st.binary(min_size=length, max_size=length))
    rc, got, guards = insert(sizes, frame, at, ins)
    assert all(g == GUARD * 2 for g in guards), "written outside the buffers"
    if at > length or length + len(ins) > room:
        assert rc == -1
        assert got[:length] == frame
    else:
        assert rc == 0
        assert got == frame[:at] + ins + frame[at:]


@pytest.mark.parametrize("n", [0, 4])
def test_at_the_end(n: int) -> None:
    frame = b"x" * 20
    rc, got, _ = insert([16, 16], frame, 20, b"y" * n)
    assert rc == 0 and got == frame + b"y" * n

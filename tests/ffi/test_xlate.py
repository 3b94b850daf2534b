"""The engine between ports whose frames differ (struct nmb_xlate): a virtio-net header
taken off or put on, a checksum finished for a port that cannot, frames re-cut to the
TX ring's buffers, bad headers dropped and counted, a frame that does not fit waiting."""

from __future__ import annotations

import struct

import gso_model
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nmbridge._ffi._core import ffi, lib

HDR = 10
NEEDS_CSUM = 1
MOREFRAG = lib.NS_MOREFRAG


csum = gso_model.csum_sum  # the folded ones' complement sum


def udp4(payload: bytes, partial: bool) -> bytes:
    """An Ethernet/IPv4/UDP frame; partial: its UDP checksum holds only the
    pseudo-header sum, as a sender leaves it to the NIC."""
    src, dst = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    ulen = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 7, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", 0xFFFF - csum(ip)) + ip[12:]
    pseudo = csum(src + dst + struct.pack("!BBH", 0, 17, ulen))
    udp = struct.pack("!HHHH", 4000, 9, ulen, pseudo if partial else 0) + payload
    if not partial:
        full = 0xFFFF - csum(src + dst + struct.pack("!BBH", 0, 17, ulen) + udp)
        udp = udp[:6] + struct.pack("!H", full or 0xFFFF) + udp[8:]
    eth = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00"
    return eth + ip + udp


def vnet(flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso_size: int = 0,
         csum_start: int = 0, csum_offset: int = 0, size: int = HDR) -> bytes:
    h = struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)
    return h + bytes(size - len(h))


def udp_ok(frame: bytes) -> bool:
    ip = frame[14:34]
    udp = frame[34:]
    return csum(ip[12:20] + struct.pack("!BBH", 0, 17, len(udp)) + udp) == 0xFFFF


class Pair:
    """An RX and a TX ring of one region, and the translation between them."""

    def __init__(self, region, src_hdr: int, dst_hdr: int, offloads: int, check: int = 0):
        self.rx, self.tx = region.rx(), region.tx()
        self.x = ffi.new("struct nmb_xlate *", {"src_hdr": src_hdr, "dst_hdr": dst_hdr,
                                                "dst_offloads": offloads, "check": check})
        self.rx.engine_state.xlate = self.x
        self.rx.engine_state.hdr = src_hdr
        self.rxs = ffi.new("struct nmb_ring_stats *")
        self.txs = ffi.new("struct nmb_ring_stats *")

    def move(self, limit: int = 1024) -> int:
        return lib.nmb_ring_move(self.rx.ptr, self.tx.ptr, limit, 0, self.rx.engine_state,
                                 self.rxs, self.txs)

    def sent(self) -> list[bytes]:
        return [b"".join(s.data for s in f) for f in self.tx.transmit()]


@pytest.fixture
def pair(make_region):
    def make(src_hdr: int, dst_hdr: int, offloads: int = 0, check: int = 0, buf_size: int = 2048,
             num_slots: int = 16) -> Pair:
        region = make_region([(1, 0, 1, 0)], num_slots=num_slots, buf_size=buf_size)
        return Pair(region, src_hdr, dst_hdr, offloads, check)
    return make


def test_the_header_comes_off_for_a_port_without_one_and_bytes_count_the_frame(pair) -> None:
    p = pair(HDR, 0)
    frames = [udp4(bytes([k]) * (60 + k), partial=False) for k in range(3)]
    p.rx.deliver(*[vnet() + f for f in frames])
    assert p.move() == 3
    assert p.sent() == frames
    assert (p.rxs.frames, p.txs.frames) == (3, 3)
    assert p.rxs.bytes == p.txs.bytes == sum(map(len, frames))
    assert p.rx.head == p.rx.tail


def test_a_zero_header_goes_on_for_a_port_that_carries_them(pair) -> None:
    p = pair(0, HDR, lib.NMB_OFL_ALL)
    frame = udp4(b"x" * 100, partial=False)
    p.rx.deliver(frame)
    assert p.move() == 1
    assert p.sent() == [vnet() + frame]
    assert p.txs.bytes == len(frame)


def test_a_checksum_left_to_finish_is_finished_for_a_port_that_cannot(pair) -> None:
    p = pair(HDR, 0, 0)
    frame = udp4(b"payload!" * 20, partial=True)
    assert not udp_ok(frame)
    p.rx.deliver(vnet(NEEDS_CSUM, csum_start=34, csum_offset=6) + frame)
    assert p.move() == 1
    (out,) = p.sent()
    assert udp_ok(out)
    assert out[:40] == frame[:40] and out[42:] == frame[42:]  # only the checksum changed
    assert p.txs.csum_sw == 1


def test_a_checksum_left_to_finish_passes_to_a_port_that_takes_it(pair) -> None:
    p = pair(HDR, HDR, lib.NMB_OFL_CSUM)
    frame = udp4(b"payload!" * 20, partial=True)
    head = vnet(NEEDS_CSUM, csum_start=34, csum_offset=6)
    p.rx.deliver(head + frame)
    assert p.move() == 1
    assert p.sent() == [head + frame]
    assert p.txs.csum_sw == 0


def test_frames_are_cut_again_to_the_tx_buffers(pair) -> None:
    """A 600-byte frame behind a header, a chain of 256-byte buffers, leaves as 256+256+88."""
    p = pair(HDR, 0, buf_size=256)
    frame = bytes(range(256)) * 2 + bytes(88)
    whole = vnet() + frame
    p.rx.deliver([whole[:256], whole[256:512], whole[512:]])
    assert p.move() == 1
    out = p.tx.transmit()
    assert [s.len for s in out[0]] == [256, 256, 88]
    assert [bool(s.flags & MOREFRAG) for s in out[0]] == [True, True, False]
    assert b"".join(s.data for s in out[0]) == frame


def test_a_frame_without_room_on_the_tx_ring_waits_whole(pair) -> None:
    p = pair(HDR, 0, buf_size=256, num_slots=8)
    big = vnet() + bytes(1000)  # 4 slots here, 4 out
    p.rx.deliver([big[:256], big[256:512], big[512:768], big[768:]])
    p.tx.place(0, tail=2)  # 2 free TX slots
    assert p.move() == 0
    assert p.rxs.txfull == 1
    assert p.rx.head == 0 and p.tx.head == 0  # nothing taken, nothing written
    p.tx.ptr.tail = 7  # the kernel hands the rest back
    assert p.move() == 1
    assert b"".join(s.data for s in p.tx.transmit()[0]) == bytes(1000)


def test_a_super_frame_waits_for_the_slots_of_its_segments_and_says_so(pair) -> None:
    """Review of issue 15: a USO super-frame of 4 RX slots makes 16 segments. With 8 TX
    slots free it waits, and nmb_tx_short must say the TX ring is short (the loop then
    forces a reclaim, which a native NIC's poll() never does while a slot is free):
    counting the chain's 4 slots, it did not, and the bridge stalled for good."""
    p = pair(HDR, 0, num_slots=64)
    frame = udp4(bytes(range(250)) * 32, partial=True)  # 8000 bytes of payload
    whole = vnet(NEEDS_CSUM, gso_type=5, gso_size=500, csum_start=34, csum_offset=6) + frame
    p.rx.deliver([whole[k:k + 2048] for k in range(0, len(whole), 2048)])
    p.tx.place(0, tail=8)
    assert p.move() == 0 and p.rxs.txfull == 1
    rx, tx = ffi.new("struct netmap_ring *[1]", [p.rx.ptr]), ffi.new(
        "struct netmap_ring *[1]", [p.tx.ptr])
    assert lib.nmb_tx_short(rx, 1, tx, 1, ffi.NULL) == 0  # the chain alone: 4 slots fit 8
    assert lib.nmb_tx_short(rx, 1, tx, 1, p.rx.engine_state) == 1
    p.tx.ptr.tail = 63  # the reclaim the loop forces
    assert p.move() == 1
    assert p.txs.gso_segments == 16 and all(udp_ok(f) for f in p.sent())
    assert lib.nmb_tx_short(rx, 1, tx, 1, p.rx.engine_state) == 0  # nothing waits


@pytest.mark.parametrize("head", [
    vnet(gso_type=77),  # a type nobody defined
    vnet(flags=0x80),  # a flag nobody defined
    vnet(NEEDS_CSUM, csum_start=200, csum_offset=6),  # past the frame
])
def test_an_unchecked_header_that_does_not_fit_is_dropped_and_counted(pair, head) -> None:
    p = pair(HDR, 0, check=1)
    good = udp4(b"y" * 50, partial=False)
    p.rx.deliver(head + udp4(b"z" * 50, partial=False), vnet() + good)
    assert p.move() == 1
    assert p.sent() == [good]
    assert (p.rxs.drop_header, p.rxs.frames) == (1, 1)


def test_a_first_slot_shorter_than_the_header_is_a_header_drop(pair) -> None:
    p = pair(HDR, 0)
    p.rx.deliver(b"\0" * 4)
    assert p.move() == 0
    assert p.rxs.drop_header == 1
    assert p.rx.head == p.rx.tail


def test_without_translation_the_bytes_counted_leave_the_headers_out(make_region) -> None:
    region = make_region([(1, 0, 1, 0)], num_slots=16)
    rx, tx = region.rx(), region.tx()
    rx.engine_state.hdr = HDR
    rx.deliver(vnet() + bytes(60), vnet() + bytes(100))
    rxs = ffi.new("struct nmb_ring_stats *")
    txs = ffi.new("struct nmb_ring_stats *")
    assert lib.nmb_ring_move(rx.ptr, tx.ptr, 64, 1, rx.engine_state, rxs, txs) == 2
    assert rxs.bytes == txs.bytes == 160


# -- super-frames ------------------------------------------------------------------

def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "udp4", "udp6"])
def test_a_super_frame_is_segmented_for_a_port_without_headers(pair, kind) -> None:
    """As the kernel's own software GSO would (tests/gso_model.py), each segment cut to
    the TX buffers; counted: one super-frame in, its segments out."""
    b = gso_model.super_frame(kind, bytes(range(256)) * 20, 1400)
    p = pair(HDR, 0, num_slots=64)
    p.rx.deliver(chunks(b.vh.pack() + b.frame, 2048))
    assert p.move() == 1
    want = gso_model.segment(b.vh, b.frame)
    assert p.sent() == want
    assert (p.rxs.frames, p.rxs.gso_frames) == (1, 1)
    assert p.txs.frames == p.txs.gso_segments == len(want) == 4
    assert p.txs.bytes == sum(map(len, want))


def test_a_super_frame_passes_whole_to_a_port_that_takes_it(pair) -> None:
    b = gso_model.super_frame("tcp4", bytes(5000), 1400)
    p = pair(HDR, HDR, lib.NMB_OFL_ALL, num_slots=64)
    whole = b.vh.pack() + b.frame
    p.rx.deliver(chunks(whole, 2048))
    assert p.move() == 1
    assert p.sent() == [whole]
    assert p.rxs.gso_frames == 0


def test_a_super_frame_a_port_half_takes_is_segmented_behind_zero_headers(pair) -> None:
    """A VALE port takes TSO but not USO: a UDP super-frame is cut here, each segment
    behind a zero header."""
    b = gso_model.super_frame("udp4", bytes(3000), 1000)
    p = pair(HDR, HDR, lib.NMB_OFL_CSUM | lib.NMB_OFL_TSO4 | lib.NMB_OFL_TSO6, num_slots=64)
    p.rx.deliver(chunks(b.vh.pack() + b.frame, 2048))
    assert p.move() == 1
    assert p.sent() == [bytes(HDR) + s for s in gso_model.segment(b.vh, b.frame)]


def test_segments_wait_whole_for_room(pair) -> None:
    b = gso_model.super_frame("tcp4", bytes(4000), 1000)  # 4 segments
    p = pair(HDR, 0, num_slots=8)
    p.rx.deliver(chunks(b.vh.pack() + b.frame, 2048))
    p.tx.place(0, tail=3)  # 3 free slots
    assert p.move() == 0
    assert (p.rxs.txfull, p.tx.head) == (1, 0)
    p.tx.ptr.tail = 7
    assert p.move() == 1
    assert len(p.sent()) == 4


# -- untrusted headers ---------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(head=st.binary(min_size=HDR, max_size=HDR), body=st.binary(min_size=0, max_size=3000),
       src_hdr=st.sampled_from([HDR, 12]), dst_hdr=st.sampled_from([0, HDR, 12]),
       offloads=st.integers(0, 0x1F), check=st.booleans(), buf_size=st.sampled_from([256, 2048]))
def test_any_header_is_forwarded_or_counted_and_nothing_is_written_outside(
        region_type, head, body, src_hdr, dst_hdr, offloads, check, buf_size) -> None:
    """Random header bytes in front of random frames (a guest chooses both): each frame
    moves or is counted, and the TX ring's slots past what was written keep their
    canaries (the sanitizer run checks the reads)."""
    with region_type([(1, 0, 1, 0)], num_slots=64, buf_size=buf_size) as region:
        p = Pair(region, src_hdr, dst_hdr, offloads, int(check))
        whole = head + bytes(src_hdr - HDR) + body
        p.rx.deliver(chunks(whole, buf_size), b"\x01" * HDR + bytes(src_hdr - HDR) + bytes(60))
        canary = b"\xa5" * buf_size
        for i in range(p.tx.num_slots):
            ffi.memmove(p.tx.slot_addr(i), canary, buf_size)
        moved = p.move()
        rxs = p.rxs
        counted = (rxs.drop_header + rxs.drop_gso + rxs.drop_oversize + rxs.drop_chain)
        assert moved + counted == 2 or p.rx.head != p.rx.tail  # a frame may wait for room
        sent = p.tx.txsync()
        for i in range(len(sent), p.tx.num_slots):
            assert p.tx.slot_buf(i)[:] == canary
        for s in sent:
            assert s.len <= buf_size

"""The engine's per-frame hooks (struct nmb_frame_hooks): a filter that drops what it
refuses (counted as filtered), a capture handed every frame that crosses, before its
buffers move, with what it could not take counted."""

from __future__ import annotations

import pytest
from nmbridge._ffi._core import ffi, lib

MATCH = "int(*)(const void *, const uint8_t *, uint32_t, uint32_t)"
CAPTURE = "int(*)(void *, uint32_t, const struct iovec *, int, uint32_t)"


def frame(seq: int, size: int = 60) -> bytes:
    return seq.to_bytes(4, "big") + bytes(size - 4)


class Hooked:
    def __init__(self, region, hdr: int = 0, take: int = 1) -> None:
        self.rx, self.tx = region.rx(), region.tx()
        self.seen: list[tuple[int, int, bytes]] = []
        self.captured: list[tuple[int, bytes]] = []

        @ffi.callback(MATCH)
        def match(_f, pkt, buflen, wirelen):  # type: ignore[no-untyped-def]
            data = bytes(ffi.buffer(pkt, buflen))
            self.seen.append((buflen, wirelen, data))
            return int.from_bytes(data[:4], "big") % 2 == 0  # even sequence numbers cross

        @ffi.callback(CAPTURE)
        def capture(_c, direction, iov, niov, length):  # type: ignore[no-untyped-def]
            data = b"".join(bytes(ffi.buffer(iov[k].iov_base, iov[k].iov_len))
                            for k in range(niov))
            assert len(data) == length
            self.captured.append((direction, data))
            return take

        self.match, self.capture = match, capture
        self.hooks = ffi.new("struct nmb_frame_hooks *")
        self.rx.engine_state.hooks = self.hooks
        self.rx.engine_state.hdr = hdr
        self.rxs = ffi.new("struct nmb_ring_stats *")
        self.txs = ffi.new("struct nmb_ring_stats *")

    def move(self, zerocopy: int = 1) -> int:
        return lib.nmb_ring_move(self.rx.ptr, self.tx.ptr, 64, zerocopy, self.rx.engine_state,
                                 self.rxs, self.txs)


@pytest.fixture
def hooked(make_region):
    def make(**kw):  # type: ignore[no-untyped-def]
        return Hooked(make_region([(1, 0, 1, 0)], num_slots=32, buf_size=256), **kw)
    return make


@pytest.mark.parametrize("zerocopy", [1, 0])
def test_a_filter_drops_what_it_refuses_and_counts_it(hooked, zerocopy) -> None:
    h = hooked()
    h.hooks.match = h.match
    h.rx.deliver(*[frame(k) for k in range(6)])
    assert h.move(zerocopy) == 3
    sent = h.tx.transmit()
    assert [int.from_bytes(f[0].data[:4], "big") for f in sent] == [0, 2, 4]
    assert (h.rxs.frames, h.rxs.filtered, h.txs.frames) == (3, 3, 3)
    assert h.rx.head == h.rx.tail  # the refused ones are released too


def test_a_chain_is_matched_on_its_first_slot_with_its_whole_length(hooked) -> None:
    h = hooked(hdr=10)
    h.hooks.match = h.match
    whole = bytes(10) + frame(2, 600)
    h.rx.deliver([whole[:256], whole[256:512], whole[512:]])
    assert h.move() == 1
    assert h.seen == [(246, 600, frame(2, 600)[:246])]
    assert h.rxs.bytes == 600


@pytest.mark.parametrize("zerocopy", [1, 0])
def test_the_capture_gets_each_frame_that_crosses_before_its_buffers_move(hooked,
                                                                          zerocopy) -> None:
    h = hooked(hdr=10)
    h.hooks.match = h.match
    h.hooks.capture = h.capture
    h.hooks.dir = 1
    frames = [bytes(10) + frame(k, 100 + k) for k in range(4)]
    h.rx.deliver(*frames)
    assert h.move(zerocopy) == 2
    assert h.captured == [(1, frames[0][10:]), (1, frames[2][10:])]
    assert (h.rxs.captured, h.rxs.capture_dropped) == (2, 0)


def test_what_the_capture_cannot_take_still_crosses_and_is_counted(hooked) -> None:
    h = hooked(take=0)
    h.hooks.capture = h.capture
    h.rx.deliver(*[frame(k) for k in range(5)])
    assert h.move() == 5
    assert len(h.tx.transmit()) == 5
    assert (h.rxs.captured, h.rxs.capture_dropped) == (0, 5)


def test_a_frame_the_capture_filter_leaves_out_is_neither_captured_nor_dropped(hooked) -> None:
    h = hooked(take=-1)
    h.hooks.capture = h.capture
    h.rx.deliver(frame(0))
    assert h.move() == 1
    assert (h.rxs.captured, h.rxs.capture_dropped) == (0, 0)


def test_a_frame_waiting_for_tx_room_is_captured_once_when_it_crosses(hooked) -> None:
    h = hooked()
    h.hooks.capture = h.capture
    h.rx.deliver(frame(0), frame(1))
    h.tx.place(0, tail=1)  # one free slot
    assert h.move() == 1
    h.tx.txsync()
    assert h.move() == 1
    assert [d[:4] for _, d in h.captured] == [frame(0)[:4], frame(1)[:4]]

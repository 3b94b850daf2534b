"""nmb_ring_move and nmb_forward on rings laid out in memory.

The tests play the kernel (conftest.Ring.deliver / transmit) and check what
the engine leaves on the rings and in the counters.
"""

from __future__ import annotations

import pytest
from nmbridge._ffi._core import ffi, lib

MOREFRAG = lib.NS_MOREFRAG
BUF_CHANGED = lib.NS_BUF_CHANGED
MAX_FRAGS = lib.NETMAP_MAX_FRAGS

both_modes = pytest.mark.parametrize("zerocopy", [1, 0], ids=["zerocopy", "copy"])


def payload(seq: int, size: int = 60) -> bytes:
    """A frame body that names its sequence number in its first 4 bytes."""
    head = seq.to_bytes(4, "big")
    return head + bytes((seq + k) & 0xFF for k in range(size - 4))


def seqs(frames) -> list[int]:
    return [int.from_bytes(f[0].data[:4], "big") for f in frames]


def move(rx, tx, limit=1024, zerocopy=1):
    """One nmb_ring_move; returns (frames moved, rx stats, tx stats)."""
    rxs = ffi.new("struct nmb_ring_stats *")
    txs = ffi.new("struct nmb_ring_stats *")
    n = lib.nmb_ring_move(rx.ptr, tx.ptr, limit, zerocopy, rx.engine_state, rxs, txs)
    return n, rxs, txs


@pytest.fixture
def rings(make_region):
    """An RX and a TX ring of 16 slots, 2048-byte buffers, in one region."""
    region = make_region([(1, 0, 1, 0)], num_slots=16, buf_size=2048)
    return region.rx(), region.tx()


# -- moving slots ---------------------------------------------------------------


def test_zerocopy_swaps_buf_idx_and_marks_both_slots(rings) -> None:
    rx, tx = rings
    rx.deliver(payload(0), payload(1), payload(2))
    rx_before = [rx.slots[i].buf_idx for i in range(3)]
    tx_before = [tx.slots[i].buf_idx for i in range(3)]

    n, _, _ = move(rx, tx, zerocopy=1)

    assert n == 3
    assert [tx.slots[i].buf_idx for i in range(3)] == rx_before
    assert [rx.slots[i].buf_idx for i in range(3)] == tx_before
    for i in range(3):
        assert tx.slots[i].flags & BUF_CHANGED
        assert rx.slots[i].flags & BUF_CHANGED
    assert seqs(tx.transmit()) == [0, 1, 2]


@both_modes
def test_transmitted_bytes_are_the_received_ones(rings, zerocopy) -> None:
    rx, tx = rings
    frames = [payload(7, 60), payload(8, 1514), payload(9, 2048)]
    rx.deliver(*frames)
    move(rx, tx, zerocopy=zerocopy)
    assert [f[0].data for f in tx.transmit()] == frames


def test_copy_copies_bytes_and_keeps_buffer_indices(rings) -> None:
    rx, tx = rings
    rx.deliver(payload(0, 100), payload(1, 1000))
    rx_before = [rx.slots[i].buf_idx for i in range(rx.num_slots)]
    tx_before = [tx.slots[i].buf_idx for i in range(tx.num_slots)]

    n, _, _ = move(rx, tx, zerocopy=0)

    assert n == 2
    assert [rx.slots[i].buf_idx for i in range(rx.num_slots)] == rx_before
    assert [tx.slots[i].buf_idx for i in range(tx.num_slots)] == tx_before
    assert tx.slot_buf(0)[:100] == payload(0, 100)
    assert tx.slot_buf(1)[:1000] == payload(1, 1000)
    assert not tx.slots[0].flags & BUF_CHANGED, "copy mode leaves the TX buffer in place"
    assert rx.slot_buf(0)[:100] == payload(0, 100), "the RX buffer is only read"


def test_copy_between_regions_with_different_buffer_sizes(make_region) -> None:
    rx = make_region([(0, 0, 1, 0)], num_slots=8, buf_size=2048).rx()
    tx = make_region([(1, 0, 0, 0)], num_slots=8, buf_size=1024).tx()
    rx.deliver(payload(0, 1024), payload(1, 64))
    n, rxs, _ = move(rx, tx, zerocopy=0)
    assert n == 2
    assert rxs.drop_oversize == 0
    assert [f[0].data for f in tx.transmit()] == [payload(0, 1024), payload(1, 64)]


@both_modes
def test_lengths_and_morefrag_are_carried(rings, zerocopy) -> None:
    rx, tx = rings
    chain = [payload(1, 2048), payload(1, 2048)[:700], b"tail"]
    rx.deliver(chain, payload(2, 60))
    n, _, _ = move(rx, tx, zerocopy=zerocopy)
    assert n == 2
    lens = [tx.slots[i].len for i in range(4)]
    more = [bool(tx.slots[i].flags & MOREFRAG) for i in range(4)]
    assert lens == [2048, 700, 4, 60]
    assert more == [True, True, False, False]
    frames = tx.transmit()
    assert [[s.data for s in f] for f in frames] == [chain, [payload(2, 60)]]


def test_rx_flags_of_the_kernel_do_not_confuse_chains(rings) -> None:
    """VALE sets 0x100 on RX slots: only NS_MOREFRAG decides where a frame ends."""
    rx, tx = rings
    rx.deliver([b"a" * 60, b"b" * 60], b"c" * 60, extra_flags=0x100)
    n, _, _ = move(rx, tx)
    assert n == 2
    assert [len(f) for f in tx.transmit()] == [2, 1]


@both_modes
def test_head_and_cur_advance_on_both_rings(rings, zerocopy) -> None:
    rx, tx = rings
    rx.deliver([b"x" * 60] * 3, b"y" * 60, [b"z" * 60] * 2)  # 6 slots, 3 frames
    rx_tail, tx_tail = rx.tail, tx.tail
    move(rx, tx, zerocopy=zerocopy)
    assert (rx.ptr.head, rx.ptr.cur, rx.ptr.tail) == (6, 6, rx_tail)
    assert (tx.ptr.head, tx.ptr.cur, tx.ptr.tail) == (6, 6, tx_tail)


@both_modes
def test_order_is_kept_across_the_end_of_the_rings(rings, zerocopy) -> None:
    rx, tx = rings
    rx.place(13)
    tx.place(10)
    rx.deliver(*[payload(s) for s in range(12)])
    n, _, _ = move(rx, tx, zerocopy=zerocopy)
    assert n == 12
    assert (rx.head, tx.head) == ((13 + 12) % 16, (10 + 12) % 16)
    assert seqs(tx.transmit()) == list(range(12))


@both_modes
def test_limit_counts_frames(rings, zerocopy) -> None:
    rx, tx = rings
    rx.deliver(*[[payload(s), payload(s)] for s in range(5)])  # 5 frames of 2 slots
    n, rxs, txs = move(rx, tx, limit=2, zerocopy=zerocopy)
    assert n == 2
    assert (rxs.frames, txs.frames) == (2, 2)
    assert (rx.head, tx.head) == (4, 4)
    n, _, _ = move(rx, tx, limit=0, zerocopy=zerocopy)
    assert n == 0
    assert rx.head == 4
    n, _, _ = move(rx, tx, limit=100, zerocopy=zerocopy)
    assert n == 3
    assert seqs(tx.transmit()) == [0, 1, 2, 3, 4]


@both_modes
def test_full_tx_ring_stops_the_move_and_counts_txfull(rings, zerocopy) -> None:
    rx, tx = rings
    tx.place(0, tail=3)  # user space owns 3 TX slots
    rx.deliver(*[payload(s) for s in range(5)])
    n, rxs, txs = move(rx, tx, zerocopy=zerocopy)
    assert n == 3
    assert (rxs.txfull, txs.txfull) == (1, 0)
    assert (rx.head, tx.head) == (3, 3)
    assert seqs(tx.transmit()) == [0, 1, 2]
    n, rxs, _ = move(rx, tx, zerocopy=zerocopy)
    assert n == 2
    assert rxs.txfull == 0
    assert seqs(tx.transmit()) == [3, 4]


def test_empty_rx_ring_is_not_txfull(rings) -> None:
    rx, tx = rings
    tx.place(0, tail=0)
    n, rxs, _ = move(rx, tx)
    assert (n, rxs.txfull) == (0, 0)


@both_modes
def test_chain_waits_whole_for_tx_room(rings, zerocopy) -> None:
    rx, tx = rings
    tx.place(0, tail=2)
    rx.deliver([payload(1)] * 3)
    n, rxs, _ = move(rx, tx, zerocopy=zerocopy)
    assert (n, rxs.txfull) == (0, 1)
    assert (rx.head, tx.head) == (0, 0), "no part of the chain moved"
    tx.ptr.tail = 15
    n, _, _ = move(rx, tx, zerocopy=zerocopy)
    assert n == 1
    assert [len(f) for f in tx.transmit()] == [3]


# -- drops ----------------------------------------------------------------------


@both_modes
def test_slot_longer_than_the_buffer_is_dropped_and_counted(rings, zerocopy) -> None:
    rx, tx = rings
    rx.deliver(payload(0), [(payload(1), 2049)], payload(2, 2048))
    n, rxs, txs = move(rx, tx, zerocopy=zerocopy)
    assert n == 2
    assert rxs.drop_oversize == 1
    assert seqs(tx.transmit()) == [0, 2], "a buffer-sized frame passes, a longer one does not"
    assert rx.head == 3, "the dropped slot is handed back"
    assert (rxs.bytes, txs.bytes) == (60 + 2048, 60 + 2048)


@both_modes
def test_chain_with_one_oversize_slot_is_dropped_whole(rings, zerocopy) -> None:
    rx, tx = rings
    rx.deliver([payload(0), (payload(0), 4000), payload(0)], payload(1))
    n, rxs, _ = move(rx, tx, zerocopy=zerocopy)
    assert n == 1
    assert rxs.drop_oversize == 1, "one frame, counted once"
    assert [[s.data for s in f] for f in tx.transmit()] == [[payload(1)]]


def test_oversize_is_measured_against_the_destination_buffer(make_region) -> None:
    rx = make_region([(0, 0, 1, 0)], num_slots=8, buf_size=2048).rx()
    tx = make_region([(1, 0, 0, 0)], num_slots=8, buf_size=1024).tx()
    rx.deliver(payload(0, 1025), payload(1, 1024))
    n, rxs, _ = move(rx, tx, zerocopy=0)
    assert n == 1
    assert rxs.drop_oversize == 1
    assert [f[0].data for f in tx.transmit()] == [payload(1, 1024)]


def test_oversize_drops_do_not_wait_for_tx_room(rings) -> None:
    rx, tx = rings
    tx.place(0, tail=0)
    rx.deliver([(b"", 3000)], [(b"", 3000)], payload(2))
    n, rxs, _ = move(rx, tx)
    assert n == 0
    assert rxs.drop_oversize == 2
    assert rx.head == 2, "drops released, the good frame waits for room"


@both_modes
def test_incomplete_chain_at_tail_waits(rings, zerocopy) -> None:
    rx, tx = rings
    rx.deliver(payload(0))
    rx.deliver_slots([(payload(1), 60, True), (payload(1), 60, True)])
    n, rxs, _ = move(rx, tx, zerocopy=zerocopy)
    assert n == 1
    assert rxs.drop_chain == 0
    assert rx.head == 1, "the chain's first slots stay with user space"
    assert seqs(tx.transmit()) == [0]

    rx.deliver_slots([(payload(1), 30, False)])
    n, _, _ = move(rx, tx, zerocopy=zerocopy)
    assert n == 1
    frames = tx.transmit()
    assert [s.len for s in frames[0]] == [60, 60, 30]


def test_incomplete_chain_puts_cur_at_tail_so_that_poll_brings_its_rest(rings) -> None:
    """cur is netmap's wakeup point: poll(POLLIN) returns at once while cur != tail.
    A chain waiting for its last slots must not count as frames waiting for TX room,
    or the loop never asks POLLIN for that port (no rxsync: its rest never comes)
    and spins on the peer's POLLOUT."""
    rx, tx = rings
    rx.deliver(payload(0))
    rx.deliver_slots([(payload(1), 60, True), (payload(1), 60, True)])
    move(rx, tx)
    assert (rx.head, rx.ptr.cur, rx.tail) == (1, 3, 3)
    assert lib.nmb_rx_pending([rx.ptr], 1) == 0

    rx.deliver_slots([(payload(1), 30, False)])
    assert lib.nmb_rx_pending([rx.ptr], 1) == 1
    move(rx, tx)
    assert (rx.head, rx.ptr.cur, rx.tail) == (4, 4, 4)


def test_frames_waiting_for_tx_room_are_pending(rings) -> None:
    rx, tx = rings
    tx.place(0, tail=1)  # room for one slot
    rx.deliver(payload(0), payload(1))
    n, _, _ = move(rx, tx)
    assert n == 1
    assert (rx.head, rx.ptr.cur) == (1, 1)
    assert lib.nmb_rx_pending([rx.ptr], 1) == 1


def test_chain_that_fills_the_rx_ring_is_dropped_and_counted(rings) -> None:
    rx, tx = rings
    rx.deliver_slots([(payload(0), 60, True)] * 15)  # 16 slots: the kernel keeps one
    assert rx.kernel_room() == 0
    n, rxs, _ = move(rx, tx)
    assert n == 0
    assert rxs.drop_chain == 1
    assert rx.head == rx.tail, "the ring is handed back so that the kernel can go on"
    assert tx.head == 0


def test_chain_one_short_of_filling_the_ring_waits(rings) -> None:
    rx, tx = rings
    rx.deliver_slots([(payload(0), 60, True)] * 14)
    n, rxs, _ = move(rx, tx)
    assert (n, rxs.drop_chain, rx.head) == (0, 0, 0)


@pytest.fixture
def long_rings(make_region):
    region = make_region([(1, 0, 1, 0)], num_slots=256, buf_size=64)
    return region.rx(), region.tx()


@pytest.mark.parametrize("zerocopy", [1, 0], ids=["zerocopy", "copy"])
def test_chain_of_max_frags_passes_and_one_more_is_dropped(long_rings, zerocopy) -> None:
    rx, tx = long_rings
    rx.deliver([b"a"] * MAX_FRAGS, [b"b"] * (MAX_FRAGS + 1), b"c")
    n, rxs, txs = move(rx, tx, zerocopy=zerocopy)
    assert n == 2
    assert rxs.drop_chain == 1
    assert [len(f) for f in tx.transmit()] == [MAX_FRAGS, 1]
    assert txs.bytes == MAX_FRAGS + 1


def test_incomplete_chain_of_max_frags_is_dropped(long_rings) -> None:
    rx, tx = long_rings
    rx.deliver_slots([(b"a", 1, True)] * MAX_FRAGS)
    n, rxs, _ = move(rx, tx)
    assert (n, rxs.drop_chain, rx.head) == (0, 1, MAX_FRAGS)


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut"])
def test_too_long_chain_with_an_oversize_slot_is_a_chain_drop(long_rings, cut) -> None:
    """Whole or cut, a chain over NETMAP_MAX_FRAGS is counted the same way."""
    rx, tx = long_rings
    slots = [(b"x", 65, True)] + [(b"a", 1, True)] * MAX_FRAGS + [(b"z", 1, False)]
    counted = []
    for part in (slots[:MAX_FRAGS], slots[MAX_FRAGS:]) if cut else (slots,):
        rx.deliver_slots(part)
        _, rxs, _ = move(rx, tx)
        counted.append((rxs.drop_chain, rxs.drop_oversize))
    rx.deliver(payload(7))
    move(rx, tx)
    assert seqs(tx.transmit()) == [7]
    assert [sum(c) for c in zip(*counted)] == [1, 0]


def test_incomplete_chain_below_max_frags_waits(long_rings) -> None:
    rx, tx = long_rings
    rx.deliver_slots([(b"a", 1, True)] * (MAX_FRAGS - 1))
    n, rxs, _ = move(rx, tx)
    assert (n, rxs.drop_chain, rx.head) == (0, 0, 0)


def test_rest_of_a_dropped_chain_is_not_forwarded(rings) -> None:
    rx, tx = rings
    rx.deliver_slots([(payload(0), 60, True)] * 15)
    move(rx, tx)  # fills the ring: dropped
    rx.deliver_slots([(payload(0), 60, True), (payload(0), 60, False)])
    rx.deliver(payload(1))
    move(rx, tx)
    assert seqs(tx.transmit()) == [1]


def test_chain_longer_than_the_tx_ring_is_dropped(make_region) -> None:
    rx = make_region([(0, 0, 1, 0)], num_slots=32, buf_size=2048).rx()
    tx = make_region([(1, 0, 0, 0)], num_slots=8, buf_size=2048).tx()
    rx.deliver([payload(0)] * 8, [payload(1)] * 7)
    n, rxs, _ = move(rx, tx, zerocopy=0)
    assert n == 1
    assert rxs.drop_chain == 1
    assert seqs(tx.transmit()) == [1]


@both_modes
def test_counters_count_frames_and_bytes_on_both_sides(rings, zerocopy) -> None:
    rx, tx = rings
    rx.deliver(payload(0, 100), [payload(1, 2048), payload(1, 10)], [(b"", 5000)])
    rx.deliver_slots([(b"w", 1, True)])  # waits
    n, rxs, txs = move(rx, tx, zerocopy=zerocopy)
    assert n == 2
    for s in (rxs, txs):
        assert (s.frames, s.bytes) == (2, 100 + 2048 + 10)
    assert (rxs.drop_oversize, rxs.drop_chain, rxs.txfull) == (1, 0, 0)
    assert (txs.drop_oversize, txs.drop_chain, txs.txfull) == (0, 0, 0)


def test_counters_accumulate(rings) -> None:
    rx, tx = rings
    rxs = ffi.new("struct nmb_ring_stats *", {"frames": 10, "bytes": 1000})
    txs = ffi.new("struct nmb_ring_stats *")
    rx.deliver(payload(0, 64))
    lib.nmb_ring_move(rx.ptr, tx.ptr, 64, 1, rx.engine_state, rxs, txs)
    assert (rxs.frames, rxs.bytes) == (11, 1064)


@pytest.mark.parametrize("field", ["head", "tail"])
def test_ring_with_an_index_out_of_range_is_left_alone(rings, field) -> None:
    rx, tx = rings
    rx.deliver(payload(0))
    before = (rx.ptr.head, rx.ptr.tail, tx.ptr.head, tx.ptr.tail)
    setattr(tx.ptr, field, 16)
    n, _, _ = move(rx, tx)
    assert n == 0
    assert (rx.ptr.head, rx.ptr.tail) == before[:2]


# -- nmb_forward ----------------------------------------------------------------


class Bridge:
    """Several RX and TX rings of one region and the state nmb_forward keeps."""

    def __init__(self, region, nrx: int, ntx: int) -> None:
        self.rx = [region.rx(0, i) for i in range(nrx)]
        self.tx = [region.tx(0, i) for i in range(ntx)]
        self._rx = ffi.new("struct netmap_ring *[]", [r.ptr for r in self.rx])
        self._tx = ffi.new("struct netmap_ring *[]", [r.ptr for r in self.tx])
        self.state = ffi.new("struct nmb_rx_state[]", nrx)
        self.rxs = ffi.new("struct nmb_ring_stats[]", nrx)
        self.txs = ffi.new("struct nmb_ring_stats[]", ntx)
        self.next_rx = ffi.new("uint32_t *")

    def forward(self, burst: int, zerocopy: int = 1) -> int:
        return lib.nmb_forward(
            self._rx, len(self.rx), self._tx, len(self.tx), burst, zerocopy,
            self.state, self.rxs, self.txs, self.next_rx,
        )  # fmt: skip


@pytest.fixture
def bridge(make_region):
    def make(nrx: int, ntx: int, num_slots: int = 64) -> Bridge:
        return Bridge(make_region([(ntx, 0, nrx, 0)], num_slots=num_slots, buf_size=128), nrx, ntx)

    return make


def tagged(ring: int, seq: int) -> bytes:
    return bytes([ring]) + seq.to_bytes(3, "big") + b"." * 56


def origin(frames) -> list[tuple[int, int]]:
    return [(f[0].data[0], int.from_bytes(f[0].data[1:4], "big")) for f in frames]


def test_busy_ring_cannot_starve_the_others(bridge) -> None:
    b = bridge(4, 1)
    b.rx[0].deliver(*[tagged(0, s) for s in range(60)])
    for r in (1, 2, 3):
        b.rx[r].deliver(tagged(r, 0), tagged(r, 1))
    assert b.forward(burst=4) == 4 + 2 + 2 + 2
    assert [r.space() for r in b.rx] == [56, 0, 0, 0]
    assert [b.rxs[r].frames for r in range(4)] == [4, 2, 2, 2]


def test_every_ring_is_served_on_every_call(bridge) -> None:
    b = bridge(3, 1, num_slots=256)
    for r in range(3):
        b.rx[r].deliver(*[tagged(r, s) for s in range(40)])
    for call in range(1, 6):
        assert b.forward(burst=8) == 24
        assert [b.rxs[r].frames for r in range(3)] == [8 * call] * 3


def test_order_kept_per_ring_pair(bridge) -> None:
    b = bridge(3, 1, num_slots=256)
    for r in range(3):
        b.rx[r].deliver(*[tagged(r, s) for s in range(20)])
    while b.forward(burst=3):
        pass
    sent = origin(b.tx[0].transmit())
    for r in range(3):
        assert [s for ring, s in sent if ring == r] == list(range(20))


def test_next_rx_rotates(bridge) -> None:
    b = bridge(3, 1)
    seen = []
    for _ in range(4):
        seen.append(b.next_rx[0])
        b.forward(burst=4)
    assert seen == [0, 1, 2, 0]
    b.next_rx[0] = 7  # out of range: start again from ring 0
    b.forward(burst=4)
    assert b.next_rx[0] == 1


def test_rotation_decides_who_gets_a_scarce_tx_ring(bridge) -> None:
    """TX takes 4 frames per call; the ring served first changes every call."""
    b = bridge(2, 1)
    for r in range(2):
        b.rx[r].deliver(*[tagged(r, s) for s in range(30)])
    tx = b.tx[0]
    got = []
    for _ in range(4):
        tx.place(tx.head, tail=(tx.head + 4) % tx.num_slots)
        b.forward(burst=4)
        got.append([ring for ring, _ in origin(tx.transmit(reclaim=0))])
    assert got == [[0] * 4, [1] * 4, [0] * 4, [1] * 4]


def test_rx_ring_feeds_tx_ring_modulo(bridge) -> None:
    b = bridge(3, 2)
    for r in range(3):
        b.rx[r].deliver(tagged(r, 0))
    b.forward(burst=8)
    assert sorted(origin(b.tx[0].transmit())) == [(0, 0), (2, 0)]
    assert origin(b.tx[1].transmit()) == [(1, 0)]
    assert [b.txs[t].frames for t in range(2)] == [2, 1]


def test_full_tx_ring_spills_to_the_next(bridge) -> None:
    b = bridge(2, 2)
    b.tx[0].place(0, tail=2)  # room for 2
    b.rx[0].deliver(*[tagged(0, s) for s in range(5)])
    assert b.forward(burst=8) == 5
    assert origin(b.tx[0].transmit()) == [(0, 0), (0, 1)]
    assert origin(b.tx[1].transmit()) == [(0, 2), (0, 3), (0, 4)]
    assert b.rxs[0].txfull == 1
    assert [b.txs[t].frames for t in range(2)] == [2, 3]


def test_spill_respects_the_burst(bridge) -> None:
    b = bridge(1, 2)
    b.tx[0].place(0, tail=2)
    b.rx[0].deliver(*[tagged(0, s) for s in range(10)])
    assert b.forward(burst=5) == 5
    assert b.rxs[0].frames == 5
    assert b.rx[0].head == 5


def test_chains_stay_on_one_tx_ring(bridge) -> None:
    b = bridge(1, 2)
    b.tx[0].place(0, tail=3)  # room for 3 slots
    b.rx[0].deliver(tagged(0, 0), [tagged(0, 1)] * 2, [tagged(0, 2)] * 3)
    assert b.forward(burst=8) == 3
    assert [len(f) for f in b.tx[0].transmit()] == [1, 2]
    assert [len(f) for f in b.tx[1].transmit()] == [3]


def test_chain_waits_rather_than_split_when_tx_has_some_room(bridge) -> None:
    b = bridge(1, 2)
    b.tx[0].place(0, tail=2)
    b.rx[0].deliver([tagged(0, 0)] * 3)
    assert b.forward(burst=8) == 0
    assert (b.tx[0].head, b.tx[1].head, b.rx[0].head) == (0, 0, 0)


@pytest.mark.parametrize(("nrx", "ntx"), [(0, 1), (1, 0)])
def test_forward_without_rings_does_nothing(bridge, nrx, ntx) -> None:
    b = bridge(1, 1)
    b.rx[0].deliver(tagged(0, 0))
    n = lib.nmb_forward(b._rx, nrx, b._tx, ntx, 8, 1, b.state, b.rxs, b.txs, b.next_rx)
    assert n == 0
    assert b.rx[0].head == 0


def test_rx_pending(bridge) -> None:
    b = bridge(3, 1)
    assert lib.nmb_rx_pending(b._rx, 3) == 0
    b.rx[2].deliver_slots([(b"x", 1, True)])
    assert lib.nmb_rx_pending(b._rx, 3) == 1
    assert lib.nmb_rx_pending(b._rx, 2) == 0



def test_tx_short_says_a_chain_waits_on_a_ring_with_some_room(bridge) -> None:
    """The loop forces a TX reclaim (NIOCTXSYNC) on this alone: a native NIC's poll()
    reclaims only once no TX slot is free, and POLLOUT comes at once while one is."""
    b = bridge(2, 2)
    assert lib.nmb_tx_short(b._rx, 2, b._tx, 2, ffi.NULL) == 0  # nothing waits
    b.tx[1].place(0, tail=2)  # room for 2 slots
    b.rx[1].deliver(tagged(1, 0), tagged(1, 1))
    assert lib.nmb_tx_short(b._rx, 2, b._tx, 2, ffi.NULL) == 0  # they fit
    assert b.forward(burst=8) == 2
    b.rx[1].deliver([tagged(1, 2)] * 3)
    assert lib.nmb_tx_short(b._rx, 2, b._tx, 2, ffi.NULL) == 0  # no room at all: poll() reclaims
    b.tx[1].place(2, tail=4)
    assert lib.nmb_tx_short(b._rx, 2, b._tx, 2, ffi.NULL) == 1  # 3 slots for 2 free
    assert b.forward(burst=8) == 0
    assert lib.nmb_tx_short(b._rx, 2, b._tx, 2, ffi.NULL) == 1
    assert lib.nmb_tx_short(b._rx, 1, b._tx, 2, ffi.NULL) == 0  # RX ring 0 has nothing
    assert lib.nmb_tx_short(b._rx, 2, b._tx, 0, ffi.NULL) == 0
    # its own TX ring full, the next one with some room: the engine would spill there,
    # and poll() would reclaim neither (it stops at the ring with room)
    b.tx[1].place(4, tail=4)
    b.tx[0].place(0, tail=2)
    assert lib.nmb_tx_short(b._rx, 2, b._tx, 2, ffi.NULL) == 1
    assert b.forward(burst=8) == 0
    # a chain without its last slot waits for an rxsync (POLLIN), not for TX room
    b.tx[0].place(0, tail=1)
    b.rx[0].deliver_slots([(b"x", 1, True)] * 2)
    assert b.forward(burst=8) == 0
    assert lib.nmb_tx_short(b._rx, 1, b._tx, 2, ffi.NULL) == 0

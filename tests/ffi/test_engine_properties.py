"""Rules 1-5 of DESIGN.md ("Rules the engine keeps") over random ring states.

A run: RX and TX rings at random positions (one region for zero-copy, two
regions of different shapes for copy), random frames on each RX ring
(NS_MOREFRAG chains, lengths up to and past the buffer size), then random
steps: the kernel delivers slots to an RX ring, the kernel transmits and gives
back TX slots, or the engine moves (nmb_ring_move, or nmb_forward over all
rings) with a random limit. Every engine call is checked against the rules;
at the end the kernel drains everything and every frame offered must be
accounted for.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nmbridge._ffi._core import ffi, lib

MOREFRAG = lib.NS_MOREFRAG
BUF_CHANGED = lib.NS_BUF_CHANGED
MAX_FRAGS = lib.NETMAP_MAX_FRAGS


@dataclass(frozen=True)
class Shape:
    num_slots: int
    buf_size: int


@dataclass
class Frame:
    """A frame the kernel will deliver on one RX ring: per slot (claimed len, bytes)."""

    ring: int
    segs: list[tuple[int, bytes]]

    @property
    def lens(self) -> list[int]:
        return [n for n, _ in self.segs]

    def tx_slots(self) -> list[tuple[int, bool, bytes]]:
        """What this frame must look like on a TX ring: (len, NS_MOREFRAG, bytes)."""
        return [(n, k < len(self.segs) - 1, d[:n]) for k, (n, d) in enumerate(self.segs)]


def frame_data(f: int, k: int, n: int, buf_size: int) -> bytes:
    """Bytes unique to slot k of frame f, as many as the slot claims and the buffer holds."""
    head = f.to_bytes(4, "big") + k.to_bytes(2, "big")
    return (head + bytes([(f * 7 + k) & 0xFF]) * n)[: min(n, buf_size)]


def address(p) -> int:
    return int(ffi.cast("uintptr_t", p))


def frame_id(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


class Rig:
    """The rings under test, the kernel's side of them, and what the engine must do."""

    def __init__(self, regions, rx, tx, zerocopy: bool, frames: list[Frame]) -> None:
        self.regions = regions
        self.rx, self.tx = rx, tx
        self.zerocopy = int(zerocopy)
        self.frames = frames
        self.limit = min(r.buf_size for r in rx + tx)  # a longer slot is oversize
        self.state = ffi.new("struct nmb_rx_state[]", len(rx))
        self.rxs = ffi.new("struct nmb_ring_stats[]", len(rx))
        self.txs = ffi.new("struct nmb_ring_stats[]", len(tx))
        self.next_rx = ffi.new("uint32_t *")
        self._rx = ffi.new("struct netmap_ring *[]", [r.ptr for r in rx])
        self._tx = ffi.new("struct netmap_ring *[]", [r.ptr for r in tx])
        # per RX ring: (frame, slot) not yet delivered / delivered, not yet released
        self.queue = [deque() for _ in rx]
        self.in_rx = [deque() for _ in rx]
        for f, frame in enumerate(frames):
            self.queue[frame.ring].extend((f, k) for k in range(len(frame.segs)))
        # per TX ring: slots the kernel has yet to transmit
        self.on_tx = [deque() for _ in tx]
        self.forwarded: list[int] = []
        # frames the engine has released a slot of: each is counted then, by its fate
        self.counted: set[int] = set()
        self.indices = [region.buf_indices() for region in regions]

    def fate(self, f: int) -> str:
        """What the engine must do with frame f."""
        lens = self.frames[f].lens
        if len(lens) > MAX_FRAGS:  # may be dropped before its oversize slot is seen
            return "drop_chain"
        if any(n > self.limit for n in lens):
            return "drop_oversize"
        if len(lens) > self.tx[0].num_slots - 1:
            return "drop_chain"
        return "forward"

    def busy(self) -> bool:
        return any(self.queue) or any(self.in_rx) or any(self.on_tx)

    def waiting(self) -> int:
        """Frames offered that the engine has not yet counted (forwarded or dropped)."""
        return len({f for q in self.queue + self.in_rx for f, _ in q} - self.counted)

    def count(self, name: str) -> int:
        return sum(getattr(self.rxs[r], name) for r in range(len(self.rx)))

    # -- the kernel ---------------------------------------------------------------
    def deliver(self, r: int, count: int) -> None:
        """The NIC receives up to count slots on RX ring r; a chain may be cut anywhere.

        A chain longer than NETMAP_MAX_FRAGS may be cut too: the engine drops the
        part it has once it holds NETMAP_MAX_FRAGS slots, and the rest as it comes.
        """
        ring, queue = self.rx[r], self.queue[r]
        budget = min(count, ring.kernel_room())
        slots = []
        while queue and len(slots) < budget:
            f, k = queue[0]
            segs = self.frames[f].segs
            queue.popleft()
            n, data = segs[k]
            slots.append((data, n, k < len(segs) - 1))
            self.in_rx[r].append((f, k))
        assert ring.deliver_slots(slots) == len(slots)

    def txsync(self, t: int, reclaim: int | None) -> None:
        for frame in self.tx[t].transmit(reclaim):  # fails on a chain cut at the sync
            for s in frame:
                assert (s.len, bool(s.flags & MOREFRAG), s.data) == self.on_tx[t].popleft()

    # -- the engine ---------------------------------------------------------------
    def move(self, limit: int) -> None:
        """nmb_ring_move from RX ring 0 to TX ring 0."""
        rx, tx = self.rx[0], self.tx[0]
        before = self.snapshot()
        txfull = self.rxs[0].txfull
        moved = lib.nmb_ring_move(
            rx.ptr, tx.ptr, limit, self.zerocopy, self.state + 0, self.rxs + 0, self.txs + 0
        )
        per_rx = self.check(before, moved)
        assert moved == per_rx[0] <= limit
        # the move stops only at the limit, at a frame not complete yet, or for TX room
        nxt = self.next_frame(0)
        stopped_by_tx = nxt is not None and moved < limit
        if stopped_by_tx:
            assert self.fate(nxt) == "forward"
            assert len(self.frames[nxt].segs) > tx.space()
        assert self.rxs[0].txfull - txfull == int(stopped_by_tx)

    def forward(self, burst: int) -> None:
        """nmb_forward over every ring."""
        nrx = len(self.rx)
        first = self.next_rx[0] if self.next_rx[0] < nrx else 0
        nxt = self.next_frame(first)
        can_start = nxt is not None and len(self.frames[nxt].segs) <= self.tx[first % len(
            self.tx)].space() and self.fate(nxt) == "forward"  # fmt: skip
        before = self.snapshot()
        moved = lib.nmb_forward(
            self._rx, nrx, self._tx, len(self.tx), burst, self.zerocopy,
            self.state, self.rxs, self.txs, self.next_rx,
        )  # fmt: skip
        per_rx = self.check(before, moved)
        assert all(n <= burst for n in per_rx)
        assert self.next_rx[0] == (first + 1) % nrx, "the ring served first rotates"
        if can_start and burst > 0:
            assert per_rx[first] > 0, "the ring served first got nothing though TX had room"

    def next_frame(self, r: int) -> int | None:
        """The frame at the head of RX ring r if it is there whole, else None."""
        in_rx = self.in_rx[r]
        if not in_rx:
            return None
        f = in_rx[0][0]
        present = sum(1 for g, _ in in_rx if g == f)
        return f if present == len(self.frames[f].segs) else None

    def snapshot(self):
        rings = [r for region in self.regions for r in region.all_rings()]
        return {
            "rings": rings,
            "headers": [r.header_bytes() for r in rings],
            "slots": [r.slot_bytes() for r in rings],
            "pools": [region.pool() for region in self.regions],
            "rx": [(r.head, r.space()) for r in self.rx],
            "tx": [(r.head, r.space()) for r in self.tx],
            "counters": [
                [(s.frames, s.bytes, s.drop_oversize, s.drop_chain) for s in stats]
                for stats in (self.rxs, self.txs)
            ],
        }

    def check(self, before, moved: int) -> list[int]:
        """Rules 1-5 and the counters after one engine call; returns frames moved per RX ring."""
        released = []
        for ring, (head, space) in zip(self.rx, before["rx"]):
            released.append(ring.dist(head, ring.head))
            assert released[-1] <= space, "RX head went past tail"
        written = []
        for ring, (head, space) in zip(self.tx, before["tx"]):
            written.append(ring.dist(head, ring.head))
            assert written[-1] <= space, "TX head went past tail"
        for ring in self.tx:
            assert ring.ptr.cur == ring.head
        for ring in self.rx:
            # cur past head only where a chain waits for its last slots (cur is where
            # the tail was then: the wakeup point, between head and tail)
            ahead = ring.dist(ring.head, ring.ptr.cur)
            assert ahead <= ring.space()
            assert all(ring.slots[i].flags & MOREFRAG for i in ring.owned()[:ahead])

        # rule 1: nothing outside [head, tail) is read or written
        touched = {}
        for rings, starts, counts in (
            (self.rx, before["rx"], released),
            (self.tx, before["tx"], written),
        ):
            for ring, (head, _), n in zip(rings, starts, counts):
                touched[id(ring)] = {(head + k) % ring.num_slots for k in range(n)}
        for ring, header, slots in zip(before["rings"], before["headers"], before["slots"]):
            assert ring.header_bytes() == header, "only head and cur are user space's"
            allowed = touched.get(id(ring), set())
            for i, (a, b) in enumerate(zip(slots, ring.slot_bytes())):
                assert a == b or i in allowed, f"slot {i} of ring {ring.ptr.ringid} changed"
        # copy mode writes the buffers of the TX slots it fills, and no others
        may_write = set()
        if not self.zerocopy:
            for ring in self.tx:
                may_write |= {address(ring.slot_addr(i)) for i in touched[id(ring)]}
        for region, pool in zip(self.regions, before["pools"]):
            after = region.pool()
            if after == pool:
                continue
            size, start = region.buf_size, address(region.ptr.mem + region.ptr.bufs_ofs)
            for idx in range(len(pool) // size):
                if start + idx * size not in may_write:
                    chunk = slice(idx * size, (idx + 1) * size)
                    assert pool[chunk] == after[chunk], f"buffer {idx} written"

        # rule 2: no buffer lost or doubled
        assert [region.buf_indices() for region in self.regions] == self.indices

        # rule 3: RX slots are released by whole frames (but an endless chain, dropped
        # in parts)...
        finished = []
        for r, n in enumerate(released):
            gone = [self.in_rx[r].popleft() for _ in range(n)]
            if gone:
                f, k = gone[-1]
                endless = len(self.frames[f].segs) > MAX_FRAGS
                assert endless or k == len(self.frames[f].segs) - 1, "a chain was released in part"
            # ...and each frame is counted once, when its first slot is released
            first = list(dict.fromkeys(f for f, _ in gone if f not in self.counted))
            self.counted.update(first)
            finished.append(first)
            if self.zerocopy:
                for k in range(n):
                    slot = self.rx[r].slots[(before["rx"][r][0] + k) % self.rx[r].num_slots]
                    was_forwarded = self.fate(gone[k][0]) == "forward"
                    assert bool(slot.flags & BUF_CHANGED) or not was_forwarded
        # ...and TX slots filled by whole frames, each a frame that had to go, once
        forwarded = {f for fs in finished for f in fs if self.fate(f) == "forward"}
        on_tx: list[list[int]] = []
        for t, n in enumerate(written):
            ring, head = self.tx[t], before["tx"][t][0]
            got = []
            for k in range(n):
                i = (head + k) % ring.num_slots
                s = ring.slots[i]
                got.append((s.len, bool(s.flags & MOREFRAG), ring.slot_buf(i)[: s.len]))
                assert not self.zerocopy or s.flags & BUF_CHANGED
            assert not got or not got[-1][1], "a chain was cut at the TX head"
            ids = []
            while got:
                f = frame_id(got[0][2])
                want = self.frames[f].tx_slots()
                # rule 4: what went out is whole, with its bytes; never an oversize slot
                assert got[: len(want)] == want
                assert all(n <= self.limit for n in self.frames[f].lens)
                got = got[len(want) :]
                ids.append(f)
            self.on_tx[t].extend(s for f in ids for s in self.frames[f].tx_slots())
            on_tx.append(ids)
        sent = [f for ids in on_tx for f in ids]
        assert sorted(sent) == sorted(forwarded), "a frame forwarded twice or lost"
        assert moved == len(sent)
        # rule 5: per ring pair, frames leave in the order they arrived
        for ids in on_tx:
            for r in range(len(self.rx)):
                mine = [f for f in ids if self.frames[f].ring == r]
                assert mine == sorted(mine)
        self.forwarded += sent

        # counters: every frame once, by its fate, on its RX ring; frames and bytes on TX too
        rx_was, tx_was = before["counters"]
        for r, fs in enumerate(finished):
            s = self.rxs[r]
            fwd = [f for f in fs if self.fate(f) == "forward"]
            got = (s.frames, s.bytes, s.drop_oversize, s.drop_chain)
            delta = tuple(a - b for a, b in zip(got, rx_was[r]))
            assert delta == (
                len(fwd),
                sum(sum(self.frames[f].lens) for f in fwd),
                sum(1 for f in fs if self.fate(f) == "drop_oversize"),
                sum(1 for f in fs if self.fate(f) == "drop_chain"),
            )
        for t, ids in enumerate(on_tx):
            s = self.txs[t]
            got = (s.frames, s.bytes)
            assert (got[0] - tx_was[t][0], got[1] - tx_was[t][1]) == (
                len(ids),
                sum(sum(self.frames[f].lens) for f in ids),
            )
        return [sum(1 for f in fs if self.fate(f) == "forward") for fs in finished]


@st.composite
def frame_lens(draw, chain, limit: int) -> list[int]:
    """Slot lens of one frame: most fit the smaller buffer, some sit on the edge or past it."""
    n = draw(chain)
    lens = draw(st.lists(st.integers(6, limit), min_size=n, max_size=n))
    kind = draw(st.integers(0, 9))
    at = draw(st.integers(0, n - 1))
    if kind == 0:
        lens[at] = draw(st.one_of(st.just(limit + 1), st.integers(limit + 1, 0xFFFF)))
    elif kind == 1:
        lens[at] = limit
    return lens


@dataclass(frozen=True)
class Setup:
    """Everything random about a run but its steps; the test makes the regions from it."""

    zerocopy: bool
    two_ports: bool
    rx: Shape
    tx: Shape
    heads: list[tuple[int, int]]  # per RX ring (head), then per TX ring (head, room)
    frame_lens: list[tuple[int, list[int]]]  # (RX ring, lens)
    nrx: int
    ntx: int

    def rig(self, region_type) -> Rig:
        nrx, ntx = self.nrx, self.ntx
        if self.zerocopy:
            if self.two_ports:
                ports = [(0, 0, nrx, 0), (ntx, 0, 0, 0)]
                region = region_type(ports, self.rx.num_slots, self.rx.buf_size)
                rx = [region.rx(0, i) for i in range(nrx)]
                tx = [region.tx(1, i) for i in range(ntx)]
            else:
                ports = [(ntx, 0, nrx, 0)]
                region = region_type(ports, self.rx.num_slots, self.rx.buf_size)
                rx = [region.rx(0, i) for i in range(nrx)]
                tx = [region.tx(0, i) for i in range(ntx)]
            regions = [region]
        else:
            regions = [
                region_type([(0, 0, nrx, 0)], self.rx.num_slots, self.rx.buf_size),
                region_type([(ntx, 0, 0, 0)], self.tx.num_slots, self.tx.buf_size),
            ]
            rx = [regions[0].rx(0, i) for i in range(nrx)]
            tx = [regions[1].tx(0, i) for i in range(ntx)]
        for ring, (head, _) in zip(rx, self.heads):
            ring.place(head)
        for ring, (head, room) in zip(tx, self.heads[nrx:]):
            ring.place(head, tail=(head + room) % ring.num_slots)
        frames = [
            Frame(r, [(n, frame_data(f, k, n, self.rx.buf_size)) for k, n in enumerate(lens)])
            for f, (r, lens) in enumerate(self.frame_lens)
        ]
        return Rig(regions, rx, tx, self.zerocopy, frames)


@st.composite
def setups(draw, nrx: int = 1, ntx: int = 1) -> Setup:
    zerocopy = draw(st.booleans())
    slots = st.one_of(st.integers(2, 24), st.integers(2, 8), st.integers(66, 80))
    sizes = st.sampled_from([64, 128, 256])
    rx = Shape(draw(slots), draw(sizes))
    tx = rx if zerocopy else Shape(draw(slots), draw(sizes))
    limit = min(rx.buf_size, tx.buf_size)
    # a chain must fit the RX ring, or it could never be whole (unit tests cover that)
    longest = min(rx.num_slots - 1, MAX_FRAGS + 2)
    chain = st.one_of(
        st.just(1),
        st.integers(1, min(3, longest)),
        st.integers(1, longest),
        st.integers(max(1, longest - 3), longest),
    )
    heads = [(draw(st.integers(0, rx.num_slots - 1)), 0) for _ in range(nrx)]
    heads += [
        (draw(st.integers(0, tx.num_slots - 1)), draw(st.integers(0, tx.num_slots - 1)))
        for _ in range(ntx)
    ]
    nframes = draw(st.integers(1, 48))
    return Setup(
        zerocopy=zerocopy,
        two_ports=draw(st.booleans()),
        rx=rx,
        tx=tx,
        heads=heads,
        frame_lens=[
            (draw(st.integers(0, nrx - 1)), draw(frame_lens(chain, limit)))
            for _ in range(nframes)
        ],
        nrx=nrx,
        ntx=ntx,
    )


def run(rig: Rig, data, engine: str) -> None:
    """Random kernel and engine (move or forward) steps, then drain; rules checked throughout."""
    nrx, ntx = len(rig.rx), len(rig.tx)
    limit = st.one_of(st.integers(0, 4), st.integers(0, 2000))
    kernel = st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, nrx - 1), st.integers(0, 80)),
        st.tuples(
            st.just("txsync"), st.integers(0, ntx - 1), st.one_of(st.none(), st.integers(0, 8))
        ),
    )
    step = st.one_of(kernel, st.tuples(st.just(engine), limit))
    for _ in range(data.draw(st.integers(0, 40))):
        action, *args = data.draw(step)
        getattr(rig, action)(*args)
        # nothing lost: every frame offered is forwarded, dropped or waiting
        dropped = rig.count("drop_oversize") + rig.count("drop_chain")
        assert rig.count("frames") + dropped + rig.waiting() == len(rig.frames)

    # then the kernel keeps delivering and transmitting until everything is through
    for _ in range(4 * len(rig.frames) + 4):
        if not rig.busy():
            break
        for r in range(nrx):
            rig.deliver(r, rig.rx[r].num_slots)
        getattr(rig, engine)(2000)
        for t in range(ntx):
            rig.txsync(t, None)
    assert not rig.busy(), "a frame never got through"
    fates = [rig.fate(f) for f in range(len(rig.frames))]
    assert sorted(rig.forwarded) == [f for f, fate in enumerate(fates) if fate == "forward"]
    assert rig.count("frames") == fates.count("forward")
    assert rig.count("drop_oversize") == fates.count("drop_oversize")
    assert rig.count("drop_chain") == fates.count("drop_chain")


@settings(deadline=None, max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_ring_move_keeps_the_rules(region_type, data) -> None:
    rig = data.draw(setups()).rig(region_type)
    try:
        run(rig, data, "move")
    finally:
        for region in rig.regions:
            region.close()


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_forward_keeps_the_rules(region_type, data) -> None:
    nrx, ntx = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    rig = data.draw(setups(nrx, ntx)).rig(region_type)
    try:
        run(rig, data, "forward")
    finally:
        for region in rig.regions:
            region.close()

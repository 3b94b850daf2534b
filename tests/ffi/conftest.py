"""Regions laid out in memory by the C allocator, and the kernel's side of their rings.

Tests drive the engine as user space does and play the kernel themselves:
`Ring.deliver` is what a NIC does to an RX ring, `Ring.txsync` what a
transmit sync does to a TX ring. Both keep to netmap's protocol: the kernel
writes only the slots it owns, `[tail, head - 1)`, and hands slots over by
moving `tail`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Union

import pytest
from nmbridge._ffi._core import ffi, lib

SLOT_SIZE = 16
RING_HEADER = 256
# ring header bytes user space may write: head @20 and cur @24
HEAD_CUR = slice(20, 28)


Segment = Union[bytes, tuple[bytes, int]]
Frame = Union[bytes, Sequence[Segment]]


def _segments(f: Frame) -> list[tuple[bytes, int]]:
    """A frame given as bytes, or as segments each bytes or (bytes, claimed len)."""
    if isinstance(f, (bytes, bytearray)):
        return [(bytes(f), len(f))]
    return [(s, len(s)) if isinstance(s, (bytes, bytearray)) else (s[0], s[1]) for s in f]


@dataclass
class TxSlot:
    """A slot read off a TX ring by the kernel's transmit."""

    len: int
    flags: int
    data: bytes  # the first min(len, buffer size) bytes of its buffer


class Ring:
    """One netmap_ring of a Region, with the kernel's side of the protocol."""

    def __init__(self, region: Region, ptr: object) -> None:
        self.region = region
        self.ptr = ptr
        self.slots = lib.nmb_ring_slots(ptr)
        # the kernel's own cursor: on TX the first slot not yet transmitted
        self.hwcur = ptr.head
        # what the engine remembers of this ring between moves (the loop keeps one per RX ring)
        self.engine_state = ffi.new("struct nmb_rx_state *")

    # -- what both sides see --------------------------------------------------
    @property
    def num_slots(self) -> int:
        return int(self.ptr.num_slots)

    @property
    def buf_size(self) -> int:
        return int(self.ptr.nr_buf_size)

    @property
    def head(self) -> int:
        return int(self.ptr.head)

    @property
    def tail(self) -> int:
        return int(self.ptr.tail)

    def dist(self, a: int, b: int) -> int:
        return (b - a) % self.num_slots

    def owned(self) -> list[int]:
        """Slot numbers user space owns: [head, tail)."""
        n = self.num_slots
        return [(self.head + k) % n for k in range(self.dist(self.head, self.tail))]

    def space(self) -> int:
        return self.dist(self.head, self.tail)

    def buf_addr(self, buf_idx: int) -> object:
        return ffi.cast("char *", self.ptr) + self.ptr.buf_ofs + buf_idx * self.buf_size

    def slot_addr(self, i: int) -> object:
        """The buffer of slot i."""
        return self.buf_addr(self.slots[i].buf_idx)

    def buf(self, buf_idx: int) -> ffi.buffer:
        return ffi.buffer(self.buf_addr(buf_idx), self.buf_size)

    def slot_buf(self, i: int) -> ffi.buffer:
        return self.buf(self.slots[i].buf_idx)

    def header_bytes(self) -> bytes:
        """The ring header without head and cur, the fields user space writes."""
        raw = ffi.buffer(self.ptr, RING_HEADER)[:]
        return raw[: HEAD_CUR.start] + raw[HEAD_CUR.stop :]

    def slot_bytes(self) -> list[bytes]:
        raw = ffi.buffer(self.slots, self.num_slots * SLOT_SIZE)[:]
        return [raw[i * SLOT_SIZE : (i + 1) * SLOT_SIZE] for i in range(self.num_slots)]

    def place(self, pos: int, tail: int | None = None) -> None:
        """Put a fresh ring at another position: head = cur = pos, tail as given.

        Default tail: pos for RX (nothing received), pos - 1 for TX (all slots free).
        """
        n = self.num_slots
        if tail is None:
            tail = pos if self.ptr.dir == 0 else (pos - 1) % n
        self.ptr.head = self.ptr.cur = pos
        self.ptr.tail = tail
        self.hwcur = pos

    # -- the kernel's side of an RX ring ------------------------------------
    def kernel_room(self) -> int:
        """Slots the kernel may still fill on an RX ring (one is always kept back)."""
        return self.num_slots - 1 - self.space()

    def deliver(self, *frames: Frame, extra_flags: int = 0) -> int:
        """Receive frames at tail as a NIC does, slot by slot, while the kernel has room.

        NS_MOREFRAG goes on every slot of a frame but its last; a frame may be cut
        short by a full ring (its rest is the caller's to deliver later, with
        `deliver_slots`). Returns the slots written.
        """
        slots = []
        for f in frames:
            segs = _segments(f)
            slots += [(data, n, k < len(segs) - 1) for k, (data, n) in enumerate(segs)]
        return self.deliver_slots(slots, extra_flags)

    def deliver_slots(self, slots: Sequence[tuple[bytes, int, bool]], extra_flags: int = 0) -> int:
        """Receive (data, len, more) slots at tail; returns how many fitted."""
        count = min(len(slots), self.kernel_room())
        for data, length, more in slots[:count]:
            t = self.tail
            slot = self.slots[t]
            data = data[: self.buf_size]
            ffi.memmove(self.buf_addr(slot.buf_idx), data, len(data))
            slot.len = length
            slot.flags = extra_flags | (lib.NS_MOREFRAG if more else 0)
            self.ptr.tail = (t + 1) % self.num_slots
        return count

    # -- the kernel's side of a TX ring ---------------------------------------
    def txsync(self, reclaim: int | None = None) -> list[TxSlot]:
        """Transmit the slots user space handed over since the last sync.

        Then give back `reclaim` completed slots (default: all), never past head - 1.
        """
        sent = []
        while self.hwcur != self.head:
            slot = self.slots[self.hwcur]
            buf = self.slot_buf(self.hwcur)
            sent.append(TxSlot(int(slot.len), int(slot.flags), buf[: min(slot.len, self.buf_size)]))
            self.hwcur = (self.hwcur + 1) % self.num_slots
        done = self.dist(self.tail, (self.head - 1) % self.num_slots)
        if reclaim is not None:
            done = min(done, reclaim)
        self.ptr.tail = (self.tail + done) % self.num_slots
        return sent

    def transmit(self, reclaim: int | None = None) -> list[list[TxSlot]]:
        """txsync, with the slots grouped into frames; a sync inside a chain fails."""
        frames: list[list[TxSlot]] = []
        cur: list[TxSlot] = []
        for s in self.txsync(reclaim):
            cur.append(s)
            if not s.flags & lib.NS_MOREFRAG:
                frames.append(cur)
                cur = []
        assert not cur, "a NS_MOREFRAG chain reached the kernel without its last slot"
        return frames


class Region:
    """A region from nmb_region_new; close() (or leaving a `with`) frees it."""

    def __init__(
        self,
        ports: Sequence[tuple[int, int, int, int]],
        num_slots: int = 64,
        buf_size: int = 2048,
    ) -> None:
        counts = ffi.new("uint32_t[]", [c for p in ports for c in p] or [0])
        out = ffi.new("struct nmb_region **")
        rc = lib.nmb_region_new(len(ports), counts, num_slots, buf_size, out)
        if rc != 0:
            raise OSError(-rc, f"nmb_region_new: {rc}")
        self.ptr = out[0]
        self.ports = [tuple(p) for p in ports]
        self.num_slots = num_slots
        self.buf_size = buf_size
        self._rings: dict[tuple[int, int], Ring] = {}

    def close(self) -> None:
        if self.ptr is not None:
            lib.nmb_region_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def nifp(self, port: int = 0) -> object:
        return lib.nmb_region_if(self.ptr, port)

    def ring_count(self, port: int = 0) -> int:
        return sum(self.ports[port])

    def ring(self, port: int, index: int) -> Ring:
        """The ring at ring_ofs[index] of a port's netmap_if."""
        key = (port, index)
        if key not in self._rings:
            nifp = self.nifp(port)
            ptr = ffi.cast("struct netmap_ring *", ffi.cast("char *", nifp) + nifp.ring_ofs[index])
            self._rings[key] = Ring(self, ptr)
        return self._rings[key]

    def _role(self, port: int, role: int, i: int) -> Ring:
        counts = self.ports[port]
        if not 0 <= i < counts[role]:
            raise IndexError(f"port {port} has {counts[role]} rings of role {role}")
        return self.ring(port, sum(counts[:role]) + i)

    def tx(self, port: int = 0, i: int = 0) -> Ring:
        return self._role(port, 0, i)

    def host_tx(self, port: int = 0, i: int = 0) -> Ring:
        return self._role(port, 1, i)

    def rx(self, port: int = 0, i: int = 0) -> Ring:
        return self._role(port, 2, i)

    def host_rx(self, port: int = 0, i: int = 0) -> Ring:
        return self._role(port, 3, i)

    def all_rings(self) -> list[Ring]:
        return [self.ring(p, k) for p in range(len(self.ports)) for k in range(self.ring_count(p))]

    def buf_indices(self) -> list[int]:
        """Every slot's buf_idx across all rings of the region, sorted."""
        return sorted(r.slots[i].buf_idx for r in self.all_rings() for i in range(r.num_slots))

    def pool(self) -> bytes:
        """The whole buffer pool, buffers 0 and 1 included."""
        p = self.ptr
        return ffi.buffer(p.mem + p.bufs_ofs, p.num_bufs * p.buf_size)[:]


@pytest.fixture(scope="session")
def region_type() -> type[Region]:
    """The Region class, for tests that free regions themselves (hypothesis bodies)."""
    return Region


@pytest.fixture
def make_region() -> Iterator[type[Region]]:
    """Make regions that are freed when the test ends."""
    made: list[Region] = []

    def make(*args: object, **kwargs: object) -> Region:
        region = Region(*args, **kwargs)  # type: ignore[arg-type]
        made.append(region)
        return region

    yield make  # type: ignore[misc]
    for region in made:
        region.close()


@pytest.fixture
def stats() -> object:
    """A factory of zeroed struct nmb_ring_stats arrays."""

    def new(n: int = 1) -> object:
        return ffi.new("struct nmb_ring_stats[]", n)

    return new

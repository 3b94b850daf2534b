"""The region allocator lays rings and buffers out as the netmap kernel does.

Golden facts: ../shared/netmap-abi.md and ../shared/netmap-golden/kernel/README.md.
"""

from __future__ import annotations

import errno

import pytest
from nmbridge._ffi._core import ffi, lib

# per port: NIC TX, host TX, NIC RX, host RX ring counts
LAYOUTS = [
    pytest.param([(1, 1, 1, 1)], id="nic+host"),
    pytest.param([(2, 1, 3, 2)], id="uneven"),
    pytest.param([(1, 0, 1, 0), (0, 2, 0, 2)], id="wire+host-ports"),
    pytest.param([(4, 0, 4, 0), (1, 1, 1, 1), (0, 0, 1, 0)], id="three-ports"),
]

NIC_TX, HOST_TX, NIC_RX, HOST_RX = range(4)


def addr(p: object) -> int:
    return int(ffi.cast("uintptr_t", p))


def roles(counts: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """(role, index within role) for each ring_ofs entry, in the kernel's order."""
    return [(role, i) for role in range(4) for i in range(counts[role])]


@pytest.mark.parametrize("ports", LAYOUTS)
def test_netmap_if_counts_rings_as_the_kernel_does(make_region, ports) -> None:
    region = make_region(ports, num_slots=32)
    for p, (ntx, nhtx, nrx, nhrx) in enumerate(ports):
        nifp = region.nifp(p)
        assert nifp.ni_version == lib.NETMAP_API
        assert (nifp.ni_tx_rings, nifp.ni_host_tx_rings) == (ntx, nhtx)
        assert (nifp.ni_rx_rings, nifp.ni_host_rx_rings) == (nrx, nhrx)


@pytest.mark.parametrize("ports", LAYOUTS)
def test_ring_ofs_order_ringid_and_dir(make_region, ports) -> None:
    """NIC TX, host TX, NIC RX, host RX; a host ring's ringid is the NIC count plus its index."""
    region = make_region(ports, num_slots=32)
    for p, counts in enumerate(ports):
        ntx, _, nrx, _ = counts
        for index, (role, i) in enumerate(roles(counts)):
            ring = region.ring(p, index).ptr
            expected_id = {NIC_TX: i, HOST_TX: ntx + i, NIC_RX: i, HOST_RX: nrx + i}[role]
            assert ring.ringid == expected_id, (p, index)
            # dir reads 1 for TX, 0 for RX (the header's comment says the opposite)
            assert ring.dir == (1 if role in (NIC_TX, HOST_TX) else 0), (p, index)


@pytest.mark.parametrize("ports", LAYOUTS)
def test_rings_are_distinct_aligned_and_inside_the_mapping(make_region, ports) -> None:
    num_slots = 32
    region = make_region(ports, num_slots=num_slots)
    mem = addr(region.ptr.mem)
    bufs = mem + region.ptr.bufs_ofs
    spans = []
    for p in range(len(ports)):
        nifp = region.nifp(p)
        if_end = addr(nifp) + 56 + 8 * region.ring_count(p)
        spans.append((addr(nifp), if_end))
        for index in range(region.ring_count(p)):
            assert nifp.ring_ofs[index] != 0, "every ring of an allocated port is mapped"
            ring = region.ring(p, index).ptr
            start = addr(ring)
            assert start == addr(nifp) + nifp.ring_ofs[index]
            assert start % 128 == 0, "struct netmap_ring is cache-aligned"
            spans.append((start, start + 256 + 16 * num_slots))
    spans.sort()
    assert spans[0][0] >= mem
    assert spans[-1][1] <= bufs, "rings end before the buffer pool"
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, "netmap_if and rings do not overlap"


@pytest.mark.parametrize("ports", LAYOUTS)
def test_fresh_rings_head_cur_tail(make_region, ports) -> None:
    """TX: head = cur = 0, tail = num_slots - 1 (one slot kept back); RX: all 0."""
    num_slots = 32
    region = make_region(ports, num_slots=num_slots, buf_size=1024)
    for ring in region.all_rings():
        r = ring.ptr
        assert (r.num_slots, r.nr_buf_size, r.flags) == (num_slots, 1024, 0)
        if r.dir == 1:
            assert (r.head, r.cur, r.tail) == (0, 0, num_slots - 1)
        else:
            assert (r.head, r.cur, r.tail) == (0, 0, 0)


@pytest.mark.parametrize("ports", LAYOUTS)
def test_every_slot_len_starts_at_the_buffer_size(make_region, ports) -> None:
    region = make_region(ports, num_slots=16, buf_size=512)
    for ring in region.all_rings():
        for i in range(ring.num_slots):
            assert ring.slots[i].len == 512


@pytest.mark.parametrize("ports", LAYOUTS)
def test_buffer_indices_are_unique_and_skip_0_and_1(make_region, ports) -> None:
    num_slots = 16
    region = make_region(ports, num_slots=num_slots)
    indices = region.buf_indices()
    total_slots = sum(map(sum, ports)) * num_slots
    assert len(indices) == total_slots
    assert len(set(indices)) == total_slots, "a buffer is named by two slots"
    assert indices[0] == 2, "indices 0 and 1 are reserved"
    assert indices[-1] < region.ptr.num_bufs


@pytest.mark.parametrize("ports", LAYOUTS)
def test_buffers_lie_in_the_pool_without_overlap(make_region, ports) -> None:
    buf_size = 256
    region = make_region(ports, num_slots=16, buf_size=buf_size)
    mem = addr(region.ptr.mem)
    pool = mem + region.ptr.bufs_ofs
    starts = []
    for ring in region.all_rings():
        for i in range(ring.num_slots):
            idx = ring.slots[i].buf_idx
            start = addr(ring.buf_addr(idx))
            assert start == addr(lib.nmb_region_buf(region.ptr, idx))
            assert pool <= start
            assert start + buf_size <= mem + region.ptr.memsize
            starts.append(start)
    starts.sort()
    assert all(b - a >= buf_size for a, b in zip(starts, starts[1:]))


def test_buffer_written_through_one_ring_is_read_through_another(make_region) -> None:
    """One pool: a buffer named on an RX ring is the same memory seen from a TX ring."""
    region = make_region([(1, 0, 0, 0), (0, 0, 1, 0)], num_slots=8, buf_size=128)
    tx, rx = region.tx(0), region.rx(1)
    idx = rx.slots[3].buf_idx
    rx.buf(idx)[:5] = b"hello"
    assert tx.buf(idx)[:5] == b"hello"


@pytest.mark.parametrize("ports", [p for p in LAYOUTS if len(p.values[0]) > 1])
def test_ports_of_one_region_share_the_buffer_pool(make_region, ports) -> None:
    region = make_region(ports, num_slots=8)
    bases = {addr(r.ptr) + r.ptr.buf_ofs for r in region.all_rings()}
    assert bases == {addr(region.ptr.mem) + region.ptr.bufs_ofs}


def test_two_regions_do_not_share_buffers(make_region) -> None:
    a = make_region([(1, 0, 1, 0)], num_slots=8)
    b = make_region([(1, 0, 1, 0)], num_slots=8)
    base = {addr(r.ptr) + r.ptr.buf_ofs for r in (a.tx(), b.tx())}
    assert len(base) == 2


def test_port_beyond_the_region_has_no_netmap_if(make_region) -> None:
    region = make_region([(1, 0, 1, 0), (1, 0, 1, 0)], num_slots=8)
    assert region.nifp(1) != ffi.NULL
    assert region.nifp(2) == ffi.NULL
    assert lib.nmb_region_buf(region.ptr, region.ptr.num_bufs) == ffi.NULL


GOOD = {"ports": [(1, 0, 1, 0)], "num_slots": 8, "buf_size": 2048}
MAX_PORTS = lib.NMB_REGION_MAX_PORTS
MAX_RINGS = lib.NMB_MAX_RINGS


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"ports": []}, id="no-port"),
        pytest.param({"ports": [(1, 0, 1, 0)] * (MAX_PORTS + 1)}, id="too-many-ports"),
        pytest.param({"ports": [(1, 0, 1, 0), (0, 0, 0, 0)]}, id="port-without-rings"),
        pytest.param({"ports": [(MAX_RINGS + 1, 0, 1, 0)]}, id="too-many-rings"),
        pytest.param({"ports": [(1, 0, 1, MAX_RINGS + 1)]}, id="too-many-host-rings"),
        pytest.param({"num_slots": 0}, id="no-slots"),
        pytest.param({"num_slots": 1}, id="one-slot"),
        pytest.param({"num_slots": 16385}, id="too-many-slots"),
        pytest.param({"buf_size": 0}, id="no-buffer"),
        pytest.param({"buf_size": 32}, id="tiny-buffer"),
        pytest.param({"buf_size": 2000}, id="unaligned-buffer"),
        pytest.param({"buf_size": 65536}, id="buffer-longer-than-len"),
    ],
)
def test_bad_arguments_are_einval(change) -> None:
    args = {**GOOD, **change}
    ports = args["ports"]
    counts = ffi.new("uint32_t[]", [c for p in ports for c in p] or [0])
    out = ffi.new("struct nmb_region **", ffi.cast("struct nmb_region *", 1))
    rc = lib.nmb_region_new(len(ports), counts, args["num_slots"], args["buf_size"], out)
    assert rc == -errno.EINVAL
    assert out[0] == ffi.NULL


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"ports": [(1, 0, 1, 0)] * MAX_PORTS}, id="most-ports"),
        pytest.param({"ports": [(MAX_RINGS, 0, 0, 0)]}, id="most-rings"),
        pytest.param({"ports": [(0, 1, 0, 0)]}, id="host-ring-only"),
        pytest.param({"num_slots": 2}, id="fewest-slots"),
        pytest.param({"num_slots": 16384, "buf_size": 64}, id="most-slots"),
        pytest.param({"buf_size": 64}, id="smallest-buffer"),
        pytest.param({"buf_size": 65472}, id="largest-buffer"),
    ],
)
def test_limits_are_accepted(make_region, change) -> None:
    args = {**GOOD, **change}
    region = make_region(args["ports"], num_slots=args["num_slots"], buf_size=args["buf_size"])
    ring = region.ring(0, 0)
    assert (ring.num_slots, ring.buf_size) == (args["num_slots"], args["buf_size"])
    last = region.all_rings()[-1]
    # the last buffer of the last ring is writable: the mapping covers the whole pool
    last.slot_buf(last.num_slots - 1)[args["buf_size"] - 1 :] = b"\xff"

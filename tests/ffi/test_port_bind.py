"""nmb_port_bind: the rings a port gets from its netmap_if, and the limit on them."""

from __future__ import annotations

import errno

from nmbridge._ffi._core import ffi, lib


def bind(make_region, counts: tuple[int, int, int, int]) -> tuple[int, object]:
    region = make_region([counts], num_slots=8, buf_size=64)
    port = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
    return lib.nmb_port_bind(port, region.nifp()), port


def test_every_ring_up_to_the_limit(make_region) -> None:
    n = lib.NMB_MAX_RINGS
    rc, port = bind(make_region, (n - 1, 1, n - 1, 1))
    assert rc == 0
    assert (port.ntx, port.nrx) == (n, n)


def test_more_rings_than_the_limit_is_e2big(make_region) -> None:
    n = lib.NMB_MAX_RINGS
    for counts in ((n, 1, 1, 1), (1, 1, n, 1)):
        rc, _ = bind(make_region, counts)
        assert rc == -errno.E2BIG

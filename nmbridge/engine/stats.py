"""The layout of the counters the C loop publishes, read from the C structs
themselves (the stats file's metadata carries it to readers)."""

from __future__ import annotations

from nmbridge.engine._core import ffi, lib

STATE_NAMES = {
    lib.NMB_STATE_STARTING: "starting",
    lib.NMB_STATE_RUNNING: "running",
    lib.NMB_STATE_LINK_WAIT: "link-wait",
    lib.NMB_STATE_STOPPED: "stopped",
}


def record_fields() -> list[str]:
    """Field names of one ring's counter record, in memory order (all u64)."""
    names: list[str] = []
    for name, field in ffi.typeof("struct nmb_ring_stats").fields:
        if name == "spare":
            continue
        names.append(name)
        assert field.type is ffi.typeof("uint64_t")
    return names


def record_size() -> int:
    return int(ffi.sizeof("struct nmb_ring_stats"))


def header_size() -> int:
    """Size of the shared counters header that precedes the ring records."""
    return int(ffi.offsetof("struct nmb_stats_shared", "ring"))


def header_offsets() -> dict[str, int]:
    return {
        name: int(ffi.offsetof("struct nmb_stats_shared", name))
        for name in ("seq", "heartbeat_ns", "nrings", "state")
    }

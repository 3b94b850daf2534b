"""Two open ports and the C loop between them (struct nmb_bridge)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from nmbridge import tunables
from nmbridge.engine import stats
from nmbridge.engine._core import ffi, lib
from nmbridge.engine.filter import Filter, match_function
from nmbridge.engine.ports import Port, RingInfo
from nmbridge.errors import PortFailed, UsageError

#: what nmb_bridge_run returned -> why it returned
RUN_REASONS = {lib.NMB_RUN_BUDGET: "budget", lib.NMB_RUN_STOP: "stop",
               lib.NMB_RUN_LIMIT: "limit", lib.NMB_RUN_SIGNAL: "signal"}
#: errno values that mean the port's interface is gone; any other is a failure of its own
GONE = (errno.ENODEV, errno.ENXIO, errno.EBADFD)


#: offload bits (offload.h) and what a person calls them
_OFFLOAD_NAMES = ((lib.NMB_OFL_CSUM, "checksums"), (lib.NMB_OFL_TSO4, "TSO over IPv4"),
                  (lib.NMB_OFL_TSO6, "TSO over IPv6"), (lib.NMB_OFL_TSO_ECN, "TSO with ECN"),
                  (lib.NMB_OFL_USO, "UDP GSO"))


@dataclass
class RunResult:
    reason: str  # "budget", "stop", "limit", "signal"
    forwarded: int


class Bridge:
    """Two open ports and the C loop between them.

    rx_usecs: under a sustained load, emulated ports gather frames this long
    between wake-ups instead of waking for each (0: never).
    """

    def __init__(
        self,
        a: Port,
        b: Port,
        burst: int = tunables.BURST.default,
        zero_copy: bool = True,
        busy_poll: bool = False,
        poll_timeout_ms: int = tunables.POLL_TIMEOUT_MS.default,
        count: int = 0,
        rx_usecs: int = tunables.RX_USECS.default,
    ) -> None:
        tunables.BURST.check(burst)
        tunables.POLL_TIMEOUT_MS.check(poll_timeout_ms)
        tunables.RX_USECS.check(rx_usecs)
        self.ports = (a, b)
        c = lib.nmb_bridge_new(a.c, b.c, burst)
        if c == ffi.NULL:
            raise UsageError(
                "cannot bridge these ports: each needs at least one RX and one TX ring"
            )
        self._c = ffi.gc(c, lib.nmb_bridge_free)
        self.zero_copy_possible = bool(self._c.zerocopy)
        if not zero_copy:
            self._c.zerocopy = 0
        self._c.busy = 1 if busy_poll else 0
        self._c.coalesce_us = rx_usecs
        self._c.poll_timeout_ms = poll_timeout_ms
        self._c.count_limit = count
        self._shared_keep: Any = None
        self._filters: list[Filter | None] = [None, None]  # alive as long as the bridge

    @property
    def zero_copy(self) -> bool:
        return bool(self._c.zerocopy)

    @property
    def forwarded(self) -> int:
        return int(self._c.forwarded)

    def offload_notes(self) -> list[str]:
        """What the bridge does with offloads, a line per direction that needs saying:
        carried end to end, or done in software for a port that cannot take them."""
        a, b = self.ports
        full = int(lib.NMB_OFL_ALL)
        if all(p.c.hdr_len and p.c.offloads == full for p in self.ports):
            return ["offloads carried end to end (virtio-net headers on both ports): "
                    "super-frames and checksums left to finish cross as they are"]
        notes = []
        for src, dst in ((a, b), (b, a)):
            if not src.c.hdr_len or (dst.c.hdr_len and dst.c.offloads == full):
                continue
            if not dst.c.hdr_len:
                notes.append(f"{src.spec.text} -> {dst.spec.text}: super-frames segmented and "
                             f"checksums finished in software ({dst.spec.text} takes no "
                             "virtio-net header)")
                continue
            missing = [name for bit, name in _OFFLOAD_NAMES if not dst.c.offloads & bit]
            notes.append(f"{src.spec.text} -> {dst.spec.text}: what {dst.spec.text} does not "
                         f"take ({', '.join(missing)}) is done in software")
        return notes

    def set_filter(self, from_port: int, flt: Filter | None) -> None:
        """Before the first run: only the frames from port from_port (0 or 1) that flt
        lets through cross; the others are counted as filtered. None: all cross."""
        if from_port not in (0, 1):
            raise ValueError(f"from_port is 0 or 1, not {from_port}")
        self._filters[from_port] = flt
        if flt is None:
            lib.nmb_bridge_set_filter(self._c, from_port, ffi.NULL, ffi.NULL)
        else:
            lib.nmb_bridge_set_filter(self._c, from_port, match_function(), flt.c)

    def rings(self) -> list[RingInfo]:
        """The rings in the order of the stats records."""
        out: list[RingInfo] = []
        for i, port in enumerate(self.ports):
            out.extend(port.rings(i))
        return out

    def attach_shared(self, buffer: Any, offset: int) -> None:
        """Publish counters into a writable buffer (the stats file's mmap) at offset."""
        ptr = ffi.from_buffer(buffer)
        self._shared_keep = ptr
        self._c.shared = ffi.cast("struct nmb_stats_shared *", ptr + offset)
        lib.nmb_bridge_publish(self._c)

    def publish_state(self, state: str) -> None:
        """Set the state the stats file shows ("link-wait" while Python waits for the
        links, before the loop runs and sets it itself) and publish it."""
        codes = {name: code for code, name in stats.STATE_NAMES.items()}
        self._c.state = codes[state]
        lib.nmb_bridge_publish(self._c)

    def detach_shared(self) -> None:
        self._c.shared = ffi.NULL
        if self._shared_keep is not None:
            ffi.release(self._shared_keep)
        self._shared_keep = None

    def run(self, budget_ms: int) -> RunResult:
        """Forward for at most budget_ms (the GIL is released meanwhile)."""
        rc = lib.nmb_bridge_run(self._c, budget_ms)
        if rc < 0:
            idx = int(self._c.failed_port)
            port = self.ports[idx] if idx in (0, 1) else self.ports[0]
            err = int(self._c.failed_err)
            if err in GONE:
                raise PortFailed(f"{port.spec.text}: the interface went away")
            raise PortFailed(f"{port.spec.text}: {os.strerror(err)}")
        return RunResult(RUN_REASONS[rc], self.forwarded)

    def set_capture(self, capture: Any) -> None:
        """Hand a copy of every frame that crosses, both ways, to capture (an
        engine.capture.Capture, closed only after the bridge's last flush)."""
        self._capture = capture
        lib.nmb_bridge_set_capture(self._c, capture.hook(), capture.c)

    def request_stop(self) -> None:
        lib.nmb_bridge_request_stop(self._c)

    def flush(self, timeout_ms: int = 1000) -> int:
        """Forward what the RX rings hold and push the TX rings out (for at most
        timeout_ms); what cannot go is counted as dropped. Returns that many frames."""
        return max(0, int(lib.nmb_bridge_flush(self._c, timeout_ms)))

    def counters(self) -> list[dict[str, int]]:
        """The private counters (the loop's own view); call between runs."""
        names = stats.record_fields()
        out = []
        for i in range(self._c.nstats):
            rec = self._c.stats[i]
            out.append({n: int(getattr(rec, n)) for n in names})
        return out

"""The capture (capture.c): copies of the frames that cross, written as pcapng by
a thread of the core, never waited for by the loop."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from nmbridge.engine._core import check, ffi, lib
from nmbridge.engine.filter import Filter, match_function

#: tcpdump's default snap length, and the largest the capture takes
SNAPLEN_MAX = int(lib.NMB_CAPTURE_SNAPLEN_MAX)
#: the ring between the loop and the writer: at 60-byte frames, some 380,000 of them
DEFAULT_RING_BYTES = 32 << 20


@dataclass(frozen=True)
class CaptureCounts:
    written: int  # frames written to a file
    lost: int     # frames taken into the ring but not written (after a write error)
    files: int    # files opened, the first included
    error: int    # the writer's errno (0: none)


def file_name(path: str, n: int, files: int = 0) -> str:
    """The name of file number n of PATH, as tcpdump -C/-W names it (files: -W, 0: none)."""
    buf = ffi.new("char[]", 4096)
    check(lib.nmb_capture_file_name(buf, 4096, os.fsencode(path), n, files), path)
    return os.fsdecode(ffi.string(buf))


class Capture:
    """A writer thread draining a ring into pcapng on fd (which it takes over).

    path: the name the files after the first are made from (None: no rotation);
    file_bytes: a new file once the current one is larger (0: never); files:
    then a ring of that many (0: no limit); if_names: the interface block
    names of the two directions (frames from port 0, from port 1).
    """

    def __init__(self, fd: int, if_names: tuple[str, str], path: str | None = None,
                 snaplen: int = SNAPLEN_MAX, file_bytes: int = 0, files: int = 0,
                 ring_bytes: int = DEFAULT_RING_BYTES) -> None:
        if not 1 <= snaplen <= SNAPLEN_MAX:
            raise ValueError(f"snap length {snaplen} is not in 1..{SNAPLEN_MAX}")
        if file_bytes and path is None:
            raise ValueError("rotation needs a file name")
        cfg = ffi.new("struct nmb_capture_config *")
        keep = [ffi.new("char[]", os.fsencode(n)) for n in if_names]
        cpath = ffi.new("char[]", os.fsencode(path)) if path is not None else ffi.NULL
        cfg.fd = fd
        cfg.path = cpath
        cfg.snaplen = snaplen
        cfg.ring_bytes = ring_bytes
        cfg.file_bytes = file_bytes
        cfg.files = files
        cfg.first = 0
        cfg.if_name = keep
        out = ffi.new("struct nmb_capture **")
        check(lib.nmb_capture_open(cfg, out), "capture")
        self._c: Any = out[0]
        self._filter_keep: Any = None
        self._final = CaptureCounts(0, 0, 0, 0)
        self.closed = False

    @property
    def c(self) -> Any:
        """The struct nmb_capture * the engine's hook is given."""
        return self._c

    @staticmethod
    def hook() -> Any:
        """The engine's capture hook, nmb_capture_frame."""
        return ffi.addressof(lib, "nmb_capture_frame")

    def set_filter(self, flt: Filter) -> None:
        """The capture's own filter, before the bridge runs: a frame it refuses crosses
        but is not copied (neither captured nor capture_dropped)."""
        self._filter_keep = flt  # alive as long as the capture
        lib.nmb_capture_set_filter(self._c, match_function(), flt.c)

    def error(self) -> str | None:
        """Why the writer stopped writing (None: it has not)."""
        err = int(lib.nmb_capture_error(self._c))
        return os.strerror(err) if err else None

    def counts(self) -> CaptureCounts:
        out = ffi.new("struct nmb_capture_counts *")
        lib.nmb_capture_counts(self._c, out)
        return CaptureCounts(int(out.written), int(out.lost), int(out.files), int(out.error))

    def close(self) -> CaptureCounts:
        """Write what the ring holds, stop the writer, close the file; the final counts."""
        if self.closed:
            return self._final
        lib.nmb_capture_close(self._c)
        self._final = self.counts()
        lib.nmb_capture_free(self._c)
        self._c = ffi.NULL
        self.closed = True
        return self._final

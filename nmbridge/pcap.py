"""--pcap: what the options mean, checked before anything is opened, and the
capture opened and watched for the bridge (the writing itself is the core's,
nmbridge.engine.capture)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nmbridge import terminal
from nmbridge.errors import UsageError

if TYPE_CHECKING:
    from nmbridge.pcapfilter import Program

#: tcpdump's default snap length (-s 0 means it too)
DEFAULT_SNAPLEN = 262144
#: --pcap-size is in millions of bytes, as tcpdump's -C
SIZE_UNIT = 1_000_000
STDOUT = "-"


@dataclass(frozen=True)
class PcapOptions:
    path: str                 # FILE, or "-" for standard output
    snaplen: int = DEFAULT_SNAPLEN
    size_mb: int = 0          # a new file once the current one is larger (0: never)
    files: int = 0            # with size_mb: a ring of this many files (0: no limit)
    filter: str | None = None  # a tcpdump expression: only what it selects is captured


def pcap_options(path: str | None, snaplen: int | None, size_mb: int | None,
                 files: int | None, expression: str | None) -> PcapOptions | None:
    """The capture asked for on the command line (None: none); a combination that
    cannot be is a usage error."""
    if path is None:
        given = [name for name, value in (("--snaplen", snaplen), ("--pcap-size", size_mb),
                                          ("--pcap-files", files), ("--pcap-filter", expression))
                 if value is not None]
        if given:
            raise UsageError(f"{given[0]} applies to a capture: give --pcap FILE too")
        return None
    if not path:
        raise UsageError("--pcap: give a file name, or - for standard output")
    if files is not None and size_mb is None:
        raise UsageError("--pcap-files N needs --pcap-size MB (a new file every MB, as "
                         "tcpdump -W needs -C)")
    if size_mb is not None and path == STDOUT:
        raise UsageError("--pcap-size: standard output cannot be rotated; give a file name")
    return PcapOptions(path=path, snaplen=snaplen or DEFAULT_SNAPLEN, size_mb=size_mb or 0,
                       files=files or 0, filter=expression)


def direction_names(ports: tuple[str, str]) -> tuple[str, str]:
    """The interface names of the two directions in the capture file."""
    return f"{ports[0]}->{ports[1]}", f"{ports[1]}->{ports[0]}"


def open_capture(opts: PcapOptions, ports: tuple[str, str]) -> Any:
    """The capture running (its writer thread started, the first file written); a file
    that cannot be written is a usage error, before the bridge starts."""
    from nmbridge.engine.capture import Capture, file_name
    from nmbridge.engine.filter import Filter

    flt = Filter(_compiled(opts.filter).insns) if opts.filter is not None else None
    if opts.path == STDOUT:
        fd = os.dup(1)
        os.set_inheritable(fd, False)
        path = None
    else:
        first = file_name(opts.path, 0, opts.files)
        try:
            fd = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UsageError(f"--pcap {opts.path}: cannot write {first}: "
                             f"{exc.strerror}") from None
        path = opts.path
    capture = Capture(fd, direction_names(ports), path=path, snaplen=opts.snaplen,
                      file_bytes=opts.size_mb * SIZE_UNIT, files=opts.files)
    if flt is not None:
        capture.set_filter(flt)
    return capture


def _compiled(expression: str) -> Program:
    """The capture filter compiled by libpcap; a bad one (or no libpcap) a usage error
    that names the option and gives libpcap's message."""
    from nmbridge.pcapfilter import FilterSyntax, compile_filter

    try:
        return compile_filter(expression)
    except FilterSyntax as exc:
        raise FilterSyntax(f"--pcap-filter {exc.message}") from None


class CaptureWatch:
    """Says once, when it happens, that the writer stopped (disk full, a closed pipe):
    the bridge forwards on, what crosses from then on is counted as capture_dropped."""

    def __init__(self, capture: Any, opts: PcapOptions) -> None:
        self.capture = capture
        self._opts = opts
        self.announced = False

    def check(self) -> None:
        if not self.announced:
            self._announce(self.capture.error())

    def _announce(self, why: str | None) -> None:
        if why is not None:
            self.announced = True
            terminal.warn(f"--pcap {self._opts.path}: capture stopped: {why}; the bridge "
                          "forwards on, frames that cross are counted as capture_dropped")

    def close(self) -> None:
        """Write what is left, stop the writer, and say what it wrote."""
        counts = self.capture.close()
        if counts.error and not self.announced:
            self._announce(os.strerror(counts.error))
        where = "standard output" if self._opts.path == STDOUT else self._opts.path
        files = f" in {counts.files} files" if counts.files > 1 else ""
        lost = f", {counts.lost} lost to the write error" if counts.lost else ""
        terminal.info(f"nmbridge: capture: {counts.written} frames written to "
                      f"{where}{files}{lost}")

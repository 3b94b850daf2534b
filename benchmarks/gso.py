"""Super-frames per second of nmb_gso_segment, the software GSO of the C core.

64 KiB TCP super-frames over IPv4 and IPv6 (MSS 1448, 46 segments) and a USO one
(64000 bytes in 1200-byte datagrams, 54 segments), read from one buffer or from a
chain of 2048-byte RX buffers, written to a TX ring of 2048-byte buffers. Against
it: memcpy of the same output bytes into the same buffers (no headers built, no
checksum summed), the most a copying segmenter could do.

The loops are C (benchmarks/gso_loops.c, compiled at run time with the core's own
flags); nmb_gso_segment is the installed core's. Each figure is the median of
--runs runs, the cases interleaved.

    .venv/bin/python benchmarks/gso.py [--runs 7] [--seconds 0.2] [--cpu N]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import cffi

from nmbridge._ffi import _core
from nmbridge._ffi import build as core_build

core_ffi, core_lib = _core.ffi, _core.lib

LOOPS_C = benchlib.HERE / "gso_loops.c"
LOOPS_CDEF = """
int64_t bench_gso(void *fn, void *vh, void *f, void *ring, uint64_t iters, uint64_t *segs);
int64_t bench_copy(void *src, uint32_t bytes, void *ring, uint64_t iters);
"""
BUF_SIZE = 2048
SLOTS = 1024


def super_frame(kind: str, payload: int) -> tuple[tuple[int, ...], bytes]:
    """(vnet header fields, frame): checksums are not what is measured, left zero."""
    v6, tcp = kind.endswith("6"), kind.startswith("tcp")
    l4 = (struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x80, 0x18, 5, 0, 0) + b"\x01" * 12 if tcp
          else struct.pack("!HHHH", 1, 2, 8 + payload, 0))
    l4_len = len(l4) + payload
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, l4_len, 6 if tcp else 17, 64) + b"\x20" * 32
        eth = b"\x02" * 12 + b"\x86\xdd"
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + l4_len, 1, 0x4000, 64, 6 if tcp else 17,
                         0) + b"\xc6\x12\0\1\xc6\x12\0\2"
        eth = b"\x02" * 12 + b"\x08\x00"
    start = len(eth) + len(ip)
    gso = (4 if v6 else 1) if tcp else 5
    mss = 1448 if tcp else 1200
    hdr = (1, gso, start + len(l4), mss, start, 16 if tcp else 6)
    return hdr, eth + ip + l4 + bytes(i % 251 for i in range(payload))


CASES = {  # name: (kind, payload bytes)
    "tcp4 64 KiB": ("tcp4", 65535 - 20 - 32),
    "tcp6 64 KiB": ("tcp6", 65535 - 32),
    "udp4 64000 B": ("udp4", 64000),
}


@dataclass
class Case:
    name: str
    scattered: bool
    rates: dict[str, list[float]] = field(default_factory=dict)  # super-frames/s per run
    iters: dict[str, int] = field(default_factory=dict)


class Bench:
    def __init__(self, workdir: Path) -> None:
        src = Path(core_build.__file__).resolve().parent / "src"
        cflags, _ = core_build.compile_args(dict(os.environ))
        so = benchlib.compile_c(LOOPS_C, workdir, shared=True, flags=cflags,
                                extra=["-D_GNU_SOURCE", "-I", str(src)])
        self.ffi = cffi.FFI()
        self.ffi.cdef(LOOPS_CDEF)
        self.lib = self.ffi.dlopen(str(so))
        self.cflags = cflags
        self.fn = self._void(core_ffi.addressof(core_lib, "nmb_gso_segment"))
        out = core_ffi.new("struct nmb_region **")
        rc = core_lib.nmb_region_new(1, core_ffi.new("uint32_t[]", [1, 0, 0, 0]), SLOTS,
                                     BUF_SIZE, out)
        if rc != 0:
            raise SystemExit(f"gso: nmb_region_new failed ({rc})")
        self.region = out[0]
        nifp = core_lib.nmb_region_if(self.region, 0)
        self.ring = core_ffi.cast("struct netmap_ring *",
                                  core_ffi.cast("char *", nifp) + nifp.ring_ofs[0])
        self.keep: list[Any] = []
        self.inputs: dict[tuple[str, bool], tuple[Any, Any, Any, int]] = {}
        for name, (kind, payload) in CASES.items():
            hdr, frame = super_frame(kind, payload)
            vh = core_ffi.new("struct nmb_vnet_hdr *")
            (vh.flags, vh.gso_type, vh.hdr_len, vh.gso_size, vh.csum_start,
             vh.csum_offset) = hdr
            for scattered in (False, True):
                pieces = ([frame[i:i + BUF_SIZE] for i in range(0, len(frame), BUF_SIZE)]
                          if scattered else [frame])
                bufs = [core_ffi.new("uint8_t[]", p) for p in pieces]
                iov = core_ffi.new("struct iovec[]", len(pieces))
                for k, (b, p) in enumerate(zip(bufs, pieces)):
                    iov[k].iov_base, iov[k].iov_len = b, len(p)
                f = core_ffi.new("struct nmb_frame_in *")
                f.iov, f.niov, f.len = iov, len(pieces), len(frame)
                if core_lib.nmb_vnet_check(vh, f) != 0:
                    raise SystemExit(f"gso: the {name} super-frame does not pass the check")
                self.keep += [bufs, iov]
                out_bytes = len(frame) + (self.segments(vh, f) - 1) * vh.hdr_len
                self.inputs[(name, scattered)] = (vh, f, core_ffi.new("uint8_t[]", out_bytes),
                                                  out_bytes)

    def _void(self, ptr: Any) -> Any:
        return self.ffi.cast("void *", int(core_ffi.cast("uintptr_t", ptr)))

    def segments(self, vh: Any, f: Any) -> int:
        out = core_ffi.new("struct nmb_tx_out *")
        out.ring, out.room = self.ring, SLOTS - 1
        return int(core_lib.nmb_gso_segment(vh, f, out, core_ffi.new("uint32_t *")))

    def close(self) -> None:
        core_lib.nmb_region_free(self.region)

    def once(self, case: Case, loop: str, iters: int) -> float:
        vh, f, copy_src, out_bytes = self.inputs[(case.name, case.scattered)]
        ring = self._void(self.ring)
        if loop == "gso":
            segs = self.ffi.new("uint64_t *")
            ns = self.lib.bench_gso(self.fn, self._void(vh), self._void(f), ring, iters, segs)
            if ns < 0:
                raise SystemExit(f"gso: {case.name}: nmb_gso_segment failed")
        else:
            ns = self.lib.bench_copy(self._void(copy_src), out_bytes, ring, iters)
        return iters / (ns / 1e9)

    def calibrate(self, case: Case, loop: str, seconds: float) -> int:
        iters = 16
        while True:
            took = iters / self.once(case, loop, iters)
            if took >= 0.02:
                return max(16, int(iters * seconds / took))
            iters *= 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (median), default 7")
    parser.add_argument("--seconds", type=float, default=0.2,
                        help="length of one timed loop, default 0.2")
    parser.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1,
                        help="the core to run on, default the last one")
    benchlib.add_quiet_options(parser)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    background = benchlib.Background()
    cases = [Case(name, sc) for name in CASES for sc in (False, True)]
    with benchlib.scratch_dir() as work:
        bench = Bench(work)
        try:
            for case in cases:
                for loop in ("gso", "memcpy"):
                    bench.once(case, loop, 16)
                    case.iters[loop] = bench.calibrate(case, loop, args.seconds)
            for run in range(args.runs):
                background.wait_quiet(args.quiet_below, args.quiet_wait)
                benchlib.note(f"gso: run {run + 1}/{args.runs}")
                for case in cases:
                    for loop in (("gso", "memcpy") if run % 2 else ("memcpy", "gso")):
                        case.rates.setdefault(loop, []).append(
                            bench.once(case, loop, case.iters[loop]))
            segs = {c.name: bench.segments(*bench.inputs[(c.name, False)][:2]) for c in cases}
            frame_len = {c.name: int(bench.inputs[(c.name, False)][1].len) for c in cases}
        finally:
            bench.close()
    results, rows = [], []
    for c in cases:
        gso, cp = benchlib.median(c.rates["gso"]), benchlib.median(c.rates["memcpy"])
        rec = {"case": c.name, "input": "chain of 2048 B" if c.scattered else "one buffer",
               "segments": segs[c.name], "super_frames_per_s": round(gso),
               "gbit_s": round(gso * frame_len[c.name] * 8 / 1e9, 1),
               "ns_per_segment": round(1e9 / gso / segs[c.name], 1),
               "memcpy_gbit_s": round(cp * frame_len[c.name] * 8 / 1e9, 1),
               "vs_memcpy": round(gso / cp, 3), "runs": len(c.rates["gso"])}
        results.append(rec)
        rows.append(list(rec.values())[:-1])
    print(f"nmb_gso_segment on one core (CPU {args.cpu}), {BUF_SIZE}-byte TX buffers; Gbit/s "
          f"of super-frames in, median of {args.runs} runs")
    print(benchlib.table(["case", "input", "segments", "super-frames/s", "Gbit/s",
                          "ns/segment", "memcpy Gbit/s", "vs memcpy"], rows))
    benchlib.finish("gso", background, {"runs": args.runs, "seconds": args.seconds,
                                        "cpu": args.cpu, "buf_size": BUF_SIZE,
                                        "cflags": bench.cflags}, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

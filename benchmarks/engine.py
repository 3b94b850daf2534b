"""Frames per second of nmbridge's forwarding engine on in-memory rings.

The engine (nmb_forward and nmb_ring_move of the installed C core) moves
frames between two rings of a region laid out by the core's own allocator,
zero-copy and copy, 64- and 1514-byte frames, bursts of 32, 256 and 1024, on
one core. Against it, on the same rings and in the same process:

- the plainest C zero-copy loop (swap buf_idx, copy len, NS_BUF_CHANGED);
- the plainest C copy loop (memcpy each frame into the TX slot's buffer);
- memcpy of one block per burst (plain memcpy bandwidth).

The measured loops are C (benchmarks/engine_loops.c, compiled at run time with
the core's own compiler flags): the engine is called through pointers to the
core's functions, and between bursts C plays the kernel (RX refilled, TX
drained, O(1) each). No Python runs between bursts. Each figure is the median
of --runs runs; the cases are interleaved within each run, and the ratios are
medians of same-run ratios.

    .venv/bin/python benchmarks/engine.py [--runs 7] [--seconds 0.2] [--cpu 1]
    .venv/bin/python benchmarks/engine.py --filter 'udp port 9'

With --filter EXPR (compiled by libpcap, as nmbridge --filter does), two more
loops: nmb_forward with the filter set (every frame is a UDP frame
198.18.0.1:9 -> 198.18.0.2:9, which the expression should let through), and
nmb_forward on the same per-frame path with no filter (struct nmb_frame_hooks
set, its match NULL): what the per-frame path costs, and what the filter adds.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import cffi

from nmbridge._ffi import _core
from nmbridge._ffi import build as core_build

core_ffi, core_lib = _core.ffi, _core.lib

LOOPS_C = benchlib.HERE / "engine_loops.c"

LOOPS_CDEF = """
void bench_prepare(void *rx, void *tx, uint16_t len);
int64_t bench_forward(void *fn, void *rx, void *tx, uint32_t burst, int zerocopy,
                      uint64_t iters, void *st, void *rxs, void *txs, uint64_t *frames);
int64_t bench_move(void *fn, void *rx, void *tx, uint32_t burst, int zerocopy,
                   uint64_t iters, void *st, void *rxs, void *txs, uint64_t *frames);
int64_t bench_plain(int zerocopy, void *rx, void *tx, uint32_t burst, uint64_t iters,
                    uint64_t *frames);
int64_t bench_memcpy(void *dst, void *src, uint64_t chunk, uint64_t span, uint64_t iters);
void bench_stamp(void *rx, void *tx, void *hdr, uint16_t n);
"""
#: the headers of every frame: Ethernet, IPv4, UDP 198.18.0.1:9 -> 198.18.0.2:9
HEADERS = bytes.fromhex("020000000002" "020000000001" "0800"
                        "4500002e00070000401100" "00" "c6120001" "c6120002"
                        "00090009001a0000")

MODES = ("zero-copy", "copy")
FRAMES = (64, 1514)
BURSTS = (32, 256, 1024)
BUF_SIZE = 2048

#: issue 2's aims: the engine against the plain loops
TARGET_ZEROCOPY = 0.8   # of the plain swap loop
TARGET_COPY_1514 = 0.8  # of memcpy bandwidth


@dataclass
class Case:
    mode: str
    frame: int
    burst: int
    filtered: bool = False  # with the per-frame and filter loops
    rates: dict[str, list[float]] = field(default_factory=dict)  # Mpps per run, per loop
    ratios: dict[str, list[float]] = field(default_factory=dict)  # same-run ratios
    iters: dict[str, int] = field(default_factory=dict)

    @property
    def zerocopy(self) -> bool:
        return self.mode == "zero-copy"

    def loops(self) -> list[str]:
        return (["forward", "move", "plain"] + ([] if self.zerocopy else ["memcpy"])
                + (["per-frame", "filter"] if self.filtered else []))


def _addr(ptr: Any) -> int:
    return int(core_ffi.cast("uintptr_t", ptr))


class Bench:
    """The rings, the compiled loops, and one measurement at a time."""

    def __init__(self, workdir: Path, slots: int, insns: Any = None) -> None:
        src = Path(core_build.__file__).resolve().parent / "src"
        cflags, _ = core_build.compile_args(dict(os.environ))
        so = benchlib.compile_c(LOOPS_C, workdir, shared=True, flags=cflags,
                                extra=["-D_GNU_SOURCE", "-I", str(src)])
        self.ffi = cffi.FFI()
        self.ffi.cdef(LOOPS_CDEF)
        self.lib = self.ffi.dlopen(str(so))
        self.cflags = cflags
        self.slots = slots

        self.fn = {
            "forward": self._void(_addr(core_ffi.addressof(core_lib, "nmb_forward"))),
            "move": self._void(_addr(core_ffi.addressof(core_lib, "nmb_ring_move"))),
        }
        # two ports of one region, as a bridge has them: port 0's RX ring into port 1's TX ring
        counts = core_ffi.new("uint32_t[]", [1, 0, 1, 0, 1, 0, 1, 0])
        out = core_ffi.new("struct nmb_region **")
        rc = core_lib.nmb_region_new(2, counts, slots, BUF_SIZE, out)
        if rc != 0:
            raise SystemExit(f"engine: nmb_region_new failed ({rc})")
        self.region = out[0]
        self.rx = self._void(_addr(self._ring(0, 1)))  # ring_ofs order: TX rings, then RX
        self.tx = self._void(_addr(self._ring(1, 0)))
        self.state = core_ffi.new("struct nmb_rx_state *")
        self.rxs = core_ffi.new("struct nmb_ring_stats[1]")
        self.txs = core_ffi.new("struct nmb_ring_stats[1]")
        self.pool: dict[int, tuple[Any, Any]] = {}
        self.prepared: tuple[str, int] | None = None
        self.hooks = core_ffi.new("struct nmb_frame_hooks *")
        self.filter: Any = None
        if insns is not None:
            from nmbridge.engine.filter import Filter

            self.filter = Filter(insns)

    def _void(self, addr: int) -> Any:
        return self.ffi.cast("void *", addr)

    def _ring(self, port: int, index: int) -> Any:
        nifp = core_lib.nmb_region_if(self.region, port)
        return core_ffi.cast("struct netmap_ring *",
                             core_ffi.cast("char *", nifp) + nifp.ring_ofs[index])

    def close(self) -> None:
        core_lib.nmb_region_free(self.region)

    def _blocks(self, frame: int) -> tuple[Any, Any, int]:
        """Two blocks as large as the frames of one ring, for memcpy."""
        span = self.slots * frame
        if frame not in self.pool:
            self.pool[frame] = (self.ffi.new("char[]", span), self.ffi.new("char[]", span))
        dst, src = self.pool[frame]
        return dst, src, span

    def once(self, case: Case, loop: str, iters: int) -> float:
        """One timed loop of iters bursts; returns frames per second."""
        if self.prepared != (case.mode, case.frame):
            self.lib.bench_prepare(self.rx, self.tx, case.frame)
            self.lib.bench_stamp(self.rx, self.tx, self.ffi.from_buffer(HEADERS), len(HEADERS))
            self.prepared = (case.mode, case.frame)
        frames = self.ffi.new("uint64_t *")
        zc = 1 if case.zerocopy else 0
        st = self._void(_addr(self.state))
        rxs, txs = self._void(_addr(self.rxs)), self._void(_addr(self.txs))
        if loop in ("per-frame", "filter"):
            self.hooks.match = (core_ffi.addressof(core_lib, "nmb_filter_match")
                                if loop == "filter" else core_ffi.NULL)
            self.hooks.filter = self.filter.c if loop == "filter" else core_ffi.NULL
            self.state.hooks = self.hooks
            try:
                ns = self.lib.bench_forward(self.fn["forward"], self.rx, self.tx, case.burst,
                                            zc, iters, st, rxs, txs, frames)
            finally:
                self.state.hooks = core_ffi.NULL
        elif loop == "forward" or loop == "move":
            bench = self.lib.bench_forward if loop == "forward" else self.lib.bench_move
            ns = bench(self.fn[loop], self.rx, self.tx, case.burst, zc, iters, st, rxs, txs,
                       frames)
        elif loop == "plain":
            ns = self.lib.bench_plain(zc, self.rx, self.tx, case.burst, iters, frames)
        else:
            dst, src, span = self._blocks(case.frame)
            ns = self.lib.bench_memcpy(dst, src, case.burst * case.frame, span, iters)
            frames[0] = iters * case.burst
        if frames[0] != iters * case.burst:
            raise SystemExit(f"engine: {loop} {case.mode} {case.frame} B burst {case.burst} moved "
                             f"{frames[0]} frames, expected {iters * case.burst}")
        return float(frames[0]) / (ns / 1e9)

    def calibrate(self, case: Case, loop: str, seconds: float) -> int:
        """Bursts per run so that one run takes about `seconds`."""
        iters = 64
        while True:
            rate = self.once(case, loop, iters)
            took = iters * case.burst / rate
            if took >= 0.02:
                return max(16, int(iters * seconds / took))
            iters *= 4


def measure(args: argparse.Namespace, bench: Bench, background: benchlib.Background) -> list[Case]:
    cases = [Case(m, f, b, filtered=bench.filter is not None) for m in MODES for f in FRAMES
             for b in BURSTS]
    for case in cases:
        for loop in case.loops():
            bench.once(case, loop, 64)  # first touch of every page
            case.iters[loop] = bench.calibrate(case, loop, args.seconds)
    for run in range(args.runs):
        background.wait_quiet(args.quiet_below, args.quiet_wait)
        benchlib.note(f"engine: run {run + 1}/{args.runs}")
        for case in cases:
            loops = case.loops()
            # alternate which loop goes first, so that neither always runs on a warmer cache
            if run % 2:
                loops.reverse()
            got = {loop: bench.once(case, loop, case.iters[loop]) / 1e6 for loop in loops}
            for loop, mpps in got.items():
                case.rates.setdefault(loop, []).append(mpps)
            case.ratios.setdefault("plain", []).append(got["forward"] / got["plain"])
            if "memcpy" in got:
                case.ratios.setdefault("memcpy", []).append(got["forward"] / got["memcpy"])
            if "filter" in got:
                case.ratios.setdefault("filter", []).append(got["filter"] / got["forward"])
    return cases


def summarize(cases: list[Case]) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        rec: dict[str, Any] = {"mode": c.mode, "frame_bytes": c.frame, "burst": c.burst}
        for loop in c.loops():
            rec[f"{loop}_mpps"] = round(benchlib.median(c.rates[loop]), 2)
        rec["forward_gbit_s"] = round(rec["forward_mpps"] * c.frame * 8 / 1e3, 1)
        rec["forward_vs_plain"] = round(benchlib.median(c.ratios["plain"]), 3)
        if "memcpy" in c.ratios:
            rec["forward_vs_memcpy"] = round(benchlib.median(c.ratios["memcpy"]), 3)
        rec["forward_ns_per_frame"] = round(1e3 / rec["forward_mpps"], 2)
        if "filter" in c.ratios:
            rec["filter_vs_forward"] = round(benchlib.median(c.ratios["filter"]), 3)
            rec["per_frame_ns"] = round(1e3 / rec["per-frame_mpps"], 2)
            rec["filter_ns"] = round(1e3 / rec["filter_mpps"], 2)
        rec["runs"] = len(c.rates["forward"])
        out.append(rec)
    return out


def targets(results: list[dict[str, Any]]) -> dict[str, Any]:
    zc = [r["forward_vs_plain"] for r in results if r["mode"] == "zero-copy"]
    cp = [r for r in results if r["mode"] == "copy" and r["frame_bytes"] == 1514]
    cp_ratio = [min(r["forward_vs_plain"], r["forward_vs_memcpy"]) for r in cp]
    return {
        "zerocopy_vs_plain_swap_min": min(zc),
        "zerocopy_target": TARGET_ZEROCOPY,
        "zerocopy_met": min(zc) >= TARGET_ZEROCOPY,
        "copy1514_vs_memcpy_min": min(cp_ratio),
        "copy1514_target": TARGET_COPY_1514,
        "copy1514_met": min(cp_ratio) >= TARGET_COPY_1514,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (median), default 7")
    parser.add_argument("--seconds", type=float, default=0.2,
                        help="length of one timed loop, default 0.2")
    parser.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1,
                        help="the core to run on, default the last one")
    parser.add_argument("--slots", type=int, default=2048,
                        help="slots per ring (more than the largest burst), default 2048")
    parser.add_argument("--filter", default=None, metavar="EXPR",
                        help="also measure nmb_forward with this filter (tcpdump's language)")
    benchlib.add_quiet_options(parser)
    args = parser.parse_args(argv)
    insns = None
    if args.filter is not None:
        from nmbridge import pcapfilter

        insns = pcapfilter.compile_filter(args.filter).insns
    if args.slots <= max(BURSTS):
        parser.error(f"--slots must be more than {max(BURSTS)}")
    os.sched_setaffinity(0, {args.cpu})
    background = benchlib.Background()
    with benchlib.scratch_dir() as work:
        bench = Bench(work, args.slots, insns)
        try:
            cases = measure(args, bench, background)
        finally:
            bench.close()
    results = summarize(cases)
    goal = targets(results)

    rows = []
    for r in results:
        rows.append([r["mode"], r["frame_bytes"], r["burst"], r["forward_mpps"], r["move_mpps"],
                     r["plain_mpps"], r["forward_vs_plain"], r.get("memcpy_mpps"),
                     r.get("forward_vs_memcpy"), r["forward_gbit_s"], r["forward_ns_per_frame"]])
    print(f"nmbridge engine on in-memory rings: one core (CPU {args.cpu}), {args.slots}-slot "
          f"rings, {BUF_SIZE}-byte buffers; Mpps = millions of frames/s, median of "
          f"{args.runs} runs")
    print(benchlib.table(
        ["mode", "frame", "burst", "nmb_forward", "nmb_ring_move", "plain loop", "fwd/plain",
         "memcpy block", "fwd/memcpy", "fwd Gbit/s", "ns/frame"], rows))
    if args.filter is not None:
        print()
        print(f"with --filter '{args.filter}': nmb_forward on the per-frame path without a "
              "filter, and with it (ns/frame; filter/fwd: the rate against nmb_forward's)")
        print(benchlib.table(
            ["mode", "frame", "burst", "fwd ns/frame", "per-frame ns/frame",
             "filter ns/frame", "filter/fwd"],
            [[r["mode"], r["frame_bytes"], r["burst"], r["forward_ns_per_frame"],
              r["per_frame_ns"], r["filter_ns"], r["filter_vs_forward"]] for r in results]))
    print()
    print(f"zero-copy: nmb_forward at {goal['zerocopy_vs_plain_swap_min']:.0%} or more of the "
          f"plain swap loop (aim {TARGET_ZEROCOPY:.0%}): "
          f"{'met' if goal['zerocopy_met'] else 'MISSED'}")
    print(f"copy, 1514 B: nmb_forward at {goal['copy1514_vs_memcpy_min']:.0%} or more of the "
          f"plain copy loop and of memcpy (aim {TARGET_COPY_1514:.0%}): "
          f"{'met' if goal['copy1514_met'] else 'MISSED'}")
    benchlib.finish("engine", background,
                    {"runs": args.runs, "seconds": args.seconds, "cpu": args.cpu,
                     "slots": args.slots, "buf_size": BUF_SIZE, "cflags": bench.cflags,
                     "filter": args.filter},
                    results, targets=goal)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What nmbridge costs when nothing passes, and how fast it starts.

- Idle bridge: nmbridge with two packet: ports on veths in a namespace of
  its own where no frame moves (IPv6 off, no addresses); its CPU time
  (all threads, user + system) over --seconds, its resident memory, and its
  wake-ups (context switches of all its threads) per second.
- Start-up: wall time of `nmbridge --help`, of the same Python doing
  nothing (`python -c pass`, the floor), and of a bridge from exec to its
  stats file (the ports open, the loop about to run).

Each figure is the median over --runs runs.

    .venv/bin/python benchmarks/idle.py [--runs 3] [--seconds 10] [--help-runs 15]

Needs root (the namespace). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

MODES = ("default", "busy-poll")


def status_fields(pid: int) -> dict[str, int]:
    """VmRSS (kB) of a process, and context switches summed over its threads."""
    out = {"rss_kb": 0, "ctxt": 0, "threads": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        out["ctxt"] += int(line.split()[1])
        except FileNotFoundError:
            continue
        out["threads"] += 1
    return out


def wall(cmd: list[str]) -> float:
    """Seconds from exec to exit."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: status {proc.returncode}: {proc.stderr.strip()}")
    return took


def python_of(command: str) -> str:
    """The interpreter a console script runs under (its #! line)."""
    with open(command, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    if first.startswith("#!"):
        return first[2:].split()[0]
    return sys.executable


def idle_bridge(sb: benchlib.Sandbox, ns: str, work: Path, args: argparse.Namespace,
                mode: str) -> dict[str, Any]:
    name = f"idle-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    with open(work / "bridge.log", "w") as log:
        proc = benchlib.start_bridge(sb, ns, args.nmbridge, work, name, mode == "busy-poll",
                                     args.cpu, log)
        started = time.perf_counter() - t0
        try:
            time.sleep(args.settle)
            cpu0, st0, w0 = benchlib.process_cpu_seconds(proc.pid), status_fields(proc.pid), \
                time.monotonic()
            time.sleep(args.seconds)
            cpu1, st1, w1 = benchlib.process_cpu_seconds(proc.pid), status_fields(proc.pid), \
                time.monotonic()
        finally:
            status = sb.stop(proc)
    if status != 0:
        raise RuntimeError(f"nmbridge exited with status {status}: "
                           f"{(work / 'bridge.log').read_text().strip()[-300:]}")
    return {
        "mode": mode,
        "cpu_pct": 100.0 * (cpu1 - cpu0) / (w1 - w0),
        "rss_mib": st1["rss_kb"] / 1024,
        "wakeups_per_s": (st1["ctxt"] - st0["ctxt"]) / (w1 - w0),
        "threads": st1["threads"],
        "start_to_running_ms": started * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="idle runs per mode")
    parser.add_argument("--seconds", type=float, default=10.0, help="idle window, s")
    parser.add_argument("--settle", type=float, default=1.0, help="wait after start-up, s")
    parser.add_argument("--help-runs", type=int, default=15, help="timed `nmbridge --help` runs")
    parser.add_argument("--modes", default="default", help=f"comma-separated, of {MODES}")
    parser.add_argument("--cpu", type=int, default=1, help="the bridge's core")
    benchlib.add_bridge_options(parser)
    args = parser.parse_args(argv)
    modes = benchlib.parse_modes(parser, args.modes, MODES)
    background = benchlib.start_bridge_benchmark(args)

    # start-up, interleaved with the bare interpreter; one untimed run of each first
    python = python_of(args.nmbridge)
    startup: dict[str, list[float]] = {"nmbridge --help": [], "python -c pass": []}
    wall([args.nmbridge, "--help"])
    wall([python, "-c", "pass"])
    for _ in range(args.help_runs):
        startup["nmbridge --help"].append(wall([args.nmbridge, "--help"]) * 1000)
        startup["python -c pass"].append(wall([python, "-c", "pass"]) * 1000)

    runs: list[dict[str, Any]] = []
    with benchlib.scratch_dir() as work, benchlib.Sandbox() as sb:
        ns, peer = sb.netns("bridge"), sb.netns("peer")
        sb.veth(ns, "d0", "02:4e:4d:42:03:10", peer, "p0", "02:4e:4d:42:03:01")
        sb.veth(ns, "d1", "02:4e:4d:42:03:11", peer, "p1", "02:4e:4d:42:03:02")
        for run in range(args.runs):
            for mode in modes:
                background.wait_quiet(args.quiet_below, args.quiet_wait)
                benchlib.note(f"idle: run {run + 1}/{args.runs}, {mode}, {args.seconds:g} s")
                runs.append(idle_bridge(sb, ns, work, args, mode))

    results = []
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        results.append({
            "mode": mode,
            "runs": len(rs),
            "cpu_pct": round(benchlib.median([r["cpu_pct"] for r in rs]), 2),
            "cpu_pct_max": round(max(r["cpu_pct"] for r in rs), 2),
            "rss_mib": round(benchlib.median([r["rss_mib"] for r in rs]), 1),
            "wakeups_per_s": round(benchlib.median([r["wakeups_per_s"] for r in rs]), 1),
            "threads": rs[-1]["threads"],
            "start_to_running_ms": round(benchlib.median([r["start_to_running_ms"]
                                                          for r in rs])),
        })
    starts = {k: {"median_ms": round(benchlib.median(v), 1), "min_ms": round(min(v), 1),
                  "max_ms": round(max(v), 1), "runs": len(v)} for k, v in startup.items()}

    print(f"idle bridge: two packet: ports on silent veths, {args.seconds:g} s windows, "
          f"median of {args.runs} runs, bridge on CPU {args.cpu}")
    print(benchlib.table(
        ["mode", "CPU %", "(max)", "RSS MiB", "wake-ups/s", "threads", "exec to running ms"],
        [[r["mode"], r["cpu_pct"], r["cpu_pct_max"], r["rss_mib"], r["wakeups_per_s"],
          r["threads"], r["start_to_running_ms"]] for r in results]))
    print()
    print(f"start-up, wall time, {args.help_runs} runs each")
    print(benchlib.table(["command", "median ms", "min ms", "max ms"],
                         [[k, v["median_ms"], v["min_ms"], v["max_ms"]]
                          for k, v in starts.items()]))
    benchlib.finish("idle", background,
                    {"runs": args.runs, "seconds": args.seconds, "help_runs": args.help_runs,
                     "cpu": args.cpu, "modes": modes},
                    results, startup=starts)
    return 0


if __name__ == "__main__":
    benchlib.main_of(__file__, main)

"""Ping round-trip time through nmbridge, against the same path without it.

    bridged:  [ns a] a0 ==veth== d0 [ns d: nmbridge or a Linux bridge] d1 ==veth== b0 [ns b]
    direct:   [ns x] x0 ==veth== y0 [ns y]

Both pings cross the bridge both ways (echo request and reply). `direct` is
one veth pair: the path without any bridge. `kernel-bridge` is the same
three namespaces with a Linux bridge in the middle. nmbridge runs with two
packet: ports, in its default mode (it sleeps in poll()) and with
--busy-poll. Addresses come from 198.18.0.0/15, neighbours are static (no
ARP in the figures), ping runs on one core and the bridge on the other.

Modes are interleaved round by round; median and p99 are over every reply
of every round (the first few of each round, warm-up, left out).

    .venv/bin/python benchmarks/latency.py [--runs 3] [--count 200] [--interval 0.01]

Needs root. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import benchlib

MODES = ("direct", "kernel-bridge", "nmbridge", "nmbridge-busy-poll")
WARMUP_PINGS = 3
RTT = re.compile(r"time=([0-9.]+) ms")

A_MAC, D0_MAC, D1_MAC, B_MAC = (f"02:4e:4d:42:01:{i:02x}" for i in (1, 0x10, 0x11, 2))
X_MAC, Y_MAC = "02:4e:4d:42:02:01", "02:4e:4d:42:02:02"
A_IP, B_IP, X_IP, Y_IP = "198.18.1.1", "198.18.1.2", "198.18.2.1", "198.18.2.2"


class Paths:
    """The namespaces of both paths, built once."""

    def __init__(self, sandbox: benchlib.Sandbox, work: Path, args: argparse.Namespace) -> None:
        self.sb, self.work, self.args = sandbox, work, args
        self.ns = {role: sandbox.netns(role) for role in ("a", "d", "b", "x", "y")}
        sb, ns = sandbox, self.ns
        sb.veth(ns["a"], "a0", A_MAC, ns["d"], "d0", D0_MAC)
        sb.veth(ns["b"], "b0", B_MAC, ns["d"], "d1", D1_MAC)
        sb.veth(ns["x"], "x0", X_MAC, ns["y"], "y0", Y_MAC)
        for role, dev, ip, peer_ip, peer_mac in (("a", "a0", A_IP, B_IP, B_MAC),
                                                 ("b", "b0", B_IP, A_IP, A_MAC),
                                                 ("x", "x0", X_IP, Y_IP, Y_MAC),
                                                 ("y", "y0", Y_IP, X_IP, X_MAC)):
            benchlib.run(["ip", "-n", ns[role], "addr", "add", f"{ip}/24", "dev", dev])
            benchlib.run(["ip", "-n", ns[role], "neigh", "replace", peer_ip, "lladdr", peer_mac,
                          "nud", "permanent", "dev", dev])

    def start(self, mode: str, log: Any) -> subprocess.Popen[Any] | None:
        ns = self.ns["d"]
        if mode == "direct":
            return None
        if mode == "kernel-bridge":
            self.sb.exec(ns, "ip", "link", "add", "br0", "type", "bridge")
            self.sb.exec(ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)
            for port in ("d0", "d1"):
                self.sb.exec(ns, "ip", "link", "set", port, "master", "br0")
            self.sb.exec(ns, "ip", "link", "set", "br0", "up")
            return None
        name = f"latency-{time.monotonic_ns()}"
        proc = benchlib.start_bridge(self.sb, ns, self.args.nmbridge, self.work, name,
                                     mode == "nmbridge-busy-poll", self.args.bridge_cpu, log)
        time.sleep(0.3)
        return proc

    def stop(self, mode: str, proc: subprocess.Popen[Any] | None) -> None:
        if mode == "kernel-bridge":
            self.sb.exec(self.ns["d"], "ip", "link", "del", "br0")
        elif proc is not None:
            status = self.sb.stop(proc)
            if status != 0:
                raise RuntimeError(f"nmbridge exited with status {status}")

    def ping(self, mode: str) -> list[float]:
        """RTTs in microseconds, warm-up left out."""
        a = self.args
        src, dst = ("x", Y_IP) if mode == "direct" else ("a", B_IP)
        count = a.count + WARMUP_PINGS
        proc = benchlib.run(
            ["ip", "netns", "exec", self.ns[src], "taskset", "-c", str(a.ping_cpu),
             "ping", "-n", "-c", str(count), "-i", str(a.interval), "-W", "1", "-s",
             str(a.size), dst], check=False)
        rtts = [float(m.group(1)) * 1000 for m in RTT.finditer(proc.stdout)]
        if len(rtts) < count * 0.9:
            raise RuntimeError(f"{mode}: {len(rtts)} of {count} pings answered")
        return rtts[WARMUP_PINGS:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (every mode once each)")
    parser.add_argument("--count", type=int, default=200, help="pings per mode and round")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between pings")
    parser.add_argument("--size", type=int, default=56, help="ping payload bytes")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--ping-cpu", type=int, default=0)
    parser.add_argument("--bridge-cpu", type=int, default=1)
    benchlib.add_bridge_options(parser)
    args = parser.parse_args(argv)
    modes = benchlib.parse_modes(parser, args.modes, MODES)
    background = benchlib.start_bridge_benchmark(args)
    rtts: dict[str, list[float]] = {m: [] for m in modes}
    run_medians: dict[str, list[float]] = {m: [] for m in modes}
    with benchlib.scratch_dir() as work, benchlib.Sandbox() as sandbox:
        paths = Paths(sandbox, work, args)
        for run in range(args.runs):
            for mode in modes:
                background.wait_quiet(args.quiet_below, args.quiet_wait)
                benchlib.note(f"latency: run {run + 1}/{args.runs}, {mode}")
                with open(work / "bridge.log", "w") as log:
                    proc = paths.start(mode, log)
                    try:
                        got = paths.ping(mode)
                    finally:
                        paths.stop(mode, proc)
                rtts[mode] += got
                run_medians[mode].append(benchlib.median(got))

    base = benchlib.median(rtts["direct"]) if "direct" in modes else None
    results = []
    for mode in modes:
        v = rtts[mode]
        rec: dict[str, Any] = {
            "mode": mode,
            "replies": len(v),
            "median_us": round(benchlib.median(v), 1),
            "p99_us": round(benchlib.percentile(v, 99), 1),
            "mean_us": round(sum(v) / len(v), 1),
            "max_us": round(max(v), 1),
            "run_medians_us": [round(x, 1) for x in run_medians[mode]],
        }
        if base is not None:
            rec["median_added_us"] = round(rec["median_us"] - base, 1)
        results.append(rec)

    print(f"ping RTT, {args.size}-byte payload, every {args.interval:g} s, {args.count} per mode "
          f"and round, {args.runs} rounds interleaved; ping on CPU {args.ping_cpu}, bridge on "
          f"CPU {args.bridge_cpu}; microseconds")
    headers = ["path", "replies", "median", "p99", "mean", "max", "median per round"]
    if base is not None:
        headers.append("median added")
    rows = []
    for r in results:
        row = [r["mode"], r["replies"], r["median_us"], r["p99_us"], r["mean_us"], r["max_us"],
               " ".join(f"{x:g}" for x in r["run_medians_us"])]
        if base is not None:
            row.append(r["median_added_us"])
        rows.append(row)
    print(benchlib.table(headers, rows))
    benchlib.finish("latency", background,
                    {"runs": args.runs, "count": args.count, "interval": args.interval,
                     "size": args.size, "ping_cpu": args.ping_cpu,
                     "bridge_cpu": args.bridge_cpu, "modes": modes},
                    results)
    return 0


if __name__ == "__main__":
    benchlib.main_of(__file__, main)

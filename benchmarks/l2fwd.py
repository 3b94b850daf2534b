"""Layer-2 forwarding through nmbridge with two emulated packet: ports on veth.

    [ns gen]  l2gen -> g0 ==veth== d0  [ns dut]  nmbridge  d1 ==veth== s0  [ns snk]

or, with --in tap, from a TAP port (the host stack's side) to a packet: port:

    [ns dut]  l2gen -> t0 (TAP)  nmbridge  d1 ==veth== s0  [ns snk]

Three network namespaces (unique names, always removed, veths made inside
them so the root namespace never sees one), no addresses anywhere: the
generator (benchmarks/l2gen.c, compiled at run time) sends 60-byte UDP
frames 198.18.0.1 -> 198.18.0.2 addressed to a MAC behind the sink, so the
sink's kernel drops each one at its first check. The generator runs on one
core, the bridge on another, and receive processing is steered (RPS) so that
d0's lands on the bridge's core and s0's on the generator's: the bridge core
does the bridge's work, user and kernel, and nothing else.

Counted over a window after a warm-up, from the interfaces' counters:
offered = frames g0 sent or dropped at d0's backlog, delivered = frames s0
received, loss = the difference; busy = the bridge core's non-idle share
(/proc/stat), and delivered frames per busy second of it.

With --in tap the bridge runs `nmbridge -i tap:t0 -i packet:d1`: it creates
the TAP t0, and the generator, in the bridge's namespace, sends its frames
out of t0 through AF_PACKET, so that the kernel queues them for the bridge
as the host stack would. Offered = frames t0 sent (handed to the bridge's
queue), dropped (that queue full) or dropped by its pfifo qdisc.

Modes, interleaved round by round: `default` (nmbridge sleeps in poll()),
`busy-poll` (nmbridge --busy-poll), and two references every Linux box has,
in the same namespace: `kernel-bridge` (a Linux bridge) and `tc-mirred` (tc
ingress on d0 redirecting every frame to d1). Each `--peer NAME=CMD` adds a
mode NAME: any other forwarder, CMD run by bash in the bridge's namespace on
its core, with NMBB_IN=d0 and NMBB_OUT=d1 in its environment. nmbridge's
delivered frames/s are reported as a ratio to every other mode, per round
(the same minute of the same machine), then the median. --rate offers a fixed
rate, for the CPU cost of a load every forwarder keeps up with.

    .venv/bin/python benchmarks/l2fwd.py [--runs 3] [--duration 5] [--rate 80000]
        [--modes default,busy-poll,kernel-bridge,tc-mirred] [--peer NAME='CMD' ...]
        [--in veth|tap]

Needs root. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib

GEN_MAC = "02:4e:4d:42:00:01"     # g0
FRAME_DST = "02:4e:4d:42:00:02"   # a station behind the sink: not s0's own MAC
SINK_MAC = "02:4e:4d:42:00:03"    # s0
D0_MAC = "02:4e:4d:42:00:10"
D1_MAC = "02:4e:4d:42:00:11"
TAP = "t0"                        # --in tap: the bridge's TAP port, the generator's interface

NMBRIDGE_MODES = ("default", "busy-poll")
KERNEL_MODES = ("kernel-bridge", "tc-mirred")
MODES = NMBRIDGE_MODES + KERNEL_MODES


@dataclass
class Result:
    mode: str
    offered_pps: float
    delivered_pps: float
    loss_pct: float
    dut_busy_pct: float       # exact where cpuidle counts idle time
    dut_busy_tick_pct: float  # what /proc/stat's tick sampling says
    gen_busy_pct: float
    bridge_process_pct: float | None  # the nmbridge process's own CPU time (all threads)
    others_busy_pct: float
    d0_rx_dropped: int
    d1_tx_dropped: int
    back_to_gen: int          # frames the bridge sent back out of its input port
    t0_tx_dropped: int = 0    # --in tap: frames the TAP's queue refused
    t0_qdisc_dropped: int = 0  # --in tap: frames t0's pfifo refused
    dut_note: str = ""

    @property
    def per_busy_second(self) -> float:
        return self.delivered_pps / (self.dut_busy_pct / 100) if self.dut_busy_pct else 0.0


@dataclass
class Lab:
    """The namespaces, veths and counters of one benchmark."""

    sandbox: benchlib.Sandbox
    work: Path
    gen_bin: Path
    args: argparse.Namespace
    ns: dict[str, str] = field(default_factory=dict)
    holders: dict[str, int] = field(default_factory=dict)

    @property
    def tap(self) -> bool:
        return bool(self.args.input == "tap")

    def build(self) -> None:
        sb, a = self.sandbox, self.args
        for role in ("dut", "snk") if self.tap else ("gen", "dut", "snk"):
            self.ns[role] = sb.netns(role)
        if not self.tap:
            sb.veth(self.ns["gen"], "g0", GEN_MAC, self.ns["dut"], "d0", D0_MAC)
            sb.rps(self.ns["dut"], "d0", a.dut_cpu)
        sb.veth(self.ns["snk"], "s0", SINK_MAC, self.ns["dut"], "d1", D1_MAC)
        sb.rps(self.ns["snk"], "s0", a.gen_cpu)
        if shutil.which("tc") and not self.tap:
            # frames d0's backlog refuses are dropped (and counted) behind a qdisc, so
            # that they do not cut the generator's sendmmsg() batches short
            sb.exec(self.ns["gen"], "tc", "qdisc", "replace", "dev", "g0", "root",
                    "pfifo", "limit", "1000")
        for role, ns in self.ns.items():
            self.holders[role] = sb.holder(ns)

    def counters(self) -> tuple[dict[str, dict[str, int]], benchlib.CoreSnapshot]:
        """Interface counters of the namespaces and the CPU times, read together (and,
        with --in tap, t0's qdisc drops just before, as the pseudo-interface t0/qdisc)."""
        dev: dict[str, dict[str, int]] = {}
        if self.tap:
            dev["t0/qdisc"] = {"dropped": self.tap_qdisc_drops()}
        for pid in self.holders.values():
            dev.update(benchlib.net_dev(pid))
        return dev, benchlib.core_snapshot([self.args.dut_cpu, self.args.gen_cpu])

    def tap_present(self) -> bool:
        return TAP in benchlib.net_dev(self.holders["dut"])

    def tap_qdisc_drops(self) -> int:
        # t0 is gone only if the bridge is, which measure() reports
        out = self.sandbox.exec(self.ns["dut"], "tc", "-s", "-j", "qdisc", "show", "dev",
                                TAP, check=False).stdout
        return sum(int(q.get("drops", 0)) for q in json.loads(out or "[]"))

    def start_tap_bridge(self, busy_poll: bool, log: Any) -> subprocess.Popen[Any]:
        """nmbridge from tap:t0 (which it creates) to packet:d1, once it runs and t0
        exists; then t0 gets the same pfifo as g0, so that frames the TAP refuses do not
        cut the generator's batches short and are counted."""
        a, ns = self.args, self.ns["dut"]
        name = f"l2fwd-{len(self.sandbox.procs)}-{time.monotonic_ns()}"
        cmd = [a.nmbridge, "-i", f"tap:{TAP}", "-i", "packet:d1", "--no-live",
               "--stats-dir", str(self.work), "--name", name]
        if busy_poll:
            cmd.append("--busy-poll")
        proc = self.sandbox.spawn(ns, cmd, cpu=a.dut_cpu, stdout=log, stderr=subprocess.STDOUT)
        stats = self.work / f"{name}.stats"

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"nmbridge exited with status {proc.returncode}")
            return stats.exists() and self.tap_present()

        benchlib.wait_for(ready, 15, f"nmbridge to start and create {TAP}")
        self.sandbox.exec(ns, "tc", "qdisc", "replace", "dev", TAP, "root", "pfifo",
                          "limit", "1000")
        return proc

    # -- the device under test ------------------------------------------------
    def start_dut(self, mode: str, log: Any) -> subprocess.Popen[Any] | None:
        ns, a = self.ns["dut"], self.args
        if mode == "kernel-bridge":
            sb = self.sandbox
            sb.exec(ns, "ip", "link", "add", "br0", "type", "bridge")
            # bridged IPv4 through netfilter is not part of a bridge's job here
            sb.exec(ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0",
                    "net.bridge.bridge-nf-call-arptables=0", check=False)
            for port in ("d0", "d1"):
                sb.exec(ns, "ip", "link", "set", port, "master", "br0")
            sb.exec(ns, "ip", "link", "set", "br0", "up")
            return None
        if mode == "tc-mirred":
            sb = self.sandbox
            sb.exec(ns, "tc", "qdisc", "add", "dev", "d0", "ingress")
            sb.exec(ns, "tc", "filter", "add", "dev", "d0", "parent", "ffff:", "protocol", "all",
                    "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
                    "dev", "d1")
            return None
        if mode in a.peers:
            # exec: the forwarder itself is the process measured and stopped
            env = dict(os.environ, NMBB_IN="d0", NMBB_OUT="d1")
            proc = self.sandbox.spawn(ns, ["bash", "-c", f"exec {a.peers[mode]}"], cpu=a.dut_cpu,
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
            time.sleep(a.dut_settle)
            if proc.poll() is not None:
                raise RuntimeError(f"peer {mode} exited with status {proc.returncode}")
            return proc
        if self.tap:
            proc = self.start_tap_bridge(mode == "busy-poll", log)
        else:
            name = f"l2fwd-{len(self.sandbox.procs)}-{time.monotonic_ns()}"
            proc = benchlib.start_bridge(self.sandbox, ns, a.nmbridge, self.work, name,
                                         mode == "busy-poll", a.dut_cpu, log)
        time.sleep(0.5)
        return proc

    def stop_dut(self, mode: str, proc: subprocess.Popen[Any] | None) -> int:
        if mode == "kernel-bridge":
            self.sandbox.exec(self.ns["dut"], "ip", "link", "del", "br0")
            return 0
        if mode == "tc-mirred":
            self.sandbox.exec(self.ns["dut"], "tc", "qdisc", "del", "dev", "d0", "ingress")
            return 0
        assert proc is not None
        status = self.sandbox.stop(proc)
        if self.tap:
            # the TAP goes with the bridge that made it; the next one makes its own
            benchlib.wait_for(lambda: not self.tap_present(), 5, f"{TAP} to go")
        return status

    # -- one measurement ------------------------------------------------------
    def measure(self, mode: str, background: benchlib.Background) -> Result:
        a = self.args
        others = background.wait_quiet(a.quiet_below, a.quiet_wait)
        log_path = self.work / "dut.log"
        with open(log_path, "w") as log:
            dut = self.start_dut(mode, log)
            gen = None
            try:
                # with --in tap, l2gen sends from the bridge's namespace out of t0: the
                # kernel transmits on the TAP, i.e. queues each frame for the bridge
                gen_ns, gen_if = (self.ns["dut"], TAP) if self.tap else (self.ns["gen"], "g0")
                gen = self.sandbox.spawn(
                    gen_ns,
                    [str(self.gen_bin), gen_if, FRAME_DST, GEN_MAC, str(a.frame_len),
                     str(a.rate or 0)],
                    cpu=a.gen_cpu, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                time.sleep(a.warmup)
                if gen.poll() is not None:
                    raise RuntimeError(f"the generator exited: {gen.communicate()[0].strip()}")
                own0 = benchlib.process_cpu_seconds(dut.pid) if dut else 0.0
                dev0, cpu0 = self.counters()
                time.sleep(a.duration)
                dev1, cpu1 = self.counters()
                dt = cpu1.when - cpu0.when
                own1 = benchlib.process_cpu_seconds(dut.pid) if dut else 0.0
                alive = dut is None or dut.poll() is None
            finally:
                if gen is not None:
                    self.sandbox.stop(gen, timeout=3)
                time.sleep(0.2)
                status = self.stop_dut(mode, dut)
        note = ""
        lines = log_path.read_text().strip().splitlines()
        if lines:
            note = lines[-1]
        if not alive or status != 0:
            raise RuntimeError(f"{mode}: the bridge failed (status {status}): {note}")

        def delta(ifname: str, key: str) -> int:
            # an interface this topology has not (d0 with --in tap): 0; one it has
            # must be there at both ends of the window
            if (ifname == "d0" and self.tap) or (ifname.startswith(TAP) and not self.tap):
                return 0
            return dev1[ifname][key] - dev0[ifname][key]

        if self.tap:
            # what l2gen handed to the kernel on t0: sent to the bridge, refused by the
            # TAP's queue, or by its qdisc
            offered = (delta(TAP, "tx_packets") + delta(TAP, "tx_dropped")
                       + delta("t0/qdisc", "dropped"))
        else:
            offered = delta("g0", "tx_packets") + delta("g0", "tx_dropped")
        delivered = delta("s0", "rx_packets")
        dut_busy, dut_tick = benchlib.core_busy(cpu0, cpu1, a.dut_cpu)
        gen_busy, _ = benchlib.core_busy(cpu0, cpu1, a.gen_cpu)
        return Result(
            mode=mode,
            offered_pps=offered / dt,
            delivered_pps=delivered / dt,
            loss_pct=100.0 * (offered - delivered) / offered if offered else 0.0,
            dut_busy_pct=dut_busy,
            dut_busy_tick_pct=dut_tick,
            gen_busy_pct=gen_busy,
            bridge_process_pct=100.0 * (own1 - own0) / dt if dut else None,
            others_busy_pct=others,
            d0_rx_dropped=delta("d0", "rx_dropped"),
            d1_tx_dropped=delta("d1", "tx_dropped"),
            back_to_gen=delta(TAP, "rx_packets") if self.tap else delta("d0", "tx_packets"),
            t0_tx_dropped=delta(TAP, "tx_dropped"),
            t0_qdisc_dropped=delta("t0/qdisc", "dropped"),
            dut_note=note,
        )


def summarize(results: list[Result], modes: list[str]) -> list[dict[str, Any]]:
    out = []
    for mode in modes:
        rs = [r for r in results if r.mode == mode]
        if not rs:
            continue
        out.append({
            "mode": mode,
            "runs": len(rs),
            "delivered_pps": round(benchlib.median([r.delivered_pps for r in rs])),
            "delivered_pps_min": round(min(r.delivered_pps for r in rs)),
            "delivered_pps_max": round(max(r.delivered_pps for r in rs)),
            "offered_pps": round(benchlib.median([r.offered_pps for r in rs])),
            "loss_pct": round(benchlib.median([r.loss_pct for r in rs]), 2),
            "dut_busy_pct": round(benchlib.median([r.dut_busy_pct for r in rs]), 1),
            "dut_busy_tick_pct": round(benchlib.median([r.dut_busy_tick_pct for r in rs]), 1),
            "delivered_per_busy_second": round(benchlib.median([r.per_busy_second for r in rs])),
            "bridge_process_pct": (round(benchlib.median([r.bridge_process_pct for r in rs
                                                          if r.bridge_process_pct is not None]), 1)
                                   if rs[0].bridge_process_pct is not None else None),
            "gen_busy_pct": round(benchlib.median([r.gen_busy_pct for r in rs]), 1),
            "frames_back_to_generator": sum(r.back_to_gen for r in rs),
        })
    return out


def same_round_ratios(results: list[Result], modes: list[str],
                      key: str = "delivered_pps") -> dict[str, dict[str, float]]:
    """For each nmbridge mode, its figure `key` over each other mode's, round by round
    (results are in round order, every mode once a round), then the median."""
    by_mode = {m: [r for r in results if r.mode == m] for m in modes}
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        if mode not in NMBRIDGE_MODES:
            continue
        out[mode] = {}
        for other in modes:
            if other == mode:
                continue
            same_round = [getattr(a, key) / getattr(b, key)
                          for a, b in zip(by_mode[mode], by_mode[other]) if getattr(b, key)]
            if same_round:
                out[mode][other] = round(benchlib.median(same_round), 3)
    return {m: r for m, r in out.items() if r}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (every mode once each)")
    parser.add_argument("--duration", type=float, default=5.0, help="measurement window, s")
    parser.add_argument("--warmup", type=float, default=1.0, help="traffic before the window, s")
    parser.add_argument("--rate", type=int, default=0,
                        help="offered frames/s (default: as fast as the generator goes)")
    parser.add_argument("--frame-len", type=int, default=60,
                        help="frame length without FCS, 60..1514")
    parser.add_argument("--modes", default=None,
                        help=f"comma-separated, of {', '.join(MODES)} and the peers' names "
                             "(default: default,busy-poll and every --peer)")
    parser.add_argument("--gen-cpu", type=int, default=0)
    parser.add_argument("--dut-cpu", type=int, default=1, help="the bridge's core")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=CMD",
                        help="another forwarder from $NMBB_IN to $NMBB_OUT, measured as mode "
                             "NAME (repeatable)")
    parser.add_argument("--dut-settle", type=float, default=2.0,
                        help="seconds a peer gets to start, default 2")
    parser.add_argument("--in", dest="input", choices=("veth", "tap"), default="veth",
                        help="the bridge's input: d0, a veth from the generator's namespace "
                             "(default), or tap:t0, written by the generator through the "
                             "kernel (nmbridge modes only)")
    benchlib.add_bridge_options(parser)
    args = parser.parse_args(argv)
    args.peers = benchlib.parse_peers(parser, args.peer, MODES)
    if args.input == "tap" and args.peers:
        parser.error("--in tap measures nmbridge only: no --peer")
    if args.modes is None:
        args.modes = ",".join([*NMBRIDGE_MODES, *args.peers])
    modes = benchlib.parse_modes(parser, args.modes, [*MODES, *args.peers])
    if args.input == "tap":
        other = [m for m in modes if m not in NMBRIDGE_MODES]
        if other:
            parser.error(f"--in tap measures nmbridge only ({', '.join(NMBRIDGE_MODES)}), "
                         f"not {', '.join(other)}")
        if not shutil.which("tc"):
            parser.error("--in tap needs tc (iproute2)")
    if "tc-mirred" in modes and not shutil.which("tc"):
        parser.error("mode tc-mirred needs tc (iproute2)")
    if not 60 <= args.frame_len <= 1514:
        parser.error("--frame-len must be 60..1514")

    background = benchlib.start_bridge_benchmark(args)
    results: list[Result] = []
    with benchlib.scratch_dir() as work, benchlib.Sandbox() as sandbox:
        gen_bin = benchlib.compile_c(benchlib.HERE / "l2gen.c", work)
        lab = Lab(sandbox, work, gen_bin, args)
        lab.build()
        for run in range(args.runs):
            for mode in modes:
                benchlib.note(f"l2fwd: run {run + 1}/{args.runs}, {mode}")
                r = lab.measure(mode, background)
                benchlib.note(f"l2fwd:   delivered {r.delivered_pps:,.0f}/s of "
                              f"{r.offered_pps:,.0f}/s, bridge core {r.dut_busy_pct:.0f}% busy")
                results.append(r)
    summary = summarize(results, modes)

    ratios = same_round_ratios(results, modes)
    # at a rate everybody keeps up with, what differs is the CPU it takes
    cpu_ratios = same_round_ratios(results, modes, "dut_busy_pct") if args.rate else {}
    for rec in summary:
        if rec["mode"] in ratios:
            rec["delivered_vs"] = ratios[rec["mode"]]
        if rec["mode"] in cpu_ratios:
            rec["core_busy_vs"] = cpu_ratios[rec["mode"]]

    rate = f"{args.rate:,} frames/s offered" if args.rate else "generator at full speed"
    source = benchlib.busy_source(args.dut_cpu)
    into = f" into tap:{TAP}" if args.input == "tap" else ""
    print(f"l2fwd: {args.frame_len}-byte frames{into}, {rate}; generator on CPU {args.gen_cpu}, "
          f"bridge on CPU {args.dut_cpu}; {args.runs} rounds of {args.duration:g} s, medians; "
          f"core busy from {source}")
    headers = ["mode", "delivered/s", "(min-max)", "offered/s", "loss %", "bridge core busy %",
               "(tick-sampled)", "delivered per busy s", "bridge process CPU %",
               "generator core busy %"]
    rows = [[s["mode"], s["delivered_pps"],
             f"{s['delivered_pps_min']:,}-{s['delivered_pps_max']:,}", s["offered_pps"],
             s["loss_pct"], s["dut_busy_pct"], s["dut_busy_tick_pct"],
             s["delivered_per_busy_second"], s["bridge_process_pct"], s["gen_busy_pct"]]
            for s in summary]
    print(benchlib.table(headers, rows))
    for what, table in (("delivered frames/s", ratios), ("bridge core busy %", cpu_ratios)):
        if not table:
            continue
        others = [m for m in modes if any(m in r for r in table.values())]
        print(f"nmbridge's {what} as a ratio to each other mode's (median of the rounds' "
              "ratios):")
        print(benchlib.table(["mode", *[f"/ {o}" for o in others]],
                             [[mode, *[r.get(o) for o in others]] for mode, r in table.items()]))
    back = sum(s["frames_back_to_generator"] for s in summary)
    if back:
        print(f"warning: {back} frames went back out of {TAP if args.input == 'tap' else 'd0'} "
              "towards the generator")
    benchlib.finish(
        "l2fwd", background,
        {k: getattr(args, k) for k in
         ("runs", "duration", "warmup", "rate", "frame_len", "gen_cpu", "dut_cpu")}
        | {"in": args.input, "modes": modes, "peers": args.peers, "busy_from": source},
        summary,
        runs=[r.__dict__ | {"per_busy_second": round(r.per_busy_second)} for r in results])
    return 0


if __name__ == "__main__":
    benchlib.main_of(__file__, main)

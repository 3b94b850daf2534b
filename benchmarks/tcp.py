"""TCP through nmbridge with Linux's default offloads on every veth (iperf3), beside a
Linux bridge on the same topology, both ways.

    tap:     [ns a] a0 ==veth== d0 [ns d] nmbridge -i packet:d0 -i tap:t0   t0 = d's stack
    packet:  [ns a] a0 ==veth== d0 [ns d] nmbridge -i packet:d0 -i packet:d1  d1 ==veth== b0 [ns b]

`tap`: a namespace's veth bridged to the host stack of another namespace
through a TAP (198.18.0.1 on a0, 198.18.0.2 on t0), issue 15's set-up; the
Linux bridge's counterpart is br0 over d0 with 198.18.0.2 on br0. `packet`: a
bump in the wire between two namespaces (198.18.0.1 on a0, 198.18.0.2 on
b0); the Linux bridge there is br0 over d0 and d1. The veths keep what Linux
gives them (TSO, GSO, TX checksum on), so a sender's stack hands them GSO
super-frames of up to 64 KiB with the checksum left to do; `--offloads off`
turns TSO, GSO and TX checksum off on every veth, so that the senders make
MTU-sized frames, checksummed. The TAP's offloads are the bridge's business.

iperf3 (Debian package iperf3) runs its client in ns a, its server on the
other side: `a->b` is the client sending, `b->a` the same with -R. Both run
on one core (--app-cpu), the bridge on the other (--dut-cpu). nmbridge
runs with --isolate (the stack of ns d does not see what d0 receives).
Modes, interleaved round by round, every topology and both ways each round:
`default` (nmbridge), `busy-poll` (nmbridge --busy-poll), `kernel-bridge`,
and `--peer NAME=CMD`: any other forwarder, run by bash in ns d on the
bridge's core with NMBB_IN=d0 and NMBB_OUT=t0 (tap, an existing TAP with the
host address) or d1 (packet) in its environment. Goodput is what the
receiver got; retransmits what the sender's stack counted; each nmbridge
mode's goodput as a ratio to every other mode's, within each round, then the
median of the rounds.

    .venv/bin/python benchmarks/tcp.py [--rounds 3] [--duration 5] [--parallel 1]
        [--topologies tap,packet] [--modes default,kernel-bridge] [--offloads on|off]
        [--peer NAME='CMD' ...]

Needs root, iperf3 and, for --offloads off, ethtool. Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import benchlib

A_MAC, D0_MAC, D1_MAC, B_MAC = (f"02:4e:4d:42:03:{i:02x}" for i in (1, 0x10, 0x11, 2))
A_IP, B_IP = "198.18.0.1", "198.18.0.2"
PREFIX_LEN = 24
TAP = "t0"
PORT = 5201

TOPOLOGIES = ("tap", "packet")
NMBRIDGE_MODES = ("default", "busy-poll")
MODES = (*NMBRIDGE_MODES, "kernel-bridge")
WAYS = ("a->b", "b->a")
#: what --offloads off turns off on every veth (ethtool -K names); 'tx off' also takes
#: TSO with it, said anyway so that the record shows what was asked
OFFLOADS = ("tso", "gso", "tx")
#: ethtool -k lines recorded in the JSON, per veth
SHOWN = ("tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload",
         "generic-receive-offload")


@dataclass
class Result:
    topology: str
    mode: str
    way: str
    round: int
    gbps: float            # what the receiver got
    retransmits: int | None
    error: str = ""        # iperf3's, or a timeout: the figure is then 0


@dataclass
class Topology:
    """The namespaces and links of one topology, and what a mode does in its bridge ns."""

    name: str
    sb: benchlib.Sandbox
    work: Path
    args: argparse.Namespace
    ns: dict[str, str] = field(default_factory=dict)

    @property
    def server_ns(self) -> str:
        return self.ns["d"] if self.name == "tap" else self.ns["b"]

    @property
    def out_port(self) -> str:
        return TAP if self.name == "tap" else "d1"

    def veths(self) -> list[tuple[str, str]]:
        """(namespace, interface) of every veth end."""
        out = [(self.ns["a"], "a0"), (self.ns["d"], "d0")]
        if self.name == "packet":
            out += [(self.ns["d"], "d1"), (self.ns["b"], "b0")]
        return out

    def build(self) -> None:
        sb, t = self.sb, self.name[0]
        roles = ("a", "d") if self.name == "tap" else ("a", "d", "b")
        self.ns = {role: sb.netns(f"{t}{role}") for role in roles}
        sb.veth(self.ns["a"], "a0", A_MAC, self.ns["d"], "d0", D0_MAC)
        self.address(self.ns["a"], "a0", A_IP, B_IP, B_MAC)
        if self.name == "packet":
            sb.veth(self.ns["b"], "b0", B_MAC, self.ns["d"], "d1", D1_MAC)
            self.address(self.ns["b"], "b0", B_IP, A_IP, A_MAC)
        else:
            # persistent: every mode but the Linux bridge's finds it there with its MAC
            d = self.ns["d"]
            benchlib.run(["ip", "-n", d, "tuntap", "add", "dev", TAP, "mode", "tap"])
            benchlib.run(["ip", "-n", d, "link", "set", TAP, "address", B_MAC, "up"])
        for ns, dev in self.veths():
            if self.args.offloads == "off":
                sb.exec(ns, "ethtool", "-K", dev, *(x for o in OFFLOADS for x in (o, "off")))

    def address(self, ns: str, dev: str, ip: str, peer_ip: str, peer_mac: str) -> None:
        """ip on dev, the peer a static neighbour: no ARP in the figures."""
        benchlib.run(["ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", dev])
        benchlib.run(["ip", "-n", ns, "neigh", "replace", peer_ip, "lladdr", peer_mac,
                      "nud", "permanent", "dev", dev])

    def offload_state(self) -> dict[str, dict[str, str]]:
        out = {}
        for ns, dev in self.veths():
            text = self.sb.exec(ns, "ethtool", "-k", dev, check=False).stdout
            lines = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            out[dev] = {k: lines.get(k, "?").split()[0] if lines.get(k) else "?"
                        for k in SHOWN}
        return out

    # -- the device under test ------------------------------------------------
    def start(self, mode: str, log: Any) -> subprocess.Popen[Any] | None:
        sb, d, a = self.sb, self.ns["d"], self.args
        proc = None
        if mode == "kernel-bridge":
            sb.exec(d, "ip", "link", "add", "br0", "type", "bridge")
            sb.exec(d, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)
            ports = ["d0"] if self.name == "tap" else ["d0", "d1"]
            if self.name == "tap":
                sb.exec(d, "ip", "link", "set", "br0", "address", B_MAC)
            for port in ports:
                sb.exec(d, "ip", "link", "set", port, "master", "br0")
            sb.exec(d, "ip", "link", "set", "br0", "up")
        elif mode in a.peers:
            env = dict(os.environ, NMBB_IN="d0", NMBB_OUT=self.out_port)
            proc = sb.spawn(d, ["bash", "-c", f"exec {a.peers[mode]}"], cpu=a.dut_cpu,
                            stdout=log, stderr=subprocess.STDOUT, env=env)
            time.sleep(a.dut_settle)
            if proc.poll() is not None:
                raise RuntimeError(f"peer {mode} exited with status {proc.returncode}")
        else:
            proc = self.start_nmbridge(mode == "busy-poll", log)
        if self.name == "tap":
            self.address(d, "br0" if mode == "kernel-bridge" else TAP, B_IP, A_IP, A_MAC)
        time.sleep(0.3)
        return proc

    def start_nmbridge(self, busy_poll: bool, log: Any) -> subprocess.Popen[Any]:
        a = self.args
        name = f"tcp-{self.name}-{time.monotonic_ns()}"
        cmd = [a.nmbridge, "-i", "packet:d0", "-i", f"{'tap' if self.name == 'tap' else 'packet'}:"
               f"{self.out_port}", "--isolate", "--no-live", "--stats-dir", str(self.work),
               "--name", name]
        if busy_poll:
            cmd.append("--busy-poll")
        proc = self.sb.spawn(self.ns["d"], cmd, cpu=a.dut_cpu, stdout=log,
                             stderr=subprocess.STDOUT)
        stats = self.work / f"{name}.stats"

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"nmbridge exited with status {proc.returncode}")
            return stats.exists()

        benchlib.wait_for(ready, 15, "nmbridge to start")
        return proc

    def stop(self, mode: str, proc: subprocess.Popen[Any] | None) -> int:
        d = self.ns["d"]
        if self.name == "tap":
            dev = "br0" if mode == "kernel-bridge" else TAP
            self.sb.exec(d, "ip", "addr", "flush", "dev", dev)
        if mode == "kernel-bridge":
            self.sb.exec(d, "ip", "link", "del", "br0")
            return 0
        assert proc is not None
        return self.sb.stop(proc)

    # -- one measurement ------------------------------------------------------
    def iperf(self, way: str, run: int, mode: str) -> Result:
        a = self.args
        server = self.sb.spawn(self.server_ns, ["iperf3", "-s", "-1", "-B", B_IP, "-p",
                                                str(PORT)], cpu=a.app_cpu,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            benchlib.wait_for(lambda: self.listening(server), 10, "iperf3 -s to listen")
            cmd = ["iperf3", "-c", B_IP, "-p", str(PORT), "-J", "-t", f"{a.duration:g}",
                   "-O", f"{a.warmup:g}", "-P", str(a.parallel), "--connect-timeout", "3000"]
            if way == "b->a":
                cmd.append("-R")
            client = self.sb.spawn(self.ns["a"], cmd, cpu=a.app_cpu, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            try:
                out, _ = client.communicate(timeout=a.duration + a.warmup + 15)
            except subprocess.TimeoutExpired:
                self.sb.stop(client, timeout=3)
                return Result(self.name, mode, way, run, 0.0, None, "iperf3 timed out")
            finally:
                if client in self.sb.procs:
                    self.sb.procs.remove(client)
        finally:
            self.sb.stop(server, timeout=3)
        return parse_iperf(out, self.name, mode, way, run)

    def listening(self, server: subprocess.Popen[Any]) -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"iperf3 -s exited with status {server.returncode}")
        out = self.sb.exec(self.server_ns, "ss", "-Htln", f"sport = :{PORT}", check=False)
        return bool(out.stdout.strip())


def parse_iperf(out: str, topology: str, mode: str, way: str, run: int) -> Result:
    """The receiver's goodput and the sender's retransmits from iperf3 -J; an iperf3 that
    failed (no connection, a stalled test) is 0 with its error."""
    try:
        doc = json.loads(out)
    except ValueError:
        return Result(topology, mode, way, run, 0.0, None,
                      (out.strip().splitlines() or ["no output"])[-1][:200])
    end = doc.get("end", {})
    received = end.get("sum_received", {})
    sent = end.get("sum_sent", {})
    return Result(topology, mode, way, run, received.get("bits_per_second", 0.0) / 1e9,
                  sent.get("retransmits"), str(doc.get("error", "")))


def rate(gbps: float) -> str:
    """Gbit/s for the table, three figures; below 10 Mbit/s in Mbit/s, said so."""
    if gbps >= 0.01 or gbps == 0:
        return f"{gbps:.3g}" if gbps < 100 else f"{gbps:.0f}"
    return f"{gbps * 1000:.2g} Mbit/s"


def summarize(results: list[Result], cases: list[tuple[str, str]],
              modes: list[str]) -> list[dict[str, Any]]:
    out = []
    for topology, way in cases:
        for mode in modes:
            rs = [r for r in results if (r.topology, r.way, r.mode) == (topology, way, mode)]
            if not rs:
                continue
            retrans = [r.retransmits for r in rs if r.retransmits is not None]
            rec: dict[str, Any] = {
                "topology": topology, "way": way, "mode": mode, "rounds": len(rs),
                "gbps": round(benchlib.median([r.gbps for r in rs]), 6),
                "gbps_min": round(min(r.gbps for r in rs), 6),
                "gbps_max": round(max(r.gbps for r in rs), 6),
                "retransmits": round(benchlib.median(retrans)) if retrans else None,
                "failed_rounds": sum(1 for r in rs if r.error),
            }
            errors = sorted({r.error for r in rs if r.error})
            if errors:
                rec["errors"] = errors
            out.append(rec)
    return out


def same_round_ratios(results: list[Result], topology: str, way: str,
                      modes: list[str]) -> dict[str, dict[str, float | None]]:
    """For each nmbridge mode (and peer), its goodput over each other mode's, round by
    round, then the median; None where the other mode got nothing."""
    def rounds(mode: str) -> dict[int, float]:
        return {r.round: r.gbps for r in results
                if (r.topology, r.way, r.mode) == (topology, way, mode)}

    out: dict[str, dict[str, float | None]] = {}
    for mode in modes:
        if mode == "kernel-bridge":
            continue
        mine = rounds(mode)
        out[mode] = {}
        for other in modes:
            if other == mode:
                continue
            theirs = rounds(other)
            same = [mine[r] / theirs[r] for r in mine if theirs.get(r)]
            out[mode][other] = round(benchlib.median(same), 4) if same else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", "--runs", dest="rounds", type=int, default=3,
                        help="rounds (every topology, mode and way once each), default 3")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds measured per iperf3 run, default 5")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of each run left out of the figure (iperf3 -O), default 1")
    parser.add_argument("--parallel", "-P", type=int, default=1,
                        help="parallel TCP streams (iperf3 -P), default 1")
    parser.add_argument("--offloads", choices=("on", "off"), default="on",
                        help="on: the veths as Linux makes them (TSO, GSO, TX checksum on; "
                             "default); off: those three turned off on every veth")
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES),
                        help="comma-separated, of tap (packet: <-> tap:) and packet "
                             "(packet: <-> packet:); default both")
    parser.add_argument("--modes", default=None,
                        help=f"comma-separated, of {', '.join(MODES)} and the peers' names "
                             "(default: default,kernel-bridge and every --peer)")
    parser.add_argument("--app-cpu", type=int, default=0, help="iperf3's core, default 0")
    parser.add_argument("--dut-cpu", type=int, default=1, help="the bridge's core, default 1")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=CMD",
                        help="another forwarder from $NMBB_IN to $NMBB_OUT, measured as mode "
                             "NAME (repeatable)")
    parser.add_argument("--dut-settle", type=float, default=2.0,
                        help="seconds a peer gets to start, default 2")
    benchlib.add_bridge_options(parser)
    args = parser.parse_args(argv)
    args.peers = benchlib.parse_peers(parser, args.peer, MODES)
    if args.modes is None:
        args.modes = ",".join(["default", "kernel-bridge", *args.peers])
    modes = benchlib.parse_modes(parser, args.modes, [*MODES, *args.peers])
    topologies = benchlib.parse_modes(parser, args.topologies, TOPOLOGIES)
    if args.rounds < 1 or args.parallel < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds and --parallel must be 1 or more, --duration above 0")
    for tool, package, why in (("iperf3", "iperf3", "the traffic"),
                               ("ethtool", "ethtool", "--offloads off and the record"),
                               ("ss", "iproute2", "waiting for iperf3 -s")):
        if shutil.which(tool) is None:
            raise SystemExit(f"tcp: needs the '{tool}' command for {why} "
                             f"(Debian: apt-get install {package})")

    background = benchlib.start_bridge_benchmark(args)
    results: list[Result] = []
    offload_state: dict[str, Any] = {}
    with benchlib.scratch_dir() as work, benchlib.Sandbox() as sandbox:
        labs = [Topology(t, sandbox, work, args) for t in topologies]
        for lab in labs:
            lab.build()
            offload_state[lab.name] = lab.offload_state()
        for run in range(args.rounds):
            for lab in labs:
                for mode in modes:
                    background.wait_quiet(args.quiet_below, args.quiet_wait)
                    log_path = work / "dut.log"
                    with open(log_path, "w") as log:
                        dut = lab.start(mode, log)
                        try:
                            for way in WAYS:
                                benchlib.note(f"tcp: round {run + 1}/{args.rounds}, "
                                              f"{lab.name}, {mode}, {way}")
                                r = lab.iperf(way, run, mode)
                                benchlib.note(f"tcp:   {r.gbps:.3f} Gbit/s, retransmits "
                                              f"{r.retransmits}{', ' + r.error if r.error else ''}")
                                results.append(r)
                            alive = dut is None or dut.poll() is None
                        finally:
                            status = lab.stop(mode, dut)
                    if not alive or status != 0:
                        lines = log_path.read_text().strip().splitlines()
                        raise RuntimeError(f"{mode}: the bridge failed (status {status}): "
                                           f"{lines[-1] if lines else ''}")

    cases = [(t, w) for t in topologies for w in WAYS]
    summary = summarize(results, cases, modes)
    ratios = {f"{t} {w}": same_round_ratios(results, t, w, modes) for t, w in cases}
    for rec in summary:
        vs = ratios[f"{rec['topology']} {rec['way']}"].get(rec["mode"])
        if vs:
            rec["gbps_vs"] = vs

    print(f"tcp: iperf3, {args.parallel} stream(s), offloads {args.offloads} on every veth; "
          f"iperf3 on CPU {args.app_cpu}, bridge on CPU {args.dut_cpu}; {args.rounds} rounds "
          f"of {args.duration:g} s (+{args.warmup:g} s left out), medians")
    print("a->b: from a0 (198.18.0.1) to the other side (tap: the stack behind t0; "
          "packet: b0); b->a: back")
    others = [m for m in modes if any(m in r for v in ratios.values() for r in v.values())]
    headers = ["topology", "way", "mode", "Gbit/s", "(min-max)", "retransmits",
               *[f"/ {o}" for o in others], "failed"]
    rows = []
    for s in summary:
        vs = s.get("gbps_vs", {})
        rows.append([s["topology"], s["way"], s["mode"], rate(s["gbps"]),
                     f"{rate(s['gbps_min'])}-{rate(s['gbps_max'])}", s["retransmits"],
                     *[vs.get(o) for o in others], s["failed_rounds"]])
    print(benchlib.table(headers, rows))
    print("(/ MODE: the row's Gbit/s over MODE's, the median of the rounds' ratios; "
          "failed: rounds iperf3 gave up, counted as 0)")
    errors = sorted({e for s in summary for e in s.get("errors", [])})
    for e in errors:
        print(f"iperf3: {e}")
    benchlib.finish(
        "tcp", background,
        {k: getattr(args, k) for k in
         ("rounds", "duration", "warmup", "parallel", "offloads", "app_cpu", "dut_cpu")}
        | {"topologies": topologies, "modes": modes, "peers": args.peers,
           "veth_offloads": offload_state},
        summary,
        runs=[asdict(r) for r in results])
    return 0


if __name__ == "__main__":
    benchlib.main_of(__file__, main)

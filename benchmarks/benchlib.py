"""What the benchmarks share: the machine and how busy it was, medians, tables,
the JSON line, C helpers compiled at run time, and network namespaces that are
always removed.

Not part of the nmbridge package: the benchmarks import it as a sibling module.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# -- numbers -----------------------------------------------------------------


def parse_peers(parser: argparse.ArgumentParser, given: list[str],
                taken: Sequence[str]) -> dict[str, str]:
    """--peer NAME=COMMAND, repeated: the peers by name; a malformed one, or a name among
    taken (the benchmark's own modes) or given twice, is the parser's usage error."""
    peers: dict[str, str] = {}
    for text in given:
        name, sep, command = text.partition("=")
        name = name.strip()
        if not sep or not name or not command.strip() or "," in name:
            parser.error(f"--peer {text!r}: give NAME=COMMAND")
        if name in taken or name in peers:
            parser.error(f"--peer {name}: that name is taken")
        peers[name] = command
    return peers


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile, nearest rank (p99 of 200 samples is the 198th)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


# -- the machine -------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        from nmbridge import __version__ as version
    except ImportError:  # pragma: no cover - the benchmarks run where nmbridge is installed
        version = "?"
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nmbridge": version,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class CpuTimes:
    """One /proc/stat line: jiffies per field."""

    busy: int  # user + nice + system + irq + softirq + steal
    steal: int
    total: int

    def since(self, before: CpuTimes) -> tuple[float, float]:
        """(busy %, steal %) between two snapshots."""
        total = self.total - before.total
        if total <= 0:
            return 0.0, 0.0
        busy = 100.0 * (self.busy - before.busy) / total
        return busy, 100.0 * (self.steal - before.steal) / total


def cpu_times() -> dict[str, CpuTimes]:
    """Every CPU of /proc/stat ('cpu' is all of them, 'cpu0', 'cpu1', ...)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *fields = line.split()
            v = [int(x) for x in fields[:8]] + [0] * (8 - len(fields[:8]))
            user, nice, system, idle, iowait, irq, softirq, steal = v
            busy = user + nice + system + irq + softirq + steal
            out[name] = CpuTimes(busy, steal, busy + idle + iowait)
    return out


def cpu_idle_seconds(cpu: int) -> float | None:
    """Time CPU cpu spent idle, from cpuidle's residency counters (microseconds, exact).

    /proc/stat counts a CPU busy or idle by what it was doing at each timer
    tick: work that wakes on the tick and is done before the next one (a
    forwarder woken by a 1 ms timer, say) is never seen. cpuidle's counters
    are exact. None where the kernel has no cpuidle driver.
    """
    total, seen = 0, False
    base = Path(f"/sys/devices/system/cpu/cpu{cpu}/cpuidle")
    with contextlib.suppress(OSError):
        for state in base.iterdir():
            if state.name.startswith("state"):
                total += int((state / "time").read_text())
                seen = True
    return total / 1e6 if seen else None


@dataclass(frozen=True)
class CoreSnapshot:
    """The CPUs' tick counts and idle residency at one moment."""

    when: float
    ticks: dict[str, CpuTimes]
    idle: dict[int, float | None]


def core_snapshot(cpus: Sequence[int]) -> CoreSnapshot:
    return CoreSnapshot(time.monotonic(), cpu_times(), {c: cpu_idle_seconds(c) for c in cpus})


def core_busy(before: CoreSnapshot, after: CoreSnapshot, cpu: int) -> tuple[float, float]:
    """(busy %, tick-sampled busy %) of one CPU between two snapshots.

    Busy % is exact where cpuidle counts idle time, else the tick-sampled figure.
    """
    tick, _ = after.ticks[f"cpu{cpu}"].since(before.ticks[f"cpu{cpu}"])
    i0, i1 = before.idle.get(cpu), after.idle.get(cpu)
    wall = after.when - before.when
    if i0 is None or i1 is None or wall <= 0:
        return tick, tick
    return min(100.0, max(0.0, 100.0 * (1 - (i1 - i0) / wall))), tick


def busy_source(cpu: int) -> str:
    return "cpuidle residency" if cpu_idle_seconds(cpu) is not None else "/proc/stat ticks"


class Background:
    """How busy the machine was while a benchmark did nothing, sampled between runs.

    The other CPU users of this machine (other people's tests, say) make the
    figures noisy; the samples say how much.
    """

    def __init__(self) -> None:
        self.busy: list[float] = []
        self.steal: list[float] = []
        self.load_start = os.getloadavg()[0]

    def sample(self, seconds: float = 0.5) -> float:
        before = cpu_times()["cpu"]
        time.sleep(seconds)
        busy, steal = cpu_times()["cpu"].since(before)
        self.busy.append(busy)
        self.steal.append(steal)
        return busy

    def wait_quiet(self, threshold: float, max_wait: float) -> float:
        """Sample until the machine is less than threshold % busy, for at most max_wait s.

        Returns the last sample; the samples all count in the summary.
        """
        deadline = time.monotonic() + max_wait
        busy = self.sample(0.5)
        while busy >= threshold and time.monotonic() < deadline:
            busy = self.sample(1.0)
        if busy >= threshold:
            note(f"benchmark: the machine is still {busy:.0f}% busy; measuring anyway")
        return busy

    def summary(self) -> dict[str, Any]:
        return {
            "idle_samples": len(self.busy),
            "others_busy_pct_median": round(median(self.busy), 1) if self.busy else None,
            "others_busy_pct_max": round(max(self.busy), 1) if self.busy else None,
            "steal_pct_median": round(median(self.steal), 1) if self.steal else None,
            "loadavg_1min_start": round(self.load_start, 2),
            "loadavg_1min_end": round(os.getloadavg()[0], 2),
        }

    def describe(self) -> str:
        s = self.summary()
        if not self.busy:
            return f"load average {s['loadavg_1min_start']} -> {s['loadavg_1min_end']}"
        return (
            f"machine busy while the benchmark idled: median {s['others_busy_pct_median']}%, "
            f"max {s['others_busy_pct_max']}% of all CPUs ({s['idle_samples']} samples); "
            f"load average {s['loadavg_1min_start']} -> {s['loadavg_1min_end']}"
        )


def add_bridge_options(parser: Any) -> None:
    """What every benchmark that runs the nmbridge command takes: which one, and the quiet
    wait."""
    parser.add_argument("--nmbridge", default=None, help="the nmbridge command to run")
    add_quiet_options(parser)


def start_bridge_benchmark(args: Any) -> Background:
    """Root checked, the nmbridge command found; the machine's load sampled from now on."""
    require_root()
    args.nmbridge = args.nmbridge or nmbridge_command()
    return Background()


def add_quiet_options(parser: Any) -> None:
    parser.add_argument("--quiet-below", type=float, default=15.0, metavar="PCT",
                        help="before each run, wait until the machine is less than PCT%% busy "
                             "(default 15; 100 never waits)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="SECONDS",
                        help="wait at most this long for that, default 60")


# -- output ------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [any(_is_number(r[i]) for r in rows)
               and all(_is_number(r[i]) or r[i] is None for r in rows)
               for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w)
                         for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        v += 0.0  # no "-0.000"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def emit_json(record: dict[str, Any]) -> None:
    """The last line of every benchmark: one JSON object."""
    sys.stdout.flush()
    print(json.dumps(record, sort_keys=False, separators=(",", ":")), flush=True)


def finish(benchmark: str, background: Background, settings: dict[str, Any],
           results: Any, **more: Any) -> None:
    """How busy the machine was, then the JSON line: name, machine, load, settings,
    results and whatever else the benchmark keeps."""
    print(background.describe())
    emit_json({"benchmark": benchmark, "machine": machine(), "load": background.summary(),
               "settings": settings, "results": results, **more})


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- C helpers compiled at run time ---------------------------------------------


def compile_c(source: Path, out_dir: Path, shared: bool = False,
              flags: Sequence[str] = ("-O2", "-std=gnu11", "-Wall", "-Wextra"),
              extra: Sequence[str] = ()) -> Path:
    """Compile one of the benchmarks' C files with gcc; returns the binary."""
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise SystemExit(f"benchmark: needs a C compiler ({cc} not found)")
    out = out_dir / (source.stem + (".so" if shared else ""))
    cmd = [cc, *flags, *extra, "-o", str(out), str(source)]
    if shared:
        cmd[1:1] = ["-shared", "-fPIC"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: cannot compile {source.name}:\n{proc.stderr}")
    return out


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nmbridge-bench-") as d:
        yield Path(d)


def nmbridge_command() -> str:
    """The nmbridge next to this Python (a virtualenv's), else the one on PATH."""
    here = Path(sys.executable).parent / "nmbridge"
    if here.exists():
        return str(here)
    found = shutil.which("nmbridge")
    if found is None:
        raise SystemExit("benchmark: no nmbridge command (install nmbridge in this Python)")
    return found


# -- network namespaces ----------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("benchmark: needs root (network namespaces, veth)")
    for tool in ("ip", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"benchmark: needs the '{tool}' command")


def run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


class Sandbox:
    """Network namespaces with unique names, removed on exit whatever happens.

    Every namespace is named nmbb-<pid>-<random>-<role>; the processes
    started in them are killed by PID, and deleting a namespace deletes its
    veths. SIGTERM and SIGHUP end the benchmark through the same clean-up.
    """

    LOCK = "/run/lock/nmbridge-bench.lock"

    def __init__(self) -> None:
        self.prefix = f"nmbb-{os.getpid()}-{random.randrange(1 << 20):x}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self._lock: Any = None

    def __enter__(self) -> Sandbox:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)
        # one traffic benchmark at a time: two would measure each other
        self._lock = open(self.LOCK, "w")  # held until __exit__
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(f"benchmark: waiting for another benchmark to finish ({self.LOCK})")
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            if self._lock is not None:
                self._lock.close()

    def netns(self, role: str) -> str:
        """A new namespace with lo up and IPv6 off (no stray router or MLD frames)."""
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.exec(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1")
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def exec(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", ns, *cmd], check=check)

    def veth(self, ns_a: str, a: str, mac_a: str, ns_b: str, b: str, mac_b: str) -> None:
        """A veth pair made inside its namespaces: the root namespace never sees it."""
        run(["ip", "-n", ns_a, "link", "add", a, "address", mac_a, "type", "veth",
             "peer", "name", b, "address", mac_b, "netns", ns_b])
        run(["ip", "-n", ns_a, "link", "set", a, "up"])
        run(["ip", "-n", ns_b, "link", "set", b, "up"])

    def rps(self, ns: str, ifname: str, cpu: int) -> None:
        """Receive processing of ifname on cpu (RPS), whichever CPU sent the frame."""
        self.exec(ns, "sh", "-c",
                  f"echo {1 << cpu:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus")

    def spawn(self, ns: str, cmd: Sequence[str], cpu: int | None = None,
              **kw: Any) -> subprocess.Popen[Any]:
        """Start cmd in ns (pinned to cpu); killed by PID at the end."""
        full = ["ip", "netns", "exec", ns]
        if cpu is not None:
            full += ["taskset", "-c", str(cpu)]
        proc = subprocess.Popen(full + list(cmd), **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
             timeout: float = 5.0) -> int:
        """Signal proc, wait, KILL if it will not go; returns its exit status."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)
        return int(proc.returncode)

    def holder(self, ns: str) -> int:
        """A process that sleeps in ns: /proc/<its pid>/net/dev is ns's counters."""
        proc = self.spawn(ns, ["sleep", "86400"], stdout=subprocess.DEVNULL)
        return proc.pid

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, timeout=3.0)
        for ns in reversed(self.namespaces):
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            proc = run(["ip", "netns", "del", ns], check=False)
            if proc.returncode != 0 and "No such file" not in proc.stderr:
                note(f"benchmark: could not delete namespace {ns}: {proc.stderr.strip()}")
        self.namespaces.clear()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def net_dev(pid: int) -> dict[str, dict[str, int]]:
    """Interface counters of the namespace process pid lives in."""
    out: dict[str, dict[str, int]] = {}
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f.readlines()[2:]:
            name, data = line.split(":", 1)
            v = [int(x) for x in data.split()]
            out[name.strip()] = {"rx_packets": v[1], "rx_dropped": v[3],
                                 "tx_packets": v[9], "tx_dropped": v[11]}
    return out


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads, in seconds.

    From the scheduler's nanosecond counts (/proc/PID/task/*/schedstat) where
    the kernel keeps them; utime + stime, in clock ticks, otherwise.
    """
    total_ns, seen = 0, False
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError), \
                    open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total_ns += int(f.read().split()[0])
                seen = True
    if seen:
        return total_ns / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_bridge(sb: Sandbox, ns: str, nmbridge: str, work: Path, name: str, busy_poll: bool,
                 cpu: int | None, log: Any) -> subprocess.Popen[Any]:
    """nmbridge between packet:d0 and packet:d1 in ns (pinned to cpu), once it runs: its
    stats file exists."""
    cmd = [nmbridge, "-i", "packet:d0", "-i", "packet:d1", "--no-live",
           "--stats-dir", str(work), "--name", name]
    if busy_poll:
        cmd.append("--busy-poll")
    proc = sb.spawn(ns, cmd, cpu=cpu, stdout=log, stderr=subprocess.STDOUT)
    stats = work / f"{name}.stats"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nmbridge exited with status {proc.returncode}")
        return stats.exists()

    wait_for(ready, 15, "nmbridge to start")
    return proc


def main_of(script: str, main: Any) -> None:
    """Run a benchmark's main(); a RuntimeError is one line and status 1."""
    try:
        sys.exit(main())
    except RuntimeError as exc:
        note(f"{Path(script).stem}: {exc}")
        sys.exit(1)


def parse_modes(parser: Any, text: str, known: Sequence[str]) -> list[str]:
    """The comma-separated modes of --modes, each one of `known` (a usage error if not)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in known]
    if bad or not modes:
        parser.error(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(known)}")
    return modes

"""`nmbridge fk0`, the installed command, against the fake netmap module.

The bridge runs in a network namespace of its own where fk0 is a real veth
(so that the command finds the interface and watches its link through
netlink), with the shim preloaded playing netmap for it. Frames are put on
the fake wire and into the fake host stack through the shim's control socket,
and read back on the other side.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from typing import Any

import pytest
from namespaces import ip

FakeKernel = Any  # the `fake` fixture's class (tests/kernel/conftest.py)

pytestmark = pytest.mark.root

ETH_DST = bytes.fromhex("020000000002")
ETH_SRC = bytes.fromhex("020000000001")


def make_frame(i: int, size: int, tag: bytes) -> bytes:
    body = ETH_DST + ETH_SRC + b"\x88\xb5" + b"%s-%06d-" % (tag, i)
    return body + bytes((i + k) % 251 for k in range(size - len(body)))


class RunningBridge:
    """An `nmbridge` process: its stderr lines as they come, with arrival times."""

    def __init__(self, fake: FakeKernel, args: list[str], netns: str,
                 env: dict[str, str] | None = None) -> None:
        self.fake = fake
        self.proc = fake.popen_cli(args, netns=netns, env=env)
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stdout = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()

    def wait_line(self, pattern: str, count: int = 1, timeout: float = 10.0) -> float:
        """Wait until `count` stderr lines match; the arrival time of the last one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [t for t, line in self.lines if re.search(pattern, line)]
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line /{pattern}/ (x{count}):\n{self.stderr()}")
                self._cond.wait(min(left, 0.1))

    def matching(self, pattern: str) -> list[str]:
        with self._cond:
            return [line for _t, line in self.lines if re.search(pattern, line)]

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(line for _t, line in self.lines)

    def wait_ready(self, nic: str = "fk0", users: int = 2) -> None:
        self.wait_line(r"nmbridge: netmap:")
        deadline = time.monotonic() + 10
        while self.fake.ctl_request(f"users {nic}") != str(users):
            assert time.monotonic() < deadline, f"the bridge never opened {nic}\n{self.stderr()}"
            time.sleep(0.02)

    def inject(self, nic: str, side: str, frame: bytes) -> None:
        reply = self.fake.ctl_request(f"inject {nic} {side} {frame.hex()}")
        assert reply == "ok", f"inject {nic} {side}: {reply}"

    def read(self, nic: str, side: str, count: int, timeout_ms: int = 3000) -> list[bytes]:
        out = []
        for _ in range(count):
            reply = self.fake.ctl_request(f"read {nic} {side} {timeout_ms}")
            if not reply.startswith("frame "):
                break
            out.append(bytes.fromhex(reply[6:]))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> float:
        """Send sig; the seconds until the process exited (fails after timeout)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"nmbridge did not stop within {timeout} s of signal {sig}\n"
                        f"{self.stderr()}")
        elapsed = time.monotonic() - t0
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()
        return elapsed

    def kill(self) -> None:
        """End the process if it still runs; its stderr goes to the test's report."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        print(f"--- nmbridge status {self.proc.returncode}, stderr:\n{self.stderr()}")


def stats_json(fake: FakeKernel, name: str) -> dict[str, Any]:
    run = fake.run_cli(["stats", name, "--json"], env={"LD_PRELOAD": ""})
    assert run.returncode == 0, run.describe()
    return json.loads(run.stdout)["instances"][0]


def wait_counters(fake: FakeKernel, name: str, want: dict[str, int],
                  timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        inst = stats_json(fake, name)
        got = {d["label"]: d["frames"] for d in inst["directions"]}
        if got == want or time.monotonic() > deadline:
            assert got == want, inst
            return inst
        time.sleep(0.1)


def live_shim_stats(fake: FakeKernel) -> dict[str, int]:
    """The shim's counters in the running process; link_blocks counts a blocked call
    from the moment it blocks (the log has it only once it returns)."""
    reply = fake.ctl_request("stats")
    return {k: int(v) for k, v in (w.split("=") for w in reply.split())}


def shim_exit(fake: FakeKernel) -> dict[str, int]:
    """The counters the shim wrote when the bridge process exited."""
    exits = fake.exit_stats()
    assert exits, f"the shim logged no exit line:\n{fake.log.read_text()}"
    return {k: int(v) for k, v in exits[-1].items() if k not in ("event", "t", "pid")}


def totals(stderr: str) -> dict[str, tuple[int, int, int]]:
    line = [x for x in stderr.splitlines() if "nmbridge: stopped" in x]
    assert len(line) == 1, stderr
    return {d: (int(f), int(b), int(x)) for d, f, b, x in re.findall(
        r"(\S+->\S+) (\d+) frames (\d+) bytes (\d+) dropped", line[0])}


def test_frames_cross_both_ways_and_are_counted(fake: FakeKernel, nic_netns: str) -> None:
    bridge = RunningBridge(fake, ["fk0", "--no-live", "-v"], nic_netns)
    try:
        bridge.wait_ready()
        to_host = [make_frame(i, 60 + i % 40, b"w2h") for i in range(300)]
        to_wire = [make_frame(i, 1514 - i, b"h2w") for i in range(200)]
        for f in to_host:
            bridge.inject("fk0", "wire", f)
        got_host = bridge.read("fk0", "host", len(to_host))
        for f in to_wire:
            bridge.inject("fk0", "host", f)
        got_wire = bridge.read("fk0", "wire", len(to_wire))
        assert got_host == to_host
        assert got_wire == to_wire
        inst = wait_counters(fake, "fk0", {"wire->host": 300, "host->wire": 200})
        assert inst["zero_copy"] is True and inst["state"] == "running"
        bytes_by = {d["label"]: d["bytes"] for d in inst["directions"]}
        assert bytes_by == {"wire->host": sum(map(len, to_host)),
                            "host->wire": sum(map(len, to_wire))}
        # nothing else left either side: every frame crossed exactly once
        assert bridge.read("fk0", "host", 1, timeout_ms=200) == []
        assert bridge.read("fk0", "wire", 1, timeout_ms=200) == []
        elapsed = bridge.stop()
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert elapsed < 2.0
    assert "Traceback" not in bridge.stderr()
    assert re.search(r"netmap:fk0 <-> netmap:fk0\^, zero-copy", bridge.stderr())
    # the veth's offloads were on: off while it bridges (test_kernel_offloads.py)
    assert len(bridge.matching(r"^nmbridge: fk0: offloads off for netmap mode")) == 1
    assert totals(bridge.stderr()) == {
        "wire->host": (300, sum(map(len, to_host)), 0),
        "host->wire": (200, sum(map(len, to_wire)), 0),
    }
    regs = fake.events("register")
    assert [(r["name"], r["mode"], r["flags"]) for r in regs] == [
        ("fk0", "1", "0x0"), ("fk0", "2", "0x0")]
    assert regs[0]["mem"] == regs[1]["mem"]
    ex = shim_exit(fake)
    # one mapping for both ports, given back; every buffer accounted for; the rings
    # were only ever handed back in a state the kernel accepts
    assert ex["mmaps"] == 1 and ex["munmaps"] == 1 and ex["live_maps"] == 0
    assert ex["open_fds"] == 0
    for key in ("audit_errors", "bad_slots", "reinits", "tail_restored", "link_blocks"):
        assert ex[key] == 0, (key, ex)


def test_host_rings_alone_are_warned_about(fake: FakeKernel, nic_netns: str) -> None:
    run = fake.run_cli(["-i", "netmap:fk0^", "-i", "netmap:pa{1", "--duration", "0.3",
                        "--no-live"], netns=nic_netns, timeout=15)
    assert run.returncode == 0, run.describe()
    warnings = [x for x in run.stderr.splitlines() if "warning" in x]
    assert warnings == [
        "nmbridge: warning: netmap:fk0^: the host rings alone see no traffic unless the NIC "
        "rings of fk0 are in netmap mode too (bridge it with netmap:fk0)"], run.stderr
    assert "(the ports do not share memory)" in run.stderr


LINK_ENV = {"FAKENETMAP_LINK_SYSFS": "1", "FAKENETMAP_DOWN_BLOCK_MS": "4000"}


def link_blocks_entered_after(fake: FakeKernel, t: float) -> list[dict[str, str]]:
    """Calls that met a down link and were made after t (CLOCK_MONOTONIC seconds)."""
    return [e for e in fake.events("link-block") if float(e["entered"]) > t]


def test_link_down_at_start_keeps_out_of_the_kernel(fake: FakeKernel, nic_netns: str) -> None:
    ip("-n", nic_netns, "link", "set", "fk0", "down")
    bridge = RunningBridge(fake, ["fk0", "--no-live"], nic_netns, env=LINK_ENV)
    try:
        t_down = bridge.wait_line(r"link of fk0 is down")
        bridge.wait_ready()
        time.sleep(0.6)  # a bridge that polls a down port would now be stuck in the kernel
        assert live_shim_stats(fake)["link_blocks"] == 0, "a call met the down link"
        assert stats_json(fake, "fk0")["state"] == "link-wait"
        elapsed = bridge.stop()
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert elapsed < 1.5, f"SIGTERM took {elapsed:.2f} s while the link was down"
    assert len(bridge.matching(r"link of fk0 is down")) == 1, bridge.stderr()
    assert t_down > 0
    assert shim_exit(fake)["link_blocks"] == 0


def test_link_down_while_running_waits_and_resumes(fake: FakeKernel, nic_netns: str) -> None:
    bridge = RunningBridge(fake, ["fk0", "--no-live"], nic_netns, env=LINK_ENV)
    try:
        bridge.wait_ready()
        first = [make_frame(i, 100, b"before") for i in range(5)]
        for f in first:
            bridge.inject("fk0", "wire", f)
        assert bridge.read("fk0", "host", 5) == first

        ip("-n", nic_netns, "link", "set", "fk0", "down")
        t_told = bridge.wait_line(r"link of fk0 is down")
        time.sleep(0.8)
        ip("-n", nic_netns, "link", "set", "fk0", "up")
        bridge.wait_line(r"link of fk0 is up")
        # a call the loop was already in when the link went down blocks until it is
        # up (the real module does the same, netmap-abi.md); none may start after the
        # bridge knew
        late = link_blocks_entered_after(fake, t_told)
        assert late == [], late

        after = [make_frame(i, 200, b"after") for i in range(5)]
        for f in after:
            bridge.inject("fk0", "wire", f)
        assert bridge.read("fk0", "host", 5) == after
        back = [make_frame(i, 90, b"back") for i in range(3)]
        for f in back:
            bridge.inject("fk0", "host", f)
        assert bridge.read("fk0", "wire", 3) == back
        wait_counters(fake, "fk0", {"wire->host": 10, "host->wire": 3})
        elapsed = bridge.stop()
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert elapsed < 2.0
    assert len(bridge.matching(r"link of fk0 is down")) == 1, bridge.stderr()
    assert len(bridge.matching(r"link of fk0 is up")) == 1, bridge.stderr()


def test_link_down_then_sigterm_stops_promptly(fake: FakeKernel, nic_netns: str) -> None:
    # --busy-poll: the loop is rarely inside the kernel when the link goes down. A
    # call it is inside then blocks until the link is up (the fake bounds that at
    # FAKENETMAP_DOWN_BLOCK_MS per port); nothing can end it sooner, not even SIGTERM
    block_ms = 1500
    env = {**LINK_ENV, "FAKENETMAP_DOWN_BLOCK_MS": str(block_ms)}
    bridge = RunningBridge(fake, ["fk0", "--no-live", "--busy-poll"], nic_netns, env=env)
    try:
        bridge.wait_ready()
        ip("-n", nic_netns, "link", "set", "fk0", "down")
        t_told = bridge.wait_line(r"link of fk0 is down")
        time.sleep(0.5)
        blocked = live_shim_stats(fake)["link_blocks"]
        elapsed = bridge.stop(timeout=10.0)
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert link_blocks_entered_after(fake, t_told) == [], fake.events("link-block")
    assert len(bridge.matching(r"link of fk0 is down")) == 1, bridge.stderr()
    if blocked:
        # one poll over both ports was in the kernel: it returns after both bounds,
        # and then the loop stops without entering the kernel again
        assert elapsed < 2 * block_ms / 1000 + 1.0
    else:
        assert elapsed < 1.5, f"SIGTERM took {elapsed:.2f} s while the link was down"


def test_nic_deleted_while_running_ends_the_bridge(fake: FakeKernel, nic_netns: str) -> None:
    bridge = RunningBridge(fake, ["fk0", "--no-live"], nic_netns, env=LINK_ENV)
    try:
        bridge.wait_ready()
        bridge.inject("fk0", "wire", make_frame(0, 100, b"before"))
        assert len(bridge.read("fk0", "host", 1)) == 1
        ip("-n", nic_netns, "link", "del", "fk0")
        bridge.proc.wait(timeout=10)
    finally:
        bridge.kill()
    err = bridge.stderr()
    assert bridge.proc.returncode == 1, err
    assert "Traceback" not in err
    assert any("fk0" in line and "went away" in line for line in err.splitlines()), err


def test_jumbo_chains_between_native_nics_reach_the_count(fake: FakeKernel,
                                                          nic_netns: str) -> None:
    """`nmbridge -i netmap:fk0 -i netmap:fk1 --count N` between two NICs played as
    native drivers with 64-slot TX rings: jumbo frames (chains of 5 slots) keep
    waiting on TX rings with a few free slots, which poll() never reclaims on such a
    driver; the loop forces the reclaim, so every frame crosses and the bridge ends."""
    n = 120
    sizes = (9000, 60, 9000, 3000, 9000)
    to_fk1 = [make_frame(i, sizes[i % len(sizes)], b"ab") for i in range(n)]
    to_fk0 = [make_frame(i, sizes[(i + 2) % len(sizes)], b"ba") for i in range(n)]
    # the bridge ends by itself at the count: its wire must outlive it for the reads
    env = {"FAKENETMAP_NATIVE": "fk0/64,fk1/64", "FAKENETMAP_DRAIN_MS": "10000"}
    bridge = RunningBridge(fake, ["-i", "netmap:fk0", "-i", "netmap:fk1", "--no-live",
                                  "--count", str(2 * n)], nic_netns, env=env)
    try:
        bridge.wait_ready("fk0", users=1)
        bridge.wait_ready("fk1", users=1)
        for f, g in zip(to_fk1, to_fk0):
            bridge.inject("fk0", "wire", f)
            bridge.inject("fk1", "wire", g)
        got_fk1 = bridge.read("fk1", "wire", n)
        got_fk0 = bridge.read("fk0", "wire", n)
        try:
            bridge.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"nmbridge never reached --count {2 * n}\n{bridge.stderr()}")
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert sorted(got_fk1) == sorted(to_fk1)
    assert sorted(got_fk0) == sorted(to_fk0)
    assert totals(bridge.stderr()) == {
        "netmap:fk0->netmap:fk1": (n, sum(map(len, to_fk1)), 0),
        "netmap:fk1->netmap:fk0": (n, sum(map(len, to_fk0)), 0),
    }


def test_loopback_sends_the_wire_back_to_the_wire(fake: FakeKernel, nic_netns: str) -> None:
    """netmap's `bridge -L -i netmap:fk0`: one port opened twice, what arrives on the
    wire goes back out of it, each frame once, in order; the host stack sees nothing."""
    bridge = RunningBridge(fake, ["-L", "-i", "netmap:fk0", "--no-live"], nic_netns)
    try:
        bridge.wait_ready(users=2)
        sent = [make_frame(i, 60 + i % 50, b"loop") for i in range(200)]
        for f in sent:
            bridge.inject("fk0", "wire", f)
        assert bridge.read("fk0", "wire", len(sent)) == sent
        assert bridge.read("fk0", "wire", 1, timeout_ms=200) == []
        assert bridge.read("fk0", "host", 1, timeout_ms=200) == []
        bridge.stop()
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert re.search(r"netmap:fk0 <-> netmap:fk0, zero-copy", bridge.stderr())
    forwarded = sum(f for f, _b, _d in totals(bridge.stderr()).values())
    assert forwarded == len(sent)
    regs = fake.events("register")
    assert [(r["name"], r["mode"]) for r in regs] == [("fk0", "1"), ("fk0", "1")]


@pytest.mark.parametrize("args", [
    ["-v", "-w", "1", "-b", "64", "-c", "-i", "netmap:fk0"],  # bridge's -i form, one NIC
    ["-c", "netmap:fk0", "netmap:fk0", "64"],  # its IFA [IFB [BURST]] form, IFB = IFA
])
def test_a_netmap_bridge_command_line_bridges_the_nic_and_its_host_stack(
        fake: FakeKernel, nic_netns: str, args: list[str]) -> None:
    bridge = RunningBridge(fake, [*args, "--no-live"], nic_netns)
    try:
        bridge.wait_ready()
        frames = [make_frame(i, 60 + i, b"nmb") for i in range(100)]
        for f in frames:
            bridge.inject("fk0", "wire", f)
        assert bridge.read("fk0", "host", len(frames)) == frames
        bridge.stop()
    finally:
        bridge.kill()
    assert bridge.proc.returncode == 0, bridge.stderr()
    assert re.search(r"netmap:fk0 <-> netmap:fk0\^, copy \(--no-zero-copy\), burst 64",
                     bridge.stderr())
    assert totals(bridge.stderr())["wire->host"][0] == len(frames)

"""Faults, each through the installed `nmbridge` in a subprocess, in throw-away
namespaces (nmbridge.lab.sandbox: a veth "wire" and a TAP "host stack", 198.18.0.0/15):

- the wire interface deleted, the TAP removed while running: one clear line, exit 1,
  the stats file removed;
- a link down and up under traffic: the bridge waits (state link-wait), goes on, and
  every frame is delivered or counted; SIGTERM while the link is down: the frames that
  waited for it are counted as dropped, not lost; and what already waited in an
  emulated port's socket (a packet: socket's ring, a TAP's queue) at the stop too;
- SIGTERM under load: the TX rings flushed (every frame nmbridge moved left it), exit
  0 within STOP_BOUND seconds (measured and printed);
- SIGKILL, then a restart under the same --name: the stale stats file is shown as
  stale by `nmbridge stats` and replaced;
- a second instance on a port in use: a clear "busy" error (exit 6), the first unharmed;
- a stats directory that cannot be written, or no privileges: a clear error before any
  port is opened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_lab import NMBRIDGE, PAYLOAD_RANGE, Lab, Ledger, Stream, account, delta, wait_for

from nmbridge.engine import DEFAULT_SLOTS
from nmbridge.lab import traffic
from nmbridge.lab.sandbox import Sandbox

pytestmark = pytest.mark.root

#: SIGTERM to exit, under load: the issue says within 1 s; the loop returns to Python
#: every 200 ms and the flush takes a few ms (measured: about 0.3 s on 2 busy cores)
STOP_BOUND = 1.0
#: an interface deleted to the bridge's exit: the loop sees it within its 200 ms budget
GONE_BOUND = 2.0
PACED_FPS = 4000
#: seconds, only against hangs: waiting for a state or for frames on a loaded machine
WAIT_TIMEOUT = 30.0
#: frames beyond what the bridge's RX and TX rings hold (DEFAULT_SLOTS - 1 each), left
#: waiting in the socket: fewer than a TAP queues (500)
SOCKET_LEFT = 300


@pytest.fixture
def lab(sb: Sandbox) -> Lab:
    return Lab(sb)


def error_lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith("nmbridge: error: ")]


def assert_one_clear_error(log: str, expected: str) -> None:
    assert "Traceback" not in log, log
    assert error_lines(log) == [f"nmbridge: error: {expected}"], log


def hop(ledgers: list[Ledger], label: str, name: str) -> tuple[int, dict[str, int]]:
    ledger = next(x for x in ledgers if x.label == label)
    _what, n, terms = next(h for h in ledger.hops if h[0] == name)
    return n, terms


def assert_balanced(ledgers: list[Ledger], hops: dict[str, tuple[str, ...]]) -> None:
    """The named hops of each direction: in = out + counted drops, exactly."""
    books = "\n".join(x.describe() for x in ledgers)
    for label, names in hops.items():
        for name in names:
            n, terms = hop(ledgers, label, name)
            assert n == sum(terms.values()), f"{label} / {name} does not balance:\n{books}"


# ------------------------------------------------------------------ interfaces vanish


@pytest.mark.parametrize("which", ["veth", "tap", "tap-made-by-nmbridge"])
def test_interface_removed_while_forwarding(lab: Lab, which: str) -> None:
    sb = lab.sb
    tap = "nmbx0" if which == "tap-made-by-nmbridge" else sb.tap_if
    bridge = lab.start_bridge(name="gone", ports=(sb.wire_port, f"tap:{tap}"))
    assert bridge.stats_path.exists()
    # frames on the way while it goes: a sender on the wire, no receiver needed
    (wire_to_host, _back) = lab.streams()
    sender = lab.start_sender(wire_to_host, seconds=10, rate=PACED_FPS)
    time.sleep(0.5)
    started = time.monotonic()
    if which == "veth":
        sb.delete_link(sb.wire_ns, sb.wire_if)  # the pair goes: nmbv0 with it
    else:
        sb.delete_link(sb.bridge_ns, tap)
    status = bridge.wait_exit(10)
    took = time.monotonic() - started
    sb.stop(sender)
    port = sb.wire_port if which == "veth" else f"tap:{tap}"
    print(f"\nfaults: {which} removed: exit {status} after {took:.2f} s")
    assert status == 1, bridge.log()
    assert_one_clear_error(bridge.log(), f"{port}: the interface went away")
    assert not bridge.stats_path.exists()
    assert took < GONE_BOUND


# ------------------------------------------------------------------ links


def test_link_down_and_up_under_traffic(lab: Lab) -> None:
    sb = lab.sb
    bridge = lab.start_bridge(name="flap")
    streams = lab.streams()
    before = lab.counters()
    states: list[str] = []

    def flap() -> None:
        time.sleep(1)
        sb.set_link(sb.bridge_ns, sb.veth_if, False)
        states.append(wait_for("state link-wait", lambda: (
            s := bridge.stats()["state"]) == "link-wait" and s, 5, bridge.proc, bridge.log))
        time.sleep(1)
        sb.set_link(sb.bridge_ns, sb.veth_if, True)
        states.append(wait_for("state running", lambda: (
            s := bridge.stats()["state"]) == "running" and s, 5, bridge.proc, bridge.log))

    lab.run_round(streams, 4, count=4 * PACED_FPS, rate=PACED_FPS, idle=2, during=flap)
    inst = bridge.settled_stats()
    ledgers = account(lab, streams, inst, delta(lab.counters(), before))
    books = "\n".join(x.describe() for x in ledgers)
    print(f"\nfaults: link down 1 s under {PACED_FPS} fps each way:\n{books}")
    assert states == ["link-wait", "running"]
    for ledger in ledgers:
        assert ledger.unaccounted() == {}, books
    # the down second cost frames, and each is counted where it was dropped
    for s in streams:
        sent, terms = hop(ledgers, s.label, "sent = delivered + drops")
        assert terms["delivered"] < sent, books
    log = bridge.log()
    assert "link of nmbv0 is down" in log and "link of nmbv0 is up: forwarding" in log

    # and it goes on: a second round loses nothing
    again = [Stream(s.label, s.src_ns, s.dst_ns, s.dst_addr, s.port + 10) for s in streams]
    lab.run_round(again, 4, count=2 * PACED_FPS, rate=PACED_FPS, idle=1)
    for s in again:
        assert (s.sent, s.unique, s.damaged()) == (2 * PACED_FPS, 2 * PACED_FPS, {
            "duplicates": 0, "out_of_order": 0, "corrupt": 0, "foreign": 0}), s.recvs
    status, _took = bridge.stop()
    assert status == 0, bridge.log()


def test_sigterm_while_a_link_is_down_counts_what_waited(lab: Lab) -> None:
    """Frames that wait on the ring of a port whose link is down cannot be flushed: at
    the stop they are counted as dropped (they used to vanish uncounted).

    The link goes down while the bridge is stopped (SIGSTOP), never under one of its
    send()s: a frame the kernel's direct transmit refuses as the link goes down
    (__dev_direct_xmit: not running) is counted in nmbv0's tx_dropped, yet handed back
    to the packet socket's TX ring to send again (tpacket_snd); at the stop nmbridge
    counts it as drop_tx too, and the books would count it twice. On a busy machine
    the link's going down takes long enough for a send() to fall into it."""
    sb = lab.sb
    bridge = lab.start_bridge(name="down")
    bridge.hold_stats()
    streams = lab.streams()[1:]  # host -> wire: towards the link that goes down
    before = lab.counters()
    stopped: list[tuple[int, float]] = []

    def waiting_for_the_link() -> int:
        """Frames nmbridge moved to the TX side of packet:nmbv0 that did not leave it."""
        (tx,) = [r["frames"] for r in bridge.stats()["rings"]
                 if r["port_name"] == sb.wire_port and r["direction"] == "tx"]
        out = delta(lab.links(), before["links"])
        return int(tx) - out[sb.wire_if]["rx_packets"] - out[sb.veth_if]["tx_dropped"]

    def down_then_stop() -> None:
        wire_rx = before["links"][sb.wire_if]["rx_packets"]
        wait_for("frames on the wire", lambda: lab.links()[sb.wire_if]["rx_packets"] > wire_rx,
                 WAIT_TIMEOUT, bridge.proc, bridge.log)
        with bridge.paused():
            sb.set_link(sb.bridge_ns, sb.veth_if, False)
        wait_for("state link-wait", lambda: bridge.stats()["state"] == "link-wait",
                 WAIT_TIMEOUT, bridge.proc, bridge.log)
        wait_for("frames to wait for the link", lambda: waiting_for_the_link() > 0,
                 WAIT_TIMEOUT, bridge.proc, bridge.log)
        stopped.append(bridge.stop())
        for s in streams:
            assert s.sender is not None
            sb.stop(s.sender)  # it reports what it sent

    # the sender goes on until the stop, however slow the machine
    lab.run_round(streams, WAIT_TIMEOUT, count=int(WAIT_TIMEOUT * PACED_FPS), rate=PACED_FPS,
                  idle=1, during=down_then_stop)
    kernel = delta(lab.counters(), before)
    inst = bridge.final_stats()
    ledgers = account(lab, streams, inst, kernel)
    books = "\n".join(x.describe() for x in ledgers)
    status, took = stopped[0]
    print(f"\nfaults: SIGTERM with nmbv0 down: exit {status} after {took * 1000:.0f} ms\n{books}")
    assert status == 0, bridge.log()
    assert took < STOP_BOUND
    direction = inst["directions"][1]  # tap -> packet
    assert direction["drops_by_reason"]["tx"] > 0, books  # they waited on its TX ring
    assert f"{direction['drops']} frames could not be forwarded before the stop" in \
        bridge.log()
    assert_balanced(ledgers, {"host->wire": ("into nmbridge", "through nmbridge",
                                             "out of nmbridge")})


@pytest.mark.parametrize("source", ["packet", "tap"])
def test_frames_still_in_a_socket_at_the_stop_are_counted(lab: Lab, source: str) -> None:
    """What the kernel already put in an emulated port's socket (a packet: socket's
    ring, a TAP's queue) and the bridge could not take by the stop is counted as drop_rx
    (it used to go with the socket, uncounted). The other port's link is down: the
    bridge's rings fill, the rest waits in the socket until SIGTERM."""
    sb = lab.sb
    bridge = lab.start_bridge(name="queued")
    bridge.hold_stats()
    wire_to_host, host_to_wire = lab.streams()
    if source == "packet":
        stream, down, rx_port = wire_to_host, sb.tap_if, sb.wire_port
    else:
        stream, down, rx_port = host_to_wire, sb.veth_if, sb.host_port
    before = lab.counters()
    sb.set_link(sb.bridge_ns, down, False)
    wait_for("state link-wait", lambda: bridge.stats()["state"] == "link-wait", 5,
             bridge.proc, bridge.log)
    count = 2 * (DEFAULT_SLOTS - 1) + SOCKET_LEFT
    send = sb.popen(stream.src_ns, traffic.command(
        "udp-send", stream.dst_addr, "--count", str(count), "--port", str(stream.port),
        "--rate", f"{2 * PACED_FPS}", "--size-range", PAYLOAD_RANGE, "--timeout", "30"),
        stdout=subprocess.PIPE, text=True)
    stream.sends.append(traffic.read_report(send, 60))
    # the bridge takes what its rings hold (txfull goes on counting); the rest waits
    seen: list[list[int]] = []

    def rings_full() -> bool:
        seen.append([r["frames"] + r["drops"] for r in bridge.stats()["rings"]])
        return len(seen) > 1 and seen[-1] == seen[-2] and sum(seen[-1]) > 0

    wait_for("the bridge's rings to fill", rings_full, 10, bridge.proc, bridge.log, step=0.3)
    status, took = bridge.stop()
    kernel = delta(lab.counters(), before)
    inst = bridge.final_stats()
    (ledger,) = account(lab, [stream], inst, kernel)
    books = ledger.describe()
    print(f"\nfaults: SIGTERM with {count} frames sent to {rx_port}, {down} down: exit "
          f"{status} after {took * 1000:.0f} ms\n{books}")
    assert status == 0, bridge.log()
    assert took < STOP_BOUND
    assert stream.sent == count, stream.sends
    # delivered (none) + every drop counted = what the kernel handed to the socket
    assert ledger.unaccounted() == {}, books
    (rx_ring,) = [r for r in inst["rings"]
                  if r["port_name"] == rx_port and r["direction"] == "rx"]
    assert rx_ring["drops_by_reason"]["rx"] > DEFAULT_SLOTS - 1, books  # not only the ring's
    direction = next(d for d in inst["directions"] if d["label"].startswith(rx_port))
    assert f"{direction['drops']} frames could not be forwarded before the stop" in \
        bridge.log()


# ------------------------------------------------------------------ signals


def test_sigterm_under_load_flushes_and_exits_in_time(lab: Lab) -> None:
    bridge = lab.start_bridge(name="term")
    bridge.hold_stats()
    streams = lab.streams()
    before = lab.counters()
    stopped: list[tuple[int, float]] = []

    def stop_under_load() -> None:
        time.sleep(2)
        stopped.append(bridge.stop())

    lab.run_round(streams, 3, count=1_000_000, rate=0, idle=1, during=stop_under_load)
    kernel = delta(lab.counters(), before)
    inst = bridge.final_stats()
    ledgers = account(lab, streams, inst, kernel)
    books = "\n".join(x.describe() for x in ledgers)
    status, took = stopped[0]
    print(f"\nfaults: SIGTERM under load: exit {status} after {took * 1000:.0f} ms "
          f"(bound {STOP_BOUND * 1000:.0f} ms)\n{books}")
    assert status == 0, bridge.log()
    assert took < STOP_BOUND, f"{took:.3f} s"
    assert not bridge.stats_path.exists()
    assert inst["state"] == "stale" and all(d["frames"] > 0 for d in inst["directions"])
    # flushed: every frame nmbridge moved to a TX ring left it (or is counted); and what
    # it read from the TAP is all accounted for (the TAP counts only what was read)
    assert_balanced(ledgers, {"wire->host": ("through nmbridge", "out of nmbridge"),
                              "host->wire": ("into nmbridge", "through nmbridge",
                                             "out of nmbridge")})
    # the totals line says what the stats file says
    assert {label: (frames, dropped) for label, (frames, _b, dropped)
            in bridge.totals().items()} == {
        d["label"]: (d["frames"], d["drops"]) for d in inst["directions"]}


def test_sigkill_then_restart_under_the_same_name(lab: Lab) -> None:
    first = lab.start_bridge(name="k")
    first.proc.send_signal(signal.SIGKILL)
    assert first.wait_exit(10) == -signal.SIGKILL
    assert first.stats_path.exists()  # nothing ran to remove it

    shown = subprocess.run([NMBRIDGE, "stats", "--stats-dir", lab.stats_dir],
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    row = next(x for x in shown.stdout.splitlines() if x.startswith("k "))
    assert row.split()[:3] == ["k", str(first.pid), "stale"]
    assert shown.stderr == (f"nmbridge: warning: 'k' is not running: {first.stats_path} was "
                            f"left by process {first.pid}, which died; these are its last "
                            "counters\n")
    doc = json.loads(subprocess.run(
        [NMBRIDGE, "stats", "k", "--json", "--stats-dir", lab.stats_dir],
        capture_output=True, text=True, timeout=30, check=True).stdout)
    assert [(i["live"], i["state"], i["pid"]) for i in doc["instances"]] == [
        (False, "stale", first.pid)]

    # the same name again: the stale file is replaced, the ports open again (the TAP,
    # the packet socket and its claim were freed by the kernel), and traffic flows
    second = lab.start_bridge(name="k")
    assert second.pid != first.pid
    inst = second.stats()
    assert (inst["pid"], inst["live"], inst["state"]) == (second.pid, True, "running")
    streams = lab.streams()
    lab.run_round(streams, 3, count=PACED_FPS, rate=PACED_FPS, idle=1)
    assert [(s.sent, s.unique) for s in streams] == [(PACED_FPS, PACED_FPS)] * 2
    status, _took = second.stop()
    assert status == 0, second.log()
    assert not second.stats_path.exists()


# ------------------------------------------------------------------ busy


def test_a_second_instance_on_a_port_in_use_is_busy(lab: Lab) -> None:
    sb = lab.sb
    first = lab.start_bridge(name="one")
    sb.ip(sb.bridge_ns, "tuntap", "add", "dev", "nmbt1", "mode", "tap")
    sb.ip(sb.bridge_ns, "link", "add", "nmbq0", "type", "veth", "peer", "name", "nmbq1")
    cases = {
        # the same packet: port (another TAP): two bridges would both forward every frame
        "packet": ((sb.wire_port, "tap:nmbt1"), "two",
                   f"{sb.wire_port}: busy: nmbridge (pid {first.pid}) is bridging nmbv0"),
        # the same TAP (another interface): the kernel refuses a second attach
        "tap": (("packet:nmbq0", sb.host_port), "three",
                f"{sb.host_port}: cannot open the TAP device: busy (another program has it "
                "open)"),
        # the same name
        "name": (("packet:nmbq0", "tap:nmbt1"), "one",
                 f"an instance named 'one' is already running (pid {first.pid}): stop it or "
                 "choose another --name"),
    }
    for what, (ports, name, message) in cases.items():
        second = lab.start_bridge(name=name, ports=ports, wait=False)
        assert second.wait_exit(15) == 6, (what, second.log())
        assert_one_clear_error(second.log(), message)
        assert first.proc.poll() is None, first.log()
    # the first is unharmed: its file is its own, and traffic goes through it once
    inst = first.stats()
    assert (inst["pid"], inst["state"]) == (first.pid, "running")
    streams = lab.streams()
    before = lab.counters()
    lab.run_round(streams, 3, count=PACED_FPS, rate=PACED_FPS, idle=1)
    ledgers = account(lab, streams, first.settled_stats(), delta(lab.counters(), before))
    books = "\n".join(x.describe() for x in ledgers)
    for s, ledger in zip(streams, ledgers):
        assert ledger.unaccounted() == {}, books
        assert (s.sent, s.unique, s.damaged()["duplicates"]) == (PACED_FPS, PACED_FPS, 0), \
            books
    status, _took = first.stop()
    assert status == 0, first.log()


# ------------------------------------------------------------------ before forwarding


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs: root's permission bypass does not write there."""
    path = tmp_path / "ro"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0755", "nmbridge-test",
                    str(path)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True, timeout=30)


def _refused_before_forwarding(lab: Lab, extra: list[str], stats_dir: str) -> tuple[int, str]:
    """Run a bridge that must fail at start; the TAP it names does not exist, so if a
    port had been opened, the TAP would exist afterwards."""
    sb = lab.sb
    argv = [NMBRIDGE, "-i", sb.wire_port, "-i", "tap:nmbnew0", "--stats-dir", stats_dir,
            "--name", "early", "--no-live", *extra]
    res = subprocess.run(["ip", "netns", "exec", sb.bridge_ns, *argv],
                         capture_output=True, text=True, timeout=30)
    assert not sb.link_exists(sb.bridge_ns, "nmbnew0"), "a port was opened"
    assert " <-> " not in res.stderr, res.stderr  # the line a forwarding bridge starts with
    return res.returncode, res.stderr


def test_stats_dir_under_a_file(lab: Lab, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, err = _refused_before_forwarding(lab, [], str(blocker / "stats"))
    assert status == 2, err
    assert_one_clear_error(err, f"cannot create the stats directory {blocker / 'stats'}: "
                                "Not a directory")


def test_stats_dir_on_a_read_only_file_system(lab: Lab, readonly_dir: Path) -> None:
    status, err = _refused_before_forwarding(lab, [], str(readonly_dir))
    assert status == 4, err
    assert_one_clear_error(err, f"cannot write in the stats directory {readonly_dir}: it is "
                                "on a read-only file system (choose a writable --stats-dir)")


def test_no_privileges_is_one_clear_line(lab: Lab, tmp_path: Path) -> None:
    """Root without capabilities (an empty bounding set): refused before anything is
    made (the stats directory neither), naming each port and what it needs."""
    sb = lab.sb
    stats_dir = tmp_path / "stats"
    argv = ["ip", "netns", "exec", sb.bridge_ns, "setpriv", "--bounding-set=-all",
            "--inh-caps=-all", "--", NMBRIDGE, "-i", sb.wire_port, "-i", "tap:nmbnew0",
            "--stats-dir", str(stats_dir), "--no-live"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert res.returncode == 4, res.stderr
    assert_one_clear_error(res.stderr, f"permission denied: {sb.wire_port} needs CAP_NET_RAW, "
                                       "tap:nmbnew0 needs CAP_NET_ADMIN (run as root, or with "
                                       "CAP_NET_ADMIN and CAP_NET_RAW)")
    assert not sb.link_exists(sb.bridge_ns, "nmbnew0")
    assert not stats_dir.exists()

"""nmbridge's kernel ports (engine._open_kernel and open_ports; kport.c,
port.c; the loop's syncs) against the fake netmap module, held to the
relations recorded on the real module (tests/data/kernel/, see
tests/data/README.md): ring order and roles in ring_ofs, host ring counts
taken from the netmap_if, nr_offset 0, fresh rings, what a sync releases and
imports, one mapping per memory region, zero-copy where memory is shared.

Each test runs a snippet of Python in a subprocess with the shim preloaded
(conftest.DRIVER); the values compared with the records are those that do not
depend on open order or boot (the records' README says which do).
"""

from __future__ import annotations

from kernel_snippets import (
    BRIDGE_COUNT,
    OUTCOME_FOR_ERRNO,
    PIPE_PAIR,
    VALE_PAIR,
    WIRE_HOST,
    FakeKernel,
    assert_like_record,
    assert_requests,
    bound_rings,
    check_bridge_count,
    check_pipe_pair,
    check_vale_pair,
    check_walk,
    check_wire_host,
    golden,
    golden_records,
    nif_counts,
    open_each,
    ring_roles,
)

NAMES = {"NMB_T_NIC": "fk0", "NMB_T_PIPE": "pa", "NMB_T_VALE": "vale0"}

def test_ring_roles_read_the_records_as_they_were_written() -> None:
    """The role of each ring_ofs entry comes from the netmap_if's counts in the
    order nic-tx, host-tx, nic-rx, host-rx: true of every record."""
    names = ["open_two_fds.json", "open_v0_modes.json", "open_host_rings.json",
             "open_pipes.json", "open_vale.json", "open_exclusive.json", "open_errors.json"]
    records = [r for n in names for r in golden_records(golden(n))]
    assert len(records) > 20
    for rec in records:
        nif = rec["netmap_if"]
        roles = ring_roles(nif_counts(nif))
        assert roles == nif["ring_ofs_roles"]
        assert len(nif["ring_ofs"]) == nif["ring_ofs_count"] == len(roles)
        for ring in rec["rings"]:
            assert ring["role"] == roles[ring["ring_ofs_index"]]
            assert ring["dir"] == (1 if "_tx[" in ring["role"] else 0)  # 1 is TX


def test_wire_and_host_share_one_region_and_one_mapping(fake: FakeKernel) -> None:
    run = fake.run_py(WIRE_HOST + "\nresult(fake=fake_stats())\n", env=NAMES)
    r = run.result
    check_wire_host(r)
    rec = golden("open_two_fds.json")
    wire, host = r["walks"]
    assert_like_record(wire, rec["wire_fd"], "wire")
    host_rec = {**rec["host_fd"], **rec["comparison"]["host_fd_after_own_mmap"]}
    assert_like_record(host, host_rec, "host")
    assert rec["comparison"]["same_nr_mem_id"] and rec["comparison"]["same_nr_memsize"]
    assert r["host_ni_name_via_wire_mapping"] == "fk0"
    assert_requests(fake, [rec["wire_fd"], rec["host_fd"]])
    # nmbridge maps a region once and reuses the mapping for the second port
    assert r["fake"]["mmaps"] == 1 and r["fake"]["munmaps"] == 1
    assert r["fake"]["live_maps"] == 0 and r["fake"]["open_fds"] == 0


MODE_CASES = {
    "v0 NR_REG_ALL_NIC": "netmap:fk0",
    "v0 NR_REG_SW": "netmap:fk0^",
    "v0 NR_REG_NIC_SW": "netmap:fk0*",
    "v0 NR_REG_ONE_NIC ring 0": "netmap:fk0-0",
    "v0 NR_REG_ONE_SW ring 0": "netmap:fk0^0",
    "v0 NR_REG_ONE_NIC ring 1 (does not exist)": "netmap:fk0-1",
    "v0 NR_REG_ALL_NIC + NR_TX_RINGS_ONLY": "netmap:fk0/T",
    "v0 NR_REG_ALL_NIC + NR_RX_RINGS_ONLY": "netmap:fk0/R",
    "v0 NR_REG_ALL_NIC nr_mem_id=1 requested": "netmap:fk0@1",
}
#: requests no port name makes nmbridge send (the kernel refuses them: EINVAL)
NEVER_SENT = {"v0 NR_REG_DEFAULT (0)": 0, "v0 NR_REG_NULL": 7}


def test_every_mode_binds_the_rings_the_records_show(fake: FakeKernel) -> None:
    records = {rec["case"]: rec for rec in golden("open_v0_modes.json")}
    assert set(records) == set(MODE_CASES) | set(NEVER_SENT)
    out = open_each(fake, list(MODE_CASES.values()))
    accepted = []
    for (case, name), (opened, outcome, detail) in zip(MODE_CASES.items(), out):
        rec = records[case]
        assert opened == name
        assert outcome == OUTCOME_FOR_ERRNO[rec["result"]], (case, outcome, detail)
        if outcome == "ok":
            assert_like_record(detail, rec, case)
            accepted.append(rec)
    assert_requests(fake, accepted)
    for reg in fake.events("register"):
        assert int(reg["mode"]) not in NEVER_SENT.values()


def test_two_nic_rings_then_the_host_ring_in_ring_ofs_order(fake: FakeKernel) -> None:
    out = open_each(fake, ["netmap:fk1*", "netmap:fk1-1", "netmap:fk1", "netmap:fk1^"])
    every, one, wire, host = (w for _n, outcome, w in out if outcome == "ok")
    for w in (every, one, wire, host):
        check_walk(w)
        assert w["counts"] == [2, 1, 2, 1]
        # the reply and the netmap_if agree for a NIC
        assert [w["reply"][k] for k in ("nr_tx_rings", "nr_host_tx_rings", "nr_rx_rings",
                                        "nr_host_rx_rings")] == [2, 1, 2, 1]
    # a host ring's ringid is the NIC ring count plus its index (recorded)
    assert [(r["role"], r["ringid"], r["dir"]) for r in bound_rings(every)] == [
        ("nic_tx[0]", 0, 1), ("nic_tx[1]", 1, 1), ("host_tx[0]", 2, 1),
        ("nic_rx[0]", 0, 0), ("nic_rx[1]", 1, 0), ("host_rx[0]", 2, 0)]
    assert [r["role"] for r in bound_rings(one)] == ["nic_tx[1]", "nic_rx[1]"]
    assert [r["role"] for r in bound_rings(wire)] == ["nic_tx[0]", "nic_tx[1]", "nic_rx[0]",
                                                     "nic_rx[1]"]
    assert [r["role"] for r in bound_rings(host)] == ["host_tx[0]", "host_rx[0]"]
    assert every["ring_info"] == [["rx", 0, False], ["rx", 1, False], ["rx", 2, True],
                                  ["tx", 0, False], ["tx", 1, False], ["tx", 2, True]]
    assert host["ring_info"] == [["rx", 2, True], ["tx", 2, True]]


def test_nr_offset_zero_is_the_first_netmap_if(fake: FakeKernel) -> None:
    """Whichever port opens first gets nr_offset 0, and nmbridge finds its
    netmap_if at the start of the mapping."""
    out = open_each(fake, ["netmap:fk0^", "netmap:pa}3", "vale0:z"])
    for name, outcome, w in out:
        assert outcome == "ok", (name, w)
        assert w["reply"]["nr_offset"] == 0
        check_walk(w)
        assert w["bound_tx"] and w["bound_rx"]
    assert [w["ni_name"] for _n, _o, w in out] == ["fk0", "pa}3", "vale0:z"]


def test_pipe_ends_share_a_region_and_the_slave_gets_the_masters_buffers(
        fake: FakeKernel) -> None:
    r = fake.run_py(PIPE_PAIR, env=NAMES).result
    check_pipe_pair(r)
    rec = golden("open_pipes.json")
    master, slave = r["walks"]
    assert_like_record(master, rec["master_pa{1"], "master")
    assert_like_record(slave, rec["slave_pa}1"], "slave")
    # at open, each end's RX slots hold the other end's TX buffers (recorded)
    for ours, (a, b) in (((master, slave), (rec["master_pa{1"], rec["slave_pa}1"])),):
        ga = {x["role"]: [s["buf_idx"] for s in x["first_slots"]] for x in a["rings"]}
        gb = {x["role"]: [s["buf_idx"] for s in x["first_slots"]] for x in b["rings"]}
        assert ga["nic_tx[0]"] == gb["nic_rx[0]"] and ga["nic_rx[0]"] == gb["nic_tx[0]"]
        oa, ob = ours
        assert [s[0] for s in oa["tx"][0]["first"]] == [s[0] for s in ob["rx"][0]["first"]]
        assert [s[0] for s in oa["rx"][0]["first"]] == [s[0] for s in ob["tx"][0]["first"]]
    transfer = rec["transfer_master_to_slave"]
    assert transfer["slave_rx_buf_idx_equals_master_tx_buf_idx"] is True
    assert transfer["master_tx_after_txsync"]["tail"] == 1023
    assert r["master_tx_after_send"]["tail"] == transfer["master_tx_after_txsync"]["tail"]


def test_a_second_open_of_a_pipe_end_shares_the_mapping(fake: FakeKernel) -> None:
    out = open_each(fake, ["netmap:pa{1", "netmap:pa}1", "netmap:pa{1"], held=True)
    rec = golden("open_pipes.json")
    offsets = [w["reply"]["nr_offset"] for _n, _o, w in out]
    assert offsets == [rec["master_pa{1"]["nmreq_register_out"]["nr_offset"],
                       rec["slave_pa}1"]["nmreq_register_out"]["nr_offset"],
                       rec["master_pa{1_second_open_while_held"]["nmreq_register_out"][
                           "nr_offset"]]
    assert len({w["reply"]["nr_mem_id"] for _n, _o, w in out}) == 1


def test_vale_ports_have_regions_of_their_own_and_copy(fake: FakeKernel) -> None:
    r = fake.run_py(VALE_PAIR, env=NAMES).result
    check_vale_pair(r)
    rec = golden("open_vale.json")
    a, b = r["walks"]
    assert_like_record(a, rec["vale0:a"], "a")
    assert_like_record(b, rec["vale0:b"], "b")
    transfer = rec["transfer_a_to_b_broadcast"]
    want = {k: transfer["a_tx_after_txsync"][k] for k in ("head", "cur", "tail")}
    assert r["a_tx_after_txsync"] == want
    assert r["rx_flags"] == [int(s["flags"], 16) for s in transfer["b_rx_slots"]]


def test_bridge_between_a_vale_port_and_a_pipe_counts_every_frame(fake: FakeKernel) -> None:
    extra = '\nresult(fake=fake_stats(), vale_drops=stat("vale_drops"))\n'
    r = fake.run_py(BRIDGE_COUNT + extra, env=NAMES).result
    check_bridge_count(r)
    assert r["vale_drops"] == 0 and r["fake"]["bad_slots"] == 0
    assert r["fake"]["reinits"] == 0 and r["fake"]["tail_restored"] == 0


HOST_RING_STEPS = [
    ("nic_sw_host_rings_2", "netmap:fk0*@conf:host-rings=2"),
    ("one_sw_ring_1_while_first_held", "netmap:fk0^1"),
    ("sw_host_rings_3_while_first_held", "netmap:fk0^@conf:host-rings=3"),
    (None, "close"),
    ("sw_host_tx2_rx1_fresh", "netmap:fk0^@conf:host-tx-rings=2,host-rx-rings=1"),
    (None, "close"),
    ("nic_sw_zero_request_after_reset", "netmap:fk0*"),
]


def test_host_ring_counts_follow_the_records(fake: FakeKernel) -> None:
    """@conf:host-rings=N fills the register body; it takes effect only when the
    port is not open yet, and the count comes from the netmap_if."""
    rec = golden("open_host_rings.json")
    out = open_each(fake, [name for _c, name in HOST_RING_STEPS], held=True)
    cases = [c for c, _n in HOST_RING_STEPS if c is not None]
    assert len(out) == len(cases)
    for case, (name, outcome, w) in zip(cases, out):
        assert outcome == "ok", (name, w)
        assert_like_record(w, rec[case], case)
    assert_requests(fake, [rec[c] for c in cases])


#: the wire of fk1 (2 RX rings) bridged to 2 host rings: every host ring carries frames
ALL_HOST_RINGS = r'''
host, wire = open_ports("netmap:fk1^@conf:host-rings=2", "netmap:fk1")
bridge = engine.Bridge(wire, host, burst=8)
sent = [frame(i, tag=b"multi") for i in range(40)]
for f in sent:
    inject("fk1", "wire", f)
deadline = time.monotonic() + 5
while bridge.forwarded < len(sent) and time.monotonic() < deadline:
    bridge.run(50)
bridge.flush()
got = read_many("fk1", "host", len(sent))
back = [frame(i, tag=b"back") for i in range(6)]
for f in back:
    inject("fk1", "host", f)
deadline = time.monotonic() + 5
while bridge.forwarded < len(sent) + len(back) and time.monotonic() < deadline:
    bridge.run(50)
bridge.flush()
got_back = read_many("fk1", "wire", len(back))
rings = [[r.port, r.direction, r.ringid, r.host] for r in bridge.rings()]
result(sent=[f.hex() for f in sent], got=[f.hex() for f in got], back_ok=got_back == back,
       rings=rings, frames=[c["frames"] for c in bridge.counters()])
engine.close_ports([host, wire])
'''


def test_the_bridge_uses_every_host_ring(fake: FakeKernel) -> None:
    r = fake.run_py(ALL_HOST_RINGS).result
    assert sorted(r["got"]) == sorted(r["sent"])
    assert r["back_ok"] is True
    # fk1 has 2 NIC rings, so its host rings are ringid 2 and 3
    assert r["rings"] == [
        [0, "rx", 0, False], [0, "rx", 1, False], [0, "tx", 0, False], [0, "tx", 1, False],
        [1, "rx", 2, True], [1, "rx", 3, True], [1, "tx", 2, True], [1, "tx", 3, True]]
    frames = dict(zip(map(tuple, r["rings"]), r["frames"]))
    assert frames[(1, "tx", 2, True)] > 0 and frames[(1, "tx", 3, True)] > 0
    assert frames[(1, "tx", 2, True)] + frames[(1, "tx", 3, True)] == 40
    assert frames[(0, "tx", 0, False)] + frames[(0, "tx", 1, False)] == 6


#: 1023 frames wait on the wire RX ring; the fresh host TX ring takes them all at once
FRESH_TX = r'''
wire, host = open_ports("netmap:fk0", "netmap:fk0^")
fresh = ring_state(host.c.tx[0])
n = fresh["num_slots"] - 1
for i in range(n):
    inject("fk0", "wire", frame(i, tag=b"fill"))
bridge = engine.Bridge(wire, host, burst=1024, count=n)
deadline = time.monotonic() + 10
while bridge.forwarded < n and time.monotonic() < deadline:
    bridge.run(100)
bridge.flush()
got = read_many("fk0", "host", n)
counters = bridge.counters()
result(fresh={k: fresh[k] for k in ("head", "cur", "tail", "num_slots")},
       forwarded=bridge.forwarded, got=len(got),
       in_order=got == [frame(i, tag=b"fill") for i in range(n)],
       wire_rx=counters[0], host_tx=counters[3])
engine.close_ports([wire, host])
'''


def test_a_fresh_tx_ring_takes_num_slots_minus_one_frames(fake: FakeKernel) -> None:
    r = fake.run_py(FRESH_TX).result
    recorded = golden("open_two_fds.json")["comparison"]["host_fd_after_own_mmap"]["rings"][0]
    assert recorded["role"] == "host_tx[0]"
    assert r["fresh"] == {k: recorded[k] for k in ("head", "cur", "tail", "num_slots")}
    assert r["fresh"]["tail"] == r["fresh"]["num_slots"] - 1
    n = r["fresh"]["num_slots"] - 1
    assert r["forwarded"] == r["got"] == n and r["in_order"]
    # the whole of [head, tail) of the fresh ring was used in one pass: never full
    assert r["wire_rx"]["txfull"] == 0, r["wire_rx"]
    assert r["host_tx"]["frames"] == n


#: trace (a) of the records, replayed through nmbridge's own sync and poll
TRACE_A = r'''
wire, host = open_ports("netmap:fk0", "netmap:fk0^")
rx = wire.c.rx[0]
rs = slots(rx)


def state():
    return {"head": rx.head, "cur": rx.cur, "tail": rx.tail, "flags": "0x%x" % rx.flags}


def pollin(port):
    got = wait_fd(port, select.POLLIN, 0)
    return got[0][1] if got else 0


def user_slots():
    out, i = [], rx.head
    while i != rx.tail:
        out.append([i, rs[i].buf_idx - rs[0].buf_idx, rs[i].len, rs[i].flags])
        i = (i + 1) % rx.num_slots
    return out


rounds = {}
for rnd in ("round1_rxsync_first", "round2_poll_first"):
    r = rounds[rnd] = {"wire_rx_initial": state()}
    for i in range(5):
        inject("fk0", "wire", frame(i, tag=b"trace-a"))
    r["wire_rx_after_send_no_syscall"] = state()
    if rnd == "round1_rxsync_first":
        assert lib.nmb_kport_rxsync(wire.c) == 0
        r["wire_rx_after_rxsync"] = state()
        r["poll_wire_POLLIN_0ms_after_rxsync"] = pollin(wire)
        r["poll_host_POLLIN_0ms"] = pollin(host)
    else:
        r["poll_wire_POLLIN_0ms"] = pollin(wire)
        r["poll_host_POLLIN_0ms"] = pollin(host)
        r["wire_rx_after_poll"] = state()
        assert lib.nmb_kport_rxsync(wire.c) == 0
        r["wire_rx_after_rxsync"] = state()
    r["wire_rx_all_user_slots_head_to_tail"] = user_slots()
    r["poll_wire_POLLIN_0ms_before_release"] = pollin(wire)
    rx.head = rx.cur = rx.tail
    r["wire_rx_after_user_release_before_sync"] = state()
    assert lib.nmb_kport_rxsync(wire.c) == 0
    r["wire_rx_after_release_sync"] = state()
    r["poll_wire_POLLIN_0ms_after_release"] = pollin(wire)

# a sync that releases some slots and imports new frames in one go
for i in range(3):
    inject("fk0", "wire", frame(i, tag=b"old"))
assert lib.nmb_kport_rxsync(wire.c) == 0
before = state()
rx.head = rx.cur = (rx.head + 1) % rx.num_slots
for i in range(2):
    inject("fk0", "wire", frame(i, tag=b"new"))
assert lib.nmb_kport_rxsync(wire.c) == 0
after = state()
owned = [bytes(ffi.buffer(buf(rx, rs[i].buf_idx), rs[i].len)) for i, *_ in user_slots()]
result(rounds=rounds, before=before, after=after,
       owned=owned == [frame(1, tag=b"old"), frame(2, tag=b"old"), frame(0, tag=b"new"),
                       frame(1, tag=b"new")])
engine.close_ports([wire, host])
'''


def test_rx_sync_follows_the_recorded_trace(fake: FakeKernel) -> None:
    r = fake.run_py(TRACE_A).result
    rec = golden("trace_a_wire_rx_poll.json")
    for rnd, ours in r["rounds"].items():
        recorded = rec[rnd]
        for key, value in ours.items():
            want = recorded[key]
            if key.startswith("poll_"):
                want = int(want["revents"], 16)
            elif key == "wire_rx_all_user_slots_head_to_tail":
                first = rec["wire_open"]["rings"][1]["first_slots"][0]["buf_idx"]
                want = [[s["slot"], s["buf_idx"] - first, s["len"], int(s["flags"], 16)]
                        for s in want]
            assert value == want, (rnd, key)
    # each RXSYNC releases [old head, head) and imports what arrived: the frames are
    # those between head and the new tail, old and new together
    assert r["after"]["head"] == r["before"]["head"] + 1
    assert r["after"]["tail"] == r["before"]["tail"] + 2
    assert r["owned"] is True


#: trace (b) of the records: frames through the host rings, replayed
TRACE_B = r'''
wire, host = open_ports("netmap:fk0", "netmap:fk0^")
tx, rx = host.c.tx[0], host.c.rx[0]


def st(r):
    return {"head": r.head, "cur": r.cur, "tail": r.tail, "flags": "0x%x" % r.flags}


def observe():
    got = wait_fd(host, select.POLLIN, 1000)
    lens = []
    i = rx.head
    while i != rx.tail:
        lens.append([i, slots(rx)[i].len])
        i = (i + 1) % rx.num_slots
    return {"poll_revents": got[0][1] if got else 0, "host_rx": st(rx), "lens": lens}


out = {}
for phase, replies in (("phase1_neighbour_cached", [[98, 98]]),
                       ("phase2_neighbour_flushed", [[42], [98, 98]])):
    p = out[phase] = {"host_tx_before": st(tx), "host_rx_before": st(rx)}
    requests = [frame(i, size=98, tag=b"echo") for i in range(2)]
    assert put(host, requests) == 2
    p["host_tx_after_fill_before_sync"] = st(tx)
    assert lib.nmb_kport_txsync(host.c) == 0
    p["host_tx_after_txsync"] = st(tx)
    p["stack_got"] = read_many("fk0", "host", 2) == requests
    p["observations"] = []
    for k, sizes in enumerate(replies):
        if k:
            # release what was read (the ARP request) and answer it through host TX
            rx.head = rx.cur = rx.tail
            assert put(host, [frame(9, size=60, tag=b"arp-reply")]) == 1
            assert lib.nmb_kport_txsync(host.c) == 0
        for i, size in enumerate(sizes):
            inject("fk0", "host", frame(i, size=size, tag=b"reply"))
        p["observations"].append(observe())
    rx.head = rx.cur = rx.tail
    assert lib.nmb_kport_rxsync(host.c) == 0
result(out=out)
engine.close_ports([wire, host])
'''


def test_host_rings_follow_the_recorded_trace(fake: FakeKernel) -> None:
    """Frames put on the host TX ring reach the host stack at once (tail = head - 1
    after the sync); what the stack sends appears on the host RX ring; a sync
    releases what was read and imports what came since, in one go."""
    out = fake.run_py(TRACE_B).result["out"]
    rec = golden("trace_b_host_tx_to_stack.json")
    for phase, ours in out.items():
        recorded = rec[phase]
        assert ours["stack_got"] is True
        for key in ("host_tx_before", "host_rx_before", "host_tx_after_fill_before_sync",
                    "host_tx_after_txsync"):
            assert ours[key] == recorded[key], (phase, key)
        assert len(ours["observations"]) == len(recorded["observations"])
        for mine, theirs in zip(ours["observations"], recorded["observations"]):
            assert mine["poll_revents"] == int(theirs["poll_revents"], 16)
            assert mine["host_rx"] == theirs["host_rx"], phase
            assert mine["lens"] == [[s["slot"], s["len"]] for s in theirs["host_rx_new_slots"]]


#: trace (c): idle ports, the way the loop sleeps in poll()
IDLE_POLL = r'''
wire, host = open_ports("netmap:fk0", "netmap:fk0^")
pipe, = open_ports("netmap:idle{1")


def timed(port, events, ms):
    t0 = time.monotonic()
    got = wait_fd(port, events, ms)
    return [got[0][1] if got else 0, (time.monotonic() - t0) * 1000]


I, O = select.POLLIN, select.POLLOUT
result(polls={
    "wire_POLLIN_100ms": timed(wire, I, 100),
    "wire_POLLOUT_100ms": timed(wire, O, 100),
    "wire_POLLIN|POLLOUT_100ms": timed(wire, I | O, 100),
    "wire_POLLIN_0ms": timed(wire, I, 0),
    "wire_events0_100ms": timed(wire, 0, 100),
    "host_POLLIN_100ms": timed(host, I, 100),
    "host_POLLIN|POLLOUT_100ms": timed(host, I | O, 100),
    "pipe_master_POLLIN_100ms_no_peer": timed(pipe, I, 100),
    "pipe_master_POLLOUT_100ms_no_peer": timed(pipe, O, 100),
})
engine.close_ports([wire, host, pipe])
'''


def test_idle_ports_poll_as_recorded(fake: FakeKernel) -> None:
    polls = fake.run_py(IDLE_POLL).result["polls"]
    rec = golden("trace_c_idle_poll.json")
    for key, (revents, elapsed_ms) in polls.items():
        recorded = rec[key]
        assert revents == int(recorded["revents"], 16), key
        if recorded["elapsed_ms"] >= recorded["timeout_ms"] > 0:
            assert elapsed_ms >= recorded["timeout_ms"] - 5, (key, elapsed_ms)  # slept
        else:
            assert elapsed_ms < 50, (key, elapsed_ms)  # answered at once


#: trace (e), phase 5: the host stack sends while only the wire port is open
LATE_HOST = r'''
wire, = open_ports("netmap:fk0")
sent = [frame(i, size=42, tag=b"arp", dst=b"\xff" * 6) for i in range(3)]
for f in sent:
    inject("fk0", "host", f)
on_wire = read_many("fk0", "wire", 1, timeout_ms=200)
wire_pollin = wait_fd(wire, select.POLLIN, 0)
host, = open_ports("netmap:fk0^")
rx = host.c.rx[0]
right_after_open = {"head": rx.head, "cur": rx.cur, "tail": rx.tail, "flags": "0x%x" % rx.flags}
pollin = wait_fd(host, select.POLLIN, 0)
after = {"head": rx.head, "cur": rx.cur, "tail": rx.tail, "flags": "0x%x" % rx.flags}
got = recv(host, 3)
result(on_wire=len(on_wire), wire_pollin=wire_pollin[0][1] if wire_pollin else 0,
       right_after_open=right_after_open, pollin=pollin[0][1] if pollin else 0,
       after=after, delivered=got == sent)
engine.close_ports([wire, host])
'''


def test_host_stack_frames_wait_for_the_host_port(fake: FakeKernel) -> None:
    """With the NIC rings in netmap mode, what the host stack sends never reaches
    the wire; it waits for the host port, which `nmbridge IFACE` opens second."""
    r = fake.run_py(LATE_HOST).result
    rec = golden("trace_e_host_stack_tx.json")
    wire_only, late = rec["phase2_wire_ALL_NIC_only"], rec["phase5_wire_only_then_host_opened_late"]
    assert wire_only["v1_rx_packets_delta"] == 0 and r["on_wire"] == 0
    assert r["wire_pollin"] == int(wire_only["wire_POLLIN_0ms"]["revents"], 16)
    assert r["right_after_open"] == late["host_rx_right_after_open"]
    assert r["pollin"] == int(late["host_POLLIN_0ms"]["revents"], 16)
    assert r["after"] == late["host_rx_after_sync"]
    assert r["delivered"] is True


#: a ring the kernel finds corrupt is reinitialised (POLLERR); the loop counts it and goes on
REINIT = r'''
wire, host = open_ports("netmap:fk0", "netmap:fk0^")
bridge = engine.Bridge(wire, host)
first = [frame(i, tag=b"first") for i in range(3)]
for f in first:
    inject("fk0", "wire", f)
while bridge.forwarded < 3:
    bridge.run(50)
got_first = read_many("fk0", "host", 3)
tx = host.c.tx[0]
tx.head = tx.cur = tx.num_slots + 7  # nothing the kernel can accept
then = [frame(i, tag=b"then") for i in range(4)]
for f in then:
    inject("fk0", "wire", f)
deadline = time.monotonic() + 5
while bridge.forwarded < 7 and time.monotonic() < deadline:
    bridge.run(50)
bridge.flush()
got_then = read_many("fk0", "host", 4)
errors = sum(c["errors"] for c in bridge.counters())
result(first=got_first == first, then=got_then == then, forwarded=bridge.forwarded,
       errors=errors, reinits=stat("reinits"))
engine.close_ports([wire, host])
'''


def test_a_ring_reinit_is_recovered_from_and_counted(fake: FakeKernel) -> None:
    r = fake.run_py(REINIT).result
    assert r["first"] is True and r["then"] is True and r["forwarded"] == 7
    assert r["reinits"] >= 1  # the kernel put the ring back as it last knew it
    assert r["errors"] >= 1  # the loop saw POLLERR, resynced, counted it, went on


SHARE = r'''
wire, pipe = open_ports("netmap:fk0", "netmap:pb{1@share=netmap:fk0")
bridge = engine.Bridge(wire, pipe)
result(mem=[p.reply.nr_mem_id for p in (wire, pipe)], zero_copy=bridge.zero_copy_possible,
       mmaps=stat("mmaps"), walks=[walk(wire), walk(pipe)])
engine.close_ports([wire, pipe])
'''


def test_share_opens_a_pipe_in_the_nics_region(fake: FakeKernel) -> None:
    """@share=PORT asks netmap for PORT's region (PORT_INFO_GET) and opens the port
    in it: one mapping, and zero-copy between the two."""
    r = fake.run_py(SHARE).result
    assert r["mem"] == [1, 1]
    assert r["mmaps"] == 1 and r["zero_copy"] is True
    for w in r["walks"]:
        check_walk(w)


#: the wire->pipe direction backs up (the slave end never reads), and the slave then
#: sends one frame towards the wire: it must leave, though the wire's RX still waits
TX_WHILE_RX_WAITS = r'''
wire, master = open_ports("netmap:fk0", "netmap:st{3")
(slave,) = open_ports("netmap:st}3")
bridge = engine.Bridge(wire, master, burst=64)
backlog = master.c.tx[0].num_slots + 20  # more than the pipe can hold unread
for i in range(backlog):
    inject("fk0", "wire", frame(i, tag=b"down"))


def run_until(done, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        bridge.run(50)


def wire_rx_waits():
    return wire.c.rx[0].tail != wire.c.rx[0].cur


down = master.c.tx[0].num_slots - 1  # what the pipe takes before its TX ring is full
run_until(lambda: bridge.forwarded >= down and wire_rx_waits())
waiting = wire_rx_waits()
up = frame(0, tag=b"up")
send(slave, [up])
run_until(lambda: bridge.forwarded > down)
bridge.run(200)
got = read_side("fk0", "wire", timeout_ms=100)  # no flush: the loop itself must push it
result(waiting=waiting, forwarded=bridge.forwarded, up_left=got == up)
engine.close_ports([wire, master, slave])
'''


def test_a_port_whose_rx_waits_still_transmits(fake: FakeKernel) -> None:
    """A kernel port whose RX frames wait for the peer's TX asks no event of poll(); it
    is polled all the same, with none: netmap's poll() txsyncs the TX rings that hold
    frames (NR_NO_TX_POLL is not set), so what the peer sends does not wait for our RX
    to drain -- for ever, if the peer's TX never does."""
    r = fake.run_py(TX_WHILE_RX_WAITS).result
    assert r["waiting"] is True, r
    assert r["up_left"] is True, r


#: fk0 played as a native driver with 16-slot TX rings: a poll() with free TX slots
#: reclaims none, NIOCTXSYNC does, and so does a poll() once the ring is full
NATIVE_RECLAIM = r'''
(wire,) = open_ports("netmap:fk0")
tx = wire.c.tx[0]


def state():
    return [tx.head, tx.tail]


fresh = [tx.num_slots, wire.reply.nr_tx_slots, *state()]
put(wire, [frame(i, tag=b"n") for i in range(10)])
events = wait_fd(wire, select.POLLOUT, 100)
after_poll = [events[0][1] if events else 0, *state()]
assert lib.nmb_kport_txsync(wire.c) == 0
after_txsync = state()
filled = put(wire, [frame(i, tag=b"f") for i in range(20)])
events = wait_fd(wire, select.POLLOUT, 100)
after_full_poll = [filled, events[0][1] if events else 0, *state()]
result(fresh=fresh, after_poll=after_poll, after_txsync=after_txsync,
       after_full_poll=after_full_poll, sent=len(read_many("fk0", "wire", 30, 200)))
engine.close_ports([wire])
'''


def test_a_native_drivers_tx_ring_is_reclaimed_when_forced_or_full(fake: FakeKernel) -> None:
    """The fake's model of a native NIC driver (FAKENETMAP_NATIVE, after netmap's
    ixgbe and the others): completed TX slots come back on NIOCTXSYNC
    (NAF_FORCE_RECLAIM) or when user space has no free slot, never on a poll()
    while some are free."""
    r = fake.run_py(NATIVE_RECLAIM, env={"FAKENETMAP_NATIVE": "fk0/16"}).result
    assert r["fresh"] == [16, 16, 0, 15]
    # pushed to the wire, not reclaimed: POLLOUT all the same, for the 5 free slots
    assert r["after_poll"] == [4, 10, 15]
    assert r["after_txsync"] == [10, 9]
    # 15 more fill the ring (head == tail): then poll() reclaims
    assert r["after_full_poll"] == [15, 4, 9, 8]
    assert r["sent"] == 25


#: jumbo frames (NS_MOREFRAG chains of 5 slots) and small ones both ways between two
#: native NICs with 64-slot TX rings: over and over a chain waits on a TX ring with
#: a few free slots, which a poll() never reclaims on such a driver
NATIVE_CHAINS = r'''
N = 150
sizes = (9000, 60, 9000, 3000, 9000, 1500)
a, b = open_ports("netmap:fk0", "netmap:fk1")
bridge = engine.Bridge(a, b, burst=32)
to_fk1 = [frame(i, size=sizes[i % len(sizes)], tag=b"ab") for i in range(N)]
to_fk0 = [frame(i, size=sizes[(i + 1) % len(sizes)], tag=b"ba") for i in range(N)]
for f, g in zip(to_fk1, to_fk0):
    inject("fk0", "wire", f)
    inject("fk1", "wire", g)
t0 = time.monotonic()
while bridge.forwarded < 2 * N and time.monotonic() - t0 < 5:
    bridge.run(50)
forwarded, seconds = bridge.forwarded, time.monotonic() - t0
bridge.flush()
got_fk1 = read_many("fk1", "wire", N, 500)
got_fk0 = read_many("fk0", "wire", N, 500)
counters = bridge.counters()
result(forwarded=forwarded, seconds=seconds, slots=[a.c.tx[0].num_slots, b.c.tx[0].num_slots],
       fk1_ok=sorted(got_fk1) == sorted(to_fk1), fk0_ok=sorted(got_fk0) == sorted(to_fk0),
       # fk1 spreads what arrives over its 2 RX rings: each ring's frames in order
       fk0_in_order=all([f for f in got_fk0 if f in to_fk0[r::2]] == to_fk0[r::2]
                        for r in (0, 1)),
       txfull=sum(c["txfull"] for c in counters),
       drops=sum(c["drop_chain"] + c["drop_oversize"] for c in counters),
       fake=fake_stats())
engine.close_ports([a, b])
'''


def test_chains_cross_a_native_nics_nearly_full_tx_ring(fake: FakeKernel) -> None:
    """A chain that needs more TX slots than are free waits, and poll() on such a
    ring returns at once (POLLOUT: some are free) without reclaiming: the loop
    forces the reclaim with NIOCTXSYNC, or that direction spins for ever."""
    r = fake.run_py(NATIVE_CHAINS, env={"FAKENETMAP_NATIVE": "fk0/64,fk1/64"}).result
    assert r["slots"] == [64, 64]
    assert r["txfull"] > 0, r  # chains did wait for TX room
    assert r["forwarded"] == 300, r
    assert r["seconds"] < 3, r
    assert r["fk1_ok"] and r["fk0_ok"] and r["fk0_in_order"], r
    assert r["drops"] == 0, r
    for key in ("reinits", "tail_restored", "bad_slots", "audit_errors"):
        assert r["fake"][key] == 0, (key, r["fake"])


#: --count's last pass (fewer frames left than a full pass moves) between two NICs of
#: 2 rings each: burst 8 and 28 frames to count, so one full pass, then a last one
#: that both RX rings take part in
COUNT_LAST_PASS = r'''
N, COUNT = 40, 28
a, b = open_ports("netmap:fk0", "netmap:fk1")
sent = [frame(i, tag=b"last") for i in range(N)]
for f in sent:
    inject("fk0", "wire", f)  # spread over fk0's RX rings: frame i to ring i % 2
bridge = engine.Bridge(a, b, burst=8, count=COUNT)
deadline = time.monotonic() + 5
while bridge.forwarded < COUNT and time.monotonic() < deadline:
    bridge.run(50)
dropped = bridge.flush()
got = read_many("fk1", "wire", N, 500)
rings = [[r.port, r.direction, r.ringid] for r in bridge.rings()]
result(forwarded=bridge.forwarded, dropped=dropped, sent=[f.hex() for f in sent],
       got=[f.hex() for f in got], rings=rings, counters=bridge.counters())
engine.close_ports([a, b])
'''


def test_the_last_pass_of_a_count_keeps_each_rx_ring_on_its_tx_ring(fake: FakeKernel) -> None:
    """Under --count, the last pass maps RX ring r to TX ring r as every full pass
    does: frames of fk0's RX ring 1 leave on fk1's TX ring 1, where its earlier
    frames went, never on TX ring 0, where they could overtake those (rule 5)."""
    r = fake.run_py(COUNT_LAST_PASS, env={"FAKENETMAP_NICS": "fk0/2,fk1/2"}).result
    assert r["forwarded"] == 28 and r["dropped"] == 12, r
    counters = {tuple(ring): c for ring, c in zip(r["rings"], r["counters"])}
    rx = [counters[(0, "rx", k)]["frames"] for k in (0, 1)]
    tx = [counters[(1, "tx", k)]["frames"] for k in (0, 1)]
    # one full pass moves 8 a ring: beyond that, a ring's frames went in the last pass
    assert sorted(rx) == [12, 16], r["counters"]
    assert tx == rx, r["counters"]
    sent, got = r["sent"], r["got"]
    assert len(got) == 28
    for k in (0, 1):
        ring = sent[k::2]
        assert [f for f in got if f in ring] == ring[:rx[k]]

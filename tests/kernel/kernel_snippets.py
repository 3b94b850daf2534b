"""Driver snippets shared by the tests against the fake module (test_kport.py)
and against the real one (test_real_netmap.py), and the golden records.

A snippet runs after conftest.DRIVER in a subprocess; it takes its names from
environment variables (NMB_T_NIC, NMB_T_PIPE, NMB_T_VALE) so that the real
module's tests can use names nobody else uses, and it reports with result().
The assertions on what a snippet reports live in check_* functions here, so
that the fake and the real module are held to the same relations.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

#: the `fake` fixture's class (tests/kernel/conftest.py), for annotations
FakeKernel = Any

#: records of the real netmap module, copied from the project's golden data
#: (see tests/data/README.md)
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "kernel"

#: ring_ofs[] order in a netmap_if (netmap-abi.md, "Addressing inside the region")
ROLE_NAMES = ("nic_tx", "host_tx", "nic_rx", "host_rx")

#: what a refused register becomes in nmbridge (errno name -> exception class)
OUTCOME_FOR_ERRNO = {
    "0": "ok",
    "ENXIO": "NoSuchPort",
    "EBUSY": "PortBusy",
    "EINVAL": "KernelRefused",
    "EOPNOTSUPP": "KernelRefused",
}


@cache
def golden(name: str) -> Any:
    return json.loads((GOLDEN_DIR / name).read_text())


def ring_roles(counts: list[int]) -> list[str]:
    """The role of each ring_ofs[] entry from the netmap_if's four ring counts."""
    return [f"{role}[{i}]" for role, n in zip(ROLE_NAMES, counts) for i in range(n)]


def nif_counts(nif: dict[str, Any]) -> list[int]:
    """[ni_tx_rings, ni_host_tx_rings, ni_rx_rings, ni_host_rx_rings] of a golden record."""
    return [nif["ni_tx_rings"], nif["ni_host_tx_rings"], nif["ni_rx_rings"],
            nif["ni_host_rx_rings"]]


def bound_rings(walk: dict[str, Any]) -> list[dict[str, Any]]:
    """The rings nmbridge bound, as the golden records list a netmap_if's rings:
    ring_ofs index and role, in ring_ofs order, with their header fields."""
    roles = ring_roles(walk["counts"])
    index_of = {ofs: i for i, ofs in enumerate(walk["ring_ofs"]) if ofs != 0}
    out = []
    for kind in ("tx", "rx"):
        for ofs, state in zip(walk[f"bound_{kind}"], walk[kind]):
            i = index_of[ofs]
            out.append({"ring_ofs_index": i, "role": roles[i], **ring_fields(state)})
    return sorted(out, key=lambda r: r["ring_ofs_index"])


def ring_fields(ring: dict[str, Any]) -> dict[str, Any]:
    """The fields of a fresh ring that do not depend on open order or boot."""
    first = ring["first"] if "first" in ring else [
        [s["buf_idx"], s["len"], int(s["flags"], 16)] for s in ring["first_slots"]]
    return {
        "ringid": ring["ringid"],
        "dir": ring["dir"],
        "head": ring["head"],
        "cur": ring["cur"],
        "tail": ring["tail"],
        "num_slots": ring["num_slots"],
        "nr_buf_size": ring["nr_buf_size"],
        "slot_len": [s[1] for s in first],
        "slot_flags": [s[2] for s in first],
    }


def golden_rings(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"ring_ofs_index": r["ring_ofs_index"], "role": r["role"], **ring_fields(r)}
            for r in record["rings"]]


def check_walk(walk: dict[str, Any]) -> None:
    """What holds for every port nmbridge binds: it walks the netmap_if by the
    netmap_if's own counts and binds exactly the rings whose ring_ofs is not 0,
    TX ones then RX ones, each in ring_ofs order, with dir 1 for TX and 0 for RX."""
    counts, ofs = walk["counts"], walk["ring_ofs"]
    assert len(ofs) == sum(counts)
    ntx = counts[0] + counts[1]
    assert walk["bound_tx"] == [o for o in ofs[:ntx] if o != 0], walk
    assert walk["bound_rx"] == [o for o in ofs[ntx:] if o != 0], walk
    assert all(r["dir"] == 1 for r in walk["tx"]) and all(r["dir"] == 0 for r in walk["rx"])
    nic = {"tx": counts[0], "rx": counts[2]}
    for direction, ringid, host in walk["ring_info"]:
        assert host == (ringid >= nic[direction]), walk["ring_info"]


# ---------------------------------------------------------------- snippets

#: the wire and host ports of one NIC, on two fds
WIRE_HOST = r'''
nic = os.environ["NMB_T_NIC"]
wire, host = open_ports("netmap:" + nic, "netmap:" + nic + "^")
bases = [addr(p.c.nifp) - p.reply.nr_offset for p in (wire, host)]
bridge = engine.Bridge(wire, host)
result(
    walks=[walk(wire), walk(host)],
    bases=bases,
    zero_copy=bridge.zero_copy_possible,
    host_ni_name_via_wire_mapping=ffi.string(
        ffi.cast("struct netmap_if *", bases[0] + host.reply.nr_offset).ni_name).decode(),
    rings=[[r.port, r.direction, r.ringid, r.host] for r in bridge.rings()],
)
engine.close_ports([wire, host])
'''

#: a pipe: 3 frames master -> slave, the slave's RX slots before release
PIPE_PAIR = r'''
parent = os.environ["NMB_T_PIPE"]
master, slave = open_ports(f"netmap:{parent}{{1", f"netmap:{parent}}}1")
walks = [walk(master), walk(slave)]
bases = [addr(p.c.nifp) - p.reply.nr_offset for p in (master, slave)]
zero_copy = engine.Bridge(master, slave).zero_copy_possible
mtx, srx = master.c.tx[0], slave.c.rx[0]
n = mtx.num_slots
sent = [frame(i, tag=b"pipe") for i in range(3)]
tx_bufs = [slots(mtx)[(mtx.head + i) % n].buf_idx for i in range(3)]
send(master, sent)
master_tx_after_send = ring_state(mtx)
deadline = time.monotonic() + 5
while (srx.tail - srx.head) % n < 3 and time.monotonic() < deadline:
    wait_fd(slave, select.POLLIN, 100)
rx_bufs = [slots(srx)[(srx.head + i) % n].buf_idx for i in range((srx.tail - srx.head) % n)]
got = recv(slave, 3)
assert lib.nmb_kport_txsync(master.c) == 0
result(
    walks=walks, bases=bases, zero_copy=zero_copy,
    tx_bufs=tx_bufs, rx_bufs=rx_bufs,
    master_tx_after_send=master_tx_after_send,
    master_tx_after_release=ring_state(mtx),
    delivered=[g == s for g, s in zip(got, sent)] if len(got) == len(sent) else False,
)
engine.close_ports([master, slave])
'''

#: two ports of one VALE switch: 2 broadcast frames a -> b
VALE_PAIR = r'''
sw = os.environ["NMB_T_VALE"]
a, b = open_ports(f"{sw}:a", f"{sw}:b")
walks = [walk(a), walk(b)]
bases = [addr(p.c.nifp) - p.reply.nr_offset for p in (a, b)]
zero_copy = engine.Bridge(a, b).zero_copy_possible
atx = a.c.tx[0]
sent = [frame(i, tag=b"vale", dst=b"\xff" * 6, src=b"\x02\x00\x00\x00\x00\x0a")
        for i in range(2)]
tx_bufs = [slots(atx)[(atx.head + i) % atx.num_slots].buf_idx for i in range(2)]
send(a, sent)
a_tx_after_txsync = ring_state(a.c.tx[0])
brx = b.c.rx[0]
deadline = time.monotonic() + 5
while (brx.tail - brx.head) % brx.num_slots < 2 and time.monotonic() < deadline:
    wait_fd(b, select.POLLIN, 100)
rx_bufs = [slots(brx)[(brx.head + i) % brx.num_slots].buf_idx
           for i in range((brx.tail - brx.head) % brx.num_slots)]
got = recv_slots(b, 2)
result(
    walks=walks, bases=bases, zero_copy=zero_copy,
    tx_bufs=tx_bufs, rx_bufs=rx_bufs,
    a_tx_after_txsync={k: a_tx_after_txsync[k] for k in ("head", "cur", "tail")},
    rx_flags=[flags for _data, flags in got],
    delivered=[data == s for (data, _f), s in zip(got, sent)] if len(got) == 2 else False,
)
engine.close_ports([a, b])
'''

#: nmbridge's bridge between a VALE port and a pipe master: frames from another
#: VALE port reach the pipe's slave end and back, and are counted
BRIDGE_COUNT = r'''
sw, parent = os.environ["NMB_T_VALE"], os.environ["NMB_T_PIPE"]
N, M = 40, 25
x, master = open_ports(f"{sw}:x", f"netmap:{parent}{{7")
y, slave = open_ports(f"{sw}:y", f"netmap:{parent}}}7")
bridge = engine.Bridge(x, master, burst=16)
mac_y, mac_s = b"\x02\x00\x00\x00\x00\x0b", b"\x02\x00\x00\x00\x00\x0c"
to_slave = [frame(i, size=60 + i, tag=b"ab", src=mac_y, dst=mac_s) for i in range(N)]
to_y = [frame(i, size=200 - i, tag=b"ba", src=mac_s, dst=mac_y) for i in range(M)]


def run_until(total, timeout=5.0):
    deadline = time.monotonic() + timeout
    while bridge.forwarded < total and time.monotonic() < deadline:
        bridge.run(50)


send(y, to_slave)
run_until(N)
bridge.flush()
got_slave = recv(slave, N)
send(slave, to_y)
run_until(N + M)
bridge.flush()
got_y = recv(y, M)
counters = bridge.counters()
rings = [[r.port, r.direction] for r in bridge.rings()]
result(
    forwarded=bridge.forwarded,
    zero_copy=bridge.zero_copy,
    in_order_slave=got_slave == to_slave,
    in_order_y=got_y == to_y,
    got=[len(got_slave), len(got_y)],
    bytes=[sum(map(len, to_slave)), sum(map(len, to_y))],
    counters=[[port, direction, c["frames"], c["bytes"]]
              for (port, direction), c in zip(rings, counters)],
)
engine.close_ports([x, master, y, slave])
'''


# ---------------------------------------------------------------- checks


def check_wire_host(r: dict[str, Any]) -> None:
    """Wire and host port of one NIC: one region, one mapping, zero-copy."""
    wire, host = r["walks"]
    for w in (wire, host):
        check_walk(w)
    assert wire["reply"]["nr_mem_id"] == host["reply"]["nr_mem_id"]
    assert wire["reply"]["nr_memsize"] == host["reply"]["nr_memsize"]
    assert wire["reply"]["nr_offset"] != host["reply"]["nr_offset"]
    assert r["bases"][0] == r["bases"][1], "the host port did not reuse the wire's mapping"
    assert r["host_ni_name_via_wire_mapping"] == host["ni_name"] == wire["ni_name"]
    assert r["zero_copy"] is True
    assert wire["bound_tx"] and wire["bound_rx"] and host["bound_tx"] and host["bound_rx"]
    assert not any(h for _p, _d, _id, h in r["rings"] if _p == 0)
    assert all(h for _p, _d, _id, h in r["rings"] if _p == 1)


def check_pipe_pair(r: dict[str, Any]) -> None:
    master, slave = r["walks"]
    for w in (master, slave):
        check_walk(w)
        # the reply says no host rings, the netmap_if says 1 + 1 (recorded)
        assert w["reply"]["nr_host_tx_rings"] == w["reply"]["nr_host_rx_rings"] == 0
        assert w["counts"] == [1, 1, 1, 1]
        assert len(w["bound_tx"]) == len(w["bound_rx"]) == 1
    assert master["reply"]["nr_mem_id"] == slave["reply"]["nr_mem_id"]
    assert r["bases"][0] == r["bases"][1]
    assert r["zero_copy"] is True
    assert r["delivered"] == [True] * 3
    # zero-copy in the kernel: the slave receives the master's TX buffers
    assert r["rx_bufs"] == r["tx_bufs"]
    # the sender's TX tail does not move until the peer has consumed (recorded)
    assert r["master_tx_after_send"]["tail"] == r["master_tx_after_send"]["num_slots"] - 1
    after = r["master_tx_after_release"]
    assert after["tail"] == (after["head"] - 1) % after["num_slots"]


def check_vale_pair(r: dict[str, Any]) -> None:
    a, b = r["walks"]
    for w in (a, b):
        check_walk(w)
        assert w["reply"]["nr_host_tx_rings"] == w["reply"]["nr_host_rx_rings"] == 0
        assert w["counts"] == [1, 1, 1, 1]
    assert a["reply"]["nr_mem_id"] != b["reply"]["nr_mem_id"]
    assert r["bases"][0] != r["bases"][1]
    assert r["zero_copy"] is False
    assert r["delivered"] == [True, True]
    # VALE copies: the receiver's slots keep buffers of its own region
    assert r["rx_bufs"] != r["tx_bufs"]
    # single-slot frames; the other flag bits are VALE's own (0x100 recorded)
    assert all(not f & 0x20 for f in r["rx_flags"]), r["rx_flags"]
    # completed at once: tail = head - 1 after the TXSYNC (recorded)
    t = r["a_tx_after_txsync"]
    assert t["tail"] == (t["head"] - 1) % 1024 and t["head"] == 2


#: --vnet-hdr: a (12-byte headers) and b (none) on one switch; the switch puts zeros in
#: front of what b sends to a, and cuts the header off what a sends to b, completing the
#: UDP checksum a's header asks for (NEEDS_CSUM) on the way
VALE_VNET_HDR = r'''
import dataclasses
import struct
from nmbridge.engine import ports as eports


def csum16(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return total


sw = os.environ["NMB_T_VALE"]
spec_a = dataclasses.replace(parse_port(f"{sw}:a"), vnet_hdr=12)
a, b = bridge_ports.open_ports([spec_a, parse_port(f"{sw}:b")])
cport = eports._open_device(spec_a.text)
got_len = eports._port_hdr(cport, spec_a, lib.NETMAP_REQ_PORT_HDR_GET)
ffi.release(cport)

bcast = dict(dst=b"\xff" * 6, src=b"\x02\x00\x00\x00\x00\x0b")
plain = frame(1, tag=b"vnet", **bcast)
send(b, [plain])
at_a = recv(a, 1)
send(a, [bytes(12) + frame(2, tag=b"vnet", **bcast)])
bare_at_b = recv(b, 1)

saddr, daddr = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
payload = b"vnet-hdr-csum-" + bytes(range(41))
ulen = 8 + len(payload)
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 1, 0, 64, 17, 0, saddr, daddr)
ip = ip[:10] + struct.pack("!H", ~csum16(ip) & 0xffff) + ip[12:]
pseudo = saddr + daddr + struct.pack("!BBH", 0, 17, ulen)
head = struct.pack("!HHH", 4000, 5000, ulen)
eth = bcast["dst"] + bcast["src"] + b"\x08\x00"
partial = eth + ip + head + struct.pack("!H", csum16(pseudo)) + payload
vh = struct.pack("<BBHHHH", 1, 0, 0, 0, 14 + 20, 6) + bytes(2)  # NEEDS_CSUM, at UDP + 6
send(a, [vh + partial])
summed_at_b = recv(b, 1)
expected = eth + ip + head + struct.pack(
    "!H", ~csum16(pseudo + head + bytes(2) + payload) & 0xffff) + payload
result(got_len=got_len, hdr_len=[a.c.hdr_len, b.c.hdr_len],
       offloads=[a.c.offloads, b.c.offloads], vale_offloads=eports.VALE_OFFLOADS,
       at_a=[f.hex() for f in at_a], plain=plain.hex(),
       bare_at_b=[f.hex() for f in bare_at_b], bare=frame(2, tag=b"vnet", **bcast).hex(),
       summed_at_b=[f.hex() for f in summed_at_b], expected=expected.hex())
bridge_ports.close_ports([a, b])
'''


def check_vale_vnet_hdr(r: dict[str, Any]) -> None:
    assert r["got_len"] == [0, 12]  # NETMAP_REQ_PORT_HDR_GET on a control fd of its own
    assert r["hdr_len"] == [12, 0]
    assert r["offloads"] == [r["vale_offloads"], 0]
    assert r["at_a"] == ["00" * 12 + r["plain"]]
    assert r["bare_at_b"] == [r["bare"]]
    assert r["summed_at_b"] == [r["expected"]]


def check_bridge_count(r: dict[str, Any]) -> None:
    assert r["got"] == [40, 25]
    assert r["in_order_slave"] and r["in_order_y"]
    assert r["forwarded"] == 65
    assert r["zero_copy"] is False  # a VALE port and a pipe: two regions
    per = {(p, d): (f, b) for p, d, f, b in r["counters"]}
    assert per[(0, "rx")] == per[(1, "tx")] == (40, r["bytes"][0])
    assert per[(1, "rx")] == per[(0, "tx")] == (25, r["bytes"][1])


# ---------------------------------------------------------------- opening in turn

#: open each name in turn (closing it before the next); a walk or the exception's class
OPEN_EACH = r'''
out = []
for name in json.loads(os.environ["NMB_T_NAMES"]):
    try:
        ports = open_ports(name)
    except Exception as exc:
        out.append([name, type(exc).__name__, str(exc)])
        continue
    out.append([name, "ok", walk(ports[0])])
    engine.close_ports(ports)
result(out=out, fake=fake_stats())
'''

#: open the names in order and hold them all; then close them all
OPEN_HELD = r'''
out, held = [], []
for name in json.loads(os.environ["NMB_T_NAMES"]):
    if name == "close":
        for ports in held:
            engine.close_ports(ports)
        held = []
        continue
    try:
        ports = open_ports(name)
    except Exception as exc:
        out.append([name, type(exc).__name__, str(exc)])
        continue
    held.append(ports)
    out.append([name, "ok", walk(ports[0])])
for ports in held:
    engine.close_ports(ports)
result(out=out, fake=fake_stats())
'''


def open_each(fake: FakeKernel, names: list[str], held: bool = False) -> list[list[Any]]:
    run = fake.run_py(OPEN_HELD if held else OPEN_EACH, env={"NMB_T_NAMES": json.dumps(names)})
    fk = run.result["fake"]
    assert fk["live_maps"] == 0 and fk["open_fds"] == 0, fk  # everything given back
    assert fk["audit_errors"] == 0, fk
    return run.result["out"]


def golden_records(obj: Any) -> list[dict[str, Any]]:
    """Every open record (with a netmap_if and its rings) inside a golden file."""
    if isinstance(obj, dict):
        found = [obj] if "netmap_if" in obj and "rings" in obj else []
        for v in obj.values():
            found += golden_records(v)
        return found
    if isinstance(obj, list):
        return [r for v in obj for r in golden_records(v)]
    return []


def assert_like_record(walk: dict[str, Any], record: dict[str, Any], what: str) -> None:
    """A port nmbridge opened on the fake against the real module's record of the
    same request: ring counts, which ring_ofs entries are 0, the bound rings' roles
    and fresh headers, the reply's ring and slot counts and nr_offset."""
    check_walk(walk)
    nif, reply = record["netmap_if"], record["nmreq_register_out"]
    assert walk["counts"] == nif_counts(nif), what
    zeros = [i for i, ofs in enumerate(walk["ring_ofs"]) if ofs == 0]
    assert zeros == nif["ring_ofs_zero_indices"], what
    assert walk["ni_flags"] == int(nif["ni_flags"], 16), what
    assert walk["ni_name"] == record["request"]["nr_name"].replace("v0", "fk0"), what
    assert bound_rings(walk) == golden_rings(record), what
    for key in ("nr_offset", "nr_tx_rings", "nr_rx_rings", "nr_host_tx_rings",
                "nr_host_rx_rings", "nr_tx_slots", "nr_rx_slots"):
        assert walk["reply"][key] == reply[key], (what, key)


def assert_requests(fake: FakeKernel, records: list[dict[str, Any]]) -> None:
    """What nmbridge asked for (the shim logs every register it accepted) is what
    the records asked for: the bare kernel name, the mode, the ring, the flags."""
    regs = fake.events("register")
    assert len(regs) == len(records)
    for reg, rec in zip(regs, records):
        want = rec["request"]
        assert reg["name"] == want["nr_name"].replace("v0", "fk0")
        assert int(reg["mode"]) == want["nr_mode"], (reg, want)
        assert int(reg["ringid"]) == want["nr_ringid"], (reg, want)
        assert int(reg["flags"], 16) == int(want["nr_flags"], 16), (reg, want)

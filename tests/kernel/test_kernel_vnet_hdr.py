"""--vnet-hdr: a VALE port that carries a virtio-net header, against the fake
netmap module, which serves NETMAP_REQ_PORT_HDR_SET/GET and the switch's header
translation as netmap's sources do (tests/fakenetmap/README.md).

None of these needs root: VALE ports and pipes have no interface behind them.
"""

from __future__ import annotations

from typing import Any

import pytest
from kernel_snippets import VALE_VNET_HDR, check_vale_vnet_hdr
from test_kernel_errors import VALE_PAIR_ARGS, assert_one_error_line

FakeKernel = Any  # the `fake` fixture's class (tests/kernel/conftest.py)

ACCEPT_VNET_HDR = 0x8000  # NR_ACCEPT_VNET_HDR

# a driver prelude: open ports, some of them with a header length
OPEN = r'''
import dataclasses
import errno
from nmbridge.engine import ports as eports

_SELF.fakenetmap_hdr_len.argtypes = [_C.c_char_p]


def open_with(*names, **lengths):
    """open_ports, the ports named in lengths given that header length (vale0_a=12)."""
    specs = []
    for n in names:
        spec = parse_port(n)
        key = n.replace(":", "_")
        if key in lengths:
            spec = dataclasses.replace(spec, vnet_hdr=lengths[key])
        specs.append(spec)
    return bridge_ports.open_ports(specs)


def hdr_len(name):
    return _SELF.fakenetmap_hdr_len(name.encode())


def failure(fn):
    try:
        fn()
    except Exception as exc:
        return {"error": type(exc).__name__, "status": getattr(exc, "exit_status", None),
                "message": str(exc)}
    return None
'''


def test_the_bridge_registers_then_sets_the_header_length(fake: FakeKernel) -> None:
    run = fake.run_cli([*VALE_PAIR_ARGS, "--vnet-hdr", "vale0:a=12", "--duration", "0.3"])
    assert run.returncode == 0, run.describe()
    events = [e for e in fake.events() if e["event"] in ("register", "port-hdr-set")]
    assert [(e["event"], e["name"]) for e in events] == [
        ("register", "vale0:a"), ("port-hdr-set", "vale0:a"), ("register", "vale0:b")]
    reg_a, hdr_set, reg_b = events
    # a port that already carries headers takes a register only with NR_ACCEPT_VNET_HDR
    assert int(reg_a["flags"], 16) & ACCEPT_VNET_HDR
    assert not int(reg_b["flags"], 16) & ACCEPT_VNET_HDR
    # on the port's own fd, once the register made the port (netmap's own sequence)
    assert hdr_set["fd"] == reg_a["fd"] and hdr_set["len"] == "12"
    assert "vale0:a: 12-byte virtio-net headers" in run.stderr


@pytest.mark.parametrize(("port", "args"), [
    ("netmap:pa{1", ["-i", "vale0:a", "-i", "netmap:pa{1"]),
    ("netmap:fk0", ["-i", "vale0:a", "-i", "netmap:fk0"]),
    ("tap:nmb0", ["-i", "vale0:a", "-i", "tap:nmb0"]),
])
def test_a_port_other_than_vale_is_a_usage_error_before_anything_opens(
        fake: FakeKernel, port: str, args: list[str]) -> None:
    run = fake.run_cli([*args, "--no-live", "--vnet-hdr", f"{port}=12"])
    assert_one_error_line(run, 2, f"--vnet-hdr {port}=12", "not a VALE port",
                          "only on VALE ports")
    assert fake.events("adapter-created") == [] and fake.events("register") == []


@pytest.mark.parametrize(("value", "phrase"), [
    ("vale0:a=11", "LEN must be 10"),
    ("vale0:a", "is not PORT=LEN"),
    ("vale0:c=12", "'vale0:c' is not a port of this bridge"),
])
def test_bad_values_are_usage_errors(fake: FakeKernel, value: str, phrase: str) -> None:
    run = fake.run_cli([*VALE_PAIR_ARGS, "--vnet-hdr", value])
    assert_one_error_line(run, 2, phrase)
    assert fake.events("register") == []


def test_headers_cross_the_switch_as_netmap_translates_them(fake: FakeKernel) -> None:
    """The snippet test_real_netmap.py runs against the real module too."""
    check_vale_vnet_hdr(fake.run_py(VALE_VNET_HDR, env={"NMB_T_VALE": "vale0"}).result)


def test_the_port_carries_the_length_and_what_vale_takes(fake: FakeKernel) -> None:
    run = fake.run_py(OPEN + r'''
a, b, c = open_with("vale0:a", "vale0:b", "vale0:c", vale0_a=12, vale0_c=10)
f = frame(1, size=80)
send(b, [f])  # into a with 12 zero bytes in front, into c with 10
got_a, got_c = recv(a, 1), recv(c, 1)
# a sends a header with nothing asked: b gets the bare frame, c the header's first 10
vh = bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0])
send(a, [vh + frame(2, size=80)])
got_b, got_c2 = recv(b, 1), recv(c, 1)
result(hdr=[p.c.hdr_len for p in (a, b, c)], offloads=[p.c.offloads for p in (a, b, c)],
       fake=[hdr_len(n) for n in ("vale0:a", "vale0:b", "vale0:c")],
       vale_offloads=eports.VALE_OFFLOADS,
       a=got_a[0].hex(), c=got_c[0].hex(), b=got_b[0].hex(), c2=got_c2[0].hex(),
       f=f.hex(), f2=frame(2, size=80).hex())
''')
    r = run.result
    assert r["hdr"] == [12, 0, 10] and r["fake"] == [12, 0, 10]
    assert r["offloads"] == [r["vale_offloads"], 0, r["vale_offloads"]]
    assert r["vale_offloads"] == 0x7  # NMB_OFL_CSUM | NMB_OFL_TSO4 | NMB_OFL_TSO6
    assert r["a"] == "00" * 12 + r["f"]
    assert r["c"] == "00" * 10 + r["f"]
    assert r["b"] == r["f2"]
    assert r["c2"] == "00" * 10 + r["f2"]  # the mergeable-buffers count is not copied


def test_a_port_with_headers_refuses_a_register_without_the_option(fake: FakeKernel) -> None:
    run = fake.run_py(OPEN + r'''
a, = open_with("vale0:a", vale0_a=10)
result(plain=failure(lambda: open_with("vale0:a")),
       other=failure(lambda: open_with("vale0:a", vale0_a=12)),
       same=failure(lambda: open_with("vale0:a", vale0_a=10)),
       length=hdr_len("vale0:a"))
''')
    r = run.result
    assert r["plain"]["status"] == 7, r
    assert r["plain"]["message"] == ("vale0:a: the port carries 10-byte virtio-net headers "
                                     "(set by another program): open it with --vnet-hdr "
                                     "vale0:a=10")
    assert r["other"]["status"] == 7
    assert "already carries 10-byte virtio-net headers" in r["other"]["message"]
    assert "--vnet-hdr vale0:a=10" in r["other"]["message"]
    assert r["same"] is None
    assert r["length"] == 10  # a refused open changes nothing
    assert [e["len"] for e in fake.events("port-hdr-set")] == ["10"]


def test_port_hdr_requests_answer_as_netmap_does(fake: FakeKernel) -> None:
    """PORT_HDR_SET: the length first (EINVAL), then an existing VALE port (ENXIO
    for anything else); any control fd, bound or not. PORT_HDR_GET: any port."""
    run = fake.run_py(OPEN + r'''
def ask(name, reqtype, length=0):
    spec = parse_port(name)
    cport = eports._open_device(name)
    rc, got = eports._port_hdr(cport, spec, reqtype, length)
    ffi.release(cport)
    return [rc, got]

SET, GET = lib.NETMAP_REQ_PORT_HDR_SET, lib.NETMAP_REQ_PORT_HDR_GET
before = ask("vale0:a", SET, 12)
a, = open_with("vale0:a")
result(before=before,
       bad_length=ask("vale0:a", SET, 11),
       bad_length_elsewhere=ask("netmap:fk0", SET, 11),
       nic=ask("netmap:fk0", SET, 12), pipe=ask("netmap:pa{1", SET, 12),
       other_switch=ask("vale1:a", SET, 12), other_port=ask("vale0:z", SET, 12),
       set_unbound=ask("vale0:a", SET, 12), get=ask("vale0:a", GET),
       get_nic=ask("netmap:fk0", GET), get_missing=ask("vale0:z", GET),
       reset=ask("vale0:a", SET, 0), after=hdr_len("vale0:a"),
       sets=stat("port_hdr_sets"))
''')
    r = run.result
    enxio, einval = -6, -22
    assert r["before"][0] == enxio  # the register creates the port, not the request
    assert r["bad_length"][0] == einval and r["bad_length_elsewhere"][0] == einval
    assert r["nic"][0] == enxio and r["pipe"][0] == enxio
    assert r["other_switch"][0] == enxio and r["other_port"][0] == enxio
    assert r["set_unbound"] == [0, 12] and r["get"] == [0, 12]
    assert r["get_nic"] == [0, 0] and r["get_missing"][0] == enxio
    assert r["reset"] == [0, 0] and r["after"] == 0 and r["sets"] == 2


def test_what_came_before_the_header_is_released_unread(fake: FakeKernel) -> None:
    """Between the register and PORT_HDR_SET the port receives frames without a
    header; the open releases what its RX ring holds then (here: frames queued at a
    port opened without headers, as they would be in that window)."""
    run = fake.run_py(OPEN + r'''
a, b = open_with("vale0:a", "vale0:b")
send(b, [frame(i) for i in range(3)])
released = eports._discard_headerless(a.c)
ring = a.c.rx[0]
assert lib.nmb_kport_rxsync(a.c) == 0
send(b, [frame(9)])
result(released=released, left=(ring.tail - ring.head) % ring.num_slots,
       after=[f.hex() for f in recv(a, 1)], nine=frame(9).hex(), reinits=stat("reinits"))
''')
    r = run.result
    assert r["released"] == 3 and r["left"] == 0
    assert r["after"] == [r["nine"]] and r["reinits"] == 0

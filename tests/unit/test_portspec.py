"""Port names: nmbridge against libnetmap's own reading, and nmbridge's own rules.

The golden data (tests/data/nmport-parse.jsonl, see tests/data/README.md) is what
libnetmap's nmport_prepare() made of each name. nmbridge gives the same fields
wherever libnetmap's reading is well-defined, and differs where the golden
README's table says it should (the tables NMBRIDGE_REFUSES and NMBRIDGE_READS).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmbridge import sysfs
from nmbridge.errors import BadPortName
from nmbridge.portspec import (
    KINDS,
    PortSpec,
    describe,
    describe_lines,
    parse_port,
    share_rings,
)

GOLDEN_FILE = Path(__file__).resolve().parent.parent / "data" / "nmport-parse.jsonl"
GOLDEN: list[dict[str, Any]] = [
    json.loads(line) for line in GOLDEN_FILE.read_text(encoding="utf-8").splitlines() if line
]

REGISTER_FIELDS = (
    "nr_name",
    "nr_ringid",
    "nr_mem_id",
    "nr_tx_slots",
    "nr_rx_slots",
    "nr_tx_rings",
    "nr_rx_rings",
    "nr_host_tx_rings",
    "nr_host_rx_rings",
)
MODES = ("NR_REG_ALL_NIC", "NR_REG_SW", "NR_REG_NIC_SW", "NR_REG_ONE_NIC", "NR_REG_ONE_SW")
FLAG_ORDER = (  # ascending bit value: NR_MONITOR_TX 0x100 ... NR_TX_RINGS_ONLY 0x4000
    "NR_MONITOR_TX",
    "NR_MONITOR_RX",
    "NR_ZCOPY_MON",
    "NR_EXCLUSIVE",
    "NR_RX_RINGS_ONLY",
    "NR_TX_RINGS_ONLY",
)

# libnetmap reads these, nmbridge refuses them (golden README, "Where nmbridge
# should differ"): name -> the part of the message that names the bad part.
NMBRIDGE_REFUSES = {
    "netmap:eth0@65537": "memory region @65537 is out of range 1..65535",
    "netmap:eth0@conf:rings=x": "'x' is not a number (option conf, key rings)",
    "netmap:eth0@conf:rings=70000": "'70000' is out of range 0..65535 (option conf, key rings)",
    "netmap:eth0@conf:rings=": "empty value (option conf, key rings)",
    "vale0:": "empty VALE port name after 'vale0:'",
    "netmap:eth 0": "whitespace in the port name 'eth 0'",
    "netmap:eth0 ": "leading or trailing whitespace",
    "netmap:eth0 ^": "whitespace in the port name 'eth0 '",
}

# libnetmap refuses these, nmbridge reads them: name -> fields of the reading.
NMBRIDGE_READS: dict[str, dict[str, Any]] = {
    # a bare name is netmap:NAME
    "eth0": {"kind": "nic", "ifname": "eth0", "nr_name": "eth0", "nr_mode": "NR_REG_ALL_NIC"},
    # '-' inside interface names
    "netmap:veth-a": {"kind": "nic", "nr_name": "veth-a", "nr_mode": "NR_REG_ALL_NIC"},
    "netmap:br-lan^": {"kind": "host", "nr_name": "br-lan", "nr_mode": "NR_REG_SW"},
    # ... so that NAME-K is ring K of NAME also when NAME holds a '-'
    "netmap:eth0-0-1": {
        "kind": "nic-ring",
        "ifname": "eth0-0",
        "ring": 1,
        "nr_name": "eth0-0",
        "nr_mode": "NR_REG_ONE_NIC",
        "nr_ringid": 1,
    },
    # parsing is pure: @share and @extmem are resolved when the port is opened
    "netmap:eth0@share=netmap:eth1": {"nr_name": "eth0", "share": "netmap:eth1"},
    "netmap:eth0@extmem:file=/nonexistent": {"extmem": {"file": "/nonexistent"}},
    "netmap:eth0@extmem:file={EMPTY_FILE}": {"extmem": {"file": "{EMPTY_FILE}"}},
    # @offset needs no separate switch
    "netmap:eth0@offset:initial=64": {"offset": {"initial": "64"}},
}

# Both refuse these: name -> the part of nmbridge's message that names the bad part.
REFUSED_BECAUSE = {
    "": "the name is empty",
    "netmap": "missing ':' after 'netmap'",
    "foo:eth0": "unknown prefix 'foo:'",
    "netmapX:eth0": "nothing may stand between 'netmap' and ':' (found 'X')",
    "netmap:eth0-4096": "ring -4096 is out of range 0..4094",
    "netmap:eth0-99999999999999999999": "ring -99999999999999999999 is out of range",
    "netmap:eth0^x": "unexpected 'x' after the mode '^'",
    "netmap:eth0^^": "unexpected '^' after the mode '^'",
    "netmap:eth0**": "unexpected '*' after the mode '*'",
    "netmap:eth0/": "empty flag list after '/'",
    "netmap:eth0@0": "memory region @0 is out of range",
    "netmap:eth0@": "nothing after '@'",
    "netmap:eth0@-1": "unknown option '-1'",
    "netmap:eth0@conf:rings=2@2": "unknown option '2'",
    "netmap:eth0@conf=4": "option conf takes keys",
    "netmap:eth0@conf:rings": "key rings needs '=value' (option conf)",
    "netmap:eth0@conf:rings=4,": "empty key in option conf (a stray ',')",
    "netmap:eth0@conf:rings=2@": "empty option",
    "netmap:eth0@bogus:x=1": "unknown option 'bogus'",
    "netmap:eth0@extmem:if-num=4": "option extmem needs key file",
    "netmap:eth0@extmem={EXTMEM_FILE}@extmem={EXTMEM_FILE}": "option extmem given twice",
    "netmap:pa{": "empty pipe id after '{'",
    "netmap:pa{1{2": "'1{2' is not a pipe id",
    "valeX-1:a": "'X-1' is not a VALE switch id",
    "vale0a": "missing ':' after the VALE switch",
    "netmap:abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd": "64 bytes long",
    "netmap:abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcde": "65 bytes long",
    " netmap:eth0": "leading or trailing whitespace",
    "netmap:eth0/R ": "leading or trailing whitespace",
}

# golden option record field -> nmbridge's key, per option
EXTMEM_FIELDS = {
    "if_num": "nr_if_pool_objtotal",
    "if_size": "nr_if_pool_objsize",
    "ring_num": "nr_ring_pool_objtotal",
    "ring_size": "nr_ring_pool_objsize",
    "buf_num": "nr_buf_pool_objtotal",
    "buf_size": "nr_buf_pool_objsize",
}
OFFSET_FIELDS = {"initial": "nro_initial_offset", "bits": "nro_offset_bits"}


def no_interfaces(ifname: str) -> bool:
    return False


def interfaces(*names: str) -> Callable[[str], bool]:
    return lambda ifname: ifname in names


def golden_id(case: dict[str, Any]) -> str:
    name = str(case["name"]) or "<empty>"
    return f"{name} (offset enabled)" if case.get("setup") else name


def refused(name: str, fragment: str, iface_exists: Callable[[str], bool] = no_interfaces) -> str:
    """Assert that name is refused with one line naming the bad part; return the message."""
    with pytest.raises(BadPortName) as info:
        parse_port(name, iface_exists)
    message = str(info.value)
    assert message.startswith(f"bad port name '{name}': ") or not name.isprintable()
    assert "\n" not in message
    assert fragment in message
    return message


def fields(spec: PortSpec) -> dict[str, Any]:
    """Every field of a spec and of its request, in one flat dict."""
    out: dict[str, Any] = dict(vars(spec))
    if spec.request is not None:
        out.update(vars(spec.request))
    return out


def assert_fields(spec: PortSpec, expected: dict[str, Any]) -> None:
    got = fields(spec)
    assert {key: got[key] for key in expected} == expected


# ---------------------------------------------------------------- golden data


def test_golden_tables_name_real_lines() -> None:
    names = {case["name"] for case in GOLDEN}
    assert set(NMBRIDGE_REFUSES) <= names
    assert set(NMBRIDGE_READS) <= names
    assert set(REFUSED_BECAUSE) <= names
    assert len(GOLDEN) == 98


@pytest.mark.parametrize("case", GOLDEN, ids=golden_id)
def test_golden(case: dict[str, Any]) -> None:
    name = case["name"]
    if name in NMBRIDGE_REFUSES:
        refused(name, NMBRIDGE_REFUSES[name])
        return
    if not case["ok"] and name not in NMBRIDGE_READS:
        refused(name, REFUSED_BECAUSE[name])
        return
    spec = parse_port(name, no_interfaces)
    assert not spec.emulated and spec.request is not None
    if not case["ok"]:
        assert_fields(spec, NMBRIDGE_READS[name])
        return
    req = spec.request
    for field in REGISTER_FIELDS:
        assert getattr(req, field) == case[field], field
    assert req.nr_mode == case["nr_mode_name"]
    assert list(req.nr_flags) == case["nr_flags_names"]
    options = {opt["name"]: opt for opt in case["options"]}
    assert set(options) <= {"extmem", "offsets"}
    assert req.share is None
    if "extmem" in options:
        assert req.extmem is not None
        assert req.extmem["file"] == "{EXTMEM_FILE}"
        for key, golden_field in EXTMEM_FIELDS.items():
            assert int(req.extmem.get(key, 0)) == options["extmem"][golden_field], key
    else:
        assert req.extmem is None
    if "offsets" in options:
        assert req.offset is not None
        for key, golden_field in OFFSET_FIELDS.items():
            assert int(req.offset.get(key, 0)) == options["offsets"][golden_field], key
    else:
        assert req.offset is None


def test_bare_name_is_netmap_name() -> None:
    for bare, full in [("eth0", "netmap:eth0"), ("eth0^1/T@2", "netmap:eth0^1/T@2")]:
        assert parse_port(bare, no_interfaces).request == parse_port(full, no_interfaces).request


@pytest.mark.parametrize("case", [c for c in GOLDEN if c.get("undefined_behaviour")], ids=golden_id)
def test_undefined_behaviour_in_libnetmap_is_a_clean_error(case: dict[str, Any]) -> None:
    refused(case["name"], REFUSED_BECAUSE[case["name"]])


# ------------------------------------------------------------- parsing is pure

_opened: list[str] | None = None
# Events that mean "touched the system"; os.stat raises none, so it is patched below.
_IO_EVENTS = ("open", "os.", "socket.", "mmap.", "fcntl.", "subprocess.", "ctypes.", "shutil.")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _opened is not None and event.startswith(_IO_EVENTS):
        _opened.append(f"{event}{args!r}")


sys.addaudithook(_audit)  # cannot be removed; inert while _opened is None


@contextmanager
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    global _opened
    seen: list[str] = []

    def stat(*args: Any, **kwargs: Any) -> Any:
        seen.append(f"os.stat{args!r}")
        raise AssertionError("parsing must not stat anything")

    with monkeypatch.context() as patch:
        patch.setattr(os, "stat", stat)
        _opened = seen
        try:
            yield seen
        finally:
            _opened = None


@pytest.mark.parametrize(
    "name",
    [
        "netmap:eth0@share=netmap:eth1",
        "netmap:eth0@share:port=vale0:x",
        "netmap:eth0@extmem:file=/nonexistent",
        "netmap:eth0@extmem:file={EMPTY_FILE}",
        "netmap:eth0@extmem:file={EXTMEM_FILE},if-num=8,buf-num=1000,buf-size=2048",
        "netmap:eth0@extmem=/dev/shm/nm,region",
        "netmap:eth0@offset:initial=64,bits=10",
    ],
)
def test_share_and_extmem_are_read_not_opened(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def recorder(ifname: str) -> bool:
        asked.append(ifname)
        return False

    with no_io(monkeypatch) as touched:
        spec = parse_port(name, recorder)
    assert touched == [] and asked == []
    req = spec.request
    assert req is not None and req.nr_name == "eth0" and req.nr_mem_id == 0
    assert (req.share, req.extmem, req.offset).count(None) == 2


def test_share_and_extmem_values() -> None:
    req = parse_port("netmap:eth0@share=netmap:eth1^", no_interfaces).request
    assert req is not None and req.share == "netmap:eth1^"
    req = parse_port("netmap:eth0@extmem:file=/x,if-num=08,ring-size=4096", no_interfaces).request
    assert req is not None and req.extmem == {"file": "/x", "if_num": "8", "ring_size": "4096"}
    req = parse_port("netmap:eth0@extmem=/dev/shm/a,b", no_interfaces).request
    assert req is not None and req.extmem == {"file": "/dev/shm/a,b"}


def test_iface_exists_is_asked_only_about_ambiguous_valid_names() -> None:
    asked: list[str] = []

    def recorder(ifname: str) -> bool:
        asked.append(ifname)
        return False

    for name in ["netmap:eth0", "veth-a", "netmap:eth0^1", "netmap:pa{1-2", "packet:veth-1"]:
        parse_port(name, recorder)
    assert asked == []
    for name in ["netmap:veth-1", "vale0:veth-1/R"]:
        parse_port(name, recorder)
    assert asked == ["veth-1", "veth-1"]
    asked.clear()
    # not Linux interface names (a colon, 16 bytes): never passed on
    for name in ["netmap:eth0:a-1", "netmap:abcdefghijklmnop-1", "netmap:netmap:eth0-1"]:
        parse_port(name, recorder)
    assert asked == []


def test_default_iface_exists_looks_in_sysfs(monkeypatch: pytest.MonkeyPatch) -> None:
    looked: list[str] = []

    def isdir(path: str) -> bool:
        looked.append(path)
        return True

    monkeypatch.setattr(sysfs.os.path, "isdir", isdir)
    spec = parse_port("netmap:veth-1")
    assert looked == ["/sys/class/net/veth-1"]
    assert spec.ifname == "veth-1" and spec.ring is None


# ---------------------------------------------------------------- extra names

EXTRA_READS: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    # name, interfaces that exist, expected fields
    ("veth-a", (), {"kind": "nic", "ifname": "veth-a", "nr_name": "veth-a"}),
    ("br-lan^", (), {"kind": "host", "ifname": "br-lan", "nr_mode": "NR_REG_SW"}),
    ("netmap:br-lan*", (), {"kind": "nic+host", "nr_name": "br-lan"}),
    ("netmap:br-lan^2", (), {"kind": "host-ring", "nr_mode": "NR_REG_ONE_SW", "ring": 2}),
    ("netmap:veth-1", (), {"kind": "nic-ring", "ifname": "veth", "ring": 1, "nr_ringid": 1}),
    ("netmap:veth-1", ("veth-1",), {"kind": "nic", "ifname": "veth-1", "ring": None}),
    ("veth-1", ("veth-1",), {"kind": "nic", "nr_name": "veth-1", "nr_mode": "NR_REG_ALL_NIC"}),
    ("veth-1^", ("veth-1",), {"kind": "host", "nr_name": "veth-1", "nr_mode": "NR_REG_SW"}),
    ("netmap:veth-1/R", ("veth-1",), {"nr_name": "veth-1", "nr_flags": ("NR_RX_RINGS_ONLY",)}),
    ("netmap:veth-1-0", ("veth-1",), {"nr_name": "veth-1", "ring": 0}),
    ("netmap:br-lan-2", (), {"ifname": "br-lan", "nr_mode": "NR_REG_ONE_NIC", "ring": 2}),
    ("netmap:br-lan-2", ("br-lan-2",), {"ifname": "br-lan-2", "nr_mode": "NR_REG_ALL_NIC"}),
    ("netmap:eth0-007", (), {"ring": 7, "nr_ringid": 7}),
    ("netmap:eth0-4094", (), {"ring": 4094}),
    ("netmap:eth0^4094", (), {"ring": 4094, "nr_mode": "NR_REG_ONE_SW"}),
    ("tap0", (), {"kind": "nic", "nr_name": "tap0", "emulated": False}),
    ("packet0", (), {"kind": "nic", "nr_name": "packet0"}),
    ("eth0.100", (), {"kind": "nic", "nr_name": "eth0.100"}),
    # VALE
    ("vale0:a-1", (), {"kind": "vale", "ifname": "a", "nr_name": "vale0:a", "ring": 1}),
    ("vale0:veth-1", ("veth-1",), {"ifname": "veth-1", "nr_name": "vale0:veth-1"}),
    ("vale:x", (), {"kind": "vale", "vale_switch": "vale", "nr_name": "vale:x"}),
    ("vale0:a{1", (), {"kind": "pipe-master", "ifname": "a", "vale_switch": "vale0"}),
    # pipes: ids hold no '-', so -K after a pipe id is always a ring
    ("netmap:pa{1-2", (), {"kind": "pipe-master", "nr_name": "pa{1", "ring": 2, "pipe_id": "1"}),
    ("netmap:veth-a}x_9", (), {"kind": "pipe-slave", "ifname": "veth-a", "nr_name": "veth-a}x_9"}),
    ("netmap:{1", (), {"kind": "pipe-master", "ifname": "", "nr_name": "{1"}),
    # flags, regions, options
    ("netmap:eth0/xRTztr", (), {"nr_flags": FLAG_ORDER}),
    ("netmap:eth0/xx", (), {"nr_flags": ("NR_EXCLUSIVE",)}),
    ("netmap:eth0/R@2/x", (), {"nr_mem_id": 2, "nr_flags": ("NR_EXCLUSIVE", "NR_RX_RINGS_ONLY")}),
    ("netmap:eth0/@2", (), {"nr_mem_id": 2, "nr_flags": ()}),
    ("netmap:eth0@2@2", (), {"nr_mem_id": 2}),
    ("netmap:eth0@65535", (), {"nr_mem_id": 65535}),
    ("netmap:eth0@conf:tx-rings=2@conf:rings=4", (), {"nr_tx_rings": 4, "nr_rx_rings": 4}),
    ("netmap:eth0@conf:rings=4,tx_rings=2", (), {"nr_tx_rings": 2, "nr_rx_rings": 4}),
    ("netmap:eth0@conf:host-rings=65535", (), {"nr_host_tx_rings": 65535}),
    ("netmap:eth0@conf:slots=4294967295", (), {"nr_tx_slots": 4294967295}),
    ("netmap:eth0@conf:rings=0", (), {"nr_tx_rings": 0}),
    ("eth0@share=eth1", (), {"share": "eth1"}),
    ("netmap:eth0@share:port=vale0:a", (), {"share": "vale0:a"}),
    # emulated ports
    ("packet:veth0", (), {"kind": "packet", "ifname": "veth0", "emulated": True, "request": None}),
    ("packet:veth-1", (), {"kind": "packet", "ifname": "veth-1", "ring": None}),
    ("packet:abcdefghijklmno", (), {"ifname": "abcdefghijklmno"}),
    ("tap:nmb0", (), {"kind": "tap", "ifname": "nmb0", "emulated": True, "request": None}),
    ("tap:br-lan.7", (), {"kind": "tap", "ifname": "br-lan.7"}),
]


@pytest.mark.parametrize(
    ("name", "existing", "expected"),
    EXTRA_READS,
    ids=[f"{n} [{','.join(e)}]" if e else n for n, e, _ in EXTRA_READS],
)
def test_extra_names(name: str, existing: tuple[str, ...], expected: dict[str, Any]) -> None:
    spec = parse_port(name, interfaces(*existing))
    assert spec.text == name
    assert_fields(spec, expected)


EXTRA_REFUSED = [
    # name, the part of the message that names the bad part
    ("netmap:", "empty interface name"),
    ("netmap:^", "empty interface name"),
    ("netmap:-1", "empty interface name"),
    ("vale:", "empty VALE port name after 'vale:'"),
    ("vale0:{1", "empty VALE port name"),
    ("vale0:^", "empty VALE port name"),
    ("netmap:pa{/R", "empty pipe id after '{'"),
    ("netmap:pa}-1", "empty pipe id after '}'"),
    ("netmap:pa{1-x", "'1-x' is not a pipe id"),
    ("netmap:pa{1.2", "'1.2' is not a pipe id"),
    ("netmap:veth-1^", "mode '^' cannot follow ring -1 (and there is no interface named 'veth-1')"),
    ("netmap:pa{1-1*", "mode '*' cannot follow ring -1"),
    ("netmap:eth0-", "name 'eth0-' ends with '-'"),
    ("netmap:eth0--1", "name 'eth0-' ends with '-'"),
    ("netmap:eth0-/R", "name 'eth0-' ends with '-'"),
    ("netmap:eth0-4095", "ring -4095 is out of range 0..4094"),
    ("netmap:eth0^4095", "ring ^4095 is out of range 0..4094"),
    ("netmap:eth0^" + "9" * 5000, "is out of range 0..4094"),
    ("netmap:eth0-1@2-1", "unexpected '-' after '@2'"),
    ("netmap:eth0/q", "unknown flag 'q' after '/'"),
    ("netmap:eth0/R/x", "unknown flag '/' after '/'"),
    ("netmap:eth0/R^", "unknown flag '^' after '/'"),
    ("netmap:eth0@2@3", "two memory regions (@2 and @3)"),
    ("netmap:eth0@00", "memory region @00 is out of range"),
    ("netmap:eth0@2@share=netmap:eth1", "@2 and @share both choose the memory region"),
    ("netmap:eth0@share=netmap:a@share=netmap:b", "option share given twice"),
    ("netmap:eth0@share=packet:eth1", "option share: 'packet:eth1' is not a netmap port"),
    ("netmap:eth0@share=foo:x", "option share: 'foo:x': unknown prefix 'foo:'"),
    ("netmap:eth0@share=", "empty value for option share"),
    ("netmap:eth0@share", "option share needs a value"),
    ("netmap:eth0@offset:initial=1@offset:initial=2", "option offset given twice"),
    ("netmap:eth0@offset:bits=3", "option offset needs key initial"),
    ("netmap:eth0@conf:", "option conf has no keys"),
    ("netmap:eth0@conf", "option conf needs a value"),
    ("netmap:eth0@conf:rings=2,rings=3", "key rings given twice (option conf)"),
    ("netmap:eth0@conf:rings=2,tx_rings=1,tx-rings=1", "key tx-rings given twice"),
    ("netmap:eth0@conf:bogus=1", "unknown key 'bogus' in option conf"),
    ("netmap:eth0@conf:,rings=1", "empty key in option conf"),
    ("netmap:eth0@conf:rings=+4", "'+4' is not a number (option conf, key rings)"),
    ("netmap:eth0@conf:rings=-1", "'-1' is not a number (option conf, key rings)"),
    ("netmap:eth0@conf:rings=0x10", "'0x10' is not a number"),
    ("netmap:eth0@conf:rings=\u0661", "is not a number"),  # ARABIC-INDIC DIGIT ONE
    ("netmap:eth0@conf:rings=65536", "'65536' is out of range 0..65535"),
    ("netmap:eth0@conf:slots=4294967296", "'4294967296' is out of range 0..4294967295"),
    ("netmap:eth0@conf:host-rings=99999999999999999999999", "is out of range 0..65535"),
    ("netmap:eth0@extmem:file=/x,if-num=-1", "'-1' is not a number (option extmem, key if-num)"),
    ("netmap:eth0@extmem:file=/x,if-num", "key if-num needs '=value' (option extmem)"),
    ("netmap:eth0@extmem:file=", "empty value (option extmem, key file)"),
    ("eth0:1", "unknown prefix 'eth0:'"),
    (":eth0", "unknown prefix ':'"),
    ("Netmap:eth0", "unknown prefix 'Netmap:'"),
    ("netmap0", "missing ':' after 'netmap'"),
    ("valeria", "missing ':' after the VALE switch"),
    ("vale\u00e9:a", "is not a VALE switch id"),
    ("netmap:eth\t0", "unprintable character '\\t' at position 10"),
    ("netmap:eth\x000", "unprintable character '\\x00'"),
    ("netmap:eth0\n", "leading or trailing whitespace"),
    ("netmap:eth\u00a00", "unprintable character '\\xa0'"),
    ("netmap:eth\udc800", "unprintable character '\\udc80'"),
    ("x" * 64, "is 64 bytes long, netmap takes at most 63"),
    ("netmap:" + "\u00e9" * 32, "is 64 bytes long"),
    # emulated ports: a Linux interface name and nothing else
    ("packet:", "empty interface name after 'packet:'"),
    ("tap:", "empty interface name after 'tap:'"),
    ("packet:eth0^", "packet ports take no mode, flag, memory region or option ('^')"),
    ("packet:eth0*", "take no mode"),
    ("packet:eth0/R", "('/R')"),
    ("tap:nmb0@2", "tap ports take no mode, flag, memory region or option ('@2')"),
    ("tap:nmb0@conf:rings=2", "('@conf:rings=2')"),
    ("packet:abcdefghijklmnop", "'abcdefghijklmnop' is 16 bytes long, Linux allows 15"),
    ("tap:" + "\u00e9" * 8, "is 16 bytes long"),
    ("packet:a b", "whitespace in the interface name 'a b'"),
    ("packet:a:b", "':' is not allowed in an interface name"),
    ("packet:..", "'..' is not an interface name"),
    ("tap:.", "'.' is not an interface name"),
]


@pytest.mark.parametrize(
    ("name", "fragment"), EXTRA_REFUSED, ids=[n[:80] for n, _ in EXTRA_REFUSED]
)
def test_extra_names_refused(name: str, fragment: str) -> None:
    refused(name, fragment)


def test_message_quotes_the_name_on_one_line() -> None:
    message = refused("netmap:eth\n0", "unprintable character")
    assert message.startswith("bad port name 'netmap:eth\\n0': ")


def test_example_message_from_the_brief() -> None:
    message = refused("netmap:eth0@conf:rings=x", "")
    assert message == (
        "bad port name 'netmap:eth0@conf:rings=x': 'x' is not a number (option conf, key rings)"
    )


# ------------------------------------------------------------------- describe

NETMAP_KEYS = {
    "name",
    "kind",
    "interface",
    "emulated",
    "nr_name",
    "nr_mode",
    "nr_ringid",
    "nr_flags",
    "nr_mem_id",
    "nr_tx_slots",
    "nr_rx_slots",
    "nr_tx_rings",
    "nr_rx_rings",
    "nr_host_tx_rings",
    "nr_host_rx_rings",
    "rings",
    "options",
}


@pytest.mark.parametrize(
    ("name", "rings"),
    [
        ("netmap:eth0", "all hardware rings"),
        ("eth0^", "all host rings"),
        ("netmap:eth0^2", "host ring 2"),
        ("netmap:eth0*", "all hardware rings and host rings"),
        ("netmap:eth0-3/R", "hardware ring 3, RX only"),
        ("netmap:eth0/T", "all hardware rings, TX only"),
        ("netmap:pa{1", "all rings"),
        ("vale0:a-1", "ring 1"),
    ],
)
def test_describe_netmap_port(name: str, rings: str) -> None:
    spec = parse_port(name, no_interfaces)
    described = describe(spec)
    assert set(described) == NETMAP_KEYS
    assert described["rings"] == rings
    assert described["name"] == name and described["emulated"] is False
    assert described["nr_mode"] == spec.request.nr_mode  # type: ignore[union-attr]
    assert json.loads(json.dumps(described)) == described


def test_describe_values() -> None:
    described = describe(parse_port("netmap:eth0-1/xR@3@conf:rings=2", no_interfaces))
    assert described == {
        "name": "netmap:eth0-1/xR@3@conf:rings=2",
        "kind": "nic-ring",
        "interface": "eth0",
        "emulated": False,
        "nr_name": "eth0",
        "nr_mode": "NR_REG_ONE_NIC",
        "nr_ringid": 1,
        "nr_flags": ["NR_EXCLUSIVE", "NR_RX_RINGS_ONLY"],
        "nr_mem_id": 3,
        "nr_tx_slots": 0,
        "nr_rx_slots": 0,
        "nr_tx_rings": 2,
        "nr_rx_rings": 2,
        "nr_host_tx_rings": 0,
        "nr_host_rx_rings": 0,
        "rings": "hardware ring 1, RX only",
        "options": {},
    }


def test_describe_options() -> None:
    spec = parse_port("netmap:eth0@share=netmap:eth1@offset:initial=64", no_interfaces)
    assert describe(spec)["options"] == {"share": "netmap:eth1", "offset": {"initial": "64"}}
    spec = parse_port("netmap:eth0@extmem:file=/x,buf-num=9", no_interfaces)
    assert describe(spec)["options"] == {"extmem": {"file": "/x", "buf_num": "9"}}


@pytest.mark.parametrize("name", ["packet:veth0", "tap:nmb0"])
def test_describe_emulated_port(name: str) -> None:
    described = describe(parse_port(name, no_interfaces))
    assert described == {
        "name": name,
        "kind": name.split(":")[0],
        "interface": name.split(":")[1],
        "emulated": True,
    }


def test_describe_lines() -> None:
    lines = describe_lines(parse_port("netmap:eth0^1/R@share=netmap:eth1", no_interfaces))
    assert lines[:5] == [
        "name: netmap:eth0^1/R@share=netmap:eth1",
        "kind: host-ring",
        "interface: eth0",
        "emulated: no",
        "nr_name: eth0",
    ]
    assert "nr_flags: NR_RX_RINGS_ONLY" in lines
    assert "rings: host ring 1, RX only" in lines
    assert lines[-1] == "option share: netmap:eth1"
    assert describe_lines(parse_port("tap:nmb0", no_interfaces)) == [
        "name: tap:nmb0",
        "kind: tap",
        "interface: nmb0",
        "emulated: yes",
    ]
    lines = describe_lines(parse_port("eth0@extmem:file=/x,if-num=2", no_interfaces))
    assert lines[-2:] == ["rings: all hardware rings", "option extmem: file=/x, if_num=2"]
    assert "nr_flags: none" in lines


# ------------------------------------------------------------------ any text


def check_any(name: str, iface_exists: Callable[[str], bool] = no_interfaces) -> None:
    """A PortSpec that keeps netmap's limits, or BadPortName: nothing else."""
    try:
        spec = parse_port(name, iface_exists)
    except BadPortName as exc:
        assert str(exc).startswith("bad port name '")
        assert "\n" not in str(exc)
        return
    assert spec.text == name
    assert spec.kind in KINDS
    assert spec.emulated == (spec.request is None) == (spec.kind in ("packet", "tap"))
    described = describe(spec)
    assert json.loads(json.dumps(described)) == described
    assert all("\n" not in line for line in describe_lines(spec))
    req = spec.request
    if req is None:
        assert 0 < len(spec.ifname.encode()) <= 15
        return
    assert 0 < len(req.nr_name.encode()) <= 63
    assert not any(ch.isspace() for ch in req.nr_name)
    assert req.nr_mode in MODES
    assert 0 <= req.nr_ringid <= 4094
    assert (spec.ring is None) == (req.nr_mode not in ("NR_REG_ONE_NIC", "NR_REG_ONE_SW"))
    assert list(req.nr_flags) == [f for f in FLAG_ORDER if f in req.nr_flags]
    assert 0 <= req.nr_mem_id <= 65535
    for ring_count in (req.nr_tx_rings, req.nr_rx_rings, req.nr_host_tx_rings):
        assert 0 <= ring_count <= 65535
    assert 0 <= req.nr_host_rx_rings <= 65535
    assert 0 <= req.nr_tx_slots <= 2**32 - 1 and 0 <= req.nr_rx_slots <= 2**32 - 1
    assert not (req.share is not None and req.nr_mem_id)


def checked_iface_exists(ifname: str) -> bool:
    assert 0 < len(ifname.encode()) <= 15 and not any(c in "/: " for c in ifname)
    return len(ifname) % 2 == 0  # either answer, deterministically


FRAGMENTS = [
    "netmap:", "netmap", "vale", "vale0:", "valeX-1:", "packet:", "tap:", "foo:", ":",
    "eth0", "veth", "br", "a", "-", "0", "1", "07", "4094", "4095", "65537",
    "99999999999999999999", "^", "*", "/", "x", "R", "T", "z", "t", "r", "q", "@", "2",
    "conf", "conf:", "conf=", "rings", "tx-rings", "host_rings", "slots", "=", ",",
    "share=", "share:port=", "extmem:", "extmem=", "file", "file=", "/tmp/f", "if-num",
    "offset:", "initial", "bits", "{", "}", " ", ".", "..", "\u00e9", "\x00", "\n",
]  # fmt: skip


# A name as the grammar builds it, each part right or wrong, then some noise.
STRUCTURED = st.tuples(
    st.sampled_from(["netmap:", "vale0:", "vale:", "", "packet:", "tap:", "foo:", "netmap"]),
    st.sampled_from(["eth0", "veth-1", "br-lan", "pa{1", "pa}x", "a", "", "eth 0", "eth\u00e9"]),
    st.sampled_from(["", "^", "^1", "*", "-0", "-4094", "-4095", "^^", "-"]),
    st.sampled_from(["", "/", "/x", "/Rx", "/q", "/T@"]),
    st.sampled_from(["", "@1", "@0", "@65537", "@", "@2@2"]),
    st.lists(
        st.sampled_from(
            [
                "@conf:rings=4",
                "@conf:tx-rings=2,rings=1",
                "@conf:rings=",
                "@conf:rings",
                "@conf:rings=4,",
                "@share=netmap:eth1",
                "@extmem:file=/x,if-num=2",
                "@offset:initial=64",
                "@bogus",
                "@",
            ]
        ),
        max_size=2,
    ).map("".join),
    st.just("") | st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=2).map("".join),
).map("".join)


@settings(max_examples=2000, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(STRUCTURED)
def test_structured_names_give_a_spec_or_bad_port_name(name: str) -> None:
    check_any(name, checked_iface_exists)


@settings(max_examples=500, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_any_text_gives_a_spec_or_bad_port_name(name: str) -> None:
    check_any(name, checked_iface_exists)


@settings(max_examples=2000, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join))
def test_grammar_fragments_give_a_spec_or_bad_port_name(name: str) -> None:
    check_any(name, checked_iface_exists)


@pytest.mark.parametrize(
    "name",
    [
        "netmap:" + "a-" * 50_000 + "1",
        "netmap:eth0@conf:" + "rings=1," * 50_000,
        "netmap:eth0" + "@" * 100_000,
        "netmap:pa{" + "1" * 100_000,
        "vale" + "0" * 100_000 + ":a",
        "-" * 100_000,
        "netmap:eth0^" + "0" * 100_000 + "1",
    ],
    ids=lambda name: f"{name[:20]}...({len(name)})",
)
def test_long_names_end_quickly(name: str) -> None:
    started = time.monotonic()
    check_any(name)
    assert time.monotonic() - started < 5  # linear work: a hang, not a slow machine, fails this


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        ("netmap:eth0", "netmap:eth0^", False),
        ("netmap:eth0", "netmap:eth0*", True),
        ("netmap:eth0^", "netmap:eth0*", True),
        ("netmap:eth0", "netmap:eth0-1", True),
        ("netmap:eth0-0", "netmap:eth0-1", False),
        ("netmap:eth0-1/R", "netmap:eth0-1/T", True),
        ("netmap:eth0^0", "netmap:eth0^1", False),
        ("netmap:eth0^1", "netmap:eth0^", True),
        ("netmap:eth0-1", "netmap:eth0^1", False),
        ("netmap:eth0", "netmap:eth1", False),
        ("netmap:pa{1", "netmap:pa}1", False),
        ("netmap:pa{1", "netmap:pa{1", True),
        ("vale0:a", "vale0:b", False),
        ("vale0:a", "vale0:a", True),
        ("packet:eth0", "netmap:eth0", False),
    ],
)
def test_share_rings(a: str, b: str, shared: bool) -> None:
    assert share_rings(parse_port(a), parse_port(b)) is shared
    assert share_rings(parse_port(b), parse_port(a)) is shared

"""The register request the C core builds from a parsed name is libnetmap's, byte for byte.

The golden data (tests/data/nmport-parse.jsonl, see tests/data/README.md) holds the
88 bytes of nmreq_header (pointers zeroed) and the 56 bytes of nmreq_register that
libnetmap's nmport_prepare() built for each name it read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nmbridge import portspec
from nmbridge.engine import constant, register_request_bytes
from nmbridge.portspec import parse_port

GOLDEN_FILE = Path(__file__).resolve().parent.parent / "data" / "nmport-parse.jsonl"
GOLDEN: list[dict[str, Any]] = [
    json.loads(line) for line in GOLDEN_FILE.read_text(encoding="utf-8").splitlines() if line
]

# Names libnetmap reads and nmbridge refuses on purpose (numbers that would wrap,
# empty values, spaces, an empty VALE port); tests/unit/test_portspec.py checks
# each refusal and its message.
NMBRIDGE_REFUSES = {
    "netmap:eth0@65537",
    "netmap:eth0@conf:rings=x",
    "netmap:eth0@conf:rings=70000",
    "netmap:eth0@conf:rings=",
    "vale0:",
    "netmap:eth 0",
    "netmap:eth0 ",
    "netmap:eth0 ^",
}

CASES = [
    case
    for case in GOLDEN
    if case["ok"] and not case["options"] and case["name"] not in NMBRIDGE_REFUSES
]


def no_interfaces(ifname: str) -> bool:
    return False


def test_cases_cover_the_golden_file() -> None:
    names = {c["name"] for c in GOLDEN if c["ok"] and not c["options"]}
    assert NMBRIDGE_REFUSES.issubset(names)
    assert len(CASES) == 50  # libnetmap reads 61 names: 3 carry options, nmbridge refuses 8


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_request_bytes_equal_libnetmap(case: dict[str, Any]) -> None:
    request = parse_port(case["name"], no_interfaces).request
    assert request is not None
    hdr, reg = register_request_bytes(request)
    assert hdr.hex() == case["hdr_hex"]
    assert reg.hex() == case["reg_hex"]


def test_every_name_portspec_uses_is_a_constant_of_the_core() -> None:
    modes = ["NR_REG_ALL_NIC", "NR_REG_SW", "NR_REG_NIC_SW", "NR_REG_ONE_NIC", "NR_REG_ONE_SW"]
    for name in modes + list(portspec.FLAG_LETTERS.values()):
        assert constant(name) > 0, name


def test_flag_names_come_in_ascending_bit_order() -> None:
    request = parse_port("netmap:eth0/rtzxTR", no_interfaces).request
    assert request is not None
    values = [constant(flag) for flag in request.nr_flags]
    assert len(values) == len(portspec.FLAG_LETTERS)
    assert values == sorted(values)

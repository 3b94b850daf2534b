"""privileges.py: what the ports need, read from a CapEff mask (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmbridge import privileges
from nmbridge.portspec import parse_port

ALL = (1 << 41) - 1
ADMIN, RAW = 1 << privileges.CAP_NET_ADMIN, 1 << privileges.CAP_NET_RAW


@pytest.mark.parametrize(("text", "caps"), [
    ("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n", ALL),
    ("CapEff:\t0000000000003000\n", ADMIN | RAW),
    ("CapEff:\t0000000000000000", 0),
    ("Name:\tx\n", None),
    ("CapEff:\tzz\n", None),
])
def test_effective_caps(text: str, caps: int | None) -> None:
    assert privileges.effective_caps(text) == caps


@pytest.mark.parametrize(("caps", "lacking"), [
    (ALL, []),
    (ADMIN | RAW, []),
    (RAW, ["tap:nmbt0 needs CAP_NET_ADMIN"]),
    (ADMIN, ["packet:lo needs CAP_NET_RAW"]),
    (0, ["packet:lo needs CAP_NET_RAW", "tap:nmbt0 needs CAP_NET_ADMIN"]),
    (None, []),  # unknown: the kernel will say
])
def test_missing_capabilities_of_emulated_ports(caps: int | None, lacking: list[str],
                                               tmp_path: Path) -> None:
    specs = [parse_port("packet:lo"), parse_port("tap:nmbt0")]
    assert privileges.missing(specs, caps, str(tmp_path / "netmap")) == lacking


def test_kernel_ports_need_the_netmap_device(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    device = tmp_path / "netmap"
    specs = [parse_port("netmap:eth0"), parse_port("netmap:eth0^")]
    assert privileges.missing(specs, 0, str(device)) == []  # absent: status 3 says it later
    device.write_text("")
    monkeypatch.setattr(privileges.os, "access", lambda *a, **kw: False)
    assert privileges.missing(specs, ALL, str(device)) == [
        f"netmap:eth0 needs read and write access to {device}",
        f"netmap:eth0^ needs read and write access to {device}",
    ]

"""The start warning about netmap's fwd parameter (dev.netmap.fwd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmbridge.nic import netmap_fwd_warning


@pytest.mark.parametrize(("value", "warned"), [("1\n", True), ("0\n", False), ("", False)])
def test_fwd_parameter(tmp_path: Path, value: str, warned: bool) -> None:
    param = tmp_path / "fwd"
    param.write_text(value)
    lines = netmap_fwd_warning(str(param))
    assert bool(lines) is warned
    if warned:
        (line,) = lines
        assert "fwd parameter is on" in line and f"echo 0 > {param}" in line


def test_no_netmap_module_no_warning(tmp_path: Path) -> None:
    assert netmap_fwd_warning(str(tmp_path / "absent")) == []

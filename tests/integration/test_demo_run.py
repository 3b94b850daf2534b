"""`nmbridge demo` as a user runs it: the installed command, from a directory that
holds a source tree (a clone after `pip install .`), which must not shadow the
installed package in the demo's children."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

NMBRIDGE = str(Path(sys.executable).parent / "nmbridge")

pytestmark = pytest.mark.root


def test_demo_from_a_source_tree(tmp_path: Path) -> None:
    pkg = tmp_path / "nmbridge"
    (pkg / "lab").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "lab" / "__init__.py"):
        init.write_text("raise ImportError('the source tree in the working directory')\n")
    res = subprocess.run([NMBRIDGE, "demo", "--duration", "1", "--rate", "50", "--no-live"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert "did not start" not in res.stderr and "source tree" not in res.stderr


def test_the_demo_carries_tcp_with_the_offloads_on() -> None:
    """The newcomer's first run shows TCP through the bridge both ways, every byte
    checked, crossing as TSO super-frames (the sandbox keeps Linux's default offloads)."""
    res = subprocess.run([NMBRIDGE, "demo", "--duration", "4", "--rate", "200", "--no-live"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    tcp = [k for k, line in enumerate(lines) if line.startswith("  tcp  ")]
    assert [lines[k].split()[1:4] for k in tcp] == [["wire", "->", "host"],
                                                    ["host", "->", "wire"]], res.stdout
    for k in tcp:
        assert "every byte intact" in lines[k], lines[k]
        assert "(TSO super-frames, carried whole)" in lines[k + 1], lines[k + 1]
    assert res.stdout.rstrip().endswith("result: ok"), res.stdout

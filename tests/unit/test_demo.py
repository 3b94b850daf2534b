"""nmbridge demo's children without root: they run the installed package wherever the
working directory is, and a child that fails is heard in its own words."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nmbridge import __version__
from nmbridge.commands.demo import child_error
from nmbridge.lab import python_m, traffic


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A directory holding a tree named nmbridge that must not be imported: a clone
    after `pip install .` (its C core uncompiled) is the usual case."""
    pkg = tmp_path / "nmbridge"
    (pkg / "lab").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "lab" / "__init__.py"):
        init.write_text("raise ImportError('the source tree in the working directory')\n")
    return tmp_path


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def test_plain_python_m_is_shadowed_by_the_working_directory(source_tree: Path) -> None:
    """What the demo did: the tree in the working directory wins (this test's control)."""
    res = run([sys.executable, "-m", "nmbridge", "--version"], source_tree)
    assert res.returncode != 0 and "the source tree in the working directory" in res.stderr


def test_the_demos_bridge_runs_the_installed_package(source_tree: Path) -> None:
    res = run([*python_m("nmbridge"), "--version"], source_tree)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"nmbridge {__version__}\n", "")


def test_the_demos_traffic_runs_the_installed_package(source_tree: Path) -> None:
    res = run(traffic.command("--help"), source_tree)
    assert res.returncode == 0, res.stderr
    assert "the source tree" not in res.stderr


@pytest.mark.parametrize(("lines", "said"), [
    (["nmbridge: warning: x", "nmbridge: error: packet:v0: busy", "later"],
     "packet:v0: busy"),
    (["Traceback (most recent call last):", '  File "x", line 1, in <module>',
     "ImportError: nmbridge's C core is not built: install the package with 'pip install .'",
     ""], "ImportError: nmbridge's C core is not built: install the package with 'pip "
          "install .'"),
    (["\x1b]0;title\x07"], "\\x1b]0;title\\x07"),
    ([], ""),
])
def test_a_failed_child_is_heard_in_its_own_words(lines: list[str], said: str) -> None:
    assert child_error(lines) == said


def _tcp_pair(stream: bytes, run_id: int) -> dict[str, object]:
    """tcp-recv's report for a connection that sent stream (over loopback: the checker
    alone, no namespaces)."""
    import socket
    import threading

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready = threading.Event()
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.update(
        traffic.tcp_recv("127.0.0.1", port, run_id, 10, ready.set)))
    t.start()
    assert ready.wait(10)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(stream)
    t.join(10)
    return out


def test_the_tcp_receiver_checks_every_byte_of_the_stream() -> None:
    block = traffic.tcp_block(7)
    whole = block * 2 + block[:12345]  # around the block's end, and a short tail
    good = _tcp_pair(whole, 7)
    assert (good["bytes"], good["eof"], good["corrupt_reads"], good["intact"], good["error"]) == (
        len(whole), True, 0, True, "")
    flipped = bytearray(whole)
    flipped[len(block) + 999] ^= 0x01  # one bit, in the second round of the block
    bad = _tcp_pair(bytes(flipped), 7)
    assert (bad["bytes"], bad["eof"], bad["intact"]) == (len(whole), True, False)
    assert bad["corrupt_reads"] == 1
    other = _tcp_pair(block[:4096], 8)  # another run's stream
    assert other["intact"] is False

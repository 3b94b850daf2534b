"""Security properties that need no root: what nmbridge creates on disk and with what
mode, and that no command it runs goes through a shell.

(The stats file's own 0644 is in test_counters.py; what an unprivileged run meets is
in tests/integration/test_faults.py.)
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmbridge.commands import bridge as runner
from nmbridge.counters import StatsWriter, open_stats_dir
from nmbridge.errors import UsageError

PACKAGE = Path(runner.__file__).resolve().parents[1]


@pytest.fixture(params=[0o000, 0o002, 0o077], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stats_dir_is_made_0755_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """Readers are other users; only the owner may add, replace or remove stats files
    (a group- or world-writable directory would let anyone plant or swap them)."""
    made = tmp_path / "run" / "nmbridge"
    runner.check_stats_dir(str(made))
    assert _mode(made) == 0o755


def test_the_stats_writer_makes_its_directory_0755_too(tmp_path: Path, umask: int) -> None:
    made = tmp_path / "run2"
    w = StatsWriter(str(made), "x", ports=[], rings=[], record_fields=["frames", "bytes"],
                    record_size=16, counters_header={"seq": 0, "heartbeat_ns": 8,
                                                     "nrings": 16, "state": 24},
                    counters_header_size=32, zero_copy=True)
    try:
        assert _mode(made) == 0o755
        assert _mode(w.path) == 0o644
        assert w.path.stat().st_uid == os.geteuid()
    finally:
        w.close()


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    """A directory the administrator made is theirs: nmbridge does not chmod it."""
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    os.chmod(mine, 0o700)
    os.close(open_stats_dir(str(mine)))
    runner.check_stats_dir(str(mine))
    assert _mode(mine) == 0o700


def test_the_writability_probe_leaves_nothing(tmp_path: Path) -> None:
    runner.check_stats_dir(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_the_probe_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    """A link named like the probe, pointing elsewhere, is not written through."""
    target = tmp_path / "target"
    stats_dir = tmp_path / "d"
    stats_dir.mkdir()
    (stats_dir / f".probe.{os.getpid()}.tmp").symlink_to(target)
    with pytest.raises(Exception):  # noqa: B017 - any refusal; the point is the target
        runner.check_stats_dir(str(stats_dir))
    assert not target.exists()


# ------------------------------------------------------------------ no shell


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    if isinstance(func, ast.Name):
        return func.id
    return "?"


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_sources_are_found() -> None:
    assert len(SOURCES) > 10 and PACKAGE / "commands" / "bridge.py" in SOURCES


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_no_command_goes_through_a_shell(source: Path) -> None:
    """Every command nmbridge runs is an argument list: nothing a user typed (a port
    or interface name, a path) can become shell syntax."""
    tree = ast.parse(source.read_text(), str(source))
    for call in _calls(tree):
        name = _name(call.func)
        where = f"{source.name}:{call.lineno}: {name}"
        assert name not in ("os.system", "os.popen", "os.execl", "os.execlp", "os.spawnl",
                            "commands.getoutput", "subprocess.getoutput",
                            "subprocess.getstatusoutput"), where
        for kw in call.keywords:
            if kw.arg == "shell":
                assert isinstance(kw.value, ast.Constant) and kw.value.value is False, where
        if name.startswith("subprocess.") and call.args:
            assert not isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)), (
                f"{where}: a command given as a string")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_stats_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    """Review item 7: a world- or group-writable --stats-dir was accepted, and whoever
    could write there could plant or swap the files root writes and reads."""
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(UsageError, match=rf"is writable by others \(mode 0{mode:o}\)"):
        runner.check_stats_dir(str(d))
    with pytest.raises(UsageError, match="is writable by others"):
        StatsWriter(str(d), "x", ports=[], rings=[], record_fields=["frames", "bytes"],
                    record_size=16, counters_header={"seq": 0, "heartbeat_ns": 8,
                                                     "nrings": 16, "state": 24},
                    counters_header_size=32, zero_copy=True)
    assert os.listdir(d) == []


def test_a_sticky_directory_is_refused_too(tmp_path: Path) -> None:
    """As /tmp is: others cannot remove our files there, but they can make first the
    names a bridge needs (its lock, its stats file, its offloads record)."""
    d = tmp_path / "sticky"
    d.mkdir()
    os.chmod(d, 0o1777)
    with pytest.raises(UsageError, match=r"is writable by others \(mode 1777\)"):
        runner.check_stats_dir(str(d))


def test_a_symbolic_link_as_the_stats_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UsageError, match="is a symbolic link: give the directory itself"):
        runner.check_stats_dir(str(tmp_path / "link"))

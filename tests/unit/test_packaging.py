"""The sdist and the wheel, built as `pip install .` and a release would build them.

Once per session (tmp_path_factory): the work tree is copied (without .git,
the venv and build products), `python -m build --sdist --no-isolation` makes
the sdist, and the wheel is built from the unpacked sdist, so that a missing
file in the sdist fails the wheel's build. The wheel is then installed into a
prefix of its own, where the installed command runs and `man nmbridge` finds
the page. A few seconds: the C core compiles once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

import nmbridge

ROOT = Path(__file__).resolve().parents[2]
NAME = f"nmbridge-{nmbridge.__version__}"
#: build products and local state that never go into a build
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.o", "*.pyc",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", "_core.c",
)


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path
    names: list[str]  # the sdist's members, without the leading NAME/
    wheel_names: list[str]


def _build(args: list[str], cwd: Path, outdir: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "build", "--no-isolation", *args, "--outdir",
                          str(outdir), str(cwd)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"build {args}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    work = tmp_path_factory.mktemp("packaging")
    tree, out = work / "tree", work / "dist"
    shutil.copytree(ROOT, tree, ignore=IGNORED, symlinks=True)
    _build(["--sdist"], tree, out)
    (sdist,) = out.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
        if hasattr(tarfile, "data_filter"):  # Python 3.9.17+, 3.10.12+, 3.11.4+
            tar.extractall(work / "unpacked", filter="data")
        else:
            tar.extractall(work / "unpacked")  # our own sdist
    _build(["--wheel"], work / "unpacked" / NAME, out)
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = zf.namelist()
    prefix = f"{NAME}/"
    return Dists(sdist, wheel, sorted(m[len(prefix):] for m in members if m.startswith(prefix)),
                 wheel_names)


def _tree_files(*patterns: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern)}


# ------------------------------------------------------------ the sdist


def test_the_sdist_carries_the_c_core_and_its_declarations(dists: Dists) -> None:
    sources = _tree_files("nmbridge/_ffi/src/*.c", "nmbridge/_ffi/src/*.h",
                          "nmbridge/_ffi/cdef/*.h", "nmbridge/_ffi/build.py")
    assert len(sources) > 10
    assert sources <= set(dists.names), sorted(sources - set(dists.names))


def test_the_sdist_carries_the_man_page_unit_readme_and_build_files(dists: Dists) -> None:
    for name in ("man/nmbridge.8", "systemd/nmbridge@.service", "README.md", "pyproject.toml",
                 "setup.py", "MANIFEST.in", "PKG-INFO"):
        assert name in dists.names, name
    python = _tree_files("nmbridge/*.py") - {"nmbridge/_ffi/_core.py"}
    assert python <= set(dists.names)


def test_the_sdist_carries_no_build_products(dists: Dists) -> None:
    products = [n for n in dists.names if n.endswith((".so", ".o", ".pyc"))
                or n == "nmbridge/_ffi/_core.c" or "__pycache__" in n]
    assert products == []


# ------------------------------------------------------------ the wheel


def test_the_wheel_has_the_compiled_core_for_this_platform(dists: Dists) -> None:
    cores = [n for n in dists.wheel_names if n.startswith("nmbridge/_ffi/_core")]
    assert len(cores) == 1 and cores[0].endswith(".so"), cores
    # a compiled wheel is tagged with a platform, not "any"
    assert not dists.wheel.name.endswith("-any.whl") and "linux" in dists.wheel.name
    assert "-cp39-abi3-" in dists.wheel.name  # the core is built for the stable ABI


def test_the_wheel_carries_the_man_page_and_the_unit_as_data(dists: Dists) -> None:
    data = f"{NAME}.data/data/"
    with zipfile.ZipFile(dists.wheel) as zf:
        assert zf.read(data + "share/man/man8/nmbridge.8") == (ROOT / "man/nmbridge.8").read_bytes()
        assert zf.read(data + "lib/systemd/system/nmbridge@.service") == (
            ROOT / "systemd/nmbridge@.service").read_bytes()
        entry_points = zf.read(f"{NAME}.dist-info/entry_points.txt").decode()
    assert "nmbridge = nmbridge.cli:main" in entry_points


# ------------------------------------------------------------ installed


@pytest.fixture(scope="session")
def installed(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a prefix of its own, as `pip install .` would install it."""
    prefix = tmp_path_factory.mktemp("prefix")
    # --ignore-installed: without it pip first uninstalls the nmbridge under test (this
    # environment's, an editable install) and the rest of the suite loses its command
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
         "--ignore-installed", "--disable-pip-version-check", "--prefix", str(prefix),
         str(dists.wheel)],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return prefix


def _site_packages(prefix: Path) -> Path:
    (found,) = {p.parent for p in prefix.glob("lib/python*/site-packages/nmbridge")}
    return found


def test_the_installed_command_runs_the_installed_core(installed: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(_site_packages(installed))}
    res = subprocess.run([str(installed / "bin" / "nmbridge"), "--version"], capture_output=True,
                         text=True, env=env, cwd=installed, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"nmbridge {nmbridge.__version__}"
    # the core that loads is the wheel's, not this tree's
    probe = "import nmbridge._ffi._core as c; print(c.__file__)"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         cwd=installed, timeout=30)  # not this tree's cwd, first on sys.path
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).is_relative_to(installed)


def test_man_finds_the_installed_page(
    installed: Path, unavailable: Callable[[str], NoReturn]
) -> None:
    """man-db finds PREFIX/share/man beside PREFIX/bin on PATH: no MANPATH needed."""
    man = shutil.which("man")
    if man is None:
        unavailable("'man' is missing (Debian: man-db; tools/setup.sh installs it)")
    page = installed / "share" / "man" / "man8" / "nmbridge.8"
    assert page.read_bytes() == (ROOT / "man" / "nmbridge.8").read_bytes()
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{installed / 'bin'}{os.pathsep}/usr/bin:/bin"
    env["HOME"] = str(installed)  # no ~/.manpath of the user's
    res = subprocess.run([man, "-w", "nmbridge"], capture_output=True, text=True, env=env,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()) == page
    # ... and renders it
    res = subprocess.run([man, "-P", "cat", "8", "nmbridge"], capture_output=True, text=True,
                         env={**env, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0"}, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "nmbridge - bridge netmap ports" in res.stdout.replace("\u2010", "-")


def test_the_installed_unit_is_where_systemd_looks_under_the_prefix(installed: Path) -> None:
    unit = installed / "lib" / "systemd" / "system" / "nmbridge@.service"
    assert unit.read_bytes() == (ROOT / "systemd" / "nmbridge@.service").read_bytes()


def test_the_readme_says_where_pip_puts_the_files(dists: Dists) -> None:
    readme = (ROOT / "README.md").read_text()
    data = f"{NAME}.data/data/"
    installed = [n[len(data):] for n in dists.wheel_names if n.startswith(data)]
    assert sorted(installed) == ["lib/systemd/system/nmbridge@.service",
                                 "share/man/man8/nmbridge.8"]
    for path in ["bin/nmbridge", *installed]:
        assert f"`PREFIX/{path}`" in readme, path
    assert "pip install .  " in readme and "man nmbridge  " in readme


def test_the_setup_scripts_venv_has_the_command_and_the_man_page(
    unavailable: Callable[[str], NoReturn]
) -> None:
    """tools/setup.sh's editable install in .venv: the README's .venv/bin/nmbridge runs,
    and `man nmbridge` finds the page with .venv/bin on PATH (the venv activated) and
    with -M .venv/share/man, as the README says."""
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip("not tools/setup.sh's .venv")  # another environment: nothing to check
    readme = (ROOT / "README.md").read_text()
    assert "`.venv/bin/nmbridge`" in readme and "man -M .venv/share/man nmbridge" in readme
    res = subprocess.run([str(venv / "bin" / "nmbridge"), "--version"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    man = shutil.which("man")
    if man is None:
        unavailable("'man' is missing (Debian: man-db; tools/setup.sh installs it)")
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin"
    env["HOME"] = str(venv)  # no ~/.manpath of the user's
    for argv in ([man, "-w", "nmbridge"], [man, "-M", str(venv / "share" / "man"), "-w",
                                           "nmbridge"]):
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        assert res.returncode == 0, res.stderr
        assert Path(res.stdout.strip()).resolve() == (ROOT / "man" / "nmbridge.8").resolve()

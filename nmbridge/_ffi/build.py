"""The cffi builder for nmbridge's C core (API mode, out of line).

setup.py names `ffibuilder` in cffi_modules, so `pip install .` compiles
the core. This file imports nothing from nmbridge and compiles nothing on
import; its logic is small pure functions that tests call directly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

#: the cdef headers, in the order cffi must read them (each may use the ones before)
CDEF_ORDER = ("abi.h", "stats.h", "region.h", "offload.h", "engine.h", "port.h", "loop.h", "nic.h",
              "isolate.h", "filter.h", "capture.h")

#: the C sources, one topic per file
SOURCES = (
    "version.c",
    "stats.c",
    "region.c",
    "engine.c",
    "gso.c",
    "port.c",
    "kport.c",
    "eport.c",
    "eport_packet.c",
    "eport_tap.c",
    "loop.c",
    "nic.c",
    "isolate.c",
    "filter.c",
    "capture.c",
)


def package_version(init_file: Path) -> str:
    """The version in nmbridge/__init__.py, read as text (the package is not imported)."""
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', init_file.read_text(), re.M)
    if match is None:
        raise RuntimeError(f"no __version__ in {init_file}")
    return match.group(1)


def cdef_text(cdef_dir: Path, order: tuple[str, ...] = CDEF_ORDER) -> str:
    """The declarations Python may use, concatenated in order."""
    return "\n".join((cdef_dir / name).read_text() for name in order)


def compile_args(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Compiler and linker flags; NMBRIDGE_SANITIZE=1 builds with ASan and UBSan."""
    cflags = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-fno-strict-aliasing"]
    ldflags: list[str] = []
    if env.get("NMBRIDGE_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
        cflags = [f for f in cflags if f != "-O2"] + san
        ldflags += ["-fsanitize=address,undefined"]
    if env.get("NMBRIDGE_NATIVE") == "1":
        cflags.append("-march=native")
    return cflags, ldflags


def version_define(version: str) -> tuple[str, str]:
    return ("NMB_VERSION", '"' + version.replace('"', "") + '"')


def make_builder(env: dict[str, str] | None = None) -> FFI:
    env = dict(os.environ) if env is None else env
    src = HERE / "src"
    cflags, ldflags = compile_args(env)
    builder = FFI()
    builder.cdef(cdef_text(HERE / "cdef"))
    builder.set_source(
        "nmbridge._ffi._core",
        '#include "nmb.h"',
        sources=[str(Path("nmbridge/_ffi/src") / s) for s in SOURCES],
        include_dirs=[str(src)],
        define_macros=[
            ("_GNU_SOURCE", "1"),
            version_define(package_version(HERE.parent / "__init__.py")),
        ],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

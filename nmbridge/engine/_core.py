"""The binding itself: nmbridge's C core (cffi `ffi` and `lib`), refused when it
was built for another version of the package, and the one mapping of the
negative errno values the core returns to nmbridge exceptions."""

from __future__ import annotations

from nmbridge import __version__
from nmbridge.errors import from_errno

try:
    from nmbridge._ffi._core import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "nmbridge's C core is not built: install the package with 'pip install .'"
    ) from exc

__all__ = ["check", "constant", "ffi", "lib"]


def _verify_core_version() -> None:
    built = ffi.string(lib.nmb_version()).decode()
    if built != __version__:
        raise ImportError(
            f"nmbridge's C core was built for version {built}, the package is {__version__}: "
            "reinstall nmbridge"
        )


_verify_core_version()


def constant(name: str) -> int:
    """A netmap constant by name (NR_REG_ALL_NIC, NR_EXCLUSIVE, NS_MOREFRAG...)."""
    value = getattr(lib, name, None)
    if not isinstance(value, int):
        raise KeyError(name)
    return value


def check(rc: int, what: str) -> None:
    """Raise the exception for a negative errno-style return code."""
    if rc < 0:
        raise from_errno(-rc, what)

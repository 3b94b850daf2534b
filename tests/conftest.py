"""Shared by the whole suite: what happens to a test that needs what it cannot have.

A test marked ``root`` needs root, network namespaces and TAP devices. Where
it cannot have them it is skipped with the reason, except under CI=true: CI
runs as root, so there a missing privilege fails the test instead of hiding it.

A test that needs a network namespace asks `make_netns` for it (the one way the
suite makes one: tests/namespaces.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest
from namespaces import namespace

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason; under CI=true, fail with it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: tests that need root must run, not skip)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True, scope="session")
def claims_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The bridges the suite starts keep their interface claims in a directory of the
    suite's own, not in the host's /run/nmbridge/claims (they inherit the variable)."""
    old = os.environ.get("NMBRIDGE_CLAIMS_DIR")
    os.environ["NMBRIDGE_CLAIMS_DIR"] = str(tmp_path_factory.mktemp("claims"))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NMBRIDGE_CLAIMS_DIR", None)
        else:
            os.environ["NMBRIDGE_CLAIMS_DIR"] = old


@pytest.fixture(name="unavailable", scope="session")
def unavailable_fixture() -> Callable[[str], NoReturn]:
    """unavailable(reason), for fixtures that find out only when they try."""
    return unavailable


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], str]]:
    """make_netns(what): a new network namespace with lo up, named
    nmb-<pid>-<random>-<what>; each one made is deleted after the test, also when
    it failed, and a deletion that meets anything but "already gone" fails it."""
    with contextlib.ExitStack() as made:
        yield lambda what: made.enter_context(namespace(what, unavailable))


@functools.cache
def root_missing() -> str | None:
    """Why root tests cannot run here, or None if they can."""
    caps = 0
    try:
        with open("/proc/self/status") as f:
            caps = next(int(x.split()[1], 16) for x in f if x.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        pass
    if not (caps >> CAP_NET_ADMIN) & 1 or not (caps >> CAP_SYS_ADMIN) & 1:
        return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces)"
    if shutil.which("ip") is None:
        return "needs the ip command (Debian package iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (modprobe tun)"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        reason = root_missing()
        if reason is not None:
            unavailable(reason)

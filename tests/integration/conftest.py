"""The integration tests' one way to have a Sandbox (nmbridge.lab.sandbox: the
demo's two namespaces, veth, TAP, addresses of 198.18.0.0/15).

`make_sandbox(mtu=1500)` sets one up and closes it after the test, also when the
test failed; `sb` is the usual one. Sandbox names its namespaces as the suite's
other namespaces are named (tests/namespaces.py), and its clean-up stops what
runs in them and tolerates only "already gone"; on top of that, the fixture
checks that no namespace of it is left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest
from namespaces import listed

from nmbridge.errors import PermissionDenied
from nmbridge.lab.sandbox import Sandbox


@pytest.fixture
def make_sandbox(unavailable: Callable[[str], NoReturn]) -> Iterator[Callable[..., Sandbox]]:
    """make_sandbox(mtu=1500): a Sandbox set up; each one made is closed after the
    test, and a clean-up that fails or leaves a namespace behind fails the test."""
    made: list[Sandbox] = []

    def make(mtu: int = 1500) -> Sandbox:
        try:
            sb = stack.enter_context(Sandbox(mtu=mtu))
        except PermissionDenied as err:
            unavailable(err.message)
        made.append(sb)
        return sb

    with contextlib.ExitStack() as stack:
        yield make
    left = {ns for sb in made for ns in (sb.wire_ns, sb.bridge_ns)} & listed()
    assert not left, f"the sandbox left namespaces behind: {left}"


@pytest.fixture
def sb(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()

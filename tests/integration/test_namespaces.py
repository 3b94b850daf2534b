"""The suite's namespace fixtures, tested (root): `make_netns` (tests/conftest.py)
and `make_sandbox` (tests/integration/conftest.py).

A test that has to fail, or whose clean-up has to, runs in an inner pytest
session (pytester) that loads the same conftest files; what it made is then
looked for here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from namespaces import ip, listed

from nmbridge.lab import sandbox
from nmbridge.lab.sandbox import Sandbox

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.root

TESTS = Path(__file__).resolve().parents[1]

RAISES = '''
from pathlib import Path

from namespaces import listed


def test_the_body_raises(make_netns, make_sandbox):
    sb = make_sandbox()
    names = [make_netns("a"), make_netns("b"), sb.wire_ns, sb.bridge_ns]
    Path(__file__).with_name("names").write_text("\\n".join(names))
    assert set(names) <= listed()
    raise RuntimeError("the body raised")
'''

HELD = '''
import subprocess
from pathlib import Path

from namespaces import TIMEOUT


def test_a_second_mount_holds_the_namespace_file(make_netns):
    name = make_netns("held")
    Path(__file__).with_name("names").write_text(name)
    path = f"/run/netns/{name}"
    # `ip netns del` detaches one mount, then cannot unlink the file: EBUSY
    subprocess.run(["mount", "--bind", path, path], check=True, timeout=TIMEOUT)
'''


def run_inner(pytester: pytest.Pytester, body: str) -> tuple[pytest.RunResult, list[str]]:
    """body as a test file under the suite's conftest files: its outcome, and the
    namespace names it wrote down."""
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    inner = pytester.mkdir("integration")
    (inner / "conftest.py").write_text((TESTS / "integration" / "conftest.py").read_text())
    (inner / "test_inner.py").write_text(body)
    res = pytester.runpytest("-p", "no:cacheprovider")
    names = inner / "names"
    return res, names.read_text().split() if names.exists() else []


def test_what_the_fixtures_made_is_gone_after_a_test_that_raised(
        pytester: pytest.Pytester) -> None:
    res, names = run_inner(pytester, RAISES)
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*RuntimeError: the body raised*"])
    assert len(names) == 4, res.stdout.str()
    assert not set(names) & listed()


def test_a_clean_up_that_meets_more_than_already_gone_fails(pytester: pytest.Pytester) -> None:
    res, names = run_inner(pytester, HELD)
    try:
        res.assert_outcomes(passed=1, errors=1)
        res.stdout.fnmatch_lines(
            ["*cannot delete namespace nmb-*-held: *Device or resource busy*"])
        assert len(names) == 1 and names[0] in listed(), "the failure was hidden"
    finally:
        for name in names:  # the first deletion took one mount: this one succeeds
            sandbox.delete_namespace(name)
    assert not set(names) & listed()


def test_a_namespace_already_gone_is_fine(make_netns: Callable[[str], str]) -> None:
    name = make_netns("gone")
    ip("netns", "del", name)
    assert name not in listed()  # the clean-up meets "No such file or directory": passes


@pytest.fixture
def one(make_netns: Callable[[str], str]) -> str:
    return make_netns("same")


@pytest.fixture
def other(make_netns: Callable[[str], str]) -> str:
    return make_netns("same")


def test_names_are_unique_across_fixtures_in_one_test(
        one: str, other: str, make_netns: Callable[[str], str], sb: Sandbox) -> None:
    names = [one, other, make_netns("same"), sb.wire_ns, sb.bridge_ns]
    assert len(set(names)) == len(names), names
    assert set(names) <= listed()
    for name in names:  # the form reap_stale() takes for this process's
        match = sandbox._NAME_RE.match(name)
        assert match is not None and int(match.group(1)) == os.getpid(), name

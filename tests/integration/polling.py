"""wait_for: how the integration tests wait for a running bridge to get somewhere.

Not a test module: pytest puts this directory on sys.path, so the test
modules import it by name.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nmbridge.errors import NmbridgeError

T = TypeVar("T")


def wait_for(what: str, cond: Callable[[], T | None], timeout: float,
             proc: subprocess.Popen[Any] | None = None,
             log: Path | Callable[[], str] | None = None, step: float = 0.02) -> T:
    """Poll cond() until it returns something true and return that; fail the test on
    timeout, or if proc exits meanwhile, showing the log (a file, or what log() says).
    A cond() that raises an NmbridgeError (a stats file half written) counts as false."""

    def text() -> str:
        if isinstance(log, Path):
            return log.read_text(errors="replace")
        return log() if log else ""

    deadline = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except NmbridgeError:
            got = None
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the bridge exited ({proc.returncode}) while waiting for {what}:\n"
                        f"{text()}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{text()}",
                        pytrace=False)
        time.sleep(step)

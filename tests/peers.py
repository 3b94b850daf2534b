"""The traffic peers the offload tests run in their namespaces (offload_peer.py,
hostile_peer.py, wire_relay.py): each says READY on a line of its own once it
listens, and prints its report, one JSON value, as its last line of that kind.

Not a test module: pytest puts tests/ on sys.path when it loads tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

import pytest


def ready(proc: subprocess.Popen[str], what: str, timeout: float = 10.0) -> None:
    """Wait until proc says READY; kill it and fail the test if it does not in time."""
    assert proc.stdout is not None
    fd, line = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    # byte by byte from the fd, with a deadline: a buffered readline could block
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    if line.strip() != b"READY":
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"{what} did not start: {line!r} {err.strip()}", pytrace=False)


def report(proc: subprocess.Popen[str], what: str, timeout: float, opener: str = "{") -> Any:
    """The last line of proc's output that starts with opener, as JSON (proc is waited
    for, at most timeout seconds, then killed)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = [x for x in out.splitlines() if x.startswith(opener)]
    assert lines, f"{what}: no report (status {proc.returncode}): {err.strip()}"
    return json.loads(lines[-1])

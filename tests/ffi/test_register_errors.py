"""What a refused register becomes: the API named where the module tells it (EINVAL, ENOTTY)."""

from __future__ import annotations

import errno

import pytest

from nmbridge import engine
from nmbridge.errors import KernelRefused
from nmbridge.portspec import parse_port

SPEC = parse_port("netmap:eth0")


@pytest.mark.parametrize(
    ("err", "api", "says"),
    [
        (errno.ENOTTY, 11, "speaks API 11, nmbridge speaks 14..15: update the netmap module"),
        (errno.EINVAL, 13, "speaks API 13, nmbridge speaks 14..15: update the netmap module"),
        (errno.EINVAL, 16, "speaks API 16, nmbridge speaks 14..15: update nmbridge"),
    ],
)
def test_api_mismatch_names_the_module_api(monkeypatch: pytest.MonkeyPatch, err: int, api: int,
                                           says: str) -> None:
    monkeypatch.setattr(engine.ports, "_legacy_api", lambda: api)
    exc = engine.ports._register_error(SPEC, err, None)
    assert isinstance(exc, KernelRefused)
    assert exc.message == f"netmap:eth0: the netmap module {says}"


@pytest.mark.parametrize("api", [0, 14, 15])
def test_einval_within_the_api_range_is_about_the_request(monkeypatch: pytest.MonkeyPatch,
                                                          api: int) -> None:
    monkeypatch.setattr(engine.ports, "_legacy_api", lambda: api)
    exc = engine.ports._register_error(SPEC, errno.EINVAL, None)
    assert isinstance(exc, KernelRefused)
    assert "EINVAL" in exc.message and "API" not in exc.message

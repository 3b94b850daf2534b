"""The driver snippets of the fake-module tests, run against the real netmap
kernel module: the same relations must hold there (kernel_snippets.check_*).

They run wherever /dev/netmap exists and are skipped with that reason where
it does not. The NIC test takes an interface away from the host stack for a
moment, so it runs only on the interface named in NMBRIDGE_TEST_NIC (a veth
made for the purpose, say). Pipe parents and VALE switches get names of their
own, so that other netmap users on the machine are not disturbed.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from kernel_snippets import (
    BRIDGE_COUNT,
    PIPE_PAIR,
    VALE_PAIR,
    VALE_VNET_HDR,
    WIRE_HOST,
    check_bridge_count,
    check_pipe_pair,
    check_vale_pair,
    check_vale_vnet_hdr,
    check_wire_host,
)

pytestmark = pytest.mark.kernel

NIC_ENV = "NMBRIDGE_TEST_NIC"


def names(test: str) -> dict[str, str]:
    # short: a netmap_if holds 16 bytes of name, and a VALE switch name is short too
    tag = f"{os.getpid() % 10000}{test}"
    return {"NMB_T_PIPE": f"nmbt{tag}", "NMB_T_VALE": f"valet{tag}"}


def test_wire_and_host_of_a_nic(real: Any) -> None:
    nic = os.environ.get(NIC_ENV)
    if not nic:
        pytest.skip(f"set {NIC_ENV} to an interface the test may put in netmap mode")
    r = real.run_py(WIRE_HOST, env={"NMB_T_NIC": nic}).result
    check_wire_host(r)
    assert r["walks"][0]["ni_name"] == nic


def test_pipe_pair(real: Any) -> None:
    check_pipe_pair(real.run_py(PIPE_PAIR, env=names("p")).result)


def test_vale_pair(real: Any) -> None:
    check_vale_pair(real.run_py(VALE_PAIR, env=names("v")).result)


def test_vale_port_with_virtio_net_headers(real: Any) -> None:
    check_vale_vnet_hdr(real.run_py(VALE_VNET_HDR, env=names("h")).result)


def test_frames_forwarded_and_counted(real: Any) -> None:
    check_bridge_count(real.run_py(BRIDGE_COUNT, env=names("b")).result)

"""The binding layer: the only package that touches nmbridge's C core.

One module per C topic, as the core's own files are split: ``ports`` (open,
register, map, close; port.c, kport.c, eport*.c), ``bridge`` (the loop;
loop.c), ``filter`` (classic BPF; filter.c), ``capture`` (pcapng; capture.c),
``ethtool`` (nic.c), ``stats`` (the counters layout; stats.h), and ``_core``
(the ffi module itself, its version check, errno -> exception).
Each checks arguments before calling C and turns every negative errno the
core returns into a nmbridge exception; everything above sees plain Python.
Policy (which interface, how large a frame, who may bridge it) is decided
above, in the control modules, and handed down.
"""

from __future__ import annotations

from nmbridge.engine import capture, ethtool, filter, ports, stats
from nmbridge.engine._core import constant
from nmbridge.engine.bridge import Bridge, RunResult
from nmbridge.engine.ports import (
    DEFAULT_BUF_SIZE,
    DEFAULT_SLOTS,
    EmulatedSetup,
    Port,
    RegisterReply,
    RingInfo,
    close_ports,
    open_ports,
    port_info,
    register_request_bytes,
)

__all__ = [
    "DEFAULT_BUF_SIZE",
    "DEFAULT_SLOTS",
    "Bridge",
    "EmulatedSetup",
    "Port",
    "RegisterReply",
    "RingInfo",
    "RunResult",
    "capture",
    "close_ports",
    "constant",
    "ethtool",
    "filter",
    "open_ports",
    "port_info",
    "ports",
    "register_request_bytes",
    "stats",
]

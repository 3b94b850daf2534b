"""NIC offloads through the ethtool ioctl (the C core's nmb_ethtool_get/set)."""

from __future__ import annotations

import errno

from nmbridge.engine._core import check, error_for, ffi, lib
from nmbridge.errors import NoSuchPort

#: offload name (as ethtool -k shows it) -> (get command, set command, flag bit or 0)
OFFLOADS: dict[str, tuple[int, int, int]] = {
    "rx-checksumming": (lib.ETHTOOL_GRXCSUM, lib.ETHTOOL_SRXCSUM, 0),
    "tx-checksumming": (lib.ETHTOOL_GTXCSUM, lib.ETHTOOL_STXCSUM, 0),
    "scatter-gather": (lib.ETHTOOL_GSG, lib.ETHTOOL_SSG, 0),
    "tcp-segmentation-offload": (lib.ETHTOOL_GTSO, lib.ETHTOOL_STSO, 0),
    "generic-segmentation-offload": (lib.ETHTOOL_GGSO, lib.ETHTOOL_SGSO, 0),
    "generic-receive-offload": (lib.ETHTOOL_GGRO, lib.ETHTOOL_SGRO, 0),
    "large-receive-offload": (lib.ETHTOOL_GFLAGS, lib.ETHTOOL_SFLAGS, lib.ETH_FLAG_LRO),
}


def read_offloads(ifname: str) -> dict[str, bool | None]:
    """Each offload's state; None where the NIC cannot say."""
    out: dict[str, bool | None] = {}
    value = ffi.new("uint32_t *")
    for name, (get, _set, bit) in OFFLOADS.items():
        rc = lib.nmb_ethtool_get(ifname.encode(), get, value)
        if rc == -errno.ENODEV:
            raise NoSuchPort(f"no interface named '{ifname}'")
        if rc < 0:
            out[name] = None
            continue
        out[name] = bool(value[0] & bit) if bit else bool(value[0])
    return out


def set_offload(ifname: str, name: str, on: bool) -> None:
    """Turn one offload on or off; raise if the NIC refuses."""
    get, set_, bit = OFFLOADS[name]
    if bit:
        value = ffi.new("uint32_t *")
        check(lib.nmb_ethtool_get(ifname.encode(), get, value), f"{ifname}: {name}")
        new = (value[0] | bit) if on else (value[0] & ~bit)
    else:
        new = 1 if on else 0
    rc = lib.nmb_ethtool_set(ifname.encode(), set_, new)
    if rc < 0:
        raise error_for(-rc, f"{ifname}: cannot turn {name} {'on' if on else 'off'}")

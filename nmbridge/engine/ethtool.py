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


#: ethtool -K's names -> the kernel's feature bits each of them turns on and off
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "rx-checksumming": ("rx-checksum",),
    "tx-checksumming": ("tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-checksum-ipv6",
                        "tx-checksum-fcoe-crc", "tx-checksum-sctp"),
    "scatter-gather": ("tx-scatter-gather", "tx-scatter-gather-fraglist"),
    "tcp-segmentation-offload": ("tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
                                 "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation"),
    "generic-segmentation-offload": ("tx-generic-segmentation",),
    "generic-receive-offload": ("rx-gro",),
    "large-receive-offload": ("rx-lro",),
}


def _feature_names(ifname: str) -> list[str]:
    room = 256
    while True:
        buf = ffi.new("char[]", room * lib.ETH_GSTRING_LEN)
        n = lib.nmb_feature_names(ifname.encode(), room, buf)
        if n == -errno.ENODEV:
            raise NoSuchPort(f"no interface named '{ifname}'")
        check(n, f"{ifname}: cannot read its features")
        if n <= room:
            raw = ffi.buffer(buf, n * lib.ETH_GSTRING_LEN)[:]
            size = lib.ETH_GSTRING_LEN
            return [raw[i * size:(i + 1) * size].split(b"\0", 1)[0].decode(errors="replace")
                    for i in range(n)]
        room = n


def read_features(ifname: str) -> dict[str, tuple[bool, bool]]:
    """Each feature bit of the device by the kernel's name: (active, changeable)."""
    names = _feature_names(ifname)
    blocks = (len(names) + 31) // 32
    available = ffi.new("uint32_t[]", max(blocks, 1))
    active = ffi.new("uint32_t[]", max(blocks, 1))
    check(lib.nmb_features_get(ifname.encode(), blocks, available, active),
          f"{ifname}: cannot read its features")
    return {name: (bool(active[i // 32] >> (i % 32) & 1), bool(available[i // 32] >> (i % 32) & 1))
            for i, name in enumerate(names) if name}


def set_features(ifname: str, wanted: dict[str, bool]) -> None:
    """Turn the named feature bits on or off, all in one request (the kernel works out
    what depends on what); read back to see what it did."""
    names = _feature_names(ifname)
    blocks = (len(names) + 31) // 32
    valid = ffi.new("uint32_t[]", max(blocks, 1))
    requested = ffi.new("uint32_t[]", max(blocks, 1))
    for i, name in enumerate(names):
        if name in wanted:
            valid[i // 32] |= 1 << (i % 32)
            if wanted[name]:
                requested[i // 32] |= 1 << (i % 32)
    check(lib.nmb_features_set(ifname.encode(), blocks, valid, requested),
          f"{ifname}: cannot change its features")

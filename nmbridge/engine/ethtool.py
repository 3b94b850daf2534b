"""NIC offloads through the ethtool ioctl: the kernel's feature bits
(ETHTOOL_GFEATURES/SFEATURES, the C core's nmb_features_*), by their names, and
ethtool -K's groups of them."""

from __future__ import annotations

import errno

from nmbridge.engine._core import check, ffi, lib
from nmbridge.errors import NoSuchPort

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


def feature_names(ifname: str) -> list[str]:
    """The names of the device's feature bits, in bit order."""
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


def read_features(ifname: str, names: list[str] | None = None) -> dict[str, tuple[bool, bool]]:
    """Each feature bit of the device by the kernel's name: (active, changeable).
    names: feature_names(ifname), if the caller has them already."""
    names = feature_names(ifname) if names is None else names
    blocks = (len(names) + 31) // 32
    available = ffi.new("uint32_t[]", max(blocks, 1))
    active = ffi.new("uint32_t[]", max(blocks, 1))
    check(lib.nmb_features_get(ifname.encode(), blocks, available, active),
          f"{ifname}: cannot read its features")
    return {name: (bool(active[i // 32] >> (i % 32) & 1), bool(available[i // 32] >> (i % 32) & 1))
            for i, name in enumerate(names) if name}


def set_features(ifname: str, wanted: dict[str, bool], names: list[str] | None = None) -> None:
    """Turn the named feature bits on or off, all in one request (the kernel works out
    what depends on what); read back to see what it did."""
    names = feature_names(ifname) if names is None else names
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


def read_offloads(ifname: str) -> dict[str, bool | None]:
    """Each of ethtool -K's groups: on if any of its bits is (as ethtool -k shows it);
    None where the device has none of them."""
    states = read_features(ifname)
    return {group: (any(states[b][0] for b in bits if b in states)
                    if any(b in states for b in bits) else None)
            for group, bits in FEATURE_GROUPS.items()}


def set_offload(ifname: str, group: str, on: bool) -> None:
    """Turn one of ethtool -K's groups on or off (its changeable bits)."""
    names = feature_names(ifname)
    states = read_features(ifname, names)
    bits = {b: on for b in FEATURE_GROUPS[group] if b in states and states[b][1]}
    if bits:
        set_features(ifname, bits, names)

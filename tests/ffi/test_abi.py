"""The C declarations of the netmap ABI against ../shared/netmap-abi.md.

Every number below is copied from that document (API 14, x86-64): this file is
the check that what C compiles is what the document states and the kernel
accepts.
"""

from __future__ import annotations

import pytest
from nmbridge._ffi._core import ffi, lib

# (field, offset, C type) as netmap-abi.md states them
LAYOUTS = {
    "struct netmap_slot": (
        16,
        8,
        [
            ("buf_idx", 0, "uint32_t"),
            ("len", 4, "uint16_t"),
            ("flags", 6, "uint16_t"),
            ("ptr", 8, "uint64_t"),
        ],
    ),
    "struct netmap_ring": (
        256,
        128,
        [
            ("buf_ofs", 0, "int64_t"),
            ("num_slots", 8, "uint32_t"),
            ("nr_buf_size", 12, "uint32_t"),
            ("ringid", 16, "uint16_t"),
            ("dir", 18, "uint16_t"),
            ("head", 20, "uint32_t"),
            ("cur", 24, "uint32_t"),
            ("tail", 28, "uint32_t"),
            ("flags", 32, "uint32_t"),
            ("ts", 40, "struct timeval"),
            ("offset_mask", 56, "uint64_t"),
            ("buf_align", 64, "uint64_t"),
            ("sem", 128, "char[128]"),
        ],
    ),
    "struct netmap_if": (
        56,
        8,
        [
            ("ni_name", 0, "char[16]"),
            ("ni_version", 16, "uint32_t"),
            ("ni_flags", 20, "uint32_t"),
            ("ni_tx_rings", 24, "uint32_t"),
            ("ni_rx_rings", 28, "uint32_t"),
            ("ni_bufs_head", 32, "uint32_t"),
            ("ni_host_tx_rings", 36, "uint32_t"),
            ("ni_host_rx_rings", 40, "uint32_t"),
            ("ni_spare1", 44, "uint32_t[3]"),
            ("ring_ofs", 56, "ssize_t[]"),
        ],
    ),
    "struct nmreq_header": (
        88,
        None,
        [
            ("nr_version", 0, "uint16_t"),
            ("nr_reqtype", 2, "uint16_t"),
            ("nr_reserved", 4, "uint32_t"),
            ("nr_name", 8, "char[64]"),
            ("nr_options", 72, "uint64_t"),
            ("nr_body", 80, "uint64_t"),
        ],
    ),
    "struct nmreq_register": (
        56,
        None,
        [
            ("nr_offset", 0, "uint64_t"),
            ("nr_memsize", 8, "uint64_t"),
            ("nr_tx_slots", 16, "uint32_t"),
            ("nr_rx_slots", 20, "uint32_t"),
            ("nr_tx_rings", 24, "uint16_t"),
            ("nr_rx_rings", 26, "uint16_t"),
            ("nr_host_tx_rings", 28, "uint16_t"),
            ("nr_host_rx_rings", 30, "uint16_t"),
            ("nr_mem_id", 32, "uint16_t"),
            ("nr_ringid", 34, "uint16_t"),
            ("nr_mode", 36, "uint32_t"),
            ("nr_extra_bufs", 40, "uint32_t"),
            ("nr_flags", 48, "uint64_t"),
        ],
    ),
    "struct nmreq_option": (
        24,
        None,
        [
            ("nro_next", 0, "uint64_t"),
            ("nro_reqtype", 8, "uint32_t"),
            ("nro_status", 12, "uint32_t"),
            ("nro_size", 16, "uint64_t"),
        ],
    ),
    "struct nmreq_port_info_get": (
        32,
        None,
        [
            ("nr_memsize", 0, "uint64_t"),
            ("nr_tx_slots", 8, "uint32_t"),
            ("nr_rx_slots", 12, "uint32_t"),
            ("nr_tx_rings", 16, "uint16_t"),
            ("nr_rx_rings", 18, "uint16_t"),
            ("nr_host_tx_rings", 20, "uint16_t"),
            ("nr_host_rx_rings", 22, "uint16_t"),
            ("nr_mem_id", 24, "uint16_t"),
        ],
    ),
    # not in the document: netmap's sys/net/netmap.h (nr_hdr_len, then a u32 pad1)
    "struct nmreq_port_hdr": (
        8,
        4,
        [
            ("nr_hdr_len", 0, "uint32_t"),
            ("pad1", 4, "uint32_t"),
        ],
    ),
    # the document gives the legacy request's offsets; the widths follow from them
    "struct nmreq": (
        60,
        4,
        [
            ("nr_name", 0, "char[16]"),
            ("nr_version", 16, "uint32_t"),
            ("nr_offset", 20, "uint32_t"),
            ("nr_memsize", 24, "uint32_t"),
            ("nr_tx_slots", 28, "uint32_t"),
            ("nr_rx_slots", 32, "uint32_t"),
            ("nr_tx_rings", 36, "uint16_t"),
            ("nr_rx_rings", 38, "uint16_t"),
            ("nr_ringid", 40, "uint16_t"),
            ("nr_cmd", 42, "uint16_t"),
            ("nr_arg1", 44, "uint16_t"),
            ("nr_arg2", 46, "uint16_t"),
            ("nr_arg3", 48, "uint32_t"),
            ("nr_flags", 52, "uint32_t"),
            ("spare2", 56, "uint32_t[1]"),
        ],
    ),
}

FIELDS = [
    pytest.param(struct, name, offset, ctype, id=f"{struct.split()[1]}.{name}")
    for struct, (_, _, fields) in LAYOUTS.items()
    for name, offset, ctype in fields
]


@pytest.mark.parametrize("struct", LAYOUTS)
def test_struct_size_and_alignment(struct: str) -> None:
    size, align, _ = LAYOUTS[struct]
    assert ffi.sizeof(struct) == size
    if align is not None:
        assert ffi.alignof(struct) == align


@pytest.mark.parametrize(("struct", "name", "offset", "ctype"), FIELDS)
def test_field_offset_and_type(struct: str, name: str, offset: int, ctype: str) -> None:
    assert ffi.offsetof(struct, name) == offset
    assert dict(ffi.typeof(struct).fields)[name].type == ffi.typeof(ctype)


@pytest.mark.parametrize("struct", LAYOUTS)
def test_no_field_is_left_undocumented(struct: str) -> None:
    """Every field C declares is one the document places (padding excepted)."""
    declared = [name for name, _ in ffi.typeof(struct).fields]
    padding = {"pad1"}
    documented = [name for name, _, _ in LAYOUTS[struct][2] if name not in padding]
    assert [n for n in declared if n not in padding] == documented


# gaps the document states besides those a field's own alignment makes
ALIGNED_BY_ATTRIBUTE = {("struct netmap_ring", "sem"): 128}  # cache-aligned


@pytest.mark.parametrize("struct", LAYOUTS)
def test_documented_fields_fill_the_struct(struct: str) -> None:
    """No room for an undocumented field in the compiled layout.

    The cdef structs are partial: cffi lists only the fields Python names, and
    takes sizes and offsets from the compiler (src/abi.h). Between the documented
    fields, and after the last, there is only the padding alignment forces.
    """
    size, _, fields = LAYOUTS[struct]
    end = 0
    for name, offset, ctype in sorted(fields, key=lambda f: f[1]):
        t = ffi.typeof(ctype)
        align = ALIGNED_BY_ATTRIBUTE.get((struct, name), ffi.alignof(t))
        assert 0 <= offset - end < align, f"{name}: {offset - end} bytes before it"
        end = offset + (0 if t.kind == "array" and t.length is None else ffi.sizeof(t))
    assert size - end < ffi.alignof(struct), f"{size - end} bytes after the last field"


def test_timeval_is_16_bytes() -> None:
    assert ffi.sizeof("struct timeval") == 16


def test_ring_ofs_entries_are_8_bytes() -> None:
    assert ffi.sizeof("ssize_t") == 8


def test_slots_follow_the_ring_header_at_256(make_region) -> None:
    """slot[] is hidden from cffi: ask C where it is, measured from the ring."""
    ring = make_region([(1, 0, 1, 0)], num_slots=8).tx().ptr
    slots = lib.nmb_ring_slots(ring)
    base = int(ffi.cast("uintptr_t", ring))
    assert base % 128 == 0
    for i in range(8):
        assert int(ffi.cast("uintptr_t", slots + i)) - base == 256 + 16 * i


CONSTANTS = {
    "NETMAP_API": 14,
    "NETMAP_MIN_API": 14,
    "NETMAP_MAX_API": 15,
    "NM_IFNAMSIZ": 16,
    "NETMAP_REQ_IFNAMSIZ": 64,
    "NM_CACHE_ALIGN": 128,
    "NETMAP_MAX_FRAGS": 64,
    # request types
    "NETMAP_REQ_REGISTER": 1,
    "NETMAP_REQ_PORT_INFO_GET": 2,
    "NETMAP_REQ_VALE_ATTACH": 3,
    "NETMAP_REQ_PORT_HDR_SET": 6,  # sys/net/netmap.h's enum, not the document
    "NETMAP_REQ_PORT_HDR_GET": 7,
    "NETMAP_REQ_VALE_NEWIF": 8,
    "NETMAP_REQ_POOLS_INFO_GET": 12,
    # register modes
    "NR_REG_DEFAULT": 0,
    "NR_REG_ALL_NIC": 1,
    "NR_REG_SW": 2,
    "NR_REG_NIC_SW": 3,
    "NR_REG_ONE_NIC": 4,
    "NR_REG_NULL": 7,
    "NR_REG_ONE_SW": 8,
    # register flags
    "NR_EXCLUSIVE": 0x800,
    "NR_RX_RINGS_ONLY": 0x2000,
    "NR_TX_RINGS_ONLY": 0x4000,
    "NR_ACCEPT_VNET_HDR": 0x8000,  # sys/net/netmap.h, not the document
    "NR_DO_RX_POLL": 0x10000,
    "NR_NO_TX_POLL": 0x20000,
    # slot flags
    "NS_BUF_CHANGED": 0x1,
    "NS_REPORT": 0x2,
    "NS_FORWARD": 0x4,
    "NS_NO_LEARN": 0x8,
    "NS_INDIRECT": 0x10,
    "NS_MOREFRAG": 0x20,
    # ring flags
    "NR_TIMESTAMP": 0x2,
    "NR_FORWARD": 0x4,
    # netmap_if flags
    "NI_PRIV_MEM": 0x1,
}


@pytest.mark.parametrize(("name", "value"), CONSTANTS.items())
def test_constant(name: str, value: int) -> None:
    assert getattr(lib, name) == value


def test_names_fit_their_fields() -> None:
    assert ffi.sizeof(ffi.new("struct netmap_if *").ni_name) == lib.NM_IFNAMSIZ
    assert ffi.sizeof(ffi.new("struct nmreq *").nr_name) == lib.NM_IFNAMSIZ
    assert ffi.sizeof(ffi.new("struct nmreq_header *").nr_name) == lib.NETMAP_REQ_IFNAMSIZ


IOCTLS = [
    # (nmb_ioctl_number argument, name, value)
    (0, "NIOCCTRL", 0xC0586997),
    (1, "NIOCTXSYNC", 0x6994),
    (2, "NIOCRXSYNC", 0x6995),
    (3, "NIOCREGIF", 0xC03C6992),
    (4, "NIOCGINFO", 0xC03C6991),
]


@pytest.mark.parametrize(("which", "name", "value"), IOCTLS, ids=[i[1] for i in IOCTLS])
def test_ioctl_number(which: int, name: str, value: int) -> None:
    assert lib.nmb_ioctl_number(which) == value


@pytest.mark.parametrize(("which", "size"), [(0, 88), (3, 60), (4, 60)])
def test_ioctl_numbers_encode_the_request_size(which: int, size: int) -> None:
    """_IOWR puts the argument's size in bits 16..29: it must be the struct's."""
    assert (lib.nmb_ioctl_number(which) >> 16) & 0x3FFF == size


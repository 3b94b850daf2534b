"""A minimal pcapng reader for the tests (draft-ietf-opsawg-pcapng): what nmbridge
writes, checked block by block, without trusting the writer's own code."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SHB, IDB, EPB = 0x0A0D0D0A, 1, 6
MAGIC = 0x1A2B3C4D


@dataclass
class Interface:
    linktype: int
    snaplen: int
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.options[2].decode()

    @property
    def tsresol(self) -> int:
        return self.options[9][0]


@dataclass
class Packet:
    interface: int
    ts_ns: int
    caplen: int
    wirelen: int
    data: bytes
    flags: int


@dataclass
class Section:
    version: tuple[int, int]
    options: dict[int, bytes]
    interfaces: list[Interface] = field(default_factory=list)
    packets: list[Packet] = field(default_factory=list)


def _options(raw: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = 0
    while off + 4 <= len(raw):
        code, length = struct.unpack_from("<HH", raw, off)
        if code == 0:
            assert length == 0
            return out
        out[code] = raw[off + 4:off + 4 + length]
        off += 4 + (length + 3) // 4 * 4
    return out


def read(data: bytes) -> list[Section]:
    """The sections of a little-endian pcapng stream; asserts what a reader relies on."""
    sections: list[Section] = []
    off = 0
    while off < len(data):
        btype, total = struct.unpack_from("<II", data, off)
        assert total % 4 == 0 and total >= 12 and off + total <= len(data), (off, total)
        assert struct.unpack_from("<I", data, off + total - 4)[0] == total
        body = data[off + 8:off + total - 4]
        if btype == SHB:
            magic, major, minor, _length = struct.unpack_from("<IHHq", body)
            assert magic == MAGIC
            sections.append(Section((major, minor), _options(body[16:])))
        elif btype == IDB:
            linktype, _reserved, snaplen = struct.unpack_from("<HHI", body)
            sections[-1].interfaces.append(Interface(linktype, snaplen, _options(body[8:])))
        elif btype == EPB:
            ifid, hi, lo, caplen, wirelen = struct.unpack_from("<IIIII", body)
            assert ifid < len(sections[-1].interfaces)
            padded = (caplen + 3) // 4 * 4
            opts = _options(body[20 + padded:])
            flags = struct.unpack("<I", opts[2])[0] if 2 in opts else 0
            sections[-1].packets.append(
                Packet(ifid, hi << 32 | lo, caplen, wirelen, body[20:20 + caplen], flags))
        off += total
    return sections

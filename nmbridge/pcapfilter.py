"""tcpdump's filter language, compiled by libpcap into classic BPF.

libpcap is loaded at run time (cffi in ABI mode), never linked into the C
core: a machine without it runs everything but the options that need it.
What comes out is plain Python (a Program of instruction tuples); the engine
layer hands it to the C interpreter (nmbridge.engine.filter).
"""

from __future__ import annotations

import ctypes.util
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

from nmbridge.errors import UsageError

#: link type of the frames on the rings (pcap/dlt.h): Ethernet
DLT_EN10MB = 1
#: the longest frame a filter is compiled for (tcpdump's default snap length)
SNAPLEN = 262144
#: pcap_compile's netmask when none is known ("ip broadcast" then fails to compile)
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
#: the Debian package of the library, for the message when it is missing
PACKAGE = "libpcap0.8"
#: the names tried in turn (Debian's soname first)
LIBRARY_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")

_CDEF = """
typedef struct pcap pcap_t;
struct bpf_insn { unsigned short code; unsigned char jt; unsigned char jf; uint32_t k; };
struct bpf_program { unsigned int bf_len; struct bpf_insn *bf_insns; };
pcap_t *pcap_open_dead(int linktype, int snaplen);
void pcap_close(pcap_t *p);
int pcap_compile(pcap_t *p, struct bpf_program *fp, const char *str, int optimize,
                 uint32_t netmask);
char *pcap_geterr(pcap_t *p);
void pcap_freecode(struct bpf_program *fp);
const char *pcap_lib_version(void);
unsigned int bpf_filter(const struct bpf_insn *pc, const unsigned char *p,
                        unsigned int wirelen, unsigned int buflen);
"""

Insn = tuple[int, int, int, int]  # (code, jt, jf, k), struct bpf_insn's fields


class FilterSyntax(UsageError):
    """An expression libpcap cannot compile; the message is libpcap's."""


class PcapMissing(UsageError):
    """libpcap is not installed: the options that need it cannot be used."""


@dataclass(frozen=True)
class Program:
    """A compiled expression: its text and its classic BPF instructions."""

    expression: str
    insns: tuple[Insn, ...]


class _Libpcap:
    def __init__(self) -> None:
        from cffi import FFI

        self.ffi = FFI()
        self.ffi.cdef(_CDEF)
        errors = []
        names = list(LIBRARY_NAMES)
        found = ctypes.util.find_library("pcap")
        if found and found not in names:
            names.append(found)
        for name in names:
            try:
                self.lib: Any = self.ffi.dlopen(name)
                break
            except OSError as exc:
                errors.append(str(exc))
        else:
            raise PcapMissing(f"libpcap is not installed (Debian package {PACKAGE}): "
                              f"cannot load {LIBRARY_NAMES[0]}")
        self.lock = threading.Lock()  # pcap_compile was not reentrant before libpcap 1.8

    def version(self) -> str:
        return str(self.ffi.string(self.lib.pcap_lib_version()).decode())


@cache
def _libpcap() -> _Libpcap:
    return _Libpcap()


def available() -> bool:
    """Whether libpcap can be loaded here."""
    try:
        _libpcap()
    except PcapMissing:
        return False
    return True


def library_version() -> str:
    """libpcap's own version string ("libpcap version 1.10.3 ...")."""
    return _libpcap().version()


def compile_filter(expression: str, optimize: bool = True) -> Program:
    """The classic BPF program of a tcpdump expression, for Ethernet frames.

    Raises FilterSyntax with libpcap's message, PcapMissing without libpcap.
    """
    pcap = _libpcap()
    ffi, lib = pcap.ffi, pcap.lib
    try:
        text = expression.encode()
    except UnicodeEncodeError:
        raise FilterSyntax(f"'{expression}': not a valid filter expression") from None
    if b"\0" in text:
        raise FilterSyntax(f"'{expression}': a filter expression cannot hold a NUL")
    with pcap.lock:
        p = lib.pcap_open_dead(DLT_EN10MB, SNAPLEN)
        if p == ffi.NULL:
            raise MemoryError("pcap_open_dead")
        try:
            prog = ffi.new("struct bpf_program *")
            if lib.pcap_compile(p, prog, text, 1 if optimize else 0, PCAP_NETMASK_UNKNOWN) < 0:
                message = ffi.string(lib.pcap_geterr(p)).decode(errors="replace")
                raise FilterSyntax(f"'{expression}': {message}")
            try:
                insns = tuple((int(i.code), int(i.jt), int(i.jf), int(i.k))
                              for i in ffi.unpack(prog.bf_insns, prog.bf_len))
            finally:
                lib.pcap_freecode(prog)
        finally:
            lib.pcap_close(p)
    return Program(expression, insns)


def libpcap_match(program: Program, frame: bytes, wirelen: int | None = None) -> int:
    """What libpcap's own interpreter, bpf_filter(), returns for a frame: the reference
    the C interpreter is tested against."""
    pcap = _libpcap()
    ffi = pcap.ffi
    insns = ffi.new("struct bpf_insn[]", [list(i) for i in program.insns])
    data = ffi.from_buffer(frame) if frame else ffi.NULL
    return int(pcap.lib.bpf_filter(insns, data, len(frame) if wirelen is None else wirelen,
                                   len(frame)))

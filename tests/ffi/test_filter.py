"""The classic BPF interpreter (filter.c) against libpcap's own, bpf_filter(): the
programs pcap_compile makes of tcpdump expressions, run on frames made to hit their
branches and on random ones; the validator's refusals; and a fuzz of any instruction
array, whose validated programs must run without reading outside the frame (this file
runs again under ASan/UBSan in tools/sanitize.sh)."""

from __future__ import annotations

import random

import filter_frames as ff
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nmbridge._ffi._core import ffi, lib

from nmbridge import pcapfilter
from nmbridge.engine.filter import Filter

pcap_missing = not pcapfilter.available()
needs_libpcap = pytest.mark.skipif(pcap_missing, reason="needs libpcap (Debian libpcap0.8)")

EXPRESSIONS = [
    "udp port 9", "tcp", "ip", "ip6", "arp", "vlan", "vlan 100", "vlan and udp",
    "icmp", "icmp6", "tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "portrange 1000-2000", "udp dst portrange 5000-5100", "ip[6:2] & 0x1fff != 0",
    "ip[6] & 0x20 != 0", "host 198.18.0.1", "net 198.18.0.0/15", "src net 198.18.0.0/24",
    "ip6 host 2001:db8::1", "ip6 net 2001:db8::/32", "ether host 02:00:00:00:00:01",
    "ether broadcast", "ether multicast", "less 100", "greater 600", "len > 64",
    "ip proto 47", "ip6 proto 58", "tcp port 80 or udp port 53", "not ip",
    "ip[0] & 0xf != 5", "udp[8:4] = 0xdeadbeef", "ether[12:2] = 0x0806",
    "ip and (tcp or udp) and not port 22", "vlan and ip6 and tcp", "ip[2:2] > 576",
    "tcp[13] = 18", "ip multicast", "ip6 multicast", "udp port 4789 and udp[8] & 8 != 0",
    "ip[2:2] / 4 = 7", "ip[2:2] % 7 = 3", "ip[2:2] * 3 > 900", "ip[2:2] - 20 = 8",
    "ip[2:2] << 2 > 1000", "ip[2:2] >> 2 < 30", "ip[2:2] ^ 0xff = 0", "-ip[2:2] = 0",
]


def frames() -> list[bytes]:
    """Frames that take the compiled programs down their branches."""
    out = [*ff.frames(),
           ff.eth(0x0800, ff.ip4(17, ff.udp(1, 2), dst=bytes([224, 0, 0, 251])),
                  dst=bytes([1, 0, 0x5E, 0, 0, 0xFB])),
           ff.eth(0x86DD, ff.ip6(17, ff.udp(1, 53), dst=bytes.fromhex("ff02" + "00" * 13 + "fb")),
                  dst=bytes([0x33, 0x33, 0, 0, 0, 0xFB])),
           ff.eth(0x0800, ff.ip4(17, ff.udp(4000, 4789, b"\x08" + bytes(7))))]
    # lengths cut short anywhere (loads past the end) and padded to 60 bytes as on a wire
    cut = [f[:n] for f in out[:12] for n in (0, 13, 14, 20, 33, 34, 36, 41)]
    return out + [ff.padded(f) for f in out] + cut


def run(program: Filter, frame: bytes, wirelen: int | None = None) -> int:
    return int(program.match(frame, wirelen))


@needs_libpcap
@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_interpreter_agrees_with_libpcaps_on_what_pcap_compile_makes(
        expression: str, optimize: bool) -> None:
    program = pcapfilter.compile_filter(expression, optimize=optimize)
    flt = Filter(program.insns)
    rng = random.Random(expression)
    cases = [(f, len(f)) for f in frames()]
    cases += [(f[: rng.randrange(len(f) + 1)], len(f)) for f in frames()]  # snapped
    cases += [(bytes(rng.getrandbits(8) for _ in range(rng.randrange(80))), None)
              for _ in range(40)]
    for frame, wirelen in cases:
        ref = pcapfilter.libpcap_match(program, frame, wirelen) != 0
        assert run(flt, frame, wirelen) == ref, (expression, frame.hex(), wirelen)
    # not vacuous: the expressions do select some of the frames, and leave some out
    picks = {run(flt, f) for f in frames()}
    assert expression in ("ip[2:2] ^ 0xff = 0", "-ip[2:2] = 0") or picks == {0, 1}


# ------------------------------------------------------------ hand-made programs

LD_ABS_B, LD_ABS_H, LD_ABS_W = 0x30, 0x28, 0x20
LD_IND_B, LD_IND_H, LD_IND_W = 0x50, 0x48, 0x40
LD_LEN, LD_IMM, LD_MEM = 0x80, 0x00, 0x60
LDX_IMM, LDX_MEM, LDX_LEN, LDX_MSH = 0x01, 0x61, 0x81, 0xB1
ST, STX = 0x02, 0x03
ALU_DIV_K, ALU_DIV_X, ALU_MOD_K, ALU_MOD_X, ALU_NEG = 0x34, 0x3C, 0x94, 0x9C, 0x84
ALU_LSH_X, ALU_RSH_K = 0x6C, 0x74
JA, JEQ_K, JGT_X, JSET_K = 0x05, 0x15, 0x2D, 0x45
RET_K, RET_A = 0x06, 0x16
TAX, TXA = 0x07, 0x87
RET_A_ONLY = [(RET_A, 0, 0, 0)]


def prog(*insns: tuple[int, int, int, int]) -> Filter:
    return Filter(list(insns))


def test_loads_are_big_endian_and_a_load_past_the_end_returns_0() -> None:
    frame = bytes(range(1, 9))
    assert run(prog((LD_ABS_W, 0, 0, 4), *RET_A_ONLY), frame) == 1
    lib_value = prog((LD_ABS_H, 0, 0, 6), (JEQ_K, 0, 1, 0x0708), (RET_K, 0, 0, 1),
                     (RET_K, 0, 0, 0))
    assert run(lib_value, frame) == 1
    for code, k in ((LD_ABS_W, 5), (LD_ABS_H, 7), (LD_ABS_B, 8), (LD_ABS_W, 0xFFFFFFFF)):
        # a load past buflen ends the program with 0, even though RET would say 1
        assert run(prog((code, 0, 0, k), (RET_K, 0, 0, 1)), frame) == 0
    # X + k past 2^32 does not wrap around to the start of the frame
    wrap = prog((LDX_IMM, 0, 0, 0xFFFFFFFF), (LD_IND_B, 0, 0, 2), (RET_K, 0, 0, 1))
    assert run(wrap, frame) == 0
    assert run(prog((LDX_IMM, 0, 0, 3), (LD_IND_B, 0, 0, 4), *RET_A_ONLY), frame) == 1


def test_len_is_the_wire_length_and_msh_the_ip_header_length() -> None:
    frame = bytes([0x46]) + bytes(40)
    is_len = prog((LD_LEN, 0, 0, 0), (JEQ_K, 0, 1, 1500), (RET_K, 0, 0, 1), (RET_K, 0, 0, 0))
    assert run(is_len, frame, 1500) == 1 and run(is_len, frame) == 0
    msh = prog((LDX_MSH, 0, 0, 0), (TXA, 0, 0, 0), (JEQ_K, 0, 1, 24), (RET_K, 0, 0, 1),
               (RET_K, 0, 0, 0))
    assert run(msh, frame) == 1
    assert run(prog((LDX_LEN, 0, 0, 0), (TXA, 0, 0, 0), *RET_A_ONLY), b"", 9) == 1


def test_division_by_an_x_of_0_returns_0_and_memory_starts_at_0() -> None:
    for op in (ALU_DIV_X, ALU_MOD_X):
        assert run(prog((LD_IMM, 0, 0, 7), (LDX_IMM, 0, 0, 0), (op, 0, 0, 0),
                        (RET_K, 0, 0, 1)), b"") == 0
    assert run(prog((LD_IMM, 0, 0, 7), (LD_MEM, 0, 0, 15), *RET_A_ONLY), b"") == 0
    stored = prog((LD_IMM, 0, 0, 7), (ST, 0, 0, 3), (LD_IMM, 0, 0, 0), (LDX_MEM, 0, 0, 3),
                  (TXA, 0, 0, 0), *RET_A_ONLY)
    assert run(stored, b"") == 1


def test_shifts_of_32_or_more_leave_0() -> None:
    assert run(prog((LD_IMM, 0, 0, 1), (LDX_IMM, 0, 0, 32), (ALU_LSH_X, 0, 0, 0),
                    *RET_A_ONLY), b"") == 0
    assert run(prog((LD_IMM, 0, 0, 0x80000000), (ALU_RSH_K, 0, 0, 40), *RET_A_ONLY), b"") == 0
    assert run(prog((LD_IMM, 0, 0, 0x80000000), (ALU_RSH_K, 0, 0, 31), *RET_A_ONLY), b"") == 1


@pytest.mark.parametrize("insns", [
    [],
    [(LD_IMM, 0, 0, 0)],  # no RET at the end
    [(RET_K, 0, 0, 1), (LD_IMM, 0, 0, 0)],  # the last is not a RET
    [(0x0E, 0, 0, 0), (RET_K, 0, 0, 1)],  # RET X: not an instruction
    [(0xFFFF, 0, 0, 0), (RET_K, 0, 0, 1)],
    [(0x8E, 0, 0, 0), (RET_K, 0, 0, 1)],  # NEG with X
    [(0x38, 0, 0, 0), (RET_K, 0, 0, 1)],  # LD H|IMM
    [(JA, 0, 0, 1), (RET_K, 0, 0, 1)],  # past the end
    [(JA, 0, 0, 0xFFFFFFFF), (RET_K, 0, 0, 1)],
    [(JEQ_K, 1, 0, 0), (RET_K, 0, 0, 1)],
    [(JEQ_K, 0, 1, 0), (RET_K, 0, 0, 1)],
    [(JGT_X, 0, 2, 0), (RET_K, 0, 0, 1), (RET_K, 0, 0, 0)],
    [(LD_MEM, 0, 0, 16), (RET_K, 0, 0, 1)],
    [(LDX_MEM, 0, 0, 16), (RET_K, 0, 0, 1)],
    [(ST, 0, 0, 16), (RET_K, 0, 0, 1)],
    [(STX, 0, 0, 0xFFFFFFFF), (RET_K, 0, 0, 1)],
    [(ALU_DIV_K, 0, 0, 0), (RET_K, 0, 0, 1)],
    [(ALU_MOD_K, 0, 0, 0), (RET_K, 0, 0, 1)],
    [(RET_K, 0, 0, 1)] * (lib.NMB_BPF_MAXINSNS + 1),
])
def test_the_validator_refuses_a_program_that_could_go_wrong(insns) -> None:  # type: ignore[no-untyped-def]
    out = ffi.new("struct nmb_filter **")
    array = ffi.new("struct nmb_bpf_insn[]", [list(i) for i in insns] or 1)
    assert lib.nmb_filter_new(array, len(insns), out) == -22
    assert out[0] == ffi.NULL


def test_the_validator_takes_the_edges() -> None:
    Filter([(JA, 0, 0, 0), (RET_K, 0, 0, 1)])
    Filter([(JEQ_K, 0, 0, 0), (RET_K, 0, 0, 1)])
    Filter([(LD_MEM, 0, 0, 15), (ALU_NEG, 0, 0, 0), (TAX, 0, 0, 0), *RET_A_ONLY])
    Filter([(RET_K, 0, 0, 1)] * lib.NMB_BPF_MAXINSNS)


# ------------------------------------------------------------ fuzz

#: every opcode the interpreter knows, so that random programs pass the validator often
CODES = [0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x80, 0x00, 0x60, 0x01, 0x61, 0x81, 0xB1, 0x02,
         0x03, 0x84, 0x05, 0x06, 0x16, 0x07, 0x87]
CODES += [0x04 | op | src for op in range(0, 0xB0, 0x10) if op != 0x80 for src in (0, 8)]
CODES += [0x05 | op | src for op in (0x10, 0x20, 0x30, 0x40) for src in (0, 8)]


def _insn() -> st.SearchStrategy[tuple[int, int, int, int]]:
    small = st.integers(0, 70)
    return st.tuples(
        st.one_of(st.sampled_from(CODES), st.integers(0, 0xFFFF)),
        st.integers(0, 3), st.integers(0, 3),
        st.one_of(small, st.integers(0, 0xFFFFFFFF), st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF])),
    )


@settings(max_examples=1500, deadline=None)
@given(insns=st.lists(_insn(), min_size=1, max_size=12),
       ret=st.integers(0, 2).map(lambda k: (0x06, 0, 0, k) if k < 2 else (0x16, 0, 0, 0)),
       frame=st.binary(max_size=64), extra=st.integers(0, 2000))
def test_any_program_is_refused_or_runs_inside_the_frame(insns, ret, frame, extra) -> None:  # type: ignore[no-untyped-def]
    program = [*insns, ret]
    out = ffi.new("struct nmb_filter **")
    rc = lib.nmb_filter_new(ffi.new("struct nmb_bpf_insn[]", [list(i) for i in program]),
                            len(program), out)
    assert rc in (0, -22)
    if rc != 0:
        return
    try:
        # the frame in a buffer of exactly its size: ASan sees any read past it
        buf = ffi.new("uint8_t[]", max(1, len(frame)))
        ffi.memmove(buf, frame, len(frame))
        assert lib.nmb_filter_match(out[0], buf, len(frame), len(frame) + extra) in (0, 1)
    finally:
        lib.nmb_filter_free(out[0])

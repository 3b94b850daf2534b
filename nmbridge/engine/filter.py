"""Classic BPF programs handed to the C interpreter (filter.c): checked there once,
then run by the loop on each frame in place."""

from __future__ import annotations

import errno
from collections.abc import Sequence

from nmbridge.engine._core import check, ffi, lib
from nmbridge.errors import UsageError

#: the longest program the interpreter takes
MAX_INSNS = int(lib.NMB_BPF_MAXINSNS)


class Filter:
    """A checked program, (code, jt, jf, k) instructions as struct bpf_insn holds them;
    refused (UsageError) if it could run past its end or read outside its memory."""

    def __init__(self, insns: Sequence[tuple[int, int, int, int]]) -> None:
        if not 0 < len(insns) <= MAX_INSNS:
            raise UsageError(f"a filter program has 1 to {MAX_INSNS} instructions, "
                             f"not {len(insns)}")
        try:
            array = ffi.new("struct nmb_bpf_insn[]", [list(i) for i in insns])
        except (OverflowError, TypeError, ValueError) as exc:
            raise UsageError(f"not a filter program: {exc}") from None
        out = ffi.new("struct nmb_filter **")
        rc = lib.nmb_filter_new(array, len(insns), out)
        if rc == -errno.EINVAL:
            raise UsageError("not a valid classic BPF program (unknown instruction, jump "
                             "outside it, no RET at its end, ...)")
        check(rc, "nmb_filter_new")
        self.c = ffi.gc(out[0], lib.nmb_filter_free)
        self.insns = tuple(tuple(i) for i in insns)

    def match(self, frame: bytes, wirelen: int | None = None) -> bool:
        """Whether the frame (all of it in hand; wirelen: its length on the wire) passes."""
        data = ffi.from_buffer(frame) if frame else ffi.NULL
        return bool(lib.nmb_filter_match(self.c, data, len(frame),
                                         len(frame) if wirelen is None else wirelen))


def match_function() -> object:
    """nmb_filter_match as a C function pointer, for struct nmb_frame_hooks' match."""
    return ffi.addressof(lib, "nmb_filter_match")

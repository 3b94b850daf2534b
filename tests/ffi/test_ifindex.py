"""nmb_ifindex_exists, which the loop asks before it calls a port gone: only the
kernel's "no such device" may say so. It used if_indextoname(), which opens a
socket per call: with the descriptors used up (half-sent metrics requests did it),
every interface looked gone and the next link drop ended the bridge."""

from __future__ import annotations

import subprocess
import sys

from nmbridge._ffi._core import lib

NO_SUCH_INDEX = 2**31 - 1

WITHOUT_DESCRIPTORS = r"""
import errno, os, resource
from nmbridge._ffi._core import lib
assert lib.nmb_ctl_socket() >= 0  # as a bridge opens it, when it is made
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    assert exc.errno == errno.EMFILE, exc
print(lib.nmb_ifindex_exists(1), lib.nmb_ifindex_exists(NO_SUCH_INDEX))
""".replace("NO_SUCH_INDEX", str(NO_SUCH_INDEX))


def test_lo_exists_and_a_free_index_does_not() -> None:
    assert lib.nmb_ifindex_exists(1) == 1  # lo, in every network namespace
    assert lib.nmb_ifindex_exists(NO_SUCH_INDEX) == 0


def test_the_answer_needs_no_new_descriptor() -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_DESCRIPTORS], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"], "out of descriptors, lo looked gone"

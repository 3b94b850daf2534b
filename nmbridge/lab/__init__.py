"""Lab gear: network namespaces with veth and TAP (sandbox) and UDP streams
that count what arrives (traffic), for `nmbridge demo` and the tests. Nothing
here runs in a bridge."""

from __future__ import annotations

import sys


def python_m(module: str) -> list[str]:
    """The argument list that runs `module` of the installed package with this
    interpreter, wherever the working directory is: `python -m` puts the working
    directory first on sys.path, and a source tree there (a clone after `pip install
    .`, its C core uncompiled) would shadow the installed package. -P (3.11+) leaves it
    out and nothing else; older Pythons have only -I, which leaves out PYTHONPATH too."""
    safe = "-P" if sys.version_info >= (3, 11) else "-I"
    return [sys.executable, safe, "-m", module]

"""The one place that writes to the terminal: a stdout and a stderr console.

rich is imported only when a console is first needed, so that `nmbridge
--help` and the error paths stay fast.
"""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

_consoles: dict[str, Console] = {}
_verbosity = 0


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def verbosity() -> int:
    return _verbosity


def stdout() -> Console:
    return _console("out")


def stderr() -> Console:
    return _console("err")


def _console(which: str) -> Console:
    con = _consoles.get(which)
    if con is None:
        from rich.console import Console

        con = Console(stderr=which == "err", highlight=False, soft_wrap=True)
        _consoles[which] = con
    return con


def print_out(text: str) -> None:
    """A line of program output on stdout (JSON, tables, exported metrics)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def info(text: str) -> None:
    """A progress or status line on stderr (hidden by -q)."""
    if _verbosity >= 0:
        _line(text)


def debug(text: str) -> None:
    if _verbosity > 0:
        _line(text)


def warn(text: str) -> None:
    if _verbosity >= 0:
        _line(f"nmbridge: warning: {text}")


def printable(text: str) -> str:
    """text with every character a terminal would obey (ESC, CR, ...) shown escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def error(text: str) -> None:
    """The one line a failure gets on stderr: whatever it quotes (a name, an argument),
    a control character in it is shown escaped, not obeyed."""
    _line("nmbridge: error: " + printable(text))


def _line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


#: the width of output that is not a terminal: a table is never cut or wrapped for a
#: file or a pipe, whatever COLUMNS says (a reader there has no screen edge)
FULL_WIDTH = 10_000


def table_width() -> int | None:
    """The width a table must fit: the terminal's, or None (not a terminal: full width)."""
    con = stdout()
    return con.width if con.is_terminal else None


def render(renderable: Any) -> None:
    """Print a renderable on stdout: to a terminal at its width, elsewhere as plain
    text (no colour, no control sequence) at full width, lines without trailing blanks."""
    con = stdout()
    if con.is_terminal:
        con.print(renderable)
        return
    from rich.console import Console

    plain = Console(file=io.StringIO(), width=FULL_WIDTH, color_system=None,
                    force_terminal=False, highlight=False, soft_wrap=True)
    plain.print(renderable)
    text = plain.file.getvalue()  # type: ignore[attr-defined]
    sys.stdout.write("".join(line.rstrip() + "\n" for line in text.splitlines()))
    sys.stdout.flush()

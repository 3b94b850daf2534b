"""man/nmbridge.8 against what it documents (STYLE.md habits 6 and 10).

The page is linted (mandoc -Tlint, groff's warnings) and read here by a small
roff reader: each command's subsection must list exactly the options click
has for it, with their defaults and ranges; EXIT STATUS must be the table in
nmbridge/errors.py; the port-name rules, the stats file layout, the
environment and the examples must match the code that they describe.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NoReturn

import click
import pytest

from nmbridge import __version__, counters, engine, systemd
from nmbridge.cli import STATS_DIR_ENV, cli
from nmbridge.errors import EXIT_STATUSES, NmbridgeError
from nmbridge.portspec import NMBRIDGE_RULES, parse_port

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man" / "nmbridge.8"
PACKAGE = ROOT / "nmbridge"

# ------------------------------------------------------------ a small roff reader

_ESCAPES = {
    r"\-": "-", r"\(ha": "^", r"\(ti": "~", r"\(bu": "\N{BULLET}", r"\&": "", r"\e": "\\",
    r"\fB": "", r"\fI": "", r"\fR": "", r"\fP": "", r"\ ": " ", r"\%": "",
}
_ESCAPE_RE = re.compile("|".join(re.escape(e) for e in sorted(_ESCAPES, key=len, reverse=True)))
#: font macros whose arguments alternate fonts: joined without spaces
_ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}
_BREAKS = {"PP", "P", "LP", "TP", "IP", "SH", "SS"}


def unescape(text: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def roff_args(text: str) -> list[str]:
    """A request's arguments as groff reads them: blank-separated; an argument that begins
    with a double quote runs to the next lone one ("" inside is a quote); a quote inside
    an unquoted argument is an ordinary character."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        cur = ""
        if text[i] == '"':
            i += 1
            while i < n:
                if text[i] == '"' and text[i + 1:i + 2] == '"':
                    cur, i = cur + '"', i + 2
                elif text[i] == '"':
                    i += 1
                    break
                elif text[i] == "\\":
                    cur, i = cur + text[i:i + 2], i + 2
                else:
                    cur, i = cur + text[i], i + 1
        else:
            while i < n and text[i] != " ":
                step = 2 if text[i] == "\\" else 1
                cur, i = cur + text[i:i + step], i + step
        args.append(cur)
    return args


def test_the_reader_splits_arguments_as_groff_does() -> None:
    assert roff_args(r'\-\-burst " N"') == [r"\-\-burst", " N"]
    assert roff_args('A="b c" .') == ['A="b', 'c"', "."]  # mid-word quotes do not group
    assert roff_args('"say ""hi""" x') == ['say "hi"', "x"]
    assert roff_args(r'"a\ b"  c') == [r"a\ b", "c"]


@dataclass
class Item:
    """A paragraph: the tag of a .TP or .IP (None for .PP and running text) and its text."""

    tag: str | None
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.lines).split())

    @property
    def output_lines(self) -> list[str]:
        """The text as broken by .br."""
        return [" ".join(line.split()) for line in " ".join(self.lines).split("\n")]


@dataclass
class Section:
    title: str  # .SH title
    sub: str | None  # .SS title within it
    items: list[Item] = field(default_factory=list)
    verbatim: list[str] = field(default_factory=list)  # lines of .nf blocks

    @property
    def text(self) -> str:
        return " ".join(f"{i.tag or ''} {i.text}" for i in self.items)


@dataclass
class Page:
    th: list[str]
    sections: list[Section]

    def section(self, title: str, sub: str | None = None) -> Section:
        found = [s for s in self.sections if s.title == title and s.sub == sub]
        assert len(found) == 1, f"the man page has {len(found)} sections {title}/{sub}"
        return found[0]

    def command(self, name: str) -> Section:
        found = [s for s in self.sections if s.title == "COMMANDS" and s.sub
                 and s.sub.split()[0] == name]
        assert len(found) == 1, f"the man page has {len(found)} subsections for '{name}'"
        return found[0]


def read_page(source: str) -> Page:
    th: list[str] = []
    sections: list[Section] = []
    item: Item | None = None
    tag_next = nofill = in_table = table_format = False
    for raw in source.splitlines():
        if raw.startswith(('.\\"', "'\\\"")):
            continue
        if in_table:
            in_table = raw != ".TE"
            if table_format:  # the format lines, up to the one that ends with '.'
                table_format = not raw.endswith(".")
            elif in_table and item is not None:
                item.lines.append(unescape(raw))
            continue
        request, _, rest = raw[1:].partition(" ") if raw.startswith(".") else ("", "", raw)
        args = roff_args(rest) if request else []
        if request == "TH":
            th = [unescape(a) for a in args]
            continue
        if request in ("SH", "SS"):
            title = unescape(" ".join(args))
            parent = sections[-1].title if request == "SS" else title
            sections.append(Section(parent, title if request == "SS" else None))
        if request in _BREAKS:
            item = Item(None)
            sections[-1].items.append(item)
            if request == "IP" and args:
                item.tag = unescape(args[0])
            tag_next = request == "TP"
            continue
        if request in ("nf", "fi"):
            nofill = request == "nf"
            continue
        if request == "TS":
            in_table = table_format = True
            continue
        if request in ("B", "I", "SM"):
            text = " ".join(unescape(a) for a in args)
        elif request in _ALTERNATING:
            text = "".join(unescape(a) for a in args)
        elif request == "br" and item is not None:
            item.lines.append("\n")
            continue
        elif request:  # .RS .RE .nh ...: layout only
            continue
        else:
            text = unescape(raw)
        if nofill:
            sections[-1].verbatim.append(text)
        if item is None:
            item = Item(None)
            sections[-1].items.append(item)
        if tag_next:
            item.tag, tag_next = text, False
        else:
            item.lines.append(text)
    return Page(th, sections)


@cache
def page() -> Page:
    return read_page(MAN.read_text())


# ------------------------------------------------------------ the CLI's side

_OPT_RE = re.compile(r"^--?[A-Za-z][\w-]*$")


def commands() -> dict[str, click.Command]:
    return dict(sorted(cli.commands.items()))


def documented_options(section: Section) -> dict[str, Item]:
    """Option string -> the .TP item that documents it, for each tag that starts with one."""
    out: dict[str, Item] = {}
    for item in section.items:
        words = (item.tag or "").replace(",", " ").split()
        if not words or not _OPT_RE.match(words[0]):
            continue
        for word in words:
            if _OPT_RE.match(word):
                assert word not in out, f"{word} documented twice in {section.sub}"
                out[word] = item
    return out


def tag_metavar(item: Item) -> str:
    words = (item.tag or "").replace(",", " ").split()
    return " ".join(w for w in words if not _OPT_RE.match(w))


def options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option)]


def is_flag(opt: click.Option) -> bool:
    return bool(opt.is_flag or opt.count)


# ------------------------------------------------------------ lint


def _tool(name: str, package: str, unavailable: Callable[[str], NoReturn]) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"'{name}' is missing (Debian: {package}; tools/setup.sh installs it)")
    return str(path)


def _mandoc_lint(mandoc: str, path: Path) -> str:
    res = subprocess.run([mandoc, "-Tlint", "-W", "warning", str(path)], capture_output=True,
                         text=True, timeout=30)
    return (res.stdout + res.stderr).strip() if res.returncode or res.stdout or res.stderr else ""


def _groff_warnings(groff: str, path: Path) -> str:
    res = subprocess.run([groff, "-t", "-man", "-ww", "-z", str(path)], capture_output=True,
                         text=True, timeout=30)
    return res.stderr.strip() if res.returncode == 0 else f"exit {res.returncode}: {res.stderr}"


def test_mandoc_lint_is_clean(unavailable: Callable[[str], NoReturn], tmp_path: Path) -> None:
    mandoc = _tool("mandoc", "mandoc", unavailable)
    assert _mandoc_lint(mandoc, MAN) == ""
    # the linter is listening: a page with an unknown macro and a skipped section is reported
    broken = tmp_path / "broken.8"
    broken.write_text(MAN.read_text().replace(".SH NAME", ".SH NAMES\n.XX oops", 1))
    assert "XX" in _mandoc_lint(mandoc, broken)


def test_groff_has_no_warnings(unavailable: Callable[[str], NoReturn], tmp_path: Path) -> None:
    groff = _tool("groff", "groff-base", unavailable)
    assert _groff_warnings(groff, MAN) == ""
    broken = tmp_path / "broken.8"
    broken.write_text(MAN.read_text().replace(".SH NAME", ".SH NAME\n\\fZoops", 1))
    assert "warning" in _groff_warnings(groff, broken)


# ------------------------------------------------------------ structure


def test_the_page_has_the_sections_a_reader_looks_for() -> None:
    titles = [s.title for s in page().sections if s.sub is None]
    assert titles == [
        "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "PORT NAMES", "EXIT STATUS",
        "ENVIRONMENT", "FILES", "SERVICE", "SECURITY", "SHELL COMPLETION", "EXAMPLES", "NOTES",
        "SEE ALSO",
    ]


def test_the_title_line_names_this_version() -> None:
    th = page().th
    assert th[:2] == ["NMBRIDGE", "8"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", th[2])
    assert th[3] == f"nmbridge {__version__}"


def test_every_command_has_a_subsection_and_synopsis_lines() -> None:
    synopsis = page().section("SYNOPSIS").items[0].output_lines
    subsections = [s.sub.split()[0] for s in page().sections if s.title == "COMMANDS" and s.sub]
    assert sorted(subsections) == list(commands())  # one each, in the page's own order
    for name, cmd in commands().items():
        usage = page().command(name).items[0].output_lines
        start = f"nmbridge {name}" if name != "bridge" else "nmbridge [bridge]"
        assert all(line.startswith(start) for line in usage), usage
        assert set(usage) <= set(synopsis), f"{name}: {usage} is not in the SYNOPSIS"
        for arg in (p for p in cmd.params if isinstance(p, click.Argument)):
            word = (arg.metavar or arg.name or "").strip("[].")
            assert any({word, f"[{word}]", f"{word}..."} & set(line.split()) for line in usage), (
                name, word, usage)
        allowed = {o for p in options(cmd) for o in (*p.opts, *p.secondary_opts)}
        for line in usage:  # an option shown in a usage line is one of the command's
            assert set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", line)) <= allowed, line


# ------------------------------------------------------------ options


@pytest.mark.parametrize("name", list(commands()))
def test_every_option_of_a_command_is_documented_in_its_subsection(name: str) -> None:
    cmd = commands()[name]
    want = {o for opt in options(cmd) for o in (*opt.opts, *opt.secondary_opts)}
    documented = documented_options(page().command(name))
    assert set(documented) == want, (
        f"missing: {sorted(want - set(documented))}, "
        f"not an option of '{name}': {sorted(set(documented) - want)}"
    )


@pytest.mark.parametrize("name", list(commands()))
def test_option_metavars_defaults_and_ranges_match(name: str) -> None:
    documented = documented_options(page().command(name))
    for opt in options(commands()[name]):
        item = documented[opt.opts[0]]
        where = f"{name} {opt.opts[-1]}"
        metavar = tag_metavar(item)
        if is_flag(opt) or opt.secondary_opts:
            assert metavar == "", f"{where} is a flag, the page gives it '{metavar}'"
            continue
        assert metavar, f"{where} takes a value, the page does not say which"
        if opt.metavar:
            assert metavar == opt.metavar, where
        text = item.text
        if isinstance(opt.default, (int, float, str)):
            m = re.search(r"Default: (\S+?)[.,]?(?:\s|$)", text)
            assert m, f"{where}: the page gives no default ({opt.default})"
            if isinstance(opt.default, (int, float)):
                assert float(m.group(1)) == float(opt.default), where
            else:
                assert m.group(1) == str(opt.default), where
        kind = opt.type
        if isinstance(kind, (click.IntRange, click.FloatRange)):
            if kind.min is not None and kind.max is not None:
                assert f"{kind.min} to {kind.max}" in text, where
            elif isinstance(kind, click.FloatRange) and kind.min and not kind.min_open:
                assert f"at least {kind.min:g}" in text, where


def test_options_read_from_the_environment_say_so() -> None:
    env = page().section("ENVIRONMENT")
    env_tags = {i.tag for i in env.items}
    for name, cmd in commands().items():
        documented = documented_options(page().command(name))
        for opt in options(cmd):
            if opt.envvar:
                assert opt.envvar in documented[opt.opts[0]].text, f"{name} {opt.opts[0]}"
                assert opt.envvar in env_tags


def test_the_global_options_are_documented() -> None:
    ctx = click.Context(cli, **cli.context_settings)
    want = {o for p in cli.get_params(ctx) for o in (*p.opts, *p.secondary_opts)}
    assert set(documented_options(page().section("OPTIONS"))) == want
    # each command's help option is the same -h/--help, documented there once
    for cmd in commands().values():
        help_opt = cmd.get_help_option(click.Context(cmd, **cmd.context_settings))
        assert help_opt is not None and set(help_opt.opts) == {"-h", "--help"}


# ------------------------------------------------------------ exit statuses


def test_exit_status_section_is_the_table_in_errors_py() -> None:
    items = [i for i in page().section("EXIT STATUS").items if i.tag is not None]
    documented = {int(i.tag or ""): i.text for i in items}
    assert documented == EXIT_STATUSES


def test_every_error_class_has_a_documented_status() -> None:
    def subclasses(cls: type[NmbridgeError]) -> Iterator[type[NmbridgeError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    statuses = {c.exit_status for c in (NmbridgeError, *subclasses(NmbridgeError))}
    assert statuses <= set(EXIT_STATUSES), statuses - set(EXIT_STATUSES)


def test_statuses_named_in_command_subsections_are_the_right_ones() -> None:
    """'Exit status 8 when ...', 'Exit 0 if ready, 10 if not': each number is in the table
    and means what the table says."""
    stats = page().command("stats").text
    assert "Exit status 8 when there is no instance" in stats
    assert EXIT_STATUSES[8].startswith("no running instance")
    assert "9 when a stats file cannot be read" in stats
    assert "stats file" in EXIT_STATUSES[9]
    check = page().command("check").text
    assert "Exit 0 if ready, 10 if not, 5 if there is no such interface." in check
    assert EXIT_STATUSES[10].startswith("nmbridge check") and "no such interface" in (
        EXIT_STATUSES[5])
    explain = page().command("explain").text
    assert "usage error (exit 2)" in explain and "usage error" in EXIT_STATUSES[2]


# ------------------------------------------------------------ port names


def test_port_name_differences_are_portspecs_rules() -> None:
    bullets = [i.text for i in page().section("PORT NAMES", "Where nmbridge differs from "
                                               "libnetmap").items if i.tag is not None]
    assert bullets == [" ".join(r.split()) for r in NMBRIDGE_RULES]


def test_port_name_examples_parse() -> None:
    """Every port name the PORT NAMES section shows in bold as an example parses."""
    names = ["netmap:eth0", "vale0:a", "netmap:pipe{1", "packet:veth0", "tap:nmb0", "eth0",
             "netmap:eth0^1/x", "netmap:eth0-2@conf:slots=2048"]
    text = page().command("bridge").text + page().section("EXAMPLES").text
    for name in names:
        assert name in text
        parse_port(name)


# ------------------------------------------------------------ files and environment


def test_the_stats_file_header_table_is_the_writers_layout() -> None:
    rows = [line.split("\t") for line in page().section("FILES", "The stats file").items[1].lines]
    assert rows[0] == ["offset", "field", "type", "meaning"]
    sizes = {"8 bytes": "8s", "u32": "I", "u64": "Q"}
    fixed = counters._FIXED.format.lstrip("<")
    codes = re.findall(r"\d*[a-zA-Z]", fixed)
    body = rows[1:]
    assert [sizes.get(r[2], r[2]) for r in body[:-1]] == codes
    offsets = [int(r[0]) for r in body]
    expected = [0]
    for code in codes:
        expected.append(expected[-1] + counters.struct.calcsize("<" + code))
    assert offsets == expected
    assert body[0][1:] == ["magic", "8 bytes", counters.MAGIC.decode()]
    assert body[1][1] == "version" and body[1][3].endswith(f"now {counters.FORMAT_VERSION}")
    assert body[-1][1:3] == ["meta", "JSON"]


def test_the_counters_area_is_documented_as_the_c_core_lays_it_out() -> None:
    section = page().section("FILES", "The stats file")
    text = section.text
    fields = [i.tag for i in section.items if i.tag is not None]
    assert fields == engine.stats.record_fields()
    assert f"counters_header_size bytes ({engine.stats.header_size()})" in text
    assert f"record_size bytes ({engine.stats.record_size()})" in text
    offsets = engine.stats.header_offsets()
    states = ", ".join(f"{code} {name}" for code, name in sorted(engine.stats.STATE_NAMES.items()))
    assert (f"seq (offset {offsets['seq']}), heartbeat_ns ({offsets['heartbeat_ns']}, "
            in text)
    assert f"nrings ({offsets['nrings']}) and state ({offsets['state']}: {states})" in text


def test_default_stats_directory_is_the_codes() -> None:
    files = {i.tag for i in page().section("FILES").items}
    assert f"{counters.DEFAULT_DIR}/NAME{counters.SUFFIX}" in files


def _environment_variables_read_by_the_package() -> set[str]:
    """Names the runtime package reads: environ.get("X"), envvar="X", X_ENV = "Y"."""
    pattern = re.compile(
        r"""(?:environ\.get\(|getenv\(|envvar=|_ENV\s*=\s*)["']([A-Z][A-Z0-9_]+)["']"""
    )
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name != "_ffi":  # build.py's variables are the build's (README)
            names |= set(pattern.findall(path.read_text()))
    return names


def test_environment_lists_every_variable_nmbridge_reads() -> None:
    read = _environment_variables_read_by_the_package()
    assert {STATS_DIR_ENV, systemd.SOCKET_ENV, systemd.WATCHDOG_USEC_ENV} <= read  # the scan works
    documented = {i.tag for i in page().section("ENVIRONMENT").items if i.tag}
    complete_var = "_NMBRIDGE_COMPLETE"  # click's: _{PROG}_COMPLETE
    assert read | {complete_var, "NMBRIDGE_OPTS"} == documented


# ------------------------------------------------------------ examples


def _example_commands() -> list[list[str]]:
    out = []
    for line in page().section("EXAMPLES").verbatim + page().section("SHELL COMPLETION").verbatim:
        if line.startswith("nmbridge "):
            argv = shlex.split(line)
            for stop in (">", "|", "&&"):
                if stop in argv:
                    argv = argv[:argv.index(stop)]
            out.append(argv[1:])
    return out


def test_every_example_command_line_parses() -> None:
    examples = _example_commands()
    assert len(examples) >= 10
    for argv in examples:
        words = argv if argv and argv[0] in cli.commands else ["bridge", *argv]
        cmd = cli.commands[words[0]]
        ctx = cmd.make_context(words[0], list(words[1:]))
        for port in ctx.params.get("ports", ()) + tuple(ctx.params.get("names", ())):
            parse_port(port)


def test_the_systemd_examples_name_the_unit_and_its_file() -> None:
    verbatim = page().section("EXAMPLES").verbatim
    assert "systemctl enable --now nmbridge@eth0" in verbatim
    assert "journalctl -u nmbridge@eth0 -f" in verbatim
    assert any(line.endswith("> /etc/nmbridge/eth0.conf") for line in verbatim)


def test_shell_completion_section_names_clicks_variable_for_each_shell() -> None:
    text = "\n".join(page().section("SHELL COMPLETION").verbatim)
    for shell in ("bash", "zsh", "fish"):
        assert f"_NMBRIDGE_COMPLETE={shell}_source nmbridge" in text


#: ethtool -K's short names of the offloads nmbridge turns off (nic.NETMAP_OFFLOADS)
ETHTOOL_SHORT = {
    "rx-checksumming": "rx", "tx-checksumming": "tx", "scatter-gather": "sg",
    "tcp-segmentation-offload": "tso", "generic-segmentation-offload": "gso",
    "generic-receive-offload": "gro", "large-receive-offload": "lro",
}


def test_notes_give_the_offload_advice_that_check_applies() -> None:
    from nmbridge import nic

    notes = page().section("NOTES").text
    assert "nmbridge check --fix IFACE turns them all off" in notes
    m = re.search(r"ethtool -K IFACE ((?:\S+ off ?)+)", notes)
    assert m, notes
    words = m.group(1).split()
    assert words[1::2] == ["off"] * (len(words) // 2)
    assert set(words[::2]) == {ETHTOOL_SHORT[name] for name in nic.NETMAP_OFFLOADS}


def test_nmbridge_opts_examples_read_as_options_once_rendered() -> None:
    """NMBRIDGE_OPTS="..." as the reader sees it (a quote inside a macro's argument
    does not group words): each one is a valid list of bridge options."""
    rendered = " ".join(s.text + " " + " ".join(s.verbatim) for s in page().sections)
    examples = re.findall(r'NMBRIDGE_OPTS="([^"]*)"', rendered)
    assert len(examples) >= 2
    for opts in examples:
        cli.commands["bridge"].make_context("bridge", [*opts.split(), "eth0"])

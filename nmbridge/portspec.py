"""Port names, read into what nmbridge opens.

The grammar is netmap's own (libnetmap's ``nmport_prepare``), plus bare
interface names and nmbridge's emulated ports::

    netmap:NAME[MODE][/FLAGS][@N][@OPTION...]   a NIC, or a pipe end NAME{ID / NAME}ID
    valeID:PORT[MODE][/FLAGS][@N][@OPTION...]   a port of VALE switch "valeID"
    NAME[MODE]...                               the same as netmap:NAME...
    packet:IFNAME                               emulated port over an AF_PACKET socket
    tap:IFNAME                                  emulated port over a TAP device

MODE: none (all hardware rings), ``^`` (all host rings), ``^K`` (host ring K),
``*`` (hardware and host rings), ``-K`` (hardware ring K), 0 <= K <= 4094.
FLAGS: ``x`` exclusive, ``R`` RX rings only, ``T`` TX rings only, ``z`` ``t``
``r`` monitors. ``@N``: memory region N (1..65535). OPTION: ``conf:KEY=N,...``,
``share=PORT``, ``extmem:file=PATH,...``, ``offset:initial=N,...``.

Parsing is pure: nothing is opened (``@share`` and ``@extmem`` are resolved
when the port is opened) and the system is consulted only through
``iface_exists``, for the one ambiguous form ``NAME-K`` (see
``NMBRIDGE_RULES``). The numeric values of modes and flags live in the C core;
this module carries their netmap names.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nmbridge import sysfs
from nmbridge.errors import BadPortName
from nmbridge.terminal import printable

__all__ = [
    "KINDS",
    "NMBRIDGE_RULES",
    "PortSpec",
    "RegisterRequest",
    "describe",
    "describe_lines",
    "parse_port",
]

#: netmap ring numbers are 12 bits and libnetmap refuses the mask value itself (4095)
MAX_RING = 4094
#: nmreq_header.nr_name is char[64]: 63 bytes and the terminating NUL
NR_NAME_MAX = 63
#: Linux IFNAMSIZ is 16: 15 bytes and the terminating NUL
IFNAME_MAX = 15
#: nr_mem_id is 16 bits; 0 means "the port's own region", so @0 is refused
MAX_MEM_ID = 0xFFFF
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF

NR_REG_ALL_NIC = "NR_REG_ALL_NIC"
NR_REG_SW = "NR_REG_SW"
NR_REG_NIC_SW = "NR_REG_NIC_SW"
NR_REG_ONE_NIC = "NR_REG_ONE_NIC"
NR_REG_ONE_SW = "NR_REG_ONE_SW"

#: flag letter after '/' -> netmap flag name
FLAG_LETTERS: dict[str, str] = {
    "x": "NR_EXCLUSIVE",
    "R": "NR_RX_RINGS_ONLY",
    "T": "NR_TX_RINGS_ONLY",
    "z": "NR_ZCOPY_MON",
    "t": "NR_MONITOR_TX",
    "r": "NR_MONITOR_RX",
}
# Flag names are listed in ascending bit order, as a decoder of nr_flags lists
# them (and as the golden file does); the values themselves stay in C.
_FLAG_ORDER = (
    "NR_MONITOR_TX",
    "NR_MONITOR_RX",
    "NR_ZCOPY_MON",
    "NR_EXCLUSIVE",
    "NR_RX_RINGS_ONLY",
    "NR_TX_RINGS_ONLY",
)

#: every value of PortSpec.kind
KINDS = (
    "nic",
    "host",
    "nic+host",
    "nic-ring",
    "host-ring",
    "pipe-master",
    "pipe-slave",
    "vale",
    "packet",
    "tap",
)
#: kinds of port that are rings of a host interface (a NIC's or its host stack's)
NIC_KINDS = ("nic", "host", "nic+host", "nic-ring", "host-ring")
#: ... of them, those that bind NIC rings (which puts the NIC in netmap mode)
NIC_RING_KINDS = ("nic", "nic+host", "nic-ring")
_NIC_KIND = {
    NR_REG_ALL_NIC: "nic",
    NR_REG_SW: "host",
    NR_REG_NIC_SW: "nic+host",
    NR_REG_ONE_NIC: "nic-ring",
    NR_REG_ONE_SW: "host-ring",
}

# @conf keys -> the nmreq_register fields they fill. The general keys come first
# so that a specific key beats the general one whatever their order in the name.
_CONF_FIELDS: dict[str, tuple[tuple[str, ...], int]] = {
    "rings": (("nr_tx_rings", "nr_rx_rings"), _U16),
    "host_rings": (("nr_host_tx_rings", "nr_host_rx_rings"), _U16),
    "slots": (("nr_tx_slots", "nr_rx_slots"), _U32),
    "tx_rings": (("nr_tx_rings",), _U16),
    "rx_rings": (("nr_rx_rings",), _U16),
    "host_tx_rings": (("nr_host_tx_rings",), _U16),
    "host_rx_rings": (("nr_host_rx_rings",), _U16),
    "tx_slots": (("nr_tx_slots",), _U32),
    "rx_slots": (("nr_rx_slots",), _U32),
}
# option -> (its keys with the largest number each takes, None = not a number;
# the key that "@option=VALUE" sets; the keys that must be given)
_OPTIONS: dict[str, tuple[dict[str, int | None], str | None, tuple[str, ...]]] = {
    "conf": ({key: limit for key, (_, limit) in _CONF_FIELDS.items()}, None, ()),
    "share": ({"port": None}, "port", ("port",)),
    "extmem": (
        {
            "file": None,
            "if_num": _U32,
            "if_size": _U32,
            "ring_num": _U32,
            "ring_size": _U32,
            "buf_num": _U32,
            "buf_size": _U32,
        },
        "file",
        ("file",),
    ),
    "offset": ({"initial": _U64, "bits": _U64}, "initial", ("initial",)),
}

#: where nmbridge reads names differently from libnetmap; the man page says the same
NMBRIDGE_RULES: tuple[str, ...] = (
    "A name without a prefix is a netmap NIC: eth0 means netmap:eth0. A prefix is "
    "netmap:, valeID:, packet: or tap:; any other 'word:' before the name is an error, "
    "and a bare name may not begin with 'netmap' or 'vale' (write netmap:NAME).",
    "Interface names may contain '-' (veth-a, br-lan^). NAME-K, K digits, is hardware "
    "ring K of NAME, unless an interface named exactly NAME-K exists: then it is that "
    "interface. A name may not end with '-'.",
    "Numbers must be decimal and fit their field: ring 0..4094, memory region @1..@65535, "
    "@conf ring counts 0..65535 and slot counts 0..4294967295; nothing wraps or "
    "silently becomes 0.",
    "Empty parts are errors: an empty value (@conf:rings=), a key without '=value', a "
    "stray ',', an empty VALE port (vale0:), an empty pipe id (pa{ , pa{/R).",
    "Whitespace and unprintable characters are refused in names.",
    "Parsing opens nothing: @share=PORT and @extmem:file=PATH are checked for syntax "
    "only, and resolved when the port is opened. @share and @N together are refused "
    "(both choose the memory region); each of @share, @extmem, @offset may appear once.",
    "@offset is accepted without a separate switch (libnetmap needs "
    'nmport_enable_option("offset")).',
    "packet: and tap: take a Linux interface name (1..15 bytes, no '/', ':' or "
    "whitespace) and nothing else: no mode, flag, memory region or option.",
)


@dataclass(frozen=True)
class RegisterRequest:
    """What goes into nmreq_header + nmreq_register (API 14) for one kernel port."""

    nr_name: str  # bare kernel name: "eth0", "vale0:a", "pa{1"
    nr_mode: str  # an NR_REG_* name
    nr_ringid: int
    nr_flags: tuple[str, ...]  # NR_* flag names, in ascending bit order
    nr_mem_id: int = 0
    nr_tx_slots: int = 0
    nr_rx_slots: int = 0
    nr_tx_rings: int = 0
    nr_rx_rings: int = 0
    nr_host_tx_rings: int = 0
    nr_host_rx_rings: int = 0
    share: str | None = None  # @share=PORT: use PORT's region (resolved when opening)
    share_port: PortSpec | None = None  # that PORT, read
    extmem: dict[str, str] | None = None  # @extmem: libnetmap's key names -> values
    offset: dict[str, str] | None = None  # @offset: "initial", "bits" -> values


@dataclass(frozen=True)
class PortSpec:
    """One port name, read.

    ``ifname`` is the interface (NIC ports and emulated ports), the pipe's parent
    (pipes), or the port name without the switch (VALE ports).
    """

    text: str  # the name as given
    kind: str  # one of KINDS
    ifname: str
    emulated: bool
    request: RegisterRequest | None  # None for emulated ports
    ring: int | None = None  # the ring of NR_REG_ONE_NIC / NR_REG_ONE_SW
    pipe_id: str | None = None
    vale_switch: str | None = None  # "vale0" for vale0:a
    #: VALE ports: the virtio-net header length asked with --vnet-hdr (10 or 12), 0 for none;
    #: not part of the name (libnetmap has no such option), set by the bridge command
    vnet_hdr: int = 0


class _Invalid(Exception):
    """Why a name cannot be read; parse_port turns it into BadPortName."""


_IDENT_CHARS = string.ascii_letters + string.digits + "_"  # C isalnum() in the C locale
_IDENT = re.compile(r"[A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_NAME_END = re.compile(r"[*^/@]")
_PIPE_SEP = re.compile(r"[{}]")
_PREFIX_END = re.compile(r"[:\-*^/@{}]")


def parse_port(name: str, iface_exists: Callable[[str], bool] | None = None) -> PortSpec:
    """Read one port name; raise BadPortName, naming the bad part, if it cannot be read.

    ``iface_exists(ifname)`` is asked only about valid Linux interface names, and
    only to resolve NAME-K (interface NAME-K, or ring K of NAME); by default it
    looks in /sys/class/net.
    """
    exists = sysfs.exists if iface_exists is None else iface_exists
    try:
        return _parse(name, exists)
    except _Invalid as exc:
        raise BadPortName(f"bad port name {_quote(name)}: {exc}") from None


def _quote(text: str) -> str:
    """'text', kept on one line: unprintable characters are escaped."""
    return "'" + printable(text) + "'"


def _parse(name: str, exists: Callable[[str], bool]) -> PortSpec:
    _check_characters(name)
    for prefix, kind in (("packet:", "packet"), ("tap:", "tap")):
        if name.startswith(prefix):
            return _parse_emulated(name, kind, name[len(prefix) :])
    switch, body = _split_prefix(name)
    return _parse_kernel_port(name, switch, body, exists)


def _check_characters(name: str) -> None:
    if not name:
        raise _Invalid("the name is empty")
    if name != name.strip():
        raise _Invalid("leading or trailing whitespace")
    for pos, ch in enumerate(name):
        if not ch.isprintable():
            raise _Invalid(f"unprintable character {_quote(ch)} at position {pos}")


def _is_linux_ifname(ifname: str) -> bool:
    return (
        0 < len(ifname.encode()) <= IFNAME_MAX
        and ifname not in (".", "..")
        and not any(ch in "/:" or ch.isspace() for ch in ifname)
    )


def _parse_emulated(name: str, kind: str, ifname: str) -> PortSpec:
    extra = _NAME_END.search(ifname)
    if extra:
        raise _Invalid(
            f"{kind} ports take no mode, flag, memory region or option "
            f"({_quote(ifname[extra.start() :])})"
        )
    if not ifname:
        raise _Invalid(f"empty interface name after '{kind}:'")
    if any(ch.isspace() for ch in ifname):
        raise _Invalid(f"whitespace in the interface name {_quote(ifname)}")
    if ":" in ifname:
        raise _Invalid(f"':' is not allowed in an interface name ({_quote(ifname)})")
    if ifname in (".", ".."):
        raise _Invalid(f"{_quote(ifname)} is not an interface name")
    size = len(ifname.encode())
    if size > IFNAME_MAX:
        raise _Invalid(
            f"interface name {_quote(ifname)} is {size} bytes long, Linux allows {IFNAME_MAX}"
        )
    return PortSpec(text=name, kind=kind, ifname=ifname, emulated=True, request=None)


def _split_prefix(name: str) -> tuple[str | None, str]:
    """(VALE switch or None, the text after the prefix)."""
    if name.startswith("netmap"):
        colon = name.find(":")
        if colon < 0:
            raise _Invalid(
                "missing ':' after 'netmap' (write netmap:NAME; "
                "a bare name may not begin with 'netmap')"
            )
        if colon != len("netmap"):
            raise _Invalid(
                f"nothing may stand between 'netmap' and ':' (found {_quote(name[6:colon])})"
            )
        return None, name[colon + 1 :]
    if name.startswith("vale"):
        colon = name.find(":")
        if colon < 0:
            raise _Invalid(
                "missing ':' after the VALE switch (write valeID:PORT, "
                "or netmap:NAME for an interface whose name begins with 'vale')"
            )
        switch_id = name[len("vale") : colon]
        if not _IDENT.fullmatch(switch_id):
            raise _Invalid(
                f"{_quote(switch_id)} is not a VALE switch id (letters, digits and '_' only)"
            )
        return name[:colon], name[colon + 1 :]
    end = _PREFIX_END.search(name)
    if end and end.group() == ":":
        raise _Invalid(
            f"unknown prefix {_quote(name[: end.end()])} (known: netmap:, valeID:, packet:, tap:)"
        )
    return None, name  # a bare name: netmap:NAME


def _parse_kernel_port(
    name: str, switch: str | None, body: str, exists: Callable[[str], bool]
) -> PortSpec:
    end = _NAME_END.search(body)
    stem = body[: end.start()] if end else body
    suffix = body[len(stem) :]
    if any(ch.isspace() for ch in stem):
        raise _Invalid(f"whitespace in the port name {_quote(stem)}")
    port, pipe_sep, pipe_id, ring_digits = _split_stem(stem, exists)

    if switch is not None and not port:
        raise _Invalid(f"empty VALE port name after '{switch}:'")
    if pipe_sep is None and not port:
        raise _Invalid("empty interface name")
    if port.endswith("-"):
        raise _Invalid(f"name {_quote(port)} ends with '-' (a ring number must follow '-')")
    kernel_port = port + (f"{pipe_sep}{pipe_id}" if pipe_sep else "")
    nr_name = f"{switch}:{kernel_port}" if switch is not None else kernel_port
    size = len(nr_name.encode())
    if size > NR_NAME_MAX:
        raise _Invalid(
            f"name {_quote(nr_name)} is {size} bytes long, netmap takes at most {NR_NAME_MAX}"
        )

    # Only without a pipe could NAME-K have been the name of an interface.
    hint = "" if pipe_sep else f" (and there is no interface named {_quote(stem)})"
    mode, ring, flags, mem_id, options = _parse_suffix(suffix, ring_digits, hint)
    conf, share_port, extmem, offset = _parse_options(options, exists)
    share = share_port.text if share_port is not None else None
    if share is not None and mem_id:
        raise _Invalid(f"@{mem_id} and @share both choose the memory region: give one")

    request = RegisterRequest(
        nr_name=nr_name,
        nr_mode=mode,
        nr_ringid=ring,
        nr_flags=tuple(f for f in _FLAG_ORDER if f in flags),
        nr_mem_id=mem_id,
        share=share,
        share_port=share_port,
        extmem=extmem,
        offset=offset,
        **conf,
    )
    if pipe_sep is not None:
        kind = "pipe-master" if pipe_sep == "{" else "pipe-slave"
    elif switch is not None:
        kind = "vale"
    else:
        kind = _NIC_KIND[mode]
    return PortSpec(
        text=name,
        kind=kind,
        ifname=port,
        emulated=False,
        request=request,
        ring=ring if mode in (NR_REG_ONE_NIC, NR_REG_ONE_SW) else None,
        pipe_id=pipe_id,
        vale_switch=switch,
    )


def _split_stem(
    stem: str, exists: Callable[[str], bool]
) -> tuple[str, str | None, str | None, str | None]:
    """Cut the name part into (port, pipe separator, pipe id, digits of -K)."""
    brace = _PIPE_SEP.search(stem)
    if brace:
        after = stem[brace.end() :]
        pipe_id = after[: len(after) - len(after.lstrip(_IDENT_CHARS))]
        rest = after[len(pipe_id) :]
        if not pipe_id:
            raise _Invalid(f"empty pipe id after {_quote(brace.group())}")
        ring_digits = None
        if rest:
            # pipe ids cannot hold '-', so here -K can only be a ring
            if not (rest.startswith("-") and _DIGITS.fullmatch(rest[1:])):
                raise _Invalid(f"{_quote(after)} is not a pipe id (letters, digits and '_' only)")
            ring_digits = rest[1:]
        return stem[: brace.start()], brace.group(), pipe_id, ring_digits
    base, dash, digits = stem.rpartition("-")
    if dash and _DIGITS.fullmatch(digits):
        # The documented rule for NAME-K: an existing interface of that exact name wins.
        if _is_linux_ifname(stem) and exists(stem):
            return stem, None, None, None
        return base, None, None, digits
    return stem, None, None, None


def _number(digits: str, limit: int) -> int | None:
    """The value of decimal digits if it is at most limit (None otherwise), never a wrap."""
    if not _DIGITS.fullmatch(digits):
        return None
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(limit)):  # also keeps int() away from huge strings
        return None
    value = int(significant)
    return value if value <= limit else None


def _ring(digits: str, sign: str) -> int:
    value = _number(digits, MAX_RING)
    if value is None:
        raise _Invalid(f"ring {sign}{digits} is out of range 0..{MAX_RING}")
    return value


def _parse_suffix(
    suffix: str, ring_digits: str | None, hint: str
) -> tuple[str, int, set[str], int, str]:
    """Mode, flags and memory region: (mode, ring, flags, mem_id, the options' text)."""
    mode, ring, pos = NR_REG_ALL_NIC, 0, 0
    if ring_digits is not None:
        mode, ring = NR_REG_ONE_NIC, _ring(ring_digits, "-")
        if suffix[:1] in ("^", "*"):
            raise _Invalid(f"mode {_quote(suffix[0])} cannot follow ring -{ring_digits}{hint}")
        after = f"ring -{ring_digits}"
    elif suffix.startswith("*"):
        mode, pos, after = NR_REG_NIC_SW, 1, "the mode '*'"
    elif suffix.startswith("^"):
        digits = _DIGITS.match(suffix, 1)
        if digits:
            mode, ring, pos = NR_REG_ONE_SW, _ring(digits.group(), "^"), digits.end()
        else:
            pos = 1
            mode = NR_REG_SW
        after = f"the mode {_quote(suffix[:pos])}"
    else:
        after = "the name"

    flags: set[str] = set()
    mem_id = 0
    while pos < len(suffix):
        ch = suffix[pos]
        if ch == "/":
            end = suffix.find("@", pos)
            end = len(suffix) if end < 0 else end
            letters = suffix[pos + 1 : end]
            if not letters and end == len(suffix):
                raise _Invalid("empty flag list after '/'")
            for letter in letters:
                if letter not in FLAG_LETTERS:
                    raise _Invalid(
                        f"unknown flag {_quote(letter)} after '/' (flags: "
                        + " ".join(FLAG_LETTERS)
                        + ")"
                    )
                flags.add(FLAG_LETTERS[letter])
            pos, after = end, f"flags {_quote(suffix[pos:end])}"
        elif ch == "@":
            digits = _DIGITS.match(suffix, pos + 1)
            if not digits:
                if pos + 1 == len(suffix):
                    raise _Invalid("nothing after '@' (a memory region @N or an option)")
                return mode, ring, flags, mem_id, suffix[pos:]
            value = _number(digits.group(), MAX_MEM_ID)
            if not value:
                raise _Invalid(f"memory region @{digits.group()} is out of range 1..{MAX_MEM_ID}")
            if mem_id and value != mem_id:
                raise _Invalid(f"two memory regions (@{mem_id} and @{value})")
            mem_id = value
            pos, after = digits.end(), f"'@{digits.group()}'"
        else:
            raise _Invalid(f"unexpected {_quote(ch)} after {after}")
    return mode, ring, flags, mem_id, ""


def _parse_options(
    text: str, exists: Callable[[str], bool]
) -> tuple[dict[str, int], PortSpec | None, dict[str, str] | None, dict[str, str] | None]:
    """@option... -> (register fields from @conf, share, extmem, offset)."""
    conf: dict[str, int] = {}
    share: PortSpec | None = None
    extmem: dict[str, str] | None = None
    offset: dict[str, str] | None = None
    if not text:
        return conf, share, extmem, offset
    for item in text[1:].split("@"):
        option, keys = _option_keys(item)
        if option == "conf":
            for key, (fields, _) in _CONF_FIELDS.items():
                if key in keys:
                    for field_name in fields:
                        conf[field_name] = int(keys[key])
        elif option == "share":
            if share is not None:
                raise _Invalid("option share given twice")
            try:
                share = _parse(keys["port"], exists)
            except _Invalid as exc:
                raise _Invalid(f"option share: {_quote(keys['port'])}: {exc}") from None
            if share.emulated:
                raise _Invalid(f"option share: {_quote(share.text)} is not a netmap port")
        elif option == "extmem":
            if extmem is not None:
                raise _Invalid("option extmem given twice")
            extmem = keys
        else:
            if offset is not None:
                raise _Invalid("option offset given twice")
            offset = keys
    return conf, share, extmem, offset


def _label(key: str) -> str:
    """A key as the documentation spells it (libnetmap takes '-' and '_' alike)."""
    return key.replace("_", "-")


def _option_keys(item: str) -> tuple[str, dict[str, str]]:
    """One option without its '@' -> (option, {key: value}), values checked."""
    if not item:
        raise _Invalid("empty option (nothing after '@')")
    delim = re.search(r"[:=]", item)
    option = item[: delim.start()] if delim else item
    if option not in _OPTIONS:
        hint = "; a memory region @N comes before the options" if option.isdigit() else ""
        raise _Invalid(f"unknown option {_quote(option)} (known: {', '.join(_OPTIONS)}){hint}")
    limits, default_key, required = _OPTIONS[option]
    if delim is None:
        raise _Invalid(f"option {option} needs a value (@{option}:key=value)")
    body = item[delim.end() :]
    keys: dict[str, str] = {}
    if delim.group() == "=":
        if default_key is None:
            raise _Invalid(f"option {option} takes keys: @{option}:key=value,...")
        if not body:
            raise _Invalid(f"empty value for option {option}")
        keys[default_key] = body  # the whole rest, commas included, as libnetmap reads it
    else:
        if not body:
            raise _Invalid(f"option {option} has no keys")
        for pair in body.split(","):
            key, equals, value = pair.partition("=")
            key = key.replace("-", "_")
            if not key:
                raise _Invalid(f"empty key in option {option} (a stray ',')")
            if key not in limits:
                known = ", ".join(_label(k) for k in limits)
                raise _Invalid(
                    f"unknown key {_quote(_label(key))} in option {option} (keys: {known})"
                )
            if key in keys:
                raise _Invalid(f"key {_label(key)} given twice (option {option})")
            if not equals:
                raise _Invalid(f"key {_label(key)} needs '=value' (option {option})")
            if not value:
                raise _Invalid(f"empty value (option {option}, key {_label(key)})")
            keys[key] = value
    for key in required:
        if key not in keys:
            raise _Invalid(f"option {option} needs key {_label(key)}")
    for key, value in keys.items():
        limit = limits[key]
        if limit is None:
            continue
        number = _number(value, limit)
        where = f"(option {option}, key {_label(key)})"
        if number is None and _DIGITS.fullmatch(value):
            raise _Invalid(f"{_quote(value)} is out of range 0..{limit} {where}")
        if number is None:
            raise _Invalid(f"{_quote(value)} is not a number {where}")
        keys[key] = str(number)
    return option, keys


def _rings_phrase(spec: PortSpec, request: RegisterRequest) -> str:
    # pipes and VALE ports have rings, but no hardware behind them
    rings = "hardware rings" if spec.kind in _NIC_KIND.values() else "rings"
    phrase = {
        NR_REG_ALL_NIC: f"all {rings}",
        NR_REG_SW: "all host rings",
        NR_REG_NIC_SW: f"all {rings} and host rings",
        NR_REG_ONE_NIC: f"{rings[:-1]} {request.nr_ringid}",
        NR_REG_ONE_SW: f"host ring {request.nr_ringid}",
    }[request.nr_mode]
    if "NR_RX_RINGS_ONLY" in request.nr_flags:
        phrase += ", RX only"
    if "NR_TX_RINGS_ONLY" in request.nr_flags:
        phrase += ", TX only"
    return phrase


#: the rings each register mode binds: (NIC rings, host rings), each "all", "one" or None
_MODE_RINGS: dict[str, tuple[str | None, str | None]] = {
    "NR_REG_ALL_NIC": ("all", None),
    "NR_REG_SW": (None, "all"),
    "NR_REG_NIC_SW": ("all", "all"),
    "NR_REG_ONE_NIC": ("one", None),
    "NR_REG_ONE_SW": (None, "one"),
}


#: flags that leave a port one way only, and why a bridge (both ways) cannot use it
_MONITOR = "a monitor port only receives copies (netmap refuses its TX sync)"
_ONE_WAY_FLAGS = (
    ("NR_MONITOR_TX", _MONITOR),
    ("NR_MONITOR_RX", _MONITOR),
    ("NR_ZCOPY_MON", _MONITOR),
    ("NR_RX_RINGS_ONLY", "/R binds the RX rings only, and the bridge sends through the port too"),
    ("NR_TX_RINGS_ONLY", "/T binds the TX rings only, and the bridge receives from the port too"),
)


def one_way_reason(spec: PortSpec) -> str | None:
    """Why a port cannot carry frames both ways (its flags), or None if it can."""
    req = spec.request
    if req is None:
        return None
    for flag, why in _ONE_WAY_FLAGS:
        if flag in req.nr_flags:
            return why
    return None


#: the virtio-net header lengths netmap sets on a port (NETMAP_REQ_PORT_HDR_SET):
#: struct virtio_net_hdr, and virtio_net_hdr_mrg_rxbuf (virtio 1.0's, QEMU's usual one)
VNET_HDR_LENS = (10, 12)


def vnet_hdr_refusal(spec: PortSpec) -> str | None:
    """Why a port cannot be given a virtio-net header, or None if it can: netmap sets
    one only on VALE ports (NETMAP_REQ_PORT_HDR_SET looks the name up on a switch)."""
    if spec.kind == "vale":
        return None
    return "not a VALE port: netmap sets virtio-net headers only on VALE ports (valeX:PORT)"


def share_rings(a: PortSpec, b: PortSpec) -> bool:
    """Whether two kernel ports would bind a ring in common (a bridge between them would
    send frames back where they came from)."""
    ra, rb = a.request, b.request
    if ra is None or rb is None or ra.nr_name != rb.nr_name:
        return False
    none = (None, None)
    for sa, sb in zip(_MODE_RINGS.get(ra.nr_mode, none), _MODE_RINGS.get(rb.nr_mode, none)):
        if sa and sb and ("all" in (sa, sb) or ra.nr_ringid == rb.nr_ringid):
            return True
    return False


def same_interface(a: PortSpec, b: PortSpec) -> bool:
    """Whether an emulated port and another port are on one interface: a bridge
    between them would hand every frame back to the interface it came from (two
    packet: sockets, a packet: socket and the TAP, a packet: socket and the NIC's
    rings)."""
    if a.ifname != b.ifname or not (a.emulated or b.emulated):
        return False
    other = a if b.emulated else b
    return other.emulated or other.kind in NIC_KINDS


def describe(spec: PortSpec) -> dict[str, Any]:
    """What ``nmbridge explain --json`` prints for one name: plain JSON-ready data."""
    out: dict[str, Any] = {
        "name": spec.text,
        "kind": spec.kind,
        "interface": spec.ifname,
        "emulated": spec.emulated,
    }
    req = spec.request
    if req is None:
        return out
    out.update(
        nr_name=req.nr_name,
        nr_mode=req.nr_mode,
        nr_ringid=req.nr_ringid,
        nr_flags=list(req.nr_flags),
        nr_mem_id=req.nr_mem_id,
        nr_tx_slots=req.nr_tx_slots,
        nr_rx_slots=req.nr_rx_slots,
        nr_tx_rings=req.nr_tx_rings,
        nr_rx_rings=req.nr_rx_rings,
        nr_host_tx_rings=req.nr_host_tx_rings,
        nr_host_rx_rings=req.nr_host_rx_rings,
        rings=_rings_phrase(spec, req),
    )
    options: dict[str, Any] = {}
    if req.share is not None:
        options["share"] = req.share
    if req.extmem is not None:
        options["extmem"] = dict(req.extmem)
    if req.offset is not None:
        options["offset"] = dict(req.offset)
    out["options"] = options
    return out


def describe_lines(spec: PortSpec) -> list[str]:
    """The human form of describe(): one "key: value" per line."""
    lines = []
    for key, value in describe(spec).items():
        if key == "options":
            if not value:
                lines.append("options: none")
            for option, setting in value.items():
                if isinstance(setting, dict):
                    setting = ", ".join(f"{k}={v}" for k, v in setting.items())
                lines.append(f"option {option}: {setting}")
        elif isinstance(value, bool):
            lines.append(f"{key}: {'yes' if value else 'no'}")
        elif isinstance(value, list):
            lines.append(f"{key}: {', '.join(value) if value else 'none'}")
        else:
            lines.append(f"{key}: {value}")
    return lines

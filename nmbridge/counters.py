"""The stats file: one per running bridge, in the stats directory.

Layout (all integers little-endian; the man page documents the same):

    offset 0   magic        8 bytes  b"NMBSTATS"
           8   version      u32      FORMAT_VERSION
          12   meta_len     u32      length of the JSON metadata
          16   pid          u32      the bridge's process id
          20   reserved     u32
          24   started_ns   u64      CLOCK_REALTIME when the bridge started
          32   counters_ofs u64      where the counters area starts (page aligned)
          40   meta         JSON     instance, ports, rings, record fields, record size,
                                     counters header offsets
    counters_ofs: the counters area, written only by the bridge's C loop:
          a header (seq, heartbeat_ns, nrings, state) then one record of u64
          counters per ring. seq is odd while the loop writes: a reader retries
          until it reads the same even seq before and after its copy.

Liveness: the bridge holds an exclusive flock() on its file for its whole
life; the kernel drops it when the process dies, however it dies. A reader
that can take a shared lock has found a stale file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import mmap
import os
import stat
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmbridge.errors import (
    NotRunning,
    PermissionDenied,
    PortBusy,
    StatsCorrupt,
    UsageError,
)
from nmbridge.terminal import printable

MAGIC = b"NMBSTATS"
FORMAT_VERSION = 1
SUFFIX = ".stats"
DEFAULT_DIR = "/run/nmbridge"
#: the environment variable that names another stats directory
DIR_ENV = "NMBRIDGE_STATS_DIR"
#: what a reader takes from a file at most: a bridge writes 2 ports, at most
#: 4 * NMB_MAX_RINGS rings and a few dozen u64 fields; a file that claims more is
#: corrupt (a 500 KB sparse file naming a million fields took the reader to 6 GB)
MAX_PORTS = 8
MAX_RINGS = 1024
MAX_FIELDS = 256
MAX_RECORD_SIZE = 8 * MAX_FIELDS
MAX_HEADER_SIZE = 4096
_FIXED = struct.Struct("<8sIIIIQQ")
_PAGE = 4096
_READ_RETRIES = 1000
_HEADER_KEYS = ("seq", "heartbeat_ns", "nrings", "state")
#: counters every reader of format 1 shows; the others may be absent (then 0)
_REQUIRED_FIELDS = ("frames", "bytes")
#: drop reason (JSON key, Prometheus label) -> the record field that counts it
DROP_REASONS: dict[str, str] = {
    "oversize": "drop_oversize",
    "chain": "drop_chain",
    "rx": "drop_rx",
    "tx": "drop_tx",
    "header": "drop_header",
    "gso": "drop_gso",
}
#: what the engine did for a port that cannot take an offload (JSON key -> field);
#: gso_frames counts on RX rings, the others on TX rings
OFFLOAD_FIELDS: dict[str, str] = {
    "gso_frames": "gso_frames",
    "gso_segments": "gso_segments",
    "csum_sw": "csum_sw",
}
#: what the capture (--pcap) did with the frames that crossed (JSON key -> field); not
#: drops: a frame the capture could not take crossed all the same
CAPTURE_FIELDS: dict[str, str] = {
    "captured": "captured",
    "capture_dropped": "capture_dropped",
}
#: every field that counts a frame not forwarded
DROP_FIELDS = tuple(DROP_REASONS.values())
#: what a direction counts on the other port's TX rings (its frames leaving), not on
#: its own RX rings
TX_SIDE_FIELDS = ("drop_tx", "gso_segments", "csum_sw")


def dropped(values: dict[str, int]) -> int:
    """All the frames a set of counters did not forward, whatever the reason."""
    return sum(values.get(f, 0) for f in DROP_FIELDS)


@dataclass(frozen=True)
class RingCounters:
    port: int
    direction: str
    ring: int
    host: bool
    values: dict[str, int]


@dataclass
class Snapshot:
    """One consistent read of a stats file."""

    path: str
    instance: str
    pid: int
    started_ns: int
    live: bool
    state: str
    heartbeat_ns: int
    ports: list[dict[str, Any]]
    zero_copy: bool
    rings: list[RingCounters] = field(default_factory=list)
    taken_ns: int = 0  # CLOCK_MONOTONIC when read

    def totals(self, direction_port: int | None = None) -> dict[str, int]:
        """Sums over the RX rings (of one port if given): what entered the bridge; the
        TX_SIDE_FIELDS over the other port's TX rings, where its frames left."""
        out: dict[str, int] = {}
        for ring in self.rings:
            if ring.direction != "rx":
                continue
            if direction_port is not None and ring.port != direction_port:
                continue
            for k, v in ring.values.items():
                out[k] = out.get(k, 0) + v
        for key in TX_SIDE_FIELDS:
            out[key] = sum(
                r.values.get(key, 0)
                for r in self.rings
                if r.direction == "tx" and (direction_port is None or r.port != direction_port)
            )
        return out

    def dropped(self, direction_port: int | None = None) -> int:
        """The frames of a direction (or all) that were not forwarded."""
        return dropped(self.totals(direction_port))


def valid_instance_name(name: str) -> bool:
    # a leading dot would hide the file from list_instances (temporary files start so)
    return (
        0 < len(name) <= 64
        and not name.startswith(".")
        and all(c.isascii() and (c.isalnum() or c in "-_.:@^{}") for c in name)
    )


def stats_path(stats_dir: str, instance: str) -> Path:
    if not valid_instance_name(instance):
        raise UsageError(
            f"bad instance name '{instance}': use letters, digits and - _ . : @ ^ {{ }} "
            "(64 at most, not starting with a dot)"
        )
    return Path(stats_dir) / f"{instance}{SUFFIX}"


def _is_locked(fd: int) -> bool:
    """True if another process holds the writer's lock on this file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class StatsWriter:
    """Creates the stats file of a running bridge and holds it until close()."""

    def __init__(
        self,
        stats_dir: str,
        instance: str,
        ports: Sequence[dict[str, Any]],
        rings: Sequence[dict[str, Any]],
        record_fields: Sequence[str],
        record_size: int,
        counters_header: dict[str, int],
        counters_header_size: int,
        zero_copy: bool,
    ) -> None:
        self.path = stats_path(stats_dir, instance)
        self._lock = -1
        meta = json.dumps(
            {
                "instance": instance,
                "ports": list(ports),
                "rings": list(rings),
                "fields": list(record_fields),
                "record_size": record_size,
                "counters_header": counters_header,
                "counters_header_size": counters_header_size,
                "zero_copy": zero_copy,
            },
            separators=(",", ":"),
        ).encode()
        head_len = _FIXED.size + len(meta)
        counters_ofs = (head_len + _PAGE - 1) // _PAGE * _PAGE
        self.counters_offset = counters_ofs
        size = counters_ofs + counters_header_size + record_size * len(rings)
        try:
            self._dfd = open_stats_dir(stats_dir)
        except OSError as exc:
            raise _dir_error(stats_dir, exc) from None
        name = self.path.name
        tmp = f".{name}.{os.getpid()}.tmp"
        try:
            # 0600 and locked from the start: nobody else can open it, let alone lock it
            # first; readable by all (0644) only once complete
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=self._dfd)
        except OSError as exc:
            os.close(self._dfd)
            raise _dir_error(stats_dir, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock = take_instance_lock(self._dfd, stats_dir, instance)
            # one clock for the bridge's uptime: its own ("up", "stopped after") counts
            # from started_monotonic, the same moment as started_ns that readers see
            self.started_monotonic = time.monotonic()
            self.started_ns = time.time_ns()
            fixed = _FIXED.pack(
                MAGIC, FORMAT_VERSION, len(meta), os.getpid(), 0, self.started_ns, counters_ofs
            )
            os.ftruncate(fd, size)
            os.pwrite(fd, fixed + meta, 0)
            os.fchmod(fd, 0o644)
            # the instance's lock is ours: a file of this name is a stale one
            os.rename(tmp, name, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
        except BaseException as exc:
            os.close(fd)
            if self._lock >= 0:
                os.close(self._lock)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self._dfd)
            os.close(self._dfd)
            if isinstance(exc, OSError):
                raise _dir_error(stats_dir, exc) from None
            raise
        self._fd = fd
        self._ino = os.fstat(fd).st_ino
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        """Remove the file (if it is still ours) and drop the lock."""
        if self._fd < 0:
            return
        name = self.path.name
        with contextlib.suppress(OSError):
            if os.stat(name, dir_fd=self._dfd, follow_symlinks=False).st_ino == self._ino:
                os.unlink(name, dir_fd=self._dfd)
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        os.close(self._fd)
        os.close(self._lock)  # after the unlink: the next bridge of the name finds it free
        os.close(self._dfd)
        self._fd = -1


def open_stats_dir(stats_dir: str, what: str = "the stats directory") -> int:
    """The stats directory's descriptor, once it is safe to write in: not a symbolic
    link, owned by this user or root, writable by nobody else (sticky or not).
    Every file in it is opened relative to this descriptor.

    A missing directory is made 0755 whatever the umask (other users read the counters,
    only the bridges' owner writes there): made 0700 and opened before the chmod, so that
    it is never writable by others, nor swapped for a link between the two steps."""
    parent = os.path.dirname(os.path.abspath(stats_dir))
    if not os.path.lexists(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(stats_dir, 0o700)
        made = True
    if os.path.islink(stats_dir):
        raise UsageError(f"{what} {stats_dir} is a symbolic link: give the directory itself "
                         f"({os.path.realpath(stats_dir)})")
    fd = os.open(stats_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if made:
            os.fchmod(fd, 0o755)
        _check_stats_dir_safe(fd, f"{what} {stats_dir}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_stats_dir_safe(fd: int, what: str) -> None:
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise UsageError(
            f"{what} belongs to uid {st.st_uid}, who could replace the files nmbridge "
            "keeps there: choose a directory of your own"
        )
    mode = stat.S_IMODE(st.st_mode)
    # sticky is not enough: others could still make the names a bridge needs first
    if mode & 0o022:
        raise UsageError(
            f"{what} is writable by others (mode {mode:04o}), who could replace the files "
            "nmbridge keeps there: remove their write permission (chmod go-w) or choose "
            "another directory"
        )


def instance_lock_name(instance: str) -> str:
    return f".{instance}.lock"


def take_instance_lock(dfd: int, stats_dir: str, instance: str) -> int:
    """The instance's lock, held (LOCK_EX) for the bridge's whole life: a 0600 file of
    the bridge owner's that nobody else can open. (The stats file is 0644: anyone
    can lock that one, and a killed bridge's stale file then looked live for ever,
    each restart refused as "already running".) Busy: PortBusy with the holder's pid."""
    name = instance_lock_name(instance)
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 0o600, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), 0)
                or stat.S_IMODE(st.st_mode) & 0o077):
            raise UsageError(f"{stats_dir}/{name} is not nmbridge's own (owner uid "
                             f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise already_running(instance, _lock_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def running_pid(stats_dir: str, instance: str) -> int | None:
    """The pid of the running bridge of that name (0 if it cannot be told), or None."""
    try:
        fd = os.open(os.path.join(stats_dir, instance_lock_name(instance)),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # none: never run, or not ours to read (the writer will say)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_pid(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _lock_pid(fd: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    return 0


def pid_alive(pid: int) -> bool:
    """Whether process pid exists (another user's too: EPERM says it does)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def already_running(instance: str, pid: int) -> PortBusy:
    return PortBusy(f"an instance named '{instance}' is already running"
                    + (f" (pid {pid})" if pid else "") + ": stop it or choose another --name")


def stats_dir_error(what: str, exc: OSError) -> Exception:
    """The error for a stats directory nmbridge cannot create or write (`what` says
    which: "cannot create the stats directory DIR", ...)."""
    if exc.errno == errno.EROFS:
        return PermissionDenied(f"{what}: it is on a read-only file system (choose a "
                                "writable --stats-dir)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{what}: permission denied (run as root, or choose a "
                                "writable --stats-dir)")
    return UsageError(f"{what}: {exc.strerror}")


def _dir_error(stats_dir: str, exc: OSError) -> Exception:
    return stats_dir_error(f"cannot write the stats file in {stats_dir}", exc)


def _read_pid(fd: int) -> int:
    with contextlib.suppress(OSError, struct.error):
        raw = os.pread(fd, _FIXED.size, 0)
        if raw[:8] == MAGIC:
            return int(_FIXED.unpack(raw)[3])
    return 0


def read_snapshot(path: str | Path) -> Snapshot:
    """Read one consistent snapshot of a stats file; liveness from its lock."""
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO (or device) in the stats directory must not hang the reader;
        # O_NOFOLLOW: a link there must not make it read (and show) another file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotRunning(printable(f"no stats file {path}: is the instance running?")) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _corrupt(str(path), "a symbolic link, not a stats file") from None
        raise NotRunning(printable(f"cannot read {path}: {exc.strerror}")) from None
    try:
        return read_open_snapshot(fd, str(path))
    finally:
        os.close(fd)


def read_open_snapshot(fd: int, path: str) -> Snapshot:
    """read_snapshot of a stats file already open (path: what messages call it)."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _corrupt(path, "not a regular file")
        return _read_fd(fd, path)
    except OSError as exc:
        raise _corrupt(path, f"cannot read: {exc.strerror or exc}") from None


def _corrupt(path: str, why: str) -> StatsCorrupt:
    return StatsCorrupt(printable(f"{path}: {why}"))


def _read_counters(fd: int, path: str, ofs: int, area: int, seq_off: int, live: bool) -> bytes:
    """The counters area, consistent under the writer's seqlock."""
    if not live:
        # nobody writes a stale file any more (a writer killed mid-update leaves
        # seq odd for ever): what is there is all there will be
        return os.pread(fd, area, ofs)
    for _ in range(_READ_RETRIES):
        seq1 = struct.unpack("<Q", os.pread(fd, 8, ofs + seq_off))[0]
        if seq1 & 1:
            time.sleep(0.0001)
            continue
        body = os.pread(fd, area, ofs)
        seq2 = struct.unpack("<Q", os.pread(fd, 8, ofs + seq_off))[0]
        if seq1 == seq2:
            return body
    raise _corrupt(path, "counters never settled (is the writer stuck mid-update?)")


def _no_constant(name: str) -> Any:
    # json reads NaN and Infinity, which no field of ours may hold (int() of one raises)
    raise ValueError(f"{name} in the metadata")


def _finite_float(text: str) -> float:
    value = float(text)  # 1e400 is infinity
    if not math.isfinite(value):
        raise ValueError(f"{text} in the metadata")
    return value


def _read_fd(fd: int, path: str) -> Snapshot:
    size = os.fstat(fd).st_size
    raw = os.pread(fd, _FIXED.size, 0)
    if len(raw) < _FIXED.size:
        raise _corrupt(path, "truncated stats file (no header)")
    magic, version, meta_len, pid, _res, started_ns, counters_ofs = _FIXED.unpack(raw)
    if magic != MAGIC:
        raise _corrupt(path, "not an nmbridge stats file (bad magic)")
    if version > FORMAT_VERSION:
        raise _corrupt(
            path, f"stats format version {version} is newer than this nmbridge reads "
            f"({FORMAT_VERSION}): upgrade nmbridge"
        )
    if version < 1:
        raise _corrupt(path, f"bad stats format version {version}")
    if _FIXED.size + meta_len > size or meta_len > 1 << 20:
        raise _corrupt(path, "truncated stats file (metadata)")
    try:
        meta = json.loads(os.pread(fd, meta_len, _FIXED.size), parse_constant=_no_constant,
                          parse_float=_finite_float)
        fields: list[str] = [str(f) for f in meta["fields"]]
        record_size = int(meta["record_size"])
        hdr_off: dict[str, int] = {k: int(v) for k, v in meta["counters_header"].items()}
        hdr_size = int(meta["counters_header_size"])
        rings_meta: list[dict[str, Any]] = list(meta["rings"])
        ports: list[dict[str, Any]] = list(meta["ports"])
        instance = printable(str(meta["instance"]))
        zero_copy = bool(meta["zero_copy"])
        if not all(isinstance(meta[k], list) for k in ("fields", "rings", "ports")):
            raise TypeError("fields, rings and ports must be lists")
        if not all(isinstance(p, dict) for p in ports):
            raise TypeError("ports")
        # what a port's names say reaches terminals: shown, never obeyed
        ports = [{k: printable(v) if isinstance(v, str) else v for k, v in p.items()}
                 for p in ports]
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError,
            RecursionError) as exc:  # RecursionError: JSON nested deeper than Python goes
        raise _corrupt(path, f"bad metadata ({exc.__class__.__name__})") from None
    if (
        len(fields) > MAX_FIELDS
        or len(rings_meta) > MAX_RINGS
        or len(ports) > MAX_PORTS
        or record_size > MAX_RECORD_SIZE
        or hdr_size > MAX_HEADER_SIZE
        or not all(f.isidentifier() for f in fields)
    ):
        raise _corrupt(path, "bad record layout (larger than any bridge writes)")
    if (
        record_size < 8 * len(fields)
        or any(f not in fields for f in _REQUIRED_FIELDS)
        or counters_ofs % 8
        or counters_ofs < _FIXED.size + meta_len
        or any(k not in hdr_off for k in _HEADER_KEYS)
        or any(not 0 <= off <= hdr_size - 8 or off % 8 for off in hdr_off.values())
    ):
        raise _corrupt(path, "bad record layout")
    area = hdr_size + record_size * len(rings_meta)
    if counters_ofs + area > size:
        raise _corrupt(path, "truncated stats file (counters)")
    # locked by its writer, which still lives: a stats file is 0644, and a lock
    # anyone took on a dead bridge's file is no sign of life
    live = _is_locked(fd) and pid_alive(int(pid))
    body = _read_counters(fd, path, counters_ofs, area, hdr_off["seq"], live)
    if len(body) < area:
        raise _corrupt(path, "truncated stats file (counters)")
    heartbeat = struct.unpack_from("<Q", body, hdr_off["heartbeat_ns"])[0]
    state_code = struct.unpack_from("<Q", body, hdr_off["state"])[0]
    state = {0: "starting", 1: "running", 2: "link-wait", 3: "stopped"}.get(state_code, "unknown")
    rings: list[RingCounters] = []
    rec = struct.Struct("<" + "Q" * len(fields))
    for i, rm in enumerate(rings_meta):
        vals = rec.unpack_from(body, hdr_size + i * record_size)
        try:
            ring = RingCounters(
                port=int(rm["port"]),
                direction=str(rm["direction"]),
                ring=int(rm["ring"]),
                host=bool(rm.get("host", False)),
                values=dict(zip(fields, vals)),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise _corrupt(path, "bad ring metadata") from None
        if ring.direction not in ("rx", "tx") or not 0 <= ring.port < len(ports):
            raise _corrupt(path, "bad ring metadata")
        rings.append(ring)
    return Snapshot(
        path=path,
        instance=instance,
        pid=int(pid),
        started_ns=int(started_ns),
        live=live,
        state=state if live else "stale",
        heartbeat_ns=int(heartbeat),
        ports=ports,
        zero_copy=zero_copy,
        rings=rings,
        taken_ns=time.monotonic_ns(),
    )


def list_instances(stats_dir: str) -> Iterator[Path]:
    """The stats files in a directory, sorted by name."""
    try:
        names = sorted(os.listdir(stats_dir))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NotRunning(f"cannot read {stats_dir}: {exc.strerror}") from None
    for name in names:
        if name.endswith(SUFFIX) and not name.startswith("."):
            yield Path(stats_dir) / name

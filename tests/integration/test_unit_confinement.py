"""The unit's file system view, played by an attacker (root).

systemd/nmbridge@.service runs nmbridge as uid 0 with two capabilities. uid 0
owns root's 0600 files, so it reads them without CAP_DAC_OVERRIDE: only what
the unit hides keeps them out of reach. PID 1 here is not systemd, so the
test builds the unit's mount namespace itself from the unit's own lines
(ProtectSystem=, ProtectHome=, PrivateTmp=, TemporaryFileSystem=,
BindReadOnlyPaths=, BindPaths=, InaccessiblePaths=, RuntimeDirectory=,
ProtectProc=, ProcSubset=, CapabilityBoundingSet=, NoNewPrivileges=) with
`unshare --mount`, bind mounts, tmpfs and setpriv, then runs inside it what a
compromised bridge would: read /etc/shadow, 0600 files the test made, PID 1's
root through /proc, D-Bus's socket; write where code lives. It also runs what
must keep working there: the README's /opt venv and /usr/local/bin/nmbridge
(stand-ins added on overlays in the test's mount namespace only: the host's
/opt and /usr/local/bin are untouched), run by a Python the unit keeps, and a
real bridge that notifies and forwards. The test also shows the attack working
with the unit's capabilities and without its view: the view is what stops it.

A directive of the unit that changes the file system view and that this test
does not know fails the test: a new line cannot escape it. What only systemd
can show (its own order of mounts, the device cgroup of DevicePolicy=, the
system call filter) is listed in the unit's issue, not here.

Run as a script (by the test, inside `unshare --mount`), this file applies a
plan of mounts and execs the confined command.

Under CI=true a missing privilege fails the run instead of skipping it.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from nmbridge.lab.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "nmbridge@.service"
NMBRIDGE = str(Path(sys.executable).with_name("nmbridge"))
#: what %t is for a system service
RUNTIME = "/run"
#: where systemd's notify socket is for a system service (NOTIFY_SOCKET)
NOTIFY_SOCKET = "/run/systemd/notify"
MNT_DETACH = 2
#: directives of the unit that change what the service sees of the file system, and this
#: test's reading of them; any other such directive fails the test (see FS_DIRECTIVES)
KNOWN = {
    "ProtectSystem", "ProtectHome", "PrivateTmp", "TemporaryFileSystem", "BindReadOnlyPaths",
    "BindPaths", "InaccessiblePaths", "RuntimeDirectory", "ProtectProc", "ProcSubset",
    "PrivateMounts", "PrivateDevices", "ProtectKernelTunables", "ProtectControlGroups",
    "ProtectKernelModules", "ProtectKernelLogs", "RuntimeDirectoryMode",
    "RuntimeDirectoryPreserve",
}
FS_DIRECTIVES = KNOWN | {
    "ReadOnlyPaths", "ReadWritePaths", "ExecPaths", "NoExecPaths", "RootDirectory",
    "RootImage", "MountImages", "ExtensionImages", "ExtensionDirectories", "MountAPIVFS",
    "StateDirectory", "CacheDirectory", "LogsDirectory", "ConfigurationDirectory",
    "PrivateUsers", "DynamicUser", "User", "Group", "SupplementaryGroups",
    "LoadCredential", "SetCredential", "LogNamespace",
}


def service_directives() -> list[tuple[str, str]]:
    """(key, value) of every directive of [Service], in order."""
    out, section = [], ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


@dataclass
class Mount:
    """One mount of the plan, applied in order inside the test's mount namespace."""

    path: str
    kind: str  # tmpfs, overlay, inaccessible, bind, proc, file (write `content` at path)
    source: str = ""
    read_only: bool = False
    ignore_missing: bool = False
    mode: str = "0755"
    options: str = ""
    content: str = ""


def _path_key(m: Mount) -> tuple[str, ...]:
    return Path(m.path).parts  # parents before children, as systemd orders its mounts


def unit_mounts(runtime_dir: str, notify_source: str,
                directives: list[tuple[str, str]] | None = None
                ) -> tuple[list[Mount], list[str]]:
    """The unit's file system view as mounts (and the paths left writable), from its lines.

    runtime_dir stands in for the RuntimeDirectory= that systemd makes; notify_source for
    PID 1's notify socket where the host has none."""
    if directives is None:
        directives = service_directives()
    mounts: list[Mount] = []
    writable = ["/dev", "/proc"]  # ProtectSystem=strict leaves the API trees (not /sys)
    strict = False
    for key, value in directives:
        assert key in KNOWN or key not in FS_DIRECTIVES, (
            f"{key}= changes the service's file system view: teach this test what it does")
        words = shlex.split(value)
        if key == "ProtectSystem":
            assert value == "strict", value
            strict = True
        elif key == "ProtectHome":
            assert value == "yes", value
            mounts += [Mount(p, "inaccessible", ignore_missing=True)
                       for p in ("/home", "/root", "/run/user")]
        elif key == "PrivateTmp" and value == "yes":
            mounts += [Mount(p, "tmpfs", mode="1777") for p in ("/tmp", "/var/tmp")]
            writable += ["/tmp", "/var/tmp"]
        elif key == "TemporaryFileSystem":
            for word in words:
                path, _, opts = word.partition(":")
                ro = "ro" in opts.split(",")
                mounts.append(Mount(path, "tmpfs", read_only=ro))
                if not ro:
                    writable.append(path)
        elif key == "InaccessiblePaths":
            mounts += [Mount(w.lstrip("-"), "inaccessible", ignore_missing=w.startswith("-"))
                       for w in words]
        elif key in ("BindReadOnlyPaths", "BindPaths"):
            for word in words:
                src, _, rest = word.lstrip("-").partition(":")
                dst = rest.partition(":")[0] or src
                if src == NOTIFY_SOCKET and not os.path.exists(src):
                    src = notify_source
                mounts.append(Mount(dst, "bind", source=src, ignore_missing=word[0] == "-",
                                    read_only=key == "BindReadOnlyPaths"))
                if key == "BindPaths":
                    writable.append(dst)
        elif key == "RuntimeDirectory":
            for name in words:
                mounts.append(Mount(f"{RUNTIME}/{name}", "bind", source=runtime_dir))
                writable.append(f"{RUNTIME}/{name}")
        elif key == "ProtectProc":
            opts = f"hidepid={value}"
            subset = [v for k, v in directives if k == "ProcSubset"]
            if subset and subset[0] == "pid":
                opts += ",subset=pid"
            mounts.append(Mount("/proc", "proc", options=opts))
    assert strict, "ProtectSystem=strict: the test remounts everything else read-only"
    return sorted(mounts, key=_path_key), writable


def unit_env() -> dict[str, str]:
    """This process's environment as the unit's command gets it: the unit's
    Environment= lines, and no NMBRIDGE_CLAIMS_DIR (the unit sets none: its own /run)."""
    env = dict(os.environ)
    env.pop("NMBRIDGE_CLAIMS_DIR", None)
    for assignment in (v for k, v in service_directives() if k == "Environment"):
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%t", RUNTIME)
    return env


def unit_capabilities() -> list[str]:
    """setpriv's options for CapabilityBoundingSet= and NoNewPrivileges=."""
    values = dict(service_directives())
    caps = ",".join("+" + c.lower().removeprefix("cap_")
                    for c in values["CapabilityBoundingSet"].split())
    out = ["--bounding-set", f"-all,{caps}", "--inh-caps", "-all"]
    if values.get("NoNewPrivileges") == "yes":
        out.append("--no-new-privs")
    return out


# ------------------------------------------------------------ inside the mount namespace


def _sh(*argv: str, check: bool = True) -> bool:
    # --no-canonicalize: a relative path stays relative (see apply_plan)
    argv = (argv[0], "--no-canonicalize", *argv[1:])
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {res.stderr.strip()}")
    return res.returncode == 0


def _resolve(stage: str, path: str) -> str | None:
    """path as the host sees it (symlinks resolved against the host's root, staged)."""
    parts, seen = list(Path(path).parts[1:]), 0
    cur = stage
    while parts:
        cur = os.path.join(cur, parts.pop(0))
        if os.path.islink(cur):
            seen += 1
            if seen > 40:
                return None
            target = os.readlink(cur)
            base = stage if target.startswith("/") else os.path.dirname(cur)
            parts = list(Path(target).parts[1 if target.startswith("/") else 0:]) + parts
            cur = base
    return cur if os.path.lexists(cur) else None


def apply_plan(plan: dict) -> None:
    """Mount the plan's mounts, make everything but its writable paths read-only."""
    # relative paths from the work directory: they still lead there once a tmpfs covers /tmp
    os.chdir(plan["work"])
    _sh("mount", "--make-rprivate", "/")
    stage, blank = "stage", "blank"
    os.makedirs(stage, exist_ok=True)
    os.makedirs(blank, exist_ok=True)
    _sh("mount", "--rbind", "/", stage)  # the host's tree, for bind sources
    _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", blank)
    os.mkdir(f"{blank}/dir", 0)
    os.close(os.open(f"{blank}/reg", os.O_CREAT | os.O_WRONLY, 0))
    os.chmod(f"{blank}/dir", 0)
    os.chmod(f"{blank}/reg", 0)
    ours: list[str] = []  # tmpfs mounted here: mount points may be made in them
    read_only: list[str] = []

    def make_point(path: str, is_dir: bool) -> None:
        if os.path.lexists(path):
            return
        if not any(path.startswith(t.rstrip("/") + "/") for t in ours):
            raise SystemExit(f"{path}: no mount point, and not in a tmpfs of the plan (systemd "
                             "would make it on the host; this test makes none there)")
        if is_dir:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()

    for m in (Mount(**d) for d in plan["mounts"]):
        if m.kind == "tmpfs":
            make_point(m.path, True)
            _sh("mount", "-t", "tmpfs", "-o", f"mode={m.mode}", "tmpfs", m.path)
            ours.append(m.path)
        elif m.kind == "overlay":  # the host's files, and what the plan adds, in a tmpfs
            layer = os.path.abspath(f"overlay-{len(ours)}")
            os.makedirs(layer, exist_ok=True)
            _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", layer)
            os.mkdir(f"{layer}/upper", 0o755)
            os.mkdir(f"{layer}/work")
            _sh("mount", "-t", "overlay", "-o",
                f"lowerdir={m.path},upperdir={layer}/upper,workdir={layer}/work",
                "overlay", m.path)
            ours.append(m.path)
        elif m.kind == "file":
            with open(m.path, "w") as f:
                f.write(m.content)
            os.chmod(m.path, 0o755)
        elif m.kind == "inaccessible":
            if not os.path.lexists(m.path):
                if m.ignore_missing:
                    continue
                raise SystemExit(f"{m.path}: missing")
            node = "dir" if os.path.isdir(m.path) else "reg"
            _sh("mount", "--bind", f"{blank}/{node}", m.path)
            read_only.append(m.path)
        elif m.kind == "bind":
            src = _resolve(stage, m.source) if m.source.startswith("/") else None
            if src is None:
                if m.ignore_missing:
                    continue
                raise SystemExit(f"{m.source}: missing")
            make_point(m.path, os.path.isdir(src))
            _sh("mount", "--rbind", src, m.path)
            if m.read_only:
                read_only.append(m.path)
        elif m.kind == "proc":
            _sh("mount", "-t", "proc", "-o", m.options, "proc", m.path)
    # umount(8) looks the path up in mountinfo, absolute: the system call takes it relative
    libc = ctypes.CDLL(None, use_errno=True)
    for point in (stage, blank):
        if libc.umount2(point.encode(), MNT_DETACH) != 0:
            raise SystemExit(f"umount {point}: {os.strerror(ctypes.get_errno())}")
    # ProtectSystem=strict: every mount read-only but the writable paths
    writable = plan["writable"]
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        if "\\" in point or any(point == w or point.startswith(w.rstrip("/") + "/")
                                for w in writable if w not in read_only):
            continue
        _sh("mount", "-o", "remount,bind,ro", point, check=False)
    for point in read_only:  # tmpfs:ro and read-only binds under a writable tree
        _sh("mount", "-o", "remount,bind,ro", point, check=False)


def main() -> None:
    plan_file, _, *argv = sys.argv[1:]
    with open(plan_file) as f:
        plan = json.load(f)
    apply_plan(plan)
    os.execvp("setpriv", ["setpriv", *plan["setpriv"], "--", *argv])


# ------------------------------------------------------------ the test's side

pytestmark = pytest.mark.root

#: what the attacker runs, in the interpreter under test: each path read, listed, written
#: or connected to, and what happened (True, or the errno's name)
PROBE = r"""
import errno, json, os, socket, sys
want = json.loads(sys.argv[1])
out = {}
def attempt(kind, path, fn):
    try:
        fn(path)
        out[f"{kind} {path}"] = True
    except OSError as e:
        out[f"{kind} {path}"] = errno.errorcode.get(e.errno, str(e.errno))
def read(p):
    with open(p, "rb") as f:
        f.read(1)
def write(p):
    with open(p, "w") as f:
        f.write("x")
    os.unlink(p)
def connect(p):
    kind = socket.SOCK_DGRAM if p.endswith("notify") else socket.SOCK_STREAM
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        s.connect(p)
    finally:
        s.close()
for p in want["read"]: attempt("read", p, read)
for p in want["list"]: attempt("list", p, os.listdir)
for p in want["write"]: attempt("write", p, write)
for p in want["connect"]: attempt("connect", p, connect)
def umount(p):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(p.encode(), 2) != 0:
        raise OSError(ctypes.get_errno(), p)
for p in want.get("umount", []): attempt("umount", p, umount)
with open("/proc/self/status") as f:
    out["CapEff"] = next(l.split()[1] for l in f if l.startswith("CapEff:"))
print(json.dumps(out))
"""


def base_python(unavailable: Callable[[str], NoReturn]) -> str:
    """A Python of this Python's version (the C core is built for it) where the unit keeps
    it: this venv's own base if it lies under /usr or /opt, else the system's."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if base.startswith(("/usr/", "/opt/")):
        return base
    exe = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if not os.access(exe, os.X_OK):
        unavailable(f"this venv's Python ({base}) is where the unit hides it and {exe} is "
                    "missing: the /opt venv and the /usr/local install need one of them")
    return exe


@dataclass
class Confined:
    """The unit's view, ready to run commands in: the plan file and its parts."""

    work: Path
    runtime: Path
    notify: str
    secrets: dict[str, str]
    python: str  # a Python outside what the unit hides, the base of the /opt venv

    def argv(self, argv: list[str], confined: bool = True) -> list[str]:
        plan = self.work / ("plan.json" if confined else "bare.json")
        return ["unshare", "--mount", "--propagation", "private", sys.executable, __file__,
                str(plan), "--", *argv]

    def run(self, argv: list[str], confined: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv, confined), capture_output=True, text=True,
                              timeout=60)


#: what nmbridge imports at run time (pyproject's dependencies and theirs)
RUNTIME_DISTRIBUTIONS = ("click", "rich", "markdown-it-py", "mdurl", "pygments", "cffi",
                         "pycparser")


def installs(work: Path, python: str) -> list[Mount]:
    """Stand-ins for root's pip install (/usr/local/bin/nmbridge) and the README's venv
    (/opt/nmbridge): this tree's nmbridge (its compiled core too) and what it imports,
    copied into a venv of a system Python, at those paths. Copied, not pointed at: the
    tree may live where the unit hides (a clone under /tmp), as an install never does.
    Mounted before the unit's view, in the test's mount namespace only."""
    venv = work / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    (site,) = venv.glob("lib/python*/site-packages")
    shutil.copytree(ROOT / "nmbridge", site / "nmbridge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in RUNTIME_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or ():
            src = Path(str(dist.locate_file(file)))
            if src.is_file() and "__pycache__" not in file.parts:
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, site / file)
    script = "import sys\nfrom nmbridge.cli import main\nsys.exit(main())\n"
    (venv / "bin" / "nmbridge").write_text("#!/opt/nmbridge/bin/python\n" + script)
    (venv / "bin" / "nmbridge").chmod(0o755)
    opt_site = f"/opt/nmbridge/{site.relative_to(venv)}"
    local = f"#!{python}\nimport site\nsite.addsitedir({opt_site!r})\n" + script
    return [
        Mount("/opt", "overlay"), Mount("/opt/nmbridge", "bind", source=str(venv)),
        Mount("/usr/local/bin", "overlay"),
        Mount("/usr/local/bin/nmbridge", "file", content=local),
    ]


@pytest.fixture
def confined(tmp_path: Path, unavailable: Callable[[str], NoReturn]) -> Iterator[Confined]:
    """The plan of the unit's view, and 0600 root files of the test where the unit hides."""
    work = tmp_path / "confined"
    runtime = tmp_path / "run-nmbridge"  # RuntimeDirectory=nmbridge
    work.mkdir()
    runtime.mkdir()
    notify = str(tmp_path / "notify.sock")  # PID 1's notify socket, where the host has none
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    token = secrets.token_hex(6)
    made = {}
    for directory in ("/etc", "/var/lib", "/run", "/root"):
        path = f"{directory}/nmbridge-test-secret-{token}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.write(fd, b"secret\n")
        os.close(fd)
        made[directory] = path
    try:
        mounts, writable = unit_mounts(str(runtime), notify)
        setpriv = unit_capabilities()
        python = base_python(unavailable)
        extra = installs(work, python)
        common = {"work": str(work), "setpriv": setpriv}
        (work / "plan.json").write_text(json.dumps(
            {**common, "mounts": [asdict(m) for m in extra + mounts], "writable": writable}))
        # the attack as it was: the same capabilities, no view of the unit
        (work / "bare.json").write_text(json.dumps(
            {**common, "mounts": [asdict(m) for m in extra], "writable": ["/"]}))
        yield Confined(work, runtime, notify, made, python)
    finally:
        sock.close()
        for path in made.values():
            os.unlink(path)


def probe(c: Confined, want: dict[str, list[str]], python: str, confined: bool = True
          ) -> dict[str, object]:
    res = c.run([python, "-c", PROBE, json.dumps(want)], confined)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


SECRETS = ["/etc/shadow", "/etc/gshadow", "/proc/1/root/etc/shadow", "/proc/1/environ"]


def test_the_attacker_reads_root_files_without_the_units_view(confined: Confined) -> None:
    """The attack works with only the unit's capabilities: what stops it is the view."""
    got = probe(confined, {"read": ["/etc/shadow", *confined.secrets.values()], "list": [],
                           "write": [], "connect": []}, "/opt/nmbridge/bin/python",
                confined=False)
    assert int(str(got.pop("CapEff")), 16) == (1 << 12) | (1 << 13)  # NET_ADMIN, NET_RAW
    assert all(v is True for v in got.values()), got


def test_the_unit_hides_root_secrets_from_the_bridge(confined: Confined) -> None:
    ssh = [str(p) for p in Path("/etc/ssh").glob("ssh_host_*_key")]
    dbus = [p for p in ("/run/dbus/system_bus_socket", "/run/systemd/private",
                        "/run/docker.sock") if os.path.exists(p)]
    want = {
        "read": [*SECRETS, *confined.secrets.values(), *ssh],
        "list": ["/root", "/home", "/var/lib", "/var/log", "/etc/ssh", "/boot", "/srv"],
        "write": ["/usr/local/lib/nmbridge-test-tamper", "/etc/nmbridge-test-tamper",
                  "/sys/class/net/nmbridge-test-tamper"],
        "connect": dbus,
        "umount": ["/etc", "/run", "/root"],  # undo the view: CAP_SYS_ADMIN is gone
    }
    for python in ("/opt/nmbridge/bin/python", confined.python):
        got = probe(confined, want, python)
        assert int(str(got.pop("CapEff")), 16) == (1 << 12) | (1 << 13)
        reached = {k: v for k, v in got.items() if v is True}
        assert not reached, f"{python} under the unit's view reached: {sorted(reached)}"
        listed = {k: v for k, v in got.items() if k.startswith("list") and v != "ENOENT"}
        # a hidden tree is an empty tmpfs or an inaccessible node: nothing listed in it
        assert all(v in ("EACCES", "ENOENT") for v in listed.values()), listed
        writes = {k: v for k, v in got.items() if k.startswith("write")}
        assert all(v in ("EROFS", "EACCES", "ENOENT") for v in writes.values()), writes
        umounts = {k: v for k, v in got.items() if k.startswith("umount")}
        assert set(umounts.values()) == {"EPERM"}, umounts


def test_what_a_bridge_needs_is_still_there(confined: Confined) -> None:
    want = {
        "read": ["/etc/ld.so.cache", "/etc/passwd", "/etc/hosts", "/proc/self/status",
                 "/sys/class/net/lo/ifindex"],
        "list": ["/usr/local/bin", "/opt/nmbridge/bin", "/sys/class/net", "/usr/lib"],
        "write": ["/run/nmbridge/probe", "/tmp/probe"],
        "connect": [NOTIFY_SOCKET],
    }
    if os.path.exists("/sys/module/netmap"):
        want["read"].append("/sys/module/netmap/parameters/buf_size")
    got = probe(confined, want, "/opt/nmbridge/bin/python")
    got.pop("CapEff")
    assert all(v is True for v in got.values()), got
    for command in ("/opt/nmbridge/bin/nmbridge", "/usr/local/bin/nmbridge"):
        res = confined.run([command, "--help"])
        assert res.returncode == 0 and "Usage: nmbridge" in res.stdout, command + res.stderr
        assert res.stderr == "", res.stderr  # no complaint about a hidden file (sitecustomize)


def test_a_bridge_notifies_and_forwards_under_the_units_view(confined: Confined,
                                                             sb: Sandbox) -> None:
    """The real thing: the unit's command from the /opt venv, in the unit's view, in a
    Sandbox: READY=1 through the bound notify socket, the stats file in the runtime
    directory, pings through, and a clean stop."""
    from notify_listener import Listener

    notify_dir = Path(sb.tempdir("notify"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_dir / "notify.sock"))
    lis = Listener(sock, NOTIFY_SOCKET).start()
    try:
        plan = json.loads((confined.work / "plan.json").read_text())
        for m in plan["mounts"]:
            if m["path"] == NOTIFY_SOCKET:
                m["source"] = str(notify_dir / "notify.sock")
        (confined.work / "plan.json").write_text(json.dumps(plan))
        (exec_start,) = [v for k, v in service_directives() if k == "ExecStart"]
        words = shlex.split(exec_start)
        assert words[:2] == ["nmbridge", "bridge"]
        argv = ["/opt/nmbridge/bin/nmbridge", *words[1:-2], "--interval", "0.2",
                "--wait-link", "30", "-i", sb.wire_port, "-i", sb.host_port]
        env = {**unit_env(), "NOTIFY_SOCKET": NOTIFY_SOCKET}
        proc = sb.popen(sb.bridge_ns, confined.argv(argv), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lis.wait_for("READY", lambda v: v == "1", timeout=20)
            stats = list(confined.runtime.glob("*.stats"))
            assert len(stats) == 1, stats
            ping = sb.run(sb.wire_ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-q",
                                         sb.host_addr], timeout=20, check=False)
            assert "3 received" in ping.stdout, ping.stdout + ping.stderr
            snap = subprocess.run([NMBRIDGE, "stats", "--json"], capture_output=True,
                                  text=True, timeout=30,
                                  env={**os.environ,
                                       "NMBRIDGE_STATS_DIR": str(confined.runtime)})
            assert snap.returncode == 0, snap.stderr
            (instance,) = json.loads(snap.stdout)["instances"]
            assert instance["live"]
            assert sb.stop(proc) == 0
            _, err = proc.communicate(timeout=10)
        finally:
            sb.stop(proc)
        assert "stopped (signal)" in err, err
        lis.wait_for("STOPPING", lambda v: v == "1")
        assert not list(confined.runtime.glob("*.stats"))
    finally:
        lis.close()


#: where the README's drop-in gives a capture under the unit a directory
CAPTURE_DIR = "/var/lib/nmbridge"


def test_a_capture_under_the_unit_needs_the_readmes_drop_in(confined: Confined, sb: Sandbox,
                                                            tmp_path: Path) -> None:
    """The unit lets a bridge write nowhere but its stats: --pcap into CAPTURE_DIR is one
    usage error line. With the README's drop-in (BindPaths=CAPTURE_DIR) the same bridge
    captures there, and the file is on the host once it has stopped."""
    import pcapng
    from polling import wait_for

    from nmbridge.counters import read_snapshot
    from nmbridge.errors import USAGE_STATUS

    argv = ["/opt/nmbridge/bin/nmbridge", "bridge", "--no-live", "--duration", "3",
            "--pcap", f"{CAPTURE_DIR}/eth0.pcapng", "-i", sb.wire_port, "-i", sb.host_port]
    env = unit_env()
    proc = sb.popen(sb.bridge_ns, confined.argv(argv), env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    try:
        _, refused = proc.communicate(timeout=30)
    finally:
        sb.stop(proc)
    assert proc.returncode == USAGE_STATUS, refused
    assert refused.count("\n") == 1, refused
    assert f"--pcap {CAPTURE_DIR}/eth0.pcapng: cannot write" in refused, refused

    captures = tmp_path / "captures"  # the drop-in's directory, as mkdir -p makes it
    captures.mkdir()
    plan = json.loads((confined.work / "plan.json").read_text())
    mounts, writable = unit_mounts(str(confined.runtime), confined.notify,
                                   [*service_directives(), ("BindPaths", CAPTURE_DIR)])
    (drop_in,) = [m for m in mounts if m.path == CAPTURE_DIR]
    assert CAPTURE_DIR in writable
    drop_in.source = str(captures)  # the host's CAPTURE_DIR, without making it here
    plan["mounts"].append(asdict(drop_in))  # after /var's tmpfs, as systemd orders it
    plan["writable"] = writable
    (confined.work / "plan.json").write_text(json.dumps(plan))
    proc = sb.popen(sb.bridge_ns, confined.argv(argv), env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the bridge to forward", lambda: any(
            read_snapshot(f).live for f in confined.runtime.glob("*.stats")), 20, proc)
        ping = sb.run(sb.wire_ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-q",
                                   sb.host_addr], timeout=20, check=False)
        _, err = proc.communicate(timeout=20)
    finally:
        sb.stop(proc)
    assert proc.returncode == 0, err
    assert "3 received" in ping.stdout, ping.stdout + ping.stderr
    [section] = pcapng.read((captures / "eth0.pcapng").read_bytes())
    icmp = [p for p in section.packets if p.data[12:14] == b"\x08\x00" and p.data[23] == 1]
    assert len(icmp) == 6, [p.data[:40].hex() for p in section.packets]


def test_the_plan_follows_the_unit() -> None:
    """The test reads the unit's lines, not a copy of them: every hidden tree of the unit is
    in the plan, and an unknown directive of the file system view is refused."""
    mounts, _ = unit_mounts("/nonexistent", "/nonexistent")
    planned = {(m.path, m.kind) for m in mounts}
    for key, value in service_directives():
        if key == "TemporaryFileSystem":
            assert all((w.partition(":")[0], "tmpfs") in planned for w in value.split())
        if key == "InaccessiblePaths":
            assert all((w.lstrip("-"), "inaccessible") in planned for w in value.split())
    with pytest.raises(AssertionError, match="ReadWritePaths"):
        unit_mounts("/nonexistent", "/nonexistent",
                    [*service_directives(), ("ReadWritePaths", "/")])
    assert re.search(r"^ProtectSystem=strict$", UNIT.read_text(), re.M)


if __name__ == "__main__":
    main()


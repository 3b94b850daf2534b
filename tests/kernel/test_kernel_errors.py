"""Every way opening a kernel port can fail, against the fake netmap module:
one line on stderr and the exit status nmbridge/errors.py documents for it;
and the errno the real module answers for each refusal (tests/data/kernel/),
turned into the right nmbridge error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_snippets import (
    OUTCOME_FOR_ERRNO,
    FakeKernel,
    assert_like_record,
    golden,
    open_each,
)
from namespaces import add_veth, namespace

from nmbridge.errors import EXIT_STATUSES

NMBRIDGE = Path(sys.executable).parent / "nmbridge"
VALE_PAIR_ARGS = ["-i", "vale0:a", "-i", "vale0:b", "--no-live"]


def assert_one_error_line(run: Any, status: int, *phrases: str) -> str:
    """The command failed with `status`, saying so in exactly one line."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == status, run.describe()
    assert len(lines) == 1, run.describe()
    assert lines[0].startswith("nmbridge: error: "), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def error_ns(unavailable: Any) -> Iterator[str]:
    """One namespace for this module's commands: veths fk0 and fk1 (NICs the fake
    knows) and zz0 (an interface the fake module does not know)."""
    with namespace("ke", unavailable) as name:
        for nic in ("fk0", "fk1", "zz0"):
            add_veth(name, nic, f"{nic}p")
        yield name


def test_the_statuses_used_here_mean_what_the_table_says() -> None:
    assert "no /dev/netmap" in EXIT_STATUSES[3]
    assert "permission denied" in EXIT_STATUSES[4]
    assert "no such interface" in EXIT_STATUSES[5]
    assert "busy" in EXIT_STATUSES[6]
    assert "API mismatch" in EXIT_STATUSES[7] and "option refused" in EXIT_STATUSES[7]
    assert "not ready" in EXIT_STATUSES[10]


# ---------------------------------------------------------------- no /dev/netmap


@pytest.mark.parametrize("args", [VALE_PAIR_ARGS, ["-i", "netmap:pa{1", "-i", "netmap:pa}1"]])
def test_no_dev_netmap_says_how_to_load_it(fake: FakeKernel, tmp_path: Path,
                                           args: list[str]) -> None:
    missing = str(tmp_path / "no" / "netmap")
    run = fake.run_cli(args, env={"NMBRIDGE_NETMAP_DEVICE": missing,
                                  "FAKENETMAP_PATH": missing})
    assert_one_error_line(run, 3, "/dev/netmap does not exist", "modprobe netmap",
                          "kldload netmap", "packet:", "tap:")
    assert fake.events("register") == []


@pytest.mark.root
def test_no_dev_netmap_for_an_interface(fake: FakeKernel, tmp_path: Path, error_ns: str) -> None:
    missing = str(tmp_path / "missing" / "netmap")
    run = fake.run_cli(["fk0", "--no-live"], netns=error_ns, timeout=10,
                       env={"NMBRIDGE_NETMAP_DEVICE": missing, "FAKENETMAP_PATH": missing})
    assert_one_error_line(run, 3, "modprobe netmap", "kldload netmap", "emulated ports")


# ---------------------------------------------------------------- permission denied


@pytest.mark.root
def test_permission_denied_names_root_and_cap_net_admin(fake: FakeKernel) -> None:
    # /dev/netmap is crw------- root (recorded); root without CAP_DAC_OVERRIDE on a
    # device file owned by another user meets the same EACCES a normal user does
    os.chown(fake.device, 65534, 65534)
    os.chmod(fake.device, 0o600)
    drop = "-dac_override,-dac_read_search"
    proc = subprocess.run(
        ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--",
         str(NMBRIDGE), *VALE_PAIR_ARGS],
        env=fake.env(), capture_output=True, text=True, timeout=30)

    class Run:
        returncode, stderr = proc.returncode, proc.stderr

        @staticmethod
        def describe() -> str:
            return f"status {proc.returncode}\n{proc.stderr}"

    assert_one_error_line(Run, 4, "permission denied", "root", "CAP_NET_ADMIN")


# ---------------------------------------------------------------- no such interface


def test_refusals_recorded_on_the_real_module_become_the_right_errors(
        fake: FakeKernel) -> None:
    records = {rec["case"]: rec for rec in golden("open_errors.json")}
    cases = {
        "nonexistent interface": "netmap:nosuchif0",
        "lo (loopback)": "netmap:lo",
        "v0 nr_version=14 (NETMAP_API)": "netmap:fk0",
    }
    out = open_each(fake, list(cases.values()))
    for (case, name), (opened, outcome, detail) in zip(cases.items(), out):
        assert opened == name
        assert outcome == OUTCOME_FOR_ERRNO[records[case]["result"]], (case, detail)
        if outcome == "ok":
            assert_like_record(detail, records[case], case)
    assert "no interface or port 'nosuchif0'" in out[0][2]
    # the kernel is given the bare name: "netmap:v0" is ENXIO on the real module
    assert records["nr_name with 'netmap:' prefix left in"]["result"] == "ENXIO"
    assert [e["name"] for e in fake.events("register")] == ["fk0"]


def test_an_empty_name_never_reaches_the_kernel(fake: FakeKernel) -> None:
    assert golden("open_errors.json")[7]["result"] == "ENXIO"  # "" on the real module
    run = fake.run_cli(["-i", "netmap:", "-i", "netmap:pa}1"])
    assert_one_error_line(run, 2, "netmap:", "empty")
    assert fake.events("register") == [] and fake.exit_stats() == []  # device never opened


@pytest.mark.root
def test_an_interface_netmap_does_not_know(fake: FakeKernel, error_ns: str) -> None:
    run = fake.run_cli(["zz0", "--no-live"], netns=error_ns)
    assert_one_error_line(run, 5, "no interface or port 'zz0'")


@pytest.mark.root
def test_an_interface_that_does_not_exist_is_named_before_netmap_is_asked(
        fake: FakeKernel, error_ns: str) -> None:
    run = fake.run_cli(["nosuch0", "--no-live"], netns=error_ns)
    assert_one_error_line(run, 5, "no interface named 'nosuch0'")
    assert fake.exit_stats() == []  # /dev/netmap was never opened


# ---------------------------------------------------------------- busy

EXCLUSIVE_CASES = [
    ("v0 ALL_NIC NR_EXCLUSIVE, first open", "netmap:fk0/x"),
    ("v0 ALL_NIC NR_EXCLUSIVE, second open while first held", "netmap:fk0/x"),
    ("v0 ALL_NIC without NR_EXCLUSIVE while exclusive held", "netmap:fk0"),
    ("v0 SW (host rings, not covered by the exclusive NIC open) while exclusive held",
     "netmap:fk0^"),
    (None, "close"),
    ("v0 ALL_NIC plain, first", "netmap:fk0"),
    ("v0 ALL_NIC NR_EXCLUSIVE while a plain open is held", "netmap:fk0/x"),
]


def test_exclusive_opens_follow_the_records(fake: FakeKernel) -> None:
    records = {rec["case"]: rec for rec in golden("open_exclusive.json")}
    assert set(records) == {c for c, _n in EXCLUSIVE_CASES if c}
    out = open_each(fake, [name for _c, name in EXCLUSIVE_CASES], held=True)
    cases = [c for c, _n in EXCLUSIVE_CASES if c]
    assert len(out) == len(cases)
    for case, (_name, outcome, detail) in zip(cases, out):
        assert outcome == OUTCOME_FOR_ERRNO[records[case]["result"]], (case, detail)
        if outcome == "ok":
            assert_like_record(detail, records[case], case)
        else:
            assert "busy" in detail, detail


HOLD_AND_RUN = r'''
held = open_ports(os.environ["NMB_T_HOLD"])
status = run_cli(json.loads(os.environ["NMB_T_ARGS"]))
result(status=status)
engine.close_ports(held)
'''


@pytest.mark.parametrize("hold, args", [
    ("netmap:pa{1/x", ["-i", "netmap:pa{1", "-i", "netmap:pa}1"]),
    ("netmap:pa}1", ["-i", "netmap:pa{1", "-i", "netmap:pa}1/x"]),
])
def test_busy_port(fake: FakeKernel, hold: str, args: list[str]) -> None:
    # the fake module lives in one process: the holder and the command share it
    run = fake.run_py(HOLD_AND_RUN, env={"NMB_T_HOLD": hold,
                                         "NMB_T_ARGS": json.dumps([*args, "--no-live"])})
    assert run.result["status"] == 6
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nmbridge: error: "), run.stderr
    assert "busy" in lines[0]


@pytest.mark.root
def test_nmbridge_iface_while_another_program_holds_it_exclusively(
        fake: FakeKernel, error_ns: str) -> None:
    run = fake.run_py(HOLD_AND_RUN, netns=error_ns,
                      env={"NMB_T_HOLD": "netmap:fk0/x", "NMB_T_ARGS": '["fk0", "--no-live"]'})
    assert run.result["status"] == 6
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == ["nmbridge: error: netmap:fk0: busy (another program has these rings "
                     "open)"], run.stderr


# ---------------------------------------------------------------- API mismatch


def test_an_older_netmap_api_is_named(fake: FakeKernel) -> None:
    # a module without NIOCCTRL (API < 14): nmbridge asks NIOCGINFO for its API
    run = fake.run_cli(VALE_PAIR_ARGS, env={"FAKENETMAP_LEGACY_API": "11"})
    assert_one_error_line(run, 7, "API 11", "14..15", "update the netmap module")
    assert fake.events("register") == []


def test_an_older_netmap_api_through_the_engine(fake: FakeKernel) -> None:
    run = fake.run_py(r'''
try:
    open_ports("netmap:fk0")
except Exception as exc:
    result(error=type(exc).__name__, status=exc.exit_status, message=str(exc))
''', env={"FAKENETMAP_LEGACY_API": "12"})
    assert run.result["error"] == "KernelRefused" and run.result["status"] == 7
    assert "API 12" in run.result["message"]


# ---------------------------------------------------------------- refused by the kernel


def test_an_option_the_kernel_refuses(fake: FakeKernel, tmp_path: Path) -> None:
    recorded = golden("open_offsets_option.json")["unknown_option_77"]
    assert recorded["result"] == "EOPNOTSUPP"
    region = tmp_path / "extmem"
    region.write_bytes(bytes(1 << 20))
    run = fake.run_cli(["-i", f"netmap:pa{{1@extmem:file={region}", "-i", "netmap:pa}1",
                        "--no-live"])
    assert_one_error_line(run, 7, "refused @extmem")
    assert fake.events("register") == []


@pytest.mark.root
@pytest.mark.parametrize("port, phrase", [
    ("netmap:fk0-1", "a ring that does not exist"),  # recorded: EINVAL
    ("netmap:lo", "EINVAL"),  # recorded: lo cannot be put in netmap mode
])
def test_a_register_the_kernel_refuses(fake: FakeKernel, error_ns: str, port: str,
                                       phrase: str) -> None:
    run = fake.run_cli(["-i", port, "-i", "netmap:fk1", "--no-live"], netns=error_ns)
    assert_one_error_line(run, 7, port, "refused", phrase)


# ---------------------------------------------------------------- the C wrappers

RAW_FD = r'''
import errno as E
unreg = ffi.gc(lib.nmb_port_new(), lib.nmb_port_free)
assert lib.nmb_kport_open(unreg, engine.ports.NETMAP_DEVICE.encode()) == 0
base = ffi.new("void **")
p = select.poll()
p.register(unreg.fd, select.POLLIN)
out = {
    "NIOCTXSYNC_on_unregistered_fd": lib.nmb_kport_txsync(unreg),
    "NIOCRXSYNC_on_unregistered_fd": lib.nmb_kport_rxsync(unreg),
    "poll_on_unregistered_fd": p.poll(0),
    "mmap_on_unregistered_fd": lib.nmb_mmap_region(unreg.fd, 4096, base),
}
port, = open_ports("netmap:fk0")
hdr = ffi.new("struct nmreq_header *")
reg = ffi.new("struct nmreq_register *")
hdr.nr_version = lib.NETMAP_API
hdr.nr_reqtype = lib.NETMAP_REQ_REGISTER
hdr.nr_name = b"fk0"
hdr.nr_body = int(ffi.cast("uintptr_t", reg))
reg.nr_mode = lib.NR_REG_SW
out["second_register_same_fd"] = lib.nmb_kport_register(port.c, hdr)
out = {k: (E.errorcode[-v] if isinstance(v, int) and v < 0 else v) for k, v in out.items()}
result(out=out)
engine.close_ports([port])
'''


def test_the_c_wrappers_report_each_refusal_as_recorded(fake: FakeKernel) -> None:
    """kport.c returns -errno for every refusal the real module was seen to make."""
    out = fake.run_py(RAW_FD).result["out"]
    rec = golden("open_reregister_unregistered_fd.json")
    for key in ("NIOCTXSYNC_on_unregistered_fd", "NIOCRXSYNC_on_unregistered_fd",
                "second_register_same_fd"):
        assert out[key] == rec[key]["result"], key
    assert out["mmap_on_unregistered_fd"] == rec["mmap_on_unregistered_fd"]
    (_fd, revents), = out["poll_on_unregistered_fd"]
    assert revents == int(rec["poll_on_unregistered_fd"]["revents"], 16)

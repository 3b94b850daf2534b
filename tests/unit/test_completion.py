"""Shell completion (click's, nmbridge/completion.py for the candidates).

In-process through click's completion classes, with /sys/class/net and the
stats directory replaced by directories made here; then the installed
command as a shell calls it (_NMBRIDGE_COMPLETE=..._complete), and bash
itself sourcing the script and completing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.shell_completion import BashComplete, FishComplete, ZshComplete

from nmbridge import completion
from nmbridge.cli import cli

NMBRIDGE = str(Path(sys.executable).with_name("nmbridge"))
IFACES = ["eth0", "eth1", "veth-a", "lo"]


@pytest.fixture
def sys_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    net = tmp_path / "sys-class-net"
    for name in IFACES:
        (net / name).mkdir(parents=True)
    monkeypatch.setattr(completion, "_SYS_NET", str(net))
    return net


@pytest.fixture
def stats_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "stats"
    d.mkdir()
    for name in ("eth0.stats", "packet:veth0--tap:nmb0.stats", ".eth9.stats.tmp",
                 ".hidden.stats", "notes.txt"):
        (d / name).write_bytes(b"")
    monkeypatch.setenv("NMBRIDGE_STATS_DIR", str(d))
    return d


def complete(line: str) -> list[str]:
    """What bash would be offered for the command line (its last word is being typed)."""
    words = line.split(" ")
    comp = BashComplete(cli, {}, "nmbridge", "_NMBRIDGE_COMPLETE")
    return [item.value for item in comp.get_completions(words[1:-1], words[-1])]


def test_dash_i_completes_port_names_of_the_interfaces(sys_net: Path) -> None:
    ports = complete("nmbridge -i ")
    assert ports == [f"{p}{i}" for p in ("netmap:", "packet:", "tap:") for i in sorted(IFACES)] + [
        "vale0:"]
    assert complete("nmbridge bridge --port packet:e") == ["packet:eth0", "packet:eth1"]
    assert complete("nmbridge -i netmap:eth0 -i tap:v") == ["tap:veth-a"]


def test_iface_arguments_complete_interface_names(sys_net: Path) -> None:
    assert complete("nmbridge bridge e") == ["eth0", "eth1"]
    assert complete("nmbridge check v") == ["veth-a"]
    # `nmbridge eth0` is `nmbridge bridge eth0`: the first word is a command or an interface
    assert complete("nmbridge e") == ["explain", "eth0", "eth1"]
    assert set(complete("nmbridge ")) == {*cli.commands, *IFACES}
    assert complete("nmbridge --v") == ["--version"]


def test_stats_completes_the_instance_names(sys_net: Path, stats_dir: Path,
                                           tmp_path: Path) -> None:
    assert complete("nmbridge stats ") == ["eth0", "packet:veth0--tap:nmb0"]
    assert complete("nmbridge stats --json p") == ["packet:veth0--tap:nmb0"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "wan0.stats").write_bytes(b"")
    # --stats-dir on the command line wins over the environment
    assert complete(f"nmbridge stats --stats-dir {other} ") == ["wan0"]
    assert complete(f"nmbridge stats --stats-dir {tmp_path / 'none'} ") == []


def test_options_complete(sys_net: Path) -> None:
    assert complete("nmbridge bridge --no") == ["--no-zero-copy", "--no-live", "--no-promisc"]
    assert "--prometheus" in complete("nmbridge stats --")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F _nmbridge_completion nmbridge"),
     ("zsh", "#compdef nmbridge"),
     ("fish", "complete --no-files --command nmbridge")],
)
def test_the_installed_command_prints_each_shells_script(shell: str, marker: str) -> None:
    res = subprocess.run([NMBRIDGE], env=_env(_NMBRIDGE_COMPLETE=f"{shell}_source"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert marker in res.stdout
    assert f"_NMBRIDGE_COMPLETE={shell}_complete" in res.stdout


def _real_interfaces() -> list[str]:
    return sorted(os.listdir("/sys/class/net"))


@pytest.mark.parametrize(
    ("shell", "extra", "parse"),
    [
        ("bash", {"COMP_WORDS": "nmbridge -i packet:", "COMP_CWORD": "2"},
         lambda out: [line.split(",", 1)[1] for line in out.splitlines()]),
        ("zsh", {"COMP_WORDS": "nmbridge -i packet:", "COMP_CWORD": "2"},
         lambda out: out.splitlines()[1::3]),
        ("fish", {"COMP_WORDS": "nmbridge -i packet:", "COMP_CWORD": "packet:"},
         lambda out: [line.split(",", 1)[1] for line in out.splitlines()]),
    ],
)
def test_the_installed_command_answers_each_shell(shell: str, extra: dict[str, str],
                                                  parse: Callable[[str], list[str]]) -> None:
    res = subprocess.run([NMBRIDGE], env=_env(_NMBRIDGE_COMPLETE=f"{shell}_complete", **extra),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert parse(res.stdout) == [f"packet:{i}" for i in _real_interfaces()]


def test_bash_sources_the_script_and_completes(stats_dir: Path) -> None:
    # as bash calls a completion function: COMP_WORDS, COMP_CWORD, the command as $1
    script = (
        'eval "$(_NMBRIDGE_COMPLETE=bash_source "$1")"\n'
        'complete -p nmbridge\n'
        'COMP_WORDS=(nmbridge stats ""); COMP_CWORD=2; COMPREPLY=()\n'
        '_nmbridge_completion nmbridge stats ""; printf "%s\\n" "${COMPREPLY[@]}"\n'
        'COMP_WORDS=(nmbridge -i ta); COMP_CWORD=2; COMPREPLY=()\n'
        '_nmbridge_completion nmbridge ta -i; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    # the script calls `nmbridge` by the name it was given: the directory goes on PATH
    env = _env(PATH=f"{Path(NMBRIDGE).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    res = subprocess.run(["bash", "-c", script, "bash", "nmbridge"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "complete -o nosort -F _nmbridge_completion nmbridge",
        "eth0", "packet:veth0--tap:nmb0", *[f"tap:{i}" for i in _real_interfaces()]]


def test_zsh_and_fish_classes_are_clicks() -> None:
    """The shells nmbridge documents are the ones click completes."""
    from click.shell_completion import _available_shells

    assert {"bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}.items() <= (
        _available_shells.items())


def test_the_readme_gives_each_shells_line() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for shell in ("bash", "zsh", "fish"):
        assert f"_NMBRIDGE_COMPLETE={shell}_source nmbridge" in readme

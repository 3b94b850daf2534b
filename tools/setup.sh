#!/usr/bin/env bash
# Set up a development environment from a fresh clone: the Debian packages the
# tests use, a virtualenv in .venv, and nmbridge installed in it (its C core
# compiled) with the test extras. Safe to run again. Needs Python 3.9+, gcc, git.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: ip (iproute2) for namespaces, ping for the traffic tests,
# mandoc and groff to lint the man page, man to find the installed page,
# systemd-analyze to verify the unit, ethtool to turn a veth's offloads on and
# off (the offload tests, the kernel's own segmentation in
# tests/integration/test_gso_reference.py, benchmarks/tcp.py), iperf3 for
# benchmarks/tcp.py; libpcap (libpcap0.8, the library alone: nmbridge loads it at
# run time for --filter) and tcpdump, the reference the filter tests compare with;
# tcpdump and tshark read back what --pcap wrote (tests/integration/test_pcap.py;
# tshark's wireshark-common asks whether non-root users may capture: the
# non-interactive install answers no).
need_pkgs=()
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
command -v mandoc >/dev/null || need_pkgs+=(mandoc)
command -v man >/dev/null || need_pkgs+=(man-db)
command -v groff >/dev/null || need_pkgs+=(groff-base)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v ethtool >/dev/null || need_pkgs+=(ethtool)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
command -v tshark >/dev/null || need_pkgs+=(tshark)
ldconfig -p 2>/dev/null | grep -q 'libpcap\.so\.0\.8' || need_pkgs+=(libpcap0.8)
if ((${#need_pkgs[@]})); then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages: ${need_pkgs[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    else
        echo "setup: missing commands; install these packages: ${need_pkgs[*]}" >&2
        exit 1
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# an editable install leaves out the data files: link the man page where man-db looks
# beside .venv/bin (.venv/share/man), so that `man nmbridge` finds it with the venv
# activated (or `man -M .venv/share/man nmbridge` without); a link, so it follows the tree
mkdir -p .venv/share/man/man8
ln -sfn "$PWD/man/nmbridge.8" .venv/share/man/man8/nmbridge.8
echo "setup: done; the command is .venv/bin/nmbridge (or '. .venv/bin/activate', then" \
     "'nmbridge' and 'man nmbridge')"

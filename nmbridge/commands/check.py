"""`nmbridge check IFACE`: is this interface ready for netmap, and what to change."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from nmbridge import nic, sysfs
from nmbridge.errors import NmbridgeError, NoSuchPort, NotReady
from nmbridge.portspec import parse_port


@dataclass
class Finding:
    item: str
    value: str
    ok: bool
    advice: str = ""


@dataclass
class CheckReport:
    interface: str
    findings: list[Finding] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, item: str, value: str, ok: bool, advice: str = "") -> None:
        self.findings.append(Finding(item, value, ok, advice))

    def as_dict(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "ready": self.ready,
            "fixed": self.fixed,
            "findings": [asdict(f) for f in self.findings],
        }

    def lines(self) -> list[str]:
        """The findings, a line each; a ready interface ends with the verdict. A not ready
        one does not: its verdict is the error line on stderr (raise_unless_ready), said
        once."""
        out = []
        for f in self.findings:
            mark = "ok " if f.ok else "NO "
            out.append(f"{mark} {f.item}: {f.value}" + (f"  ({f.advice})" if f.advice else ""))
        for name in self.fixed:
            out.append(f"fixed: {name} turned off")
        if self.ready:
            out.append(f"{self.interface}: ready for netmap")
        return out


def _netmap(report: CheckReport, ifname: str) -> None:
    from nmbridge import engine

    device = engine.ports.NETMAP_DEVICE
    if not os.path.exists(device):
        report.add(
            "netmap",
            f"{device} missing",
            False,
            "load the module: 'modprobe netmap' (Linux) or 'kldload netmap' (FreeBSD); "
            "without it, bridge emulated ports: -i packet:IFACE -i tap:NAME",
        )
        return
    try:
        info = engine.port_info(parse_port(f"netmap:{ifname}"))
    except NmbridgeError as exc:
        report.add("netmap", f"{device} present, the port cannot be used", False, exc.message)
        return
    report.add("netmap", f"{device} present, API {engine.ports.NETMAP_API} accepted", True)
    report.add(
        "rings",
        f"{info.nr_tx_rings} TX / {info.nr_rx_rings} RX NIC rings of "
        f"{info.nr_tx_slots}/{info.nr_rx_slots} slots, {info.nr_host_tx_rings} TX / "
        f"{info.nr_host_rx_rings} RX host rings, memory region {info.nr_mem_id}",
        True,
    )


def check_interface(ifname: str, fix: bool = False) -> CheckReport:
    """Look at the interface (and turn its offloads off with fix); never raises for
    a finding, only for an interface that does not exist."""
    if not sysfs.exists(ifname):
        raise NoSuchPort(f"no interface named '{ifname}'")
    report = CheckReport(ifname)
    _netmap(report, ifname)
    up = nic.link_up(ifname)
    report.add("link", "up" if up else "down", up, "" if up else f"ip link set {ifname} up")
    mtu = sysfs.read_int(ifname, "mtu")
    buf = nic.netmap_buf_size()
    if mtu is not None:
        fits = mtu + 14 <= buf
        report.add(
            "mtu",
            f"{mtu} (netmap buffers of {buf} bytes)",
            fits,
            "" if fits else "frames larger than one buffer become multi-slot chains: lower the "
            "MTU or raise the netmap module's buf_size",
        )
    if fix:
        from nmbridge import engine

        for name in nic.offloads_on(ifname):
            engine.ethtool.set_offload(ifname, name, False)
            report.fixed.append(name)
    on = nic.offloads_on(ifname)
    report.add(
        "offloads",
        ", ".join(on) + " on" if on else "all off",
        not on,
        "" if not on else f"nmbridge check --fix {ifname}",
    )
    return report


def raise_unless_ready(report: CheckReport) -> None:
    if not report.ready:
        raise NotReady(f"{report.interface} is not ready for netmap")

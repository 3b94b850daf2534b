"""nmb_gso_segment against the kernel's own software GSO (root).

Super-frames are caught as the kernel makes them: a sender (TCP over IPv4 and IPv6,
with and without a VLAN sub-interface; UDP with UDP_SEGMENT) in one namespace, its
veth with TSO/GSO on; a PACKET_VNET_HDR socket on the peer in the other reads each
super-frame with its virtio-net header. Each is then handed back to the kernel with
its header through a PACKET_VNET_HDR socket on a second veth whose TSO, GSO and TX
checksum offload are off, so the kernel segments it in software; the segments come
out on that veth's peer. nmb_vnet_check must pass every super-frame and
nmb_gso_segment must write the same frames, byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from gso_model import EXT_HOP, VnetHdr, segment, super_frame
from namespaces import ip
from nmbridge._ffi._core import ffi, lib

from nmbridge.lab import sandbox

pytestmark = pytest.mark.root

LAB = str(Path(__file__).with_name("gso_lab.py"))
TIMEOUT = 30.0
PORT = 5201
#: super-frames taken from each sender
FRAMES = 6

#: case: (sender, IP version, tags: 0, 1 (a VLAN sub-interface where the kernel has
#: 802.1Q, else put in by the test) or 2 (802.1ad + 802.1Q, put in by the test))
CASES = {
    "tcp4": ("tcp", 4, 0),
    "tcp6": ("tcp", 6, 0),
    "tcp4-vlan": ("tcp", 4, 1),
    "tcp6-vlan": ("tcp", 6, 1),
    "tcp4-qinq": ("tcp", 4, 2),
    "udp4": ("udp", 4, 0),
    "udp6": ("udp", 6, 0),
    "udp6-vlan": ("udp", 6, 1),
}
TAGS = (b"\x88\xa8\x00\x07", b"\x81\x00\x00\x2a")


def in_ns(ns: str, *args: str) -> list[str]:
    return [sandbox.ip_command(), "netns", "exec", ns, sys.executable, LAB, *args]


def ethtool(ns: str, ifname: str, *features: str) -> None:
    res = subprocess.run([sandbox.ip_command(), "netns", "exec", ns, "ethtool", "-K", ifname,
                          *features], capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, f"ethtool -K {ifname} {features}: {res.stderr}"


@contextlib.contextmanager
def started(argv: list[str], ready: bool = True) -> Iterator[subprocess.Popen[str]]:
    """A program in a namespace, stopped on the way out whatever happened."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if ready:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", f"{argv}: {line!r} {proc.stderr.read()}"  # type: ignore[union-attr]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)


def addresses(version: int, vlan: bool) -> tuple[str, str, int]:
    """(sender, receiver, prefix length) inside 198.18.0.0/15 or 2001:db8::/32."""
    net = 1 if vlan else 0
    if version == 4:
        return f"198.18.{net}.1", f"198.18.{net}.2", 24
    return f"2001:db8:{net}::1", f"2001:db8:{net}::2", 64


def wire(make_netns: Callable[[str], str], version: int,
         vlan: bool) -> tuple[str, str, str, bool]:
    """Namespaces a (sender) and b (receiver, and the inj/cap veth for the reference);
    returns (a, b, the receiver's address, whether the sender is on a VLAN device)."""
    a, b = make_netns("gso-a"), make_netns("gso-b")
    ip("-n", a, "link", "add", "snd", "type", "veth", "peer", "name", "rcv", "netns", b)
    ip("-n", b, "link", "add", "inj", "type", "veth", "peer", "name", "cap")
    for ns, ifs in ((a, ("snd",)), (b, ("rcv", "inj", "cap"))):
        for ifname in ifs:
            ip("-n", ns, "link", "set", ifname, "addrgenmode", "none")
            ip("-n", ns, "link", "set", ifname, "up")
    # segments of frames tagged by the test are over 1500 + one tag
    for ifname in ("inj", "cap"):
        ip("-n", b, "link", "set", ifname, "mtu", "9000")
    ethtool(a, "snd", "tso", "on", "gso", "on", "tx", "on")
    ethtool(b, "rcv", "gro", "off")
    # the kernel's software GSO, checksums included, on the way from inj to cap
    ethtool(b, "inj", "tso", "off", "gso", "off", "tx", "off")
    ethtool(b, "cap", "gro", "off")
    if vlan:
        made = ip("-n", a, "link", "add", "link", "snd", "name", "snd.42", "type", "vlan",
                  "id", "42", check=False)
        if "Unknown device type" in made.stderr:
            vlan = False  # a kernel without 802.1Q: the test tags the frames itself
        else:
            assert made.returncode == 0, made.stderr
            ip("-n", b, "link", "add", "link", "rcv", "name", "rcv.42", "type", "vlan",
               "id", "42")
    src, dst, plen = addresses(version, vlan)
    for ns, ifname, addr in ((a, "snd", src), (b, "rcv", dst)):
        dev = f"{ifname}.42" if vlan else ifname
        ip("-n", ns, "link", "set", dev, "up")
        extra = ["nodad"] if version == 6 else []
        ip("-n", ns, "addr", "add", f"{addr}/{plen}", "dev", dev, *extra)
    return a, b, dst, vlan


def tagged(hdr: bytes, frame: bytes, tags: tuple[bytes, ...]) -> tuple[bytes, bytes]:
    """A super-frame with tags put in after the MAC addresses, its header moved along."""
    vh = VnetHdr.unpack(hdr)
    n = 4 * len(tags)
    vh.hdr_len += n
    vh.csum_start += n
    return vh.pack(), frame[:12] + b"".join(tags) + frame[12:]


def catch_super_frames(a: str, b: str, dst: str, sender: str) -> list[tuple[bytes, bytes]]:
    with started(in_ns(b, "capture", "rcv", str(FRAMES), "10")) as cap:
        if sender == "tcp":
            with started(in_ns(b, "sink-tcp", dst, str(PORT))):
                res = subprocess.run(in_ns(a, "send-tcp", dst, str(PORT), str(400_000)),
                                     capture_output=True, text=True, timeout=TIMEOUT)
                out, err = cap.communicate(timeout=TIMEOUT)
        else:
            # segment size:bytes; a short last segment, full ones only, 2 segments of
            # which one of 1 byte, and the kernel's most (127 of 500 bytes; 128 would
            # take a datagram over 65507 bytes)
            res = subprocess.run(in_ns(a, "send-udp", dst, str(PORT),
                                       "1200:10000,1200:3600,1200:1201,500:63500,1400:60001,"
                                       "1000:64000"),
                                 capture_output=True, text=True, timeout=TIMEOUT)
            out, err = cap.communicate(timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert cap.returncode == 0, err
    got = [(bytes.fromhex(h), bytes.fromhex(f)) for h, f in json.loads(out)]
    assert got, "no super-frame was caught: is TSO/USO on on the sender's veth?"
    return got


def kernel_segments(b: str, frames: list[tuple[bytes, bytes]]) -> list[list[bytes]]:
    res = subprocess.run(in_ns(b, "reference", "inj", "cap"),
                         input=json.dumps([[h.hex(), f.hex()] for h, f in frames]),
                         capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert res.returncode == 0, res.stderr
    return [[bytes.fromhex(s) for s in segs] for segs in json.loads(res.stdout)]


def ours(hdr: bytes, frame: bytes) -> tuple[int, int, list[bytes]]:
    """(nmb_vnet_check, nmb_gso_segment's return, the frames it wrote to a TX ring of
    1024 slots of 2048 bytes)."""
    vh = ffi.new("struct nmb_vnet_hdr *")
    ffi.memmove(vh, hdr, 10)
    buf = ffi.new("uint8_t[]", frame)
    iov = ffi.new("struct iovec *")
    iov.iov_base, iov.iov_len = buf, len(frame)
    f = ffi.new("struct nmb_frame_in *")
    f.iov, f.niov, f.len = iov, 1, len(frame)
    rc_check = lib.nmb_vnet_check(vh, f)
    region = ffi.new("struct nmb_region **")
    assert lib.nmb_region_new(1, ffi.new("uint32_t[]", [1, 0, 0, 0]), 1024, 2048, region) == 0
    try:
        nifp = lib.nmb_region_if(region[0], 0)
        ring = ffi.cast("struct netmap_ring *", ffi.cast("char *", nifp) + nifp.ring_ofs[0])
        slots = lib.nmb_ring_slots(ring)
        out = ffi.new("struct nmb_tx_out *")
        out.ring, out.head, out.room, out.hdr_len = ring, 0, ring.num_slots - 1, 0
        need = ffi.new("uint32_t *")
        rc = lib.nmb_gso_segment(vh, f, out, need)
        frames, cur = [], b""
        for i in range(int(out.head)):
            buf = lib.nmb_region_buf(region[0], slots[i].buf_idx)
            cur += ffi.buffer(buf, slots[i].len)[:]
            if not slots[i].flags & lib.NS_MOREFRAG:
                frames.append(cur)
                cur = b""
    finally:
        lib.nmb_region_free(region[0])
    return int(rc_check), int(rc), frames


@pytest.fixture
def tools(unavailable: Callable[[str], NoReturn]) -> None:
    if shutil.which("ethtool") is None:
        unavailable("needs ethtool (Debian package ethtool; tools/setup.sh installs it)")


@pytest.mark.parametrize("case", list(CASES))
def test_segments_are_the_kernels_byte_for_byte(
        tools: None, make_netns: Callable[[str], str], case: str) -> None:
    sender, version, tags = CASES[case]
    a, b, dst, vlan_dev = wire(make_netns, version, tags == 1)
    frames = catch_super_frames(a, b, dst, sender)
    if vlan_dev:
        assert all(f[12:16] == TAGS[1] for _, f in frames)
    elif tags:
        frames = [tagged(h, f, TAGS[-tags:]) for h, f in frames]
    kernel = kernel_segments(b, frames)
    segmented = 0
    for (hdr, frame), want in zip(frames, kernel):
        vh = VnetHdr.unpack(hdr)
        rc_check, rc, got = ours(hdr, frame)
        label = f"{case}: {vh}, {len(frame)} bytes"
        assert rc_check == 0, label
        assert want, f"{label}: the kernel sent nothing for it"
        assert rc == len(want), label
        for k, (g, w) in enumerate(zip(got, want)):
            assert g == w, f"{label}: segment {k} differs at byte " + str(
                next(i for i in range(min(len(g), len(w)) + 1) if g[i:i + 1] != w[i:i + 1]))
        assert segment(vh, frame) == want, f"{label}: the Python model disagrees"
        segmented += len(want) > 1
    assert segmented, f"{case}: no super-frame of more than one segment was caught"
    print(f"\n{case}: {len(frames)} super-frames, {sum(map(len, kernel))} segments, "
          f"VLAN {'device' if vlan_dev else 'tags put in by the test' if tags else 'none'}")


def hostile_super_frames(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Built super-frames with a field or a byte of their headers changed at random (a
    fixed seed: the same frames each run), kept where nmb_vnet_check passes them."""
    rnd = random.Random(seed)
    kept: list[tuple[bytes, bytes]] = []
    while len(kept) < count:
        kind = rnd.choice(["tcp4", "tcp6", "udp4", "udp6"])
        exts = ((EXT_HOP, b"\x01\x04\0\0\0\0"),) if kind == "tcp6" and rnd.random() < .3 else ()
        vlans = rnd.choice([(), ((0x8100, 5),), ((0x88A8, 6), (0x8100, 7))])
        b = super_frame(kind, bytes(rnd.randrange(256) for _ in range(rnd.randrange(20000))),
                        rnd.choice([536, 1000, 1448, 4000]), vlans=vlans, exts=exts,
                        tcp_options=rnd.choice([b"", b"\x01" * 12]),
                        flags=rnd.randrange(256) if kind.startswith("tcp") else 0,
                        seq=rnd.randrange(2**32), ident=rnd.randrange(2**16))
        vh, frame = b.vh, bytearray(b.frame)
        for _ in range(rnd.randrange(1, 3)):
            what = rnd.randrange(6)
            if what == 0:
                frame[rnd.randrange(b.hdrs)] = rnd.randrange(256)
            elif what == 1:
                vh.hdr_len = rnd.randrange(len(frame) + 2)
            elif what == 2:
                vh.flags |= rnd.choice([2, 4])
            elif what == 3:
                vh.gso_type |= rnd.choice([0x80, 0x40])
            elif what == 4:
                vh.gso_size = rnd.randrange(100, 8800)
            else:  # the pseudo-header sum the sender left
                frame[b.l4 + (16 if b.tcp else 6)] = rnd.randrange(256)
        s = bytes(frame)
        rc_check, _, _ = ours(vh.pack(), s)
        if rc_check == 0:
            kept.append((vh.pack(), s))
    return kept


def test_what_the_check_passes_the_kernel_takes_and_segments_alike(
        tools: None, make_netns: Callable[[str], str]) -> None:
    """Headers and frames changed at random: what nmb_vnet_check lets through, the kernel
    neither refuses nor drops (it sends at least a segment of each), and cuts as
    nmb_gso_segment does, even where the sender's pseudo-header sum is wrong."""
    _, b, _, _ = wire(make_netns, 4, False)
    frames = hostile_super_frames(60, seed=1)
    kernel = kernel_segments(b, frames)
    for (hdr, frame), want in zip(frames, kernel):
        _, rc, got = ours(hdr, frame)
        label = f"{VnetHdr.unpack(hdr)}, {frame[:80].hex()}"
        assert want, f"the kernel sent nothing for {label}"
        assert rc == len(want) and got == want, label

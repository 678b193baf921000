"""Multicast on pynet's overlay across hosts (issue 21 item 4), on the three-host bed: real
dockerd, real Consul cluster, real kernel on every simulated host.

Docker's own overlay has no multicast across hosts (moby/libnetwork#552). pynet's VXLAN
device has no underlay group; it has one all-zeros FDB entry per other host of the overlay
(head-end replication), so a multicast frame, like a broadcast, is sent as one unicast VXLAN
copy to each of those hosts, whose bridge floods it to its containers. These tests prove:
* a group joined by containers on two hosts gets every datagram a third host's container
  sends (sequence numbers, TTL 1: bridged, never routed; on the overlay interface);
* nothing reaches a receiver of the same group and port on a second overlay on the same three
  hosts, nor on a pynet bridge network on the sending host, nor the sender itself
  (IP_MULTICAST_LOOP off);
* no IGMP is needed: a receiver whose IGMP reports are dropped, joining after the sender
  started, gets everything sent after it joined;
* the cost: per datagram, one VXLAN copy on the sender host's underlay per *other host that
  has the overlay*, whether or not anyone there joined the group (counted with an AF_PACKET
  socket on the underlay link, not timed).

Sockets are made by the test process itself in each container's network namespace (a thread
enters it with setns(2); a socket stays in the namespace it was made in), so the busybox
image needs no multicast tool. Every network is `--internal`: the containers have no route
out (and no docker_gwbridge leg), so the sender names its interface (IP_MULTICAST_IF), as it
must on any overlay container whose default route is elsewhere.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from driver import naming
from tests.harness.multihost import Host, MultiHost
from tests.harness.wait import wait_until
from tests.multihost.support import (
    Ctr,
    brought_up,
    clear_overlay_bed,
    fdb,
    in_netns_of,
    network_create,
    network_id,
    overlay_create,
    run_on,
    vxlan_vni,
)

T = TypeVar("T")

GROUP = "239.7.7.7"
GROUP_MAC = "01:00:5e:07:07:07"
FLOOD = "00:00:00:00:00:00"
VXLAN_PORT = 4789
CONVERGE = 10.0
SETTLE = 1.0  # seconds after the last datagram before the sockets are read (they keep it all)

# Linux socket option numbers (not all are named by Python 3.11's socket module).
IP_TTL = 2
IP_PKTINFO = 8
IP_RECVTTL = 12
IP_MULTICAST_IF = 32
IP_MULTICAST_TTL = 33
IP_MULTICAST_LOOP = 34
IP_ADD_MEMBERSHIP = 35
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


# --- sockets in other network namespaces ---------------------------------------------------
def in_netns(path: str, make: Callable[[], T]) -> T:
    """make() run by a thread of its own that entered the network namespace at `path` (a
    socket made there stays in that namespace after the thread ends)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = make()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=work, name=f"in {path}", daemon=True)
    t.start()
    t.join(30)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    if "value" not in box:
        raise AssertionError(f"making a socket in {path} did not finish in 30s")
    return box["value"]  # type: ignore[return-value]


def ctr_ns(c: Ctr) -> str:
    return f"/proc/{c.pid}/ns/net"


@dataclass(frozen=True)
class Datagram:
    seq: int
    source: str
    dest: str  # the IP header's destination
    ttl: int
    ifindex: int  # the interface it arrived on


@dataclass
class Receiver:
    """A UDP socket in a container's namespace, bound to the port on every address (whatever
    reaches the port counts), member of GROUP on the container's address `on`."""
    where: str
    sock: socket.socket
    ifindex: int  # of the interface holding `on` (the container's eth0)
    got: list[Datagram] = field(default_factory=list)

    @classmethod
    def join(cls, c: Ctr, port: int, on: str | None = None) -> Receiver:
        def make() -> tuple[socket.socket, int]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 20)
                s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
                s.bind(("", port))
                s.setsockopt(socket.IPPROTO_IP, IP_ADD_MEMBERSHIP,
                             socket.inet_aton(GROUP) + socket.inet_aton(on or c.ip))
                s.setblocking(False)
                return s, socket.if_nametoindex("eth0")
            except BaseException:
                s.close()
                raise
        sock, ifindex = in_netns(ctr_ns(c), make)
        return cls(f"{c.name} on {c.host}", sock, ifindex)

    def read(self) -> list[Datagram]:
        """Everything queued so far (added to .got)."""
        while select.select([self.sock], [], [], 0)[0]:
            try:
                data, anc, _flags, (source, _port) = self.sock.recvmsg(2048, 256)
            except BlockingIOError:
                break
            ttl, ifindex, dest = -1, -1, ""
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_TTL:
                    ttl = struct.unpack("i", value[:4])[0]
                elif level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    ifindex, _spec, addr = struct.unpack("i4s4s", value[:12])
                    dest = socket.inet_ntoa(addr)
            self.got.append(Datagram(int(data.split()[1]), source, dest, ttl, ifindex))
        return self.got

    def seqs(self) -> list[int]:
        return sorted(d.seq for d in self.read())

    def close(self) -> None:
        self.sock.close()


class Sender:
    """A UDP socket in a container's namespace sending to GROUP out of the container's overlay
    address (IP_MULTICAST_IF), TTL 1 (the overlay is one L2 segment: no router to cross) and
    IP_MULTICAST_LOOP off (the sender's own namespace does not get its datagrams back)."""

    def __init__(self, c: Ctr, port: int, tag: str) -> None:
        self.ctr, self.port, self.tag = c, port, tag

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_IF, socket.inet_aton(c.ip))
                s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_TTL, 1)
                s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_LOOP, 0)
                s.bind((c.ip, 0))
                return s
            except BaseException:
                s.close()
                raise
        self.sock = in_netns(ctr_ns(c), make)

    def send(self, seqs: range, gap: float = 0.005) -> None:
        for n in seqs:
            self.sock.sendto(f"{self.tag} {n}".encode(), (GROUP, self.port))
            time.sleep(gap)

    def close(self) -> None:
        self.sock.close()


class UnderlayCapture:
    """An AF_PACKET socket on a host's underlay link (eth0 in its namespace): the VXLAN
    copies that host sends."""

    def __init__(self, host: Host) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            s.bind(("eth0", 0))
            s.setblocking(False)
            return s
        self.sock = in_netns(f"/run/netns/{host.netns}", make)

    def copies(self, port: int) -> list[tuple[str, int, str, str]]:
        """(outer destination, VNI, inner destination MAC, payload) of every outgoing VXLAN
        frame carrying a UDP datagram to GROUP:port."""
        out = []
        while select.select([self.sock], [], [], 0)[0]:
            try:
                frame, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                break
            if addr[2] != PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            ihl = (ip[0] & 15) * 4
            if ip[9] != 17 or struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] != VXLAN_PORT:
                continue
            vni = int.from_bytes(ip[ihl + 12:ihl + 15], "big")
            inner = ip[ihl + 16:]
            if inner[12:14] != b"\x08\x00":
                continue
            iip = inner[14:]
            iihl = (iip[0] & 15) * 4
            if iip[9] != 17 or socket.inet_ntoa(iip[16:20]) != GROUP:
                continue
            if struct.unpack("!H", iip[iihl + 2:iihl + 4])[0] != port:
                continue
            mac = ":".join(f"{b:02x}" for b in inner[0:6])
            out.append((socket.inet_ntoa(ip[16:20]), vni, mac, iip[iihl + 8:].decode()))
        return out

    def close(self) -> None:
        self.sock.close()


def closing(*things: Receiver | Sender | UnderlayCapture) -> None:
    for t in things:
        t.close()


# --- the bed and the scene (one for the module) -------------------------------------------
@dataclass
class Scene:
    bed: MultiHost
    nets: dict[str, dict[Host, str]]  # network name -> host -> NetworkID
    s1: Ctr  # the sender, on ova on h1
    r1: Ctr  # ova, on h1 (the sender's host)
    r2: Ctr  # ova, h2
    r3: Ctr  # ova, h3
    b1: Ctr  # ovb (a second overlay on the same three hosts), h1
    b2: Ctr
    b3: Ctr
    l1: Ctr  # lan (a pynet bridge network), h1


@pytest.fixture(scope="module")
def mbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    with brought_up("multicast", MultiHost(tmp_path_factory.mktemp("multicast"), name="pnmc",
                                           underlay="198.18.27.0/24")) as bed:
        yield bed


def _flooding_to_the_others(bed: MultiHost, nets: dict[Host, str]) -> bool:
    return all({(FLOOD, o.address) for o in nets if o is not h} <= fdb(h, nid) for h, nid in nets.items())


@pytest.fixture(scope="module")
def scene(mbed: MultiHost) -> Iterator[Scene]:
    h1, h2, h3 = mbed.hosts
    try:
        nets: dict[str, dict[Host, str]] = {}
        for name, subnet in (("ova", "10.61.1.0/24"), ("ovb", "10.61.2.0/24")):
            for h in mbed.hosts:
                overlay_create(h, name, subnet, "--internal")
            nets[name] = {h: network_id(h, name) for h in mbed.hosts}
        network_create(h1, "lan", "10.61.3.0/24", "--internal")  # pynet's bridge kind
        ctrs = dict(s1=run_on(h1, "s1", "ova"), r1=run_on(h1, "r1", "ova"), r2=run_on(h2, "r2", "ova"),
                    r3=run_on(h3, "r3", "ova"), b1=run_on(h1, "b1", "ovb"), b2=run_on(h2, "b2", "ovb"),
                    b3=run_on(h3, "b3", "ovb"), l1=run_on(h1, "l1", "lan"))
        for name in ("ova", "ovb"):
            wait_until(lambda: _flooding_to_the_others(mbed, nets[name]), CONVERGE,
                       f"{name}: every host replicating to the other two")
        # Nobody queries IGMP on the overlay: each host's bridge snoops (the kernel's default)
        # but, with no querier, floods multicast to all its ports, the VXLAN port included.
        for h, nid in nets["ova"].items():
            info = json.loads(h.run("ip", "-n", naming.overlay_netns(nid), "-d", "-j", "link", "show",
                                    naming.OVERLAY_BRIDGE).stdout)[0]["linkinfo"]["info_data"]
            assert info["mcast_querier"] == 0, (h.name, info)
        # No way out: eth0 only, no default route.
        for c in ctrs.values():
            routes = in_netns_of(c.pid, "ip", "route").stdout
            assert "default" not in routes, (c.name, routes)
        yield Scene(mbed, nets, **ctrs)
    finally:
        clear_overlay_bed(mbed)


# --- the tests --------------------------------------------------------------------------------
N = 50


def test_a_group_on_two_hosts_gets_every_datagram_from_a_third_and_nothing_leaks(scene: Scene) -> None:
    port = 5001
    members = [Receiver.join(c, port) for c in (scene.r2, scene.r3, scene.r1)]
    outsiders = [Receiver.join(c, port) for c in (scene.b1, scene.b2, scene.b3, scene.l1)]
    own = Receiver.join(scene.s1, port)  # the sender's namespace: loopback is off
    sender = Sender(scene.s1, port, "a")
    try:
        sender.send(range(N))
        time.sleep(SETTLE)
        print("\n" + ", ".join(f"{r.where}: {len(r.read())}/{N}" for r in (*members, *outsiders, own)))
        for r in members:
            assert r.seqs() == list(range(N)), f"{r.where} got {len(r.got)} of {N}"
            # From the sender, to the group, on the overlay interface, TTL 1 as sent:
            # bridged across the hosts, never routed.
            assert {(d.source, d.dest, d.ttl, d.ifindex) for d in r.got} == {
                (scene.s1.ip, GROUP, 1, r.ifindex)}, r.where
        for r in (*outsiders, own):
            assert r.read() == [], f"{r.where} got {len(r.got)} datagrams of ova's group"
    finally:
        closing(*members, *outsiders, own, sender)


def test_a_receiver_joining_late_and_sending_no_igmp_gets_what_follows(scene: Scene) -> None:
    """Nothing on the overlay snoops IGMP and nothing needs to: the group's frames reach every
    host of the overlay, whose bridge floods them (no querier, so no snooping state). A
    receiver on h3 whose IGMP reports are dropped in its own namespace, joining while the
    sender on h1 is sending, gets every datagram sent after its join."""
    port = 5002
    table = ("table ip pnmcigmp {\n chain out {\n  type filter hook output priority 0; policy accept;\n"
             "  ip protocol igmp counter drop\n }\n}\n")
    early = Receiver.join(scene.r2, port)
    sender = Sender(scene.s1, port, "l")
    late: Receiver | None = None
    try:
        sender.send(range(0, 20))
        nft = in_netns_of(scene.r3.pid, "nft", "-f", "-", input=table)
        assert nft.returncode == 0, nft.stderr
        late = Receiver.join(scene.r3, port)

        def reports_dropped() -> int:
            listing = in_netns_of(scene.r3.pid, "nft", "list", "chain", "ip", "pnmcigmp", "out").stdout
            found = re.search(r"counter packets (\d+)", listing)
            assert found, listing
            return int(found.group(1))
        # The join did send its unsolicited report (at once), and nobody heard it.
        wait_until(reports_dropped, 5, "the late receiver's IGMP report dropped", interval=0.1)
        sender.send(range(20, 40))
        time.sleep(SETTLE)
        assert early.seqs() == list(range(40))
        assert late.seqs() == list(range(20, 40)), f"the late receiver got {late.seqs()}"
        assert {d.ttl for d in late.got} == {1}
    finally:
        in_netns_of(scene.r3.pid, "nft", "delete", "table", "ip", "pnmcigmp")
        closing(early, sender, *([late] if late else []))


def test_head_end_replication_costs_one_copy_per_other_host_of_the_overlay(scene: Scene) -> None:
    """Counted on h1's underlay link: per datagram one unicast VXLAN copy to each other host
    that has the overlay; members of the group or not; never a multicast on the underlay."""
    bed = scene.bed
    h1, h2, h3 = bed.hosts
    port = 5003
    n = 20
    vni = vxlan_vni(h1, scene.nets["ova"][h1])

    def measure(sender: Sender, seqs: range, vni: int) -> Counter[str]:
        """outer destination -> copies, checking each datagram went to each the same number of times."""
        cap = UnderlayCapture(h1)
        try:
            sender.send(seqs)
            time.sleep(SETTLE)
            copies = cap.copies(port)
        finally:
            cap.close()
        per_seq = Counter(payload for _dst, _vni, _mac, payload in copies)
        assert set(per_seq) == {f"{sender.tag} {i}" for i in seqs}, sorted(per_seq)
        assert all(not socket.inet_aton(dst)[0] >= 224 for dst, *_ in copies)  # unicast underlay
        assert {(v, mac) for _d, v, mac, _p in copies} == {(vni, GROUP_MAC)}
        by_dst = Counter(dst for dst, *_ in copies)
        print(f"\n{sender.ctr.network}: {len(copies)} VXLAN copies for {len(seqs)} datagrams: {dict(by_dst)}")
        assert len(set(per_seq.values())) == 1, per_seq  # every datagram the same number of copies
        return by_dst

    # ova (h1, h2, h3), members on h2 and h3: two copies per datagram, one to each.
    members = [Receiver.join(c, port) for c in (scene.r2, scene.r3)]
    sender = Sender(scene.s1, port, "c")
    try:
        assert measure(sender, range(n), vni) == {h2.address: n, h3.address: n}
        for r in members:
            assert r.seqs() == list(range(n)), r.where
        # Nobody on h3 in the group any more: h3 still gets its copy (no pruning).
        members[1].close()
        assert measure(sender, range(n, 2 * n), vni) == {h2.address: n, h3.address: n}
    finally:
        closing(*members, sender)

    # ovc, nobody in the group anywhere: one copy per other host having the overlay,
    # one with ovc on h1 and h2, two once h3 has it too.
    overlay_create(h1, "ovc", "10.61.4.0/24", "--internal")
    overlay_create(h2, "ovc", "10.61.4.0/24", "--internal")
    c1 = run_on(h1, "c1", "ovc")
    nid1 = network_id(h1, "ovc")
    vni = vxlan_vni(h1, nid1)
    wait_until(lambda: (FLOOD, h2.address) in fdb(h1, nid1), CONVERGE, "h1 replicating ovc to h2")
    sender = Sender(c1, port, "d")
    try:
        assert measure(sender, range(n), vni) == {h2.address: n}
        overlay_create(h3, "ovc", "10.61.4.0/24", "--internal")
        wait_until(lambda: (FLOOD, h3.address) in fdb(h1, nid1), CONVERGE, "h1 replicating ovc to h3")
        assert measure(sender, range(n, 2 * n), vni) == {h2.address: n, h3.address: n}
    finally:
        sender.close()
        h1.docker("rm", "-f", "c1")
        for h in (h1, h2, h3):
            h.docker("network", "rm", "ovc", check=False)

"""The Netlink contract (driver/netlink/api.py), run against the test fake
(tests/fakes/netlink.py) and the real Pyroute2Netlink in a throwaway network namespace.

The fake is the one held to the real thing: where the two differ, the fake is wrong. The
real variant needs root and fails (never skips) without it; it works only inside the
namespaces it makes, on 198.18.0.0/15 addresses with no route out, and deletes them after.
"""
from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from driver.netlink.api import (FLOOD_MAC, FdbEntry, FoundLink, KernelError, LinkExists, Neighbour, Netlink,
                                NoSuchLink, NoSuchNamespace, NotSupported, Vxlan)
from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from pynet.plugin_api import status_of
from pynet_core.errors import BadRequest, Conflict, PynetError
from tests.fakes.netlink import FakeNetlink

LOCAL = "198.18.0.11"  # this host's VTEP, on the underlay link of the test's namespace
MAC1, MAC2, MAC3 = "02:42:c6:12:00:02", "02:42:c6:12:00:03", "02:42:c6:12:00:04"
MULTICAST = "01:00:5e:00:00:05"  # a MAC the bridge refuses as a unicast entry


@dataclass
class Bed:
    """A Netlink on an empty namespace, and what its tests need around it."""
    nl: Netlink
    ns: str | None = None  # the real variant's namespace; None for the fake
    named: list[str] = field(default_factory=list)

    def netns_name(self) -> str:
        """A name for a namespace the test makes with ensure_netns (deleted after it)."""
        self.named.append(f"pnt-nc{secrets.token_hex(4)}")
        return self.named[-1]

    def underlay(self) -> str:
        """Test setup: an up link `ul0` holding LOCAL/24, where VXLAN sockets bind, and the
        default route through it (to its own peer ul1: nothing leaves the namespace)."""
        if self.ns is None:
            self.nl.add_device("ul0")
            self.nl.addrs.append(("ul0", ip_interface(f"{LOCAL}/24")))
            self.nl.default_links.append("ul0")
            return LOCAL
        with IPRoute(netns=self.ns, flags=0) as ipr:
            ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul1"})  # no dummy module here
            index = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=index, address=LOCAL, prefixlen=24)
            for name in ("ul0", "ul1"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway="198.18.0.1", oif=index)
        return LOCAL

    def eventually(self, check: Callable[[], bool]) -> bool:
        """The kernel removes a namespace's links a moment after the namespace goes."""
        deadline = time.monotonic() + 5
        while not check() and time.monotonic() < deadline:
            time.sleep(0.05)
        return check()


@pytest.fixture(params=[pytest.param("fake"), pytest.param("real", marks=pytest.mark.kernel)])
def bed(request: pytest.FixtureRequest) -> Iterator[Bed]:
    if request.param == "fake":
        yield Bed(FakeNetlink())
        return
    ns = request.getfixturevalue("ns")  # root, or the test fails
    made = Bed(Pyroute2Netlink(ns), ns)
    try:
        yield made
    finally:
        for name in made.named:
            if Path("/run/netns", name).exists():
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def iface(text: str):
    return ip_interface(text)


def own_links(nl: Netlink) -> dict:
    """Every link but the loopback device (a new namespace has one; the fake has none)."""
    return {link.name: link for link in nl.links() if not link.loopback}


def overlay(bed: Bed, vni: int = 4242) -> tuple[Netlink, str]:
    """A namespace with bridge br0 and VXLAN device pnxtest on it; (inside, its name)."""
    bed.underlay()
    name = bed.netns_name()
    bed.nl.ensure_netns(name)
    inside = bed.nl.within(name)
    inside.ensure_bridge("br0", 1450, [])
    bed.nl.add_vxlan("pnxtest", vni, LOCAL, 4789, 1450, "br0", netns=name)
    return inside, name


# --- the errors --------------------------------------------------------------------


def test_the_errors_are_domain_errors() -> None:
    """So a plugin call that meets one answers as before (400, 409, 500, 501)."""
    assert issubclass(NoSuchLink, BadRequest) and issubclass(LinkExists, Conflict)
    assert issubclass(NoSuchNamespace, KernelError) and issubclass(NotSupported, KernelError)
    assert issubclass(KernelError, PynetError)
    errors = (NoSuchLink, LinkExists, KernelError, NoSuchNamespace, NotSupported)
    assert [status_of("NetworkDriver.Join", error("x")) for error in errors] == [400, 409, 500, 500, 501]


# --- reading a namespace -------------------------------------------------------------


def test_a_new_namespace_has_nothing_of_pynet(bed: Bed) -> None:
    nl = bed.nl
    assert own_links(nl) == {} and nl.link("pn-none") is None
    assert nl.routes() == [] and nl.local_addresses() == [] and nl.default_route_links() == []
    assert nl.found_link("pn-none") is None and nl.vxlan("pn-none") is None
    assert nl.bridge_netfilter("pn-none") is None
    assert nl.remove_link("pn-none") is False


# --- bridges -------------------------------------------------------------------------


def test_a_bridge_is_made_then_verified(bed: Bed) -> None:
    nl = bed.nl
    assert nl.ensure_bridge("pn-br", 1400, [iface("198.18.1.1/24"), iface("fd00:1::1/64")]) is True
    link = nl.link("pn-br")
    assert (link.kind, link.mtu, link.up, link.master, link.parent) == ("bridge", 1400, True, None, None)
    assert nl.ensure_bridge("pn-br", None, [iface("198.18.1.1/24")]) is False  # others stay
    assert nl.link("pn-br").mtu == 1400  # None: left as it is
    mine = {str(a) for name, a in nl.local_addresses() if name == "pn-br" and not a.is_link_local}
    assert mine == {"198.18.1.1/24", "fd00:1::1/64"}
    assert {ip_network("198.18.1.0/24"), ip_network("fd00:1::/64")} <= set(nl.routes())
    assert own_links(nl) == {"pn-br": nl.link("pn-br")}


def test_a_bridge_name_held_by_another_link_is_link_exists(bed: Bed) -> None:
    bed.nl.ensure_bridge("pn-br", None, [])
    bed.nl.add_veth("pnvhost", "pncpeer", 1500, "pn-br", None)
    with pytest.raises(LinkExists, match="not a bridge"):
        bed.nl.ensure_bridge("pncpeer", None, [])


def test_a_bridge_mtu_follows_its_ports_unless_set(bed: Bed) -> None:
    """The kernel's rule: a bridge whose MTU was never set to another value takes its
    smallest port's (1500 with none); one set keeps it."""
    nl = bed.nl
    nl.ensure_bridge("pn-auto", 1500, [])  # what it has already: not "set"
    nl.ensure_bridge("pn-set", 1450, [])
    for bridge in ("pn-auto", "pn-set"):
        nl.add_veth(f"pnv{bridge[3:]}", f"pnc{bridge[3:]}", 1400, bridge, None)
    assert (nl.link("pn-auto").mtu, nl.link("pn-set").mtu) == (1400, 1450)
    nl.remove_link("pnvauto")
    nl.remove_link("pnvset")
    assert (nl.link("pn-auto").mtu, nl.link("pn-set").mtu) == (1500, 1450)


def test_a_found_link_is_put_back(bed: Bed) -> None:
    nl = bed.nl
    nl.ensure_bridge("pn-br", 1400, [iface("198.18.1.1/24"), iface("198.18.2.1/24")])
    found = nl.found_link("pn-br")
    assert (found.mtu, found.up, set(found.addresses), found.route_localnet) == \
        (1400, True, {"198.18.1.1/24", "198.18.2.1/24"}, False)
    nl.put_back("pn-br", FoundLink(1500, False, (), False), [iface("198.18.1.1/24"), iface("198.18.3.1/24")])
    again = nl.found_link("pn-br")
    assert (again.mtu, again.up, again.addresses) == (1500, False, ("198.18.2.1/24",))
    assert ip_network("198.18.2.0/24") not in nl.routes()  # a link down has no routes
    nl.put_back("pn-none", found, [])  # absent is fine


def test_bridge_netfilter(bed: Bed) -> None:
    nl = bed.nl
    nl.ensure_bridge("pn-br", None, [])
    assert nl.bridge_netfilter("pn-br") is False  # the kernel's default for a new bridge
    nl.set_bridge_netfilter("pn-br", True)
    assert nl.bridge_netfilter("pn-br") is True
    nl.set_bridge_netfilter("pn-br", False)
    assert nl.bridge_netfilter("pn-br") is False
    with pytest.raises(NoSuchLink):
        nl.set_bridge_netfilter("pn-none", True)
    nl.add_veth("pnvhost", "pncpeer", 1500, "pn-br", None)
    assert nl.bridge_netfilter("pnvhost") is None
    with pytest.raises(KernelError):
        nl.set_bridge_netfilter("pnvhost", True)


# --- veths and ports -------------------------------------------------------------------


def test_a_veth_pair_on_a_bridge(bed: Bed) -> None:
    nl = bed.nl
    nl.ensure_bridge("pn-br", 1450, [])
    nl.add_veth("pnvhost", "pncpeer", 1450, "pn-br", MAC1)
    host, peer = nl.link("pnvhost"), nl.link("pncpeer")
    assert (host.kind, host.master, host.up, host.mtu, host.parent) == ("veth", "pn-br", True, 1450, "pncpeer")
    assert (peer.kind, peer.master, peer.up, peer.mtu, peer.parent, peer.mac) == \
        ("veth", None, False, 1450, "pnvhost", MAC1)
    assert own_links(nl) == {name: nl.link(name) for name in ("pn-br", "pnvhost", "pncpeer")}
    for host_name, peer_name in (("pnvhost", "pncother"), ("pnvother", "pncpeer")):
        with pytest.raises(LinkExists):
            nl.add_veth(host_name, peer_name, 1450, "pn-br", None)
    with pytest.raises(NoSuchLink):  # the bridge is looked for first
        nl.add_veth("pnvhost", "pncpeer", 1450, "pn-none", None)
    assert set(own_links(nl)) == {"pn-br", "pnvhost", "pncpeer"}
    assert nl.remove_link("pnvhost") is True
    assert nl.link("pncpeer") is None  # one end deleted, both gone
    assert nl.remove_link("pnvhost") is False and nl.remove_link("pncpeer") is False


def test_a_port_outlives_its_bridge_and_is_attached_again(bed: Bed) -> None:
    nl = bed.nl
    nl.ensure_bridge("pn-br", 1500, [])
    nl.add_veth("pnvhost", "pncpeer", 1500, "pn-br", None)
    assert nl.remove_link("pn-br") is True
    assert (nl.link("pnvhost").master, nl.link("pnvhost").up) == (None, True)
    nl.ensure_bridge("pn-br", 1500, [])
    nl.ensure_port("pnvhost", "pn-br")
    assert nl.link("pnvhost").master == "pn-br"
    nl.ensure_port("pnvhost", "pn-br")  # repeatable
    for name, master in (("pn-none", "pn-br"), ("pnvhost", "pn-none")):
        with pytest.raises(NoSuchLink):
            nl.ensure_port(name, master)


# --- namespaces ----------------------------------------------------------------------


def test_named_namespaces(bed: Bed) -> None:
    nl, name = bed.nl, bed.netns_name()
    with pytest.raises(NoSuchNamespace):
        nl.within(name)
    assert nl.remove_netns(name) is False
    assert nl.ensure_netns(name) is True and nl.ensure_netns(name) is False
    assert own_links(nl.within(name)) == {}
    assert nl.remove_netns(name) is True and nl.remove_netns(name) is False
    with pytest.raises(NoSuchNamespace):
        nl.within(name)


def test_a_veth_into_a_namespace(bed: Bed) -> None:
    nl, name = bed.nl, bed.netns_name()
    nl.ensure_netns(name)
    inside = nl.within(name)
    inside.ensure_bridge("br0", 1450, [])
    nl.add_veth("pnvhost", "pncpeer", 1450, "br0", MAC2, netns=name)
    host, peer = inside.link("pnvhost"), nl.link("pncpeer")
    # Each end's other end is in another namespace: neither names it.
    assert (host.kind, host.master, host.up, host.mtu, host.parent) == ("veth", "br0", True, 1450, None)
    assert (peer.kind, peer.master, peer.up, peer.mtu, peer.parent, peer.mac) == \
        ("veth", None, False, 1450, None, MAC2)
    assert own_links(nl) == {"pncpeer": peer} and own_links(inside) == {"br0": inside.link("br0"), "pnvhost": host}
    with pytest.raises(LinkExists):
        nl.add_veth("pnvhost", "pncother", 1450, "br0", None, netns=name)
    with pytest.raises(NoSuchLink):
        nl.add_veth("pnvother", "pncother", 1450, "br1", None, netns=name)
    with pytest.raises(NoSuchNamespace):
        nl.add_veth("pnvother", "pncother", 1450, "br0", None, netns=bed.netns_name())
    assert nl.remove_link("pncpeer") is True
    assert inside.link("pnvhost") is None  # the far end goes with it
    nl.add_veth("pnvhost", "pncpeer", 1450, "br0", None, netns=name)
    assert nl.remove_netns(name) is True
    assert bed.eventually(lambda: nl.link("pncpeer") is None), "the end outside outlived its namespace"


# --- macvlan and vlan ----------------------------------------------------------------


def test_macvlan_links(bed: Bed) -> None:
    nl = bed.nl
    nl.ensure_bridge("pn-lower", 1500, [])  # pynet's own lower device when there is no parent
    nl.add_macvlan("pnmone", "pn-lower", "bridge", 1500, MAC3)
    link = nl.link("pnmone")
    assert (link.kind, link.parent, link.up, link.mtu, link.mac, link.master) == \
        ("macvlan", "pn-lower", False, 1500, MAC3, None)
    with pytest.raises(LinkExists):
        nl.add_macvlan("pnmone", "pn-lower", "bridge", 1500, None)
    with pytest.raises(NoSuchLink):
        nl.add_macvlan("pnmtwo", "pn-none", "bridge", 1500, None)
    with pytest.raises(KernelError):  # above the lower device's MTU
        nl.add_macvlan("pnmtwo", "pn-lower", "bridge", 9000, None)
    with pytest.raises(KernelError):  # passthru wants the lower device to itself
        nl.add_macvlan("pnmtwo", "pn-lower", "passthru", 1500, None)
    assert nl.remove_link("pnmone") is True
    nl.add_macvlan("pnmpass", "pn-lower", "passthru", 1500, None)
    assert nl.link("pnmpass").mac == nl.link("pn-lower").mac  # it takes its lower's MAC
    with pytest.raises(KernelError):
        nl.add_macvlan("pnmtwo", "pn-lower", "bridge", 1500, None)
    assert nl.remove_link("pn-lower") is True
    assert nl.link("pnmpass") is None  # gone with its lower device
    assert own_links(nl) == {}


def test_a_vlan_sub_interface(bed: Bed) -> None:
    nl = bed.nl
    nl.ensure_bridge("pn-base", None, [])
    with pytest.raises(NoSuchLink):
        nl.add_vlan("pn-none.5", "pn-none", 5)
    try:
        nl.add_vlan("pn-base.5", "pn-base", 5)
    except NotSupported as exc:  # a kernel without 8021q (the fake with vlan_supported False)
        assert "802.1q" in exc.message and nl.link("pn-base.5") is None
        return
    link = nl.link("pn-base.5")
    assert (link.kind, link.parent, link.up, link.mtu, link.master) == ("vlan", "pn-base", True, 1500, None)
    with pytest.raises(LinkExists):
        nl.add_vlan("pn-base.5", "pn-base", 6)
    nl.remove_link("pn-base")
    assert nl.link("pn-base.5") is None


# --- VXLAN ---------------------------------------------------------------------------


def test_a_vxlan_device_in_its_namespace(bed: Bed) -> None:
    nl = bed.nl
    inside, name = overlay(bed)
    assert ("ul0", ip_interface(f"{LOCAL}/24")) in nl.local_addresses()
    assert nl.default_route_links() == ["ul0"] and ip_network("0.0.0.0/0") not in nl.routes()
    assert nl.link("pnxtest") is None and nl.vxlan("pnxtest") is None  # moved; its socket stays here
    assert inside.vxlan("pnxtest") == Vxlan("pnxtest", 4242, LOCAL, 4789, False, True, 1450, "br0")
    link = inside.link("pnxtest")
    assert (link.kind, link.up, link.master, link.mtu) == ("vxlan", True, "br0", 1450)
    assert inside.vxlan("br0") is None and inside.vxlan("pn-none") is None
    with pytest.raises(LinkExists, match="VNI 4242"):  # the VNI on that port is taken here
        nl.add_vxlan("pnxother", 4242, LOCAL, 4789, 1450, "br0", netns=name)
    with pytest.raises(LinkExists):  # the name is taken in the namespace
        nl.add_vxlan("pnxtest", 4243, LOCAL, 4789, 1450, "br0", netns=name)
    with pytest.raises(NoSuchLink):
        nl.add_vxlan("pnxother", 4244, LOCAL, 4789, 1450, "br1", netns=name)
    with pytest.raises(NoSuchNamespace):
        nl.add_vxlan("pnxother", 4245, LOCAL, 4789, 1450, "br0", netns=bed.netns_name())
    assert set(own_links(inside)) == {"br0", "pnxtest"} and "pnxother" not in own_links(nl)
    assert inside.remove_link("pnxtest") is True
    nl.add_vxlan("pnxtest", 4242, LOCAL, 4789, 1450, "br0", netns=name)  # its VNI is free again
    assert inside.vxlan("pnxtest").vni == 4242


def test_fdb_and_neighbour_entries_one_by_one(bed: Bed) -> None:
    inside, _ = overlay(bed)
    for _ in range(2):  # each ensure repeatable
        inside.ensure_fdb("pnxtest", MAC1, "198.18.0.12")
        inside.ensure_fdb("pnxtest", FLOOD_MAC, "198.18.0.12")
        inside.ensure_fdb("pnxtest", FLOOD_MAC, "198.18.0.13")
        inside.ensure_neighbour("br0", "198.19.0.2", MAC1)
    inside.ensure_fdb("pnxtest", MAC1, "198.18.0.13")  # a MAC that moved host: replaced
    assert inside.fdb_entries("pnxtest") == [FdbEntry(FLOOD_MAC, "198.18.0.12"),
                                             FdbEntry(FLOOD_MAC, "198.18.0.13"), FdbEntry(MAC1, "198.18.0.13")]
    inside.ensure_neighbour("br0", "198.19.0.2", MAC2)  # replaced
    assert inside.neighbours("br0") == [Neighbour("198.19.0.2", MAC2)]
    with pytest.raises(KernelError):
        inside.ensure_fdb("pnxtest", MULTICAST, "198.18.0.12")
    assert MULTICAST not in {e.mac for e in inside.fdb_entries("pnxtest")}
    assert inside.remove_fdb("pnxtest", FLOOD_MAC, "198.18.0.12") is True
    assert inside.remove_fdb("pnxtest", FLOOD_MAC, "198.18.0.12") is False
    assert inside.remove_fdb("pnxtest", MAC1, "198.18.0.13") is True
    assert inside.fdb_entries("pnxtest") == [FdbEntry(FLOOD_MAC, "198.18.0.13")]
    assert inside.remove_neighbour("br0", "198.19.0.2") is True
    assert inside.remove_neighbour("br0", "198.19.0.2") is False and inside.neighbours("br0") == []
    for call in (lambda: inside.fdb_entries("pn-none"), lambda: inside.ensure_fdb("pn-none", MAC1, "198.18.0.12"),
                 lambda: inside.remove_fdb("pn-none", MAC1, "198.18.0.12"), lambda: inside.neighbours("pn-none"),
                 lambda: inside.ensure_neighbour("pn-none", "198.19.0.2", MAC1),
                 lambda: inside.remove_neighbour("pn-none", "198.19.0.2")):
        with pytest.raises(NoSuchLink):
            call()


def test_peers_in_bulk_on_one_socket_each_entry_on_its_own(bed: Bed) -> None:
    """change_peers removes then adds many entries; one the kernel refuses is reported
    while the entries around it are made, and one already gone is no failure."""
    _, name = overlay(bed, vni=4243)
    with bed.nl.within(name).session() as inside:
        with inside.session() as same:  # a session inside one is that one
            assert same.peer_entries("pnxtest", "br0").fdb == []
        failed = inside.change_peers(
            "pnxtest", "br0",
            fdb_add=[FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry(FLOOD_MAC, "198.18.0.13"),
                     FdbEntry(MAC1, "198.18.0.12"), FdbEntry(MULTICAST, "198.18.0.12"),
                     FdbEntry(MAC3, "198.18.0.13")],
            neigh_add=[Neighbour("198.19.0.2", MAC1), Neighbour("198.19.0.4", MAC3)])
        assert len(failed) == 1 and f"adding FDB entry {MULTICAST} -> 198.18.0.12 on pnxtest" in failed[0]
        have = inside.peer_entries("pnxtest", "br0")
        assert have.fdb == [FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry(FLOOD_MAC, "198.18.0.13"),
                            FdbEntry(MAC1, "198.18.0.12"), FdbEntry(MAC3, "198.18.0.13")]
        assert have.neighbours == [Neighbour("198.19.0.2", MAC1), Neighbour("198.19.0.4", MAC3)]
        assert inside.change_peers(
            "pnxtest", "br0",
            fdb_remove=[FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry(MAC1, "198.18.0.12"),
                        FdbEntry(MULTICAST, "198.18.0.12"), FdbEntry(MAC2, "198.18.0.12")],
            neigh_remove=[Neighbour("198.19.0.2", MAC1), Neighbour("198.19.0.99", MAC1)],
            fdb_add=[FdbEntry(MAC3, "198.18.0.12")]) == []  # MAC3 moved: replaced
        have = inside.peer_entries("pnxtest", "br0")
        assert have.fdb == [FdbEntry(FLOOD_MAC, "198.18.0.13"), FdbEntry(MAC3, "198.18.0.12")]
        assert have.neighbours == [Neighbour("198.19.0.4", MAC3)]
        assert have.fdb == inside.fdb_entries("pnxtest") and have.neighbours == inside.neighbours("br0")
        for dev, bridge in (("pn-none", "br0"), ("pnxtest", "pn-none")):
            with pytest.raises(NoSuchLink):
                inside.peer_entries(dev, bridge)
            with pytest.raises(NoSuchLink):
                inside.change_peers(dev, bridge, fdb_add=[FdbEntry(MAC1, "198.18.0.12")])
    assert bed.nl.within(name).peer_entries("pnxtest", "br0") == have  # the session's changes stay

import ipaddress

import pytest
from pyroute2 import IPRoute

from pynet_core.errors import Conflict
from driver.netlink.pyroute2_netlink import Pyroute2Netlink


def iface(text):
    return ipaddress.ip_interface(text)


def addresses(ns, name):
    with IPRoute(netns=ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        return {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx)
                if not a.get("IFA_ADDRESS").startswith("fe80")}


def test_ensure_bridge_creates_then_verifies(ns):
    nl = Pyroute2Netlink(ns)
    assert nl.ensure_bridge("pn-test", 1400, [iface("10.1.0.1/24"), iface("fd00:1::1/64")]) is True
    link = nl.link("pn-test")
    assert (link.kind, link.mtu, link.up) == ("bridge", 1400, True)
    assert addresses(ns, "pn-test") == {"10.1.0.1/24", "fd00:1::1/64"}
    assert nl.ensure_bridge("pn-test", 1400, [iface("10.1.0.1/24")]) is False
    assert addresses(ns, "pn-test") == {"10.1.0.1/24", "fd00:1::1/64"}
    assert ipaddress.ip_network("10.1.0.0/24") in nl.routes()


def test_ensure_bridge_refuses_a_non_bridge(ns):
    nl = Pyroute2Netlink(ns)
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="pn-clash", kind="veth", peer={"ifname": "pn-clash2"})
    with pytest.raises(Conflict, match="not a bridge"):
        nl.ensure_bridge("pn-clash", 1500, [])


def test_veth_pair_on_bridge(ns):
    nl = Pyroute2Netlink(ns)
    nl.ensure_bridge("pn-br", 1450, [])
    nl.add_veth("pnvhost", "pncpeer", 1450, "pn-br", "02:42:0a:01:00:02")
    host, peer = nl.link("pnvhost"), nl.link("pncpeer")
    assert (host.master, host.up, host.mtu) == ("pn-br", True, 1450)
    assert (peer.kind, peer.mtu, peer.mac, peer.master) == ("veth", 1450, "02:42:0a:01:00:02", None)
    with pytest.raises(Conflict, match="already exists"):
        nl.add_veth("pnvhost", "pncother", 1450, "pn-br", None)
    assert nl.remove_link("pnvhost") is True
    assert nl.link("pncpeer") is None  # deleting one end deletes the pair
    assert nl.remove_link("pnvhost") is False


def test_ensure_port_reattaches_after_the_bridge_was_recreated(ns):
    nl = Pyroute2Netlink(ns)
    nl.ensure_bridge("pn-br", 1500, [])
    nl.add_veth("pnvhost", "pncpeer", 1500, "pn-br", None)
    nl.remove_link("pn-br")
    assert nl.link("pnvhost").master is None
    nl.ensure_bridge("pn-br", 1500, [])
    nl.ensure_port("pnvhost", "pn-br")
    assert nl.link("pnvhost").master == "pn-br"


def test_overlay_primitives_are_idempotent(ns):
    """Namespace, VXLAN device moved into it, FDB (unicast, head-end replication) and
    neighbour entries: each ensure repeatable, each remove absent-ok."""
    import secrets
    import subprocess

    from driver.netlink.api import FLOOD_MAC, FdbEntry, Neighbour
    nl = Pyroute2Netlink(ns)
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul1"})
        ipr.addr("add", index=ipr.link_lookup(ifname="ul0")[0], address="198.18.0.11", prefixlen=24)
        ipr.link("set", index=ipr.link_lookup(ifname="ul0")[0], state="up")
    inner_name = f"pnt-ov{secrets.token_hex(4)}"
    try:
        assert nl.ensure_netns(inner_name) is True and nl.ensure_netns(inner_name) is False
        inner = nl.within(inner_name)
        inner.ensure_bridge("br0", 1450, [])
        nl.add_vxlan("pnxtest", 4242, "198.18.0.11", 4789, 1450, "br0", netns=inner_name)
        assert nl.link("pnxtest") is None  # moved; its socket stays here
        vx = inner.vxlan("pnxtest")
        assert (vx.vni, vx.local, vx.port, vx.learning, vx.suppress_arp, vx.mtu, vx.master) == \
            (4242, "198.18.0.11", 4789, False, True, 1450, "br0")
        with pytest.raises(Conflict, match="VNI 4242"):
            nl.add_vxlan("pnxother", 4242, "198.18.0.11", 4789, 1450, "br0", netns=inner_name)
        nl.add_veth("pnvhost", "pncpeer", 1450, "br0", "02:42:0a:00:00:02", netns=inner_name)
        assert inner.link("pnvhost").master == "br0" and nl.link("pncpeer").mtu == 1450
        mac = "02:42:0a:00:00:03"
        for _ in range(2):
            inner.ensure_fdb("pnxtest", mac, "198.18.0.12")
            inner.ensure_fdb("pnxtest", FLOOD_MAC, "198.18.0.12")
            inner.ensure_fdb("pnxtest", FLOOD_MAC, "198.18.0.13")
            inner.ensure_neighbour("br0", "10.0.0.3", mac)
        inner.ensure_fdb("pnxtest", mac, "198.18.0.13")  # a MAC that moved host: replaced
        assert inner.fdb_entries("pnxtest") == [FdbEntry(FLOOD_MAC, "198.18.0.12"),
                                                FdbEntry(FLOOD_MAC, "198.18.0.13"), FdbEntry(mac, "198.18.0.13")]
        assert inner.neighbours("br0") == [Neighbour("10.0.0.3", mac)]
        # The bridge's static entry for the MAC, on the VXLAN port, beside the device's own.
        shown = subprocess.run(["ip", "netns", "exec", inner_name, "bridge", "fdb", "show", "br", "br0"],
                               capture_output=True, text=True).stdout
        assert f"{mac} dev pnxtest master br0 static" in shown
        assert inner.remove_fdb("pnxtest", FLOOD_MAC, "198.18.0.12") is True
        assert inner.remove_fdb("pnxtest", FLOOD_MAC, "198.18.0.12") is False
        assert inner.remove_fdb("pnxtest", mac, "198.18.0.13") is True
        assert inner.fdb_entries("pnxtest") == [FdbEntry(FLOOD_MAC, "198.18.0.13")]
        assert f"{mac} dev pnxtest" not in subprocess.run(
            ["ip", "netns", "exec", inner_name, "bridge", "fdb", "show", "br", "br0"],
            capture_output=True, text=True).stdout
        assert inner.remove_neighbour("br0", "10.0.0.3") is True
        assert inner.remove_neighbour("br0", "10.0.0.3") is False and inner.neighbours("br0") == []
        assert nl.local_addresses() and ("ul0", iface("198.18.0.11/24")) in nl.local_addresses()
    finally:
        assert nl.remove_netns(inner_name) is True
    assert nl.remove_netns(inner_name) is False


def test_peers_in_bulk_on_one_socket_each_entry_on_its_own(ns):
    """peer_entries reads both tables; change_peers removes then adds many entries in one
    session, and an entry the kernel refuses (a multicast MAC in the bridge's table) is
    reported while the entries around it are made."""
    import secrets
    import subprocess

    from driver.netlink.api import FLOOD_MAC, FdbEntry, Neighbour, NoSuchLink
    nl = Pyroute2Netlink(ns)
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="ul0", kind="veth", peer={"ifname": "ul1"})
        ipr.addr("add", index=ipr.link_lookup(ifname="ul0")[0], address="198.18.0.11", prefixlen=24)
        ipr.link("set", index=ipr.link_lookup(ifname="ul0")[0], state="up")
    inner_name = f"pnt-ov{secrets.token_hex(4)}"
    try:
        nl.ensure_netns(inner_name)
        nl.within(inner_name).ensure_bridge("br0", 1450, [])
        nl.add_vxlan("pnxtest", 4243, "198.18.0.11", 4789, 1450, "br0", netns=inner_name)
        good1, bad, good2 = "02:42:0a:00:00:02", "01:00:5e:00:00:05", "02:42:0a:00:00:04"
        with nl.within(inner_name).session() as inner:
            assert inner.peer_entries("pnxtest", "br0").fdb == []
            failed = inner.change_peers(
                "pnxtest", "br0",
                fdb_add=[FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry(FLOOD_MAC, "198.18.0.13"),
                         FdbEntry(good1, "198.18.0.12"), FdbEntry(bad, "198.18.0.12"),
                         FdbEntry(good2, "198.18.0.13")],
                neigh_add=[Neighbour("10.0.0.2", good1), Neighbour("10.0.0.4", good2)])
            assert len(failed) == 1 and f"adding FDB entry {bad} -> 198.18.0.12 on pnxtest" in failed[0]
            have = inner.peer_entries("pnxtest", "br0")
            # The refused MAC's half-made pair does not count: the next sync tries it again.
            assert have.fdb == [FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry(FLOOD_MAC, "198.18.0.13"),
                                FdbEntry(good1, "198.18.0.12"), FdbEntry(good2, "198.18.0.13")]
            assert have.neighbours == [Neighbour("10.0.0.2", good1), Neighbour("10.0.0.4", good2)]
            # Removing: what is there goes, what is already gone is no failure.
            assert inner.change_peers(
                "pnxtest", "br0",
                fdb_remove=[FdbEntry(FLOOD_MAC, "198.18.0.12"), FdbEntry(good1, "198.18.0.12"),
                            FdbEntry(bad, "198.18.0.12"), FdbEntry("02:42:0a:00:00:99", "198.18.0.12")],
                neigh_remove=[Neighbour("10.0.0.2", good1), Neighbour("10.0.0.99", good1)]) == []
            have = inner.peer_entries("pnxtest", "br0")
            assert have.fdb == [FdbEntry(FLOOD_MAC, "198.18.0.13"), FdbEntry(good2, "198.18.0.13")]
            assert have.neighbours == [Neighbour("10.0.0.4", good2)]
            with pytest.raises(NoSuchLink):
                inner.change_peers("pnxnone", "br0", fdb_add=[FdbEntry(good1, "198.18.0.12")])
        shown = subprocess.run(["ip", "netns", "exec", inner_name, "bridge", "fdb", "show", "br", "br0"],
                               capture_output=True, text=True).stdout
        assert f"{good2} dev pnxtest master br0 static" in shown
        assert good1 not in shown and bad not in shown
    finally:
        nl.remove_netns(inner_name)

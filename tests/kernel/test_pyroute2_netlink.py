import ipaddress

import pytest
from pyroute2 import IPRoute

from pynet.errors import Conflict
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

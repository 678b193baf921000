"""Macvlan networks on a real kernel, all inside throwaway namespaces.

Layout: `ns` plays the Docker host (pynet's kernel calls go there). Its `lan0` is a veth
whose peer sits in a "LAN host" namespace with 198.18.0.1. Endpoint macvlans are moved into
"container" namespaces by the test, as Docker does at Join.
"""
from __future__ import annotations

import subprocess

import pytest
from pyroute2 import IPRoute

from pynet.app import Deps
from driver.netlink.api import NotSupported
from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.harness.app_client import app_client

GENERIC = "com.docker.network.generic"
LAN_HOST = "198.18.0.1"


@pytest.fixture
def lan(ns, make_netns):
    """`lan0` in the host namespace, its peer `lan` in a LAN host namespace at 198.18.0.1/24."""
    lan_ns = make_netns()
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="lan0", kind="veth", peer={"ifname": "lanpeer"})
        ipr.link("set", index=ipr.link_lookup(ifname="lanpeer")[0], net_ns_fd=lan_ns)
        ipr.link("set", index=ipr.link_lookup(ifname="lan0")[0], state="up")
    with IPRoute(netns=lan_ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname="lanpeer")[0]
        ipr.link("set", index=idx, ifname="lan", state="up")
        ipr.addr("add", index=idx, address=LAN_HOST, prefixlen=24)
    return lan_ns


@pytest.fixture
def plugin(ns):
    """`plugin(method, body) -> (status, json)`; `plugin.deps` is what it was built on."""
    deps = Deps(store=MemoryStore(), netlink=Pyroute2Netlink(ns), firewall=RecordingFirewall())
    return app_client(deps, host_id="k")


def network(call, nid, subnet="198.18.0.0/24", gateway="198.18.0.1/24", **generic):
    return call("NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {GENERIC: {"type": "macvlan", **generic}},
        "IPv4Data": [{"Pool": subnet, "Gateway": gateway}]})


def container(call, ns, make_netns, nid, eid, address):
    """CreateEndpoint + Join, then what Docker does: move the link into a new namespace,
    rename it eth0, address it, bring it up. Returns the container namespace."""
    status, answer = call("NetworkDriver.CreateEndpoint", {
        "NetworkID": nid, "EndpointID": eid, "Interface": {"Address": address}})
    assert status == 200, answer
    status, joined = call("NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid, "SandboxKey": "/x"})
    assert status == 200, joined
    ctr = make_netns()
    src = joined["InterfaceName"]["SrcName"]
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=src)[0], net_ns_fd=ctr)
    ip, prefix = address.split("/")
    with IPRoute(netns=ctr, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=src)[0]
        ipr.link("set", index=idx, ifname="eth0")
        ipr.addr("add", index=idx, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=idx, state="up")
    return ctr


def pings(ns, address) -> bool:
    proc = subprocess.run(["ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", address],
                          capture_output=True, text=True, timeout=15)
    return proc.returncode == 0


def macvlan_mode(ns, name):
    with IPRoute(netns=ns, flags=0) as ipr:
        msg = ipr.link("get", ifname=name)[0]
    return msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA").get("IFLA_MACVLAN_MODE")


def pn_links(nl):
    return sorted(link.name for link in nl.links() if link.name.startswith("pn"))


def test_link_reading_knows_loopback_and_macvlan(ns, lan):
    nl = Pyroute2Netlink(ns)
    assert nl.link("lo").loopback and not nl.link("lan0").loopback
    nl.add_macvlan("pnctest", "lan0", "vepa", 1400, "02:42:c6:12:00:09")
    link = nl.link("pnctest")
    assert (link.kind, link.parent, link.mtu, link.mac) == ("macvlan", "lan0", 1400, "02:42:c6:12:00:09")
    assert macvlan_mode(ns, "pnctest") == "vepa"


def test_bridge_mode_containers_reach_each_other_and_the_lan(ns, lan, make_netns, plugin):
    nl = plugin.deps.netlink
    assert network(plugin, "1" * 64, parent="lan0") == (200, {})
    a = container(plugin, ns, make_netns, "1" * 64, "a" * 64, "198.18.0.10/24")
    b = container(plugin, ns, make_netns, "1" * 64, "b" * 64, "198.18.0.11/24")
    assert pings(a, "198.18.0.11") and pings(b, LAN_HOST) and pings(a, LAN_HOST)
    with IPRoute(netns=lan, flags=0) as ipr:
        neigh = {n.get("NDA_DST"): n.get("NDA_LLADDR") for n in ipr.get_neighbours()}
    assert neigh["198.18.0.10"] == "02:42:c6:12:00:0a" and neigh["198.18.0.11"] == "02:42:c6:12:00:0b"
    assert pn_links(nl) == []  # both links live in the containers now; no bridge, no veth


def test_private_mode_isolates_containers_but_not_the_lan(ns, lan, make_netns, plugin):
    assert network(plugin, "1" * 64, parent="lan0", macvlan_mode="private")[0] == 200
    a = container(plugin, ns, make_netns, "1" * 64, "a" * 64, "198.18.0.10/24")
    b = container(plugin, ns, make_netns, "1" * 64, "b" * 64, "198.18.0.11/24")
    assert macvlan_mode(a, "eth0") == "private"
    assert pings(a, LAN_HOST) and pings(b, LAN_HOST)
    assert not pings(a, "198.18.0.11") and not pings(b, "198.18.0.10")


def test_the_host_cannot_reach_its_macvlan_containers_over_the_parent(ns, lan, make_netns, plugin):
    # What the README warns about: the parent and its macvlans do not talk to each other.
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.addr("add", index=ipr.link_lookup(ifname="lan0")[0], address="198.18.0.2", prefixlen=24)
    assert network(plugin, "1" * 64, parent="lan0")[0] == 200
    a = container(plugin, ns, make_netns, "1" * 64, "a" * 64, "198.18.0.10/24")
    assert pings(ns, LAN_HOST) and pings(a, LAN_HOST)
    assert not pings(ns, "198.18.0.10")


def test_mtu_follows_the_parent_and_cannot_exceed_it(ns, lan, plugin):
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lan0")[0], mtu=1400)
    status, answer = network(plugin, "2" * 64, parent="lan0", mtu="1500")
    assert status == 400 and "lan0" in answer["Err"] and "1400" in answer["Err"]
    assert network(plugin, "1" * 64, parent="lan0")[0] == 200
    plugin("NetworkDriver.CreateEndpoint", {"NetworkID": "1" * 64, "EndpointID": "a" * 64,
                                            "Interface": {"Address": "198.18.0.10/24"}})
    assert plugin.deps.netlink.link("pnc" + "a" * 12).mtu == 1400
    assert pn_links(plugin.deps.netlink) == ["pnc" + "a" * 12]


def test_passthru_takes_the_parent_alone(ns, lan, make_netns, plugin):
    nl = plugin.deps.netlink
    parent_mac = nl.link("lan0").mac
    assert network(plugin, "1" * 64, parent="lan0", macvlan_mode="passthru")[0] == 200
    status, answer = plugin("NetworkDriver.CreateEndpoint", {
        "NetworkID": "1" * 64, "EndpointID": "a" * 64, "Interface": {"Address": "198.18.0.10/24"}})
    assert answer == {"Interface": {"MacAddress": parent_mac}}
    plugin("NetworkDriver.DeleteEndpoint", {"NetworkID": "1" * 64, "EndpointID": "a" * 64})
    plugin("NetworkDriver.DeleteNetwork", {"NetworkID": "1" * 64})
    # Someone else's macvlan on the parent: the kernel refuses passthru, at CreateNetwork.
    nl.add_macvlan("foreign0", "lan0", "bridge", 1500, None)
    status, answer = network(plugin, "2" * 64, parent="lan0", macvlan_mode="passthru")
    assert status == 409 and "lan0" in answer["Err"] and "passthru" in answer["Err"]
    assert pn_links(nl) == [] and nl.link("lan0").mac == parent_mac


@pytest.mark.parametrize("parent, fragment", [("eth9", "does not exist"), ("lo", "loopback"),
                                              ("down0", "is down")])
def test_bad_parents_are_refused(ns, lan, plugin, parent, fragment):
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="down0", kind="veth", peer={"ifname": "down1"})
    before = sorted(link.name for link in plugin.deps.netlink.links())
    status, answer = network(plugin, "1" * 64, parent=parent)
    assert status == 400 and parent in answer["Err"] and fragment in answer["Err"]
    assert sorted(link.name for link in plugin.deps.netlink.links()) == before


def test_no_parent_network_is_a_world_of_its_own(ns, lan, make_netns, plugin):
    nl = plugin.deps.netlink
    assert network(plugin, "1" * 64)[0] == 200
    bridge = "pn-" + "1" * 12
    assert nl.link(bridge).kind == "bridge" and nl.link(bridge).up
    a = container(plugin, ns, make_netns, "1" * 64, "a" * 64, "198.18.0.10/24")
    b = container(plugin, ns, make_netns, "1" * 64, "b" * 64, "198.18.0.11/24")
    assert pings(a, "198.18.0.11") and pings(b, "198.18.0.10")
    assert not pings(a, LAN_HOST)
    with IPRoute(netns=a, flags=0) as ipr:
        assert [r for r in ipr.route("dump", family=2) if r["dst_len"] == 0] == []
    plugin("NetworkDriver.DeleteNetwork", {"NetworkID": "1" * 64})
    assert nl.link(bridge) is None


def test_restart_remakes_the_no_parent_bridge_and_spares_the_parent(ns, lan, tmp_path):
    from pynet_core.store.local import LocalStore
    db = str(tmp_path / "pynet.db")

    def start():
        deps = Deps(store=LocalStore(db), netlink=Pyroute2Netlink(ns), firewall=RecordingFirewall())
        return deps, app_client(deps, host_id="k")

    deps, client = start()
    for nid, generic in (("1" * 64, {}), ("2" * 64, {"parent": "lan0"})):
        assert client.call("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {GENERIC: {"type": "macvlan", **generic}},
            "IPv4Data": [{"Pool": "198.18.0.0/24", "Gateway": "198.18.0.1/24"}]})[0] == 200
    nl = deps.netlink
    nl.remove_link("pn-" + "1" * 12)
    deps.store.close()
    deps, client = start()
    assert nl.link("pn-" + "1" * 12).kind == "bridge"
    assert nl.link("lan0") is not None
    for nid in ("1" * 64, "2" * 64):
        assert client.call("NetworkDriver.DeleteNetwork", {"NetworkID": nid})[0] == 200
    assert pn_links(nl) == [] and nl.link("lan0") is not None
    deps.store.close()


def _kernel_has_8021q(ns) -> tuple[bool, str]:
    nl = Pyroute2Netlink(ns)
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("add", ifname="probe0", kind="veth", peer={"ifname": "probe1"})
    try:
        nl.add_vlan("probe0.9", "probe0", 9)
    except NotSupported as exc:
        return False, exc.message
    finally:
        nl.remove_link("probe0")
    return True, ""


def test_vlan_parent_matches_what_the_kernel_can_do(ns, lan, plugin):
    """Never skips: with 8021q the sub-interface is made; without it, the refusal says why
    and leaves nothing behind."""
    nl = plugin.deps.netlink
    supported, _ = _kernel_has_8021q(ns)
    before = sorted(link.name for link in nl.links())
    status, answer = network(plugin, "1" * 64, parent="lan0.42")
    if supported:
        assert status == 200 and nl.link("lan0.42").kind == "vlan"
        plugin("NetworkDriver.DeleteNetwork", {"NetworkID": "1" * 64})
    else:
        assert status == 501, answer
        assert "lan0.42" in answer["Err"] and "802.1q" in answer["Err"]
    assert sorted(link.name for link in nl.links()) == before


def test_vlan_sub_interface_lifecycle_on_a_real_kernel(ns, lan, make_netns, plugin):
    """The one test allowed to skip: it needs a kernel with 802.1q (8021q)."""
    supported, reason = _kernel_has_8021q(ns)
    if not supported:
        pytest.skip(f"kernel lacks 8021q: {reason}")
    nl = plugin.deps.netlink
    with IPRoute(netns=lan, flags=0) as ipr:  # the LAN host's own VLAN 42 interface
        ipr.link("add", ifname="lan.42", kind="vlan", link=ipr.link_lookup(ifname="lan")[0], vlan_id=42)
        idx = ipr.link_lookup(ifname="lan.42")[0]
        ipr.addr("add", index=idx, address="198.18.42.1", prefixlen=24)
        ipr.link("set", index=idx, state="up")
    assert network(plugin, "1" * 64, subnet="198.18.42.0/24", gateway="198.18.42.1/24", parent="lan0.42")[0] == 200
    assert network(plugin, "2" * 64, subnet="198.18.43.0/24", gateway="198.18.43.1/24", parent="lan0.42")[0] == 200
    link = nl.link("lan0.42")
    assert (link.kind, link.parent, link.up) == ("vlan", "lan0", True)
    a = container(plugin, ns, make_netns, "1" * 64, "a" * 64, "198.18.42.10/24")
    assert pings(a, "198.18.42.1")
    plugin("NetworkDriver.DeleteNetwork", {"NetworkID": "1" * 64})
    assert nl.link("lan0.42") is not None
    plugin("NetworkDriver.DeleteNetwork", {"NetworkID": "2" * 64})
    assert nl.link("lan0.42") is None and nl.link("lan0") is not None

"""Macvlan networks through the plugin API, over the strict fake kernel.

The fake refuses what the kernel refuses (a macvlan MTU above its parent's, passthru
sharing a parent, no 8021q when told so), so these tests check outcomes: the links that
exist, the records stored, the answers Docker gets.
"""
import pytest

from pynet_core.errors import Conflict

from tests.harness.app_client import app_client

NID, NID2, NID3 = "a" * 64, "b" * 64, "c" * 64
EID, EID2 = "e" * 64, "f" * 64
GENERIC = "com.docker.network.generic"
PROBE = "pnp" + NID[:12]  # the CreateNetwork test link: its own prefix (naming.probe)


def net_body(nid=NID, pool="10.5.0.0/24", gateway="10.5.0.1/24", internal=False, **generic):
    return {"NetworkID": nid,
            "Options": {GENERIC: {"type": "macvlan", **generic}, "com.docker.network.enable_ipv6": False,
                        "com.docker.network.internal": internal},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gateway}], "IPv6Data": []}


def ep_body(nid=NID, eid=EID, address="10.5.0.2/24", mac=None):
    interface = {"Address": address, **({"MacAddress": mac} if mac else {})}
    return {"NetworkID": nid, "EndpointID": eid, "Interface": interface, "Options": {}}


def join(call, nid=NID, eid=EID):
    return call("NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                       "SandboxKey": "/var/run/docker/netns/x", "Options": {}})


@pytest.fixture
def kernel(fake_deps):
    k = fake_deps.netlink
    k.add_device("lan0", mtu=1500, mac="02:00:00:00:aa:01")
    k.add_device("lan1", mtu=9000)
    k.add_device("lo", mtu=65536, mac="00:00:00:00:00:00", loopback=True)
    k.add_device("down0", up=False)
    return k


def records(fake_deps, what="networks"):
    return fake_deps.store.list(f"v1/hosts/test-host/{what}/")


# --- bridge mode on an existing parent -----------------------------------------------
def test_lifecycle_on_a_parent(plugin_client, fake_deps, kernel):
    before = set(kernel.state)
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0")) == (200, {})
    assert set(kernel.state) == before  # the probe macvlan is gone again; no bridge, no veth
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    assert status == 200 and answer == {"Interface": {"MacAddress": "02:42:0a:05:00:02"}}
    link = kernel.state["pnc" + EID[:12]]
    assert (link.kind, link.parent, link.mtu, link.mac, link.up) == ("macvlan", "lan0", 1500, "02:42:0a:05:00:02", False)
    assert kernel.macvlan_modes[link.name] == "bridge"
    assert "pnv" + EID[:12] not in kernel.state
    assert join(plugin_client) == (200, {
        "InterfaceName": {"SrcName": link.name, "DstPrefix": "eth"},
        "Gateway": "10.5.0.1", "DisableGatewayService": True})
    assert fake_deps.firewall.networks == {}  # no NAT, no rules, no host address
    assert kernel.addresses == {}
    assert plugin_client("NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    for _ in range(2):
        assert plugin_client("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
        assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})
    assert set(kernel.state) == before and fake_deps.store.list("") == []


def test_two_endpoints_get_distinct_macs(plugin_client, kernel):
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0", macvlan_mode="private"))
    plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    plugin_client("NetworkDriver.CreateEndpoint", ep_body(eid=EID2, address="10.5.0.3/24"))
    a, b = kernel.state["pnc" + EID[:12]], kernel.state["pnc" + EID2[:12]]
    assert a.mac != b.mac and {kernel.macvlan_modes[a.name], kernel.macvlan_modes[b.name]} == {"private"}


def test_mtu_follows_the_parent_unless_set(plugin_client, kernel):
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan1"))
    plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    assert kernel.state["pnc" + EID[:12]].mtu == 9000
    plugin_client("NetworkDriver.CreateNetwork", net_body(nid=NID2, pool="10.6.0.0/24", gateway="10.6.0.1/24",
                                                          parent="lan1", mtu="1400"))
    plugin_client("NetworkDriver.CreateEndpoint", ep_body(nid=NID2, eid=EID2, address="10.6.0.2/24"))
    assert kernel.state["pnc" + EID2[:12]].mtu == 1400


def test_mtu_above_the_parents_is_refused(plugin_client, fake_deps, kernel):
    before = dict(kernel.state)
    status, answer = plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0", mtu="9000"))
    assert status == 400 and "lan0" in answer["Err"] and "9000" in answer["Err"] and "1500" in answer["Err"]
    assert kernel.state == before and fake_deps.store.list("") == []


def test_endpoint_link_lost_before_join_is_remade(plugin_client, kernel):
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0"))
    plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    kernel.remove_link("pnc" + EID[:12])
    assert join(plugin_client)[0] == 200
    assert kernel.state["pnc" + EID[:12]].parent == "lan0"


def test_failed_endpoint_leaves_nothing(plugin_client, fake_deps, kernel):
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0"))
    before = dict(kernel.state)
    kernel.fail_on.add("add_macvlan")
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    assert status == 500 and "injected failure" in answer["Err"]
    assert kernel.state == before and records(fake_deps, "endpoints") == []


# --- errors at CreateNetwork: named interface and reason, nothing half made ------------
@pytest.mark.parametrize("generic, status, fragments", [
    ({"parent": "eth9"}, 400, ["eth9", "does not exist"]),
    ({"parent": "down0"}, 400, ["down0", "is down"]),
    ({"parent": "lo"}, 400, ["lo", "loopback"]),
    ({"parent": "eth9.42"}, 400, ["eth9", "does not exist", "eth9.42"]),
    ({"parent": "down0.42"}, 400, ["down0", "is down"]),
    ({"parent": "lan0.4095"}, 400, ["lan0.4095", "1-4094"]),
    ({"parent": "lan0.x"}, 400, ["lan0.x", "IFACE.VLAN"]),
    ({"parent": "pn-aaaabbbbcccc"}, 409, ["pn-aaaabbbbcccc", "pynet"]),
])
def test_bad_parent_is_refused(plugin_client, fake_deps, kernel, generic, status, fragments):
    kernel.ensure_bridge("pn-aaaabbbbcccc", 1500, [])  # some other pynet network's bridge
    before = dict(kernel.state)
    got, answer = plugin_client("NetworkDriver.CreateNetwork", net_body(**generic))
    assert got == status and all(f in answer["Err"] for f in fragments), answer
    assert kernel.state == before and fake_deps.store.list("") == []


def test_overlapping_subnet_on_the_same_parent_is_refused(plugin_client, fake_deps, kernel):
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0"))[0] == 200
    status, answer = plugin_client("NetworkDriver.CreateNetwork",
                                   net_body(nid=NID2, pool="10.5.0.0/16", gateway="10.5.0.1/16", parent="lan0"))
    assert status == 409 and "lan0" in answer["Err"] and NID[:12] in answer["Err"] and "overlaps" in answer["Err"]
    assert len(records(fake_deps)) == 1
    # A disjoint subnet may share the parent; the same subnet may use another parent.
    assert plugin_client("NetworkDriver.CreateNetwork",
                         net_body(nid=NID2, pool="10.6.0.0/24", gateway="10.6.0.1/24", parent="lan0"))[0] == 200
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(nid=NID3, parent="lan1"))[0] == 200


def test_passthru_cannot_share_its_parent(plugin_client, fake_deps, kernel):
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0", macvlan_mode="passthru"))[0] == 200
    status, answer = plugin_client("NetworkDriver.CreateNetwork",
                                   net_body(nid=NID2, pool="10.6.0.0/24", gateway="10.6.0.1/24", parent="lan0"))
    assert status == 409 and "lan0" in answer["Err"] and "passthru" in answer["Err"]
    status, answer = plugin_client("NetworkDriver.CreateNetwork",
                                   net_body(nid=NID2, pool="10.6.0.0/24", gateway="10.6.0.1/24", parent="lan1"))
    assert status == 200
    status, answer = plugin_client("NetworkDriver.CreateNetwork",
                                   net_body(nid=NID3, pool="10.7.0.0/24", gateway="10.7.0.1/24", parent="lan1",
                                            macvlan_mode="passthru"))
    assert status == 409 and "lan1" in answer["Err"] and "passthru" in answer["Err"]
    assert len(records(fake_deps)) == 2


def test_passthru_refused_when_the_kernel_says_the_parent_is_taken(plugin_client, fake_deps, kernel):
    kernel.add_macvlan("foreign0", "lan0", "bridge", 1500, None)  # not pynet's (Docker's, say)
    before = dict(kernel.state)
    status, answer = plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0", macvlan_mode="passthru"))
    assert status == 409 and "lan0" in answer["Err"] and "passthru needs the parent to itself" in answer["Err"]
    assert kernel.state == before and fake_deps.store.list("") == []


def test_passthru_endpoint_takes_the_parents_mac(plugin_client, kernel):
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0", macvlan_mode="passthru"))
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    assert answer == {"Interface": {"MacAddress": "02:00:00:00:aa:01"}}
    assert kernel.state["pnc" + EID[:12]].mac == "02:00:00:00:aa:01"
    status, answer = plugin_client("NetworkDriver.CreateEndpoint",
                                   ep_body(eid=EID2, address="10.5.0.3/24", mac="02:11:22:33:44:55"))
    assert status == 409 and "02:11:22:33:44:55" in answer["Err"] and "lan0" in answer["Err"]


# --- 802.1q sub-interfaces ------------------------------------------------------------
def test_vlan_parent_is_made_shared_and_removed_with_the_last_network(plugin_client, fake_deps, kernel):
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))[0] == 200
    vlan = kernel.state["lan0.42"]
    assert (vlan.kind, vlan.parent, vlan.up) == ("vlan", "lan0", True)
    assert plugin_client("NetworkDriver.CreateNetwork",
                         net_body(nid=NID2, pool="10.6.0.0/24", gateway="10.6.0.1/24", parent="lan0.42"))[0] == 200
    plugin_client("NetworkDriver.CreateEndpoint", ep_body(nid=NID2, eid=EID2, address="10.6.0.2/24"))
    assert kernel.state["pnc" + EID2[:12]].parent == "lan0.42"
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})
    assert "lan0.42" in kernel.state  # still used by the second network
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID2}) == (200, {})
    assert "lan0.42" not in kernel.state and "lan0" in kernel.state
    assert fake_deps.store.list("") == []


def test_vlan_the_user_made_is_never_removed(plugin_client, kernel):
    kernel.add_vlan("lan0.7", "lan0", 7)
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.7"))
    plugin_client("NetworkDriver.CreateNetwork", net_body(nid=NID2, pool="10.6.0.0/24", gateway="10.6.0.1/24",
                                                          parent="lan0.7"))
    plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID2})
    assert kernel.state["lan0.7"].kind == "vlan"


def test_vlan_replaced_by_something_else_is_not_removed(plugin_client, kernel):
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))
    kernel.remove_link("lan0.42")
    kernel.add_device("lan0.42")  # someone's own interface under that name now
    plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    assert kernel.state["lan0.42"].kind is None


def test_kernel_without_8021q_refuses_with_the_reason(plugin_client, fake_deps, kernel):
    kernel.vlan_supported = False
    before = dict(kernel.state)
    status, answer = plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))
    assert status == 501
    assert "lan0.42" in answer["Err"] and "802.1q" in answer["Err"] and "8021q" in answer["Err"]
    assert kernel.state == before and fake_deps.store.list("") == []


def test_failure_after_making_the_vlan_removes_it(plugin_client, fake_deps, kernel):
    before = dict(kernel.state)
    kernel.fail_on.add("add_macvlan")  # the probe fails after the sub-interface was made
    status, answer = plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))
    assert status == 409 and "lan0.42" in answer["Err"]
    assert kernel.state == before and fake_deps.store.list("") == []


def test_store_failure_rolls_back_kernel_and_sharing(plugin_client, fake_deps, kernel, monkeypatch):
    before = dict(kernel.state)
    def record_lost(net):
        raise Conflict(f"the record of network {net.id[:12]} changed while it was being made")

    with monkeypatch.context() as m:
        # The last step fails: the record cannot be made ready after the kernel work.
        m.setattr(plugin_client.network.ledger, "commit_network", record_lost)
        status, answer = plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))
    assert status == 409 and kernel.state == before
    # The failed network does not count as a user of lan0.42 any more.
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(nid=NID2, parent="lan0.42"))[0] == 200


# --- no parent: an internal network on a bridge made for it ---------------------------
def test_no_parent_network_on_its_own_bridge(plugin_client, fake_deps, kernel):
    assert plugin_client("NetworkDriver.CreateNetwork", net_body())[0] == 200
    bridge = "pn-" + NID[:12]
    assert kernel.state[bridge].kind == "bridge" and kernel.addresses[bridge] == set()
    plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    assert kernel.state["pnc" + EID[:12]].parent == bridge
    status, answer = join(plugin_client)
    assert "Gateway" not in answer and answer["DisableGatewayService"] is True
    assert fake_deps.firewall.networks == {}
    plugin_client("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})
    plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    assert bridge not in kernel.state


def test_internal_network_on_a_parent_has_no_gateway(plugin_client, kernel):
    plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0", internal=True))
    plugin_client("NetworkDriver.CreateEndpoint", ep_body())
    assert "Gateway" not in join(plugin_client)[1]
    assert "pn-" + NID[:12] not in kernel.state


def test_no_parent_failure_removes_the_bridge(plugin_client, fake_deps, kernel):
    before = dict(kernel.state)
    kernel.fail_on.add("add_macvlan")
    assert plugin_client("NetworkDriver.CreateNetwork", net_body())[0] == 409
    assert kernel.state == before and fake_deps.store.list("") == []


# --- replays and plugin restarts ------------------------------------------------------
def test_create_network_replay_is_idempotent(plugin_client, fake_deps, kernel):
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))[0] == 200
    assert plugin_client("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))[0] == 200
    assert len(records(fake_deps)) == 1
    plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    assert "lan0.42" not in kernel.state


def test_restart_restores_lower_devices_and_keeps_what_is_not_pynets(fake_deps, kernel):
    call = app_client(fake_deps)
    assert call("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))[0] == 200
    assert call("NetworkDriver.CreateNetwork", net_body(nid=NID2))[0] == 200
    assert call("NetworkDriver.CreateNetwork", net_body(nid=NID3, parent="lan0"))[0] == 200
    assert call("NetworkDriver.CreateEndpoint", ep_body(nid=NID3))[0] == 200
    # The plugin is down; the sub-interface and the no-parent bridge vanish; leftovers appear.
    kernel.remove_link("lan0.42")
    kernel.remove_link("pn-" + NID2[:12])
    kernel.add_macvlan("pncdeadbeef0000", "lan0", "bridge", 1500, None)
    kernel.add_device("user0")

    second = app_client(fake_deps)
    assert kernel.state["lan0.42"].kind == "vlan"
    assert kernel.state["pn-" + NID2[:12]].kind == "bridge"
    # Named like pynet's, but no record names it: not pynet's to remove (issue 9, E).
    assert kernel.state["pncdeadbeef0000"].kind == "macvlan"
    kernel.remove_link("pncdeadbeef0000")
    assert {"lan0", "lan1", "lo", "down0", "user0", "pnc" + EID[:12]} <= set(kernel.state)
    assert fake_deps.firewall.networks == {}
    # The restarted plugin still knows who uses which parent.
    status, answer = second("NetworkDriver.CreateNetwork",
                            net_body(nid="d" * 64, pool="10.5.0.0/25", gateway="10.5.0.1/25", parent="lan0"))
    assert status == 409 and NID3[:12] in answer["Err"]
    for nid in (NID, NID2, NID3):
        second("NetworkDriver.DeleteNetwork", {"NetworkID": nid})
    assert "lan0.42" not in kernel.state and "pnc" + EID[:12] not in kernel.state


def test_restart_without_8021q_still_starts(fake_deps, kernel):
    first = app_client(fake_deps)
    assert first("NetworkDriver.CreateNetwork", net_body(parent="lan0.42"))[0] == 200
    kernel.remove_link("lan0.42")
    kernel.vlan_supported = False
    second = app_client(fake_deps)  # logs, does not raise
    assert "lan0.42" not in kernel.state
    assert second("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200


def test_a_vlan_sub_interface_made_by_an_interrupted_create_goes_at_restart(fake_deps, kernel):
    """Issue 9, E: kill -9 inside CreateNetwork after pynet made parent lan0.42: the intent
    record names it as pynet's, so the restarted plugin removes it (and lan0 stays)."""
    from contextlib import ExitStack

    from driver.models import CREATING, NetworkRecord
    from driver.options import parse_network_options

    svc = app_client(fake_deps).network
    kind = svc.kinds["macvlan"]
    options = parse_network_options({GENERIC: {"type": "macvlan", "parent": "lan0.42"}})
    draft = NetworkRecord(id=NID, options=options, gateways=("10.5.0.1/24",),
                          subnets=("10.5.0.0/24",), state=CREATING)
    net = svc.ledger.begin_network(kind.plan_network(draft, []))
    kind.create_network(net, ExitStack())  # the process dies here: no undo runs
    assert kernel.state["lan0.42"].kind == "vlan"
    app_client(fake_deps)  # the restart
    assert "lan0.42" not in kernel.state and "lan0" in kernel.state
    assert records(fake_deps) == [] and fake_deps.store.list("v1/hosts/") == []

"""Bridge networks (driver/kinds/bridge.py) over the strict fake kernel and the recording
firewall, beside test_macvlan_lifecycle.py and test_overlay_lifecycle.py.

Each test checks outcomes: the links, addresses and MTUs in the fake kernel, the rules and
ports the firewall holds, the record the kind returns and the answers Docker gets. The real
kernel's side is proven in tests/kernel (test_bridge_leftovers.py, test_restore.py).
"""
from __future__ import annotations

import ipaddress
from contextlib import ExitStack
from dataclasses import replace

import pytest

from driver.kinds.bridge import BridgeKind
from driver.models import CREATING, EndpointRecord, NetworkRecord
from driver.netlink.api import FoundLink
from driver.options import NetworkOptions
from driver.portmap import PortRequest
from pynet.app import Deps
from pynet_core.errors import Conflict
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client

NID, NID2, EID, EID2 = "a" * 64, "b" * 64, "e" * 64, "f" * 64
BRIDGE, BRIDGE2 = "pn-" + NID[:12], "pn-" + NID2[:12]
HOST_IF, PEER_IF = "pnv" + EID[:12], "pnc" + EID[:12]
MAC = "02:42:0a:14:00:02"
GATEWAY = "10.20.0.1/24"


class Failed(Exception):
    """A later step of the Docker call failing, after the kind's part succeeded."""


@pytest.fixture
def kernel():
    return FakeNetlink()


@pytest.fixture
def firewall():
    return RecordingFirewall()


@pytest.fixture
def kind(kernel, firewall):
    return BridgeKind(kernel, firewall)


def network(nid=NID, gateways=(GATEWAY,), **options) -> NetworkRecord:
    subnets = tuple(str(ipaddress.ip_interface(g).network) for g in gateways)
    return NetworkRecord(nid, NetworkOptions(**options), gateways=gateways, subnets=subnets)


def endpoint(nid=NID, eid=EID, address="10.20.0.2/24", mac=MAC) -> EndpointRecord:
    return EndpointRecord(nid, eid, None, "pnc" + eid[:12], (address,), mac)


def create(kind, net, others=()) -> NetworkRecord:
    """plan + create as NetworkService does, the call succeeding (undo discarded)."""
    with ExitStack() as undo:
        made = kind.create_network(kind.plan_network(net, others), undo)
        undo.pop_all()
    return made


def attach(kind, net, ep=None) -> EndpointRecord:
    with ExitStack() as undo:
        made = kind.create_endpoint(net, kind.plan_endpoint(net, ep or endpoint(net.id)), undo)
        undo.pop_all()
    return made


def users_bridge(kernel, name="br-user", mtu=9000, up=False, addresses=("198.18.1.1/24",)):
    """A bridge the user made before the network (found down, with an address of its own)."""
    kernel.ensure_bridge(name, mtu, [ipaddress.ip_interface(a) for a in addresses])
    kernel.state[name] = replace(kernel.state[name], up=up)
    return name


# --- CreateNetwork / DeleteNetwork ---------------------------------------------------------
def test_plan_names_the_bridge_and_touches_nothing(kind, kernel, firewall):
    planned = kind.plan_network(network(), [])
    assert (planned.bridge, planned.bridge_created, planned.found_bridge) == (BRIDGE, True, None)
    assert kernel.state == {} and firewall.networks == {}


def test_plan_refuses_a_bridge_name_another_network_has(kind, kernel):
    other = create(kind, network(NID2, bridge_name="br0"))
    with pytest.raises(Conflict, match=f"bridge name br0 is already used by pynet network {NID2[:12]}"):
        kind.plan_network(network(bridge_name="br0"), [other])
    # The same network planned again (a replayed CreateNetwork) is not its own rival.
    assert kind.plan_network(network(NID2, bridge_name="br0"), [other]).bridge == "br0"
    assert list(kernel.state) == ["br0"]


def test_create_makes_the_bridge_with_mtu_gateways_and_rules(kind, kernel, firewall):
    net = create(kind, network(mtu=9000, gateways=(GATEWAY, "fd00:20::1/64")))
    link = kernel.state[BRIDGE]
    assert (link.kind, link.up, link.mtu) == ("bridge", True, 9000)
    assert kernel.addresses[BRIDGE] == {GATEWAY, "fd00:20::1/64"}
    assert kernel.bridge_nf[BRIDGE] is False  # icc on, pynet's bridge: frames skip netfilter
    assert firewall.networks == {NID: net}
    assert net.bridge == BRIDGE and net.bridge_created is True


def test_icc_off_sends_the_bridges_frames_through_netfilter(kind, kernel):
    create(kind, network(icc=False))
    assert kernel.bridge_nf[BRIDGE] is True


def test_delete_removes_pynets_bridge_and_its_rules(kind, kernel, firewall):
    net = create(kind, network())
    kind.delete_network(net, [])
    assert kernel.state == {} and kernel.addresses == {} and firewall.networks == {}
    kind.delete_network(net, [])  # again (a replayed DeleteNetwork): nothing left to remove
    assert kernel.state == {}


def test_delete_of_an_intent_never_made_is_fine(kind, kernel, firewall):
    kind.delete_network(kind.plan_network(network(), []), [])  # a crash before any kernel work
    assert kernel.state == {} and firewall.networks == {}


def test_delete_leaves_a_link_that_took_the_bridges_name(kind, kernel, firewall):
    net = create(kind, network())
    kernel.remove_link(BRIDGE)
    kernel.add_device(BRIDGE)  # someone's device under that name now
    kind.delete_network(net, [])
    assert kernel.state[BRIDGE].kind is None and firewall.networks == {}


def test_a_users_bridge_is_recorded_as_found_and_left_as_found(kind, kernel, firewall):
    users_bridge(kernel)
    before = (kernel.state["br-user"], set(kernel.addresses["br-user"]))
    planned = kind.plan_network(network(bridge_name="br-user"), [])
    assert planned.bridge_created is False
    assert planned.found_bridge == FoundLink(9000, False, ("198.18.1.1/24",), False)
    assert (kernel.state["br-user"], kernel.addresses["br-user"]) == before  # planning changes nothing
    with ExitStack() as undo:
        net = kind.create_network(planned, undo)
        undo.pop_all()
    link = kernel.state["br-user"]
    assert (link.up, link.mtu) == (True, 9000)  # no `mtu` option: its MTU untouched
    assert kernel.addresses["br-user"] == {"198.18.1.1/24", GATEWAY}
    assert kernel.bridge_nf["br-user"] is False and firewall.networks == {NID: net}
    kind.delete_network(net, [])
    assert (kernel.state["br-user"], kernel.addresses["br-user"]) == before
    assert firewall.networks == {}


def test_a_users_bridge_gets_the_mtu_option_only_while_the_network_lasts(kind, kernel):
    users_bridge(kernel, up=True, addresses=(GATEWAY,))  # it even had the gateway already
    net = create(kind, network(bridge_name="br-user", mtu=1400))
    assert kernel.state["br-user"].mtu == 1400
    kind.delete_network(net, [])
    assert kernel.state["br-user"].mtu == 9000 and kernel.state["br-user"].up is True
    assert kernel.addresses["br-user"] == {GATEWAY}  # the user's address, not pynet's to take


# --- the undo path: a failure mid-create leaves nothing -------------------------------------
def test_a_failure_inside_make_bridge_removes_the_bridge(kind, kernel, firewall):
    kernel.fail_on.add("set_bridge_netfilter")  # after the bridge exists, before the rules
    with pytest.raises(Exception, match="injected failure in set_bridge_netfilter"):
        with ExitStack() as undo:
            kind.create_network(kind.plan_network(network(icc=False), []), undo)
            undo.pop_all()
    assert kernel.state == {} and kernel.addresses == {} and firewall.networks == {}


def test_a_failure_after_create_network_undoes_bridge_and_rules(kind, kernel, firewall):
    with pytest.raises(Failed):
        with ExitStack() as undo:
            kind.create_network(kind.plan_network(network(), []), undo)
            raise Failed("the record could not be made ready")
    assert kernel.state == {} and firewall.networks == {}


def test_a_failure_after_create_network_leaves_a_users_bridge_as_found(kind, kernel, firewall):
    users_bridge(kernel)
    before = (kernel.state["br-user"], set(kernel.addresses["br-user"]))
    with pytest.raises(Failed):
        with ExitStack() as undo:
            kind.create_network(kind.plan_network(network(bridge_name="br-user", mtu=1400), []), undo)
            raise Failed("the record could not be made ready")
    assert (kernel.state["br-user"], kernel.addresses["br-user"]) == before
    assert firewall.networks == {}


def test_a_failed_endpoint_leaves_no_veth(kind, kernel):
    net = create(kind, network())
    before = dict(kernel.state)
    with pytest.raises(Failed):
        with ExitStack() as undo:
            kind.create_endpoint(net, kind.plan_endpoint(net, endpoint()), undo)
            assert HOST_IF in kernel.state and PEER_IF in kernel.state
            raise Failed("the endpoint record could not be made ready")
    assert kernel.state == before and kernel.peers == {}


def test_a_failed_create_network_through_the_plugin_leaves_nothing(plugin_client, fake_deps):
    kernel = fake_deps.netlink
    kernel.fail_on.add("set_bridge_netfilter")
    status, answer = plugin_client("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {"icc": "false"}},
        "IPv4Data": [{"Pool": "10.20.0.0/24", "Gateway": GATEWAY}]})
    assert status == 500 and "injected failure" in answer["Err"]
    assert kernel.state == {} and fake_deps.firewall.networks == {}
    assert fake_deps.store.list("v1/hosts/") == []


# --- CreateEndpoint / Join / DeleteEndpoint --------------------------------------------------
def test_an_endpoint_is_a_veth_pair_on_the_bridge(kind, kernel):
    net = create(kind, network())
    planned = kind.plan_endpoint(net, endpoint())
    assert planned.host_if == HOST_IF and planned.links() == (HOST_IF, PEER_IF)
    assert attach(kind, net) == planned
    host, peer = kernel.state[HOST_IF], kernel.state[PEER_IF]
    assert (host.kind, host.master, host.up, host.mtu) == ("veth", BRIDGE, True, 1500)
    assert (peer.kind, peer.master, peer.mac, peer.mtu) == ("veth", None, MAC, 1500)
    assert kernel.peers[HOST_IF] == PEER_IF


@pytest.mark.parametrize("options, bridge_mtu, port_mtu", [
    ({"mtu": 9000}, None, 9000),                            # pynet's bridge: the network's MTU
    ({}, None, 1500),                                       # ... the default one
    ({"bridge_name": "br-user"}, 9000, 9000),               # a user's: its MTU as found
    ({"bridge_name": "br-user", "mtu": 1400}, 9000, 1400),  # ... unless the option says
])
def test_the_veth_mtu(kind, kernel, options, bridge_mtu, port_mtu):
    if bridge_mtu:
        users_bridge(kernel, mtu=bridge_mtu)
    net = create(kind, network(**options))
    attach(kind, net)
    assert kernel.state[HOST_IF].mtu == port_mtu == kernel.state[PEER_IF].mtu


def test_an_endpoint_remakes_a_bridge_deleted_by_hand(kind, kernel, firewall):
    net = create(kind, network(mtu=9000))
    kernel.remove_link(BRIDGE)
    attach(kind, net)
    assert kernel.state[BRIDGE].mtu == 9000 and kernel.addresses[BRIDGE] == {GATEWAY}
    assert kernel.state[HOST_IF].master == BRIDGE and firewall.networks == {NID: net}


def test_an_endpoint_replaces_the_leftover_of_an_interrupted_attempt(kind, kernel):
    net = create(kind, network())
    kernel.add_veth(HOST_IF, PEER_IF, 1500, BRIDGE, "02:42:00:00:00:99")
    attach(kind, net)
    assert kernel.state[PEER_IF].mac == MAC and kernel.state[HOST_IF].master == BRIDGE


def test_delete_endpoint_removes_the_pair_and_its_ports(kind, kernel, firewall):
    net = create(kind, network())
    ep = attach(kind, net)
    ep = replace(ep, published=kind.publish(net, ep, (PortRequest("tcp", 80, "0.0.0.0", 8080, 8080),)))
    kind.delete_endpoint(net, ep)
    assert set(kernel.state) == {BRIDGE} and kernel.peers == {}
    assert firewall.published == {}
    kind.delete_network(net, [])  # no ports left behind to refuse it
    assert kernel.state == {}


def test_delete_endpoint_without_its_network_or_host_end_recorded(kind, kernel):
    net = create(kind, network())
    attach(kind, net)
    kind.delete_endpoint(None, endpoint())  # host_if None: the name is derived from the id
    assert set(kernel.state) == {BRIDGE}


def test_join_answers_the_gateways(kind):
    net = create(kind, network(gateways=(GATEWAY, "fd00:20::1/64")))
    answer = kind.join(net, attach(kind, net), "/var/run/docker/netns/x")
    assert answer.to_wire() == {"InterfaceName": {"SrcName": PEER_IF, "DstPrefix": "eth"},
                                "Gateway": "10.20.0.1", "GatewayIPv6": "fd00:20::1"}


def test_join_on_an_internal_network_answers_no_gateway(kind):
    net = create(kind, network(internal=True, iface_prefix="int"))
    answer = kind.join(net, attach(kind, net), "/var/run/docker/netns/x")
    assert answer.to_wire() == {"InterfaceName": {"SrcName": PEER_IF, "DstPrefix": "int"}}
    assert kind.publishes(net) is False and kind.publishes(create(kind, network(NID2))) is True


def test_join_remakes_a_pair_that_went_with_an_earlier_sandbox(kind, kernel):
    net = create(kind, network())
    ep = replace(attach(kind, net), sandbox="/var/run/docker/netns/old")
    kernel.remove_link(PEER_IF)  # the old namespace died and took the pair with it
    kind.join(net, ep, "/var/run/docker/netns/new")
    assert kernel.state[PEER_IF].mac == MAC and kernel.state[HOST_IF].master == BRIDGE


def test_a_repeated_join_keeps_the_containers_interface(kind, kernel):
    net = create(kind, network())
    ep = replace(attach(kind, net), sandbox="/var/run/docker/netns/x")
    del kernel.state[PEER_IF]  # Docker moved the container end into the sandbox
    host = kernel.state[HOST_IF]
    kind.join(net, ep, "/var/run/docker/netns/x")
    assert PEER_IF not in kernel.state and kernel.state[HOST_IF] is host  # not re-made


# --- ProgramExternalConnectivity -------------------------------------------------------------
def test_publish_and_unpublish(kind, firewall):
    net = create(kind, network())
    ep = attach(kind, net)
    bindings = kind.publish(net, ep, (PortRequest("tcp", 80, "0.0.0.0", 8080, 8080),
                                      PortRequest("udp", 53, "0.0.0.0", 0, 0)))
    assert [(b.proto, b.container_ip, b.container_port, b.host_port) for b in bindings] == [
        ("tcp", "10.20.0.2", 80, 8080), ("udp", "10.20.0.2", 53, 49153)]
    assert firewall.published == {EID: bindings}
    kind.unpublish(net, ep)
    assert firewall.published == {}


# --- owned links ------------------------------------------------------------------------------
def test_owned_links_are_the_bridge_and_every_endpoints_pair(kind, kernel):
    net = create(kind, network())
    eps = [attach(kind, net), attach(kind, net, endpoint(eid=EID2, address="10.20.0.3/24"))]
    assert kind.owned_links(net, eps) == {BRIDGE, HOST_IF, PEER_IF, "pnv" + EID2[:12], "pnc" + EID2[:12]}
    assert kind.owned_links(net, eps) == {n for n in kernel.state}
    users_bridge(kernel, name="pn-users")  # a pn-named bridge of the user's is in use: owned
    found = create(kind, network(NID2, bridge_name="pn-users"))
    assert kind.owned_links(found, []) == {"pn-users"}
    assert kind.owned_links(replace(net, bridge=None), []) == set()


# --- plugin start -----------------------------------------------------------------------------
def test_restore_remakes_bridges_reattaches_veths_and_reinstalls_ports(kernel):
    kind = BridgeKind(kernel, RecordingFirewall())
    net = create(kind, network(mtu=9000))
    ep = attach(kind, net)
    ep = replace(ep, published=kind.publish(net, ep, (PortRequest("tcp", 80, "0.0.0.0", 8080, 8080),)))
    kernel.remove_link(BRIDGE)  # the veth survives, detached
    kernel.state[HOST_IF] = replace(kernel.state[HOST_IF], up=False)
    restarted = RecordingFirewall()  # the rules did not survive the restart
    BridgeKind(kernel, restarted).restore([net], {NID: [ep]})
    assert kernel.state[BRIDGE].mtu == 9000 and kernel.addresses[BRIDGE] == {GATEWAY}
    assert (kernel.state[HOST_IF].master, kernel.state[HOST_IF].up) == (BRIDGE, True)
    assert restarted.networks == {NID: net} and restarted.published == {EID: ep.published}


def test_restore_drops_the_rules_of_networks_no_longer_recorded(kind, kernel, firewall):
    kept = create(kind, network())
    create(kind, network(NID2, gateways=("10.21.0.1/24",)))  # its record is gone since
    kind.restore([kept], {NID: []})
    assert firewall.networks == {NID: kept}
    assert BRIDGE2 in kernel.state  # a link is removed only when a record names it: see below


def test_restore_keeps_the_others_up_when_one_network_cannot_come_back(kind, kernel, firewall):
    good, bad = network(), network(NID2, gateways=("10.21.0.1/24",))
    good, bad = kind.plan_network(good, []), kind.plan_network(bad, [])
    kernel.add_device(BRIDGE2)  # its name is another link's now: ensure_bridge refuses
    kind.restore([bad, good], {})
    assert kernel.state[BRIDGE].kind == "bridge" and kernel.state[BRIDGE2].kind is None
    assert firewall.networks == {NID: good}  # no rules for the one that did not come back


def test_a_restarted_plugin_finishes_interrupted_creates_and_remakes_the_rest(fake_deps):
    kernel, store = fake_deps.netlink, fake_deps.store
    client = app_client(fake_deps)
    for nid, pool in ((NID, "10.20.0"), (NID2, "10.21.0")):
        assert client("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {},
            "IPv4Data": [{"Pool": f"{pool}.0/24", "Gateway": f"{pool}.1/24"}]}) == (200, {})
    assert client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.20.0.2/24"},
        "Options": {}})[0] == 200
    # A crash: the second network's record is back to its intent, the first lost its bridge,
    # and a pn-named bridge that no record names appeared.
    ledger = client.network.ledger
    ledger.set_network_state(ledger.network(NID2), CREATING)
    kernel.remove_link(BRIDGE)
    kernel.ensure_bridge("pn-cccccccccccc", 1500, [])
    restarted = RecordingFirewall()
    client = app_client(Deps(store=store, netlink=kernel, firewall=restarted))
    assert BRIDGE2 not in kernel.state and client.network.ledger.network(NID2) is None
    assert kernel.state[BRIDGE].kind == "bridge" and kernel.state[HOST_IF].master == BRIDGE
    assert kernel.addresses[BRIDGE] == {"10.20.0.1/24"} and list(restarted.networks) == [NID]
    assert "pn-cccccccccccc" in kernel.state  # named like pynet's, but no record says it is

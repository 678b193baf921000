"""The bridge kind's part of `pynet doctor` and `pynet networks` (BridgeKind.check, describe,
owned_links), on networks made through the plugin API over the strict fake kernel."""
from __future__ import annotations

from dataclasses import replace

import pytest

from driver.kinds.base import RECREATE, Carrier

NID, EID = "a" * 64, "e" * 64
BRIDGE, VETH, PEER = "pn-" + NID[:12], "pnv" + EID[:12], "pnc" + EID[:12]
GATEWAY = "10.7.0.1/24"


@pytest.fixture
def made(plugin_client, fake_deps):
    """A bridge network with one endpoint; (kind, network, endpoints, kernel)."""
    assert plugin_client("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.7.0.0/24", "Gateway": GATEWAY}]})[0] == 200
    assert plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.7.0.2/24"}})[0] == 200
    service = plugin_client.network
    return service.kinds["bridge"], service.ledger.network(NID), service.ledger.endpoints(NID), fake_deps.netlink


def check(made, names=None):
    kind, net, eps, _ = made
    return [(d.what, d.fix) for d in kind.check(net, eps, (names or {}).get)]


def test_a_network_as_made_has_no_difference(made):
    assert check(made) == []


def test_a_missing_bridge_is_remade_by_a_restart(made):
    made[3].remove_link(BRIDGE)
    assert check(made)[0] == (f"bridge {BRIDGE} of network {NID[:12]} is missing", RECREATE)


def test_a_detached_veth_is_put_back_on_its_bridge_or_the_bridge_remade(made):
    kernel = made[3]
    kernel.state[VETH] = replace(kernel.state[VETH], master=None)
    assert check(made) == [(f"veth {VETH} is not a port of {BRIDGE} (master none)",
                            f"ip link set {VETH} master {BRIDGE}")]
    kernel.remove_link(BRIDGE)
    assert check(made)[1] == (f"veth {VETH} is not a port of {BRIDGE} (master none)", RECREATE)


def test_a_bridge_down_without_its_gateway_and_a_veth_down_are_each_named(made):
    kernel = made[3]
    kernel.state[BRIDGE] = replace(kernel.state[BRIDGE], up=False)
    kernel.state[VETH] = replace(kernel.state[VETH], up=False)
    kernel.addresses[BRIDGE].clear()
    assert check(made) == [(f"bridge {BRIDGE} is down", f"ip link set {BRIDGE} up"),
                           (f"bridge {BRIDGE} lacks its gateway address {GATEWAY}",
                            f"ip addr add {GATEWAY} dev {BRIDGE}"),
                           (f"veth {VETH} is down", f"ip link set {VETH} up")]


def test_another_device_under_the_bridges_name_is_named_with_its_kind(made):
    kernel = made[3]
    kernel.state[BRIDGE] = replace(kernel.state[BRIDGE], kind="dummy")
    assert check(made)[0] == (f"{BRIDGE} of network {NID[:12]} is a dummy, not a bridge",
                              f"remove {BRIDGE}, then {RECREATE}")


def test_a_missing_veth_names_the_container_to_restart_when_docker_knows_it(made):
    made[3].remove_link(VETH)
    what = f"veth {VETH} of endpoint {EID[:12]} is missing"
    assert check(made, {EID: "web"}) == [(what, "docker restart web")]
    assert check(made) == [(what, f"restart the container of endpoint {EID[:12]}")]


def test_docker_is_asked_for_names_only_when_a_fix_needs_one(made):
    kind, net, eps, _ = made

    def never(eid):
        raise AssertionError("asked dockerd with nothing to fix")
    assert kind.check(net, eps, never) == []


def test_describe_and_owned_links(made):
    kind, net, eps, _ = made
    assert kind.describe(net) == Carrier(f"bridge {BRIDGE}")
    assert kind.owned_links(net, eps) == {BRIDGE, VETH, PEER}

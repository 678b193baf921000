"""The macvlan kind's part of `pynet doctor` and `pynet networks` (MacvlanKind.check,
describe, owned_links), on networks made through the plugin API over the strict fake kernel."""
from __future__ import annotations

import pytest

from driver.kinds.base import RECREATE, Carrier

NID, EID = "a" * 64, "e" * 64
GENERIC = "com.docker.network.generic"


@pytest.fixture
def make(plugin_client, fake_deps):
    """make(**generic) -> (kind, network, endpoints, kernel): a macvlan network with one
    endpoint, on lan0 or whatever `generic` says."""
    fake_deps.netlink.add_device("lan0")

    def made(**generic):
        assert plugin_client("NetworkDriver.CreateNetwork", {
            "NetworkID": NID, "Options": {GENERIC: {"type": "macvlan", **generic}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.5.0.0/24",
                          "Gateway": "10.5.0.1/24"}]})[0] == 200
        assert plugin_client("NetworkDriver.CreateEndpoint", {
            "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.5.0.2/24"}})[0] == 200
        service = plugin_client.network
        return (service.kinds["macvlan"], service.ledger.network(NID), service.ledger.endpoints(NID),
                fake_deps.netlink)
    return made


def check(kind, net, eps):
    return [(d.what, d.fix) for d in kind.check(net, eps, lambda eid: None)]


def test_a_network_on_its_parent_has_no_difference_and_shows_it(make):
    kind, net, eps, _ = make(parent="lan0")
    assert check(kind, net, eps) == []
    assert kind.describe(net) == Carrier("parent lan0", "lan0")
    assert kind.owned_links(net, eps) == {"lan0", "pnc" + EID[:12]}


def test_a_users_parent_gone_is_for_the_user_to_bring_back(make):
    kind, net, eps, kernel = make(parent="lan0")
    kernel.remove_link("lan0")
    assert check(kind, net, eps) == [(f"macvlan parent lan0 of network {NID[:12]} is missing",
                                      "bring back interface lan0 (pynet never makes it)")]


def test_pynets_own_lower_device_gone_is_remade_by_a_restart(make):
    kind, net, eps, kernel = make()
    lower = "pn-" + NID[:12]
    assert kind.describe(net) == Carrier(f"parent {lower}", lower)
    kernel.remove_link(lower)
    assert check(kind, net, eps) == [(f"macvlan parent {lower} of network {NID[:12]} is missing",
                                      RECREATE)]

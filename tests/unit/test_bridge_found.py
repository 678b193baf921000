"""A user's bridge in the records: what pynet found is recorded with the intent and read back,
and a record written before pynet kept it (no `found_bridge`) never gets an MTU it did not
ask for. Fakes only; tests/kernel/test_bridge_leftovers.py proves the kernel side."""
from __future__ import annotations

import ipaddress

from driver.models import NetworkRecord
from driver.netlink.api import FoundLink
from driver.options import parse_network_options

NID = "f" * 64
GENERIC = "com.docker.network.generic"


def test_found_bridge_survives_the_json_round_trip():
    found = FoundLink(mtu=9000, up=False, addresses=("198.18.1.1/24",), route_localnet=False)
    net = NetworkRecord(id=NID, options=parse_network_options({GENERIC: {"bridge_name": "br9"}}),
                        bridge="br9", found_bridge=found)
    assert NetworkRecord.from_dict(net.to_dict()) == net
    assert NetworkRecord.from_dict({**net.to_dict(), "found_bridge": None}).found_bridge is None


def test_create_records_the_bridge_as_found_and_delete_puts_it_back(plugin_client, fake_deps):
    kernel = fake_deps.netlink
    kernel.ensure_bridge("br9", 9000, [ipaddress.ip_interface("198.18.1.1/24")])
    assert plugin_client("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {GENERIC: {"bridge_name": "br9"}},
        "IPv4Data": [{"Pool": "198.18.2.0/24", "Gateway": "198.18.2.1/24"}]})[0] == 200
    record = plugin_client.network.network(NID)
    assert record.bridge_created is False
    assert record.found_bridge == FoundLink(9000, True, ("198.18.1.1/24",), False)
    assert kernel.link("br9").mtu == 9000
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID})[0] == 200
    assert kernel.link("br9").mtu == 9000 and kernel.addresses["br9"] == {"198.18.1.1/24"}


def test_a_record_from_before_found_bridge_sets_no_mtu_on_a_users_bridge(plugin_client, fake_deps):
    kernel = fake_deps.netlink
    kernel.ensure_bridge("br9", 9000, [])
    net = NetworkRecord(id=NID, options=parse_network_options({GENERIC: {"bridge_name": "br9"}}),
                        bridge="br9", bridge_created=False, gateways=("198.18.2.1/24",),
                        subnets=("198.18.2.0/24",))
    kind = plugin_client.network.kinds["bridge"]
    kind.restore([net], {NID: []})
    assert kernel.link("br9").mtu == 9000


def test_a_bad_found_bridge_in_the_store_is_refused_naming_the_field():
    import pytest
    good = {"mtu": 9000, "up": True, "addresses": ["198.18.1.1/24"], "route_localnet": False}
    for bad, field in (({**good, "mtu": "9000"}, "mtu"), ({**good, "up": "yes"}, "up"),
                       ({**good, "addresses": ["198.18.1.300/24"]}, "addresses"), ([], "found_bridge")):
        with pytest.raises(ValueError, match=field):
            FoundLink.from_dict(bad)

"""Repair is whole (issue 17, item 7): the leak check releases an address together with the
endpoint record and the links that name it, or not at all. A container removed while pynet
was down left both; releasing the address alone made it free for a new container while a
record still named it (`pynet ipam check`: "unclaimed ... of endpoint ..."). The real
dockerd's side is tests/e2e/test_repair_whole.py."""
from __future__ import annotations

import ipaddress

import pytest

from ipam_driver.docker_addresses import DockerView
from ipam_driver.leaks import AddressLeakCheck
from pynet.ops.address_users import EndpointsNamingAddress
from pynet_core.store import keys
from tests.harness.app_client import app_client, fake_deps

SUBNET = "198.18.150.0/24"
NID, EID, OTHER_EID = "a" * 64, "e" * 64, "f" * 64
GRACE = 300.0


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def docker_view(*in_use: str) -> DockerView:
    """A dockerd that lists the pynet network on SUBNET completely, with these addresses."""
    pools = frozenset({ipaddress.ip_network(SUBNET)})
    return DockerView("unix:///run/docker.sock", frozenset(ipaddress.ip_address(a) for a in in_use),
                      pools, frozenset(), pools, pools, swarm="inactive")


@pytest.fixture
def bed():
    deps = fake_deps()
    client = app_client(deps, host_id="h1")
    status, answer = client("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": SUBNET})
    assert status == 200
    pool_id = answer["PoolID"]
    gw = client("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "",
                                              "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    assert gw[0] == 200
    assert client("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": SUBNET, "Gateway": gw[1]["Address"]}],
        "IPv6Data": []}) == (200, {})
    addresses = {}
    for eid in (EID, OTHER_EID):
        status, answer = client("IpamDriver.RequestAddress", {
            "PoolID": pool_id, "Address": "", "Options": {"com.docker.network.endpoint.name": eid[:8]}})
        assert status == 200
        addresses[eid] = answer["Address"]
        assert client("NetworkDriver.CreateEndpoint", {
            "NetworkID": NID, "EndpointID": eid, "Interface": {"Address": answer["Address"]},
            "Options": {}})[0] == 200
    return deps, client, addresses


def ip(text: str) -> str:
    return str(ipaddress.ip_interface(text).ip)


def claimed(deps) -> set[str]:
    return {keys.claimed_address(e.key) for e in deps.store.list(keys.ipam_addrs("LocalDefault", SUBNET))}


def check_for(deps, client, addresses, users) -> tuple[AddressLeakCheck, Clock]:
    clock = Clock()
    # The container of EID was removed while pynet was down: Docker lists only the other.
    gone_docker = docker_view(ip(addresses[OTHER_EID]), "198.18.150.1")
    return AddressLeakCheck(deps.store, "h1", lambda: gone_docker, client.ipam, grace=GRACE, clock=clock,
                     users=users), clock


def test_the_address_goes_with_the_endpoint_record_and_its_links(bed):
    deps, client, addresses = bed
    host_if = client.network.ledger.endpoint(NID, EID).host_if
    assert host_if in deps.netlink.state
    check, clock = check_for(deps, client, addresses, EndpointsNamingAddress(client.network))
    assert check.check_once() == []  # first seen: the grace starts
    clock.now += GRACE
    released = check.check_once()
    assert released == [keys.ipam_addr("LocalDefault", SUBNET, ip(addresses[EID]))]
    assert ip(addresses[EID]) not in claimed(deps)
    assert client.network.ledger.endpoint(NID, EID) is None      # the record went with it
    assert host_if not in deps.netlink.state                      # and its links
    assert client.network.ledger.endpoint(NID, OTHER_EID) is not None  # Docker's own: kept
    assert ip(addresses[OTHER_EID]) in claimed(deps)


def test_an_endpoint_that_cannot_be_removed_keeps_its_address(bed):
    deps, client, addresses = bed
    check, clock = check_for(deps, client, addresses,
                             EndpointsNamingAddress(client.network, refuse=lambda ep: "is the test's"))
    check.check_once()
    clock.now += GRACE
    assert check.check_once() == []
    assert ip(addresses[EID]) in claimed(deps)
    assert client.network.ledger.endpoint(NID, EID) is not None


def test_a_failed_link_removal_keeps_both(bed):
    deps, client, addresses = bed
    check, clock = check_for(deps, client, addresses, EndpointsNamingAddress(client.network))
    check.check_once()
    clock.now += GRACE
    deps.netlink.fail_on.add("remove_link")
    assert check.check_once() == []
    assert ip(addresses[EID]) in claimed(deps)
    ep = client.network.ledger.endpoint(NID, EID)
    assert ep is not None  # marked deleting: restore or the next DeleteEndpoint finishes it
    deps.netlink.fail_on.discard("remove_link")
    clock.now += GRACE
    check.check_once()  # changed (deleting): first seen again ...
    clock.now += GRACE
    assert len(check.check_once()) == 1 and client.network.ledger.endpoint(NID, EID) is None


def test_the_stale_record_check_and_the_leak_check_agree(bed):
    """The stale-record check removes the endpoint first (same evidence, same grace): the
    leak check then finds nothing naming the address and releases it."""
    from driver.leaks import DockerNetworks, NetworkLeakCheck
    deps, client, addresses = bed
    clock = Clock()
    stale = NetworkLeakCheck(client.network, lambda: DockerNetworks("engine-1", {NID: frozenset({OTHER_EID})}),
                       grace=GRACE, clock=clock)
    check, leak_clock = check_for(deps, client, addresses, EndpointsNamingAddress(client.network))
    stale.check_once(), check.check_once()
    clock.now += GRACE
    leak_clock.now += GRACE
    assert stale.check_once() == [f"endpoint {EID}"]
    assert len(check.check_once()) == 1
    assert client.network.ledger.endpoint(NID, EID) is None and ip(addresses[EID]) not in claimed(deps)

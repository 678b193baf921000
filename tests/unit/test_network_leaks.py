"""Networks and endpoints Docker abandoned are removed (found by the crash storm).

pynet killed after CreateNetwork did its work but before the answer reached Docker: Docker
retries with an empty body, gets a 400, fails `docker network create` and never sends
DeleteNetwork. The record stayed ready for good, with its bridge (and a custom bridge name
taken for ever); the same for an endpoint and its veth pair. driver/leaks.py removes them
once a dockerd proven to be this host's has not known them for the grace, and never
otherwise."""
from __future__ import annotations

from driver.leaks import DockerNetworks, NetworkLeakCheck
from pynet.app import Deps
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client

KEPT, LOST, EID, LOST_EID = "a" * 64, "b" * 64, "e" * 64, "f" * 64
GRACE = 60


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def world():
    deps = Deps(store=MemoryStore(), netlink=FakeNetlink(), firewall=RecordingFirewall())
    client = app_client(deps, host_id="h1")
    for nid, name, pool in ((KEPT, "kept0", "10.7.0"), (LOST, "lost0", "10.8.0")):
        assert client.call("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {"com.docker.network.generic": {"bridge_name": name}},
            "IPv4Data": [{"Pool": f"{pool}.0/24", "Gateway": f"{pool}.1/24"}]}) == (200, {})
    for eid, ip in ((EID, "10.7.0.2/24"), (LOST_EID, "10.7.0.3/24")):
        status, _ = client.call("NetworkDriver.CreateEndpoint", {
            "NetworkID": KEPT, "EndpointID": eid, "Interface": {"Address": ip}})
        assert status == 200
    return deps, client


def check(client, view, clock):
    return NetworkLeakCheck(client.network, lambda: view, grace=GRACE, clock=clock)


def test_a_network_and_an_endpoint_docker_abandoned_go_after_the_grace():
    deps, client = world()
    clock = Clock()
    docker = DockerNetworks("engine-1", {KEPT: frozenset({EID}), "c" * 64: frozenset()})
    stale = check(client, docker, clock)
    assert stale.check_once() == []
    clock.now += GRACE - 1
    assert stale.check_once() == []  # within the grace: a create may still be on its way
    assert {n.id for n in client.network.networks()} == {KEPT, LOST}
    clock.now += 2
    assert sorted(stale.check_once()) == [f"endpoint {LOST_EID}", f"network {LOST}"]
    assert {n.id for n in client.network.networks()} == {KEPT}
    assert [e.id for e in client.network.endpoints()] == [EID]
    assert deps.netlink.link("lost0") is None and deps.netlink.link("kept0") is not None
    assert deps.netlink.link("pnv" + LOST_EID[:12]) is None
    assert deps.netlink.link("pnv" + EID[:12]) is not None
    # The bridge name is free again.
    assert client.call("NetworkDriver.CreateNetwork", {
        "NetworkID": "d" * 64, "Options": {"com.docker.network.generic": {"bridge_name": "lost0"}},
        "IPv4Data": [{"Pool": "10.8.0.0/24", "Gateway": "10.8.0.1/24"}]}) == (200, {})


def test_a_dockerd_never_seen_knowing_this_hosts_networks_removes_nothing():
    deps, client = world()
    clock = Clock()
    empty = check(client, DockerNetworks("engine-2", {}), clock)  # another, empty dockerd
    for _ in range(3):
        assert empty.check_once() == []
        clock.now += GRACE
    assert {n.id for n in client.network.networks()} == {KEPT, LOST}
    # Once a dockerd proved it is this host's, that engine may judge even when it lists none
    # of them any more (the last network's answer lost), and after a restart too.
    check(client, DockerNetworks("engine-1", {KEPT: frozenset({EID, LOST_EID})}), clock).check_once()
    again = check(client, DockerNetworks("engine-1", {}), clock)
    assert again.check_once() == []
    clock.now += GRACE
    assert sorted(again.check_once()) == [f"network {KEPT}", f"network {LOST}"]
    assert client.network.networks() == [] and client.network.endpoints() == []


def test_nothing_is_judged_without_a_complete_answer():
    deps, client = world()
    clock = Clock()
    answers = [DockerNetworks("engine-1", {KEPT: None}), None]
    stale = NetworkLeakCheck(client.network, lambda: answers[0], grace=GRACE, clock=clock)
    stale.check_once()
    clock.now += GRACE + 1
    assert stale.check_once() == [f"network {LOST}"]  # the endpoints of an unread network stay
    assert {e.id for e in client.network.endpoints()} == {EID, LOST_EID}
    answers[0] = answers[1]  # dockerd away: the clock starts again
    assert stale.check_once() == []
    answers[0] = DockerNetworks("engine-1", {KEPT: frozenset({EID})})
    assert stale.check_once() == []
    clock.now += GRACE - 1
    assert stale.check_once() == []
    assert {e.id for e in client.network.endpoints()} == {EID, LOST_EID}

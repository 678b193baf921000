"""ProgramExternalConnectivity / RevokeExternalConnectivity through the plugin API, over the
strict RecordingFirewall: what is recorded, replays, conflicts, cleanup and restarts."""
from __future__ import annotations

import json

import pytest

from pynet_core.store import keys
from tests.fakes.firewall import FirewallMisuse
from tests.harness.app_client import app_client

NID, EID, EID2 = "a" * 64, "e" * 64, "f" * 64
PM = "com.docker.network.portmap"
TCP = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}


def setup_endpoint(call, eid=EID, address="10.1.0.2/24", generic=None, internal=False):
    call("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": generic or {},
                                      "com.docker.network.internal": internal},
        "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]})
    assert call("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": eid,
                                                 "Interface": {"Address": address}})[0] == 200
    assert call("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": eid, "SandboxKey": "/x",
                                       "Options": {}})[0] == 200


def program(call, portmap, eid=EID):
    return call("NetworkDriver.ProgramExternalConnectivity",
                {"NetworkID": NID, "EndpointID": eid, "Options": {PM: portmap}})


def recorded(deps, eid=EID):
    entry = deps.store.get(keys.endpoint("test-host", NID, eid))
    return json.loads(entry.value)["published"] if entry else None


def test_program_records_bindings_and_revoke_clears_them(plugin_client, fake_deps):
    setup_endpoint(plugin_client)
    assert program(plugin_client, [TCP, {**TCP, "Proto": 17, "HostPort": 0, "HostPortEnd": 0}]) == (200, {})
    assert recorded(fake_deps) == [
        {"proto": "tcp", "container_ip": "10.1.0.2", "container_port": 80, "host_ip": "0.0.0.0",
         "host_port": 8080, "host_port_start": 8080, "host_port_end": 8080},
        {"proto": "udp", "container_ip": "10.1.0.2", "container_port": 80, "host_ip": "0.0.0.0",
         "host_port": 49153, "host_port_start": 0, "host_port_end": 0}]
    assert [b.host_port for b in fake_deps.firewall.published[EID]] == [8080, 49153]
    # A replay with the same request changes nothing (the strict fake would refuse a second add).
    assert program(plugin_client, [TCP, {**TCP, "Proto": 17, "HostPort": 0, "HostPortEnd": 0}]) == (200, {})
    assert plugin_client("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert recorded(fake_deps) == [] and fake_deps.firewall.published == {}
    assert plugin_client("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert plugin_client("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NID, "EndpointID": "9" * 64}) == (200, {})


def test_a_different_request_replaces_the_old_ports(plugin_client, fake_deps):
    setup_endpoint(plugin_client)
    program(plugin_client, [TCP])
    assert program(plugin_client, [{**TCP, "HostPort": 9090, "HostPortEnd": 9090}]) == (200, {})
    assert [b["host_port"] for b in recorded(fake_deps)] == [9090]
    assert [b.host_port for b in fake_deps.firewall.published[EID]] == [9090]


def test_conflicting_host_port_fails_clearly_and_leaves_nothing(plugin_client, fake_deps):
    setup_endpoint(plugin_client)
    setup_endpoint(plugin_client, EID2, "10.1.0.3/24")
    program(plugin_client, [TCP])
    status, answer = program(plugin_client, [{**TCP, "Proto": 17}, {**TCP, "HostIP": "127.0.0.1"}], eid=EID2)
    assert status == 409 and "8080/tcp" in answer["Err"] and "in use" in answer["Err"]
    assert recorded(fake_deps, EID2) == [] and EID2 not in fake_deps.firewall.published
    # Something outside pynet holds a port: same answer.
    fake_deps.firewall.busy.add(("tcp", "0.0.0.0", 7000))
    status, answer = program(plugin_client, [{**TCP, "HostPort": 7000, "HostPortEnd": 7000}], eid=EID2)
    assert status == 409 and "7000" in answer["Err"]
    # A range moves on to the next free port.
    assert program(plugin_client, [{**TCP, "HostPort": 8080, "HostPortEnd": 8082}], eid=EID2) == (200, {})
    assert [b["host_port"] for b in recorded(fake_deps, EID2)] == [8081]


def test_bad_portmap_is_a_400(plugin_client, fake_deps):
    setup_endpoint(plugin_client)
    status, answer = program(plugin_client, [{**TCP, "Proto": 132}])
    assert status == 400 and "sctp" in answer["Err"]
    assert recorded(fake_deps) == []


def test_host_binding_ipv4_is_the_default_host_address(plugin_client, fake_deps):
    setup_endpoint(plugin_client, generic={"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"})
    program(plugin_client, [TCP])
    assert recorded(fake_deps)[0]["host_ip"] == "127.0.0.1"


def test_internal_network_publishes_nothing(plugin_client, fake_deps):
    setup_endpoint(plugin_client, internal=True)
    assert program(plugin_client, [TCP]) == (200, {})
    assert recorded(fake_deps) == [] and fake_deps.firewall.published == {}


def test_unknown_network_or_endpoint_is_an_error_but_never_404(plugin_client):
    # Docker takes a 404 from ProgramExternalConnectivity for "not supported" and would
    # start the container without its ports.
    status, answer = program(plugin_client, [TCP])
    assert status == 400 and "is not a pynet network" in answer["Err"]
    setup_endpoint(plugin_client)
    status, answer = program(plugin_client, [TCP], eid="9" * 64)
    assert status == 400 and "does not exist" in answer["Err"]


def test_delete_without_revoke_unpublishes_first(plugin_client, fake_deps):
    """Docker normally revokes before Leave; after a crash it may only delete. The strict
    fake refuses to drop a network's rules while its endpoints still publish ports."""
    setup_endpoint(plugin_client)
    program(plugin_client, [TCP])
    assert plugin_client("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert fake_deps.firewall.published == {}
    setup_endpoint(plugin_client, EID2, "10.1.0.3/24")
    program(plugin_client, [TCP], eid=EID2)
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})
    assert fake_deps.firewall.published == {} and fake_deps.firewall.networks == {}


def test_strict_fake_refuses_misuse(fake_deps):
    from driver.models import EndpointRecord, NetworkRecord
    from driver.options import NetworkOptions
    from driver.portmap import PortRequest
    fw = fake_deps.firewall
    net = NetworkRecord(NID, NetworkOptions(), "pn-x", True)
    ep = EndpointRecord(NID, EID, "h", "p", ("10.1.0.2/24",), "02:00:00:00:00:01")
    with pytest.raises(FirewallMisuse, match="has no rules"):
        fw.publish(net, ep, [])
    fw.network_added(net)
    fw.publish(net, ep, [PortRequest("tcp", 80, "0.0.0.0", 0, 0)])
    with pytest.raises(FirewallMisuse, match="published twice"):
        fw.publish(net, ep, [])
    with pytest.raises(FirewallMisuse, match="still have published ports"):
        fw.network_removed(net)


def test_restart_hands_recorded_ports_to_the_firewall(plugin_client, fake_deps):
    setup_endpoint(plugin_client)
    program(plugin_client, [{**TCP, "HostPort": 0, "HostPortEnd": 0}])
    before = fake_deps.firewall.published[EID]
    fake_deps.firewall.published, fake_deps.firewall.networks = {}, {}  # a new process knows nothing
    app_client(fake_deps)  # a new process: restore -> sync
    assert fake_deps.firewall.published == {EID: before} and set(fake_deps.firewall.networks) == {NID}
    # ...and a replay of the same request after the restart keeps the same port.
    assert program(plugin_client, [{**TCP, "HostPort": 0, "HostPortEnd": 0}]) == (200, {})
    assert fake_deps.firewall.published[EID] == before

"""What newer Docker Engines (26 to 29) send a remote driver, as wire bodies, and what pynet
does with each (read from moby's daemon/libnetwork/drivers/remote and ipams/remote at the
tags v26.1.5, v28.5.2 and docker-v29.0.0; docs/compatibility.md lists them)."""
from __future__ import annotations

import json

from driver.protocol import CreateNetwork, ProgramExternal
from ipam_driver.protocol import AddressRequest
from pynet_core.store import keys
from pynet_core.wire import Body

NID, EID = "a" * 64, "e" * 64
PM = "com.docker.network.portmap"
TCP = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}
POOL_ID = "LocalDefault/10.1.0.0/24"


def _body(data: dict) -> Body:
    return Body(json.dumps(data).encode())


def _create(call, options: dict, v4: list, v6: list):
    return call("NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": options,
                                                "IPv4Data": v4, "IPv6Data": v6})


def test_capabilities_do_not_ask_for_gw_alloc_check(plugin_client):
    status, caps = plugin_client("NetworkDriver.GetCapabilities")
    assert status == 200 and caps.get("GwAllocChecker", False) is False  # Go's zero value
    # So Docker 28+ never calls it; if something did, it is "not implemented", not a failure.
    assert plugin_client("NetworkDriver.GwAllocCheck", {"Options": {}})[0] == 404


def test_enable_ipv4_absent_true_and_false():
    # 20.10-27 send no enable_ipv4 (IPv4 is always on); 28+ always send it.
    old = CreateNetwork.decode(_body({"NetworkID": NID, "Options": {"com.docker.network.enable_ipv6": False},
                                     "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]}))
    assert old.options.ipv4 and not old.options.ipv6
    on = CreateNetwork.decode(_body({"NetworkID": NID, "Options": {"com.docker.network.enable_ipv4": True,
                                                                   "com.docker.network.enable_ipv6": False},
                                    "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]}))
    assert on.options.ipv4 and on.subnets == ("10.1.0.0/24",)


def test_ipv6_only_network_from_docker_28(plugin_client, fake_deps):
    """`docker network create --ipv4=false --ipv6`: no IPv4 RequestPool was made, and
    CreateNetwork's IPv4Data is empty (28.5 sends [], older clients could send null)."""
    opts = {"com.docker.network.enable_ipv4": False, "com.docker.network.enable_ipv6": True,
            "com.docker.network.generic": {}}
    v6 = [{"AddressSpace": "LocalDefault", "Pool": "fd00:1::/64", "Gateway": "fd00:1::1/64"}]
    req = CreateNetwork.decode(_body({"NetworkID": NID, "Options": opts, "IPv4Data": [], "IPv6Data": v6}))
    assert not req.options.ipv4 and req.options.ipv6
    assert req.subnets == ("fd00:1::/64",) and req.gateways == ("fd00:1::1/64",)
    assert _create(plugin_client, opts, [], v6) == (200, {})
    assert plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "", "AddressIPv6": "fd00:1::2/64"}})[0] == 200
    status, join = plugin_client("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID,
                                                        "SandboxKey": "/x", "Options": {}})
    assert status == 200 and "Gateway" not in join


def test_enable_ipv4_false_with_an_ipv4_pool_or_nothing_enabled_is_refused(plugin_client, fake_deps):
    v4 = [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]
    status, body = _create(plugin_client, {"com.docker.network.enable_ipv4": False,
                                           "com.docker.network.enable_ipv6": True}, v4, [])
    assert status == 400 and "enable_ipv4 is false" in body["Err"]
    status, body = _create(plugin_client, {"com.docker.network.enable_ipv4": False,
                                           "com.docker.network.enable_ipv6": False}, [], [])
    assert status == 400 and "both false" in body["Err"]
    assert fake_deps.store.get(keys.network("test-host", NID)) is None


def test_endpoint_name_in_request_address_from_docker_29():
    # 29 names the container's endpoint in every RequestAddress for it; 20.10-28 send no options.
    named = AddressRequest.decode(_body({"PoolID": POOL_ID, "Address": "",
                                        "Options": {"com.docker.network.endpoint.name": "web"}}))
    assert (named.kind, named.name) == ("endpoint", "web")
    for options in (None, {}):
        old = AddressRequest.decode(_body({"PoolID": POOL_ID, "Address": "", "Options": options}))
        assert (old.kind, old.name) == ("aux", "")
    gateway = AddressRequest.decode(_body({"PoolID": POOL_ID, "Address": "",
                                          "Options": {"RequestAddressType": "com.docker.network.gateway"}}))
    assert gateway.kind == "gateway"


def test_program_external_from_docker_29_carries_join_options_and_no_proxy_6to4():
    """29 sends the sandbox options it kept from Join, plus a private key when another
    endpoint is the IPv6 gateway; pynet reads only the port map."""
    body = _body({"NetworkID": NID, "EndpointID": EID, "Options": {
        PM: [TCP], "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
        "com.docker.network.driver.private.no_proxy_6to4": True}})
    req = ProgramExternal.decode(body)
    assert [(p.proto, p.container_port, p.host_port_start) for p in req.ports] == [("tcp", 80, 8080)]


def _endpoint_with_ports(call):
    call("NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": {"com.docker.network.generic": {}},
                                         "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]})
    assert call("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID,
                                                 "Interface": {"Address": "10.1.0.2/24"}})[0] == 200
    assert call("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/x",
                                       "Options": {PM: [TCP]}})[0] == 200
    assert call("NetworkDriver.ProgramExternalConnectivity",
                {"NetworkID": NID, "EndpointID": EID, "Options": {PM: [TCP]}}) == (200, {})


def _published(deps):
    return json.loads(deps.store.get(keys.endpoint("test-host", NID, EID)).value)["published"]


def test_leave_without_revoke_unpublishes(plugin_client, fake_deps):
    """Docker 29 after a daemon restart: Leave comes with no RevokeExternalConnectivity first."""
    _endpoint_with_ports(plugin_client)
    assert fake_deps.firewall.published[EID]
    assert plugin_client("NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert fake_deps.firewall.published == {} and _published(fake_deps) == []
    # A later Revoke (older engines send it before Leave) finds nothing to do.
    assert plugin_client("NetworkDriver.RevokeExternalConnectivity",
                         {"NetworkID": NID, "EndpointID": EID}) == (200, {})


def test_delete_endpoint_without_leave_or_revoke_unpublishes(plugin_client, fake_deps):
    _endpoint_with_ports(plugin_client)
    assert plugin_client("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert fake_deps.firewall.published == {}
    assert fake_deps.store.get(keys.endpoint("test-host", NID, EID)) is None


def test_endpoint_ifname_is_refused_naming_the_option(plugin_client, fake_deps):
    plugin_client("NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": {},
                                                  "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]})
    status, body = plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"},
        "Options": {"com.docker.network.endpoint.ifname": "lan0"}})
    assert status == 400 and "com.docker.network.endpoint.ifname" in body["Err"] and "lan0" in body["Err"]
    assert fake_deps.store.get(keys.endpoint("test-host", NID, EID)) is None

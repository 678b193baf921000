"""The plugin's HTTP contract with Docker, over in-memory fakes."""
import re
import pytest

NID = "a" * 64
EID = "e" * 64
GENERIC = "com.docker.network.generic"


def create_network(call, nid=NID, generic=None, gateway="10.1.0.1/24", pool="10.1.0.0/24"):
    return call("NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {GENERIC: generic or {}, "com.docker.network.enable_ipv6": False},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gateway}], "IPv6Data": []})


def test_activate_with_empty_body_and_no_content_type(plugin_client):
    assert plugin_client("Plugin.Activate") == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})


def test_capabilities(plugin_client):
    assert plugin_client("NetworkDriver.GetCapabilities") == (
        200, {"Scope": "local", "ConnectivityScope": "global"})
    status, caps = plugin_client("IpamDriver.GetCapabilities")
    assert status == 200 and caps["RequiresRequestReplay"] is False


def test_unimplemented_methods_answer_404_json(plugin_client):
    status, body = plugin_client("NetworkDriver.GwAllocCheck", {"Options": {}})
    assert status == 404 and "GwAllocCheck" in body["Err"]
    status, body = plugin_client("Nonsense.Call", {})
    assert status == 404 and body["Err"]


def test_malformed_json_is_a_clear_400(plugin_client, fake_deps):
    status, body = plugin_client("NetworkDriver.CreateNetwork", raw=b'{"NetworkID": ')
    assert status == 400 and "not valid JSON" in body["Err"] and body["Error"] == body["Err"]
    status, body = plugin_client("NetworkDriver.CreateNetwork", raw=b"[1, 2]")
    assert status == 400 and "JSON object" in body["Err"]
    assert fake_deps.netlink.state == {}


@pytest.mark.parametrize("body, fragment", [
    ({"NetworkID": 5}, "NetworkID"),
    ({"NetworkID": "../../etc"}, "NetworkID"),
    ({"NetworkID": NID, "Options": "x"}, "Options must be an object"),
    ({"NetworkID": NID, "IPv4Data": {"Pool": "x"}}, "IPv4Data must be a list"),
    ({"NetworkID": NID, "IPv4Data": [{"Pool": "nope", "Gateway": ""}]}, "not valid"),
    ({"NetworkID": NID, "Options": {GENERIC: {"mtu": "big"}}}, "'big'"),
    ({"NetworkID": NID, "Options": {GENERIC: {"vlan": "3"}}}, "unknown option 'vlan'"),
])
def test_bad_create_network_changes_nothing(plugin_client, fake_deps, body, fragment):
    status, answer = plugin_client("NetworkDriver.CreateNetwork", body)
    assert status == 400 and fragment in answer["Err"]
    assert fake_deps.netlink.state == {} and fake_deps.store.list("") == []


def test_network_lifecycle(plugin_client, fake_deps):
    kernel = fake_deps.netlink
    assert create_network(plugin_client, generic={"mtu": "1400"}) == (200, {})
    bridge = "pn-" + NID[:12]
    assert kernel.state[bridge].mtu == 1400 and kernel.addresses[bridge] == {"10.1.0.1/24"}
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}, "Options": {}})
    assert status == 200 and answer == {"Interface": {"MacAddress": "02:42:0a:01:00:02"}}
    host, peer = "pnv" + EID[:12], "pnc" + EID[:12]
    assert kernel.state[host].master == bridge and kernel.state[peer].mtu == 1400
    status, answer = plugin_client("NetworkDriver.Join", {
        "NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/x", "Options": {}})
    assert answer == {"InterfaceName": {"SrcName": peer, "DstPrefix": "eth"}, "Gateway": "10.1.0.1"}
    assert plugin_client("NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert plugin_client("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert plugin_client("NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID}) == (200, {})
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})
    assert kernel.state == {} and fake_deps.store.list("") == [] and fake_deps.firewall.networks == {}


def test_create_network_replay_is_idempotent(plugin_client, fake_deps):
    assert create_network(plugin_client) == (200, {})
    assert create_network(plugin_client) == (200, {})
    assert len(fake_deps.store.list("v1/hosts/test-host/networks/")) == 1


def test_mac_given_by_docker_is_used_and_not_echoed(plugin_client, fake_deps):
    create_network(plugin_client)
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID,
        "Interface": {"Address": "10.1.0.2/24", "MacAddress": "02:aa:bb:cc:dd:ee"}})
    assert (status, answer) == (200, {})
    assert fake_deps.netlink.state["pnc" + EID[:12]].mac == "02:aa:bb:cc:dd:ee"


def test_internal_network_joins_without_gateway(plugin_client):
    plugin_client("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.internal": True},
        "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]})
    plugin_client("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID,
                                                   "Interface": {"Address": "10.1.0.2/24"}})
    _, answer = plugin_client("NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/x"})
    assert "Gateway" not in answer


def test_endpoint_on_unknown_network_is_404_json(plugin_client):
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}})
    assert status == 404 and NID[:12] in answer["Err"]


def test_failure_mid_endpoint_rolls_back(plugin_client, fake_deps):
    create_network(plugin_client)
    before = dict(fake_deps.netlink.state)
    fake_deps.netlink.fail_on.add("add_veth")
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}})
    assert status == 500 and "injected failure" in answer["Err"]
    assert fake_deps.netlink.state == before
    assert fake_deps.store.list("v1/hosts/test-host/endpoints/") == []


def test_failure_in_firewall_removes_the_new_bridge(plugin_client, fake_deps):
    def broken(network):
        raise RuntimeError("nft exploded")
    fake_deps.firewall.network_added = broken
    status, answer = create_network(plugin_client)
    assert status == 500 and "nft exploded" in answer["Err"] and "Traceback" not in answer["Err"]
    assert fake_deps.netlink.state == {} and fake_deps.store.list("") == []


def test_bridge_name_clash_between_networks(plugin_client):
    create_network(plugin_client, generic={"com.docker.network.bridge.name": "br-apps"})
    status, answer = create_network(plugin_client, nid="b" * 64, pool="10.2.0.0/24",
                                    gateway="10.2.0.1/24", generic={"com.docker.network.bridge.name": "br-apps"})
    assert status == 409 and "br-apps" in answer["Err"]


def test_ipam_errors_carry_both_err_and_error(plugin_client):
    status, answer = plugin_client("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": "10.0.0.1/8"})
    assert status == 400 and "host bits" in answer["Err"] and answer["Error"] == answer["Err"]
    status, answer = plugin_client("IpamDriver.RequestAddress", {"PoolID": 7})
    assert status == 400 and "PoolID" in answer["Err"]


def test_ipam_round_trip(plugin_client):
    status, pool = plugin_client("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": "",
                                                            "SubPool": "", "Options": {}, "V6": False})
    assert status == 200 and pool["Pool"] == "10.192.0.0/24" and re.fullmatch(r"LocalDefault/10\.192\.0\.0/24@[0-9a-f]{16}", pool["PoolID"])
    status, addr = plugin_client("IpamDriver.RequestAddress", {
        "PoolID": pool["PoolID"], "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    assert addr == {"Address": "10.192.0.1/24", "Data": {}}
    assert plugin_client("IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": "10.192.0.1"}) == (200, {})
    assert plugin_client("IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]}) == (200, {})

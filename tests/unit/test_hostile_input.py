"""Input a hostile or broken client sends: every answer is JSON with Err, nothing changes,
and no value reaches a log line unescaped (issue 9, H and G)."""
from __future__ import annotations

import json
import logging

import pytest

NID, EID = "a" * 64, "e" * 64
GENERIC = "com.docker.network.generic"
METHODS = ["NetworkDriver.CreateNetwork", "NetworkDriver.DeleteNetwork",
           "NetworkDriver.CreateEndpoint", "NetworkDriver.DeleteEndpoint",
           "NetworkDriver.EndpointOperInfo", "NetworkDriver.Join", "NetworkDriver.Leave",
           "NetworkDriver.ProgramExternalConnectivity",
           "NetworkDriver.RevokeExternalConnectivity", "IpamDriver.RequestPool",
           "IpamDriver.ReleasePool", "IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress"]


def network(call, generic=None, nid=NID):
    return call("NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {GENERIC: generic or {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24",
                      "Gateway": "10.1.0.1/24"}], "IPv6Data": []})


def endpoint(call, interface, eid=EID):
    return call("NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": eid,
                                                 "Interface": interface, "Options": {}})


def nothing_changed(fake_deps, before_links, before_keys):
    return (set(fake_deps.netlink.state) == before_links
            and [e.key for e in fake_deps.store.list("")] == before_keys)


@pytest.mark.parametrize("method", METHODS)
def test_deep_json_is_a_json_400_on_every_method(plugin_client, method):
    status, answer = plugin_client(method, raw=b"[" * 5000 + b"]" * 5000)
    assert status == 400 and answer["Err"]
    status, answer = plugin_client(method, raw=b'{"a":' * 3000 + b"1" + b"}" * 3000)
    assert status == 400 and "nested too deeply" in answer["Err"]


def test_a_body_over_a_megabyte_is_refused_as_json(plugin_client):
    status, answer = plugin_client("NetworkDriver.CreateNetwork",
                                   raw=json.dumps({"NetworkID": "a" * (5 << 20)}).encode())
    assert status == 413 and "larger than" in answer["Err"]


def test_a_long_bad_id_does_not_come_back_whole(plugin_client):
    status, answer = plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": "/" * 500_000})
    assert status == 400 and len(answer["Err"]) < 300


def test_an_id_with_a_trailing_newline_is_refused(plugin_client, fake_deps):
    assert network(plugin_client) == (200, {})
    assert endpoint(plugin_client, {"Address": "10.1.0.2/24"}) == (
        200, {"Interface": {"MacAddress": "02:42:0a:01:00:02"}})
    links, keys = set(fake_deps.netlink.state), [e.key for e in fake_deps.store.list("")]
    # Same first 12 characters: kernel names would collide with the live endpoint's.
    status, answer = endpoint(plugin_client, {"Address": "10.1.0.3/24"}, eid=EID + "\n")
    assert status == 400 and "EndpointID" in answer["Err"]
    assert nothing_changed(fake_deps, links, keys)


@pytest.mark.parametrize("interface, fragment", [
    ({"Address": "10.1.0.2/24", "MacAddress": "zz:zz"}, "MacAddress"),
    ({"Address": "10.1.0.2/24", "MacAddress": ["x"]}, "MacAddress"),
    ({"Address": "fd00::2/64"}, "not an IPv4 address"),
    ({"AddressIPv6": "10.1.0.2/24"}, "not an IPv6 address"),
    ({"Address": 7}, "Interface.Address"),
])
def test_bad_interface_fields_are_400s_that_change_nothing(plugin_client, fake_deps, interface, fragment):
    network(plugin_client)
    links, keys = set(fake_deps.netlink.state), [e.key for e in fake_deps.store.list("")]
    status, answer = endpoint(plugin_client, interface)
    assert status == 400 and fragment in answer["Err"]
    assert nothing_changed(fake_deps, links, keys)


def test_a_list_as_portmap_proto_is_a_400(plugin_client):
    network(plugin_client)
    endpoint(plugin_client, {"Address": "10.1.0.2/24"})
    status, answer = plugin_client("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": [
            {"Proto": [6], "Port": 80, "HostPort": 8080}]}})
    assert status == 400 and "Proto" in answer["Err"]


def test_a_lone_surrogate_is_a_400(plugin_client, fake_deps):
    status, answer = plugin_client("IpamDriver.RequestPool",
                                   raw=b'{"AddressSpace": "LocalDefault", "Pool": "\\ud800"}')
    assert status == 400 and "not valid Unicode" in answer["Err"]
    assert fake_deps.store.list("") == []


@pytest.mark.parametrize("name", ["br0\n", "x:y", "all", "default", "a b", "a/b"])
def test_bad_bridge_names_are_400s(plugin_client, fake_deps, name):
    status, answer = network(plugin_client, {"bridge_name": name})
    assert status == 400 and "interface name" in answer["Err"]
    assert fake_deps.netlink.state == {} and fake_deps.store.list("") == []


def test_request_values_cannot_forge_log_lines(plugin_client, caplog):
    with caplog.at_level(logging.INFO, logger="pynet"):
        plugin_client("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault",
                                                 "Pool": "10.0.0.0/24\n2026-01-01 FORGED"})
        plugin_client("NetworkDriver.No\nSuch", {})
    lines = [r.getMessage() for r in caplog.records if r.name == "pynet"]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert any("FORGED" in line for line in lines)


def test_a_repeated_join_keeps_the_moved_interface(plugin_client, fake_deps):
    kernel = fake_deps.netlink
    network(plugin_client)
    endpoint(plugin_client, {"Address": "10.1.0.2/24"})
    join = {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/c1"}
    assert plugin_client("NetworkDriver.Join", join)[0] == 200
    host_if, peer = "pnv" + EID[:12], "pnc" + EID[:12]
    del kernel.state[peer]  # Docker moved the container end into the sandbox
    assert plugin_client("NetworkDriver.Join", join)[0] == 200
    assert host_if in kernel.state and kernel.peers[host_if] == peer
    assert peer not in kernel.state  # not re-made: the container's interface is that one


def test_concurrent_creates_with_one_bridge_name_make_one_network(fake_deps):
    """Six CreateNetwork calls naming the same bridge at once: one wins, five are refused,
    and deleting the winner leaves no other network without its bridge (issue 9, D)."""
    import concurrent.futures

    from tests.harness.app_client import AppClient, app_client

    app = app_client(fake_deps).app

    def create(i: int):
        nid = f"{i}" * 64
        status, answer = AppClient(app).call("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {GENERIC: {"bridge_name": "shared0"}},
            "IPv4Data": [{"Pool": f"10.{i}.0.0/24", "Gateway": f"10.{i}.0.1/24"}]})
        return nid, status, answer

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(1, 7)))
    winners = [nid for nid, status, _ in results if status == 200]
    assert len(winners) == 1, results
    assert all("already used by pynet network" in answer["Err"]
               for _, status, answer in results if status != 200)
    assert len(fake_deps.store.list("v1/hosts/test-host/networks/")) == 1
    assert AppClient(app).call("NetworkDriver.DeleteNetwork", {"NetworkID": winners[0]})[0] == 200
    assert fake_deps.store.list("v1/hosts/test-host/networks/") == []


def test_create_endpoint_remakes_a_lost_bridge_and_clears_a_leftover_pair(plugin_client, fake_deps):
    """CreateEndpoint is one add in the common case; a bridge deleted by hand is made again,
    and a pair left by an interrupted earlier attempt is removed first, only when needed."""
    kernel = fake_deps.netlink
    network(plugin_client)
    bridge = f"pn-{NID[:12]}"
    del kernel.state[bridge]  # deleted by hand while the plugin ran
    assert endpoint(plugin_client, {"Address": "10.1.0.2/24"})[0] == 200
    assert kernel.state[bridge].kind == "bridge" and kernel.state["pnv" + EID[:12]].master == bridge
    # A leftover pair of an attempt whose record is gone: removed, and the pair made anew.
    other = "f" * 64
    kernel.add_veth("pnv" + other[:12], "pnc" + other[:12], 1500, bridge, None)
    assert endpoint(plugin_client, {"Address": "10.1.0.3/24"}, eid=other)[0] == 200
    assert kernel.peers["pnv" + other[:12]] == "pnc" + other[:12]


def test_nesting_is_limited_by_pynet_not_by_the_python_version():
    """Python 3.13 (Debian 13) parses thousands of levels where 3.11 raised RecursionError:
    the limit is pynet's own, the same on both."""
    from pynet_core.errors import BadRequest
    from pynet_core.wire import MAX_DEPTH, Body

    def nested(levels):
        return ('{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)).encode()

    assert Body(nested(MAX_DEPTH)).data
    with pytest.raises(BadRequest, match=f"nested too deeply .*more than {MAX_DEPTH} levels"):
        Body(nested(MAX_DEPTH + 1))
    with pytest.raises(BadRequest, match="nested too deeply"):
        Body(b'{"a":' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}")

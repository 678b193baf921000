"""Defects the fuzz tier (tests/fuzz) found, each pinned by the request that showed it
(issue 9, H): no answer but JSON, no answer echoing a large value, and no request that
takes over or deletes the links of a live network or endpoint."""
from __future__ import annotations

import json
import logging

import pytest

NID, EID = "a1" * 32, "e1" * 32
GENERIC = "com.docker.network.generic"
BRIDGE, HOST_VETH, PEER = "pn-" + NID[:12], "pnv" + EID[:12], "pnc" + EID[:12]


def network(call, nid=NID, pool="10.250.0.0/24", gateway="10.250.0.1/24", **generic):
    return call("NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {GENERIC: generic},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gateway}],
        "IPv6Data": []})


def endpoint(call, nid=NID, eid=EID, address="10.250.0.2/24"):
    return call("NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid,
                                                 "Interface": {"Address": address},
                                                 "Options": {}})


@pytest.fixture
def live(plugin_client, fake_deps):
    """A bridge network with one container-less endpoint, like the fuzzer's live objects."""
    assert network(plugin_client) == (200, {})
    assert endpoint(plugin_client)[0] == 200
    kernel = fake_deps.netlink
    before = {name: kernel.state[name] for name in (BRIDGE, HOST_VETH, PEER)}
    return lambda: {name: kernel.state.get(name) for name in before} == before


def test_an_endpoint_id_beginning_like_a_live_one_is_refused(plugin_client, fake_deps, live):
    # Fuzz seed 1, request #161: CreateEndpoint on another network with EndpointID
    # "e1e1e1e1e1e1fff…" removed the live endpoint's veth pnve1e1e1e1e1e1 (taken for a
    # leftover) and made one of the same name on the other bridge.
    assert network(plugin_client, nid="5" * 64, pool="10.251.5.0/24", gateway="10.251.5.1/24") == (200, {})
    status, answer = endpoint(plugin_client, nid="5" * 64, eid=EID[:12] + "f" * 52,
                              address="10.251.5.35/24")
    assert status == 409 and "same 12 characters" in answer["Err"] and EID[:12] in answer["Err"]
    assert live()
    assert len(fake_deps.store.list("v1/hosts/test-host/endpoints/")) == 1


def test_one_endpoint_id_on_a_second_network_is_refused(plugin_client, fake_deps, live):
    assert network(plugin_client, nid="5" * 64, pool="10.251.5.0/24", gateway="10.251.5.1/24") == (200, {})
    status, answer = endpoint(plugin_client, nid="5" * 64, eid=EID, address="10.251.5.35/24")
    assert status == 409 and "on network a1a1a1a1a1a1" in answer["Err"]
    assert live()


def test_a_macvlan_network_id_beginning_like_a_live_one_cannot_take_its_bridge(
        plugin_client, fake_deps, live):
    # A parent-less macvlan network makes its own bridge pn-<12 characters of its ID>: with
    # the live network's first 12 characters it adopted the live bridge as its own, and
    # its DeleteNetwork then removed it.
    twin = NID[:12] + "0" * 52
    status, answer = network(plugin_client, nid=twin, pool="10.251.1.0/24",
                             gateway="10.251.1.1/24", type="macvlan")
    assert status == 409 and "same 12 characters" in answer["Err"]
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": twin}) == (200, {})
    assert live()


def test_a_macvlan_network_named_like_an_endpoint_leaves_its_link_alone(
        plugin_client, fake_deps, live):
    # The macvlan CreateNetwork test link was named pnc<12 characters of the network ID>,
    # the name of an endpoint's container end: NetworkID = a live EndpointID removed it.
    status, _ = network(plugin_client, nid=EID, pool="10.251.1.0/24", gateway="10.251.1.1/24",
                        type="macvlan")
    assert status == 200
    assert live()
    assert "pnp" + EID[:12] not in fake_deps.netlink.state  # the test link is gone again


@pytest.mark.parametrize("method, body", [
    # Fuzz seed 1, #28: an 800 kB answer to a 400 kB Address.
    ("IpamDriver.ReleaseAddress", {"PoolID": "LocalDefault/10.251.2.0/24", "Address": "x" * 400_000}),
    # Fuzz seed 1, #68: PoolID echoed whole.
    ("IpamDriver.ReleasePool", {"PoolID": "x" * 5000}),
    # Fuzz seed 1, #46: a portmap entry echoed whole, its 70 kB HostPortEnd included.
    ("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NID, "EndpointID": EID, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 53, "HostPort": 20046, "HostPortEnd": "x" * 70_000}]}}),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": {GENERIC: {"type": "t" * 9000}}}),
])
def test_a_failure_never_echoes_a_large_value_back(plugin_client, method, body, live):
    status, answer = plugin_client(method, body)
    assert status == 400 and answer["Err"] == answer["Error"]
    assert len(answer["Err"]) < 1100
    assert live()


def test_a_network_type_that_is_not_a_string_is_named_in_the_answer(plugin_client):
    status, answer = network(plugin_client, type=["bridge"], bridge_name="x:y")
    assert status == 400 and answer["Err"] == "option type: expected a string value, got ['bridge']"


@pytest.mark.parametrize("verb", ["OPTIONS", "GET", "PUT", "DELETE"])
def test_every_http_method_but_post_is_a_json_404(fake_deps, verb):
    # Fuzz seed 1, #805: OPTIONS got Flask's automatic answer, an empty text/html 200.
    from pynet.app import create_app
    from pynet.settings import Settings

    client = create_app(Settings(host_id="test-host"), fake_deps).test_client()
    resp = client.open("/NetworkDriver.CreateNetwork", method=verb, data=b"{}")
    assert resp.status_code == 404
    assert resp.content_type == "application/vnd.docker.plugins.v1+json"
    assert "does not implement" in json.loads(resp.data)["Err"]


class _Client:
    def __init__(self):
        self.sent = b""

    def sendall(self, data):
        self.sent += data


@pytest.mark.parametrize("exc, status", [
    # Fuzz seed 1, #244: POST /NetworkDriver.é got gunicorn's HTML "Bad Request" page.
    ("InvalidRequestLine", 400), ("LimitRequestLine", 414), ("InvalidHeader", 400),
])
def test_requests_gunicorn_cannot_parse_get_a_json_answer(exc, status):
    from gunicorn.http import errors

    from pynet.cli import json_error_worker

    worker = json_error_worker().__new__(json_error_worker())
    worker.log = logging.getLogger("test.gunicorn")
    error = {"InvalidRequestLine": lambda: errors.InvalidRequestLine("POST /NetworkDriver.\xc3\xa9 HTTP/1.1"),
             "LimitRequestLine": lambda: errors.LimitRequestLine(5015, 4094),
             "InvalidHeader": lambda: errors.InvalidHeader("Bad Header")}[exc]()
    client = _Client()
    worker.handle_error(None, client, None, error)
    head, _, body = client.sent.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} ")
    assert "Content-Type: application/vnd.docker.plugins.v1+json" in lines
    answer = json.loads(body)
    assert answer["Err"].startswith("pynet could not read the request") and answer["Err"] == answer["Error"]
    assert f"Content-Length: {len(body)}" in lines

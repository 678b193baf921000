"""pynet serve --dns-addr wires the DNS server into the plugin process (pynet/app.py): a
container of a pynet bridge network is answered by name, asked from another of its local
addresses (as a container asks from its docker0 or docker_gwbridge address); without
--dns-addr nothing of it runs (issue 21 item 2). Loopback only; the upstream is a fake."""
from __future__ import annotations

import socket
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from driver.names.server import _bind_pair
from pynet.app import Deps
from pynet.settings import Settings
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client

NID, EID, CID = "a" * 64, "e" * 64, "c" * 64
OTHER_EID, OTHER_CID = "f" * 64, "d" * 64


class FakeDocker:
    def __init__(self) -> None:
        self.containers: list[dict] = []

    def read(self):
        return list(self.containers), {}

    def follow(self, stop, changed):
        self.changed = changed
        stop.wait()


def running(cid: str, name: str, eid: str, ip: str, docker0: str, aliases=()) -> dict:
    return {"Id": cid, "Names": [f"/{name}"], "NetworkSettings": {"Networks": {
        "appnet": {"NetworkID": NID, "EndpointID": eid, "IPAddress": ip, "Aliases": list(aliases)},
        "bridge": {"NetworkID": "b" * 64, "EndpointID": "9" * 64, "IPAddress": docker0}}}}


def make_app(dns: bool):
    docker = FakeDocker()
    deps = Deps(store=MemoryStore(), netlink=FakeNetlink(), firewall=RecordingFirewall(),
                containers=docker)
    settings = Settings(host_id="h1", leak_check_interval=0,
                        dns_addrs=(("127.0.0.1", 0),) if dns else (),
                        dns_upstreams=() if dns else None)  # nothing to forward to: SERVFAIL
    return app_client(deps, settings=settings), docker


def wait(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_serve_with_dns_addr_answers_a_containers_name_to_a_container_of_its_network():
    client, docker = make_app(dns=True)
    background = client.services["background"]
    try:
        (server,) = [d for d in background.dns if hasattr(d, "addresses")]
        host, port = server.addresses[0]
        assert client("NetworkDriver.CreateNetwork", {
            "NetworkID": NID, "Options": {"com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24",
                          "Gateway": "10.1.0.1/24"}], "IPv6Data": []})[0] == 200
        for eid, address in ((EID, "10.1.0.2/24"), (OTHER_EID, "10.1.0.3/24")):
            assert client("NetworkDriver.CreateEndpoint", {
                "NetworkID": NID, "EndpointID": eid, "Interface": {"Address": address},
                "Options": {}})[0] == 200
        docker.containers = [running(CID, "web", EID, "10.1.0.2", "127.0.0.21", ["svc"]),
                             running(OTHER_CID, "client", OTHER_EID, "10.1.0.3", "127.0.0.22")]
        docker.changed()  # what dockerd's `start` event does

        def ask(name):
            query = dns.message.make_query(name, "A")
            return dns.query.udp(query, host, port=port, timeout=2, source="127.0.0.22")

        wait(lambda: ask("svc").answer)
        assert [r.address for r in ask("svc").answer[0]] == ["10.1.0.2"]
        assert [r.address for r in ask("web.appnet").answer[0]] == ["10.1.0.2"]
        assert client.deps.store.get(keys.name_record("h1", EID)) is not None
        # The container goes: so does its name, and its record.
        docker.containers = docker.containers[1:]
        docker.changed()
        wait(lambda: not ask("svc").answer)
        assert client.deps.store.get(keys.name_record("h1", EID)) is None
    finally:
        background.stop()


def test_without_dns_addr_nothing_of_it_runs():
    client, docker = make_app(dns=False)
    background = client.services["background"]
    try:
        assert background.dns == []
        assert not hasattr(docker, "changed")
    finally:
        background.stop()


def test_the_server_binds_an_address_the_host_does_not_have_yet():
    """docker_gwbridge's gateway exists only once dockerd first needs the bridge."""
    from pathlib import Path
    if Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() == "0":
        with pytest.raises(OSError):  # (a host with ip_nonlocal_bind=1 binds it anyway)
            _bind_pair("192.0.2.77", 0)
    udp, tcp = _bind_pair("192.0.2.77", 0, freebind=True)
    try:
        assert udp.getsockname()[0] == "192.0.2.77" and tcp.type == socket.SOCK_STREAM
    finally:
        udp.close()
        tcp.close()


def test_the_servers_counters_and_names_are_metrics_while_it_runs():
    from prometheus_client import generate_latest

    from pynet.metrics import REGISTRY
    client, docker = make_app(dns=True)
    background = client.services["background"]
    try:
        (server,) = [d for d in background.dns if hasattr(d, "addresses")]
        host, port = server.addresses[0]
        dns.query.udp(dns.message.make_query("x.example", "A"), host, port=port, timeout=2,
                      source="127.0.0.23")  # loopback, nothing to forward to: SERVFAIL
        text = generate_latest(REGISTRY).decode()
        assert 'pynet_dns_queries_total{outcome="servfail"} 1.0' in text
        assert "pynet_dns_records 0.0" in text
    finally:
        background.stop()
    assert "pynet_dns_queries" not in generate_latest(REGISTRY).decode()


def test_a_pynet_started_without_dns_addr_retires_the_names_an_earlier_run_stored():
    from dataclasses import replace

    from driver.names.records import NameEntry, NetworkIdentity, dump
    store = MemoryStore()
    mine = NameEntry("h1", EID, CID, "web", NetworkIdentity("overlay", space="LocalDefault",
                                                             subnet="10.77.0.0/24"), "", (), "10.77.0.2")
    store.create(keys.name_record("h1", EID), dump(mine))
    store.create(keys.name_record("h2", EID), dump(replace(mine, host="h2")))
    deps = Deps(store=store, netlink=FakeNetlink(), firewall=RecordingFirewall())
    client = app_client(deps, settings=Settings(host_id="h1", leak_check_interval=0))
    try:
        wait(lambda: store.get(keys.name_record("h1", EID)) is None)
        assert store.get(keys.name_record("h2", EID)) is not None  # another host's: its own
    finally:
        client.services["background"].stop()

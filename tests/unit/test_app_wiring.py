"""The composition root (pynet/app.py) wires the background jobs, not the CLI: the leak check
runs against the Docker source it is given."""
from __future__ import annotations

import ipaddress
import time

from ipam_driver.docker_addresses import DockerView
from pynet.app import Deps
from pynet.settings import Settings
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client

POOL = "10.9.0.0/24"


def _knows_pool(*addresses) -> DockerView:
    """A dockerd with one pynet network on POOL, using `addresses`."""
    pools = frozenset({ipaddress.ip_network(POOL)})
    return DockerView("unix:///fake.sock", frozenset(addresses), pools, frozenset(), pools, pools)


def _app(docker_addresses, interval: float = 0.02):
    deps = Deps(store=MemoryStore(), netlink=FakeNetlink(), firewall=RecordingFirewall(),
                docker_addresses=docker_addresses)
    # leak_grace 0: a claim Docker does not list is released at the first check.
    settings = Settings(host_id="h1", leak_check_interval=interval, leak_grace=0.0)
    client = app_client(deps, settings=settings)
    app = client.app

    def call(method: str, body: dict) -> dict:
        status, answer = client.call(method, body)
        assert status == 200, answer
        return answer

    pool_id = call("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": POOL})["PoolID"]
    address = call("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": {}})
    key = keys.ipam_addr("LocalDefault", POOL, address["Address"].split("/")[0])
    return app, deps.store, key


def _wait_until(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_create_app_starts_the_leak_check_against_its_docker_source():
    asked = []

    def docker_knows_the_network_not_the_address():
        asked.append(time.monotonic())
        return _knows_pool()

    app, store, key = _app(docker_knows_the_network_not_the_address)
    background = app.extensions["pynet"]["background"]
    try:
        assert len(background.stops) == 1
        assert _wait_until(lambda: store.get(key) is None), "the leak check never released the claim"
        assert asked, "the leak check never asked its Docker source"
    finally:
        background.stop()


def test_an_address_docker_lists_is_kept():
    seen: list[float] = []
    holder: dict = {}

    def docker_lists_it():
        seen.append(time.monotonic())
        return _knows_pool(ipaddress.ip_address(holder["key"].rsplit("/", 1)[1])) if "key" in holder else None

    app, store, key = _app(docker_lists_it)
    holder["key"] = key
    background = app.extensions["pynet"]["background"]
    try:
        assert _wait_until(lambda: len(seen) >= 5), "the leak check did not run repeatedly"
        assert store.get(key) is not None
    finally:
        background.stop()


def test_no_docker_source_means_no_leak_check():
    app, store, key = _app(None)
    assert app.extensions["pynet"]["background"].stops == []


def test_every_implemented_type_has_a_kind_and_no_more():
    from driver.kinds import build_kinds
    from driver.options import IMPLEMENTED_TYPES
    from driver.kinds.overlay.runtime import OverlayRuntime, OverlaySettings
    netlink = FakeNetlink()
    runtime = OverlayRuntime(MemoryStore(), "h1", netlink, OverlaySettings(shared_store=True))
    assert sorted(build_kinds(netlink, RecordingFirewall(), runtime)) == sorted(IMPLEMENTED_TYPES)


def test_restore_hands_back_the_memory_it_freed(monkeypatch):
    """Restore runs first, then the freed heap goes back to the system (glibc malloc_trim);
    a failing restore propagates before any of that (the gate retries it)."""
    import pynet.app as app
    calls = []
    monkeypatch.setattr(app, "restore", lambda network, netlink: calls.append((network, netlink)))
    app._restore_and_return_memory("net", "nl")
    assert calls == [("net", "nl")]

    def failing(network, netlink):
        raise RuntimeError("kernel refused")
    monkeypatch.setattr(app, "restore", failing)
    try:
        app._restore_and_return_memory("net", "nl")
    except RuntimeError as exc:
        assert str(exc) == "kernel refused"
    else:
        raise AssertionError("a failed restore must propagate")

"""kill -9 inside DeleteNetwork never leaves the network's name key behind (issue 17, item 5).

The name key (v1/hosts/<host>/names/network/<12 ID characters>) is what refuses a second
network whose ID begins alike. Left without its record, it refused the same NetworkID, which
Swarm nodes reuse, with 409 for good. Now the record and its names go in one transaction,
restore releases a name whose record is gone (left by an older pynet), and CreateNetwork
releases such a name of its own ID.

The crash is injected at every store write DeleteNetwork makes: the plugin "dies" there (an
exception nothing catches), a new plugin starts on the same store and kernel (restore), and
the same NetworkID is created again.
"""
from __future__ import annotations

import pytest

from driver.protocol import NetworkCall
from pynet.app import Deps
from pynet_core.store import keys
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import app_client

HOST = "test-host"
NID = "c0ffee" * 10 + "abcd"
GENERIC = "com.docker.network.generic"


class Killed(BaseException):
    """kill -9: nothing in pynet catches it, nothing after it runs."""


class CrashingStore:
    """The store, with a crash injected before the Nth write from the moment it is armed."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.countdown: int | None = None
        self.writes = 0

    def arm(self, writes_before_crash: int) -> None:
        self.countdown = writes_before_crash
        self.writes = 0

    def _write(self) -> None:
        if self.countdown is None:
            return
        if self.writes == self.countdown:
            raise Killed()
        self.writes += 1

    def get(self, key):
        return self.inner.get(key)

    def list(self, prefix):
        return self.inner.list(prefix)

    def watch(self, prefix, since, timeout):
        return self.inner.watch(prefix, since, timeout)

    def create(self, key, value):
        self._write()
        return self.inner.create(key, value)

    def cas(self, key, value, version):
        self._write()
        return self.inner.cas(key, value, version)

    def delete(self, key, version=None):
        self._write()
        return self.inner.delete(key, version)

    def transaction(self, ops):
        self._write()
        return self.inner.transaction(ops)

    def close(self):
        pass


def create_network(client, nid=NID):
    return client("NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {GENERIC: {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "198.18.140.0/24",
                      "Gateway": "198.18.140.1/24"}], "IPv6Data": []})


def names(store) -> list[str]:
    return [e.key for e in store.list(keys.host_names(HOST))]


def writes_of_a_delete_network() -> int:
    store = CrashingStore(MemoryStore())
    client = app_client(Deps(store, FakeNetlink(), RecordingFirewall()), host_id=HOST)
    assert create_network(client) == (200, {})
    store.arm(10 ** 6)
    client.network.delete_network(NetworkCall(NID))
    return store.writes


@pytest.mark.parametrize("crash_at", range(writes_of_a_delete_network() + 1))
def test_a_crash_anywhere_in_delete_network_never_keeps_the_network_id_from_coming_back(crash_at):
    store, netlink, firewall = CrashingStore(MemoryStore()), FakeNetlink(), RecordingFirewall()
    client = app_client(Deps(store, netlink, firewall), host_id=HOST)
    assert create_network(client) == (200, {})
    store.arm(crash_at)
    try:
        client.network.delete_network(NetworkCall(NID))
    except Killed:
        pass
    store.countdown = None
    # A new plugin on the same store and kernel: restore finishes what the crash left.
    restarted = app_client(Deps(store, netlink, firewall), host_id=HOST)
    restarted.gate.ensure()  # restore has run
    # Docker repeats DeleteNetwork (or never got the answer): nothing is left either way.
    assert restarted("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})
    assert names(store) == [] and store.list(keys.networks(HOST)) == []
    # Swarm nodes reuse the NetworkID: the same ID is made again.
    assert create_network(restarted) == (200, {})
    assert names(store) == [keys.host_name(HOST, "bridge", f"pn-{NID[:12]}"),
                            keys.host_name(HOST, "network", NID[:12])]


def test_restore_releases_a_name_an_older_pynet_left_without_its_record():
    """The state an older pynet (record and names deleted one after the other) left when
    killed between the two: restore releases the names, the NetworkID works again."""
    deps = Deps(MemoryStore(), FakeNetlink(), RecordingFirewall())
    client = app_client(deps, host_id=HOST)
    assert create_network(client) == (200, {})
    deps.store.delete(keys.network(HOST, NID))  # the record went; the kill came before its names
    assert len(names(deps.store)) == 2
    restarted = app_client(Deps(deps.store, deps.netlink, deps.firewall), host_id=HOST)
    restarted.gate.ensure()  # restore has run
    assert names(deps.store) == []
    assert create_network(restarted) == (200, {})


def test_create_network_releases_a_name_of_its_own_id_left_without_its_record():
    deps = Deps(MemoryStore(), FakeNetlink(), RecordingFirewall())
    client = app_client(deps, host_id=HOST)
    assert create_network(client) == (200, {})
    deps.store.delete(keys.network(HOST, NID))
    deps.netlink.remove_link(f"pn-{NID[:12]}")
    assert create_network(client) == (200, {})  # no restart: CreateNetwork itself finishes it


def test_a_name_held_by_another_live_network_still_refuses():
    deps = Deps(MemoryStore(), FakeNetlink(), RecordingFirewall())
    client = app_client(deps, host_id=HOST)
    assert create_network(client) == (200, {})
    other = NID[:12] + "f" * 52
    status, answer = client("NetworkDriver.CreateNetwork", {
        "NetworkID": other, "Options": {GENERIC: {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "198.18.141.0/24",
                      "Gateway": "198.18.141.1/24"}], "IPv6Data": []})
    assert status == 409 and "pynet network c0ffeec0ffee" in answer["Err"]

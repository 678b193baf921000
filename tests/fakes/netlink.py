"""A strict in-memory kernel for unit tests: refuses what the kernel refuses.

Only for fast tests of service logic; tests/kernel proves the real Pyroute2Netlink.
"""
from __future__ import annotations

from dataclasses import replace

from driver.errors import BadRequest, Conflict, PynetError
from driver.netlink.api import Link


class InjectedFailure(PynetError):
    status = 500


class FakeNetlink:
    def __init__(self, routes=None) -> None:
        self.state: dict[str, Link] = {}
        self.addresses: dict[str, set[str]] = {}
        self.peers: dict[str, str] = {}
        self._routes = list(routes or [])
        self.fail_on: set[str] = set()  # method names that raise, to test rollback

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail_on:
            raise InjectedFailure(f"injected failure in {method}")

    def link(self, name):
        return self.state.get(name)

    def links(self):
        return list(self.state.values())

    def routes(self):
        return list(self._routes)

    def ensure_bridge(self, name, mtu, addresses):
        self._maybe_fail("ensure_bridge")
        existing = self.state.get(name)
        if existing and existing.kind != "bridge":
            raise Conflict(f"interface {name} exists and is not a bridge")
        created = existing is None
        self.state[name] = Link(name, "bridge", True, mtu, None, None, "02:00:00:00:00:01")
        self.addresses.setdefault(name, set()).update(str(a) for a in addresses)
        return created

    def add_veth(self, host, peer, mtu, master, peer_mac):
        self._maybe_fail("add_veth")
        if host in self.state or peer in self.state:
            raise Conflict(f"interface {host} or {peer} already exists")
        if master not in self.state:
            raise BadRequest(f"interface {master} does not exist on this host")
        self.state[host] = Link(host, "veth", True, mtu, master, None, "02:00:00:00:00:02")
        self.state[peer] = Link(peer, "veth", False, mtu, None, None, peer_mac or "02:00:00:00:00:03")
        self.peers[host], self.peers[peer] = peer, host

    def ensure_port(self, name, master):
        if name not in self.state or master not in self.state:
            raise BadRequest("no such interface")
        self.state[name] = replace(self.state[name], master=master, up=True)

    def add_macvlan(self, name, parent, mode, mtu, mac):
        self._maybe_fail("add_macvlan")
        if parent not in self.state:
            raise BadRequest(f"interface {parent} does not exist on this host")
        if name in self.state:
            raise Conflict(f"interface {name} already exists")
        self.state[name] = Link(name, "macvlan", False, mtu, None, parent, mac or "02:00:00:00:00:04")

    def remove_link(self, name):
        self._maybe_fail("remove_link")
        if name not in self.state:
            return False
        del self.state[name]
        self.addresses.pop(name, None)
        peer = self.peers.pop(name, None)
        if peer:
            self.state.pop(peer, None)
            self.peers.pop(peer, None)
        for other in [n for n, link in self.state.items() if link.master == name]:
            self.state[other] = replace(self.state[other], master=None)
        return True

"""A strict in-memory kernel for unit tests: refuses what the kernel refuses.

Only for fast tests of service logic; tests/kernel proves the real Pyroute2Netlink.
"""
from __future__ import annotations

from dataclasses import replace

from pynet.errors import BadRequest, Conflict, PynetError
from driver.netlink.api import Link, NotSupported


class InjectedFailure(PynetError):
    status = 500


class FakeNetlink:
    def __init__(self, routes=None) -> None:
        self.state: dict[str, Link] = {}
        self.addresses: dict[str, set[str]] = {}
        self.peers: dict[str, str] = {}
        self._routes = list(routes or [])
        self.fail_on: set[str] = set()  # method names that raise, to test rollback
        self.vlan_supported = True  # False: like a kernel without 8021q
        self.macvlan_modes: dict[str, str] = {}

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail_on:
            raise InjectedFailure(f"injected failure in {method}")

    def add_device(self, name, up=True, mtu=1500, mac="02:00:00:00:00:10", loopback=False):
        """Test setup: an interface pynet did not make (a NIC, `lo`, a user's VLAN)."""
        self.state[name] = Link(name, None, up, mtu, None, None, mac, loopback)

    def link(self, name):
        return self.state.get(name)

    def links(self):
        self._maybe_fail("links")
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
        lower = self.state[parent]
        siblings = [n for n, link in self.state.items() if link.kind == "macvlan" and link.parent == parent]
        # The kernel's EINVALs: not an Ethernet lower, MTU above the lower's, passthru not alone.
        if (lower.loopback or mtu > lower.mtu or (siblings and mode == "passthru")
                or any(self.macvlan_modes.get(n) == "passthru" for n in siblings)):
            raise InjectedFailure(f"kernel refused creating macvlan {name} on {parent} (mode "
                                  f"{mode}): Invalid argument (errno 22)")
        if mode == "passthru":
            mac = lower.mac  # a passthru macvlan takes its lower device's MAC
        self.state[name] = Link(name, "macvlan", False, mtu, None, parent, mac or "02:00:00:00:00:04")
        self.macvlan_modes[name] = mode

    def add_vlan(self, name, base, vlan_id):
        self._maybe_fail("add_vlan")
        if not self.vlan_supported:
            raise NotSupported(f"this kernel has no 802.1q VLAN support (8021q), so VLAN "
                               f"sub-interface {name} cannot be created on {base}")
        if base not in self.state:
            raise BadRequest(f"interface {base} does not exist on this host")
        if name in self.state:
            raise Conflict(f"interface {name} already exists")
        lower = self.state[base]
        self.state[name] = Link(name, "vlan", True, lower.mtu, None, base, lower.mac)

    def remove_link(self, name):
        self._maybe_fail("remove_link")
        if name not in self.state:
            return False
        del self.state[name]
        self.addresses.pop(name, None)
        self.macvlan_modes.pop(name, None)
        gone = {name}
        while uppers := [n for n, link in self.state.items() if link.parent in gone]:
            for upper in uppers:  # macvlan and vlan links go with their lower device
                del self.state[upper]
                self.macvlan_modes.pop(upper, None)
                gone.add(upper)
        peer = self.peers.pop(name, None)
        if peer:
            self.state.pop(peer, None)
            self.peers.pop(peer, None)
        for other in [n for n, link in self.state.items() if link.master == name]:
            self.state[other] = replace(self.state[other], master=None)
        return True

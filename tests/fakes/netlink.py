"""A strict in-memory kernel for unit tests: refuses what the kernel refuses, with the
errors driver/netlink/api.py names.

Only for fast tests of service logic. tests/contract/test_netlink_contract.py holds it and
the real Pyroute2Netlink to one contract: where the two differ, this one is wrong.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from ipaddress import ip_interface

from driver.netlink.api import (FLOOD_MAC, FdbEntry, FoundLink, KernelError, Link, LinkExists, Neighbour,
                                NoSuchLink, NoSuchNamespace, NotSupported, PeerEntries, Vxlan)


class FakeNetlink:
    """One namespace of a fake machine. Named namespaces (ensure_netns) are FakeNetlinks
    sharing `world`, as /run/netns names are global on a real one."""

    def __init__(self, routes=None, world: dict | None = None) -> None:
        self.world: dict[str, "FakeNetlink"] = {} if world is None else world
        self.state: dict[str, Link] = {}
        self.addresses: dict[str, set[str]] = {}
        self.peers: dict[str, str] = {}
        self._routes = list(routes or [])
        self.fail_on: set[str] = set()  # method names that raise, to test rollback
        self.vlan_supported = True  # False: like a kernel without 8021q
        self.macvlan_modes: dict[str, str] = {}
        self.vxlans: dict[str, Vxlan] = {}  # by name, in the namespace the device is in
        self.fdb: dict[str, set[FdbEntry]] = {}
        self.neigh: dict[str, dict[str, str]] = {}
        # Veths whose other end is in another namespace: name -> (that namespace, its name).
        self.far_peers: dict[str, tuple["FakeNetlink", str]] = {}
        # VXLAN sockets opened in this namespace: (vni, port) -> device name.
        self.vxlan_sockets: dict[tuple[int, int], str] = {}
        self.addrs: list[tuple[str, object]] = []  # test setup: (link, ip_interface)
        self.default_links: list[str] = []
        self.bridge_nf: dict[str, bool] = {}  # bridge -> its own nf_call_iptables
        # Bridges whose MTU was set to another value keep it; the others follow their ports.
        self.mtu_set: set[str] = set()
        # What a batch costs on a real kernel: sockets opened (a forked helper each, in a
        # named namespace) and whole-table dumps (FDB, neighbours), counted for the tests.
        self.sockets = 0
        self.dumps = 0
        self._in_session = False
        # MACs and IPs whose entries the kernel refuses to add (per-entry failures).
        self.refuse_entries: set[str] = set()

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail_on:
            raise KernelError(f"injected failure in {method}")

    def add_device(self, name, up=True, mtu=1500, mac="02:00:00:00:00:10", loopback=False):
        """Test setup: an interface pynet did not make (a NIC, `lo`, a user's VLAN)."""
        self.state[name] = Link(name, None, up, mtu, None, None, mac, loopback)

    def link(self, name):
        return self.state.get(name)

    def links(self):
        self._maybe_fail("links")
        return list(self.state.values())

    def routes(self):
        """The configured ones and those of the addresses on up links, as the kernel's."""
        return list(self._routes) + [ip_interface(a).network for name, held in self.addresses.items()
                                     if self.state[name].up for a in sorted(held)]

    def ensure_bridge(self, name, mtu, addresses):
        self._maybe_fail("ensure_bridge")
        existing = self.state.get(name)
        if existing and existing.kind != "bridge":
            raise LinkExists(f"interface {name} exists and is not a bridge")
        created = existing is None
        if created:  # the kernel's defaults for a new bridge
            existing = self.state[name] = Link(name, "bridge", False, 1500, None, None, "02:00:00:00:00:01")
            self.bridge_nf[name] = False
        self._set_mtu(name, existing.mtu if mtu is None else mtu)
        self.state[name] = replace(self.state[name], up=True)
        self.addresses.setdefault(name, set()).update(str(a) for a in addresses)
        return created

    def _set_mtu(self, name, mtu):
        if mtu != self.state[name].mtu:
            self.state[name] = replace(self.state[name], mtu=mtu)
            self.mtu_set.add(name)

    def _follow_ports(self, bridge):
        """A bridge's MTU is its ports' smallest (1500 without ports) unless it was set."""
        link = self.state.get(bridge)
        if link is not None and link.kind == "bridge" and bridge not in self.mtu_set:
            ports = [port.mtu for port in self.state.values() if port.master == bridge]
            self.state[bridge] = replace(link, mtu=min(ports, default=1500))

    def found_link(self, name):
        link = self.state.get(name)
        if link is None:
            return None
        return FoundLink(link.mtu, link.up, tuple(sorted(self.addresses.get(name, ()))), False)

    def put_back(self, name, found, remove):
        link = self.state.get(name)
        if link is None:
            return
        self.addresses.get(name, set()).difference_update(str(a) for a in remove)
        self._set_mtu(name, found.mtu)
        self.state[name] = replace(self.state[name], up=link.up and found.up)

    def set_bridge_netfilter(self, name, on):
        self._maybe_fail("set_bridge_netfilter")
        link = self._link(name)
        if link.kind != "bridge":
            raise KernelError(f"kernel refused setting nf_call_iptables on {name}: not a bridge")
        self.bridge_nf[name] = on

    def bridge_netfilter(self, name):
        link = self.state.get(name)
        return None if link is None or link.kind != "bridge" else self.bridge_nf.get(name, False)

    def add_veth(self, host, peer, mtu, master, peer_mac, netns=None):
        self._maybe_fail("add_veth")
        inside = self if netns is None else self.within(netns)
        inside._link(master)
        if peer in self.state or host in inside.state:
            raise LinkExists(f"interface {host} or {peer} already exists")
        # In one namespace each end names the other as its lower link, as the kernel does.
        here = netns is None
        inside.state[host] = Link(host, "veth", True, mtu, master, peer if here else None, "02:00:00:00:00:02")
        self.state[peer] = Link(peer, "veth", False, mtu, None, host if here else None,
                                peer_mac or "02:00:00:00:00:03")
        if here:
            self.peers[host], self.peers[peer] = peer, host
        else:
            inside.far_peers[host], self.far_peers[peer] = (self, peer), (inside, host)
        inside._follow_ports(master)

    def ensure_port(self, name, master):
        was = self._link(name).master
        self._link(master)
        self.state[name] = replace(self.state[name], master=master, up=True)
        self._follow_ports(was), self._follow_ports(master)

    def add_macvlan(self, name, parent, mode, mtu, mac):
        self._maybe_fail("add_macvlan")
        lower = self._link(parent)
        if name in self.state:
            raise LinkExists(f"interface {name} already exists")
        siblings = [n for n, link in self.state.items() if link.kind == "macvlan" and link.parent == parent]
        # The kernel's EINVALs: not an Ethernet lower, MTU above the lower's, passthru not alone.
        if (lower.loopback or mtu > lower.mtu or (siblings and mode == "passthru")
                or any(self.macvlan_modes.get(n) == "passthru" for n in siblings)):
            raise KernelError(f"kernel refused creating macvlan {name} on {parent} (mode "
                                  f"{mode}): Invalid argument (errno 22)")
        if mode == "passthru":
            mac = lower.mac  # a passthru macvlan takes its lower device's MAC
        self.state[name] = Link(name, "macvlan", False, mtu, None, parent, mac or "02:00:00:00:00:04")
        self.macvlan_modes[name] = mode

    def add_vlan(self, name, base, vlan_id):
        self._maybe_fail("add_vlan")
        lower = self._link(base)
        if name in self.state:
            raise LinkExists(f"interface {name} already exists")
        if not self.vlan_supported:
            raise NotSupported(f"this kernel has no 802.1q VLAN support (8021q), so VLAN "
                               f"sub-interface {name} cannot be created on {base}")
        self.state[name] = Link(name, "vlan", True, lower.mtu, None, base, lower.mac)

    # --- the underlay --------------------------------------------------------------------
    def local_addresses(self):
        return list(self.addrs) + [(name, ip_interface(a)) for name, held in self.addresses.items()
                                   for a in sorted(held)]

    def default_route_links(self):
        return list(self.default_links)

    # --- namespaces --------------------------------------------------------------------
    def ensure_netns(self, name):
        self._maybe_fail("ensure_netns")
        if name in self.world:
            return False
        self.world[name] = FakeNetlink(world=self.world)
        return True

    def remove_netns(self, name):
        inside = self.world.pop(name, None)
        if inside is None:
            return False
        for link in list(inside.state):
            if link in inside.state:  # not gone with another
                inside._drop(link)
        return True

    def within(self, netns):
        if netns not in self.world:
            raise NoSuchNamespace(f"network namespace {netns} does not exist")
        return self.world[netns]

    # --- VXLAN -------------------------------------------------------------------------
    def add_vxlan(self, name, vni, local, port, mtu, master, netns=None):
        self._maybe_fail("add_vxlan")
        target = self.within(netns) if netns else self
        target._link(master)
        if name in self.state or name in target.state or (vni, port) in self.vxlan_sockets:
            raise LinkExists(f"cannot create VXLAN device {name}: the name exists, or another "
                             f"VXLAN device on this host already carries VNI {vni} on UDP port {port}")
        if target.state[master].kind != "bridge":
            raise KernelError(f"kernel refused making {name} a port of {master}: not a bridge")
        self.vxlan_sockets[(vni, port)] = name
        target.state[name] = Link(name, "vxlan", True, mtu, master, None, "02:00:00:00:00:05")
        target.vxlans[name] = Vxlan(name, vni, local, port, False, True, mtu, master)
        target.far_peers[name] = (self, "")  # where its socket is: freed with the device
        target.fdb[name] = set()
        target._follow_ports(master)

    def vxlan(self, name):
        info = self.vxlans.get(name)
        link = self.state.get(name)
        return None if info is None or link is None else replace(info, master=link.master, mtu=link.mtu)

    # --- peers -------------------------------------------------------------------------
    @contextmanager
    def session(self):
        if self._in_session:
            yield self
            return
        self.sockets += 1
        self._in_session = True
        try:
            yield self
        finally:
            self._in_session = False

    def _socket(self):
        if not self._in_session:
            self.sockets += 1  # each call on its own opens one

    def _link(self, name):
        if name not in self.state:
            raise NoSuchLink(f"interface {name} does not exist on this host")
        return self.state[name]

    def _vxlan_dev(self, dev):
        if dev not in self.vxlans:
            raise NoSuchLink(f"interface {dev} does not exist on this host")
        return dev

    def fdb_entries(self, dev):
        self._socket()
        self.dumps += 1
        return sorted(self.fdb[self._vxlan_dev(dev)])

    def ensure_fdb(self, dev, mac, dst):
        self._maybe_fail("ensure_fdb")
        if failed := self._add_fdb(dev, FdbEntry(mac, dst)):
            raise KernelError(failed)

    def _refused(self, key):
        """The bridge refuses a multicast MAC as a unicast entry; tests name others."""
        return key in self.refuse_entries or (":" in key and key != FLOOD_MAC and int(key[:2], 16) & 1)

    def _add_fdb(self, dev, e):
        """None, or the kernel's message refusing entry `e` on `dev`."""
        entries = self.fdb[self._vxlan_dev(dev)]
        if self._refused(e.mac):
            return f"kernel refused adding FDB entry {e.mac} -> {e.dst} on {dev}: Invalid argument (errno 22)"
        if e.mac != FLOOD_MAC:  # one VTEP per unicast MAC: replaced
            entries -= {x for x in entries if x.mac == e.mac}
        entries.add(e)
        return None

    def remove_fdb(self, dev, mac, dst):
        entries = self.fdb[self._vxlan_dev(dev)]
        if FdbEntry(mac, dst) not in entries:
            return False
        entries.discard(FdbEntry(mac, dst))
        return True

    def _neigh(self, dev):
        self._link(dev)
        return self.neigh.setdefault(dev, {})

    def neighbours(self, dev):
        self._socket()
        self.dumps += 1
        return sorted(Neighbour(ip, mac) for ip, mac in self._neigh(dev).items())

    def ensure_neighbour(self, dev, ip, mac):
        self._maybe_fail("ensure_neighbour")
        self._neigh(dev)[ip] = mac

    def remove_neighbour(self, dev, ip):
        return self._neigh(dev).pop(ip, None) is not None

    def peer_entries(self, dev, bridge):
        self._maybe_fail("peer_entries")
        with self.session():
            self._vxlan_dev(dev), self._neigh(bridge)  # NoSuchLink-like for either missing
            return PeerEntries(self.fdb_entries(dev), self.neighbours(bridge))

    def change_peers(self, dev, bridge, *, fdb_remove=(), neigh_remove=(), fdb_add=(), neigh_add=()):
        self._maybe_fail("change_peers")
        with self.session():
            entries, neigh = self.fdb[self._vxlan_dev(dev)], self._neigh(bridge)
            failed = []
            for e in fdb_remove:
                entries.discard(FdbEntry(e.mac, e.dst))
            for n in neigh_remove:
                neigh.pop(n.ip, None)
            failed += filter(None, (self._add_fdb(dev, e) for e in fdb_add))
            for n in neigh_add:
                if n.ip in self.refuse_entries:
                    failed.append(f"kernel refused adding neighbour {n.ip} at {n.mac} on {bridge}: "
                                  "Invalid argument (errno 22)")
                    continue
                neigh[n.ip] = n.mac
            return failed

    def remove_link(self, name):
        self._maybe_fail("remove_link")
        if name not in self.state:
            return False
        self._drop(name)
        return True

    def _drop(self, name):
        """Link `name` gone with what goes with it, as in the kernel: the other end of a veth
        (here or in another namespace), the macvlan and vlan links on it, its VXLAN socket;
        its ports stay, without a master."""
        link = self.state.pop(name)
        for table in (self.neigh, self.addresses, self.macvlan_modes, self.fdb, self.peers, self.bridge_nf):
            table.pop(name, None)
        self.mtu_set.discard(name)
        far, far_name = self.far_peers.pop(name, (self, ""))
        if name in self.vxlans:  # `far` is the namespace of its socket
            info = self.vxlans.pop(name)
            far.vxlan_sockets.pop((info.vni, info.port), None)
        elif far_name in far.state:
            far.far_peers.pop(far_name, None)
            far._drop(far_name)
        for lower_of in [n for n, other in self.state.items() if other.parent == name]:
            self._drop(lower_of)
        for port in [n for n, other in self.state.items() if other.master == name]:
            self.state[port] = replace(self.state[port], master=None)
        self._follow_ports(link.master)

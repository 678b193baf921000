"""Simulated overlay hosts over the strict fake kernel, sharing one store (stands in for
Consul): each host is its own app with its own FakeNetlink, as on separate machines.

    hosts = FakeOverlayHosts(store)
    h1 = hosts.add("h1", "198.18.0.11")
    h1.create_network(NID1, "10.50.0.0/24")
    h1.create_endpoint(NID1, EID, "10.50.0.2/24")
    h1.sync()                         # the watcher's sync, run now
    h1.vxlan(NID1), h1.fdb(NID1), h1.neighbours(NID1)
"""
from __future__ import annotations

import ipaddress
from typing import Any

from driver import naming
from pynet.app import Deps
from pynet.settings import Settings
from pynet_core.store.api import Store
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink
from tests.harness.app_client import AppClient, app_client

GENERIC = "com.docker.network.generic"


class FakeHost:
    def __init__(self, name: str, vtep: str, store: Store, netlink: FakeNetlink | None = None,
                 store_kind: str = "consul", mtu: int = 1500, encrypted: bool = False,
                 **settings: Any) -> None:
        self.name, self.vtep, self.store = name, vtep, store
        self.pools: dict[str, str] = {}  # network -> the PoolID pynet's IPAM gave it
        if netlink is None:
            netlink = FakeNetlink()
            netlink.add_device("eth0", mtu=mtu)
            netlink.addrs.append(("eth0", ipaddress.ip_interface(f"{vtep}/24")))
        self.netlink = netlink
        self.settings = Settings(host_id=name, store=store_kind, **settings)
        # encrypted=True: a WireGuard data path over tests/fakes/wireguard.py (same across restarts,
        # as a kernel link or a wireguard-go process outlives the plugin).
        self.wireguard = None
        if encrypted:
            from tests.fakes.wireguard import FakeWireGuardLinks
            from tests.fakes.wireguard import RecordingGuard
            self.wireguard = FakeWireGuardLinks()
            self.guard = RecordingGuard()
        self.client: AppClient = self._start()

    def _start(self) -> AppClient:
        deps = Deps(store=self.store, netlink=self.netlink, firewall=RecordingFirewall())
        if self.wireguard is not None:
            # Encrypted overlays over a WireGuard port in memory (tests/fakes/wireguard.py).
            from tests.fakes.wireguard import fake_keys
            deps.wireguard_links, deps.wireguard_keys = (lambda: self.wireguard), fake_keys(self.name)
            deps.wireguard_guard = self.guard
            from tests.fakes.wireguard import fake_rotate
            deps.wireguard_rotate = fake_rotate(self.name)
        return app_client(deps, settings=self.settings, overlay=True)

    def restart(self) -> None:
        """The plugin killed and started again: same store, same kernel."""
        self.stop()
        self.client = self._start()

    def stop(self) -> None:
        self.client.services["background"].stop()

    def call(self, method: str, body: dict) -> tuple[int, Any]:
        return self.client.call(method, body)

    def ok(self, method: str, body: dict) -> Any:
        status, answer = self.call(method, body)
        assert status == 200, (self.name, method, answer)
        return answer

    def create_network(self, nid: str, subnet: str | None, space: str = "LocalDefault",
                       pool_from_pynet: bool = True, **options: str):
        """As Docker with --ipam-driver pynet: RequestPool of this host's pynet first (the
        overlay believes a peer's address only under its host's claim; a pool this host
        already holds is refused again, and then no pool is kept), unless
        pool_from_pynet=False (another IPAM driver gave the pool)."""
        if subnet and pool_from_pynet:
            status, pool = self.call("IpamDriver.RequestPool", {"AddressSpace": space, "Pool": subnet,
                                                                "Options": {}, "V6": False})
            if status == 200:
                self.pools[nid] = pool["PoolID"]
        # Docker's IPAM hands a gateway to every network; an overlay leaves it unused.
        gateway = f"{next(ipaddress.ip_network(subnet).hosts())}/{subnet.split('/')[1]}" if subnet else ""
        data = [{"AddressSpace": space, "Pool": subnet, "Gateway": gateway}] if subnet else []
        return self.call("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {GENERIC: {"type": "overlay", **options}}, "IPv4Data": data})

    def create_endpoint(self, nid: str, eid: str, address: str) -> Any:
        self.claim(nid, address, eid)
        self.ok("NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid,
                                                 "Interface": {"Address": address}})
        return self.ok("NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid, "SandboxKey": f"/s/{eid[:6]}"})

    def claim(self, nid: str, address: str, eid: str = "") -> None:
        """RequestAddress, as dockerd does before CreateEndpoint."""
        if nid in self.pools:
            self.ok("IpamDriver.RequestAddress", {
                "PoolID": self.pools[nid], "Address": address.split("/")[0],
                "Options": {"com.docker.network.endpoint.name": eid[:12] or "c"}})

    def delete_endpoint(self, nid: str, eid: str, address: str | None = None) -> None:
        self.ok("NetworkDriver.Leave", {"NetworkID": nid, "EndpointID": eid})
        self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
        if address and nid in self.pools:
            self.ok("IpamDriver.ReleaseAddress", {"PoolID": self.pools[nid], "Address": address.split("/")[0]})

    def sync(self):
        return self.client.overlay.sync()

    def inside(self, nid: str) -> FakeNetlink:
        return self.netlink.within(naming.overlay_netns(nid))

    def vxlan(self, nid: str):
        return self.inside(nid).vxlan(naming.vxlan(nid))

    def fdb(self, nid: str) -> set[tuple[str, str]]:
        return {(e.mac, e.dst) for e in self.inside(nid).fdb_entries(naming.vxlan(nid))}

    def neighbours(self, nid: str) -> set[tuple[str, str]]:
        return {(n.ip, n.mac) for n in self.inside(nid).neighbours(naming.OVERLAY_BRIDGE)}


class FakeOverlayHosts:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.hosts: list[FakeHost] = []

    def add(self, name: str, vtep: str, **kwargs: Any) -> FakeHost:
        host = FakeHost(name, vtep, self.store, **kwargs)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            host.stop()

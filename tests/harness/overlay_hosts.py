"""Several simulated hosts on one machine for the overlay's kernel tests, without Docker.

    bed = OverlayBed(make_netns, store)       # store: one MemoryStore, standing in for Consul
    h1 = bed.host("h1", "198.18.0.11")          # a namespace on the underlay, its own plugin
    nid = h1.network("10.50.0.0/24")            # CreateNetwork (a random NetworkID per host)
    c = h1.container(nid, "10.50.0.2/24")       # CreateEndpoint + Join, then what Docker does
    bed.pings(c, "10.50.0.3"), bed.run(c, ...)

The underlay is a bridge in a namespace of its own (not the root namespace, whose firewall
is Docker's), with a veth `eth0` into each host namespace, addressed from 198.18.0.0/24.
Each host runs the whole app (tests/harness/app_client.py) with Pyroute2Netlink(its
namespace); overlay networks make their own namespaces (/run/netns/pno-...), which
`close()` removes if a test left them.
"""
from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from driver import naming
from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from pynet.app import Deps
from pynet.settings import Settings
from pynet_core.store.api import Store
from tests.fakes.firewall import RecordingFirewall
from tests.harness.app_client import AppClient, app_client

GENERIC = "com.docker.network.generic"


@dataclass
class Container:
    ns: str
    ip: str
    mac: str
    endpoint: str
    network: str
    host: "SimHost"


@dataclass
class SimHost:
    name: str
    ns: str
    vtep: str
    store: Store
    netlink: Pyroute2Netlink
    make_netns: Callable[..., str]
    client: AppClient = field(init=False)
    networks: list[str] = field(default_factory=list)
    pools: dict[str, str] = field(default_factory=dict)  # network -> its PoolID
    # Encrypted overlays: a state directory for the host's key, and the settings' extras
    # (--wireguard-subnet inside 198.18.0.0/15 in the tests). None: not served.
    state_dir: str | None = None
    settings: dict = field(default_factory=dict)
    wireguard: Any = None  # the host's UserspaceWireGuard (kept: close() removes its link)

    def __post_init__(self) -> None:
        self.start()

    @property
    def wg_link(self) -> str:
        # wireguard-go's UAPI socket path is not per namespace: one name per simulated host.
        return f"pnwg{self.name}"[:15]

    def start(self) -> None:
        deps = Deps(store=self.store, netlink=self.netlink, firewall=RecordingFirewall())
        if self.state_dir is not None:
            from driver.firewall.wireguard_guard import WireGuardGuard
            from driver.wireguard.userspace import UserspaceWireGuard
            # A new adapter per start, as a restarted plugin has (it re-adopts the process).
            self.wireguard = UserspaceWireGuard(netns=self.ns, log_dir=f"{self.state_dir}/log")
            deps.wireguard_links = lambda: self.wireguard
            deps.wireguard_guard = WireGuardGuard(self.ns)
            deps.wireguard_link = self.wg_link
        settings = Settings(host_id=self.name, store="consul", state_dir=self.state_dir or "/nonexistent",
                            **self.settings)
        self.client = app_client(deps, settings=settings, overlay=True)

    def stop(self) -> None:
        """The plugin gone (kill -9): its kernel state stays."""
        self.client.services["background"].stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def ok(self, method: str, body: dict) -> Any:
        status, answer = self.client.call(method, body)
        assert status == 200, (self.name, method, answer)
        return answer

    def network(self, subnet: str, space: str = "LocalDefault", **options: str) -> str:
        nid = secrets.token_hex(32)  # dockerd makes up its own on every host
        # The pool and, per container, the address from pynet's IPAM, as with
        # `--ipam-driver pynet`: a peer's address is believed only under its host's claim.
        self.pools[nid] = self.ok("IpamDriver.RequestPool", {"AddressSpace": space, "Pool": subnet})["PoolID"]
        self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {GENERIC: {"type": "overlay", **options}},
            "IPv4Data": [{"AddressSpace": space, "Pool": subnet}]})
        self.networks.append(nid)
        return nid

    def delete_network(self, nid: str) -> None:
        self.ok("NetworkDriver.DeleteNetwork", {"NetworkID": nid})
        self.networks.remove(nid)
        self.ok("IpamDriver.ReleasePool", {"PoolID": self.pools.pop(nid)})

    def container(self, nid: str, address: str) -> Container:
        """CreateEndpoint + Join, then what dockerd does with the interface: move it into a
        new namespace, rename it eth0, address it, bring it up."""
        eid = secrets.token_hex(32)
        self.ok("IpamDriver.RequestAddress", {"PoolID": self.pools[nid], "Address": address.split("/")[0],
                                              "Options": {"com.docker.network.endpoint.name": eid[:12]}})
        answer = self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": nid, "EndpointID": eid, "Interface": {"Address": address}})
        ctr = self.make_netns("c")
        joined = self.ok("NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                                "SandboxKey": f"/var/run/netns/{ctr}"})
        src = joined["InterfaceName"]["SrcName"]
        with IPRoute(netns=self.ns, flags=0) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=src)[0], net_ns_fd=ctr)
        ip, prefix = address.split("/")
        with IPRoute(netns=ctr, flags=0) as ipr:
            idx = ipr.link_lookup(ifname=src)[0]
            ipr.link("set", index=idx, ifname="eth0")
            ipr.addr("add", index=idx, address=ip, prefixlen=int(prefix))
            ipr.link("set", index=idx, state="up")
            mac = ipr.link("get", index=idx)[0].get("IFLA_ADDRESS")
        return Container(ctr, ip, answer.get("Interface", {}).get("MacAddress") or mac, eid, nid, self)

    def remove(self, ctr: Container) -> None:
        """docker rm: Leave, the interface renamed back and moved to the host namespace (as
        dockerd does after Leave), DeleteEndpoint."""
        self.ok("NetworkDriver.Leave", {"NetworkID": ctr.network, "EndpointID": ctr.endpoint})
        with IPRoute(netns=ctr.ns, flags=0) as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("set", index=idx, state="down")
            ipr.link("set", index=idx, ifname=naming.peer_veth(ctr.endpoint))
            ipr.link("set", index=idx, net_ns_fd=f"/run/netns/{self.ns}")
        self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": ctr.network, "EndpointID": ctr.endpoint})
        self.ok("IpamDriver.ReleaseAddress", {"PoolID": self.pools[ctr.network], "Address": ctr.ip})

    def inside(self, nid: str) -> Pyroute2Netlink:
        return self.netlink.within(naming.overlay_netns(nid))

    def fdb(self, nid: str) -> set[tuple[str, str]]:
        return {(e.mac, e.dst) for e in self.inside(nid).fdb_entries(naming.vxlan(nid))}

    def neighbours(self, nid: str) -> set[tuple[str, str]]:
        return {(n.ip, n.mac) for n in self.inside(nid).neighbours(naming.OVERLAY_BRIDGE)}


class OverlayBed:
    def __init__(self, make_netns: Callable[..., str], store: Store) -> None:
        self.make_netns = make_netns
        self.store = store
        self.hosts: list[SimHost] = []
        self.underlay = make_netns("u")
        with IPRoute(netns=self.underlay, flags=0) as ipr:
            ipr.link("add", ifname="ul", kind="bridge")
            ipr.link("set", index=ipr.link_lookup(ifname="ul")[0], state="up")

    def host(self, name: str, vtep: str, mtu: int = 1500, state_dir: str | None = None,
             **settings: Any) -> SimHost:
        ns = self.make_netns("h")
        port = f"v{name}"
        with IPRoute(netns=self.underlay, flags=0) as ipr:
            ipr.link("add", ifname=port, kind="veth", mtu=mtu,
                     peer={"ifname": "eth0", "mtu": mtu, "net_ns_fd": f"/run/netns/{ns}"})
            ipr.link("set", index=ipr.link_lookup(ifname=port)[0],
                     master=ipr.link_lookup(ifname="ul")[0], state="up")
        with IPRoute(netns=ns, flags=0) as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=idx, address=vtep, prefixlen=24)
            ipr.link("set", index=idx, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        host = SimHost(name, ns, vtep, self.store, Pyroute2Netlink(ns), self.make_netns,
                       state_dir=state_dir, settings=settings)
        self.hosts.append(host)
        return host

    # --- probes ----------------------------------------------------------------------
    @staticmethod
    def run(ns: str, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def python(self, ns: str, script: str, *args: str, timeout: float = 15) -> str:
        return self.run(ns, sys.executable, "-c", script, *args, timeout=timeout).stdout.strip()

    def pings(self, ctr: Container, address: str) -> bool:
        return self.run(ctr.ns, "busybox", "ping", "-c", "1", "-W", "1", address).returncode == 0

    def close(self) -> list[str]:
        """Stop every plugin and remove what the test's networks left (their namespaces)."""
        left = []
        for host in self.hosts:
            host.stop()
            if host.wireguard is not None:  # its wireguard-go, whatever the test left
                try:
                    if host.wireguard.remove(host.wg_link):
                        left.append(host.wg_link)
                except Exception as exc:  # the namespaces go anyway
                    left.append(f"{host.wg_link}: {exc}")
            for nid in list(host.networks):
                name = naming.overlay_netns(nid)
                if name in pr_netns.listnetns():
                    left.append(name)
                    pr_netns.remove(name)
        return left

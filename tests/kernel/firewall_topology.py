"""A host, an outside and containers, as network namespaces, for the firewall kernel tests.

The "host" namespace runs the plugin (its app, wired to the real kernel in that namespace);
the "outside" is joined to it by a veth, and each "container" is a namespace that receives
the endpoint's veth the way Docker would move it there. Addresses come from 198.18.0.0/15
only. Docker's FORWARD policy DROP is reproduced in the host namespace. Everything is
removed by close(), processes first (by PID). The namespaces come from
tests/harness/netns.py, the app and its client from tests/harness/app_client.py.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pyroute2 import netns as pr_netns

from pynet.app import Deps
from driver.firewall.forward_accept import ForwardAccept
from driver.firewall.nft import Nft
from driver.firewall.nft_firewall import NftFirewall
from driver.firewall.ports import HostPorts
from driver.firewall.sysctl import KernelKnobs
from driver.netlink.pyroute2_netlink import Pyroute2Netlink
from pynet_core.store.local import LocalStore
from tests.harness.app_client import AppClient, app_client
from tests.harness.netns import Namespaces
from tests.harness.netprobe import CLIENT, PEER_SERVER, PING

OUTSIDE_HOST_IP = "198.18.50.1"
OUTSIDE_IP = "198.18.50.2"
# IPv6 on the same link, ULA (fd00::/8), never the host's own fd00::/64.
OUTSIDE_HOST_IP6 = "fd18:50::1"
OUTSIDE_IP6 = "fd18:50::2"

def sh(*argv: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed: {proc.stderr.strip()}")
    return proc


class Topology:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.namespaces = Namespaces()
        self.procs: list[subprocess.Popen] = []
        self.client: AppClient | None = None
        self.deps: Deps | None = None
        self._nft: Nft | None = None
        try:
            self.host, self.outside = self.namespaces.make("h"), self.namespaces.make("o")
            sh("ip", "link", "set", "lo", "up", ns=self.host)
            sh("ip", "link", "set", "lo", "up", ns=self.outside)
            # Docker sets FORWARD policy DROP; reproduce it in the host namespace.
            sh("iptables", "-P", "FORWARD", "DROP", ns=self.host)
            sh("ip", "link", "add", "pnt-up", "netns", self.host, "type", "veth", "peer", "name", "eth0",
               "netns", self.outside)
            sh("ip", "addr", "add", f"{OUTSIDE_HOST_IP}/24", "dev", "pnt-up", ns=self.host)
            sh("ip", "link", "set", "pnt-up", "up", ns=self.host)
            sh("ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0", ns=self.outside)
            sh("ip", "-6", "addr", "add", f"{OUTSIDE_HOST_IP6}/64", "dev", "pnt-up", "nodad", ns=self.host)
            sh("ip", "-6", "addr", "add", f"{OUTSIDE_IP6}/64", "dev", "eth0", "nodad", ns=self.outside)
            sh("ip", "link", "set", "eth0", "up", ns=self.outside)
        except BaseException:
            self.namespaces.close()
            raise

    # --- the plugin ----------------------------------------------------------------
    def firewall(self) -> NftFirewall:
        return NftFirewall(forward=ForwardAccept(netns=self.host), nft=Nft(self.host),
                           knobs=KernelKnobs(self.host),
                           ports=HostPorts(self.socket))

    def start_plugin(self) -> None:
        """(Re)start the plugin's app on the same store, as a restarted process would."""
        if self.deps is not None:
            self.deps.store.close()
            self.deps.firewall.ports.release_all()  # a dead process holds no sockets
        self.deps = Deps(store=LocalStore(str(self.tmp / "pynet.db")),
                         netlink=Pyroute2Netlink(self.host), firewall=self.firewall())
        self.client = app_client(self.deps, host_id="k")

    @property
    def service(self):
        return self.client.network

    def call(self, method: str, body: dict) -> tuple[int, dict]:
        return self.client.call(method, body)

    def socket(self, family: int, kind: int | None = None) -> socket.socket:
        """A socket in the host namespace (setns affects only the calling thread).
        socket(kind) is an IPv4 one."""
        if kind is None:
            family, kind = socket.AF_INET, family
        pr_netns.pushns(self.host)
        try:
            return socket.socket(family, kind)
        finally:
            pr_netns.popns()

    # --- networks and containers, through the plugin API ---------------------------
    def network(self, nid: str, subnet: str | None, internal: bool = False,
                subnet6: str | None = None, **generic: str) -> str:
        """The network's gateway (its IPv6 one if it has no IPv4 subnet)."""
        data = {}
        for key, pool in (("IPv4Data", subnet), ("IPv6Data", subnet6)):
            if pool:
                net = ipaddress.ip_network(pool)
                data[key] = [{"Pool": pool, "Gateway": f"{net[1]}/{net.prefixlen}"}]
        status, answer = self.call("NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {"com.docker.network.generic": generic,
                                          "com.docker.network.internal": internal,
                                          "com.docker.network.enable_ipv6": subnet6 is not None},
            **data})
        assert status == 200, answer
        return str(ipaddress.ip_network(subnet or subnet6)[1])

    def container(self, nid: str, eid: str, address: str | None, gateway: str | None,
                  portmap: list[dict] | None = None, address6: str | None = None,
                  gateway6: str | None = None) -> str:
        """Endpoint + Join + what Docker does with the interface + ProgramExternalConnectivity."""
        interface = {"Address": address or "", "AddressIPv6": address6 or ""}
        status, answer = self.call("NetworkDriver.CreateEndpoint", {
            "NetworkID": nid, "EndpointID": eid, "Interface": interface})
        assert status == 200, answer
        ns = self.namespaces.make("c")
        status, answer = self.call("NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                                          "SandboxKey": f"/run/netns/{ns}"})
        assert status == 200, answer
        peer = answer["InterfaceName"]["SrcName"]
        sh("ip", "link", "set", peer, "netns", ns, ns=self.host)
        sh("ip", "link", "set", peer, "name", "eth0", ns=ns)
        if address:
            sh("ip", "addr", "add", address, "dev", "eth0", ns=ns)
        if address6:
            sh("ip", "-6", "addr", "add", address6, "dev", "eth0", "nodad", ns=ns)
        sh("ip", "link", "set", "eth0", "up", ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        if gateway:
            sh("ip", "route", "add", "default", "via", gateway, ns=ns)
        if gateway6:
            sh("ip", "-6", "route", "add", "default", "via", gateway6, ns=ns)
        if portmap is not None:
            status, answer = self.call("NetworkDriver.ProgramExternalConnectivity", {
                "NetworkID": nid, "EndpointID": eid,
                "Options": {"com.docker.network.portmap": portmap}})
            assert status == 200, answer
        return ns

    # --- traffic -------------------------------------------------------------------
    def serve(self, ns: str, port: int) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PEER_SERVER,
                                 str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        self.procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"

    def ask(self, ns: str, proto: str, host: str, port: int) -> str:
        """'tcp <source address seen by the server>' / 'udp <source> ping', or 'fail ...'."""
        return sh(sys.executable, "-c", CLIENT, proto, host, str(port), ns=ns).stdout.strip()

    def ping(self, ns: str, address: str) -> bool:
        """One ICMP echo (IPv4 or IPv6) answered? (netprobe: no `ping` binary needed)."""
        answer = sh(sys.executable, "-c", PING, address, ns=ns).stdout.strip()
        assert answer == "ok" or answer.startswith("fail"), answer
        return answer == "ok"

    def program(self, nid: str, eid: str, portmap: list[dict]) -> tuple[int, dict]:
        return self.call("NetworkDriver.ProgramExternalConnectivity", {
            "NetworkID": nid, "EndpointID": eid, "Options": {"com.docker.network.portmap": portmap}})

    @property
    def nft(self) -> Nft:
        """A libnftables context of the test's own in the host namespace."""
        if self._nft is None:
            self._nft = Nft(self.host)
        return self._nft

    def nft_text(self) -> str:
        return self.nft.text()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self.deps is not None:
            self.deps.firewall.ports.release_all()
            self.deps.store.close()
        left = self.namespaces.close()
        if left:
            raise RuntimeError(f"could not delete network namespaces {left}")

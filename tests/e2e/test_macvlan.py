"""Macvlan networks end to end: the real dockerd, the real plugin, a simulated LAN.

The "LAN" is a veth: its root-namespace end is the macvlan parent (no address on it), its
peer sits in a namespace the test made and plays a LAN host/router with the first address
of the subnet. The LAN host has no route anywhere else, so test containers have no way out.
Only 198.18.0.0/15 addresses are used, and only inside namespaces and containers the tests
made. Everything is removed even when a test fails: the `lan` fixture removes the Docker
objects made since it started, then the veth; make_netns removes the namespaces.
"""
from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.harness.dockerd import DockerDaemon
from tests.harness.plugin import PluginProcess

SUBNET, GATEWAY = "198.18.100.0/24", "198.18.100.1"  # the LAN host is the gateway
LAN_PREFIX = "pntl"  # root-namespace veth ends: not a pynet name, so pynet must leave them alone


def _name(kind: str) -> str:
    return f"pynet-t-mv-{kind}-{secrets.token_hex(3)}"


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def _root_links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0]
            for line in _ip("-o", "link", "show").stdout.splitlines()}


def _pn_links() -> set[str]:
    return {name for name in _root_links() if name.startswith(("pn-", "pnv", "pnc"))}


@dataclass
class Lan:
    parent: str      # the macvlan parent, in the root namespace
    ns: str          # the LAN host's namespace
    dockerd: DockerDaemon
    image: str

    def lan_exec(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return _ip("netns", "exec", self.ns, *argv, check=check)

    def neighbours(self) -> dict[str, str]:
        """IP -> MAC as the LAN host has learned them."""
        out = _ip("-n", self.ns, "neigh", "show", "dev", "lan").stdout
        return {m.group(1): m.group(2).lower()
                for m in re.finditer(r"^(\S+) lladdr (\S+)", out, re.MULTILINE)}

    def network(self, *opts: str, subnet: str = SUBNET, gateway: str | None = GATEWAY,
                parent: str | None = "lan", check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker network create -d pynet -o type=macvlan ...`; parent="lan" means this LAN."""
        name = _name("net")
        argv = ["network", "create", "-d", "pynet", "--subnet", subnet, "-o", "type=macvlan"]
        if gateway:
            argv += ["--gateway", gateway]
        if parent is not None:
            argv += ["-o", f"parent={self.parent if parent == 'lan' else parent}"]
        proc = self.dockerd.cli(*argv, *opts, name, check=check)
        proc.name = name  # type: ignore[attr-defined]
        return proc

    def run(self, network: str, ip: str) -> str:
        name = _name("c")
        self.dockerd.cli("run", "-d", "--pull", "never", "--name", name, "--network", network,
                         "--ip", ip, self.image, "sleep", "600")
        return name

    def ping(self, ctr: str, address: str, count: int = 2) -> bool:
        proc = self.dockerd.cli("exec", ctr, "ping", "-c", str(count), "-W", "2", address, check=False)
        return proc.returncode == 0

    def mac(self, ctr: str) -> str:
        out = self.dockerd.cli("exec", ctr, "cat", "/sys/class/net/eth0/address").stdout
        return out.strip().lower()


@pytest.fixture
def lan(dockerd: DockerDaemon, plugin: PluginProcess, busybox_image: str,
        make_netns: Callable[[], str]) -> Iterator[Lan]:
    before = dockerd.snapshot()
    parent = f"{LAN_PREFIX}{secrets.token_hex(3)}"
    ns = make_netns()
    _ip("link", "add", parent, "type", "veth", "peer", "name", f"{parent}p")
    try:
        _ip("link", "set", f"{parent}p", "netns", ns)
        _ip("-n", ns, "link", "set", f"{parent}p", "name", "lan")
        _ip("-n", ns, "addr", "add", f"{GATEWAY}/24", "dev", "lan")
        _ip("-n", ns, "link", "set", "lan", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        _ip("link", "set", parent, "up")
        yield Lan(parent, ns, dockerd, busybox_image)
    finally:
        # Docker objects first (while the parent still exists), then the wire. A test may
        # have left the plugin stopped: without it every removal would wait for it.
        if not plugin.running():
            plugin.start()
        errors = dockerd.remove_since(before)
        _ip("link", "del", parent, check=False)
        for name in _root_links():
            if name.startswith(parent):  # parent.42 if a kernel with 8021q made one
                _ip("link", "del", name, check=False)
        assert not errors, errors


def _assert_nothing_left(lan: Lan, pn_before: set[str]) -> None:
    assert _pn_links() == pn_before
    nets = lan.dockerd.cli("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in nets if n.startswith("pynet-t-mv-")]


def test_bridge_mode_containers_reach_each_other_and_the_lan_host(lan: Lan) -> None:
    pn_before = _pn_links()
    net = lan.network().name
    a, b = lan.run(net, "198.18.100.10"), lan.run(net, "198.18.100.11")
    assert lan.ping(a, "198.18.100.11") and lan.ping(b, "198.18.100.10")
    assert lan.ping(a, GATEWAY) and lan.ping(b, GATEWAY)
    # Own MACs, distinct, and the ones the LAN host saw.
    mac_a, mac_b = lan.mac(a), lan.mac(b)
    assert mac_a != mac_b
    neigh = lan.neighbours()
    assert neigh.get("198.18.100.10") == mac_a and neigh.get("198.18.100.11") == mac_b, neigh
    # The LAN's router is the default gateway; Docker's gateway bridge is not attached.
    routes = lan.dockerd.cli("exec", a, "ip", "route").stdout
    assert f"default via {GATEWAY} dev eth0" in routes, routes
    assert lan.dockerd.cli("exec", a, "ip", "-o", "link").stdout.count("link/ether") == 1
    # Macvlan links live in the containers; the host has no pynet link for them.
    assert _pn_links() == pn_before
    lan.dockerd.cli("rm", "-f", a, b)
    lan.dockerd.cli("network", "rm", net)
    _assert_nothing_left(lan, pn_before)
    assert lan.parent in _root_links()


def test_private_mode_isolates_containers_from_each_other(lan: Lan) -> None:
    net = lan.network("-o", "macvlan_mode=private").name
    a, b = lan.run(net, "198.18.100.10"), lan.run(net, "198.18.100.11")
    assert lan.ping(a, GATEWAY) and lan.ping(b, GATEWAY)
    assert not lan.ping(a, "198.18.100.11", count=1)
    assert not lan.ping(b, "198.18.100.10", count=1)


def test_no_parent_network_reaches_only_itself(lan: Lan) -> None:
    pn_before = _pn_links()
    net = lan.network(parent=None, gateway=None).name
    net_id = lan.dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    bridge = f"pn-{net_id[:12]}"
    assert bridge in _root_links()
    a, b = lan.run(net, "198.18.100.10"), lan.run(net, "198.18.100.11")
    assert lan.ping(a, "198.18.100.11") and lan.ping(b, "198.18.100.10")
    # Nothing else: not the LAN host (same subnet, other wire), not Docker's bridge, no route.
    assert not lan.ping(a, GATEWAY, count=1)
    assert not lan.ping(a, "198.19.200.1", count=1)
    routes = lan.dockerd.cli("exec", a, "ip", "route").stdout
    assert "default" not in routes, routes
    assert lan.dockerd.cli("exec", a, "ip", "-o", "link").stdout.count("link/ether") == 1
    lan.dockerd.cli("rm", "-f", a, b)
    lan.dockerd.cli("network", "rm", net)
    assert bridge not in _root_links()
    _assert_nothing_left(lan, pn_before)


def _has_8021q() -> bool:
    name = f"pntq{secrets.token_hex(3)}"
    _ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    try:
        return _ip("link", "add", "link", name, "name", f"{name}.9", "type", "vlan", "id", "9",
                   check=False).returncode == 0
    finally:
        _ip("link", "del", name, check=False)


def test_vlan_parent(lan: Lan) -> None:
    """With 8021q: the sub-interface is made, traffic is tagged 42, the link goes with the
    network. Without it (this project's test machines): the refusal says why, nothing made."""
    pn_before = _pn_links()
    sub = f"{lan.parent}.42"
    if not _has_8021q():
        proc = lan.network(parent=sub, check=False)
        assert proc.returncode != 0
        assert sub in proc.stderr and "802.1q" in proc.stderr, proc.stderr
        assert sub not in _root_links()
        _assert_nothing_left(lan, pn_before)
        return
    # The LAN host: VLAN 42 interface with the gateway; its untagged one gets .2 and must
    # stay silent for tagged traffic (arp_ignore=1: answer ARP only on the owning interface).
    _ip("-n", lan.ns, "addr", "del", f"{GATEWAY}/24", "dev", "lan")
    _ip("-n", lan.ns, "link", "add", "link", "lan", "name", "lan.42", "type", "vlan", "id", "42")
    _ip("-n", lan.ns, "addr", "add", f"{GATEWAY}/24", "dev", "lan.42")
    _ip("-n", lan.ns, "link", "set", "lan.42", "up")
    _ip("-n", lan.ns, "addr", "add", "198.18.100.2/24", "dev", "lan")
    lan.lan_exec("sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", check=True)
    net = lan.network(parent=sub).name
    assert sub in _root_links()
    a = lan.run(net, "198.18.100.10")
    assert lan.ping(a, GATEWAY)
    assert not lan.ping(a, "198.18.100.2", count=1)
    lan.dockerd.cli("rm", "-f", a)
    lan.dockerd.cli("network", "rm", net)
    assert sub not in _root_links() and lan.parent in _root_links()
    _assert_nothing_left(lan, pn_before)


@pytest.fixture
def down_link() -> Iterator[str]:
    name = f"pntd{secrets.token_hex(3)}"
    _ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    try:
        yield name
    finally:
        _ip("link", "del", name, check=False)


@pytest.mark.parametrize("case", ["missing", "down", "loopback", "mtu", "mode", "bad-vlan"])
def test_bad_parent_or_option_is_refused(lan: Lan, down_link: str, case: str) -> None:
    pn_before = _pn_links()
    links_before = _root_links()
    parent, opts, fragments = {
        "missing": ("pntnone0", (), ["pntnone0", "does not exist"]),
        "down": (down_link, (), [down_link, "is down"]),
        "loopback": ("lo", (), ["lo", "loopback"]),
        "mtu": ("lan", ("-o", "mtu=9000"), [lan.parent, "9000", "1500"]),
        "mode": ("lan", ("-o", "macvlan_mode=l3"), ["macvlan_mode", "'l3'"]),
        "bad-vlan": (f"{lan.parent}.5000", (), [f"{lan.parent}.5000", "1-4094"]),
    }[case]
    proc = lan.network(*opts, parent=parent, check=False)
    assert proc.returncode != 0
    assert all(f in proc.stderr for f in fragments), proc.stderr
    assert _root_links() == links_before
    _assert_nothing_left(lan, pn_before)


def test_parent_shared_only_with_disjoint_subnets_and_never_in_passthru(lan: Lan) -> None:
    first = lan.network().name
    # Docker's IPAM refuses overlapping pools within one address space itself; with another
    # IPAM (pynet's) for the second network, only the driver stands in the way.
    proc = lan.network("--ipam-driver", "pynet", subnet="198.18.100.128/25", gateway="198.18.100.129",
                       check=False)
    assert proc.returncode != 0
    assert lan.parent in proc.stderr and "overlaps" in proc.stderr, proc.stderr
    proc = lan.network("-o", "macvlan_mode=passthru", subnet="198.18.101.0/24", gateway="198.18.101.1",
                       check=False)
    assert proc.returncode != 0
    assert lan.parent in proc.stderr and "passthru" in proc.stderr, proc.stderr
    # A disjoint subnet may share the parent.
    second = lan.network(subnet="198.18.101.0/24", gateway="198.18.101.1").name
    lan.dockerd.cli("network", "rm", first, second)
    # Passthru alone is fine; then nobody else may join it.
    alone = lan.network("-o", "macvlan_mode=passthru").name
    proc = lan.network(subnet="198.18.101.0/24", gateway="198.18.101.1", check=False)
    assert proc.returncode != 0 and "passthru" in proc.stderr, proc.stderr
    a = lan.run(alone, "198.18.100.10")
    assert lan.ping(a, GATEWAY)


def test_state_survives_a_plugin_restart(lan: Lan, plugin: PluginProcess) -> None:
    on_lan = lan.network().name
    inner = lan.network(parent=None, gateway=None, subnet="198.18.102.0/24").name
    inner_id = lan.dockerd.cli("network", "inspect", "-f", "{{.Id}}", inner).stdout.strip()
    a = lan.run(on_lan, "198.18.100.10")
    plugin.stop()
    _ip("link", "del", f"pn-{inner_id[:12]}")  # lost while the plugin was down
    plugin.start()
    assert f"pn-{inner_id[:12]}" in _root_links()
    assert lan.parent in _root_links()
    assert lan.ping(a, GATEWAY)
    b = lan.run(on_lan, "198.18.100.11")
    assert lan.ping(b, "198.18.100.10")
    c, d = lan.run(inner, "198.18.102.10"), lan.run(inner, "198.18.102.11")
    assert lan.ping(c, "198.18.102.11")
    # The restarted plugin still knows the parent is taken for 198.18.100.0/24.
    proc = lan.network("--ipam-driver", "pynet", subnet="198.18.100.0/25", gateway="198.18.100.1",
                       check=False)
    assert proc.returncode != 0 and "overlaps" in proc.stderr, proc.stderr
    lan.dockerd.cli("rm", "-f", a, b, c, d)
    lan.dockerd.cli("network", "rm", on_lan, inner)
    assert f"pn-{inner_id[:12]}" not in _root_links()


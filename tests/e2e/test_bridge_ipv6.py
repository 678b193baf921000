"""IPv6 on bridge networks with the real dockerd, each proven like its IPv4 twin in
test_bridge_external.py: outbound masquerade, `docker run -p` published on [::] as well as
0.0.0.0 (one host port), on a given IPv6 host address, hairpin, [::1] refused clearly, and
Docker's routed gateway mode (`-o com.docker.network.bridge.gateway_mode_ipv6=routed`).

The "outside" is a namespace the test makes, joined to the host by a veth with an IPv4
/24 (198.18.0.0/15) and an IPv6 /64 (ULA, fd18::/16, never the host's own networks); it has
no route anywhere else, so it only answers a container whose traffic was NATed to the
host's address. Traffic goes only between namespaces and containers the tests made.
The plugin turns IPv6 forwarding on (as Docker does for IPv6 networks): the host's value
is put back afterwards.
"""
from __future__ import annotations

import ipaddress
import json
import random
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.dockerd import DockerCLIError, DockerDaemon
from tests.harness.netprobe import PING
from tests.harness.outside import PAGE, Env, free_port, free_subnets, nft_table, outside_env
from tests.harness.outside import bindable as _bindable
from tests.harness.outside import run as _run
from tests.harness.plugin import PluginProcess

IPV6_FORWARDING = Path("/proc/sys/net/ipv6/conf/all/forwarding")


def free_subnets6(n: int) -> list[str]:
    """n /64s of fd18::/16 that no IPv6 route on the host touches."""
    used = []
    for route in json.loads(_run("ip", "-j", "-6", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "default")
        if dst not in ("default", "multicast") and not dst.startswith("ff"):
            try:
                used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/128", strict=False))
            except ValueError:
                pass
    out: list[str] = []
    while len(out) < n:
        net = ipaddress.ip_network(f"fd18:{random.randint(0x100, 0xffff):x}::/64")
        if not any(net.overlaps(u) for u in used) and str(net) not in out:
            out.append(str(net))
    return out


def published_ports() -> list[dict]:
    """One entry per published port of either family: its map, host port and comment."""
    found = []
    for x in nft_table():
        m = x.get("map", {})
        if m.get("name") in ("published_any", "published_at", "published_any6", "published_at6"):
            for key, _target in m.get("elem", []):
                elem = key.get("elem", {"val": key}) if isinstance(key, dict) else {"val": key}
                found.append({"map": m["name"], "port": elem["val"]["concat"][-1],
                              "comment": elem.get("comment", "")})
    return found


class Env6:
    def __init__(self, env: Env, subnet6: str) -> None:
        net = ipaddress.ip_network(subnet6)
        self.env, self.host_ip6, self.outside_ip6, self.outside_subnet6 = env, str(net[1]), str(net[2]), subnet6

    def network(self, *opts: str) -> tuple[str, str]:
        """A dual-stack pynet network: its name and IPv6 subnet."""
        subnet6 = free_subnets6(1)[0]
        return self.env.network(free_subnets(1)[0], "--ipv6", "--subnet", subnet6, *opts), subnet6

    def ip6_of(self, ctr: str) -> str:
        return self.env.dockerd.cli("inspect", "-f",
                                    "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}",
                                    ctr).stdout.strip()

    def gateway6_of(self, network: str) -> str:
        return self.env.dockerd.cli("network", "inspect", "-f",
                                    "{{range .IPAM.Config}}{{.Gateway}} {{end}}", network).stdout.split()[-1]


@pytest.fixture
def env(dockerd: DockerDaemon, busybox_image: str, plugin: PluginProcess,
        make_netns: Callable[[], str]) -> Iterator[Env]:
    with outside_env(dockerd, busybox_image, plugin, make_netns) as e:
        yield e


@pytest.fixture
def env6(env: Env) -> Iterator[Env6]:
    forwarding = IPV6_FORWARDING.read_text().strip()
    subnet6 = free_subnets6(1)[0]
    e = Env6(env, subnet6)
    try:
        _run("ip", "-6", "addr", "add", f"{e.host_ip6}/64", "dev", env.link, "nodad")
        _run("ip", "netns", "exec", env.ns, "ip", "-6", "addr", "add", f"{e.outside_ip6}/64", "dev", "eth0",
             "nodad")
        yield e
    finally:
        # Networks go first (the dockerd fixture's cleanup runs after this one ends, so
        # remove ours now), then the host's IPv6 forwarding is what it was.
        _remove_test_objects(env)
        if IPV6_FORWARDING.read_text().strip() != forwarding:
            IPV6_FORWARDING.write_text(forwarding + "\n")


def _remove_test_objects(env: Env) -> None:
    d = env.dockerd
    ctrs = d.cli("ps", "-aq", "--filter", "name=pynet-t-ext-", check=False).stdout.split()
    if ctrs:
        d.cli("rm", "-f", *ctrs, check=False)
    nets = d.cli("network", "ls", "-q", "--filter", "name=pynet-t-ext-", check=False).stdout.split()
    if nets:
        d.cli("network", "rm", *nets, check=False)


def test_ipv6_masquerade_and_published_on_both_families(env6: Env6) -> None:
    env = env6.env
    net, subnet6 = env6.network()
    port = free_port()
    c = env.httpd(net, "-p", f"{port}:80")
    env.serve(env.in_outside(), 7000)
    # Out over IPv6: the outside sees the host's IPv6 address (masquerade), like IPv4.
    assert env.ask(env.netns_of(c), "tcp", env6.outside_ip6, 7000) == f"tcp {env6.host_ip6}"
    assert env.ask(env.netns_of(c), "udp", env6.outside_ip6, 7000) == f"udp {env6.host_ip6} ping"
    assert env.ask(env.netns_of(c), "tcp", env.outside_ip, 7000) == f"tcp {env.host_ip}"
    # `-p PORT:80`: on [::] and 0.0.0.0, the same host port, both held by the plugin.
    assert env.curl(env.in_outside(), f"http://[{env6.host_ip6}]:{port}/") == PAGE
    assert env.curl(env.in_outside(), f"http://{env.host_ip}:{port}/") == PAGE
    assert env.curl([], f"http://[{env6.host_ip6}]:{port}/") == PAGE  # from the host itself
    assert env.curl(env.netns_of(c), f"http://[{env6.host_ip6}]:{port}/") == PAGE  # hairpin
    assert not _bindable("tcp", port) and not _bindable6("tcp", port)
    eid = env.endpoint_of(c)[:12]
    assert sorted((p["map"], p["port"]) for p in published_ports() if eid in p["comment"]) == [
        ("published_any", port), ("published_any6", port)]
    # The container's own IPv6 address is not reachable from the outside by routing.
    _run("ip", "netns", "exec", env.ns, "ip", "-6", "route", "add", subnet6, "via", env6.host_ip6)
    assert env.curl(env.in_outside(), f"http://[{env6.ip6_of(c)}]:80/") == ""
    env.dockerd.cli("rm", "-f", c)
    assert not [p for p in published_ports() if eid in p["comment"]]
    assert _bindable6("tcp", port) and _bindable("tcp", port)
    assert env.curl(env.in_outside(), f"http://[{env6.host_ip6}]:{port}/") == ""


def test_ipv6_given_host_address_and_loopback_refused(env6: Env6) -> None:
    env = env6.env
    net, _ = env6.network()
    port = free_port()
    env.httpd(net, "-p", f"[{env6.host_ip6}]:{port}:80")
    assert env.curl(env.in_outside(), f"http://[{env6.host_ip6}]:{port}/") == PAGE
    assert env.curl(env.in_outside(), f"http://{env.host_ip}:{port}/") == ""  # that address only
    assert [p["map"] for p in published_ports() if p["port"] == port] == ["published_at6"]
    with pytest.raises(DockerCLIError) as err:
        env.httpd(net, "-p", f"[::1]:{free_port()}:80")
    assert "IPv6 loopback" in str(err.value) and "127.0.0.1" in str(err.value)


def test_routed_gateway_mode_ipv6(env6: Env6) -> None:
    env = env6.env
    net, subnet6 = env6.network("-o", "com.docker.network.bridge.gateway_mode_ipv6=routed")
    port = free_port()
    c = env.httpd(net, "-p", f"{port}:80")
    env.serve(env.in_outside(), 7000)
    _run("ip", "netns", "exec", env.ns, "ip", "-6", "route", "add", subnet6, "via", env6.host_ip6)
    ip6 = env6.ip6_of(c)
    # Routed: no masquerade; the published port is open at the container's address, on
    # the container port; no host port on IPv6; another port of the container stays closed.
    assert env.ask(env.netns_of(c), "tcp", env6.outside_ip6, 7000) == f"tcp {ip6}"
    assert env.curl(env.in_outside(), f"http://[{ip6}]:80/") == PAGE
    assert env.curl(env.in_outside(), f"http://[{env6.host_ip6}]:{port}/") == ""
    env.serve(env.netns_of(c), 81)
    assert env.ask(env.in_outside(), "tcp", ip6, 81).startswith("fail")
    assert env.ping(c, env6.outside_ip6) and _ping_from_outside(env, ip6)
    # IPv4 stays in nat mode.
    assert env.curl(env.in_outside(), f"http://{env.host_ip}:{port}/") == PAGE
    assert env.ask(env.netns_of(c), "tcp", env.outside_ip, 7000) == f"tcp {env.host_ip}"


def _ping_from_outside(env: Env, address: str) -> bool:
    return _run(*env.in_outside(), sys.executable, "-c", PING, address).stdout.strip() == "ok"


def _bindable6(proto: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

"""Bridge networks and the world, end to end: outbound NAT, isolation, internal networks,
icc, published ports (TCP and UDP, from outside, from the host's 127.0.0.1, hairpin),
port conflicts, and rules surviving a crash and hand-deletion.

The "outside" is a namespace the test makes, joined to the host by a veth; it has no route
anywhere but its own /24, so it only answers a container whose traffic was NATed to the
host's address. Every address is in 198.18.0.0/15; traffic goes only between namespaces
and containers the tests made, and over loopback.

busybox-static here has no `nc -u`: UDP is served and sent by tests/harness/netprobe.py,
run with nsenter inside the container's network namespace (or in the outside namespace).
"""
from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Callable, Iterator

import pytest

from tests.harness.dockerd import DockerDaemon, DockerCLIError
from tests.harness.outside import (PAGE, TABLE, Env, dnat_port, free_port, free_subnets, nft_table,
                                   nft_text, outside_env, published_ports, shim_rules)
from tests.harness.outside import bindable as _bindable
from tests.harness.outside import unique_name as _name
from tests.harness.outside import run as _run
from tests.harness.plugin import PluginProcess


@pytest.fixture
def env(dockerd: DockerDaemon, busybox_image: str, plugin: PluginProcess,
        make_netns: Callable[[], str]) -> Iterator[Env]:
    with outside_env(dockerd, busybox_image, plugin, make_netns) as e:
        yield e


# --- outbound, isolation, internal, icc ---------------------------------------------------
def test_container_reaches_the_outside_as_the_host(env: Env) -> None:
    net = env.network(free_subnets(1)[0])
    c = env.run(net)
    env.serve(env.in_outside(), 7000)
    assert env.tcp_from(c, env.outside_ip, 7000) == f"tcp {env.host_ip}"
    assert env.ping(c, env.outside_ip)
    assert env.ask(env.netns_of(c), "udp", env.outside_ip, 7000) == f"udp {env.host_ip} ping"


def test_masquerade_off_routes_without_nat(env: Env) -> None:
    subnet = free_subnets(1)[0]
    net = env.network(subnet, "-o", "com.docker.network.bridge.enable_ip_masquerade=false")
    c = env.run(net)
    env.serve(env.in_outside(), 7000)
    assert env.tcp_from(c, env.outside_ip, 7000) == ""  # the outside has no route back
    _run("ip", "netns", "exec", env.ns, "ip", "route", "add", subnet, "via", env.host_ip)
    assert env.tcp_from(c, env.outside_ip, 7000) == f"tcp {env.ip_of(c)}"


def test_internal_network_has_no_way_out(env: Env) -> None:
    subnet = free_subnets(1)[0]
    net = env.network(subnet, internal=True)
    c = env.run(net, "--cap-add", "NET_ADMIN")
    env.serve(env.in_outside(), 7000)
    # pynet gives internal networks no gateway; add a route by hand, and give the outside a
    # route back (no NAT on internal networks): only the firewall can still say no.
    env.dockerd.cli("exec", c, "ip", "route", "add", env.outside_subnet, "via", env.gateway_of(net))
    _run("ip", "netns", "exec", env.ns, "ip", "route", "add", subnet, "via", env.host_ip)
    assert env.tcp_from(c, env.outside_ip, 7000) == ""
    assert not env.ping(c, env.outside_ip)
    # A published port on an internal network is ignored (Docker calls no
    # ProgramExternalConnectivity for it): no rule appears.
    port = free_port()
    env.httpd(net, "-p", f"{port}:80")
    assert all(dnat_port(r) != port for r in published_ports())


def test_icc_off_containers_cannot_talk(env: Env) -> None:
    net = env.network(free_subnets(1)[0], "-o", "com.docker.network.bridge.enable_icc=false")
    a, b = env.run(net), env.run(net)
    assert not env.ping(a, env.ip_of(b)) and not env.ping(b, env.ip_of(a))
    env.serve(env.in_outside(), 7000)
    assert env.tcp_from(a, env.outside_ip, 7000) == f"tcp {env.host_ip}"  # the way out stays open
    icc = env.network(free_subnets(1)[0], "-o", "icc=true")
    x, y = env.run(icc), env.run(icc)
    assert env.ping(x, env.ip_of(y))


def test_pynet_networks_are_isolated_from_each_other_and_from_docker_bridges(env: Env) -> None:
    sub_a, sub_b = free_subnets(2)
    net_a, net_b = env.network(sub_a), env.network(sub_b)
    docker_net = _name("dnet")
    env.dockerd.cli("network", "create", "-d", "bridge", docker_net)  # from 198.19.0.0/17
    a, b = env.run(net_a), env.run(net_b)
    d, d0 = env.run(docker_net), env.run("bridge")  # a user bridge and Docker's default bridge
    ip_a, ip_b, ip_d, ip_d0 = env.ip_of(a), env.ip_of(b), env.ip_of(d), env.ip_of(d0)
    for src, dst in ((a, ip_b), (b, ip_a), (a, ip_d), (a, ip_d0), (d, ip_a), (d0, ip_a)):
        assert not env.ping(src, dst), f"{src} reached {dst}"
    assert env.ping(d, env.dockerd.cli("network", "inspect", "-f",
                                       "{{range .IPAM.Config}}{{.Gateway}}{{end}}", docker_net).stdout.strip())
    env.serve(env.in_outside(), 7000)
    assert env.tcp_from(a, env.outside_ip, 7000) == f"tcp {env.host_ip}"
    assert env.tcp_from(b, env.outside_ip, 7000) == f"tcp {env.host_ip}"


# --- published ports --------------------------------------------------------------------
def test_published_tcp_and_udp_from_outside_host_loopback_and_hairpin(env: Env) -> None:
    net = env.network(free_subnets(1)[0])
    tport, uport = free_port(), free_port()
    c = env.httpd(net, "-p", f"{tport}:80", "-p", f"{uport}:6000/udp")
    gw = env.gateway_of(net)
    env.serve(env.netns_of(c), 6000)  # the UDP side (and a spare TCP listener on 6000)
    url = f"http://{env.host_ip}:{tport}/"
    # TCP: from the outside namespace, from the host (127.0.0.1 and its own address), and
    # from the container itself through the host's address (hairpin).
    assert env.curl(env.in_outside(), url) == PAGE
    assert env.curl([], f"http://127.0.0.1:{tport}/") == PAGE
    assert env.curl([], url) == PAGE
    assert env.wget_from(c, url) == PAGE
    # UDP, the same three ways; the echo shows who the container saw.
    assert env.ask(env.in_outside(), "udp", env.host_ip, uport) == f"udp {env.outside_ip} ping"
    assert env.ask([], "udp", "127.0.0.1", uport) == f"udp {gw} ping"
    assert env.ask(env.netns_of(c), "udp", env.host_ip, uport) == f"udp {gw} ping"
    # The container's port itself is not reachable from the outside by routing.
    _run("ip", "netns", "exec", env.ns, "ip", "route", "add", str(ipaddress.ip_network(f"{gw}/24", strict=False)),
         "via", env.host_ip)
    assert env.curl(env.in_outside(), f"http://{env.ip_of(c)}:80/") == ""
    # The host ports are held while published.
    assert not _bindable("tcp", tport) and not _bindable("udp", uport)

    env.dockerd.cli("rm", "-f", c)
    assert not [r for r in published_ports() if dnat_port(r) in (tport, uport)]
    assert env.curl(env.in_outside(), url) == ""
    assert _bindable("tcp", tport) and _bindable("udp", uport)


def test_host_port_zero_range_and_host_ip(env: Env) -> None:
    net = env.network(free_subnets(1)[0])
    start = free_port()
    c = env.httpd(net, "-p", "80", "-p", f"{start}-{start + 5}:80", "-p", f"127.0.0.1:{start + 6}:80")
    eid = env.endpoint_of(c)[:12]
    ports = sorted(dnat_port(r) for r in published_ports() if eid in r.get("comment", ""))
    assert len(ports) == 3 and start in ports and start + 6 in ports, ports
    any_port = next(p for p in ports if p not in (start, start + 6))
    for port in (any_port, start):
        assert env.curl(env.in_outside(), f"http://{env.host_ip}:{port}/") == PAGE
    # 127.0.0.1 only: reachable from the host's loopback, not on the host's other addresses.
    assert env.curl([], f"http://127.0.0.1:{start + 6}/") == PAGE
    assert env.curl(env.in_outside(), f"http://{env.host_ip}:{start + 6}/") == ""


def test_conflicting_host_port_fails_clearly_and_leaves_nothing(env: Env) -> None:
    net = env.network(free_subnets(1)[0])
    port = free_port()
    first = env.httpd(net, "-p", f"{port}:80")
    rules_before, links_before = published_ports(), _pn_links()
    with pytest.raises(DockerCLIError) as err:
        env.httpd(net, "-p", f"{port}:80")
    assert f"host port {port}/tcp on 0.0.0.0 is already in use" in str(err.value)
    assert published_ports() == rules_before and _pn_links() == links_before
    containers = env.dockerd.cli("network", "inspect", "-f", "{{len .Containers}}", net).stdout.strip()
    assert containers == "1"
    assert env.curl(env.in_outside(), f"http://{env.host_ip}:{port}/") == PAGE  # the first one still works
    env.dockerd.cli("rm", "-f", first)

    # A port Docker itself publishes (docker-proxy holds it) is just as taken.
    docker_port = free_port()
    env.httpd("bridge", "-p", f"{docker_port}:80")
    with pytest.raises(DockerCLIError) as err:
        env.httpd(net, "-p", f"{docker_port}:80")
    assert f"{docker_port}/tcp" in str(err.value) and "already in use" in str(err.value)
    assert not [r for r in published_ports() if dnat_port(r) == docker_port]


# --- crash, hand-deletion, removal -------------------------------------------------------
def test_rules_deleted_by_hand_come_back_after_a_crash(env: Env) -> None:
    net = env.network(free_subnets(1)[0])
    port = free_port()
    c = env.httpd(net, "-p", f"{port}:80")
    url = f"http://{env.host_ip}:{port}/"
    assert env.curl(env.in_outside(), url) == PAGE
    rules = nft_text()
    env.plugin.kill9()
    _run("nft", "delete", "table", *TABLE)
    _run("iptables", "-F", "PYNET-FORWARD")
    assert env.curl(env.in_outside(), url) == ""
    env.plugin.start()
    assert nft_text() == rules
    assert any(env.bridge_of(net) in line for line in shim_rules())
    assert env.curl(env.in_outside(), url) == PAGE
    env.serve(env.in_outside(), 7000)
    assert env.tcp_from(c, env.outside_ip, 7000) == f"tcp {env.host_ip}"


def test_removed_network_leaves_no_rule(env: Env) -> None:
    net = env.network(free_subnets(1)[0])
    bridge = env.bridge_of(net)
    port = free_port()
    c = env.httpd(net, "-p", f"{port}:80")
    assert bridge in nft_text() and any(bridge in line for line in shim_rules())
    env.dockerd.cli("rm", "-f", c)
    env.dockerd.cli("network", "rm", net)
    assert bridge not in nft_text() and not any(bridge in line for line in shim_rules())
    assert _bindable("tcp", port)

    # Deleted while its rules exist: an endpoint that still publishes a port (Docker never
    # revoked it, e.g. it died) when DeleteNetwork comes. Driven through the plugin socket.
    nid, eid = secrets.token_hex(32), secrets.token_hex(32)
    subnet = ipaddress.ip_network(free_subnets(1)[0])
    call = env.plugin.call
    assert call("/NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"Pool": str(subnet), "Gateway": f"{subnet[1]}/24"}]})[0] == 200
    assert call("/NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid,
                                                  "Interface": {"Address": f"{subnet[2]}/24"}})[0] == 200
    assert call("/NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid, "SandboxKey": "/x"})[0] == 200
    status, answer = call("/NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": nid, "EndpointID": eid, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": port, "HostPortEnd": port}]}})
    assert status == 200, answer
    assert any(dnat_port(r) == port for r in published_ports()) and not _bindable("tcp", port)
    assert call("/NetworkDriver.DeleteNetwork", {"NetworkID": nid})[0] == 200
    assert f"pn-{nid[:12]}" not in nft_text() and not any(nid[:12] in line for line in shim_rules())
    assert _bindable("tcp", port) and f"pn-{nid[:12]}" not in _pn_links()
    pynet_networks = env.dockerd.cli("network", "ls", "-q", "--filter", "driver=pynet").stdout.split()
    if not pynet_networks:
        assert nft_table() == []  # no pynet network: no pynet table at all


def _pn_links() -> set[str]:
    out = _run("ip", "-o", "link", "show").stdout
    names = {line.split(": ")[1].split("@")[0] for line in out.splitlines()}
    return {n for n in names if n.startswith(("pn-", "pnv", "pnc"))}


# --- a user's own bridge, a bridge deleted by hand (issue 17, item 6) -------------------
def _link(name: str) -> dict:
    return json.loads(_run("ip", "-j", "addr", "show", "dev", name).stdout)[0]


def _addresses(name: str) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in _link(name)["addr_info"]
            if not a["local"].startswith("fe80:")}


def _route_localnet(name: str) -> str:
    with open(f"/proc/sys/net/ipv4/conf/{name}/route_localnet") as f:
        return f.read().strip()


def test_a_users_own_bridge_keeps_its_mtu_and_address_and_loses_pynets_gateway(env: Env) -> None:
    own_subnet, subnet = map(ipaddress.ip_network, free_subnets(2))
    bridge, own = f"pntub{secrets.token_hex(3)}", f"{own_subnet[254]}/24"
    _run("ip", "link", "add", bridge, "mtu", "9000", "type", "bridge")
    try:
        _run("ip", "addr", "add", own, "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        net = env.network(str(subnet), "-o", f"com.docker.network.bridge.name={bridge}")
        gateway = f"{subnet[1]}/24"
        port = free_port()
        c = env.httpd(net, "-p", f"{port}:80")
        # In use: the bridge keeps the MTU it was made with (no `mtu` option), and so does
        # the container; pynet's gateway sits beside the user's own address.
        assert _link(bridge)["mtu"] == 9000
        assert env.dockerd.cli("exec", c, "cat", "/sys/class/net/eth0/mtu").stdout.strip() == "9000"
        assert _addresses(bridge) == {own, gateway}
        assert env.curl([], f"http://127.0.0.1:{port}/") == PAGE
        assert env.curl(env.in_outside(), f"http://{env.host_ip}:{port}/") == PAGE
        env.dockerd.cli("rm", "-f", c)
        env.dockerd.cli("network", "rm", net)
        link = _link(bridge)
        assert link["mtu"] == 9000 and "UP" in link["flags"]
        assert _addresses(bridge) == {own}
        assert _route_localnet(bridge) == "0"
    finally:
        _run("ip", "link", "del", bridge, check=False)


def test_a_bridge_deleted_by_hand_is_remade_by_the_next_run_and_serves_loopback(env: Env) -> None:
    net = env.network(free_subnets(1)[0], "-o", "com.docker.network.driver.mtu=1400")
    bridge = env.bridge_of(net)
    _run("ip", "link", "del", bridge)
    port = free_port()
    c = env.httpd(net, "-p", f"{port}:80")  # CreateEndpoint makes the bridge again
    assert _link(bridge)["mtu"] == 1400 and _route_localnet(bridge) == "1"
    assert env.curl([], f"http://127.0.0.1:{port}/") == PAGE
    assert env.curl(env.in_outside(), f"http://{env.host_ip}:{port}/") == PAGE
    assert env.wget_from(c, f"http://{env.host_ip}:{port}/") == PAGE  # hairpin

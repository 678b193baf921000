"""IPv6 on bridge networks, on a real kernel, each proven like its IPv4 twin in
test_firewall_nft.py: outbound masquerade, `-p` on [::] (with 0.0.0.0, one host port) and on
a given IPv6 host address, hairpin, restart, isolation, and Docker's routed gateway mode.

The plugin's app runs against a throwaway "host" namespace with Docker's FORWARD policy
DROP (ip6tables too); the "outside" namespace has no route anywhere but its own /64 (and
/24): it only answers a container whose traffic was NATed to the host's address. Every
IPv6 address is ULA (fd18::/16), every IPv4 one in 198.18.0.0/15."""
from __future__ import annotations

import socket

from tests.kernel.firewall_topology import (OUTSIDE_HOST_IP, OUTSIDE_HOST_IP6, OUTSIDE_IP,
                                            OUTSIDE_IP6, sh)

NID_A, NID_B, NID_C = "a" * 64, "b" * 64, "c" * 64
EID_1, EID_2, EID_3 = "1" * 64, "2" * 64, "3" * 64
SUB4, SUB6 = "198.18.100.0/24", "fd18:100::/64"
GW4, GW6 = "198.18.100.1", "fd18:100::1"
C4, C6 = "198.18.100.2", "fd18:100::2"


def port(container: int, host: int, host_ip: str = "", proto: int = 6, end: int | None = None) -> dict:
    return {"Proto": proto, "IP": "", "Port": container, "HostIP": host_ip, "HostPort": host,
            "HostPortEnd": host if end is None else end}


def dual_stack(topo, portmap=None, nid=NID_A, eid=EID_1, **generic) -> str:
    topo.network(nid, SUB4, subnet6=SUB6, **generic)
    return topo.container(nid, eid, f"{C4}/24", GW4, portmap, address6=f"{C6}/64", gateway6=GW6)


def elements(topo, name: str) -> str:
    return topo.nft.text(f"{'map' if name.startswith('published') else 'set'} inet pynet {name}")


def test_ipv6_masquerade_published_on_both_families_hairpin_and_restart(topo):
    c = dual_stack(topo, [port(80, 8080), port(80, 8080, proto=17)])
    topo.serve(c, 80)
    topo.serve(topo.outside, 7000)
    # IPv6 forwarding was turned on for the IPv6 network (a new namespace starts with it off).
    assert sh("cat", "/proc/sys/net/ipv6/conf/all/forwarding", ns=topo.host).stdout.strip() == "1"
    # Out: the outside sees the host's IPv6 address (masquerade), as with IPv4.
    assert topo.ask(c, "tcp", OUTSIDE_IP6, 7000) == f"tcp {OUTSIDE_HOST_IP6}"
    assert topo.ask(c, "udp", OUTSIDE_IP6, 7000) == f"udp {OUTSIDE_HOST_IP6} ping"
    assert topo.ask(c, "tcp", OUTSIDE_IP, 7000) == f"tcp {OUTSIDE_HOST_IP}"
    # `-p 8080:80` (no host address): published on 0.0.0.0 and on [::], one host port.
    for proto, suffix in (("tcp", ""), ("udp", " ping")):
        assert topo.ask(topo.outside, proto, OUTSIDE_HOST_IP6, 8080) == f"{proto} {OUTSIDE_IP6}{suffix}"
        assert topo.ask(topo.outside, proto, OUTSIDE_HOST_IP, 8080) == f"{proto} {OUTSIDE_IP}{suffix}"
    held = topo.deps.firewall.ports.held()
    assert {("tcp", "0.0.0.0", 8080), ("tcp", "::", 8080), ("udp", "::", 8080)} <= held
    assert f"tcp . 8080 comment \"net {NID_A[:12]} endpoint {EID_1[:12]}\" : {C6} . 80" in \
        elements(topo, "published_any6")
    # From the host itself on its own IPv6 address, and hairpin: the container through the
    # host's IPv6 address reaches itself, masqueraded to its gateway.
    assert topo.ask(topo.host, "tcp", OUTSIDE_HOST_IP6, 8080).startswith("tcp ")
    assert topo.ask(c, "tcp", OUTSIDE_HOST_IP6, 8080) == f"tcp {GW6}"
    assert topo.ask(c, "udp", OUTSIDE_HOST_IP6, 8080) == f"udp {GW6} ping"
    # Not published: the container's own IPv6 address is not reachable by routing.
    sh("ip", "-6", "route", "add", SUB6, "via", OUTSIDE_HOST_IP6, ns=topo.outside)
    assert topo.ask(topo.outside, "tcp", C6, 80).startswith("fail")
    # A restarted plugin re-takes both families' host ports and keeps the rules.
    rules = topo.nft_text()
    topo.start_plugin()
    assert topo.nft_text() == rules
    assert {("tcp", "0.0.0.0", 8080), ("tcp", "::", 8080)} <= topo.deps.firewall.ports.held()
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP6, 8080) == f"tcp {OUTSIDE_IP6}"
    # Revoked: both families go, the host ports are free again.
    assert topo.call("NetworkDriver.RevokeExternalConnectivity",
                     {"NetworkID": NID_A, "EndpointID": EID_1})[0] == 200
    assert topo.deps.firewall.ports.held() == set()
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP6, 8080).startswith("fail")
    assert "elements" not in elements(topo, "published_any6")


def test_ipv6_given_host_address_port_zero_and_refusals(topo):
    sh("ip", "-6", "addr", "add", "fd18:50::3/64", "dev", "pnt-up", "nodad", ns=topo.host)
    c = dual_stack(topo)
    topo.serve(c, 80)
    status, answer = topo.program(NID_A, EID_1, [port(80, 8080, f"{OUTSIDE_HOST_IP6}"), port(80, 0)])
    assert status == 200, answer
    # On the address given only: not on the host's other IPv6 address, not on IPv4.
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP6, 8080) == f"tcp {OUTSIDE_IP6}"
    assert topo.ask(topo.outside, "tcp", "fd18:50::3", 8080).startswith("fail")
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, 8080).startswith("fail")
    assert f"{OUTSIDE_HOST_IP6} . tcp . 8080" in elements(topo, "published_at6")
    # Host port 0: the kernel's choice, the same for 0.0.0.0 and [::].
    chosen = {(ip, p) for proto, ip, p in topo.deps.firewall.ports.held() if p != 8080}
    assert len(chosen) == 2 and {ip for ip, _ in chosen} == {"0.0.0.0", "::"}
    (any_port,) = {p for _, p in chosen}
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP6, any_port) == f"tcp {OUTSIDE_IP6}"
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, any_port) == f"tcp {OUTSIDE_IP}"
    # [::1] cannot be served in the kernel: refused, naming why and what works instead.
    status, answer = topo.program(NID_A, EID_1, [port(80, 8081, "::1")])
    assert status == 400 and "IPv6 loopback" in answer["Err"] and "127.0.0.1" in answer["Err"]
    # A host port someone holds on [::] only is a conflict for the IPv6 half, and the
    # IPv4 half taken first is released: nothing is left behind.
    topo.container(NID_A, EID_3, "198.18.100.3/24", GW4, address6="fd18:100::3/64", gateway6=GW6)
    squatter = topo.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        squatter.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        squatter.bind(("::", 9090))
        squatter.listen(1)
        before = topo.nft_text()
        status, answer = topo.program(NID_A, EID_3, [port(80, 9090)])
        assert status == 409 and "9090/tcp on ::" in answer["Err"], answer
        assert topo.nft_text() == before and ("tcp", "0.0.0.0", 9090) not in topo.deps.firewall.ports.held()
    finally:
        squatter.close()
    # An IPv6-only container: `-p 8082:80` is published on [::] alone.
    topo.network(NID_B, None, subnet6="fd18:101::/64")
    v6only = topo.container(NID_B, EID_2, None, None, [port(80, 8082)], address6="fd18:101::2/64",
                            gateway6="fd18:101::1")
    topo.serve(v6only, 80)
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP6, 8082) == f"tcp {OUTSIDE_IP6}"
    assert ("tcp", "0.0.0.0", 8082) not in topo.deps.firewall.ports.held()
    status, answer = topo.program(NID_B, EID_2, [port(80, 8083, OUTSIDE_HOST_IP)])
    assert status == 400 and "no IPv4 address" in answer["Err"]


def test_ipv6_isolation_icc_internal_and_no_masquerade(topo):
    a = dual_stack(topo)
    topo.network(NID_B, "198.18.101.0/24", subnet6="fd18:101::/64")
    b = topo.container(NID_B, EID_2, "198.18.101.2/24", "198.18.101.1", address6="fd18:101::2/64",
                       gateway6="fd18:101::1")
    topo.serve(a, 80)
    topo.serve(b, 80)
    assert topo.ask(a, "tcp", "fd18:101::2", 80).startswith("fail")
    assert topo.ask(b, "tcp", C6, 80).startswith("fail")
    assert not topo.ping(a, "fd18:101::2")
    # icc=false holds for IPv6 too; internal networks have no IPv6 way out.
    topo.network(NID_C, "198.18.102.0/24", subnet6="fd18:102::/64", icc="false")
    one = topo.container(NID_C, EID_3, "198.18.102.2/24", "198.18.102.1", address6="fd18:102::2/64",
                         gateway6="fd18:102::1")
    two = topo.container(NID_C, "4" * 64, "198.18.102.3/24", "198.18.102.1", address6="fd18:102::3/64",
                         gateway6="fd18:102::1")
    assert not topo.ping(one, "fd18:102::3") and not topo.ping(two, "fd18:102::2")
    topo.network("d" * 64, "198.18.103.0/24", internal=True, subnet6="fd18:103::/64")
    inside = topo.container("d" * 64, "5" * 64, "198.18.103.2/24", None, address6="fd18:103::2/64")
    sh("ip", "-6", "route", "add", "default", "via", "fd18:103::1", ns=inside)  # try anyway
    sh("ip", "-6", "route", "add", "fd18:103::/64", "via", OUTSIDE_HOST_IP6, ns=topo.outside)
    topo.serve(topo.outside, 7000)
    assert topo.ask(inside, "tcp", OUTSIDE_IP6, 7000).startswith("fail")
    # masquerade=false: IPv6 routed without NAT, so the outside (no route back) sees nothing.
    topo.network("e" * 64, "198.18.104.0/24", subnet6="fd18:104::/64", masquerade="false")
    plain = topo.container("e" * 64, "6" * 64, "198.18.104.2/24", "198.18.104.1",
                           address6="fd18:104::2/64", gateway6="fd18:104::1")
    assert topo.ask(plain, "tcp", OUTSIDE_IP6, 7000).startswith("fail")
    sh("ip", "-6", "route", "add", "fd18:104::/64", "via", OUTSIDE_HOST_IP6, ns=topo.outside)
    assert topo.ask(plain, "tcp", OUTSIDE_IP6, 7000) == "tcp fd18:104::2"
    # The NAT'd network still goes out as the host.
    assert topo.ask(a, "tcp", OUTSIDE_IP6, 7000) == f"tcp {OUTSIDE_HOST_IP6}"


def test_routed_gateway_mode_ipv6_next_to_nat_ipv4(topo):
    c = dual_stack(topo, [port(80, 8080)], **{"com.docker.network.bridge.gateway_mode_ipv6": "routed"})
    topo.serve(c, 80)
    topo.serve(c, 81)
    topo.serve(topo.outside, 7000)
    sh("ip", "-6", "route", "add", SUB6, "via", OUTSIDE_HOST_IP6, ns=topo.outside)
    # IPv6 is routed: no masquerade out, the published container port is open at the
    # container's own address (the client is seen as itself), no other port is, ICMPv6 is.
    assert topo.ask(c, "tcp", OUTSIDE_IP6, 7000) == f"tcp {C6}"
    assert topo.ask(topo.outside, "tcp", C6, 80) == f"tcp {OUTSIDE_IP6}"
    assert topo.ask(topo.outside, "tcp", C6, 81).startswith("fail")
    assert topo.ping(topo.outside, C6)
    # No host port on IPv6 (the host port of a routed mapping is not used, as with Docker).
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP6, 8080).startswith("fail")
    assert ("tcp", "::", 8080) not in topo.deps.firewall.ports.held()
    assert f"{C6} . tcp . 80" in elements(topo, "open6")
    # IPv4 stays in nat mode: masqueraded out, published on the host port.
    assert topo.ask(c, "tcp", OUTSIDE_IP, 7000) == f"tcp {OUTSIDE_HOST_IP}"
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, 8080) == f"tcp {OUTSIDE_IP}"
    # Containers of another network reach the open port directly too (Docker's routed
    # semantics), but not the unpublished one. That network is in nat mode: what leaves
    # its bridge is masqueraded (as Docker's), here to the routed network's gateway.
    topo.network(NID_B, "198.18.101.0/24", subnet6="fd18:101::/64")
    b = topo.container(NID_B, EID_2, "198.18.101.2/24", "198.18.101.1", address6="fd18:101::2/64",
                       gateway6="fd18:101::1")
    assert topo.ask(b, "tcp", C6, 80) == f"tcp {GW6}"
    assert topo.ask(b, "tcp", C6, 81).startswith("fail")
    # Revoked: the port is closed again.
    assert topo.call("NetworkDriver.RevokeExternalConnectivity",
                     {"NetworkID": NID_A, "EndpointID": EID_1})[0] == 200
    assert topo.ask(topo.outside, "tcp", C6, 80).startswith("fail")


def test_routed_gateway_mode_ipv4(topo):
    c = dual_stack(topo, [port(80, 8080)], **{"com.docker.network.bridge.gateway_mode_ipv4": "routed"})
    topo.serve(c, 80)
    topo.serve(topo.outside, 7000)
    sh("ip", "route", "add", SUB4, "via", OUTSIDE_HOST_IP, ns=topo.outside)
    assert topo.ask(c, "tcp", OUTSIDE_IP, 7000) == f"tcp {C4}"
    assert topo.ask(topo.outside, "tcp", C4, 80) == f"tcp {OUTSIDE_IP}"
    assert topo.ask(topo.outside, "tcp", C4, 81).startswith("fail")
    assert topo.ping(topo.outside, C4)
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, 8080).startswith("fail")
    # IPv6 in nat mode.
    assert topo.ask(c, "tcp", OUTSIDE_IP6, 7000) == f"tcp {OUTSIDE_HOST_IP6}"
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP6, 8080) == f"tcp {OUTSIDE_IP6}"
    # An unknown gateway mode is refused with the accepted ones.
    status, answer = topo.call("NetworkDriver.CreateNetwork", {
        "NetworkID": NID_C, "Options": {"com.docker.network.generic": {
            "com.docker.network.bridge.gateway_mode_ipv6": "nat-unprotected"}},
        "IPv4Data": [{"Pool": "198.18.102.0/24", "Gateway": "198.18.102.1/24"}]})
    assert status == 400 and "nat, routed" in answer["Err"]

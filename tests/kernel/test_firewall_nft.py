"""The bridge firewall on a real kernel, without Docker: the plugin's app runs against a
throwaway "host" namespace with Docker's FORWARD policy DROP, an "outside" namespace on a
veth, and containers as namespaces (see firewall_topology.py)."""
from __future__ import annotations

import socket
from pathlib import Path


from driver.firewall.forward_accept import ForwardAccept
from tests.kernel.firewall_topology import OUTSIDE_HOST_IP, OUTSIDE_IP, sh

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
NID_A, NID_B, NID_C = "a" * 64, "b" * 64, "c" * 64
EID_1, EID_2, EID_3 = "1" * 64, "2" * 64, "3" * 64
TCP80_8080 = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}
UDP80_8080 = {**TCP80_8080, "Proto": 17}


def forward_chain(ns: str, binary: str = "iptables") -> list[str]:
    """What the kernel holds of PYNET-FORWARD in namespace NS, read back with iptables-save:
    the chain's declaration, its rules and the jump to it (counters dropped)."""
    saved = sh(f"{binary}-save", "-t", "filter", ns=ns).stdout.splitlines()
    return [line.split(" [")[0] if line.startswith(":") else line
            for line in saved if "PYNET-FORWARD" in line]


def published_elements(topo) -> str:
    """The DNAT elements of both published maps, as nft lists them ("" if none)."""
    out = []
    for name in ("published_any", "published_at"):
        text = topo.nft.text(f"map inet pynet {name}")
        out += [line.strip() for line in text.splitlines() if " : " in line and "type " not in line]
    return "\n".join(out)


def test_outbound_nat_published_ports_loopback_and_hairpin(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    c = topo.container(NID_A, EID_1, "198.18.100.2/24", gw, [TCP80_8080, UDP80_8080])
    topo.serve(c, 80)
    topo.serve(topo.outside, 7000)
    # Out: the outside sees the host's address (masquerade).
    assert topo.ask(c, "tcp", OUTSIDE_IP, 7000) == f"tcp {OUTSIDE_HOST_IP}"
    assert topo.ask(c, "udp", OUTSIDE_IP, 7000) == f"udp {OUTSIDE_HOST_IP} ping"
    # In through the published port, from the outside: the container sees the client.
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, 8080) == f"tcp {OUTSIDE_IP}"
    assert topo.ask(topo.outside, "udp", OUTSIDE_HOST_IP, 8080) == f"udp {OUTSIDE_IP} ping"
    # From the host itself, on 127.0.0.1 and on its own address.
    assert topo.ask(topo.host, "tcp", "127.0.0.1", 8080) == f"tcp {gw}"
    assert topo.ask(topo.host, "udp", "127.0.0.1", 8080) == f"udp {gw} ping"
    assert topo.ask(topo.host, "tcp", OUTSIDE_HOST_IP, 8080).startswith("tcp ")
    # Hairpin: the container reaches its own published port via the host's addresses.
    assert topo.ask(c, "tcp", OUTSIDE_HOST_IP, 8080) == f"tcp {gw}"
    assert topo.ask(c, "udp", OUTSIDE_HOST_IP, 8080) == f"udp {gw} ping"
    assert topo.ask(c, "tcp", gw, 8080) == f"tcp {gw}"
    # Not published: the container's address is not reachable from the outside.
    sh("ip", "route", "add", "198.18.100.0/24", "via", OUTSIDE_HOST_IP, ns=topo.outside)
    assert topo.ask(topo.outside, "tcp", "198.18.100.2", 80).startswith("fail")


def test_rule_set_of_one_network_with_one_published_port_matches_golden(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    topo.container(NID_A, EID_1, "198.18.100.2/24", gw, [TCP80_8080])
    assert topo.nft_text() == (GOLDEN / "one_network_one_port.nft").read_text()
    in_kernel = forward_chain(topo.host)
    # A fresh object knows no bridges, and making one neither reads nor rewrites the kernel's chain.
    assert ForwardAccept(netns=topo.host).rules() == [] and forward_chain(topo.host) == in_kernel
    chain = sh("iptables", "-S", "PYNET-FORWARD", ns=topo.host).stdout.splitlines()
    assert chain == ["-N PYNET-FORWARD", f"-A PYNET-FORWARD -i pn-{NID_A[:12]} -j ACCEPT",
                     f"-A PYNET-FORWARD -o pn-{NID_A[:12]} -j ACCEPT"]


def test_forward_chain_goes_with_the_last_network_and_after_remove_all(topo):
    bridge = f"pn-{NID_A[:12]}"
    topo.network(NID_A, "198.18.100.0/24")
    assert forward_chain(topo.host) == [":PYNET-FORWARD -", "-A FORWARD -j PYNET-FORWARD",
                                        f"-A PYNET-FORWARD -i {bridge} -j ACCEPT",
                                        f"-A PYNET-FORWARD -o {bridge} -j ACCEPT"]
    assert forward_chain(topo.host, "ip6tables") == [":PYNET-FORWARD -", "-A FORWARD -j PYNET-FORWARD",
                                                     f"-A PYNET-FORWARD -i {bridge} -j ACCEPT",
                                                     f"-A PYNET-FORWARD -o {bridge} -j ACCEPT"]
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID_A})[0] == 200
    # The last network gone: nothing of pynet's is left in FORWARD (issue 9, F).
    assert forward_chain(topo.host) == [] and forward_chain(topo.host, "ip6tables") == []
    assert sh("iptables", "-S", "FORWARD", ns=topo.host).stdout.splitlines() == ["-P FORWARD DROP"]
    assert topo.nft_text() == ""
    # It comes back with the next network, and remove_all() takes it all away again.
    topo.network(NID_A, "198.18.100.0/24")
    assert forward_chain(topo.host)[:2] == [":PYNET-FORWARD -", "-A FORWARD -j PYNET-FORWARD"]
    topo.deps.firewall.remove_all()
    assert forward_chain(topo.host) == [] and forward_chain(topo.host, "ip6tables") == []
    assert topo.nft_text() == ""
    # Docker's policy, which pynet never owned, is still there.
    assert sh("iptables", "-S", "FORWARD", ns=topo.host).stdout.splitlines() == ["-P FORWARD DROP"]


def test_networks_are_isolated_from_each_other_and_from_foreign_bridges(topo):
    gw_a = topo.network(NID_A, "198.18.100.0/24")
    gw_b = topo.network(NID_B, "198.18.101.0/24")
    a = topo.container(NID_A, EID_1, "198.18.100.2/24", gw_a)
    b = topo.container(NID_B, EID_2, "198.18.101.2/24", gw_b)
    # A bridge pynet does not own (as Docker's would be), with a "container" on it.
    sh("ip", "link", "add", "pnt-foreign", "type", "bridge", ns=topo.host)
    sh("ip", "addr", "add", "198.18.102.1/24", "dev", "pnt-foreign", ns=topo.host)
    sh("ip", "link", "set", "pnt-foreign", "up", ns=topo.host)
    sh("iptables", "-A", "FORWARD", "-i", "pnt-foreign", "-j", "ACCEPT", ns=topo.host)  # as Docker's
    foreign = topo.namespaces.make("f")
    sh("ip", "link", "add", "pnt-fv", "type", "veth", "peer", "name", "eth0", "netns", foreign, ns=topo.host)
    sh("ip", "link", "set", "pnt-fv", "master", "pnt-foreign", "up", ns=topo.host)
    for argv in (("ip", "addr", "add", "198.18.102.2/24", "dev", "eth0"), ("ip", "link", "set", "eth0", "up"),
                 ("ip", "route", "add", "default", "via", "198.18.102.1")):
        sh(*argv, ns=foreign)
    for ns, port in ((a, 80), (b, 80), (foreign, 80)):
        topo.serve(ns, port)

    assert topo.ask(a, "tcp", "198.18.101.2", 80).startswith("fail")
    assert topo.ask(b, "tcp", "198.18.100.2", 80).startswith("fail")
    assert topo.ask(a, "tcp", "198.18.102.2", 80).startswith("fail")
    assert topo.ask(foreign, "tcp", "198.18.100.2", 80).startswith("fail")
    assert not topo.ping(a, "198.18.101.2") and not topo.ping(a, "198.18.102.2")
    # Both still reach the outside, and the host.
    topo.serve(topo.outside, 7000)
    assert topo.ask(a, "tcp", OUTSIDE_IP, 7000) == f"tcp {OUTSIDE_HOST_IP}"
    assert topo.ask(b, "tcp", OUTSIDE_IP, 7000) == f"tcp {OUTSIDE_HOST_IP}"
    # A bridge that is the host's way out (it carries the default route) stays reachable.
    sh("ip", "route", "add", "default", "via", "198.18.102.2", ns=topo.host)
    topo.network(NID_C, "198.18.103.0/24")  # any change rebuilds the table, and its uplinks
    assert topo.ask(a, "tcp", "198.18.102.2", 80).startswith("tcp ")


def test_icc_off_internal_and_no_masquerade(topo):
    gw = topo.network(NID_A, "198.18.100.0/24", icc="false")
    one = topo.container(NID_A, EID_1, "198.18.100.2/24", gw)
    two = topo.container(NID_A, EID_2, "198.18.100.3/24", gw)
    assert not topo.ping(one, "198.18.100.3") and not topo.ping(two, "198.18.100.2")
    topo.serve(topo.outside, 7000)
    assert topo.ask(one, "tcp", OUTSIDE_IP, 7000) == f"tcp {OUTSIDE_HOST_IP}"

    gw_int = topo.network(NID_B, "198.18.101.0/24", internal=True)
    inside = topo.container(NID_B, EID_3, "198.18.101.2/24", gateway=None)
    sh("ip", "route", "add", "198.18.50.0/24", "via", gw_int, ns=inside)  # try anyway,
    sh("ip", "route", "add", "198.18.101.0/24", "via", OUTSIDE_HOST_IP, ns=topo.outside)  # no NAT needed
    assert topo.ask(inside, "tcp", OUTSIDE_IP, 7000).startswith("fail")

    # masquerade=false: routed without NAT, so the outside (no route back) sees nothing.
    gw_c = topo.network(NID_C, "198.18.103.0/24", masquerade="false")
    plain = topo.container(NID_C, "4" * 64, "198.18.103.2/24", gw_c)
    assert topo.ask(plain, "tcp", OUTSIDE_IP, 7000).startswith("fail")
    sh("ip", "route", "add", "198.18.103.0/24", "via", OUTSIDE_HOST_IP, ns=topo.outside)
    assert topo.ask(plain, "tcp", OUTSIDE_IP, 7000) == "tcp 198.18.103.2"


def test_containers_cannot_reach_the_hosts_loopback(topo):
    """route_localnet is on for pynet bridges; only DNAT'd replies may use 127.0.0.0/8."""
    gw = topo.network(NID_A, "198.18.100.0/24")
    c = topo.container(NID_A, EID_1, "198.18.100.2/24", gw, [TCP80_8080])
    topo.serve(topo.host, 9)  # a service on the host's 0.0.0.0 (so also 127.0.0.1)
    # A container with NET_ADMIN sends to 127.0.0.1 through the gateway.
    for argv in (("ip", "rule", "del", "pref", "0"), ("ip", "rule", "add", "pref", "100", "lookup", "local"),
                 ("ip", "route", "add", "127.0.0.1/32", "via", gw, "table", "100"),
                 ("ip", "rule", "add", "pref", "10", "to", "127.0.0.1", "lookup", "100"),
                 ("sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1")):
        sh(*argv, ns=c)
    assert topo.ask(c, "tcp", "127.0.0.1", 9).startswith("fail")
    # The control: without pynet's input rule the same packets do reach the host's loopback.
    sh("nft", "flush", "chain", "inet", "pynet", "input", ns=topo.host)
    assert topo.ask(c, "tcp", "127.0.0.1", 9) == "tcp 198.18.100.2"


def test_port_in_use_is_a_conflict_and_leaves_nothing(topo):
    topo.network(NID_A, "198.18.100.0/24")
    before = topo.nft_text()
    squatter = topo.socket(socket.SOCK_STREAM)
    try:
        squatter.bind(("0.0.0.0", 8080))
        squatter.listen(1)
        topo.call("NetworkDriver.CreateEndpoint", {"NetworkID": NID_A, "EndpointID": EID_1,
                                                   "Interface": {"Address": "198.18.100.2/24"}})
        status, answer = topo.call("NetworkDriver.ProgramExternalConnectivity", {
            "NetworkID": NID_A, "EndpointID": EID_1,
            "Options": {"com.docker.network.portmap": [UDP80_8080, TCP80_8080]}})
        assert status == 409 and "8080/tcp" in answer["Err"] and "in use" in answer["Err"]
        assert topo.nft_text() == before
        assert topo.deps.firewall.ports.held() == set()  # the UDP port taken first was released
        status, answer = topo.call("NetworkDriver.EndpointOperInfo", {"NetworkID": NID_A, "EndpointID": EID_1})
        assert status == 200
    finally:
        squatter.close()
    # Ranges and port 0 choose free ports, and they are held until revoked.
    status, _ = topo.call("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NID_A, "EndpointID": EID_1, "Options": {"com.docker.network.portmap": [
            {**TCP80_8080, "HostPort": 0, "HostPortEnd": 0}, {**TCP80_8080, "Port": 81, "HostPort": 9000, "HostPortEnd": 9010}]}})
    assert status == 200
    held = topo.deps.firewall.ports.held()
    assert ("tcp", "0.0.0.0", 9000) in held and len(held) == 2
    assert topo.call("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NID_A, "EndpointID": EID_1})[0] == 200
    assert topo.deps.firewall.ports.held() == set()
    assert published_elements(topo) == ""


def test_restart_repairs_deleted_rules_and_drops_rules_of_vanished_networks(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    c = topo.container(NID_A, EID_1, "198.18.100.2/24", gw, [
        {**TCP80_8080, "HostPort": 0, "HostPortEnd": 0}])
    topo.serve(c, 80)
    port = topo.deps.firewall.published()[EID_1][0].host_port
    rules = topo.nft_text()
    # Crash, and someone deletes pynet's rules by hand.
    sh("nft", "delete", "table", "inet", "pynet", ns=topo.host)
    sh("iptables", "-F", "PYNET-FORWARD", ns=topo.host)
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, port).startswith("fail")
    topo.start_plugin()
    assert topo.nft_text() == rules
    assert len(sh("iptables", "-S", "PYNET-FORWARD", ns=topo.host).stdout.splitlines()) == 3
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, port) == f"tcp {OUTSIDE_IP}"
    assert ("tcp", "0.0.0.0", port) in topo.deps.firewall.ports.held()

    # Deleting the network (its endpoint never revoked) leaves no rule and no port.
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID_A})[0] == 200
    assert topo.nft_text() == "" and topo.deps.firewall.ports.held() == set()
    assert forward_chain(topo.host) == []  # nor the shim, with no network left


def test_sync_removes_rules_of_networks_no_longer_recorded(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    topo.container(NID_A, EID_1, "198.18.100.2/24", gw, [TCP80_8080])
    topo.network(NID_B, "198.18.101.0/24")
    assert f"pn-{NID_B[:12]}" in topo.nft_text()
    fw = topo.firewall()
    fw.sync([topo.service.network(NID_B)], [])
    text = topo.nft_text()
    assert f"pn-{NID_A[:12]}" not in text and f"pn-{NID_B[:12]}" in text
    assert published_elements(topo) == ""
    fw.sync([], [])
    assert topo.nft_text() == ""

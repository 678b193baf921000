"""The firewall changes incrementally on a real kernel: a network or a published port is one
nft transaction of its own elements; the fixed rules keep their handles; a refused change
leaves the kernel and the plugin's state as they were; a restart makes the table exact again.
(The behaviour itself, isolation, NAT, ports, is proven in test_firewall_nft.py.)"""
from __future__ import annotations

import re


from tests.kernel.firewall_topology import OUTSIDE_HOST_IP, OUTSIDE_IP, sh

NID_A, NID_B, NID_C = "a" * 64, "b" * 64, "c" * 64
TCP = {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}


def sent(topo) -> list[str]:
    """Record every transaction the plugin's firewall sends from now on."""
    scripts: list[str] = []
    nft = topo.deps.firewall.nft
    real = nft.apply

    def apply(script: str) -> None:
        scripts.append(script)
        real(script)

    nft.apply = apply
    return scripts


def with_handles(topo) -> str:
    return sh("nft", "-a", "list", "table", "inet", "pynet", ns=topo.host).stdout


def rule_handles(topo) -> list[str]:
    """Every chain and rule with its handle (set elements left out)."""
    return [line.strip() for line in with_handles(topo).splitlines()
            if "# handle" in line and not line.strip().startswith(("set ", "map "))]


def elements(topo, name: str) -> str:
    return topo.nft.text(f"set inet pynet {name}") or topo.nft.text(f"map inet pynet {name}")


def test_a_published_port_is_one_element_and_the_rules_keep_their_handles(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    topo.network(NID_B, "198.18.101.0/24")
    c = topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw, [TCP])
    topo.serve(c, 80)
    handles, bridges = rule_handles(topo), elements(topo, "bridges")
    scripts = sent(topo)
    topo.container(NID_A, "2" * 64, "198.18.100.3/24", gw, [{**TCP, "HostPort": 8081, "HostPortEnd": 8081}])
    assert scripts == ['add element inet pynet published_any { tcp . 8081 comment '
                       '"net aaaaaaaaaaaa endpoint 222222222222" : 198.18.100.3 . 80 }\n']
    assert rule_handles(topo) == handles and elements(topo, "bridges") == bridges
    assert "tcp . 8080" in elements(topo, "published_any")
    # Revoking is the exact key of that element, nothing else.
    scripts.clear()
    assert topo.call("NetworkDriver.RevokeExternalConnectivity",
                     {"NetworkID": NID_A, "EndpointID": "2" * 64})[0] == 200
    assert scripts == ["delete element inet pynet published_any { tcp . 8081 }\n"]
    assert rule_handles(topo) == handles and "tcp . 8081" not in elements(topo, "published_any")
    # The first port still works, through the same rules.
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, 8080) == f"tcp {OUTSIDE_IP}"


def test_the_work_of_a_change_does_not_grow_with_the_table(topo):
    """With 40 ports and 3 networks published, the next port is still one element."""
    gw = topo.network(NID_A, "198.18.100.0/24")
    topo.network(NID_B, "198.18.101.0/24")
    topo.network(NID_C, "198.18.102.0/24")
    ports = [{**TCP, "Port": 1000 + i, "HostPort": 9000 + i, "HostPortEnd": 9000 + i} for i in range(40)]
    topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw, ports)
    scripts = sent(topo)
    topo.container(NID_A, "2" * 64, "198.18.100.3/24", gw, [TCP])
    assert len(scripts) == 1 and scripts[0].count("\n") == 1
    # A network added or removed is its own elements (and the uplinks, re-read), never the table.
    scripts.clear()
    topo.network("d" * 64, "198.18.103.0/24", icc="false")
    assert len(scripts) == 1 and "table" not in scripts[0]
    assert {line.split()[4] for line in scripts[0].splitlines()} == {"bridges", "icc", "own4", "nat4", "uplinks"}
    scripts.clear()
    assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": "d" * 64})[0] == 200
    assert len(scripts) == 1 and all(line.startswith("delete element") for line in scripts[0].splitlines())


def test_a_network_added_and_removed_leaves_the_table_exactly_as_before(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw, [TCP])
    before, handles = topo.nft_text(), rule_handles(topo)
    topo.network(NID_B, "198.18.101.0/24", internal=True)
    topo.network(NID_C, "198.18.102.0/24", masquerade="false")
    assert rule_handles(topo) == handles
    assert '"pn-bbbbbbbbbbbb"' in elements(topo, "internal")
    assert '"pn-cccccccccccc" . 198.18.102.0/24' in elements(topo, "own4")
    assert "198.18.102.0/24" not in elements(topo, "nat4")
    for nid in (NID_B, NID_C):
        assert topo.call("NetworkDriver.DeleteNetwork", {"NetworkID": nid})[0] == 200
    assert topo.nft_text() == before and rule_handles(topo) == handles


def test_a_refused_change_leaves_the_kernel_and_the_state_as_they_were(topo):
    """A second network on an overlapping subnet cannot have its NAT elements (nft refuses
    overlapping intervals): the call fails, and nothing of it stays, in the kernel or in the
    plugin; the next network goes in as usual."""
    topo.network(NID_A, "198.18.100.0/24")
    before, handles = topo.nft_text(), rule_handles(topo)
    status, answer = topo.call("NetworkDriver.CreateNetwork", {
        "NetworkID": NID_B, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"Pool": "198.18.100.128/25", "Gateway": "198.18.100.129/25"}]})
    assert status != 200 and "nft refused" in answer["Err"], answer
    assert topo.nft_text() == before and rule_handles(topo) == handles
    assert set(topo.deps.firewall._networks) == {NID_A}
    topo.network(NID_C, "198.18.102.0/24")
    assert rule_handles(topo) == handles and '"pn-cccccccccccc"' in elements(topo, "bridges")


def test_elements_changed_behind_pynets_back_are_healed_by_the_next_change(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw, [TCP])
    full = topo.nft_text()
    # Someone deletes the port's element: revoking it (a delete of a missing element) falls
    # back to rebuilding the table from the plugin's state, in one transaction.
    sh("nft", "delete", "element", "inet", "pynet", "published_any", "{ tcp . 8080 }", ns=topo.host)
    assert topo.call("NetworkDriver.RevokeExternalConnectivity",
                     {"NetworkID": NID_A, "EndpointID": "1" * 64})[0] == 200
    assert "tcp . 8080" not in elements(topo, "published_any")
    # Someone deletes the whole table: the next change builds it again, complete.
    sh("nft", "delete", "table", "inet", "pynet", ns=topo.host)
    assert topo.call("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NID_A, "EndpointID": "1" * 64,
        "Options": {"com.docker.network.portmap": [TCP]}})[0] == 200
    assert topo.nft_text() == full


def test_restart_makes_the_table_exact_again(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw, [TCP])
    full = topo.nft_text()
    # While the plugin is down, one element goes and a foreign one appears.
    sh("nft", "delete", "element", "inet", "pynet", "nat4", "{ 198.18.100.0/24 }", ns=topo.host)
    sh("nft", "add", "element", "inet", "pynet", "bridges", '{ "pn-foreign" }', ns=topo.host)
    sh("nft", "add", "element", "inet", "pynet", "published_any", "{ udp . 5353 : 198.18.100.9 . 53 }", ns=topo.host)
    assert topo.nft_text() != full
    topo.start_plugin()
    assert topo.nft_text() == full
    assert not re.search(r"pn-foreign|5353", topo.nft_text())


def test_a_port_published_on_one_host_address_answers_there_only(topo):
    gw = topo.network(NID_A, "198.18.100.0/24")
    c = topo.container(NID_A, "1" * 64, "198.18.100.2/24", gw,
                       [{**TCP, "HostIP": OUTSIDE_HOST_IP, "HostPort": 8090, "HostPortEnd": 8090}])
    topo.serve(c, 80)
    assert f"{OUTSIDE_HOST_IP} . tcp . 8090" in elements(topo, "published_at")
    assert topo.ask(topo.outside, "tcp", OUTSIDE_HOST_IP, 8090) == f"tcp {OUTSIDE_IP}"
    assert topo.ask(topo.host, "tcp", "127.0.0.1", 8090).startswith("fail")


def test_a_replayed_create_network_re_adds_its_elements_and_changes_nothing(topo):
    topo.network(NID_A, "198.18.100.0/24")
    before, handles = topo.nft_text(), rule_handles(topo)
    scripts = sent(topo)
    topo.network(NID_A, "198.18.100.0/24")  # Docker repeating the call (restore_network)
    assert len(scripts) == 1 and "delete" not in scripts[0]  # no rebuild, nothing removed
    assert topo.nft_text() == before and rule_handles(topo) == handles

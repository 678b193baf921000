"""The rule sets pynet writes (nft scripts, one per transaction), against golden files in
tests/golden: `*.in.nft` is what pynet sends, `one_network_one_port.nft` what the kernel then
lists (tests/kernel).

Regenerate after an intended change with PYNET_UPDATE_GOLDEN=1, then read the diff.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from driver.firewall.forward_accept import ForwardAccept
from driver.firewall.nft_rules import (NetworkPolicy, Published, ScriptValueError, add_elements,
                                       delete_elements, delete_table, network_elements,
                                       port_element, ruleset)
from driver.models import NetworkRecord
from driver.options import parse_network_options
from driver.portmap import PortBinding

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
A, B, C = "a" * 64, "b" * 64, "c" * 64


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PYNET_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the golden file (PYNET_UPDATE_GOLDEN=1 rewrites it)"


def network(nid: str, subnets: tuple[str, ...], internal: bool = False, **generic: str) -> NetworkRecord:
    opts = parse_network_options({"com.docker.network.generic": generic,
                                  "com.docker.network.internal": internal})
    return NetworkRecord(id=nid, options=opts, bridge=f"pn-{nid[:12]}", bridge_created=True,
                         gateways=(), subnets=subnets)


def test_one_network_with_one_published_port():
    net = NetworkPolicy.of(network(A, ("198.18.100.0/24",)))
    port = Published(A, "1" * 64, PortBinding("tcp", "198.18.100.2", 80, "0.0.0.0", 8080, 8080, 8080))
    golden("one_network_one_port.in.nft", ruleset([net], [port], []))


def test_internal_icc_off_no_masquerade_host_ip_udp_uplinks_and_ipv6():
    nets = [
        NetworkPolicy.of(network(A, ("198.18.100.0/24", "fd00:100::/64"), icc="false")),
        NetworkPolicy.of(network(B, ("198.18.101.0/24",), internal=True, icc="false")),
        NetworkPolicy.of(network(C, ("198.18.102.0/24",), masquerade="false")),
    ]
    ports = [
        Published(A, "1" * 64, PortBinding("udp", "198.18.100.2", 53, "127.0.0.1", 5353, 5353, 5353)),
        Published(C, "3" * 64, PortBinding("tcp", "198.18.102.2", 80, "198.18.50.1", 49153, 0, 0)),
        Published(A, "1" * 64, PortBinding("tcp", "198.18.100.2", 80, "0.0.0.0", 8081, 8080, 8090)),
    ]
    golden("three_networks.in.nft", ruleset(nets, ports, ["br-uplink", "br-uplink"]))


def test_order_of_inputs_does_not_change_the_rule_set():
    nets = [NetworkPolicy.of(network(n, (f"198.18.{i}.0/24",))) for i, n in enumerate((A, B, C))]
    ports = [Published(A, "1" * 64, PortBinding("tcp", "198.18.0.2", 80, "0.0.0.0", p, p, p))
             for p in (81, 80, 82)]
    assert ruleset(nets, ports, ["x", "y"]) == ruleset(nets[::-1], ports[::-1], ["y", "x"])


def test_no_network_means_no_table():
    assert ruleset([], [], ["br0"]) == delete_table()
    assert delete_table() == "add table inet pynet\ndelete table inet pynet\n"


def test_table_is_replaced_atomically_in_one_transaction():
    lines = ruleset([NetworkPolicy.of(network(A, ("198.18.100.0/24",)))], [], []).splitlines()
    assert lines[:3] == ["add table inet pynet", "delete table inet pynet", "add table inet pynet"]
    assert all(line.split()[2:4] == ["inet", "pynet"] for line in lines if line.split()[0] == "add"
               and line.split()[1] != "table")


def test_a_change_is_its_own_elements_only():
    """Adding a network or a port is a few elements; deleting them names exactly their keys."""
    net = NetworkPolicy.of(network(A, ("198.18.100.0/24",)))
    assert add_elements(network_elements(net)) == [
        'add element inet pynet bridges { "pn-aaaaaaaaaaaa" comment "net aaaaaaaaaaaa" }',
        'add element inet pynet icc { "pn-aaaaaaaaaaaa" . "pn-aaaaaaaaaaaa" comment '
        '"net aaaaaaaaaaaa: icc=on" : accept }',
        'add element inet pynet own4 { "pn-aaaaaaaaaaaa" . 198.18.100.0/24 comment "net aaaaaaaaaaaa" }',
        'add element inet pynet nat4 { 198.18.100.0/24 comment "net aaaaaaaaaaaa: outbound NAT" }']
    port = Published(A, "1" * 64, PortBinding("udp", "198.18.100.2", 53, "127.0.0.1", 5353, 5353, 5353))
    assert delete_elements([port_element(port)]) == [
        "delete element inet pynet published_at { 127.0.0.1 . udp . 5353 }"]


@pytest.mark.parametrize("bad", ['pn-a" accept', "pn a", "x" * 16, ""])
def test_no_value_can_change_a_scripts_meaning(bad):
    rec = NetworkRecord(id=A, options=parse_network_options({}), bridge=bad, bridge_created=True,
                        gateways=(), subnets=("198.18.100.0/24",))
    with pytest.raises(ScriptValueError):
        network_elements(NetworkPolicy.of(rec))
    with pytest.raises(ValueError):
        port_element(Published(A, "1" * 64, PortBinding("tcp", "198.18.100.2; drop", 80,
                                                        "0.0.0.0", 1, 1, 1)))


def test_internal_network_has_no_nat_and_no_way_out():
    elements = network_elements(NetworkPolicy.of(network(B, ("198.18.101.0/24",), internal=True)))
    assert {e.set for e in elements} == {"icc", "internal"}


def test_forward_shim_accepts_in_and_out_of_pynet_bridges_only():
    # Built without binaries: `which` and `run` injected, every command it runs discarded.
    shim = ForwardAccept(which=lambda binary: f"/usr/sbin/{binary}",
                         run=lambda argv, stdin, timeout: subprocess.CompletedProcess(argv, 0, "", ""))
    shim.sync([network(B, ("198.18.101.0/24",)), network(A, ("198.18.100.0/24",))])
    golden("pynet_forward.rules", "\n".join(shim.rules()) + "\n")


@pytest.mark.parametrize("generic, expect", [
    ({}, (True, True)),
    ({"icc": "false"}, (False, True)),
    ({"com.docker.network.bridge.enable_icc": "0"}, (False, True)),
    ({"masquerade": "off"}, (True, False)),
    ({"com.docker.network.bridge.enable_ip_masquerade": "false"}, (True, False)),
])
def test_options_reach_the_policy(generic, expect):
    policy = NetworkPolicy.of(network(A, ("198.18.100.0/24", "fd00::/64"), **generic))
    assert (policy.icc, policy.masquerade) == expect
    assert policy.subnets4 == ("198.18.100.0/24",)

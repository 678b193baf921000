"""The rule sets pynet writes, against golden files in tests/golden.

Regenerate after an intended change with PYNET_UPDATE_GOLDEN=1, then read the diff.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from driver.firewall.forward_accept import ForwardAccept
from driver.firewall.nft_rules import NetworkPolicy, Published, delete_table, ruleset
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


def as_text(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def network(nid: str, subnets: tuple[str, ...], internal: bool = False, **generic: str) -> NetworkRecord:
    opts = parse_network_options({"com.docker.network.generic": generic,
                                  "com.docker.network.internal": internal})
    return NetworkRecord(id=nid, options=opts, bridge=f"pn-{nid[:12]}", bridge_created=True,
                         gateways=(), subnets=subnets)


def test_one_network_with_one_published_port():
    net = NetworkPolicy.of(network(A, ("198.18.100.0/24",)))
    port = Published(A, "1" * 64, PortBinding("tcp", "198.18.100.2", 80, "0.0.0.0", 8080, 8080, 8080))
    golden("one_network_one_port.json", as_text(ruleset([net], [port], [])))


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
    golden("three_networks.json", as_text(ruleset(nets, ports, ["br-uplink", "br-uplink"])))


def test_order_of_inputs_does_not_change_the_rule_set():
    nets = [NetworkPolicy.of(network(n, (f"198.18.{i}.0/24",))) for i, n in enumerate((A, B, C))]
    ports = [Published(A, "1" * 64, PortBinding("tcp", "198.18.0.2", 80, "0.0.0.0", p, p, p))
             for p in (81, 80, 82)]
    assert ruleset(nets, ports, ["x", "y"]) == ruleset(nets[::-1], ports[::-1], ["y", "x"])


def test_no_network_means_no_table():
    assert ruleset([], [], ["br0"]) == delete_table()
    assert [next(iter(c)) for c in delete_table()["nftables"]] == ["add", "delete"]


def test_table_is_replaced_atomically_in_one_transaction():
    doc = ruleset([NetworkPolicy.of(network(A, ("198.18.100.0/24",)))], [], [])
    verbs = [next(iter(c)) for c in doc["nftables"][:3]]
    objects = [next(iter(next(iter(c.values())))) for c in doc["nftables"]]
    assert verbs == ["add", "delete", "add"]
    assert set(objects[3:]) == {"set", "chain", "rule"}
    tables = {json.dumps(v[o], sort_keys=True) for c in doc["nftables"] for v in c.values() for o in v
              if o != "table"}
    assert all('"table": "pynet"' in t and '"family": "inet"' in t for t in tables)


def test_internal_network_has_no_nat_and_no_way_out():
    doc = ruleset([NetworkPolicy.of(network(B, ("198.18.101.0/24",), internal=True))], [], [])
    rules = [c["add"]["rule"] for c in doc["nftables"] if "rule" in c.get("add", {})]
    assert not [r for r in rules if r["chain"] in ("postrouting", "prerouting", "output", "input")]
    comments = [r["comment"] for r in rules]
    assert "net bbbbbbbbbbbb: internal, no way out" in comments
    assert not any("published" in c for c in comments)


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

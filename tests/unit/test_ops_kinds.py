"""The operator commands ask the kinds (driver/kinds/base.py), never the type: `pynet doctor`
checks each network through its kind and names the pynet-named links no record accounts for
by the set restore warns about; `pynet networks` and `status` show what each kind describes.
Simulated hosts over one store and strict fake kernels (tests/harness/overlay_fake.py); the
firewall's audit, which reads nft and iptables, is left to the e2e tests."""
from __future__ import annotations

import argparse
import ast
import io
import json
import logging
from pathlib import Path

import pytest

from driver import naming
from driver.options import NETWORK_TYPES
from pynet.ops import doctor, networks, status
from pynet.ops.context import Context, DockerNames
from pynet.ops.render import Output
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import GENERIC, FakeOverlayHosts
from tests.harness.wait import wait_until

N1, N2, NB, NM = "1" * 64, "2" * 64, "b" * 64, "c" * 64
E1, E2, EM = "a" * 64, "d" * 64, "e" * 64
SUBNET = "10.50.0.0/24"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def h1():
    """h1 with an overlay (h2 on it too), a bridge and a macvlan network, an endpoint on the
    overlay and on the macvlan one."""
    hosts = FakeOverlayHosts(MemoryStore())
    h1, h2 = hosts.add("h1", "198.18.0.11"), hosts.add("h2", "198.18.0.12")
    assert h1.create_network(N1, SUBNET)[0] == 200 and h2.create_network(N2, SUBNET)[0] == 200
    h1.create_endpoint(N1, E1, "10.50.0.2/24")
    h2.create_endpoint(N2, E2, "10.50.0.3/24")
    for nid, generic, pool in ((NB, {}, "10.60.0"), (NM, {"type": "macvlan", "parent": "eth0"}, "10.61.0")):
        h1.ok("NetworkDriver.CreateNetwork", {"NetworkID": nid, "Options": {GENERIC: generic},
                                              "IPv4Data": [{"Pool": f"{pool}.0/24", "Gateway": f"{pool}.1/24"}]})
    h1.ok("NetworkDriver.CreateEndpoint", {"NetworkID": NM, "EndpointID": EM,
                                           "Interface": {"Address": "10.61.0.2/24"}})
    h1.sync(), h2.sync()
    yield h1
    hosts.close()


def run(host, command, monkeypatch) -> tuple[int, dict]:
    """`pynet COMMAND --json` on `host`: its store, its kernel; dockerd not asked."""
    ctx = Context(host.settings, as_json=True)
    ctx.store, ctx.netlink, ctx.docker_names = host.store, host.netlink, DockerNames()
    ctx.out = Output(True, io.StringIO())
    monkeypatch.setattr(doctor, "differences", lambda nets, eps: [])
    monkeypatch.setattr(status, "_engine", lambda ctx: None)
    code = command(ctx, argparse.Namespace())
    return code, json.loads(ctx.out.stream.getvalue())


def test_doctor_finds_every_kinds_networks_as_made(h1, monkeypatch):
    code, doc = run(h1, doctor.doctor, monkeypatch)
    assert (code, doc["differences"], doc["unrecorded_links"]) == (0, [], []), doc
    assert doc["checked"] == {"networks": 3, "endpoints": 2}


def test_doctor_and_restore_agree_on_which_links_are_nobodys(h1, monkeypatch, caplog):
    # Named like the overlay endpoint's host end, which lives in the network's namespace
    # and never here; and like a VXLAN device of a network that is no overlay. Doctor's own
    # set of names once counted both as recorded; restore never did.
    strangers = [naming.host_veth(E1), naming.vxlan(NB)]
    for name in strangers:
        h1.netlink.add_device(name)
    _, doc = run(h1, doctor.doctor, monkeypatch)
    assert doc["unrecorded_links"] == sorted(strangers)
    with caplog.at_level(logging.WARNING, logger="driver.restore"):
        h1.restart()
        wait_until(lambda: h1.client.gate.restored, timeout=5, what="restore")
    warned = sorted(r.args[0] for r in caplog.records if "no record of this host names it" in r.getMessage())
    assert warned == sorted(strangers)


def test_networks_and_status_show_what_each_kind_describes(h1, monkeypatch):
    vni = h1.client.network.ledger.network(N1).vni
    want = {N1: (f"vni {vni}", None), NB: (f"bridge {naming.bridge(NB)}", None),
            NM: ("parent eth0", "eth0")}
    _, doc = run(h1, networks.networks, monkeypatch)
    assert {r["id"]: (r["device"], r["parent"]) for r in doc["networks"]} == want
    _, doc = run(h1, status.status, monkeypatch)
    assert {n["id"]: n["device"] for n in doc["networks"]} == {nid: d for nid, (d, _) in want.items()}


def test_the_operator_commands_compare_no_value_with_a_network_type():
    """What differs between types is the kinds' to say (a new type is its module alone)."""
    found = []
    for path in sorted((REPO / "pynet" / "ops").glob("*.py")) + [REPO / "pynet" / "metrics.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                    isinstance(side, ast.Constant) and side.value in NETWORK_TYPES
                    for side in (node.left, *node.comparators)):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []

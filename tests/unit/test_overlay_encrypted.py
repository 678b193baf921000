"""Encrypted overlays (issue 20): the option, the definition every host must agree on, the
MTU arithmetic, the VXLAN port of their own, and never serving one in clear."""
from __future__ import annotations

import pytest

from driver.options import GENERIC, parse_network_options
from driver.kinds.overlay.model import (Definition, InvalidRecord, OverlayId, agreed, link_mtu,
                                        max_mtu)
from driver.kinds.overlay.runtime import DEFAULT_ENCRYPTED_PORT
from pynet_core.errors import BadRequest, Conflict
from pynet_core.store.memory import MemoryStore
from tests.harness.overlay_fake import FakeOverlayHosts

OID = OverlayId("LocalDefault", "10.50.0.0/24")
ALL = ("bridge", "macvlan", "overlay")
SUBNET = "10.50.0.0/24"
N1, N2, N3 = "1" * 64, "2" * 64, "3" * 64


def overlay(**generic):
    return parse_network_options({GENERIC: {"type": "overlay", **generic}}, ALL)


# --- the option ----------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [("", True), ("true", True), ("True", True), ("1", True),
                                             ("yes", True), ("false", False), ("0", False),
                                             ("no", False)])
def test_encrypted_as_docker_spells_it_and_with_a_value(value, expected):
    # `docker network create -o encrypted` sends the key with an empty value.
    assert overlay(encrypted=value).encrypted is expected


def test_an_overlay_is_unencrypted_unless_asked():
    assert overlay().encrypted is False


@pytest.mark.parametrize("value", ["maybe", "2", "on please"])
def test_a_bad_encrypted_value_names_the_key_and_the_expectation(value):
    with pytest.raises(BadRequest, match=r"option encrypted=.*expected true or false"):
        overlay(encrypted=value)


@pytest.mark.parametrize("kind", ["bridge", "macvlan"])
def test_encrypted_is_refused_on_bridge_and_macvlan_saying_why(kind):
    with pytest.raises(BadRequest, match=rf"only overlay networks can be encrypted.*a {kind} network"):
        parse_network_options({GENERIC: {"type": kind, "encrypted": ""}}, ALL)


def test_swarm_allocate_network_options_carry_encrypted():
    # Swarm's AllocateNetwork hands the user's options as the generic map (driver/swarm.py).
    assert parse_network_options({GENERIC: {"type": "overlay", "encrypted": ""}}, ALL).encrypted


# --- the definition ------------------------------------------------------------------
def test_a_definition_records_encryption_and_an_old_one_is_unencrypted():
    base = {"vni": 4096, "mtu": 1390, "port": 4799}
    assert Definition.from_dict({**base, "encrypted": True}) == Definition(4096, 1390, 4799, encrypted=True)
    assert Definition.from_dict(base).encrypted is False  # written before the field existed
    assert Definition.from_dict(Definition(4096, 1390, 4799, "ab", True).to_dict()).encrypted


@pytest.mark.parametrize("bad", ["true", 1, 0, None, [], {}, "yes"])
def test_a_definition_whose_encrypted_is_not_a_boolean_is_refused(bad):
    with pytest.raises(InvalidRecord, match="encrypted"):
        Definition.from_dict({"vni": 4096, "mtu": 1390, "port": 4799, "encrypted": bad})


def test_a_definition_differing_in_encryption_is_refused_naming_the_hosts():
    clear = Definition(4096, 1450, 4789)
    with pytest.raises(Conflict, match=r"defined unencrypted.*by h1, h2; this network is encrypted"):
        agreed(clear, ["h2", "h1"], OID, vni=None, mtu=None, mtu_limit=1450, port=4789, encrypted=True)
    secret = Definition(4096, 1390, 4799, encrypted=True)
    with pytest.raises(Conflict, match=r"defined encrypted.*by h1; this network is unencrypted"):
        agreed(secret, ["h1"], OID, vni=None, mtu=None, mtu_limit=1390, port=4799, encrypted=False)
    assert agreed(secret, ["h1"], OID, vni=None, mtu=None, mtu_limit=1390, port=4799,
                  encrypted=True) == secret


# --- MTU -----------------------------------------------------------------------------
def test_the_encrypted_mtu_is_the_underlays_minus_vxlan_minus_wireguard():
    assert max_mtu(1500, encrypted=True) == 1390
    assert max_mtu(9000, encrypted=True) == 8890
    assert link_mtu(1500, None, "eth0", encrypted=True) == 1390
    assert link_mtu(1500, 1300, "eth0", encrypted=True) == 1300
    assert link_mtu(1500, 1390, "eth0", encrypted=True) == 1390
    with pytest.raises(BadRequest, match=r"MTU 1391 is too large for this encrypted overlay.*"
                                         r"eth0 \(MTU 1500\).*1500 - 50 \(VXLAN\) - 60 "
                                         r"\(WireGuard over IPv4\) = 1390"):
        link_mtu(1500, 1391, "eth0", encrypted=True)
    # Unencrypted: unchanged.
    assert max_mtu(1500) == link_mtu(1500, None, "eth0") == 1450


# --- the kind --------------------------------------------------------------------------
@pytest.fixture
def hosts():
    made = FakeOverlayHosts(MemoryStore())
    yield made
    made.close()


def test_without_a_wireguard_data_path_an_encrypted_overlay_is_refused_never_made_in_clear(hosts):
    h1 = hosts.add("h1", "198.18.0.11")
    status, answer = h1.create_network(N1, SUBNET, encrypted="")
    assert status == 400 and "not served by this plugin" in answer["Err"]
    assert h1.client.network.networks() == []
    assert [e.key for e in hosts.store.list("v1/overlay/nets/")] == []


class _StandIn:
    """A WireGuard data path that is there (the kind's checks only ask whether it is)."""


def _with_wireguard(host):
    host.client.overlay.wireguard = _StandIn()
    return host


def test_an_encrypted_overlay_has_its_own_vxlan_port_and_mtu_and_hosts_must_agree(hosts):
    h1, h2, h3 = (_with_wireguard(hosts.add(f"h{i}", f"198.18.0.1{i}")) for i in (1, 2, 3))
    assert h1.create_network(N1, SUBNET, encrypted="")[0] == 200
    vx = h1.vxlan(N1)
    assert (vx.port, vx.mtu) == (DEFAULT_ENCRYPTED_PORT, 1390)
    status, answer = h2.create_network(N2, SUBNET)  # the same overlay, without -o encrypted
    assert status == 409 and "defined encrypted" in answer["Err"] and "by h1" in answer["Err"]
    assert h2.client.network.networks() == []
    assert h3.create_network(N3, SUBNET, encrypted="true")[0] == 200
    # And the other way round: an unencrypted overlay refuses an encrypted join.
    assert h1.create_network(N2, "10.51.0.0/24")[0] == 200
    assert h1.vxlan(N2).port == 4789 and h1.vxlan(N2).mtu == 1450
    status, answer = h2.create_network(N2, "10.51.0.0/24", encrypted="")
    assert status == 409 and "defined unencrypted" in answer["Err"] and "by h1" in answer["Err"]


def test_an_encrypted_mtu_above_the_limit_is_refused_with_the_arithmetic(hosts):
    h1 = _with_wireguard(hosts.add("h1", "198.18.0.11"))
    status, answer = h1.create_network(N1, SUBNET, encrypted="", mtu="1400")
    assert status == 400 and "1500 - 50 (VXLAN) - 60 (WireGuard over IPv4) = 1390" in answer["Err"]

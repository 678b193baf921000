"""Options of `-o type=macvlan` networks, and the records that keep them."""
import pytest

from pynet_core.errors import BadRequest, Conflict
from driver.kinds.macvlan.parents import check_sharing, lower_still_used, split_vlan
from driver.models import NetworkRecord
from driver.options import GENERIC, INTERNAL, IMPLEMENTED_TYPES, parse_network_options


def opts(internal=False, **generic):
    return {GENERIC: generic, "com.docker.network.enable_ipv6": False, INTERNAL: internal}


def test_macvlan_is_implemented():
    assert "macvlan" in IMPLEMENTED_TYPES


def test_macvlan_defaults_to_bridge_mode_on_its_parent():
    parsed = parse_network_options(opts(type="macvlan", parent="lan0"))
    assert (parsed.type, parsed.parent, parsed.macvlan_mode, parsed.internal) == (
        "macvlan", "lan0", "bridge", False)


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru"])
def test_every_macvlan_mode(mode):
    assert parse_network_options(opts(type="macvlan", parent="lan0", macvlan_mode=mode)).macvlan_mode == mode


def test_bad_mode_names_value_and_choices():
    with pytest.raises(BadRequest) as err:
        parse_network_options(opts(type="macvlan", parent="lan0", macvlan_mode="l2"))
    assert "'l2'" in err.value.message and "bridge, private, vepa, passthru" in err.value.message


@pytest.mark.parametrize("generic", [{"type": "macvlan"}, {"type": "macvlan", "parent": ""}])
def test_no_parent_means_internal(generic):
    parsed = parse_network_options(opts(**generic))
    assert parsed.parent is None and parsed.internal


def test_internal_flag_with_a_parent_keeps_the_parent():
    parsed = parse_network_options(opts(internal=True, type="macvlan", parent="lan0"))
    assert parsed.parent == "lan0" and parsed.internal


@pytest.mark.parametrize("key", ["parent", "macvlan_mode"])
def test_macvlan_keys_do_not_apply_to_bridges(key):
    with pytest.raises(BadRequest) as err:
        parse_network_options(opts(**{key: "bridge" if key == "macvlan_mode" else "lan0"}))
    assert f"'{key}'" in err.value.message and "only to macvlan" in err.value.message


def test_bridge_name_does_not_apply_to_macvlan():
    with pytest.raises(BadRequest, match="only to bridge"):
        parse_network_options(opts(type="macvlan", parent="lan0", bridge_name="br0"))


def test_unknown_key_lists_what_macvlan_accepts():
    with pytest.raises(BadRequest) as err:
        parse_network_options(opts(type="macvlan", vlan="42"))
    message = err.value.message
    assert "'vlan'" in message and "parent" in message and "macvlan_mode" in message
    assert "bridge_name" not in message


def test_parent_must_be_an_interface_name():
    with pytest.raises(BadRequest, match="1-15"):
        parse_network_options(opts(type="macvlan", parent="a-very-long-parent0.42"))
    with pytest.raises(BadRequest):
        parse_network_options(opts(type="macvlan", parent="eth0/../x"))


def test_bridge_networks_are_unchanged():
    parsed = parse_network_options(opts())
    assert (parsed.type, parsed.parent, parsed.macvlan_mode, parsed.internal) == ("bridge", None, None, False)


def test_mtu_applies_to_macvlan():
    assert parse_network_options(opts(type="macvlan", parent="lan0", mtu="1400")).mtu == 1400


def test_record_round_trip_and_old_records():
    net = NetworkRecord(id="n" * 64, options=parse_network_options(opts(type="macvlan", parent="lan0.42")),
                        bridge="pn-nnnnnnnnnnnn", bridge_created=False, subnets=("10.5.0.0/24",),
                        lower="lan0.42", lower_created=True)
    assert NetworkRecord.from_dict(net.to_dict()) == net
    old = net.to_dict()
    del old["lower"], old["lower_created"], old["options"]["parent"], old["options"]["macvlan_mode"]
    loaded = NetworkRecord.from_dict(old)
    assert (loaded.lower, loaded.lower_created, loaded.options.parent) == (None, False, None)


# --- pure rules: VLAN names and parent sharing ----------------------------------------
@pytest.mark.parametrize("name, expected", [("eth0", None), ("eth0.42", ("eth0", 42)),
                                            ("lan_a.1", ("lan_a", 1)), ("x.4094", ("x", 4094))])
def test_split_vlan(name, expected):
    assert split_vlan(name) == expected


@pytest.mark.parametrize("name, fragment", [("eth0.0", "outside 1-4094"), ("eth0.4095", "outside 1-4094"),
                                            ("eth0.x", "IFACE.VLAN"), ("a.b.3", "IFACE.VLAN"),
                                            (".42", "IFACE.VLAN")])
def test_split_vlan_refuses_names_it_cannot_create(name, fragment):
    with pytest.raises(BadRequest) as err:
        split_vlan(name)
    assert fragment in err.value.message and repr(name) in err.value.message


def record(nid, lower, subnets, mode="bridge"):
    options = parse_network_options(opts(type="macvlan", parent=lower, macvlan_mode=mode))
    return NetworkRecord(id=nid * 64, options=options, bridge="pn-" + nid * 12, bridge_created=False,
                         subnets=tuple(subnets), lower=lower)


def test_sharing_a_parent_needs_disjoint_subnets():
    a = record("a", "lan0", ["10.5.0.0/24"])
    check_sharing(record("b", "lan0", ["10.6.0.0/24"]), "lan0", [a])
    check_sharing(record("b", "lan1", ["10.5.0.0/24"]), "lan1", [a])      # another wire
    check_sharing(record("b", "lan0.7", ["10.5.0.0/24"]), "lan0.7", [a])  # another VLAN
    check_sharing(record("b", "lan0", ["fd00::/64"]), "lan0", [a])        # another family
    with pytest.raises(Conflict) as err:
        check_sharing(record("b", "lan0", ["10.5.0.128/25"]), "lan0", [a])
    assert "lan0" in err.value.message and "a" * 12 in err.value.message and "overlaps" in err.value.message


def test_passthru_shares_nothing():
    with pytest.raises(Conflict, match="passthru mode needs the parent to itself"):
        check_sharing(record("b", "lan0", ["10.6.0.0/24"], "passthru"), "lan0",
                      [record("a", "lan0", ["10.5.0.0/24"])])
    with pytest.raises(Conflict, match="in passthru mode"):
        check_sharing(record("b", "lan0", ["10.6.0.0/24"]), "lan0",
                      [record("a", "lan0", ["10.5.0.0/24"], "passthru")])


def test_lower_reference_count():
    a, b = record("a", "lan0.42", []), record("b", "lan0.42", [])
    assert lower_still_used(a, [a, b]) and not lower_still_used(a, [a, record("c", "lan0", [])])

"""Name records read from the store (driver/names/records.py): what pynet writes reads back
the same; anything else is InvalidNames with a reason, never another exception (issue 21,
by issue 17's rules: strict parsing at the edge, a host speaks only for itself)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from driver.names.records import (InvalidNames, LOCAL, NameEntry, NetworkIdentity, OVERLAY,
                                  dump, parse_record)
from pynet_core.store import keys

HOST, EID, CID = "h1", "e" * 64, "c" * 64
KEY = keys.name_record(HOST, EID)
OVER = NetworkIdentity(OVERLAY, space="LocalDefault", subnet="10.77.0.0/24")
LOCAL_NET = NetworkIdentity(LOCAL, id="n" * 64)


def good(**changes) -> dict:
    data = NameEntry(HOST, EID, CID, "web", OVER, "appnet", ("svc", "web.alias"),
                     "10.77.0.5", None).to_dict()
    data.update(changes)
    return data


def parse(data, key: str = KEY):
    return parse_record(key, json.dumps(data))


def test_what_pynet_writes_reads_back_the_same():
    entry = NameEntry(HOST, EID, CID, "web", OVER, "appnet", ("svc",), "10.77.0.5", None)
    assert parse_record(KEY, dump(entry)) == entry
    local = NameEntry(HOST, EID, CID, "db", LOCAL_NET, "", (), None, "fd00::9")
    assert parse_record(KEY, dump(local)) == local


def test_the_table_sees_the_cross_host_identity_of_an_overlay_and_the_hosts_own_of_a_bridge():
    over = parse(good()).record()
    assert over.network == "overlay/LocalDefault/10.77.0.0/24" and over.host == HOST
    local = parse(good(network={"kind": "local", "id": "n" * 64}, ipv4="192.168.7.3")).record()
    assert local.network == f"local/{HOST}/{'n' * 64}"
    assert str(local.ipv4) == "192.168.7.3" and local.names() == {"web", "svc", "web.alias"}


BAD = [
    ("a list", [1, 2], "not a JSON object"),
    ("host missing", {k: v for k, v in good().items() if k != "host"}, "'host' is missing"),
    ("host a number", good(host=7), "'host'"),
    ("host with a slash", good(host="h1/x"), "'host'"),
    ("endpoint not an id", good(endpoint="../x"), "'endpoint'"),
    ("container null", good(container=None), "'container'"),
    ("container too long", good(container="c" * 65), "'container'"),
    ("name empty", good(name=""), "'name'"),
    ("name with a space", good(name="we b"), "'name'"),
    ("name a number", good(name=5), "'name'"),
    ("name too long", good(name=("a" * 60 + ".") * 5), "'name'"),
    ("name ending in a dot", good(name="web."), "'name'"),
    ("label too long", good(name="a" * 64), "'name'"),
    ("alias not a list", good(aliases="svc"), "'aliases' must be a list"),
    ("alias a number", good(aliases=[1]), "'aliases'"),
    ("alias not a name", good(aliases=["svc", "x y"]), "'aliases'"),
    ("too many aliases", good(aliases=[f"a{i}" for i in range(33)]), "at most 32"),
    ("network missing", {k: v for k, v in good().items() if k != "network"}, "'network' is missing"),
    ("network a string", good(network="overlay"), "'network' must be an object"),
    ("network kind unknown", good(network={"kind": "swarm"}), "'kind'"),
    ("overlay space with a slash", good(network={"kind": "overlay", "space": "a/b",
                                                 "subnet": "10.77.0.0/24"}), "address space"),
    ("overlay space ..", good(network={"kind": "overlay", "space": "..",
                                       "subnet": "10.77.0.0/24"}), "address space"),
    ("overlay subnet with host bits", good(network={"kind": "overlay", "space": "S",
                                                    "subnet": "10.77.0.1/24"}), "IPv4 subnet"),
    ("overlay subnet IPv6", good(network={"kind": "overlay", "space": "S",
                                          "subnet": "fd00::/64"}), "IPv4 subnet"),
    ("overlay subnet a /32", good(network={"kind": "overlay", "space": "S",
                                           "subnet": "10.77.0.1/32"}), "no room"),
    ("local id not an id", good(network={"kind": "local", "id": "a/b"}), "network id"),
    ("network name not a name", good(network_name="a b"), "'network_name'"),
    ("no address", good(ipv4=None, ipv6=None), "neither"),
    ("ipv4 a list", good(ipv4=["10.77.0.5"]), "'ipv4'"),
    ("ipv4 empty", good(ipv4=""), "'ipv4'"),
    ("ipv4 out of range", good(ipv4="10.77.0.300"), "'ipv4'"),
    ("ipv4 an integer", good(ipv4=172900101), "'ipv4'"),
    ("ipv4 leading zeros", good(ipv4="10.77.0.05"), "'ipv4'"),
    ("ipv4 an IPv6 address", good(ipv4="fd00::5"), "'ipv4'"),
    ("ipv4 outside the overlay", good(ipv4="10.78.0.5"), "not a container address of overlay"),
    ("ipv4 the overlay's network address", good(ipv4="10.77.0.0"), "not a container address"),
    ("ipv4 the overlay's broadcast", good(ipv4="10.77.0.255"), "not a container address"),
    ("ipv4 loopback", good(network={"kind": "local", "id": "n"}, ipv4="127.0.0.1"), "loopback"),
    ("ipv4 multicast", good(network={"kind": "local", "id": "n"}, ipv4="224.0.0.5"), "multicast"),
    ("ipv4 unspecified", good(network={"kind": "local", "id": "n"}, ipv4="0.0.0.0"), "unspecified"),
    ("ipv4 broadcast", good(network={"kind": "local", "id": "n"}, ipv4="255.255.255.255"),
     "broadcast"),
    ("ipv6 on an overlay", good(ipv6="fd00:77::5"), "no IPv6 address"),
    ("ipv6 link-local", good(network={"kind": "local", "id": "n"}, ipv6="fe80::1"), "link-local"),
    ("ipv6 with a zone", good(network={"kind": "local", "id": "n"}, ipv6="fd00::1%eth0"), "zone"),
    ("ipv6 an IPv4 address", good(network={"kind": "local", "id": "n"}, ipv6="10.77.0.5"), "'ipv6'"),
    ("ipv6 multicast", good(network={"kind": "local", "id": "n"}, ipv6="ff02::1"), "multicast"),
]


@pytest.mark.parametrize("what,data,reason", BAD, ids=[b[0] for b in BAD])
def test_a_record_that_is_not_what_pynet_writes_is_refused_with_its_reason(what, data, reason):
    with pytest.raises(InvalidNames) as caught:
        parse(data)
    assert reason in caught.value.reason


def test_a_host_speaks_only_for_itself_and_for_the_endpoint_its_key_names():
    with pytest.raises(InvalidNames, match="sits under host 'h2'"):
        parse(good(), keys.name_record("h2", EID))
    with pytest.raises(InvalidNames, match="is not the one its key names"):
        parse(good(), keys.name_record(HOST, "f" * 64))


@pytest.mark.parametrize("key", [
    "v1/names/hosts/h1", "v1/names/hosts/h1/", "v1/names/hosts//" + EID,
    f"v1/names/hosts/h1/{EID}/extra", f"v1/names/hosts/../{EID}", "v1/names/other",
])
def test_a_key_of_another_shape_is_refused(key):
    with pytest.raises(InvalidNames, match="no name key of this shape"):
        parse(good(), key)


@pytest.mark.parametrize("value,reason", [
    ("{not json", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "characters long, at most"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ('{"host": "h1\udcff"}', "not UTF-8"),  # a backend keeps bad bytes escaped
    ("null", "not a JSON object"),
    ('"x"' + " " * 20000, "characters long, at most"),
], ids=["not JSON", "huge", "deep", "not UTF-8", "null", "padded"])
def test_a_value_that_is_not_a_record_is_refused(value, reason):
    with pytest.raises(InvalidNames, match=reason):
        parse_record(KEY, value)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELD_NAMES = st.sampled_from(["host", "endpoint", "container", "name", "network",
                               "network_name", "aliases", "ipv4", "ipv6"])


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(FIELD_NAMES, JSON, max_size=4))
def test_junk_in_any_field_is_a_reason_never_a_crash(changes):
    try:
        parse(good(**changes))
    except InvalidNames as exc:
        assert exc.reason

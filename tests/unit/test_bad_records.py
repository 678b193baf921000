"""Records read from the store that are not what pynet writes (issue 17, item 1): checked
once, at the edge of the model. A listing skips a bad record (logged once per key and
version, counted in pynet_store_records_skipped_total); a call that needs that very record
answers {"Err"} naming the key and the reason, never a 500. And the write side: a value that
becomes a key level (AddressSpace, host id) never holds '/' or '..'."""
from __future__ import annotations

import argparse
import json
import logging

import pytest
from hypothesis import given, settings, strategies as st

from driver.ledger import Ledger, endpoint_at, network_at
from driver.models import EndpointRecord, NetworkRecord
from driver.options import NetworkOptions
from ipam_driver import models as ipam_models
from ipam_driver.hostblocks import used_addresses
from ipam_driver.models import AddressClaim, AddressSpace, BlockClaim
from pynet import metrics
from pynet_core.errors import BadRecord, ErrorCategory
from pynet_core.store import bad_records, keys
from pynet_core.store.api import Entry, Op
from pynet_core.store.memory import MemoryStore
from pynet_core.store.segments import segment_problem

HOST = "test-host"
NID, NID2, EID = "a" * 64, "b" * 64, "e" * 64
GOOD_NET = NetworkRecord(NID2, NetworkOptions(), bridge="pn-bbbbbbbbbbbb", gateways=("10.9.0.1/24",),
                         subnets=("10.9.0.0/24",)).to_dict()
GOOD_EP = EndpointRecord(NID2, EID, "pnveeeeeeeeeeee", "pnceeeeeeeeeeee", ("10.9.0.2/24",),
                         "02:42:0a:09:00:02").to_dict()


def skipped_count(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("pynet_store_records_skipped_total", {"kind": kind}) or 0.0


BAD_NETWORKS = [
    ("not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ("null", "expected a JSON object"),
    (json.dumps({**GOOD_NET, "id": NID, "subnets": ["10.9.0.300/24"]}), "is not a subnet"),
    (json.dumps({**GOOD_NET, "id": NID, "subnets": "10.9.0.0/24"}), "'subnets' must be a list"),
    (json.dumps({**GOOD_NET, "id": NID, "gateways": [7]}), "'gateways' must hold addresses"),
    (json.dumps({**GOOD_NET, "id": NID, "bridge": 12}), "'bridge' must be a string"),
    (json.dumps({**GOOD_NET, "id": NID, "state": "gone"}), "'state' must be one of"),
    (json.dumps({**GOOD_NET, "id": NID, "options": {"mtu": "9000"}}), "option 'mtu'"),
    (json.dumps({**GOOD_NET, "id": NID, "options": []}), "'options' must be an object"),
    (json.dumps({**GOOD_NET, "id": NID, "vtep": "localhost"}), "not an IP address"),
    (json.dumps({**GOOD_NET, "id": "../x"}), "'id' must be an ID"),
    (json.dumps({**GOOD_NET}), "describes another network"),
    (json.dumps({k: v for k, v in GOOD_NET.items() if k != "options"} | {"id": NID}), "missing field 'options'"),
]


@pytest.mark.parametrize("value, reason", BAD_NETWORKS)
def test_a_bad_network_record_is_skipped_in_a_listing_and_named_when_needed(value, reason, caplog):
    store = MemoryStore()
    store.create(keys.network(HOST, NID), value)
    store.create(keys.network(HOST, NID2), json.dumps(GOOD_NET))
    ledger = Ledger(store, HOST)
    before = skipped_count("network")
    with caplog.at_level(logging.ERROR, logger="pynet_core.store.bad_records"):
        assert [n.id for n in ledger.networks()] == [NID2]
        assert [n.id for n in ledger.networks()] == [NID2]  # read again: not logged again
    assert skipped_count("network") == before + 2
    logged = [r.getMessage() for r in caplog.records if keys.network(HOST, NID) in r.getMessage()]
    assert len(logged) == 1 and reason in logged[0]
    with pytest.raises(BadRecord, match=reason) as caught:
        ledger.network(NID)
    assert keys.network(HOST, NID) in caught.value.message and caught.value.category is not ErrorCategory.INTERNAL


def test_a_changed_bad_record_is_logged_again(caplog):
    store = MemoryStore()
    store.create(keys.network(HOST, NID), "nope")
    ledger = Ledger(store, HOST)
    with caplog.at_level(logging.ERROR, logger="pynet_core.store.bad_records"):
        ledger.networks()
        entry = store.get(keys.network(HOST, NID))
        store.cas(keys.network(HOST, NID), "still nope", entry.version)
        ledger.networks()
    assert len([r for r in caplog.records if "skipping" in r.getMessage()]) == 2


BAD_ENDPOINTS = [
    (json.dumps({**GOOD_EP, "mac": 5}), "'mac' must be a string"),
    (json.dumps({**GOOD_EP, "mac": "zz:zz:zz:zz:zz:zz"}), "is not a MAC address"),
    (json.dumps({**GOOD_EP, "mac": None}), "'mac' must be a string"),
    (json.dumps({**GOOD_EP, "addresses": [["10.9.0.2/24"]]}), "'addresses' must hold addresses"),
    (json.dumps({**GOOD_EP, "addresses": [""]}), "not an address"),
    (json.dumps({**GOOD_EP, "addresses": ["10.9.0.300/24"]}), "not an address"),
    (json.dumps({**GOOD_EP, "published": [{"proto": "tcp"}]}), "every port must be given"),
    (json.dumps({**GOOD_EP, "published": [{**dict(proto="tcp", container_ip="10.9.0.2", container_port=80,
                                                   host_ip="0.0.0.0", host_port=70000, host_port_start=0,
                                                   host_port_end=0)}]}), "'host_port' must be a number"),
    (json.dumps({**GOOD_EP, "extra": 1, "id": "f" * 64}), "describes another endpoint"),
]


@pytest.mark.parametrize("value, reason", BAD_ENDPOINTS)
def test_a_bad_endpoint_record_is_skipped_in_a_listing_and_named_when_needed(value, reason):
    store = MemoryStore()
    store.create(keys.endpoint(HOST, NID2, EID), value)
    store.create(keys.endpoint(HOST, NID2, "d" * 64), json.dumps({**GOOD_EP, "id": "d" * 64}))
    ledger = Ledger(store, HOST)
    assert [e.id for e in ledger.endpoints()] == ["d" * 64]
    with pytest.raises(BadRecord, match=reason):
        ledger.endpoint(NID2, EID)


def test_bytes_that_are_not_utf8_are_a_bad_record():
    # The Consul backend keeps such bytes escaped (surrogateescape) for the one key.
    entry = Entry(keys.network(HOST, NID), b'{"id": "\xff\xfe"}'.decode("utf-8", "surrogateescape"), 3)
    with pytest.raises(BadRecord, match="not UTF-8"):
        network_at(entry)
    with pytest.raises(BadRecord, match="not UTF-8"):
        ipam_models.decode(AddressClaim, Entry("v1/ipam/addrs/LocalDefault/10.0.0.0_24/10.0.0.2",
                                                entry.value, 3))


def test_good_records_round_trip():
    net = network_at(Entry(keys.network(HOST, NID2), json.dumps(GOOD_NET), 1))
    assert json.loads(json.dumps(net.to_dict())) == json.loads(json.dumps(GOOD_NET))
    ep = endpoint_at(Entry(keys.endpoint(HOST, NID2, EID), json.dumps(GOOD_EP), 1))
    assert json.loads(json.dumps(ep.to_dict())) == json.loads(json.dumps(GOOD_EP))


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12),
       st.sampled_from(sorted(GOOD_EP)), st.sampled_from(sorted(GOOD_NET)))
def test_any_value_in_any_field_is_a_record_or_a_bad_record(value, ep_field, net_field):
    """Never another exception: whatever another client wrote, the model answers."""
    for key, good, parse in ((keys.endpoint(HOST, NID2, EID), GOOD_EP, endpoint_at),
                             (keys.network(HOST, NID2), GOOD_NET, network_at)):
        for data in ({**good, (ep_field if parse is endpoint_at else net_field): value}, value):
            try:
                parse(Entry(key, json.dumps(data), 1))
            except BadRecord as exc:
                assert exc.key == key


# --- IPAM records ---------------------------------------------------------------------
CLAIMS = "v1/ipam/addrs/LocalDefault/10.0.0.0_24/"


@pytest.mark.parametrize("value, reason", [
    ('{"pools": {"10.0.0.300/24": {"holders": {}}}}', "is not a subnet"),
    ('{"pools": {"10.0.0.1/24": {"holders": {}}}}', "is not a subnet"),
    ('{"pools": {"10.0.0.0/24": {"holders": {"h": true}}}}', "'holders' must map"),
    ('{"pools": {"10.0.0.0/24": {"holders": {"h": -1}}}}', "'holders' must map"),
    ('{"pools": {"10.0.0.0/24": {"holders": {}, "subpool": "10.1.0.0/25"}}}', "not inside it"),
    ('{"pools": {"10.0.0.0/24": {"holders": {}, "subpool": 5}}}', "'subpool' must be a string"),
    ('"pools"', "expected a JSON object"),
])
def test_a_bad_address_space_is_named_by_the_call_that_needs_it(plugin_client, fake_deps, value, reason):
    fake_deps.store.create(keys.ipam_space("LocalDefault"), value)
    status, answer = plugin_client("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault",
                                                              "Pool": "10.5.0.0/24"})
    assert status == 409, answer
    assert "v1/ipam/spaces/LocalDefault" in answer["Err"] and reason in answer["Err"]


def test_bad_claims_are_skipped_where_claims_are_listed_and_still_take_their_address(plugin_client, fake_deps):
    status, answer = plugin_client("IpamDriver.RequestPool", {"AddressSpace": "LocalDefault",
                                                              "Pool": "10.0.0.0/24"})
    assert status == 200
    pool_id = answer["PoolID"]
    store = fake_deps.store
    store.create(CLAIMS + "10.0.0.1", '{"kind": 3}')             # a bad claim of the first free address
    store.create(CLAIMS + "not-an-address", '{"kind": "aux"}')   # a key pynet never writes
    store.create(CLAIMS + "10.9.9.9", '{"kind": "aux"}')         # outside the pool
    store.create("v1/ipam/blocks/LocalDefault/10.0.0.0_24/10.0.0.64_26", "\"x\"")
    assert used_addresses(store, CLAIMS) == {int(__import__("ipaddress").ip_address("10.0.0.1"))}
    # The gateway listing skips the bad claims; the bad one's address is never handed out.
    status, answer = plugin_client("IpamDriver.RequestAddress", {
        "PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    assert status == 200 and answer["Address"] == "10.0.0.2/24"
    status, answer = plugin_client("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "10.0.0.1",
                                                                 "Options": {}})
    assert status == 409 and CLAIMS + "10.0.0.1" in answer["Err"]
    status, answer = plugin_client("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": "10.0.0.1"})
    assert status == 409 and "'kind' must be a string" in answer["Err"]
    assert store.get(CLAIMS + "10.0.0.1") is not None  # never written over blindly


@pytest.mark.parametrize("cls, value", [
    (AddressClaim, '{"kind": "aux", "name": "", "host": ["h"]}'),
    (AddressClaim, '{"kind": "gateway", "name": "", "host": "h", "holders": [1]}'),
    (BlockClaim, '{"host": "h", "claim": null}'),
    (AddressSpace, '{"pools": {"x": {}}}'),
])
def test_ipam_listings_skip_bad_records(cls, value):
    good = {AddressClaim: '{"kind": "aux", "name": "", "host": "h"}',
            BlockClaim: '{"host": "h", "claim": "c"}', AddressSpace: '{"pools": {}}'}[cls]
    entries = [Entry("k/bad", value, 1), Entry("k/good", good, 2)]
    assert [e.key for e, _ in ipam_models.readable(entries, cls, "test")] == ["k/good"]


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12))
def test_any_json_is_an_ipam_record_or_a_bad_record(value):
    for cls in (AddressClaim, BlockClaim, AddressSpace):
        for data in (value, {"pools": value}, {"pools": {"10.0.0.0/24": value}},
                     {"kind": "aux", "name": "", "host": "h", "holders": value}):
            try:
                ipam_models.decode(cls, Entry("k", json.dumps(data), 1))
            except BadRecord as exc:
                assert exc.key == "k"


# --- the write side: key levels -------------------------------------------------------
@pytest.mark.parametrize("space", ["a/b", "x/../y", "LocalDefault/", "..", ".hidden", "a" * 65, "sp ace"])
def test_create_network_refuses_an_address_space_that_is_no_key_level(plugin_client, fake_deps, space):
    before = [e.key for e in fake_deps.store.list("")]
    status, answer = plugin_client("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": space, "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
        "IPv6Data": []})
    assert status == 400 and "AddressSpace" in answer["Err"] and "not a valid address space" in answer["Err"]
    assert [e.key for e in fake_deps.store.list("")] == before


@pytest.mark.parametrize("space", ["a/b", "x/../y", "LocalDefault/", "Other"])
def test_request_pool_refuses_an_address_space_it_does_not_serve(plugin_client, fake_deps, space):
    status, answer = plugin_client("IpamDriver.RequestPool", {"AddressSpace": space, "Pool": "10.1.0.0/24"})
    assert status == 400 and "unknown address space" in answer["Err"]
    assert fake_deps.store.list("v1/ipam/") == []


def test_allocate_network_refuses_an_address_space_that_is_no_key_level(plugin_client):
    status, answer = plugin_client("NetworkDriver.AllocateNetwork", {
        "NetworkID": NID, "Options": {"type": "overlay"},
        "IPv4Data": [{"AddressSpace": "x/../y", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
        "IPv6Data": []})
    assert status == 400 and "'/' separates store key levels" in answer["Err"]


@pytest.mark.parametrize("host", ["a/b", "..", "x/../y", ".h", "h" * 254])
def test_a_host_id_that_is_no_key_level_is_refused(host):
    from pynet.settings import add_serve_arguments, settings_from_args
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    with pytest.raises(ValueError, match="cannot name this host in the store"):
        settings_from_args(parser.parse_args(["--host-id", host]))


@given(st.text(max_size=80))
def test_a_key_level_never_holds_a_slash_or_dot_dot(text):
    if segment_problem(text) is None:
        assert "/" not in text and ".." not in text and not text.startswith(".") and 0 < len(text) <= 64


def test_bad_records_readable_notes_each_bad_entry_once(caplog):
    entries = [Entry("k/1", "x", 1), Entry("k/1", "x", 1)]

    def parse(entry):
        raise BadRecord(entry.key, "because")
    with caplog.at_level(logging.ERROR, logger="pynet_core.store.bad_records"):
        assert list(bad_records.readable(entries, parse, "test-kind")) == []
    assert len([r for r in caplog.records if "k/1" in r.getMessage()]) == 1


def test_plugin_calls_answer_a_bad_network_record_by_its_key_and_the_others_work(plugin_client, fake_deps):
    fake_deps.store.create(keys.network(HOST, NID2), '{"id": 5}')
    status, answer = plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID2})
    assert status == 409 and keys.network(HOST, NID2) in answer["Err"] and "missing field 'options'" in answer["Err"]
    status, answer = plugin_client("NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}],
        "IPv6Data": []})
    assert (status, answer) == (200, {})
    status, answer = plugin_client("NetworkDriver.CreateEndpoint", {
        "NetworkID": NID2, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}, "Options": {}})
    assert status == 409 and keys.network(HOST, NID2) in answer["Err"]
    assert plugin_client("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == (200, {})


def test_network_listings_decode_a_record_once_and_every_change_again():
    """Issue 22: listing every network (each CreateNetwork and DeleteNetwork does) keeps the
    records it decoded by their stored text: an unchanged record is not decoded again, a
    changed one is, and one that turned bad is skipped as before."""
    store = MemoryStore()
    store.create(keys.network(HOST, NID2), json.dumps(GOOD_NET))
    ledger = Ledger(store, HOST)
    first, = ledger.networks()
    again, = ledger.networks()
    assert again is first  # the same text: the same immutable record
    changed = {**GOOD_NET, "bridge": "pn-changed"}
    entry = store.get(keys.network(HOST, NID2))
    assert store.transaction([Op("cas", entry.key, json.dumps(changed), entry.version)])
    assert [n.bridge for n in ledger.networks()] == ["pn-changed"]
    entry = store.get(keys.network(HOST, NID2))
    assert store.transaction([Op("cas", entry.key, json.dumps({**changed, "bridge": 12}), entry.version)])
    assert ledger.networks() == []
    store.transaction([Op("delete", entry.key)])
    assert ledger.networks() == [] and ledger._networks._known == {}  # pruned with the listing


def test_an_address_space_is_decoded_once_per_text_and_checked_when_it_changes():
    """Issue 22: the AddressSpace holds every pool; the same stored text is the same record,
    any other text is decoded (and refused when bad) as before."""
    key = keys.ipam_space("LocalDefault")
    text = '{"pools":{"10.2.0.0/16":{"holders":{"h1":1},"subpool":null}}}'
    one = ipam_models.decode(AddressSpace, Entry(key, text, 1))
    assert ipam_models.decode(AddressSpace, Entry(key, text, 2)) is one
    other = ipam_models.decode(AddressSpace, Entry(key, text.replace("10.2.", "10.3."), 3))
    assert [str(p) for p in other.pools] == ["10.3.0.0/16"]
    with pytest.raises(BadRecord):
        ipam_models.decode(AddressSpace, Entry(key, text.replace("10.2.0.0/16", "10.2.0.300/16"), 4))


def test_a_network_read_again_is_decoded_only_when_its_stored_text_changed(monkeypatch):
    """Ledger.network() keeps the decoded record of each stored text: the same text is the
    same record, a changed text (even a bad one) is decoded and checked again, a deleted
    record is gone (the store is always asked)."""
    import driver.ledger as ledger_module
    store = MemoryStore()
    store.create(keys.network(HOST, NID2), json.dumps(GOOD_NET))
    decoded = []
    real = ledger_module.network_at
    monkeypatch.setattr(ledger_module, "network_at", lambda entry: decoded.append(entry) or real(entry))
    ledger = Ledger(store, HOST)
    first = ledger.network(NID2)
    assert ledger.network(NID2) is first and len(decoded) == 1
    entry = store.get(keys.network(HOST, NID2))
    store.cas(entry.key, json.dumps({**GOOD_NET, "bridge": "pn-other"}), entry.version)
    assert ledger.network(NID2).bridge == "pn-other" and len(decoded) == 2
    entry = store.get(keys.network(HOST, NID2))
    store.cas(entry.key, "not json", entry.version)
    with pytest.raises(BadRecord):
        ledger.network(NID2)
    store.delete(keys.network(HOST, NID2))
    assert ledger.network(NID2) is None

"""IPAM records (ipam_driver/models.py): what existing stores hold reads back and is written
again unchanged, byte for byte."""
import ipaddress
import json

import pytest

from ipam_driver import models
from ipam_driver.models import AddressClaim, AddressSpace, BlockClaim, PoolEntry
from pynet_core.errors import Conflict
from pynet_core.store.api import Entry
from pynet_core.store.memory import MemoryStore

net = ipaddress.ip_network


def entry(value: str, key: str = "v1/ipam/x") -> Entry:
    return Entry(key, value, 1)


# As pynet writes them today (compact, sorted keys), and as older versions wrote them: no
# "block" in a pool, no "claim" in an address claim, a space without "chosen".
STORED = [
    (AddressSpace, '{"chosen":"10.1.0.0/24","pools":{"10.1.0.0/24":{"block":64,"holders":{"h1":1,"h2":2},'
                   '"subpool":"10.1.0.0/25"},"fd00::/64":{"block":0,"holders":{"h1":1},"subpool":null}}}'),
    (AddressSpace, '{"pools":{}}'),
    (AddressSpace, '{"pools":{"10.2.0.0/16":{"holders":{"h1":1},"subpool":null}}}'),
    (AddressClaim, '{"claim":"a1b2c3d4e5f60718","host":"h1","kind":"endpoint","name":"web"}'),
    (AddressClaim, '{"claim":"a1b2c3d4e5f60718","holders":["h1","h2"],"host":"h1","kind":"gateway","name":""}'),
    (AddressClaim, '{"claim":"a1b2c3d4e5f60718","host":"h2","kind":"aux","name":""}'),
    (AddressClaim, '{"host":"h1","kind":"endpoint","name":"old"}'),
    (AddressClaim, '{"holders":["h1"],"host":"h1","kind":"gateway","name":""}'),
    (BlockClaim, '{"claim":"a1b2c3d4e5f60718","host":"h1"}'),
    (AddressSpace, '{"pools":{"10.3.0.0/24":{"block":64,"holders":{"h1":2},"holds":{"0123456789abcdef":"h1"},'
                   '"subpool":null}}}'),
]


@pytest.mark.parametrize("cls, stored", STORED)
def test_a_stored_record_is_written_back_byte_for_byte(cls, stored):
    assert models.encode(models.decode(cls, entry(stored))) == stored


@pytest.mark.parametrize("cls, stored", [
    (BlockClaim, '{"host": "h1", "claim": "a1b2c3d4e5f60718"}'),
])
def test_blocks_and_fences_written_with_json_dumps_read_back_to_the_same_keys(cls, stored):
    """Before one serialisation path, these were json.dumps'd (spaces, insertion order): the
    same JSON, now written compact and sorted like every other record."""
    again = models.encode(models.decode(cls, entry(stored)))
    assert json.loads(again) == json.loads(stored)
    assert again == json.dumps(json.loads(stored), sort_keys=True, separators=(",", ":"))


def test_decoded_records_are_typed():
    space = models.decode(AddressSpace, entry(STORED[0][1]))
    assert space.chosen == net("10.1.0.0/24")
    assert space.pools[net("10.1.0.0/24")] == PoolEntry(net("10.1.0.0/25"), {"h1": 1, "h2": 2}, 64)
    assert space.pools[net("fd00::/64")].subpool is None
    old = models.decode(AddressSpace, entry(STORED[2][1])).pools[net("10.2.0.0/16")]
    assert old.block is None  # older than block sizes: the host's setting applies
    gateway = models.decode(AddressClaim, entry(STORED[4][1]))
    assert gateway.gateway and gateway.holders == ("h1", "h2")
    assert models.decode(AddressClaim, entry(STORED[6][1])).claim is None


@pytest.mark.parametrize("cls, stored, match", [
    (AddressClaim, "not json", "v1/ipam/x is unreadable: its value is not JSON"),
    (AddressClaim, "[1, 2]", "expected a JSON object, got list"),
    (AddressClaim, '{"host":"h1","kind":"endpoint"}', "missing field 'name'"),
    (AddressClaim, '{"host":"h1","kind":"router","name":""}', "'kind' must be one of"),
    (AddressClaim, '{"host":1,"kind":"aux","name":""}', "'host' must be a string"),
    (AddressClaim, '{"holders":"h1","host":"h1","kind":"gateway","name":""}', "'holders' must be a list"),
    (BlockClaim, '{"host":"h1"}', "missing field 'claim'"),
    (AddressSpace, '{"pools":{"10.1.0.0/24":{"holders":{"h1":"one"},"subpool":null}}}', "'holders' must map"),
    (AddressSpace, '{"pools":{"10.1.0.0/24":{"block":"64","holders":{},"subpool":null}}}', "'block' must be"),
    (AddressSpace, '{"pools":[]}', "'pools' must be an object"),
])
def test_an_unreadable_record_is_a_value_error_naming_key_and_field(cls, stored, match):
    with pytest.raises(ValueError, match=match) as caught:
        models.decode(cls, entry(stored))
    assert "v1/ipam/x" in str(caught.value)


def test_holding_and_releasing_a_pool():
    space = AddressSpace({}).holding(net("10.1.0.0/24"), None, "h1", 64, exclusive=False, hold="a")
    space = space.holding(net("10.1.0.0/24"), None, "h1", 0, exclusive=False, hold="b")  # block fixed at first
    assert space.pools[net("10.1.0.0/24")] == PoolEntry(None, {"h1": 2}, 64, {"a": "h1", "b": "h1"})
    with pytest.raises(Conflict, match="already used by another network on this host"):
        space.holding(net("10.1.0.0/24"), None, "h1", 64, exclusive=True, hold="c")
    with pytest.raises(Conflict, match="overlaps pool 10.1.0.0/24, already in use on host h1"):
        space.holding(net("10.1.0.0/16"), None, "h2", 64, exclusive=False, hold="c")
    with pytest.raises(Conflict, match="already defined with IP range the whole subnet"):
        space.holding(net("10.1.0.0/24"), net("10.1.0.0/25"), "h2", 64, exclusive=False, hold="c")
    once = space.releasing(net("10.1.0.0/24"), "a", "h1")
    assert once.chosen is None and once.pools[net("10.1.0.0/24")].holders == {"h1": 1}
    assert once.releasing(net("10.1.0.0/24"), "a", "h1") == once  # a replay releases nothing
    assert once.releasing(net("10.1.0.0/24"), None, "h1") == once  # no hold without an id left
    assert once.releasing(net("10.1.0.0/24"), "b", "h1") == AddressSpace({})


def test_holds_made_before_hold_ids_are_counted_apart_from_named_ones():
    old = AddressSpace.from_dict(json.loads(STORED[2][1]))  # h1 holds once, without an id
    both = old.holding(net("10.2.0.0/16"), None, "h1", 64, exclusive=False, hold="n")
    entry = both.pools[net("10.2.0.0/16")]
    assert (entry.holders, entry.holds, entry.unnamed_holds("h1")) == ({"h1": 2}, {"n": "h1"}, 1)
    unnamed_gone = both.releasing(net("10.2.0.0/16"), None, "h1")
    assert unnamed_gone.pools[net("10.2.0.0/16")].holds == {"n": "h1"}
    # An old PoolID's release repeated can no longer eat the named hold.
    assert unnamed_gone.releasing(net("10.2.0.0/16"), None, "h1").pools == unnamed_gone.pools


def test_a_gateway_is_held_until_its_last_host_lets_go():
    gateway = AddressClaim.new(models.GATEWAY, "", "h1", "c1").joined_by("h2")
    assert gateway.holders == ("h1", "h2")
    assert gateway.freed_by("h1") == AddressClaim("gateway", "", "h1", "c1", ("h2",))
    assert gateway.freed_by("h1").freed_by("h2") is None
    assert AddressClaim.new(models.ENDPOINT, "web", "h1", "c2").freed_by("h1") is None


def test_update_reads_and_writes_typed_records_through_the_store():
    store = MemoryStore()
    key = "v1/ipam/spaces/LocalDefault"
    store.create(key, STORED[2][1])
    written = models.update(store, key, AddressSpace,
                            lambda s: s.holding(net("10.2.0.0/16"), None, "h2", 64, exclusive=False, hold="x"), "test")
    assert written.pools[net("10.2.0.0/16")].holders == {"h1": 1, "h2": 1}
    assert store.get(key).value == ('{"pools":{"10.2.0.0/16":'
                                    '{"holders":{"h1":1,"h2":1},"holds":{"x":"h2"},"subpool":null}}}')
    assert models.update(store, key, AddressSpace, lambda s: None, "test") is None
    assert models.read(store, key, AddressSpace) is None

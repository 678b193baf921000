"""pynet_core/record_fields.py: one set of field checks, worded per family of records (the
network driver's, IPAM's, the overlay's), each family's messages as they always were."""
from __future__ import annotations

import ipaddress
import re

import pytest

from driver import models as driver_models
from driver.kinds.overlay import model as overlay_model
from driver.kinds.overlay.model import InvalidRecord
from ipam_driver import models as ipam_models
from pynet_core.errors import BadRecord
from pynet_core.record_fields import MAX_RECORD_DEPTH, Fields, cut, nested_deeper_than, shown
from pynet_core.store import records
from pynet_core.store.api import Entry

LONG = "x" * 100


def test_values_are_shown_cut():
    assert cut(LONG) == repr(LONG)[:60] and shown(LONG) == repr(LONG)[:57] + "..."
    assert cut(5) == shown(5) == "5"


@pytest.mark.parametrize("fields, call, error, message", [
    (driver_models.FIELDS, lambda f: f.text({}, "peer_if"), ValueError, "missing field 'peer_if'"),
    (driver_models.FIELDS, lambda f: f.text({"bridge": 12}, "bridge"), ValueError,
     "'bridge' must be a string, got 12"),
    (driver_models.FIELDS, lambda f: f.number({"vni": True}, "vni", 1, 9), ValueError,
     "'vni' must be a number from 1 to 9, got True"),
    (driver_models.FIELDS, lambda f: f.of_types({"mtu": "9000"}, {"mtu": (int,)}, "option"), ValueError,
     "option 'mtu' has the wrong type: '9000'"),
    (ipam_models.FIELDS, lambda f: f.text({}, "host"), KeyError, "'host'"),
    (ipam_models.FIELDS, lambda f: f.object([], "pools"), TypeError, "'pools' must be an object, got []"),
    (ipam_models.FIELDS, lambda f: f.parsed("10.1.0.1/24", "pools", ipaddress.ip_network,
                                            "a subnet (CIDR without host bits)"), ValueError,
     "'pools': '10.1.0.1/24' is not a subnet (CIDR without host bits)"),
    (overlay_model.FIELDS, lambda f: f.field({}, "mac"), InvalidRecord, "'mac' is missing"),
    (overlay_model.FIELDS, lambda f: f.text({"netns": 5}, "netns"), InvalidRecord,
     "'netns' must be a string, got int 5"),
    (overlay_model.FIELDS, lambda f: f.text({"network": "../x"}, "network", pattern=re.compile("[a-z]+")),
     InvalidRecord, "'network' '../x' is not a valid network"),
    (overlay_model.FIELDS, lambda f: f.integer({"vni": 0}, "vni", 1, 9), InvalidRecord, "'vni' 0 is outside 1..9"),
    (overlay_model.FIELDS, lambda f: f.integer({"vni": 4096.0}, "vni", 1, 9999), InvalidRecord,
     "'vni' must be an integer, got float 4096.0"),
])
def test_each_family_keeps_its_wording(fields, call, error, message):
    with pytest.raises(error) as caught:
        call(fields)
    assert str(caught.value) == message


def test_defaults_and_optional_fields():
    fields = Fields(missing=KeyError)
    assert fields.text({}, "x", None) is None and fields.text({"x": None}, "x", "d", optional=True) is None
    assert fields.flag({}, "x", True) is True and fields.number({}, "x", 1, 2) is None
    assert fields.listed({}, "x", lambda item, name: item) == ()
    assert fields.listed({"x": ("a",)}, "x", lambda item, name: item.upper()) == ("A",)
    with pytest.raises(ValueError, match="'x' must be a string, got None"):
        fields.text({"x": None}, "x")


# --- nesting: refused by pynet's own bound, the same on every Python ----------------------
def test_nesting_is_measured_without_recursion():
    four = {"a": [1, {"b": []}]}  # object, array, object, array
    assert not nested_deeper_than(four, limit=4)
    assert nested_deeper_than(four, limit=3)
    assert not nested_deeper_than("x" * 10, limit=0)
    deep: list = []
    for _ in range(200_000):  # far past any recursion limit: measured all the same
        deep = [deep]
    assert nested_deeper_than(deep)


@pytest.mark.parametrize("depth,refused", [(MAX_RECORD_DEPTH, False), (MAX_RECORD_DEPTH + 1, True), (5000, True)])
def test_a_stored_value_nested_too_deeply_is_a_bad_record_for_that_reason(depth, refused):
    # 33 levels are nothing to any JSON parser: the refusal is pynet's own, on 3.11 and 3.13 alike.
    entry = Entry("v1/hosts/h1/networks/n", "[" * depth + "]" * depth, 1)
    if refused:
        with pytest.raises(BadRecord, match=f"nested too deeply \\(more than {MAX_RECORD_DEPTH} levels\\)"):
            records.checked_load(entry)
    else:
        assert records.checked_load(entry) is not None

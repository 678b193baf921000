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
from pynet_core.record_fields import Fields, cut, shown

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

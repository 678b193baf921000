import pytest

from pynet_core.errors import BadRequest
from driver.options import GENERIC, parse_network_options


def opts(**generic):
    return {GENERIC: generic, "com.docker.network.enable_ipv6": False}


def test_defaults_are_a_plain_bridge():
    parsed = parse_network_options({})
    assert (parsed.type, parsed.mtu, parsed.iface_prefix, parsed.bridge_name) == ("bridge", None, "eth", None)


def test_docker_key_and_alias_both_set_the_mtu():
    assert parse_network_options(opts(**{"com.docker.network.driver.mtu": "1400"})).mtu == 1400
    assert parse_network_options(opts(mtu="9000")).mtu == 9000


def test_alias_and_docker_key_disagreeing_is_refused():
    with pytest.raises(BadRequest, match="disagree"):
        parse_network_options(opts(mtu="1400", **{"com.docker.network.driver.mtu": "1500"}))


@pytest.mark.parametrize("value, reason", [("abc", "whole number"), ("67", "between 68"),
                                           ("70000", "between 68")])
def test_bad_mtu_names_value_and_reason(value, reason):
    with pytest.raises(BadRequest) as err:
        parse_network_options(opts(mtu=value))
    assert repr(value) in err.value.message and reason in err.value.message


def test_unknown_key_lists_accepted_ones():
    with pytest.raises(BadRequest) as err:
        parse_network_options(opts(colour="blue"))
    assert "'colour'" in err.value.message and "com.docker.network.driver.mtu" in err.value.message


def test_bridge_name_must_fit_ifnamsiz():
    assert parse_network_options(opts(**{"com.docker.network.bridge.name": "br-apps"})).bridge_name == "br-apps"
    with pytest.raises(BadRequest, match="1-15"):
        parse_network_options(opts(**{"com.docker.network.bridge.name": "a-very-long-bridge-name"}))
    with pytest.raises(BadRequest):
        parse_network_options(opts(**{"com.docker.network.bridge.name": "../etc"}))


def test_unknown_type_is_refused():
    with pytest.raises(BadRequest, match="bridge, macvlan, overlay"):
        parse_network_options(opts(type="ipvlan"))


def test_non_string_values_are_refused():
    with pytest.raises(BadRequest, match="string"):
        parse_network_options({GENERIC: {"mtu": 1400}})


def test_internal_and_ipv6_flags():
    parsed = parse_network_options({"com.docker.network.internal": True,
                                    "com.docker.network.enable_ipv6": True})
    assert parsed.internal and parsed.ipv6


def test_ipv6_needs_mtu_1280():
    with pytest.raises(BadRequest, match="1280"):
        parse_network_options({GENERIC: {"mtu": "1200"}, "com.docker.network.enable_ipv6": True})


def test_iface_prefix():
    assert parse_network_options(opts(**{"com.docker.network.container_iface_prefix": "lan"})).iface_prefix == "lan"
    with pytest.raises(BadRequest):
        parse_network_options(opts(**{"com.docker.network.container_iface_prefix": "0bad"}))

"""IpamDriver requests and replies (ipam_driver/protocol.py): Docker's JSON to typed values
and back; malformed input is a 400 that names the field."""
import ipaddress
import json

import pytest

from ipam_driver.pool_id import PoolId
from ipam_driver.protocol import (AddressRelease, AddressReply, AddressRequest, Capabilities, DefaultSpaces,
                                  PoolRelease, PoolReply, PoolRequest)
from pynet_core.errors import BadRequest, ErrorCategory
from pynet_core.wire import Body

POOL_ID = "LocalDefault/10.1.0.0/24/10.1.0.128/25"


def body(**fields) -> Body:
    return Body(json.dumps(fields).encode())


def test_pool_request_decodes_to_networks():
    req = PoolRequest.decode(body(AddressSpace="GlobalDefault", Pool="10.1.0.0/24", SubPool="10.1.0.128/25",
                                  Options={"pynet.block-size": "16"}, V6=False))
    assert req == PoolRequest("GlobalDefault", ipaddress.ip_network("10.1.0.0/24"),
                              ipaddress.ip_network("10.1.0.128/25"), {"pynet.block-size": "16"}, False)
    assert PoolRequest.decode(Body(b"")) == PoolRequest("")  # Docker may leave everything out


@pytest.mark.parametrize("request_type, fields, match", [
    (PoolRequest, {"AddressSpace": 5}, "AddressSpace must be a string, got 5"),
    (PoolRequest, {"Pool": ["10.1.0.0/24"]}, "Pool must be a string"),
    (PoolRequest, {"Pool": "10.1.0.0/24", "SubPool": 25}, "SubPool must be a string"),
    (PoolRequest, {"Options": "pynet.block-size=16"}, "Options must be an object"),
    (PoolRequest, {"Options": {"pynet.block-size": 16}}, r"Options\['pynet.block-size'\] must be a string"),
    (PoolRequest, {"V6": "yes"}, "V6 must be true or false"),
    (PoolRequest, {"Pool": "banana"}, "subnet 'banana' is not a valid CIDR subnet"),
    (PoolRequest, {"Pool": "10.1.0.1/24"}, "subnet '10.1.0.1/24' has host bits set; did you mean 10.1.0.0/24"),
    (PoolRequest, {"Pool": "10.1.0.0/24", "SubPool": "x"}, "IP range 'x' is not a valid CIDR subnet"),
    (PoolRequest, {"SubPool": "10.1.0.0/25"}, r"an IP range \(10.1.0.0/25\) needs a subnet"),
    (PoolRelease, {}, "PoolID must be a non-empty string, got None"),
    (PoolRelease, {"PoolID": 7}, "PoolID must be a non-empty string, got 7"),
    (PoolRelease, {"PoolID": "garbage"}, "PoolID 'garbage' was not issued by pynet"),
    (AddressRequest, {"PoolID": ""}, "PoolID must be a non-empty string"),
    (AddressRequest, {"PoolID": "LocalDefault/10.1.0.0/33"}, "PoolID 'LocalDefault/10.1.0.0/33' was not issued"),
    (AddressRequest, {"PoolID": POOL_ID, "Address": 10}, "Address must be a string, got 10"),
    (AddressRequest, {"PoolID": POOL_ID, "Address": "10.1.0.300"}, "address '10.1.0.300' is not a valid IP"),
    (AddressRequest, {"PoolID": POOL_ID, "Options": []}, "Options must be an object, got list"),
    (AddressRequest, {"PoolID": POOL_ID, "Options": {"com.docker.network.endpoint.name": None}},
     r"Options\['com.docker.network.endpoint.name'\] must be a string"),
    (AddressRelease, {"PoolID": POOL_ID}, "Address must be a non-empty string, got None"),
    (AddressRelease, {"PoolID": POOL_ID, "Address": "web"}, "address 'web' is not a valid IP address"),
    (AddressRelease, {"Address": "10.1.0.1"}, "PoolID must be a non-empty string"),
])
def test_bad_input_is_a_400_naming_the_field(request_type, fields, match):
    with pytest.raises(BadRequest, match=match) as caught:
        request_type.decode(body(**fields))
    assert caught.value.category is ErrorCategory.INVALID


@pytest.mark.parametrize("options, kind, name", [
    ({"RequestAddressType": "com.docker.network.gateway"}, "gateway", ""),
    ({"com.docker.network.endpoint.name": "web"}, "endpoint", "web"),
    ({"com.docker.network.endpoint.name": ""}, "aux", ""),
    ({}, "aux", ""),  # --aux-address: no options at all
])
def test_address_request_says_what_the_address_is_for(options, kind, name):
    req = AddressRequest.decode(body(PoolID=POOL_ID, Address="", Options=options))
    assert (req.kind, req.name, req.address) == (kind, name, None)
    assert req.pool_id == PoolId.parse(POOL_ID)


def test_addresses_are_decoded_with_or_without_a_prefix_length():
    for text in ("10.1.0.7", "10.1.0.7/24"):
        assert AddressRequest.decode(body(PoolID=POOL_ID, Address=text)).address == ipaddress.ip_address("10.1.0.7")
        assert AddressRelease.decode(body(PoolID=POOL_ID, Address=text)).address == ipaddress.ip_address("10.1.0.7")


def test_replies_are_docker_json():
    assert Capabilities(requires_mac=False, requires_replay=False).encode() == {
        "RequiresMACAddress": False, "RequiresRequestReplay": False}
    assert DefaultSpaces("LocalDefault", "GlobalDefault").encode() == {
        "LocalDefaultAddressSpace": "LocalDefault", "GlobalDefaultAddressSpace": "GlobalDefault"}
    assert PoolReply(PoolId.parse(POOL_ID)).encode() == {"PoolID": POOL_ID, "Pool": "10.1.0.0/24", "Data": {}}
    assert AddressReply(ipaddress.ip_interface("fd00::2/64")).encode() == {"Address": "fd00::2/64", "Data": {}}


def test_the_service_takes_and_returns_typed_values():
    from ipam_driver.service import IpamService
    from pynet_core.store.memory import MemoryStore

    svc = IpamService(MemoryStore(), "h1")
    pool_id = svc.request_pool(PoolRequest("LocalDefault", ipaddress.ip_network("10.1.0.0/24")))
    assert pool_id == PoolId("LocalDefault", ipaddress.ip_network("10.1.0.0/24"), None, pool_id.hold)
    assert pool_id.hold is not None
    gateway = svc.request_address(AddressRequest(pool_id, kind="gateway"))
    web = svc.request_address(AddressRequest(pool_id, kind="endpoint", name="web"))
    assert (gateway, web) == (ipaddress.ip_interface("10.1.0.1/24"), ipaddress.ip_interface("10.1.0.2/24"))
    svc.release_address(pool_id, web.ip)
    svc.release_pool(pool_id)

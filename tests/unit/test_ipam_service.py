import ipaddress
import threading

import pytest

from pynet_core.errors import BadRequest, Conflict, Exhausted, NotFound
from pynet_core.store.memory import MemoryStore
from ipam_driver.pool_id import PoolId
from ipam_driver.service import DefaultPool, IpamService
from tests.fakes.ipam_client import DockerIpam

GW = {"RequestAddressType": "com.docker.network.gateway"}


def ep(name):
    return {"com.docker.network.endpoint.name": name}


@pytest.fixture
def store():
    return MemoryStore()


def ipam(store, host="h1", routes=(), pools=None):
    kwargs = {"default_pools": tuple(DefaultPool.parse(p) for p in pools)} if pools else {}
    return DockerIpam(IpamService(store, host, host_routes=lambda: [ipaddress.ip_network(r) for r in routes],
                                  **kwargs))


def test_automatic_pools_do_not_overlap_each_other_or_routes(store):
    svc = ipam(store, routes=["10.192.0.0/23"], pools=["base=10.192.0.0/16,size=24"])
    first, _ = svc.request_pool("LocalDefault", "", "", {}, False)
    second, _ = svc.request_pool("LocalDefault", "", "", {}, False)
    assert str(first.pool) == "10.192.2.0/24" and str(second.pool) == "10.192.3.0/24"


def test_exhausted_default_pools_end_in_an_error_not_a_loop(store):
    svc = ipam(store, pools=["base=10.9.0.0/23,size=24"])
    svc.request_pool("LocalDefault", "", "", {}, False)
    svc.request_pool("LocalDefault", "", "", {}, False)
    with pytest.raises(Exhausted, match="10.9.0.0/23"):
        svc.request_pool("LocalDefault", "", "", {}, False)


def test_automatic_ipv6_pool(store):
    pool, _ = ipam(store).request_pool("LocalDefault", "", "", {}, True)
    assert pool.pool.version == 6 and pool.pool.prefixlen == 64


def test_overlapping_explicit_pool_is_refused_naming_the_other(store):
    svc = ipam(store)
    svc.request_pool("LocalDefault", "10.1.0.0/16", "", {}, False)
    with pytest.raises(Conflict, match="10.1.0.0/16"):
        svc.request_pool("LocalDefault", "10.1.2.0/24", "", {}, False)


def test_same_subnet_twice_on_one_host_is_refused(store):
    svc = ipam(store)
    svc.request_pool("LocalDefault", "10.1.0.0/16", "", {}, False)
    with pytest.raises(Conflict, match="this host"):
        svc.request_pool("LocalDefault", "10.1.0.0/16", "", {}, False)


def test_same_subnet_on_two_hosts_is_one_pool(store):
    a, b = ipam(store, "h1"), ipam(store, "h2")
    pa, _ = a.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    pb, _ = b.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    assert (pa.space, pa.pool, pa.subpool) == (pb.space, pb.pool, pb.subpool)
    assert pa.hold != pb.hold  # one hold each
    assert a.request_address(pa, "", GW) == b.request_address(pb, "", GW) == "10.1.0.1/24"
    assert a.request_address(pa, "", ep("x")) == "10.1.0.2/24"
    # h2 takes the next /26 block of its own (blocks.py) rather than racing h1 for .3
    assert b.request_address(pb, "", ep("y")) == "10.1.0.64/24"
    # one host leaving keeps the pool and the shared gateway for the other
    a.release_address(pa, "10.1.0.1")
    a.release_pool(pa)
    assert b.request_address(pb, "", ep("z")) == "10.1.0.65/24"
    with pytest.raises(Conflict):
        b.request_address(pb, "10.1.0.1", ep("w"))


def test_conflicting_definition_on_another_host_is_refused(store):
    ipam(store, "h1").request_pool("LocalDefault", "10.1.0.0/24", "10.1.0.128/25", {}, False)
    with pytest.raises(Conflict, match="IP range"):
        ipam(store, "h2").request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)


def test_other_gateway_on_a_shared_pool_is_refused(store):
    a, b = ipam(store, "h1"), ipam(store, "h2")
    pool, _ = a.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    b.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    a.request_address(pool, "10.1.0.1", GW)
    with pytest.raises(Conflict, match="already has gateway 10.1.0.1"):
        b.request_address(pool, "10.1.0.254", GW)


@pytest.mark.parametrize("pool, sub, v6, match", [
    ("10.1.0.5/16", "", False, "host bits"),
    ("banana", "", False, "not a valid CIDR"),
    ("", "10.1.0.0/24", False, "needs a subnet"),
    ("10.1.0.0/16", "10.2.0.0/24", False, "not inside"),
    ("10.1.0.0/16", "", True, "IPv4"),
])
def test_bad_pool_requests(store, pool, sub, v6, match):
    with pytest.raises(BadRequest, match=match):
        ipam(store).request_pool("LocalDefault", pool, sub, {}, v6)
    assert store.list("") == []


def test_unknown_space_and_options_are_refused(store):
    with pytest.raises(BadRequest, match="address space"):
        ipam(store).request_pool("Elsewhere", "10.1.0.0/16", "", {}, False)
    with pytest.raises(BadRequest, match="ipam-opt"):
        ipam(store).request_pool("LocalDefault", "10.1.0.0/16", "", {"foo": "1"}, False)


def test_addresses_come_from_the_range_and_gateway_from_the_pool(store):
    svc = ipam(store)
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "10.1.0.128/25", {}, False)
    assert svc.request_address(pool, "", GW) == "10.1.0.1/24"
    assert svc.request_address(pool, "", ep("a")) == "10.1.0.128/24"


def test_specific_address_taken_names_its_owner(store):
    svc = ipam(store)
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    svc.request_address(pool, "10.1.0.7", ep("web"))
    with pytest.raises(Conflict, match="'web'"):
        svc.request_address(pool, "10.1.0.7", ep("db"))
    # the same container asking again (a replay) succeeds
    assert svc.request_address(pool, "10.1.0.7", ep("web")) == "10.1.0.7/24"


def test_bad_addresses(store):
    svc = ipam(store)
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    for address, match in (("10.2.0.1", "not in subnet"), ("10.1.0.255", "broadcast"),
                           ("nope", "not a valid IP")):
        with pytest.raises(BadRequest, match=match):
            svc.request_address(pool, address, ep("a"))


def test_pool_exhaustion_and_release(store):
    svc = ipam(store)
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/30", "", {}, False)
    assert svc.request_address(pool, "", ep("a")) == "10.1.0.1/30"
    assert svc.request_address(pool, "", ep("b")) == "10.1.0.2/30"
    with pytest.raises(Exhausted, match="10.1.0.0/30"):
        svc.request_address(pool, "", ep("c"))
    svc.release_address(pool, "10.1.0.1")
    svc.release_address(pool, "10.1.0.1")  # idempotent
    assert svc.request_address(pool, "", ep("c")) == "10.1.0.1/30"


def test_release_pool_frees_everything_and_is_idempotent(store):
    svc = ipam(store)
    pool, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    svc.request_address(pool, "", GW)
    svc.release_pool(pool)
    svc.release_pool(pool)
    assert [e.key for e in store.list("v1/ipam/addrs/")] == []
    with pytest.raises(NotFound):
        svc.request_address(pool, "", ep("a"))
    again, _ = svc.request_pool("LocalDefault", "10.1.0.0/24", "", {}, False)
    assert again.pool == pool.pool and again.hold != pool.hold


def test_global_space_is_refcounted(store):
    svc = ipam(store)
    a, _ = svc.request_pool("GlobalDefault", "10.5.0.0/24", "", {}, False)
    b, _ = svc.request_pool("GlobalDefault", "10.5.0.0/24", "", {}, False)
    assert a.pool == b.pool and a.hold != b.hold
    svc.release_pool(a)
    assert svc.request_address(b, "", ep("x")) == "10.5.0.1/24"


def test_pool_id_round_trip():
    pid = PoolId.parse("LocalDefault/10.1.0.0/16/10.1.2.0/24")
    assert str(pid) == "LocalDefault/10.1.0.0/16/10.1.2.0/24"
    assert str(PoolId.parse("GlobalDefault/fd00::/64").pool) == "fd00::/64"
    with pytest.raises(BadRequest, match="not issued by pynet"):
        PoolId.parse("garbage")


def test_concurrent_allocation_never_duplicates(store):
    hosts = [ipam(store, f"h{i}") for i in range(3)]
    pool = None
    for svc in hosts:
        pool, _ = svc.request_pool("LocalDefault", "10.7.0.0/24", "", {}, False)
    got: list[str] = []
    lock = threading.Lock()

    def worker(svc, n):
        for i in range(40):
            address = svc.request_address(pool, "", ep(f"{svc.host}-{n}-{i}"))
            with lock:
                got.append(address)

    threads = [threading.Thread(target=worker, args=(svc, n)) for svc in hosts for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 240 and len(set(got)) == 240

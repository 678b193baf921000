import ipaddress

from hypothesis import given, settings, strategies as st

from ipam_driver.allocator import first_free_address, next_free_subnet, reserved_addresses

net = ipaddress.ip_network


def test_first_subnet_of_empty_base():
    assert next_free_subnet(net("10.0.0.0/16"), 24, []) == net("10.0.0.0/24")


def test_skips_taken_and_overlapping_networks():
    taken = [net("10.0.0.0/24"), net("10.0.1.128/25"), net("10.0.2.0/23")]
    assert next_free_subnet(net("10.0.0.0/16"), 24, taken) == net("10.0.4.0/24")


def test_a_larger_taken_network_is_jumped_in_one_step():
    # a /9 route over most of 10/8 leaves 10.128/9; the walk must not crawl through 32k /24s
    assert next_free_subnet(net("10.0.0.0/8"), 24, [net("10.0.0.0/9")]) == net("10.128.0.0/24")


def test_exhausted_base_gives_none():
    assert next_free_subnet(net("10.0.0.0/30"), 31, [net("10.0.0.0/31"), net("10.0.0.2/31")]) is None


def test_other_family_does_not_block():
    assert next_free_subnet(net("fd00::/48"), 64, [net("10.0.0.0/8")]) == net("fd00::/64")


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(20, 28)), max_size=12))
def test_result_never_overlaps_anything_taken(specs):
    base = net("10.10.0.0/16")
    taken = [net(f"10.10.{third}.0/{plen}", strict=False) for third, plen in specs]
    found = next_free_subnet(base, 24, taken)
    if found is None:
        # exhausted only if every /24 really overlaps something
        assert all(any(s.overlaps(t) for t in taken) for s in base.subnets(new_prefix=24))
    else:
        assert found.subnet_of(base) and found.prefixlen == 24
        assert not any(found.overlaps(t) for t in taken)
        # and it is the lowest such subnet
        for s in base.subnets(new_prefix=24):
            if s == found:
                break
            assert any(s.overlaps(t) for t in taken)


def test_ipv4_reserves_network_and_broadcast():
    pool = net("10.0.0.0/24")
    assert reserved_addresses(pool) == {int(pool.network_address), int(pool.broadcast_address)}
    assert reserved_addresses(net("10.0.0.0/31")) == set()


def test_ipv6_reserves_only_subnet_router_anycast():
    pool = net("fd00::/64")
    assert reserved_addresses(pool) == {int(pool.network_address)}


def test_first_free_is_lowest_gap():
    pool = net("10.0.0.0/29")
    used = {int(ipaddress.ip_address(a)) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.4")}
    assert ipaddress.ip_address(first_free_address(pool, pool, used)) == ipaddress.ip_address("10.0.0.3")


def test_first_free_within_range_only():
    pool = net("10.0.0.0/24")
    assert ipaddress.ip_address(first_free_address(net("10.0.0.128/25"), pool, set())) \
        == ipaddress.ip_address("10.0.0.128")


def test_full_pool_gives_none():
    pool = net("10.0.0.0/30")
    used = {int(ipaddress.ip_address("10.0.0.1")), int(ipaddress.ip_address("10.0.0.2"))}
    assert first_free_address(pool, pool, used) is None


@given(st.sets(st.integers(0, 63), max_size=64))
def test_first_free_never_returns_used_or_reserved(offsets):
    pool = net("10.1.0.0/26")
    used = {int(pool.network_address) + o for o in offsets}
    found = first_free_address(pool, pool, used)
    free = [a for a in range(int(pool.network_address), int(pool.broadcast_address) + 1)
            if a not in used and a not in reserved_addresses(pool)]
    assert found == (free[0] if free else None)

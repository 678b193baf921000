"""The name table's rules (issue 21), the resolv.conf reader and the rate limiter: pure."""
from __future__ import annotations

import ipaddress

import pytest

from driver.names.limits import RateLimiter
from driver.names.resolvconf import nameservers
from driver.names.table import AAAA, NOT_MINE, A, NameRecord, NameTable, OTHER, normal

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def rec(name, net, v4=None, v6=None, host="h1", container=None, net_name=None, aliases=()):
    return NameRecord(container=container or f"c-{name}-{host}", name=name, network=net,
                      network_name=net_name or f"{net}name", host=host,
                      ipv4=V4(v4) if v4 else None, ipv6=V6(v6) if v6 else None,
                      aliases=tuple(aliases))


@pytest.fixture
def table():
    return NameTable.of([
        rec("web", "n1", "10.1.0.5", "fd00::5", net_name="front", aliases=("www", "site.alias")),
        rec("db", "n1", "10.1.0.6", net_name="front"),
        rec("db", "n2", "10.2.0.6", net_name="back", container="c-db-other"),
        rec("api", "n2", "10.2.0.7", net_name="back"),
        rec("svc", "n1", "10.1.0.10", host="h1", net_name="front"),
        rec("svc", "n1", "10.1.0.11", host="h2", net_name="front"),
        rec("svc", "n1", "10.1.0.12", host="h3", net_name="front"),
        rec("v6only", "n1", v6="fd00::9", net_name="front"),
        rec("client", "n1", "10.1.0.2", net_name="front", container="asker"),
        rec("client", "n2", "10.2.0.2", net_name="back", container="asker"),
    ])


def test_a_container_name_answers_its_address_on_a_shared_network(table):
    assert table.answer("web", A, {"n1"}).addresses == (V4("10.1.0.5"),)
    assert table.answer("WEB.", A, {"n1"}).addresses == (V4("10.1.0.5"),)
    assert table.answer("web", AAAA, {"n1"}).addresses == (V6("fd00::5"),)


def test_aliases_and_name_dot_network_answer_too(table):
    assert table.answer("www", A, {"n1"}).addresses == (V4("10.1.0.5"),)
    assert table.answer("site.alias", A, {"n1"}).addresses == (V4("10.1.0.5"),)
    assert table.answer("web.front", A, {"n1"}).addresses == (V4("10.1.0.5"),)
    assert table.answer("www.front", A, {"n1"}).addresses == (V4("10.1.0.5"),)
    assert table.answer("site.alias.front", A, {"n1"}).addresses == (V4("10.1.0.5"),)


def test_a_network_the_asker_does_not_share_is_not_mine(table):
    assert table.answer("api", A, {"n1"}) == NOT_MINE
    assert table.answer("web", A, {"n2"}) == NOT_MINE
    assert table.answer("web.front", A, {"n2"}) == NOT_MINE
    assert table.answer("api.back", A, {"n1"}) == NOT_MINE
    assert table.answer("web", A, set()) == NOT_MINE


def test_name_dot_network_picks_that_network_only(table):
    both = {"n1", "n2"}
    assert set(table.answer("db", A, both).addresses) == {V4("10.1.0.6"), V4("10.2.0.6")}
    assert table.answer("db.front", A, both).addresses == (V4("10.1.0.6"),)
    assert table.answer("db.back", A, both).addresses == (V4("10.2.0.6"),)


def test_an_exact_name_wins_over_a_name_dot_network_reading():
    t = NameTable.of([rec("a.front", "n1", "10.0.0.1", net_name="front"),
                      rec("a", "n1", "10.0.0.2", net_name="front")])
    assert t.answer("a.front", A, {"n1"}).addresses == (V4("10.0.0.1"),)


def test_a_name_on_several_hosts_answers_all_addresses_in_rotating_order(table):
    seen = [table.answer("svc", A, {"n1"}).addresses for _ in range(4)]
    assert {frozenset(s) for s in seen} == {frozenset({V4("10.1.0.10"), V4("10.1.0.11"),
                                                      V4("10.1.0.12")})}
    assert [s[0] for s in seen] == [V4("10.1.0.10"), V4("10.1.0.11"), V4("10.1.0.12"),
                                    V4("10.1.0.10")]
    assert all(len(s) == 3 for s in seen)


def test_our_name_of_another_type_or_family_is_an_empty_answer_not_a_forward(table):
    assert table.answer("web", OTHER, {"n1"}).mine and not table.answer("web", OTHER, {"n1"}).addresses
    nodata = table.answer("v6only", A, {"n1"})
    assert nodata.mine and nodata.addresses == ()
    assert table.answer("v6only", AAAA, {"n1"}).addresses == (V6("fd00::9"),)


def test_everything_else_is_not_mine(table):
    for name in ("example.org", "web.example.org", "", ".", "a" * 300, "bad name", "we\\b",
                 "web.unknownnet", "-web", "web..front", "\u00e9t\u00e9"):
        assert table.answer(name, A, {"n1"}) == NOT_MINE, name


def test_the_asker_is_the_container_holding_the_source_address(table):
    assert table.networks_of(V4("10.1.0.2")) == {"n1", "n2"}  # every network of "asker"
    assert table.networks_of(V4("10.2.0.2")) == {"n1", "n2"}
    assert table.networks_of(V4("10.1.0.5")) == {"n1"}
    assert table.networks_of(V4("192.0.2.1")) == frozenset()


def test_an_address_held_by_two_containers_names_no_asker():
    t = NameTable.of([rec("a", "n1", "10.0.0.1", container="x"),
                      rec("b", "n2", "10.0.0.1", container="y")])
    assert t.networks_of(V4("10.0.0.1")) == frozenset()


def test_records_are_checked_at_the_edge():
    with pytest.raises(ValueError):
        rec("bad name", "n1", "10.0.0.1")
    with pytest.raises(ValueError):
        NameRecord(container="", name="a", network="n", network_name="n", host="h")
    with pytest.raises(ValueError):
        NameRecord(container="c", name="a", network="n", network_name="n", host="h",
                   ipv4="10.0.0.1")  # a string, not an address
    # a bad alias is skipped, the record kept
    t = NameTable.of([rec("a", "n1", "10.0.0.1", aliases=("bad alias", "ok"))])
    assert t.answer("ok", A, {"n1"}).addresses == (V4("10.0.0.1"),)
    assert t.answer("bad alias", A, {"n1"}) == NOT_MINE


def test_normal_names():
    assert normal("Web.Front.") == "web.front"
    assert normal("/web") is None  # Docker's leading slash is the caller's to strip
    assert normal("a" * 63) and normal("a" * 64) is None
    assert normal(".".join(["a" * 50] * 5)) is None  # 254 characters


def test_the_rotation_memory_is_bounded_by_the_table_not_by_questions(table):
    for i in range(2000):
        table.answer(f"name{i}.example", A, {"n1"})
    for _ in range(50):
        table.answer("svc", A, {"n1"})
    assert len(table._turns) == 1


# --- resolv.conf --------------------------------------------------------------------------
def test_nameservers_from_resolv_conf_keep_loopback_drop_junk_and_self():
    text = """# comment
search example.org
nameserver 127.0.0.53
nameserver not-an-address
nameserver 127.0.0.53
nameserver fe80::1%eth0
options ndots:2
nameserver 10.0.0.1
nameserver 10.0.0.2
"""
    assert nameservers(text) == [("127.0.0.53", 53), ("fe80::1%eth0", 53), ("10.0.0.1", 53)]
    assert nameservers(text, own=[("127.0.0.53", 53)]) == [
        ("fe80::1%eth0", 53), ("10.0.0.1", 53), ("10.0.0.2", 53)]
    assert nameservers("") == []
    assert nameservers("nameserver\nnameserver ::1\n") == [("::1", 53)]


# --- rate limiter -------------------------------------------------------------------------
def test_a_bucket_gives_its_burst_then_refills_at_its_rate():
    limiter = RateLimiter(rate=10, burst=5)
    assert [limiter.allow("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("b", 0.0)  # another source has its own bucket
    assert [limiter.allow("a", 0.2) for _ in range(3)] == [True, True, False]  # 2 tokens
    assert not limiter.allow("a", 0.1)  # a clock going back refills nothing
    assert sum(limiter.allow("a", 100.0) for _ in range(10)) == 5  # never more than burst


def test_the_limiter_forgets_the_least_recent_source_past_its_bound():
    limiter = RateLimiter(rate=0, burst=1, max_sources=3)
    for source in "abcd":
        assert limiter.allow(source, 0.0)
    assert len(limiter) == 3
    assert limiter.allow("a", 0.0)       # forgotten, so a full bucket again
    assert not limiter.allow("d", 0.0)   # remembered, empty
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=0)

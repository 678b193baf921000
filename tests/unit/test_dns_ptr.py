"""Reverse names (PTR) of containers' addresses: answered, like Docker's own DNS, with
NAME.NETWORK to a container sharing that network; any other reverse name is forwarded (as
before); a PTR question for one of our forward names is still NODATA, never forwarded."""
from __future__ import annotations

import ipaddress

import dns.message
import dns.query
import dns.rcode
import dns.reversename

from driver.names.server import DnsServer
from driver.names.table import NameRecord, NameTable
from tests.harness.dns_upstream import FakeUpstream

V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address
ASKER = "127.0.0.2"


def table() -> NameTable:
    return NameTable.of([
        NameRecord("asker", "asker", "n1", "front", "h1", ipv4=V4(ASKER)),
        NameRecord("web", "web", "n1", "front", "h2", ipv4=V4("10.1.0.5"), ipv6=V6("fd00::5")),
        NameRecord("api", "api", "n2", "back", "h2", ipv4=V4("10.2.0.7")),
        NameRecord("odd", "odd", "n1", "", "h3", ipv4=V4("10.1.0.9")),
    ])


def test_the_table_names_an_address_to_askers_of_its_network_only():
    t = table()
    assert t.reverse(V4("10.1.0.5"), ["n1"]).names == ("web.front",)
    assert t.reverse(V6("fd00::5"), ["n1"]).names == ("web.front",)
    assert t.reverse(V4("10.1.0.9"), ["n1"]).names == ("odd",)   # no network name
    assert not t.reverse(V4("10.2.0.7"), ["n1"]).mine            # n2's: not the asker's
    assert not t.reverse(V4("10.9.9.9"), ["n1"]).mine


def ask(server, name, rdtype="PTR"):
    host, port = server.addresses[0]
    return dns.query.udp(dns.message.make_query(name, rdtype), host, port=port, timeout=2,
                         source=ASKER)


def test_the_server_answers_ptr_of_our_addresses_and_forwards_the_rest():
    upstream = FakeUpstream()
    try:
        with DnsServer([("127.0.0.1", 0)], table(), upstreams=[upstream.endpoint]) as server:
            reply = ask(server, dns.reversename.from_address("10.1.0.5"))
            assert reply.rcode() == dns.rcode.NOERROR
            assert [r.target.to_text() for r in reply.answer[0]] == ["web.front."]
            assert ask(server, dns.reversename.from_address("fd00::5")).answer[0][0].target.to_text() \
                == "web.front."
            # Another network's address and an unknown one: forwarded upstream.
            before = len(upstream.seen)
            ask(server, dns.reversename.from_address("10.2.0.7"))
            ask(server, dns.reversename.from_address("192.0.2.99"))
            assert len(upstream.seen) == before + 2
            # PTR of one of our forward names: ours, so NODATA, not forwarded.
            reply = ask(server, "web")
            assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
            assert len(upstream.seen) == before + 2
    finally:
        upstream.close()

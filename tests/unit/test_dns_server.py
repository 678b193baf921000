"""pynet's DNS server on loopback, asked by real dnspython clients; forwarding goes to a fake
upstream on loopback (never a real resolver). No root needed: 127.0.0.x, ports chosen free.

Askers are containers whose records hold 127.0.0.x addresses, so the server's own rule (the
source address names the container) decides who asks.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from driver.names.server import DnsServer, Limits
from tests.harness.dns_upstream import FakeUpstream, recvn
from driver.names.table import NameRecord, NameTable

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
LISTEN = "127.0.0.1"
UPSTREAM = "127.0.0.1"
ALICE, BOB, CAROL, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"
TIMEOUT = 2.0


def rec(name, net, v4=None, v6=None, host="h1", container=None, net_name=None, aliases=()):
    return NameRecord(container=container or f"c-{name}-{host}", name=name, network=net,
                      network_name=net_name or net, host=host,
                      ipv4=V4(v4) if v4 else None, ipv6=V6(v6) if v6 else None,
                      aliases=tuple(aliases))


def demo_table() -> NameTable:
    """alice on front; bob on back; carol on both; web, svc (3 hosts) on front; api on back."""
    return NameTable.of([
        rec("alice", "n1", ALICE, net_name="front", container="alice"),
        rec("bob", "n2", BOB, net_name="back", container="bob"),
        rec("carol", "n1", CAROL, net_name="front", container="carol"),
        rec("carol", "n2", "10.2.0.4", net_name="back", container="carol"),
        rec("web", "n1", "10.1.0.5", "fd00::5", net_name="front", aliases=("www",)),
        rec("svc", "n1", "10.1.0.10", host="h1", net_name="front"),
        rec("svc", "n1", "10.1.0.11", host="h2", net_name="front"),
        rec("svc", "n1", "10.1.0.12", host="h3", net_name="front"),
        rec("many", "n1", None, None, net_name="front"),
        rec("api", "n2", "10.2.0.7", net_name="back"),
    ] + [rec("big", "n1", f"10.1.1.{i}", host=f"h{i}", net_name="front") for i in range(1, 60)])


# --- a fake upstream ----------------------------------------------------------------------
@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


def start(upstreams, **kwargs) -> DnsServer:
    kwargs.setdefault("table", demo_table())
    return DnsServer([(LISTEN, 0)], upstreams=upstreams, **kwargs).start()


@pytest.fixture
def server(upstream) -> Iterator[DnsServer]:
    srv = start([upstream.endpoint])
    yield srv
    srv.close()


def ask(srv: DnsServer, name: str, rdtype: str = "A", source: str = ALICE, tcp: bool = False,
        **query_args) -> dns.message.Message:
    host, port = srv.addresses[0]
    query = dns.message.make_query(name, rdtype, **query_args)
    if tcp:
        return dns.query.tcp(query, host, timeout=TIMEOUT, port=port, source=source)
    return dns.query.udp(query, host, timeout=TIMEOUT, port=port, source=source)


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in response.answer for rd in rrset]


# --- answers from the table ---------------------------------------------------------------
def test_a_container_name_is_answered_a_and_aaaa_udp_and_tcp(server, upstream):
    for tcp in (False, True):
        a = ask(server, "web", tcp=tcp)
        assert a.rcode() == dns.rcode.NOERROR and addresses(a) == ["10.1.0.5"]
        assert a.flags & dns.flags.AA
        assert addresses(ask(server, "web.", "AAAA", tcp=tcp)) == ["fd00::5"]
        assert addresses(ask(server, "www.front", tcp=tcp)) == ["10.1.0.5"]
    assert upstream.seen == []


def test_a_name_on_another_network_is_forwarded_not_answered(server, upstream):
    response = ask(server, "web", source=BOB)  # bob is on back only
    assert addresses(response) == ["192.0.2.1"]
    assert upstream.seen == [("udp", "web", upstream.seen[0][2])]
    assert addresses(ask(server, "api", source=BOB)) == ["10.2.0.7"]
    # carol shares both networks: she sees both, whichever address she asks from
    assert addresses(ask(server, "api", source=CAROL)) == ["10.2.0.7"]
    assert addresses(ask(server, "web", source=CAROL)) == ["10.1.0.5"]


def test_a_service_on_three_hosts_answers_all_in_rotating_order(server):
    answers = [addresses(ask(server, "svc")) for _ in range(3)]
    assert all(sorted(a) == ["10.1.0.10", "10.1.0.11", "10.1.0.12"] for a in answers)
    assert len({a[0] for a in answers}) == 3


def test_our_name_of_another_type_is_nodata_and_stays_here(server, upstream):
    response = ask(server, "web", "MX")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []
    assert upstream.seen == []


def test_an_answer_too_big_for_udp_says_truncated_and_tcp_gives_it_all(server):
    small = ask(server, "big")  # 59 addresses: more than 512 bytes
    assert small.flags & dns.flags.TC and small.answer == []
    assert len(addresses(ask(server, "big", use_edns=0, payload=1232))) == 59
    assert len(addresses(ask(server, "big", tcp=True))) == 59


# --- forwarding ---------------------------------------------------------------------------
def test_other_names_are_forwarded_with_our_own_id_and_answered_with_the_clients(server, upstream):
    host, port = server.addresses[0]
    query = dns.message.make_query("example.org", "A")
    response = dns.query.udp(query, host, timeout=TIMEOUT, port=port, source=ALICE)
    assert response.id == query.id and addresses(response) == ["192.0.2.1"]
    assert addresses(ask(server, "example.org", tcp=True)) == ["192.0.2.1"]
    assert [s[:2] for s in upstream.seen] == [("udp", "example.org"), ("tcp", "example.org")]


def test_a_truncated_upstream_answer_is_fetched_again_over_tcp(server, upstream):
    response = ask(server, "large.example", use_edns=0, payload=4096)
    assert len(addresses(response)) == 60  # 1232 bytes at most: ours
    assert [s[:2] for s in upstream.seen] == [("udp", "large.example"), ("tcp", "large.example")]
    truncated = ask(server, "large.example")  # no EDNS: 512 bytes, so TC to the client
    assert truncated.flags & dns.flags.TC


def test_a_failing_or_dead_upstream_is_skipped_and_all_failing_is_servfail(upstream):
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind((UPSTREAM, 0))
    dead_endpoint = dead.getsockname()
    dead.close()  # nothing listens there: the kernel refuses at once
    srv = start([dead_endpoint, upstream.endpoint], limits=Limits(forward_timeout=0.5))
    try:
        assert addresses(ask(srv, "example.org")) == ["192.0.2.1"]
        assert ask(srv, "fail.example").rcode() == dns.rcode.SERVFAIL
    finally:
        srv.close()
    srv = start([])
    try:
        assert ask(srv, "example.org").rcode() == dns.rcode.SERVFAIL
        assert addresses(ask(srv, "web")) == ["10.1.0.5"]  # names need no upstream
    finally:
        srv.close()


def test_the_server_never_forwards_to_itself(upstream):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((LISTEN, 0))
    own = probe.getsockname()
    probe.close()
    srv = DnsServer([own], table=demo_table(), upstreams=[own, upstream.endpoint]).start()
    try:
        assert srv.addresses == [own] and srv.upstreams == [upstream.endpoint]
    finally:
        srv.close()


def test_upstreams_come_from_resolv_conf_by_default_without_the_server_itself(tmp_path, upstream):
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {UPSTREAM}\nnameserver 127.0.0.77\n")
    srv = DnsServer([(LISTEN, 0)], table=demo_table(), resolv_conf=conf).start()
    try:
        assert srv.upstreams == [(UPSTREAM, 53), ("127.0.0.77", 53)]
    finally:
        srv.close()
    missing = DnsServer([(LISTEN, 0)], resolv_conf=tmp_path / "none").start()
    try:
        assert missing.upstreams == []
    finally:
        missing.close()


def test_concurrent_forwards_are_bounded_and_the_rest_refused_at_once(upstream):
    upstream.hold = True
    srv = start([upstream.endpoint], limits=Limits(max_forwards=4, forward_timeout=5))
    try:
        host, port = srv.addresses[0]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ALICE, 0))
        sock.settimeout(TIMEOUT)
        queries = [dns.message.make_query(f"n{i}.example", "A") for i in range(10)]
        for q in queries:
            sock.sendto(q.to_wire(), (host, port))
        early = [dns.message.from_wire(sock.recv(65535)) for _ in range(6)]
        assert [r.rcode() for r in early] == [dns.rcode.REFUSED] * 6
        _wait(lambda: len(upstream.seen) == 4)
        upstream.release.set()
        late = [dns.message.from_wire(sock.recv(65535)) for _ in range(4)]
        assert [r.rcode() for r in late] == [dns.rcode.NOERROR] * 4
        assert srv.stats["forward_busy"] == 6 and srv.stats["forwarded"] == 4
        sock.close()
    finally:
        srv.close()


# --- who may ask --------------------------------------------------------------------------
def test_no_open_resolver_strangers_are_refused_unless_allowed(upstream):
    srv = start([upstream.endpoint], trust_loopback=False)
    try:
        assert ask(srv, "example.org", source=STRANGER).rcode() == dns.rcode.REFUSED
        assert ask(srv, "web", source=STRANGER).rcode() == dns.rcode.REFUSED
        assert addresses(ask(srv, "example.org", source=ALICE)) == ["192.0.2.1"]  # a container
        assert upstream.seen == [("udp", "example.org", upstream.seen[0][2])]
    finally:
        srv.close()
    allowed = start([upstream.endpoint], trust_loopback=False,
                    allow_from=[ipaddress.ip_network(f"{STRANGER}/32")])
    opened = start([upstream.endpoint], trust_loopback=False, open_resolver=True)
    try:
        for srv in (allowed, opened):
            assert addresses(ask(srv, "example.org", source=STRANGER)) == ["192.0.2.1"]
            # a stranger is on no network: our names are not answered to it
            assert addresses(ask(srv, "web", source=STRANGER)) == ["192.0.2.1"]
    finally:
        allowed.close()
        opened.close()


def test_a_flood_from_one_source_is_cut_at_its_bucket_and_others_still_answered(upstream):
    frozen = [100.0]
    srv = start([upstream.endpoint], limits=Limits(rate=10, burst=20), clock=lambda: frozen[0])
    try:
        host, port = srv.addresses[0]
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.bind((ALICE, 0))

        def send(count: int, first_id: int) -> None:
            # in steps the server has seen, so the kernel's queue never overflows: the
            # counts below are the limiter's, not the socket buffer's
            for i in range(count):
                flood.sendto(dns.message.make_query("web", "A", id=first_id + i).to_wire(),
                             (host, port))
                if i % 20 == 19:
                    seen = first_id + i + 1
                    _wait(lambda: srv.stats.get("answered", 0)
                          + srv.stats.get("rate_limited", 0) >= seen)

        send(200, 0)
        assert addresses(ask(srv, "web", source=CAROL)) == ["10.1.0.5"]
        answered = _drain(flood)
        assert len(answered) == 20 and srv.stats["rate_limited"] == 180
        frozen[0] += 1.0  # one second later: 10 more tokens
        send(40, 201)  # ids 201..240 (carol's query was the 201st seen)
        assert addresses(ask(srv, "web", source=CAROL)) == ["10.1.0.5"]
        assert len(_drain(flood)) == 10 and srv.stats["rate_limited"] == 210
        flood.close()
    finally:
        srv.close()


# --- bad input ----------------------------------------------------------------------------
def _raw(srv: DnsServer, wire: bytes, source: str = ALICE) -> bytes | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.settimeout(0.5)
    try:
        sock.sendto(wire, srv.addresses[0])
        return sock.recv(65535)
    except socket.timeout:
        return None
    finally:
        sock.close()


def _header(qid=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)


def _rcode_of(reply: bytes) -> int:
    return struct.unpack("!H", reply[2:4])[0] & 0xF


QUESTION = b"\x03web\x00\x00\x01\x00\x01"
LOOP = b"\xc0\x0c\x00\x01\x00\x01"  # a name pointing at itself (offset 12)


@pytest.mark.parametrize("wire, expected", [
    (b"", None),
    (b"\x12\x34\x01", None),                                        # under a header
    (_header(flags=0x8100) + QUESTION, None),                       # a response: never answered
    (_header() , dns.rcode.FORMERR),                                # qdcount 1, no question
    (_header() + QUESTION[:5], dns.rcode.FORMERR),                  # truncated name
    (_header() + LOOP, dns.rcode.FORMERR),                          # pointer loop
    (_header() + b"\xc0\x11\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),  # two-pointer loop
    (_header(qd=2) + QUESTION * 2, dns.rcode.FORMERR),              # two questions
    (_header(qd=65535) + QUESTION * 100, dns.rcode.FORMERR),        # many questions
    (_header(qd=0), dns.rcode.FORMERR),
    (_header(an=1) + QUESTION, dns.rcode.FORMERR),
    (_header(ar=9) + QUESTION, dns.rcode.FORMERR),
    (_header() + QUESTION + b"junk", dns.rcode.FORMERR),            # trailing bytes
    (_header() + b"\x3f" + b"a" * 63 + b"\x40" + b"a" * 10 + b"\x00\x00\x01\x00\x01",
     dns.rcode.FORMERR),                                            # label length 64
    (_header() + b"\x3f" + (b"a" * 63 + b"\x3f") * 5 + b"\x00\x00\x01\x00\x01",
     dns.rcode.FORMERR),                                            # name over 255 bytes
    (_header(flags=0x2800) + QUESTION, dns.rcode.NOTIMP),           # UPDATE
    (_header(flags=0x2000) + QUESTION, dns.rcode.NOTIMP),           # NOTIFY
    (_header() + QUESTION + b"\x00" * 60000, dns.rcode.FORMERR),    # huge
], ids=["empty", "short", "response", "no-question", "truncated-name", "pointer-loop",
        "two-pointer-loop", "two-questions", "many-questions", "zero-questions", "answer-rr",
        "nine-additional", "trailing", "label-64", "name-over-255", "update", "notify", "huge"])
def test_bad_messages_get_a_clean_answer_or_none_and_the_server_goes_on(server, wire, expected):
    reply = _raw(server, wire)
    if expected is None:
        assert reply is None
    else:
        assert reply is not None and len(reply) >= 12
        assert reply[:2] == wire[:2] and reply[2] & 0x80  # our id, a response
        assert _rcode_of(reply) == expected
    assert addresses(ask(server, "web")) == ["10.1.0.5"]
    assert server.stats.get("errors", 0) == 0


def test_zone_transfers_and_odd_classes_are_not_forwarded_blindly(server, upstream):
    assert ask(server, "example.org", "AXFR").rcode() == dns.rcode.REFUSED
    chaos = dns.message.make_query("version.bind", "TXT", "CH")
    host, port = server.addresses[0]
    response = dns.query.udp(chaos, host, timeout=TIMEOUT, port=port, source=ALICE)
    assert response.rcode() == dns.rcode.NOERROR  # forwarded: the fake answers empty
    assert [s[1] for s in upstream.seen] == ["version.bind"]


def test_tcp_slow_idle_and_too_many_connections_are_cut(upstream):
    srv = start([upstream.endpoint], limits=Limits(max_tcp_connections=2, tcp_idle_timeout=0.5))
    try:
        host, port = srv.addresses[0]
        slow = socket.create_connection((host, port), timeout=TIMEOUT)
        slow.sendall(b"\x00")  # one byte of the length, then nothing
        idle = socket.create_connection((host, port), timeout=TIMEOUT)
        _wait(lambda: srv._tcp_slots._value == 0)
        third = socket.create_connection((host, port), timeout=TIMEOUT)
        assert third.recv(10) == b""  # closed at once: no slot
        assert slow.recv(10) == b"" and idle.recv(10) == b""  # cut after 0.5 s
        zero = socket.create_connection((host, port), timeout=TIMEOUT)
        zero.sendall(b"\x00\x00")
        assert zero.recv(10) == b""
        for s in (slow, idle, third, zero):
            s.close()
        # several queries on one connection, then it still serves others
        conn = socket.create_connection((host, port), timeout=TIMEOUT, source_address=(ALICE, 0))
        for i in range(3):
            wire = dns.message.make_query("web", "A", id=i).to_wire()
            conn.sendall(struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", recvn(conn, 2))
            assert addresses(dns.message.from_wire(recvn(conn, length))) == ["10.1.0.5"]
        conn.close()
        assert srv.stats["tcp_rejected"] >= 1
        assert addresses(ask(srv, "web", tcp=True)) == ["10.1.0.5"]
    finally:
        srv.close()


def test_one_source_cannot_hold_every_tcp_connection(upstream):
    srv = start([upstream.endpoint], limits=Limits(max_tcp_connections=4, tcp_per_source=2,
                                                   tcp_idle_timeout=3))
    try:
        host, port = srv.addresses[0]
        held = [socket.create_connection((host, port), timeout=TIMEOUT,
                                         source_address=(STRANGER, 0)) for _ in range(2)]
        _wait(lambda: srv._tcp_by_source.get(STRANGER) == 2)
        third = socket.create_connection((host, port), timeout=TIMEOUT,
                                         source_address=(STRANGER, 0))
        assert third.recv(10) == b""  # its source already holds its two
        assert addresses(ask(srv, "web", tcp=True)) == ["10.1.0.5"]  # another source gets in
        for s in held + [third]:
            s.close()
        _wait(lambda: STRANGER not in srv._tcp_by_source)
        assert srv._tcp_slots._value == 4
    finally:
        srv.close()


def test_a_new_table_is_served_at_once(server):
    assert addresses(ask(server, "web")) == ["10.1.0.5"]
    server.set_table(NameTable.of([rec("alice", "n1", ALICE, container="alice"),
                                   rec("web", "n1", "10.1.0.99")]))
    assert addresses(ask(server, "web")) == ["10.1.0.99"]


# --- helpers ------------------------------------------------------------------------------
def _drain(sock: socket.socket, quiet: float = 0.5) -> list[bytes]:
    got = []
    sock.settimeout(quiet)
    while True:
        try:
            got.append(sock.recv(65535))
        except socket.timeout:
            return got


def _wait(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_it_listens_on_several_addresses_ipv6_included(upstream):
    table = NameTable.of(list(demo_table().records)
                         + [rec("six", "n1", v6="::1", net_name="front", container="six")])
    srv = DnsServer([(LISTEN, 0), ("::1", 0)], table=table,
                    upstreams=[upstream.endpoint]).start()
    try:
        (v4host, v4port), (v6host, v6port) = srv.addresses
        assert v6host == "::1"
        query = dns.message.make_query("web", "AAAA")
        response = dns.query.udp(query, v6host, timeout=TIMEOUT, port=v6port, source="::1")
        assert addresses(response) == ["fd00::5"]  # ::1 is container "six", on front
        response = dns.query.tcp(query, v6host, timeout=TIMEOUT, port=v6port, source="::1")
        assert addresses(response) == ["fd00::5"]
        assert addresses(ask(srv, "web")) == ["10.1.0.5"]  # the IPv4 listener too
    finally:
        srv.close()


def test_wildcards_and_names_are_refused_at_construction():
    with pytest.raises(ValueError, match="concrete address"):
        DnsServer([("0.0.0.0", 0)])
    with pytest.raises(ValueError, match="concrete address"):
        DnsServer([("::", 0)])
    with pytest.raises(ValueError, match="IP address"):
        DnsServer([(LISTEN, 0)], upstreams=[("dns.example", 53)])
    with pytest.raises(ValueError):
        DnsServer([])


def test_a_failed_bind_leaves_nothing_open(upstream):
    first = start([upstream.endpoint])
    try:
        taken = first.addresses[0]
        second = DnsServer([(LISTEN, 0), taken], upstreams=[])
        with pytest.raises(OSError):
            second.start()
        assert all(sock.fileno() == -1 for sock in second._sockets)
    finally:
        first.close()

"""Random and mutated wire messages against a real server on loopback: every reply is a
well-formed response to the message's id (or there is none), the server keeps answering a
valid query after each, and its memory stays bounded over a long run of garbage from many
sources. Forwards go to the fake upstream on loopback only."""
from __future__ import annotations

import gc
import random
import socket
import struct
import time
import tracemalloc
from collections.abc import Iterator

import dns.exception
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from driver.names.server import DnsServer, Limits
from tests.harness.dns_upstream import FakeUpstream
from tests.unit.test_dns_server import ALICE, LISTEN, addresses, ask, demo_table

GENEROUS = Limits(rate=1_000_000, burst=1_000_000, forward_timeout=0.5)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(upstream) -> Iterator[DnsServer]:
    srv = DnsServer([(LISTEN, 0)], table=demo_table(), upstreams=[upstream.endpoint],
                    limits=GENEROUS).start()
    yield srv
    srv.close()


def valid_wires() -> list[bytes]:
    wires = []
    for name, rdtype, edns in (("web", "A", -1), ("svc", "A", 0), ("web.front", "AAAA", 0),
                               ("example.org", "MX", -1), ("big", "A", 0)):
        query = dns.message.make_query(name, rdtype, use_edns=edns)
        wires.append(query.to_wire())
    return wires


def mutate(wire: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(wire)
    for kind, where, value in ops:
        if not data:
            data.append(value)
            continue
        i = where % len(data)
        if kind == 0:
            data[i] = value                       # overwrite a byte
        elif kind == 1:
            del data[i:]                          # truncate
        elif kind == 2:
            data[i:i] = bytes([value]) * (where % 7 + 1)  # insert
        elif kind == 3:
            data[i:i + 2] = b"\xc0" + bytes([value % 40])  # a compression pointer
        elif kind == 4 and len(data) >= 12:
            data[4 + 2 * (value % 4):6 + 2 * (value % 4)] = struct.pack("!H", where % 65536)
        elif kind == 5:
            data += data[: where % 300]           # repeat a prefix
    return bytes(data)


wires = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.sampled_from(valid_wires()),
              st.lists(st.tuples(st.integers(0, 5), st.integers(0, 70000), st.integers(0, 255)),
                        min_size=1, max_size=6)).map(lambda t: mutate(*t)),
)


def check_reply(sent: bytes, reply: bytes) -> None:
    assert len(reply) >= 12
    assert reply[:2] == sent[:2]           # the query's id
    assert reply[2] & 0x80                 # QR: a response
    opcode = (reply[2] >> 3) & 0xF
    if opcode:
        # NOTIMP echoes the query's opcode, which dnspython 2.3 cannot read when unassigned:
        # the header alone, with NOTIMP
        assert len(reply) == 12 and reply[3] & 0xF == dns.rcode.NOTIMP
    else:
        # dnspython reads it back (it is well formed)
        dns.message.from_wire(reply, ignore_trailing=False)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(wire=wires)
def test_any_message_gets_a_clean_answer_or_none_and_the_server_goes_on(server, wire):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ALICE, 0))
    try:
        sock.sendto(wire, server.addresses[0])
        # a valid query after it, from the same socket: its answer comes after any answer to
        # the garbage (one UDP thread, in order), so no reply is waited for in vain
        probe = dns.message.make_query("web", "A")
        sock.sendto(probe.to_wire(), server.addresses[0])
        sock.settimeout(3)
        while True:
            reply = sock.recv(65535)
            if reply[:2] == probe.to_wire()[:2] and len(reply) > 12:
                message = dns.message.from_wire(reply)
                if message.question and message.question[0].name.to_text() == "web.":
                    assert addresses(message) == ["10.1.0.5"]
                    break
            check_reply(wire, reply)
    finally:
        sock.close()
    assert server.stats.get("errors", 0) == 0


def test_memory_stays_bounded_under_a_long_run_of_garbage_from_many_sources(upstream):
    rng = random.Random(21)
    limits = Limits(rate=1_000_000, burst=1_000_000, max_sources=64, forward_timeout=0.5)
    srv = DnsServer([(LISTEN, 0)], table=demo_table(), upstreams=[upstream.endpoint],
                    limits=limits).start()
    sources = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(200)]
    try:
        for i, sock in enumerate(sources):
            sock.bind((f"127.0.{1 + i // 250}.{2 + i % 250}", 0))
            sock.setblocking(False)
        base = valid_wires()

        def burst(count: int) -> None:
            for n in range(count):
                wire = mutate(rng.choice(base), [(rng.randrange(6), rng.randrange(70000),
                                                  rng.randrange(256))
                                                 for _ in range(rng.randrange(1, 5))]) \
                    if n % 3 else rng.randbytes(rng.randrange(0, 700))
                sock = sources[n % len(sources)]
                try:
                    sock.sendto(wire, srv.addresses[0])
                except BlockingIOError:
                    pass
                if n % 50 == 0:
                    time.sleep(0.002)  # let the server breathe: what is measured is memory
                    for s in sources:  # replies are not read: drop them
                        _discard(s)
            for s in sources:
                _discard(s)
            assert addresses(_ask_again(srv, "web")) == ["10.1.0.5"]  # it still answers

        tracemalloc.start()
        burst(3000)  # warm up: threads, caches, buckets
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        burst(15000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert after - before < 1_000_000, f"grew {after - before} bytes over 15,000 messages"
        assert len(srv._limiter) <= 64
        assert srv.stats.get("errors", 0) == 0
        assert srv.stats["formerr"] > 1000
    finally:
        for sock in sources:
            sock.close()
        srv.close()


def _ask_again(srv: DnsServer, name: str, tries: int = 5) -> dns.message.Message:
    """A query that may be lost while the socket's queue is still full of garbage (UDP
    drops it, by design) is asked again, as a stub resolver would."""
    for attempt in range(tries):
        try:
            return ask(srv, name)
        except dns.exception.Timeout:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def _discard(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65535)
        except (BlockingIOError, OSError):
            return

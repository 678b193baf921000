"""pynet's DNS server: answers container names from a NameTable, forwards the rest.

Built on dnspython (dns.message.from_wire / make_response for the wire, dns.query for the
upstream exchange). One thread per UDP socket receives and answers the table's names
inline; forwards run on a bounded pool; one thread per TCP listener accepts, and each TCP
connection (a bounded number) has its own thread.

Who is asking is the packet's source address: `asker_networks(address)` gives the networks
of the container holding it (by default the table's own `networks_of`). Containers reach
pynet through Docker's embedded resolver, which forwards a `--dns`/daemon `dns` server from
the container's namespace, so the source is the container's address (docs/dns-notes.md).

Hostile input, by design:
- under 12 bytes, or a response (QR set): dropped, never answered (no reflection loops);
- opcode other than QUERY: NOTIMP; not exactly one question, any answer or authority
  record, more than one additional (the OPT): FORMERR; anything dnspython cannot parse
  (truncated, pointer loops, bad labels, trailing bytes): FORMERR, header only;
- per-source token bucket (limits.RateLimiter): over it, UDP is dropped and a TCP
  connection closed; the bucket table is bounded;
- a source that is not a known container, not loopback and not in `allow_from` is REFUSED
  unless `open_resolver` is set: pynet is no open resolver on a non-local address;
- at most `max_forwards` forwards at once; one more is REFUSED at once (as Docker's
  resolver does past its 1024), so a flood of names to forward queues nothing;
- TCP: at most `max_tcp_connections`, `tcp_per_source` of them from one address, each with an idle deadline for a whole message and a
  bound on queries per connection; every message is at most 65,535 bytes by its framing.
"""
from __future__ import annotations

import copy
import ipaddress
import logging
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.name
import dns.rdtypes.ANY.PTR
import dns.rdtypes.IN.A
import dns.reversename
import dns.rdtypes.IN.AAAA
import dns.rrset

from .limits import RateLimiter
from .resolvconf import canonical, nameservers
from .table import AAAA, A, NameTable, OTHER

log = logging.getLogger("pynet.names")

Endpoint = tuple[str, int]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

HEADER = struct.Struct("!6H")
QR, TC = 0x8000, 0x0200
MAX_MESSAGE = 65535
MIN_UDP = 512
_RANDOM = random.SystemRandom()
_NO_FORWARD = {dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.OPT}


@dataclass(frozen=True)
class Limits:
    rate: float = 100.0              # queries per second per source
    burst: float = 200.0
    max_sources: int = 4096          # buckets kept (least recently used forgotten)
    max_forwards: int = 64           # forwards in flight at once
    forward_timeout: float = 2.0     # per upstream server tried
    max_tcp_connections: int = 64
    tcp_per_source: int = 8          # so one source cannot hold every connection
    tcp_idle_timeout: float = 5.0    # for each whole message on a connection
    tcp_queries_per_connection: int = 100
    udp_payload: int = 1232          # the largest UDP answer we send (EDNS, DNS flag day 2020)


class DnsServer:
    """Serve `table` on each (address, port) of `listen`, UDP and TCP."""

    def __init__(self, listen: Sequence[Endpoint], table: Optional[NameTable] = None, *,
                 asker_networks: Optional[Callable[[Address], Collection[str]]] = None,
                 upstreams: Optional[Sequence[Endpoint]] = None,
                 resolv_conf: Path = Path("/etc/resolv.conf"),
                 allow_from: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
                 open_resolver: bool = False, trust_loopback: bool = True,
                 limits: Limits = Limits(), freebind: bool = False,
                 ttl: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        if not listen:
            raise ValueError("a DNS server needs at least one address to listen on")
        self.table = table if table is not None else NameTable()
        self._asker_networks = asker_networks
        self._listen = [(str(ipaddress.ip_address(host)), int(port)) for host, port in listen]
        for host, _ in self._listen:
            if ipaddress.ip_address(host).is_unspecified:
                # A wildcard socket may answer from another address than the one asked, and
                # Docker's resolver (like dnspython) drops such answers: name the address.
                raise ValueError(f"listen on a concrete address, not {host}")
        self._given_upstreams = None if upstreams is None else [
            (_upstream_address(host), int(port)) for host, port in upstreams]
        self._resolv_conf = resolv_conf
        self.upstreams: list[Endpoint] = []
        self._allow_from = tuple(allow_from)
        self.open_resolver = open_resolver
        self.trust_loopback = trust_loopback
        self.limits = limits
        # Bind an address the host does not have yet (IP_FREEBIND): docker_gwbridge's
        # gateway exists only once dockerd first needs that bridge.
        self.freebind = freebind
        self.ttl = ttl
        self._clock = clock
        self._limiter = RateLimiter(limits.rate, limits.burst, limits.max_sources)
        self._limiter_lock = threading.Lock()
        self._forwards = threading.BoundedSemaphore(limits.max_forwards)
        self._tcp_slots = threading.BoundedSemaphore(limits.max_tcp_connections)
        self._tcp_by_source: dict[str, int] = {}   # open connections per source address
        self._tcp_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=limits.max_forwards,
                                        thread_name_prefix="pynet-dns-forward")
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.addresses: list[Endpoint] = []

    # --- life --------------------------------------------------------------------------
    def start(self) -> "DnsServer":
        try:
            for host, port in self._listen:
                udp, tcp = _bind_pair(host, port, self.freebind)
                self._sockets += [udp, tcp]
                self.addresses.append((host, udp.getsockname()[1]))
        except OSError:
            self.close()
            raise
        own = self.addresses
        if self._given_upstreams is not None:
            self.upstreams = [u for u in self._given_upstreams if u not in own]
        else:
            try:
                text = self._resolv_conf.read_text(errors="replace")
            except OSError as err:
                log.warning("no upstream DNS servers: %s", err)
                text = ""
            self.upstreams = nameservers(text, own=own)
        for i, (host, _) in enumerate(self.addresses):
            self._spawn(self._serve_udp, self._sockets[2 * i], f"pynet-dns-udp-{host}")
            self._spawn(self._serve_tcp, self._sockets[2 * i + 1], f"pynet-dns-tcp-{host}")
        log.info("DNS on %s, upstreams %s", self.addresses, self.upstreams or "none")
        return self

    def close(self) -> None:
        self._stop.set()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=2)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_table(self, table: NameTable) -> None:
        """Answer from `table` from now on (one reference swap)."""
        self.table = table

    @property
    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def _count(self, what: str) -> None:
        with self._stats_lock:
            self._stats[what] += 1

    def _spawn(self, target: Callable[..., None], sock: socket.socket, name: str) -> None:
        thread = threading.Thread(target=target, args=(sock,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- UDP -----------------------------------------------------------------------------
    def _serve_udp(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = sock.recvfrom(MAX_MESSAGE)
            except socket.timeout:
                continue
            except OSError:
                return  # closed
            try:
                self._handle(wire, peer, tcp=False,
                             send=lambda data, p=peer: _sendto(sock, data, p))
            except Exception:  # noqa: BLE001 - one bad packet never stops the server
                self._count("errors")
                log.debug("DNS query from %s failed", peer, exc_info=True)

    # --- TCP -----------------------------------------------------------------------------
    def _serve_tcp(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            source = peer[0]
            with self._tcp_lock:
                mine = self._tcp_by_source.get(source, 0)
                if mine >= self.limits.tcp_per_source:
                    admitted = False
                else:
                    admitted = self._tcp_slots.acquire(blocking=False)
                if admitted:
                    self._tcp_by_source[source] = mine + 1
            if not admitted:
                self._count("tcp_rejected")
                _close(conn)
                continue
            thread = threading.Thread(target=self._serve_connection, args=(conn, peer),
                                      name="pynet-dns-tcp-conn", daemon=True)
            thread.start()

    def _serve_connection(self, conn: socket.socket, peer: tuple) -> None:
        try:
            for _ in range(self.limits.tcp_queries_per_connection):
                deadline = time.monotonic() + self.limits.tcp_idle_timeout
                head = _recv_exactly(conn, 2, deadline, self._stop)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                wire = _recv_exactly(conn, length, deadline, self._stop) if length else None
                if wire is None:
                    return
                replies: list[bytes] = []
                if not self._handle(wire, peer, tcp=True, send=replies.append):
                    return  # rate limited or dropped: the connection goes
                for reply in replies:
                    conn.settimeout(self.limits.tcp_idle_timeout)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ValueError):
            pass
        except Exception:  # noqa: BLE001
            self._count("errors")
            log.debug("DNS connection from %s failed", peer, exc_info=True)
        finally:
            _close(conn)
            with self._tcp_lock:
                left = self._tcp_by_source.pop(peer[0], 1) - 1
                if left > 0:
                    self._tcp_by_source[peer[0]] = left
                self._tcp_slots.release()

    # --- one query -----------------------------------------------------------------------
    def _handle(self, wire: bytes, peer: tuple, *, tcp: bool,
                send: Callable[[bytes], None]) -> bool:
        """Answer `wire` from `peer` through `send` (now, or later from the forward pool).
        False when it is dropped without an answer."""
        if len(wire) < HEADER.size:
            self._count("dropped_short")
            return False
        qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(wire)
        if flags & QR:
            self._count("dropped_response")
            return False
        source = ipaddress.ip_address(peer[0])
        with self._limiter_lock:
            allowed = self._limiter.allow(str(source), self._clock())
        if not allowed:
            self._count("rate_limited")
            return False
        opcode = (flags >> 11) & 0xF
        if opcode != dns.opcode.QUERY:
            self._count("notimp")
            send(_header_only(qid, flags, dns.rcode.NOTIMP))
            return True
        if qdcount != 1 or ancount or nscount or arcount > 1:
            self._count("formerr")
            send(_header_only(qid, flags, dns.rcode.FORMERR))
            return True
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - every way a message can be bad is FORMERR
            self._count("formerr")
            send(_header_only(qid, flags, dns.rcode.FORMERR))
            return True
        if len(query.question) != 1:
            self._count("formerr")
            send(_header_only(qid, flags, dns.rcode.FORMERR))
            return True
        limit = MAX_MESSAGE if tcp else self._udp_limit(query)

        networks = self._networks(source)
        if not (networks or self.open_resolver or (self.trust_loopback and source.is_loopback)
                or any(source in net for net in self._allow_from)):
            self._count("refused_source")
            send(_rcode(query, dns.rcode.REFUSED, limit))
            return True

        question = query.question[0]
        reverse = _reverse_address(question.name) if question.rdtype == dns.rdatatype.PTR else None
        if question.rdclass == dns.rdataclass.IN and networks and reverse is not None:
            # A reverse name of one of our containers' addresses: its names (Docker's own DNS
            # answers those of its host's containers alike); any other is forwarded.
            answer = self.table.reverse(reverse, networks)
            if answer.mine:
                self._count("answered")
                send(self._names(query, answer.names, limit))
                return True
        elif question.rdclass == dns.rdataclass.IN and networks:
            qtype = {dns.rdatatype.A: A, dns.rdatatype.AAAA: AAAA}.get(question.rdtype, OTHER)
            answer = self.table.answer(question.name.to_text(omit_final_dot=True), qtype,
                                       networks)
            if answer.mine:
                self._count("answered")
                send(self._local(query, answer.addresses, qtype, limit))
                return True
        if question.rdtype in _NO_FORWARD or not self.upstreams:
            self._count("refused" if self.upstreams else "servfail")
            send(_rcode(query, dns.rcode.REFUSED if self.upstreams else dns.rcode.SERVFAIL,
                        limit))
            return True
        if not self._forwards.acquire(blocking=False):
            self._count("forward_busy")
            send(_rcode(query, dns.rcode.REFUSED, limit))
            return True
        if tcp:
            try:
                send(self._forward(query, tcp, limit))
            finally:
                self._forwards.release()
            return True
        try:
            self._pool.submit(self._forward_and_send, query, limit, send)
        except RuntimeError:  # shutting down
            self._forwards.release()
            return False
        return True

    def _networks(self, source: Address) -> frozenset[str]:
        if self._asker_networks is not None:
            return frozenset(self._asker_networks(source))
        return self.table.networks_of(source)

    def _udp_limit(self, query: dns.message.Message) -> int:
        if query.edns >= 0:
            return max(MIN_UDP, min(int(query.payload), self.limits.udp_payload))
        return MIN_UDP

    def _local(self, query: dns.message.Message, addresses: Sequence[Address], qtype: str,
               limit: int) -> bytes:
        response = dns.message.make_response(query, our_payload=self.limits.udp_payload)
        response.flags |= dns.flags.AA | dns.flags.RA
        if addresses:
            # rdata built directly: parsing them from text costs three times as much
            make, rdtype = (dns.rdtypes.IN.A.A, dns.rdatatype.A) if qtype == A else \
                (dns.rdtypes.IN.AAAA.AAAA, dns.rdatatype.AAAA)
            response.answer.append(dns.rrset.from_rdata_list(
                query.question[0].name, self.ttl,
                [make(dns.rdataclass.IN, rdtype, str(a)) for a in addresses]))
        return _render(response, limit)

    def _names(self, query: dns.message.Message, names: Sequence[str], limit: int) -> bytes:
        response = dns.message.make_response(query, our_payload=self.limits.udp_payload)
        response.flags |= dns.flags.AA | dns.flags.RA
        response.answer.append(dns.rrset.from_rdata_list(
            query.question[0].name, self.ttl,
            [dns.rdtypes.ANY.PTR.PTR(dns.rdataclass.IN, dns.rdatatype.PTR,
                                     dns.name.from_text(n)) for n in names]))
        return _render(response, limit)

    # --- forwarding ----------------------------------------------------------------------
    def _forward_and_send(self, query: dns.message.Message, limit: int,
                          send: Callable[[bytes], None]) -> None:
        try:
            send(self._forward(query, False, limit))
        except Exception:  # noqa: BLE001
            self._count("errors")
            log.debug("forwarding failed", exc_info=True)
        finally:
            self._forwards.release()

    def _forward(self, query: dns.message.Message, tcp: bool, limit: int) -> bytes:
        outgoing = copy.copy(query)
        outgoing.id = _RANDOM.randrange(0, 65536)  # not the client's id: ours to match
        timeout = self.limits.forward_timeout
        for host, port in list(self.upstreams):
            if self._stop.is_set():
                break
            try:
                if tcp:
                    response = dns.query.tcp(outgoing, host, timeout=timeout, port=port)
                else:
                    response = dns.query.udp(outgoing, host, timeout=timeout, port=port,
                                             ignore_unexpected=True)
                    if response.flags & dns.flags.TC:
                        response = dns.query.tcp(outgoing, host, timeout=timeout, port=port)
            except (OSError, EOFError, dns.exception.DNSException, ValueError):
                self._count("upstream_failed")
                continue
            if response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                self._count("upstream_failed")
                continue
            response.id = query.id
            self._count("forwarded")
            try:
                return _render(response, limit)
            except Exception:  # noqa: BLE001 - an answer we cannot render is a failure
                self._count("upstream_failed")
                continue
        self._count("servfail")
        return _rcode(query, dns.rcode.SERVFAIL, limit)


# --- helpers -------------------------------------------------------------------------------
IP_FREEBIND, IPV6_FREEBIND = 15, 78  # linux/in.h, linux/in6.h


def _bind_pair(host: str, port: int, freebind: bool = False) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on one (host, port); port 0 picks one free for both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def free(sock: socket.socket) -> None:
        if freebind:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)

    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            free(udp)
            udp.bind((host, port))
            chosen = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                free(tcp)
                tcp.bind((host, chosen))
                tcp.listen(128)
            except OSError:
                tcp.close()
                raise
        except OSError:
            udp.close()
            if port:
                raise
            continue
        udp.settimeout(0.2)
        tcp.settimeout(0.2)
        return udp, tcp
    raise OSError(f"no free port on {host} for both UDP and TCP")


def _upstream_address(host: str) -> str:
    address = canonical(host)
    if address is None:
        raise ValueError(f"an upstream DNS server is an IP address, not {host!r}")
    return address


def _reverse_address(name: dns.name.Name) -> Optional[Address]:
    """The address a reverse name (in-addr.arpa, ip6.arpa) names, None for any other name."""
    try:
        return ipaddress.ip_address(dns.reversename.to_address(name))
    except (dns.exception.DNSException, ValueError, TypeError):
        return None


def _header_only(qid: int, flags: int, rcode: int) -> bytes:
    """A response of the header alone: for a query too broken to echo its question."""
    opcode_bits = flags & 0x7800
    rd = flags & 0x0100
    return HEADER.pack(qid, QR | opcode_bits | rd | (rcode & 0xF), 0, 0, 0, 0)


def _rcode(query: dns.message.Message, rcode: int, limit: int) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    response.set_rcode(rcode)
    return _render(response, limit)


def _render(response: dns.message.Message, limit: int) -> bytes:
    # want_shuffle=False: dnspython shuffles an RRset's records by default; ours come in the
    # table's rotating order and an upstream's in its own.
    try:
        return response.to_wire(max_size=limit, want_shuffle=False)
    except dns.exception.TooBig:
        # Too big for the client's UDP size: say so (TC) with the question alone, and the
        # client asks again over TCP.
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=MAX_MESSAGE)


def _sendto(sock: socket.socket, data: bytes, peer: tuple) -> None:
    try:
        sock.sendto(data, peer)
    except OSError:
        pass


def _recv_exactly(conn: socket.socket, count: int, deadline: float,
                  stop: threading.Event) -> Optional[bytes]:
    """`count` bytes from `conn` by `deadline`, or None (closed, late, stopping)."""
    chunks: list[bytes] = []
    missing = count
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stop.is_set():
            return None
        conn.settimeout(min(remaining, 0.5))
        try:
            chunk = conn.recv(missing)
        except socket.timeout:
            continue
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _close(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass

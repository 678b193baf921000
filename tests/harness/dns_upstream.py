"""A fake upstream DNS server on loopback for the DNS tests (unit, e2e, engines): pynet
forwards to it, never to a real resolver."""
from __future__ import annotations

import socket
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from driver.names.server import _bind_pair

UPSTREAM = "127.0.0.1"


class FakeUpstream:
    """A DNS server on loopback (UDP and TCP) answering every A question with 192.0.2.1
    (a documentation address: data only, never contacted). Special names:
    fail.example -> SERVFAIL; large.example -> 60 addresses (TC over UDP without EDNS).
    With `hold` set, UDP answers wait until `release` is set."""

    def __init__(self, host: str = UPSTREAM) -> None:
        self.udp, self.tcp = _bind_pair(host, 0)  # one free port for both
        self.port = self.udp.getsockname()[1]
        self.endpoint = (host, self.port)
        self.seen: list[tuple[str, str, int]] = []  # (proto, name, id)
        self.hold = False
        self.release = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._udp_loop, daemon=True),
                         threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self._threads:
            t.start()

    def answer(self, wire: bytes, proto: str) -> bytes:
        query = dns.message.from_wire(wire)
        name = query.question[0].name.to_text(omit_final_dot=True)
        self.seen.append((proto, name, query.id))
        response = dns.message.make_response(query)
        if name == "fail.example":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif query.question[0].rdtype == dns.rdatatype.A:
            count = 60 if name == "large.example" else 1
            response.answer.append(dns.rrset.from_text_list(
                query.question[0].name, 30, "IN", "A", [f"192.0.2.{i + 1}" for i in range(count)]))
        limit = 65535 if proto == "tcp" else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()

    def _udp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.answer(wire, "udp")
            if self.hold:
                threading.Thread(target=self._later, args=(reply, peer), daemon=True).start()
            else:
                self.udp.sendto(reply, peer)

    def _later(self, reply: bytes, peer) -> None:
        if self.release.wait(10):
            self.udp.sendto(reply, peer)

    def _tcp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    (length,) = struct.unpack("!H", recvn(conn, 2))
                    reply = self.answer(recvn(conn, length), "tcp")
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except (OSError, struct.error):
                    pass

    def close(self) -> None:
        self._stop.set()
        self.release.set()
        self.udp.close()
        self.tcp.close()
        for t in self._threads:
            t.join(2)


def recvn(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data

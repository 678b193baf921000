"""driver/wireguard/uapi.py against a fake UAPI server on a Unix socket in tmp_path: replies,
errno, malformed and hostile replies, timeouts. (The real wireguard-go is in
tests/kernel/test_wireguard_userspace.py.)"""
from __future__ import annotations

import os
import socket
import threading
import time
from ipaddress import ip_address, ip_network

import pytest

from driver.wireguard.api import (BadWireGuardConfig, Endpoint, Peer, PrivateKey, PublicKey,
                                  UapiErrno, UapiProtocolError, WireGuardUnavailable)
from driver.wireguard.uapi import (UapiClient, device_lines, parse_get_reply, peer_set_lines,
                                   remove_peer_lines)

K1 = "11" * 32
K2 = "22" * 32
PRIV = "33" * 32

GET_REPLY = (f"private_key={PRIV}\nlisten_port=51820\n"
             f"public_key={K1}\npreshared_key={'00' * 32}\nprotocol_version=1\n"
             "endpoint=198.19.0.2:51820\nlast_handshake_time_sec=1700000000\n"
             "last_handshake_time_nsec=500000000\ntx_bytes=1234\nrx_bytes=5678\n"
             "persistent_keepalive_interval=25\nallowed_ip=198.18.0.2/32\nallowed_ip=fd00::/64\n"
             f"public_key={K2}\nendpoint=[2001:db8::1]:4000\nlast_handshake_time_sec=0\n"
             "last_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"
             "errno=0\n\n")


class FakeUapi:
    """Serves one scripted behaviour per connection: `reply(request_bytes, conn)`."""

    def __init__(self, path, reply):
        self.path = str(path)
        self.reply = reply
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while not data.endswith(b"\n\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.requests.append(data)
                    self.reply(data, conn)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def serve(tmp_path):
    servers = []

    def make(reply):
        if isinstance(reply, (bytes, str)):
            fixed = reply.encode() if isinstance(reply, str) else reply
            reply = lambda _req, conn: conn.sendall(fixed)  # noqa: E731
        server = FakeUapi(tmp_path / f"wg{len(servers)}.sock", reply)
        servers.append(server)
        return UapiClient(server.path, timeout=0.5), server
    yield make
    for s in servers:
        s.close()


def test_get_parses_the_device_and_its_peers(serve):
    client, server = serve(GET_REPLY)
    device = client.get()
    assert server.requests == [b"get=1\n\n"]
    assert device.private_key == PrivateKey(bytes.fromhex(PRIV))
    assert PRIV not in repr(device)
    assert device.listen_port == 51820 and device.fwmark is None
    one, two = device.peers
    assert one.public_key == PublicKey(bytes.fromhex(K1))
    assert one.endpoint == Endpoint(ip_address("198.19.0.2"), 51820)
    assert one.allowed_ips == (ip_network("198.18.0.2/32"), ip_network("fd00::/64"))
    assert one.last_handshake == pytest.approx(1700000000.5)
    assert (one.rx_bytes, one.tx_bytes, one.keepalive) == (5678, 1234, 25)
    assert two.endpoint == Endpoint(ip_address("2001:db8::1"), 4000)
    assert two.last_handshake is None and two.allowed_ips == ()


def test_an_empty_device_answers_only_errno(serve):
    client, _ = serve("errno=0\n\n")
    device = client.get()
    assert device.peers == () and device.private_key is None and device.listen_port is None


def test_unknown_keys_are_skipped(serve):
    client, _ = serve(f"listen_port=1\nnew_device_thing=7\npublic_key={K1}\nnew_peer_thing=x\nerrno=0\n\n")
    assert client.get().listen_port == 1


def test_set_sends_key_value_lines_and_accepts_errno_0(serve):
    client, server = serve("errno=0\n\n")
    client.set(device_lines(PrivateKey(bytes.fromhex(PRIV)), 51820))
    assert server.requests == [f"set=1\nprivate_key={PRIV}\nlisten_port=51820\n\n".encode()]


@pytest.mark.parametrize("op", ["get", "set"])
def test_a_nonzero_errno_is_raised_with_its_number(serve, op):
    client, _ = serve("errno=-22\n\n")
    with pytest.raises(UapiErrno) as info:
        client.get() if op == "get" else client.set([("listen_port", "1")])
    assert info.value.errno == -22 and f"{op} refused with errno=-22" in info.value.message


@pytest.mark.parametrize("reply, why", [
    ("listen_port=1\n\n", "does not end with errno"),
    ("errno=0\n", "timeout"),                              # never ends
    ("errno=zero\n\n", "does not end with errno"),
    ("errno=-0\n\n", "does not end with errno"),
    ("listen_port\nerrno=0\n\n", "malformed line"),
    ("listen_port=1 \nerrno=0\n\n", "malformed line"),
    ("Listen_port=1\nerrno=0\n\n", "malformed line"),
    ("listen_port=1\r\nerrno=0\n\n", "malformed line"),
    ("listen_port=\u00e9\nerrno=0\n\n", "not ASCII"),
    ("listen_port=70000\nerrno=0\n\n", "not a number"),
    ("listen_port=+1\nerrno=0\n\n", "not a number"),
    ("listen_port=01\nerrno=0\n\n", "not a number"),
    ("listen_port=1\nlisten_port=2\nerrno=0\n\n", "twice"),
    (f"public_key={K1}\nlisten_port=1\nerrno=0\n\n", "device key listen_port after a peer"),
    ("endpoint=1.2.3.4:5\nerrno=0\n\n", "before any public_key"),
    (f"public_key={K1}\npublic_key={K1}\nerrno=0\n\n", "listed twice"),
    (f"public_key={'AB' * 32}\nerrno=0\n\n", "public_key"),
    (f"public_key={'00' * 32}\nerrno=0\n\n", "all zeros"),
    (f"public_key={K1}\nendpoint=1.2.3.4\nerrno=0\n\n", "endpoint"),
    (f"public_key={K1}\nendpoint=[1.2.3.4]:5\nerrno=0\n\n", "endpoint"),
    (f"public_key={K1}\nendpoint=1.2.3.4:70000\nerrno=0\n\n", "endpoint"),
    (f"public_key={K1}\nallowed_ip=10.0.0.1/8\nerrno=0\n\n", "allowed_ip"),
    (f"public_key={K1}\nrx_bytes=1\nrx_bytes=2\nerrno=0\n\n", "twice"),
    (f"public_key={K1}\nrx_bytes=99999999999999999999\nerrno=0\n\n", "not a number"),
    (f"public_key={K1}\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n", "not a number"),
    ("private_key=abc\nerrno=0\n\n", "private_key is not 64 hex"),
    ("errno=0\n\nerrno=0\n\n", "bytes after the end"),
    ("", "closed before the reply ended"),
    ("listen_port=1\n", "closed before the reply ended"),
])
def test_malformed_replies_are_refused_whole(serve, reply, why):
    if why == "timeout":
        def reply_fn(_req, conn, text=reply):
            conn.sendall(text.encode())
            time.sleep(1.5)
        client, _ = serve(reply_fn)
        with pytest.raises(WireGuardUnavailable, match="did not answer get"):
            client.get()
        return
    client, _ = serve(reply)
    with pytest.raises(UapiProtocolError, match=why):
        client.get()


def test_a_private_key_in_a_malformed_reply_is_not_quoted(serve):
    client, _ = serve(f"private_key={PRIV}x\nerrno=0\n\n")
    with pytest.raises(UapiProtocolError) as info:
        client.get()
    assert PRIV not in info.value.message


def test_a_set_reply_with_other_lines_is_refused(serve):
    client, _ = serve("listen_port=1\nerrno=0\n\n")
    with pytest.raises(UapiProtocolError, match="besides errno"):
        client.set([("listen_port", "1")])


def test_a_reply_longer_than_the_limit_is_refused(serve, tmp_path):
    client, _ = serve(("x_pad=" + "a" * 200 + "\n") * 100 + "errno=0\n\n")
    client.max_reply = 4096
    with pytest.raises(UapiProtocolError, match="longer than 4096"):
        client.get()


def test_a_silent_server_times_out(serve):
    client, _ = serve(lambda _req, _conn: time.sleep(2))
    start = time.monotonic()
    with pytest.raises(WireGuardUnavailable, match="within 0.5 s"):
        client.get()
    assert time.monotonic() - start < 1.5


def test_a_server_dripping_bytes_cannot_extend_the_deadline(serve):
    def drip(_req, conn):
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.05)
    client, _ = serve(drip)
    start = time.monotonic()
    with pytest.raises(WireGuardUnavailable, match="did not answer"):
        client.get()
    assert time.monotonic() - start < 1.5


def test_no_socket_and_a_dead_socket_are_unavailable(tmp_path):
    with pytest.raises(WireGuardUnavailable, match="no WireGuard UAPI"):
        UapiClient(tmp_path / "absent.sock").get()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "dead.sock"))
    dead.close()                         # the file stays, nobody listens (wireguard-go after kill -9)
    client = UapiClient(tmp_path / "dead.sock")
    with pytest.raises(WireGuardUnavailable):
        client.get()
    assert client.answers() is False


@pytest.mark.parametrize("line", [("listen_port", "1\nprivate_key=00"), ("listen_port", ""),
                                  ("listen port", "1"), ("listen_port", "a b"), ("X", "1")])
def test_set_refuses_lines_that_could_inject(serve, line):
    client, server = serve("errno=0\n\n")
    with pytest.raises(BadWireGuardConfig):
        client.set([line])
    assert server.requests == []


def test_server_pid_is_the_serving_process(serve):
    client, _ = serve("errno=0\n\n")
    assert client.server_pid() == os.getpid()


def test_one_set_leaves_exactly_the_wanted_peers_without_replace_peers():
    a, b, c = (PublicKey(bytes([n]) * 32) for n in (1, 2, 3))
    keep = Peer(b, Endpoint(ip_address("198.19.0.2"), 51820), (ip_network("198.18.0.2/32"),), 25)
    new = Peer(c, None, (ip_network("198.18.0.3/32"), ip_network("198.18.1.0/24")))
    lines = peer_set_lines([a, b], [keep, new])
    assert lines == [
        *remove_peer_lines(a),
        ("public_key", b.hex), ("endpoint", "198.19.0.2:51820"), ("persistent_keepalive_interval", "25"),
        ("replace_allowed_ips", "true"), ("allowed_ip", "198.18.0.2/32"),
        ("public_key", c.hex), ("persistent_keepalive_interval", "0"), ("replace_allowed_ips", "true"),
        ("allowed_ip", "198.18.0.3/32"), ("allowed_ip", "198.18.1.0/24"),
    ]
    assert ("replace_peers", "true") not in lines
    assert peer_set_lines([], []) == []


def test_parse_get_reply_is_usable_alone():
    assert parse_get_reply("listen_port=9").listen_port == 9

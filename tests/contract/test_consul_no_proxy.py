"""The Consul store talks to its agent directly, never through HTTP(S)_PROXY from the
environment: a proxy would see every request, ACL token included."""
from __future__ import annotations

import socket
import threading

import pytest

from pynet_core.store.consul import ConsulStore


class CountingProxy:
    """A listener on loopback that counts connections (and answers none of them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.mark.consul
def test_consul_store_ignores_proxy_settings(consul_agent, consul_prefix, monkeypatch):
    proxy = CountingProxy()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        store = ConsulStore(consul_agent.addr, token="secret-token", prefix=consul_prefix)
        try:
            assert store.create("k", "v")
            assert store.get("k").value == "v"
        finally:
            store.close()
        assert proxy.connections == 0
    finally:
        proxy.close()

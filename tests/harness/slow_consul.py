"""SlowConsul: an HTTP proxy in front of a real Consul agent that holds requests back past
pynet's budget, then lets them land -- a write that arrives after pynet gave up on it.

pynet gives every Consul request 3 s (ConsulStore's timeout) and a plugin call 4 s in all
(pynet_core/deadline.py). A Consul agent cut off from its leader, or a slow one, can keep a
write that long and then apply it anyway. SlowConsul makes that happen on demand:

    with ConsulAgent() as agent, SlowConsul(agent.addr) as proxy:
        store = ConsulStore(proxy.addr, prefix=...)      # pynet talks to the proxy
        proxy.hold()                                      # from now on writes get no answer
        with pytest.raises(BackendUnavailable):
            ...                                           # pynet times out and answers 503
        proxy.pass_through()                              # new requests flow again
        assert proxy.release() == 1                       # the held write lands now
        ...                                               # let pynet settle, then check

- hold(match): requests for which match(method, path) is true (default: every write,
  i.e. PUT and DELETE; reads still answer) are kept, unanswered, in arrival order.
- release(): forwards every held request to Consul now, in order, and returns how many;
  their answers go nowhere (the client has given up). drop() forgets them instead: the
  write never lands.
- held(): (method, path) of what is held; forwarded(): of everything forwarded so far.

Threaded, on 127.0.0.1 and a free port; stop() (or leaving the `with`) drops what is still
held and closes the listener. Only for tests: it trusts its single upstream and buffers
whole bodies.
"""
from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

Match = Callable[[str, str], bool]
UPSTREAM_TIMEOUT = 330.0  # blocking queries (the store's watch) may wait minutes


def writes(method: str, path: str) -> bool:
    """The default hold: every request that changes Consul's KV (PUT/DELETE, /v1/txn too)."""
    return method in ("PUT", "DELETE")


@dataclass
class _Held:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    done: threading.Event = field(default_factory=threading.Event)


class SlowConsul:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self._lock = threading.Lock()
        self._match: Match | None = None
        self._held: list[_Held] = []
        self._forwarded: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def addr(self) -> str:
        """host:port for ConsulStore."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> "SlowConsul":
        self._thread = threading.Thread(target=self._server.serve_forever, name="slow-consul",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.drop()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "SlowConsul":
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- control -------------------------------------------------------------------------
    def hold(self, match: Match = writes) -> None:
        """Hold back, unanswered, every request match(method, path) accepts from now on."""
        with self._lock:
            self._match = match

    def pass_through(self) -> None:
        """Forward new requests at once again (what is held stays held)."""
        with self._lock:
            self._match = None

    def held(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(h.method, h.path) for h in self._held]

    def forwarded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._forwarded)

    def release(self, count: int | None = None) -> int:
        """Let the first `count` held requests (all by default) land now, in arrival order;
        returns how many. The rest stay held (drop() forgets them)."""
        with self._lock:
            cut = len(self._held) if count is None else count
            held, self._held = self._held[:cut], self._held[cut:]
        for request in held:
            try:
                self._forward(request.method, request.path, request.headers, request.body)
            finally:
                request.done.set()
        return len(held)

    def drop(self) -> int:
        """Forget every held request: those writes never land. Returns how many."""
        with self._lock:
            held, self._held = self._held, []
        for request in held:
            request.done.set()
        return len(held)

    # --- the proxy -------------------------------------------------------------------------
    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            answer = (resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()
        with self._lock:
            self._forwarded.append((method, path))
        return answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "keep-alive")}
                with proxy._lock:
                    match = proxy._match
                    held = _Held(self.command, self.path, headers, body) \
                        if match is not None and match(self.command, self.path) else None
                    if held is not None:
                        proxy._held.append(held)
                if held is not None:
                    held.done.wait()  # the client gave up long ago: no answer, close
                    self.close_connection = True
                    return
                try:
                    status, resp_headers, data = proxy._forward(self.command, self.path, headers, body)
                except OSError as exc:
                    self.send_error(502, f"slow-consul: upstream failed: {exc}")
                    return
                self.send_response(status)
                for k, v in resp_headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_POST = _serve

        return Handler

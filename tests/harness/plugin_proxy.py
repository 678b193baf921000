"""An interposing proxy on the plugin socket dockerd uses, to crash the plugin at chosen
moments without hooks in production code.

dockerd connects to FRONT (/run/docker/plugins/pynet.sock); the real plugin listens on BACK.
Each HTTP request dockerd sends is forwarded on a fresh upstream connection, and a Policy
decides, per request, whether the plugin dies
- *inside* the call: right after the request was forwarded (after a short delay the policy
  picks), before its answer reaches dockerd, which then sees the connection drop; or
- *after* the call: once its answer was relayed, before dockerd's next request (for instance
  between RequestAddress and CreateEndpoint).

While the plugin is dead the proxy's listening socket is closed and its file left in place,
so dockerd sees exactly what a crashed plugin gives it: connection refused, and its own retry
for up to ~30 s. The plugin is then restarted (by the Crasher) and the proxy listens again.
"""
from __future__ import annotations

import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Call:
    method: str  # "NetworkDriver.CreateNetwork"
    body: dict | None  # the request's JSON, if it was JSON
    status: int | None = None  # the answer's, once there is one
    answer: dict | None = None


class Policy(Protocol):
    def inside(self, call: Call) -> float | None:
        """Seconds to wait after forwarding CALL before killing the plugin; None: no kill."""

    def after(self, call: Call) -> str | None:
        """A window name to kill the plugin in once CALL's answer is relayed; None: no kill."""

    def killed(self, window: str) -> None:
        """Told about every kill the proxy made."""


class PassThrough:
    def inside(self, call: Call) -> float | None:
        return None

    def after(self, call: Call) -> str | None:
        return None

    def killed(self, window: str) -> None:
        pass


class KillProxy:
    def __init__(self, front: Path, back: Path, crash: Callable[[], None],
                 restart: Callable[[], None]) -> None:
        """CRASH kills the plugin (-9) and returns once it is gone; RESTART starts it again
        and returns once it answers. Both are called with the listener closed."""
        self.front, self.back = Path(front), Path(back)
        self._crash, self._restart = crash, restart
        self.policy: Policy = PassThrough()
        self._lock = threading.Lock()  # one crash at a time; guards _listener
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Restarts run on one long-lived thread: the harness starts the plugin with a
        # parent-death signal, which Linux sends when the *thread* that forked it ends.
        self._downtimes: queue.Queue[float | None] = queue.Queue()
        self._restarter: threading.Thread | None = None
        self._down = threading.Event()
        self.calls = 0
        self.errors: list[str] = []  # a restart that failed: the plugin did not come back

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> KillProxy:
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="kill-proxy", daemon=True)
        self._thread.start()
        self._restarter = threading.Thread(target=self._restart_loop, name="kill-proxy-restart", daemon=True)
        self._restarter.start()
        return self

    def stop(self) -> None:
        self.wait_up()
        self._stop.set()
        self._downtimes.put(None)
        with self._lock:
            self._close_listener()
        for t in (self._thread, self._restarter):
            if t:
                t.join(5)
        self.front.unlink(missing_ok=True)

    def _listen(self) -> None:
        self.front.unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(self.front))
        self.front.chmod(0o600)
        s.listen(128)
        s.settimeout(0.2)
        self._listener = s

    def _close_listener(self) -> None:
        if self._listener is not None:
            # shutdown first: it wakes the accept() in flight at once, so no connection is
            # accepted after the crash (close alone waits for that accept to return).
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()  # the file stays: dockerd's connects are refused
            self._listener = None

    def up(self) -> bool:
        return self._listener is not None

    def wait_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self._down.is_set():
            if time.monotonic() >= deadline or self.errors:
                raise TimeoutError(f"the plugin did not come back: {self.errors}")
            time.sleep(0.05)

    # ---- the crash --------------------------------------------------------------------
    def kill(self, window: str, downtime: float = 0.0) -> bool:
        """Kill the plugin now and restart it after DOWNTIME seconds, in the background.
        False if a crash or a restart is already under way."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._listener is None or self._stop.is_set():
                return False
            self._down.set()
            self._close_listener()
            self._crash()
            self.policy.killed(window)
            self._downtimes.put(downtime)
            return True
        finally:
            self._lock.release()

    def _restart_loop(self) -> None:
        while (downtime := self._downtimes.get()) is not None:
            time.sleep(downtime)
            with self._lock:
                try:
                    self._restart()
                except Exception as exc:  # noqa: BLE001 - reported by the test, loudly
                    self.errors.append(f"plugin did not come back: {exc}")
                    continue
                if not self._stop.is_set():
                    self._listen()
                self._down.clear()

    # ---- forwarding -------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            lst = self._listener
            if lst is None:
                time.sleep(0.05)
                continue
            try:
                conn, _ = lst.accept()
            except (socket.timeout, OSError):
                continue  # a timeout, or the listener was closed by a crash
            conn.settimeout(None)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while True:
                request = _read_message(reader, request=True)
                if request is None:
                    return
                if not self._forward(conn, *request):
                    return
        except (OSError, ValueError):
            return  # the client or the plugin went away: what a crash does
        except Exception as exc:  # noqa: BLE001 - a bug of the policy: fail the test loudly
            self.errors.append(f"proxy failed: {exc!r}")
        finally:
            reader.close()
            conn.close()

    def _forward(self, conn: socket.socket, start: bytes, headers: list[tuple[str, str]],
                 body: bytes) -> bool:
        """One request upstream and its answer back. False: the client connection is done."""
        self.calls += 1
        path = start.split(b" ")[1].decode(errors="replace")
        call = Call(path.lstrip("/"), _json(body))
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(str(self.back))
        except OSError:
            up.close()
            return False  # the plugin is down: dockerd sees the connection drop
        with up:
            up.settimeout(120)
            # One request per upstream connection: the plugin closes it after answering.
            hdrs = [(k, v) for k, v in headers if k.lower() not in ("connection", "keep-alive")]
            hdrs.append(("Connection", "close"))
            up.sendall(start + b"\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs)
                       + b"\r\n" + body)
            delay = self.policy.inside(call)
            if delay is not None:
                time.sleep(delay)
                if self.kill(f"inside {call.method}", self._downtime()):
                    return False  # the answer (if any came) never reaches dockerd
            with up.makefile("rb") as upr:
                answer = _read_message(upr, request=False)
        if answer is None:
            return False
        status_line, rheaders, rbody = answer
        rheaders = [(k, v) for k, v in rheaders if k.lower() not in ("connection", "transfer-encoding",
                                                                       "content-length")]
        rheaders += [("Content-Length", str(len(rbody))), ("Connection", "close")]
        conn.sendall(status_line + b"\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in rheaders)
                     + b"\r\n" + rbody)
        try:
            status = int(status_line.split(b" ")[1])
        except (IndexError, ValueError):
            status = None
        window = self.policy.after(Call(call.method, call.body, status, _json(rbody)))
        if window is not None:
            self.kill(window, self._downtime())
        return False  # Connection: close was sent

    def _downtime(self) -> float:
        pick = getattr(self.policy, "downtime", None)
        return pick() if callable(pick) else 0.0


def _json(body: bytes) -> dict | None:
    try:
        data = json.loads(body) if body.strip() else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _read_message(reader, *, request: bool) -> tuple[bytes, list[tuple[str, str]], bytes] | None:
    """One HTTP/1.1 message: (start line, headers, decoded body); None at a clean EOF."""
    start = reader.readline(HEAD_LIMIT)
    if not start:
        return None
    start = start.rstrip(b"\r\n")
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline(HEAD_LIMIT)
        if not line:
            raise ValueError("connection closed inside the headers")
        if line in (b"\r\n", b"\n"):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
    fields = {k.lower(): v for k, v in headers}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int(reader.readline(HEAD_LIMIT).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while reader.readline(HEAD_LIMIT) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += reader.read(size)
            reader.readline(HEAD_LIMIT)
    elif "content-length" in fields:
        body = reader.read(int(fields["content-length"]))
    else:
        body = b"" if request else reader.read()
    return start, headers, body

"""Run the pynet plugin as a real subprocess on its real socket, and talk to it like dockerd.

`python -m pynet.cli serve --socket SOCK --state-dir DIR` (the `pynet` console script is the
same entry point). The socket lives in /run/docker/plugins, which every dockerd on the machine
shares, so start() refuses to run over a live socket that is not ours.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pynet_core.store.api import Entry
from pynet_core.store.local import LocalStore
from tests.harness.dockerd import RUN_DIR, die_with_parent, pgid_members, signal_if, socket_answers, tail, wait_gone

DEFAULT_SOCKET = Path("/run/docker/plugins/pynet.sock")
REPO_ROOT = Path(__file__).resolve().parents[2]
# What dockerd sends (pkg/plugins/client.go): this Accept, no Content-Type, this Host.
PLUGIN_HEADERS = {"Accept": "application/vnd.docker.plugins.v1.2+json"}
PLUGIN_HOST = "plugin.moby.localhost"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        super().__init__(PLUGIN_HOST, timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def call_socket(path: str | Path, method_path: str, body: Any = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """POST like dockerd does. BODY: None -> empty body (Plugin.Activate, GetCapabilities),
    bytes/str -> sent as is, anything else -> JSON with Go's trailing newline."""
    if not method_path.startswith("/"):
        method_path = "/" + method_path
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = (json.dumps(body) + "\n").encode()
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("POST", method_path, body=data, headers=PLUGIN_HEADERS)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class PluginProcess:
    def __init__(self, state_dir: Path, *, socket_path: Path = DEFAULT_SOCKET, log_path: Path | None = None,
                 python: str = sys.executable, extra_args: tuple[str, ...] = (),
                 extra_env: dict[str, str] | None = None, startup_timeout: float = 15.0,
                 command_prefix: tuple[str, ...] = ()) -> None:
        self.state_dir = Path(state_dir)
        self.socket_path = Path(socket_path)
        self.log_path = Path(log_path) if log_path else self.state_dir.parent / f"{self.state_dir.name}-plugin.log"
        self.python = python
        self.extra_args = extra_args
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        # Run the plugin under a command that then execs it, e.g. ("ip", "netns", "exec", NS)
        # for a plugin whose links, nft table and iptables rules live in a private namespace.
        # The prefix must exec (not fork) the plugin, so pid stays the plugin's own.
        self.command_prefix = tuple(command_prefix)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> PluginProcess:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, *, remove_stale_socket: bool = True) -> PluginProcess:
        """Start and wait until POST /Plugin.Activate answers 200. REMOVE_STALE_SOCKET=False
        leaves a dead socket file in place (to test the plugin's own handling of it)."""
        if self.running():
            return self
        self._reap()
        if socket_answers(self.socket_path):
            raise RuntimeError(
                f"another process already serves {self.socket_path} (a pynet plugin installed on this "
                "host, or another test session). /run/docker/plugins is shared by every dockerd; stop "
                "that plugin before running the e2e tests.")
        if remove_stale_socket:
            self.socket_path.unlink(missing_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [*self.command_prefix, self.python, "-m", "pynet.cli", "serve", "--socket", str(self.socket_path),
               "--state-dir", str(self.state_dir), *self.extra_args]
        # The leak check asks dockerd which addresses are in use: the harness's private dockerd,
        # never a system one that knows nothing of the test's containers.
        env = {**os.environ, "PYNET_DOCKER_HOST": f"unix://{RUN_DIR / 'docker.sock'}", **self.extra_env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== pynet test start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent)
        try:
            self._wait_ready()
        except BaseException:
            text = self.log_tail()
            self.kill9()
            raise RuntimeError(f"pynet plugin did not become ready on {self.socket_path} within "
                               f"{self.startup_timeout}s\n--- plugin log tail ---\n{text}") from None
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"plugin exited with code {self._proc.returncode}")
            try:
                if self.call("/Plugin.Activate", timeout=2)[0] == 200:
                    return
            except OSError:
                pass  # socket not there yet, or refused
            time.sleep(0.1)
        raise TimeoutError

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the plugin removes its socket), wait; SIGKILL the group if it hangs."""
        if self._proc is None:
            return
        pid = self._proc.pid
        if self._proc.poll() is None and signal_if(pid, signal.SIGTERM, "pynet.cli"):
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._reap()
        self._kill_group_leftovers(pid)

    def kill9(self) -> None:
        """SIGKILL the whole process group (master and workers): a crash. The socket file stays."""
        if self._proc is None:
            return
        pid = self._proc.pid
        if self._proc.poll() is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()
        self._kill_group_leftovers(pid)
        self._wait_socket_released(pid)

    def restart(self) -> PluginProcess:
        self.stop()
        return self.start()

    def _kill_group_leftovers(self, pgid: int) -> None:
        # gunicorn workers orphaned by a dead master keep our (setsid) process group.
        members = pgid_members(pgid)
        for m in members:
            signal_if(m, signal.SIGKILL, "")
        wait_gone(members, 5.0)

    def _wait_socket_released(self, pid: int, timeout: float = 10.0) -> None:
        # A killed multi-threaded process shows as a zombie once its main thread is gone, while
        # other threads (one stuck in fsync, say) still hold the listening socket for a moment.
        # Wait for the kernel to drop it, so start() does not mistake it for another plugin.
        deadline = time.monotonic() + timeout
        while socket_answers(self.socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.socket_path} still accepts connections {timeout}s after pynet "
                                   f"(pid {pid}) was killed")
            time.sleep(0.05)

    def _reap(self) -> None:
        # Keep the Popen object so pid/returncode stay inspectable until the next start.
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stored(self, prefix: str) -> list[Entry]:
        """What the plugin's embedded store holds under PREFIX, read beside the running
        plugin (sqlite in WAL mode lets a second process read)."""
        store = LocalStore(str(self.state_dir / "pynet.db"))
        try:
            return store.list(prefix)
        finally:
            store.close()

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    # ---- talking to it --------------------------------------------------------------------

    def call(self, method_path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """POST to the plugin like dockerd. Returns (status, parsed JSON); the second item is
        None for an empty body and the raw text if the body is not JSON."""
        status, _, raw = call_socket(self.socket_path, method_path, body, timeout)
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def call_raw(self, method_path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        return call_socket(self.socket_path, method_path, body, timeout)

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

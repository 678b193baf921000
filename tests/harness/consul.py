"""A throwaway Consul agent for tests: loopback only, free ports, its own temp dir.

Started with setsid and stopped by PID (after checking /proc/PID/cmdline), never by name,
so it cannot touch another Consul on the machine. Consul missing is an error, not a skip.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

_PORT_FLAGS = ("-http-port", "-dns-port", "-serf-lan-port", "-serf-wan-port", "-server-port", "-grpc-port")
_PR_SET_PDEATHSIG = 1


class ConsulAgent:
    """One local agent. leader=True: a -dev server that elects itself at once.
    leader=False: a server waiting for a second server that never comes, i.e. a
    cluster without a leader (reads and writes hang, then fail with 500).
    acl_token: ACLs on, default deny, this token is the master token.
    netns: run the agent inside that network namespace (`ip netns exec`, which execs: the PID
    stays the agent's), serving its HTTP API on `client` (the first address is the one `addr`
    names: give one the test process reaches) and on that namespace's loopback."""

    def __init__(
        self, *, leader: bool = True, acl_token: str | None = None, startup_timeout: float = 30.0,
        extra_args: tuple[str, ...] = (), netns: str | None = None, client: str = "127.0.0.1",
    ) -> None:
        self.netns = netns
        self.client = client
        self.leader = leader
        self.acl_token = acl_token
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args  # more agent flags, e.g. ("-hcl", "ports { https = 8501 }")
        self.addr = ""
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ConsulAgent:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> ConsulAgent:
        binary = shutil.which("consul")
        if binary is None:
            raise RuntimeError(
                "consul is not installed (no `consul` on PATH); install it with "
                "scripts/install-test-deps.sh (Debian bullseye's consul 1.8.7)"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="pynet-consul-"))
        # Free ports are picked by binding to port 0, so another process may grab one
        # before consul does; the agent then exits at once and we retry with new ports.
        for attempt in range(3):
            ports = _free_ports(len(_PORT_FLAGS))
            self.addr = f"{self.client}:{ports[0]}"
            self._spawn(binary, ports)
            try:
                self._wait_ready()
                return self
            except _ExitedEarly:
                self._reap()
                if attempt == 2:
                    log = self.log_tail()
                    self.stop()
                    raise RuntimeError(f"consul agent exited during start-up:\n{log}") from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _spawn(self, binary: str, ports: list[int]) -> None:
        assert self.dir is not None
        data = self.dir / "data"
        clients = " ".join(dict.fromkeys([self.client, "127.0.0.1"]))
        cmd = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd += [binary, "agent", "-client", clients, "-bind", "127.0.0.1",
               "-data-dir", str(data), "-pid-file", str(self.dir / "consul.pid"),
               "-log-level", "info", "-hcl", "disable_update_check = true"]
        cmd += ["-dev"] if self.leader else ["-server", "-bootstrap-expect", "2"]
        if self.acl_token:
            cmd += ["-hcl", 'acl { enabled = true, default_policy = "deny", '
                    f'tokens {{ master = "{self.acl_token}" }} }}']
        for flag, port in zip(_PORT_FLAGS, ports, strict=True):
            cmd += [flag, str(port)]
        cmd += list(self.extra_args)
        with open(self.dir / "consul.log", "ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )

    def _wait_ready(self) -> None:
        """Poll /v1/status/leader until there is a leader (or, for leader=False, until
        the HTTP API answers at all)."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise _ExitedEarly()
            try:
                with urllib.request.urlopen(f"http://{self.addr}/v1/status/leader", timeout=1) as r:
                    leader = json.loads(r.read())
                if leader or not self.leader:
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"consul agent at {self.addr} had no leader after {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM then SIGKILL, by PID, only if that PID is still our consul."""
        if self._proc is not None and self._proc.poll() is None and self._is_ours(self._proc.pid):
            os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
        self._reap()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(cmdline) and cmdline[0].endswith(b"consul") and str(self.dir).encode() in b" ".join(cmdline)

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            self._proc = None

    def log_tail(self, lines: int = 30) -> str:
        if self.dir is None or not (self.dir / "consul.log").exists():
            return "(no log)"
        return "\n".join((self.dir / "consul.log").read_text(errors="replace").splitlines()[-lines:])


class _ExitedEarly(Exception):
    pass


def _free_ports(n: int) -> list[int]:
    # Hold all sockets until every port is chosen so the n ports are distinct.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    # If the test process is killed outright (no fixture teardown), the agent goes too.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

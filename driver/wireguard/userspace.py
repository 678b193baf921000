"""WireGuard in userspace: wireguard-go over TUN, started, supervised, re-adopted and stopped.

* Start: `wireguard-go -f NAME` (foreground, so pynet holds its PID and sees it die), in a new
  session (no signal meant for the plugin's process group reaches it: it outlives a plugin
  kill -9), stdin/stdout/stderr on /dev/null or a log file, never a pipe (Go dies of SIGPIPE
  writing to fd 1/2 once the reader, a dead plugin, is gone). In a named network namespace,
  the process is forked from a short-lived thread that entered the namespace with setns(2):
  its TUN device and UDP socket live there. No shell, no `ip netns exec`.
* Ready: its UAPI socket (/var/run/wireguard/NAME.sock) answers and SO_PEERCRED names the
  PID just started.
* Configure: private key and listen port through the UAPI (uapi.py); MTU, the address and up
  through rtnetlink (pyroute2_wg.LinkOps).
* Supervise: one thread per link waits on a pidfd (os.pidfd_open: no PID-reuse race, works for
  a process pynet did not fork). When wireguard-go dies it is started again and given the
  same key, port, MTU, address and peers (backoff 0.2 s doubling to 5 s while starts fail).
* Re-adopt: after a plugin restart, ensure() finds the socket answering; the serving PID
  (SO_PEERCRED) must be a wireguard-go for NAME in the expected network namespace, else
  Conflict. Nothing is restarted: established sessions keep going.
* Remove: SIGTERM through the pidfd (SIGKILL after 3 s), then the link and a stale socket if
  either is left. close() only stops watching (links and processes outlive the plugin).
"""
from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path

from pynet_core.errors import Conflict, PynetError

from .api import (LinkNotFound, LinkStatus, Peer, PrivateKey, WireGuardUnavailable, check_ensure,
                  check_link_name, check_peers)
from .uapi import RUN_DIR, UapiClient, device_lines, peer_set_lines, socket_path

log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")


def _setns_net(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def spawn_in_netns(netns: str | None, argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen(argv) with the child in network namespace `netns` (a name under /var/run/netns),
    or in this process's own when None. The fork happens in a fresh thread that entered the
    namespace: namespaces are per thread, a child inherits its forking thread's."""
    if netns is None:
        return subprocess.Popen(argv, **popen_kwargs)
    result: dict[str, object] = {}

    def run() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns_net(fd)
            finally:
                os.close(fd)
            result["proc"] = subprocess.Popen(argv, **popen_kwargs)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"spawn-in-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise WireGuardUnavailable(f"cannot start {argv[0]} in network namespace {netns}: "
                                   f"{result['error']}")
    return result["proc"]  # type: ignore[return-value]


def _netns_inode(netns: str | None) -> int:
    return os.stat(NETNS_DIR / netns if netns else "/proc/self/ns/net").st_ino


@dataclass
class _Link:
    name: str
    private_key: PrivateKey
    listen_port: int
    mtu: int
    address: IPv4Interface | IPv6Interface | None
    peers: tuple[Peer, ...] | None = None
    pid: int | None = None
    pidfd: int | None = None
    popen: subprocess.Popen | None = None
    restarts: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class UserspaceWireGuard:
    implementation = "userspace"

    def __init__(self, *, netns: str | None = None, binary: str = "wireguard-go",
                 run_dir: Path = RUN_DIR, links=None, log_dir: Path | None = None,
                 uapi_timeout: float = 2.0, start_timeout: float = 5.0, supervise: bool = True,
                 backoff: tuple[float, float] = (0.2, 5.0)) -> None:
        if links is None:
            from .pyroute2_wg import LinkOps
            links = LinkOps(netns)
        self.netns = netns
        self.binary = binary
        self.run_dir = Path(run_dir)
        self.links = links
        self.log_dir = log_dir
        self.uapi_timeout = uapi_timeout
        self.start_timeout = start_timeout
        self.supervise = supervise
        self.backoff = backoff
        self._managed: dict[str, _Link] = {}
        self._lock = threading.Lock()

    # -- the port -------------------------------------------------------------------------
    def ensure(self, name: str, private_key: PrivateKey, listen_port: int, mtu: int,
               address: IPv4Interface | IPv6Interface | None = None) -> bool:
        check_ensure(name, private_key, listen_port, mtu, address)
        with self._lock:
            link = self._managed.get(name)
            if link is None:
                link = self._managed[name] = _Link(name, private_key, listen_port, mtu, address)
        created = False
        with link.lock:
            link.private_key, link.listen_port, link.mtu, link.address = private_key, listen_port, mtu, address
            if not self._alive(link):
                pid = self._adoptable(name)
                if pid is None:
                    self._start(link)
                    created = True
                else:
                    self._watch_pid(link, pid, None)
                    log.info("wireguard-go for %s (pid %d) re-adopted", name, pid)
            self._configure(link, with_peers=False)
        if self.supervise and (link.thread is None or not link.thread.is_alive()):
            link.stop.clear()
            link.thread = threading.Thread(target=self._supervise, args=(link,), daemon=True,
                                           name=f"wireguard-go-{name}")
            link.thread.start()
        return created

    def set_peers(self, name: str, peers) -> None:
        wanted = check_peers(peers)
        link = self._managed.get(name)
        if link is None:
            raise LinkNotFound(f"WireGuard link {name} is not managed here: ensure() it first")
        with link.lock:
            link.peers = wanted       # the supervisor gives these to a restarted wireguard-go
            self._apply_peers(link)

    def status(self, name: str) -> LinkStatus | None:
        check_link_name(name)
        try:
            device = self._uapi(name).get()
        except WireGuardUnavailable:
            return None
        link = self._managed.get(name)
        return LinkStatus(name, self.implementation, device.listen_port, device.peers,
                          pid=link.pid if link else None, restarts=link.restarts if link else 0)

    def remove(self, name: str) -> bool:
        check_link_name(name)
        with self._lock:
            link = self._managed.pop(name, None)
        removed = False
        if link is not None:
            self._unwatch(link)
            with link.lock:
                if self._alive(link):
                    self._terminate(link.pidfd, link.popen)
                    removed = True
                self._release(link)
        pid = self._adoptable(name)
        if pid is not None:               # one this object did not start (a previous plugin's)
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pidfd = None
            if pidfd is not None:
                try:
                    self._terminate(pidfd, None)
                finally:
                    os.close(pidfd)
                removed = True
        if self.links.exists(name):
            self.links.delete(name)
            removed = True
        sock = socket_path(name, self.run_dir)
        if os.path.lexists(sock) and not self._uapi(name).answers():
            try:
                sock.unlink()
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def close(self) -> None:
        with self._lock:
            links = list(self._managed.values())
            self._managed.clear()
        for link in links:
            self._unwatch(link)
            with link.lock:
                self._release(link)

    # -- process --------------------------------------------------------------------------
    def _uapi(self, name: str) -> UapiClient:
        return UapiClient(socket_path(name, self.run_dir), timeout=self.uapi_timeout)

    def _alive(self, link: _Link) -> bool:
        if link.pidfd is None:
            return False
        return not select.select([link.pidfd], [], [], 0)[0]

    def _adoptable(self, name: str) -> int | None:
        """The PID of a wireguard-go serving NAME's socket in this adapter's namespace, or None
        when nothing answers. Conflict when something else answers there."""
        client = self._uapi(name)
        if not os.path.exists(client.path) or not client.answers():
            return None
        try:
            pid = client.server_pid()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            same_ns = os.stat(f"/proc/{pid}/ns/net").st_ino == _netns_inode(self.netns)
        except (OSError, WireGuardUnavailable):
            return None               # it went away meanwhile
        if comm != Path(self.binary).name[:15] or name.encode() not in argv:
            raise Conflict(f"the WireGuard UAPI socket {client.path} is served by pid {pid} "
                           f"({comm}), not by {self.binary} for {name}")
        if not same_ns:
            raise Conflict(f"{self.binary} for {name} (pid {pid}) runs in another network namespace "
                           f"than {self.netns or 'the host'}'s")
        return pid

    def _watch_pid(self, link: _Link, pid: int, popen: subprocess.Popen | None) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise WireGuardUnavailable(f"{self.binary} for {link.name} (pid {pid}) is gone") from None
        self._release(link)
        link.pid, link.pidfd, link.popen = pid, pidfd, popen

    def _release(self, link: _Link) -> None:
        if link.pidfd is not None:
            os.close(link.pidfd)
        if link.popen is not None and link.popen.poll() is None:
            pass                      # left running on purpose (close()); Popen reaps it later
        link.pid = link.pidfd = link.popen = None

    def _start(self, link: _Link) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        out = None
        try:
            if self.log_dir is not None:
                Path(self.log_dir).mkdir(parents=True, exist_ok=True)
                out = open(Path(self.log_dir) / f"wireguard-go-{link.name}.log", "ab")
            stream = out if out is not None else subprocess.DEVNULL
            popen = spawn_in_netns(self.netns, [self.binary, "-f", link.name], stdin=subprocess.DEVNULL,
                                   stdout=stream, stderr=stream, start_new_session=True,
                                   close_fds=True, env=env)
        except FileNotFoundError:
            raise WireGuardUnavailable(f"'{self.binary}' is not installed (Debian: apt-get install "
                                       f"wireguard-go)") from None
        finally:
            if out is not None:
                out.close()
        self._watch_pid(link, popen.pid, popen)
        client = self._uapi(link.name)
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = popen.poll()
            if code is not None:
                self._release(link)
                raise WireGuardUnavailable(f"{self.binary} for {link.name} exited with {code} at start"
                                           + (f" (see {self.log_dir})" if self.log_dir else ""))
            if os.path.exists(client.path) and client.answers():
                try:
                    if client.server_pid() == popen.pid:
                        return
                except WireGuardUnavailable:
                    pass
            if time.monotonic() > deadline:
                self._terminate(link.pidfd, link.popen)
                self._release(link)
                raise WireGuardUnavailable(f"{self.binary} for {link.name} did not serve its UAPI "
                                           f"socket within {self.start_timeout:g} s")
            time.sleep(0.02)

    @staticmethod
    def _terminate(pidfd: int | None, popen: subprocess.Popen | None, grace: float = 3.0) -> None:
        """SIGTERM (wireguard-go then removes its TUN and socket), SIGKILL after `grace`.
        Signals go through the pidfd: never to a PID reused by another process."""
        if pidfd is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                break
            if select.select([pidfd], [], [], grace)[0]:
                break
        if popen is not None:
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass

    def _configure(self, link: _Link, with_peers: bool) -> None:
        client = self._uapi(link.name)
        device = client.get()
        lines = device_lines(private_key=None if device.private_key == link.private_key else link.private_key,
                             listen_port=None if device.listen_port == link.listen_port else link.listen_port)
        if lines:
            client.set(lines)
        self.links.configure(link.name, link.mtu, link.address)
        if with_peers and link.peers is not None:
            self._apply_peers(link)

    def _apply_peers(self, link: _Link) -> None:
        client = self._uapi(link.name)
        current = [p.public_key for p in client.get().peers]
        lines = peer_set_lines(current, link.peers or ())
        if lines:
            client.set(lines)

    # -- supervision ----------------------------------------------------------------------
    def _unwatch(self, link: _Link) -> None:
        link.stop.set()
        thread = link.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _supervise(self, link: _Link) -> None:
        delay = self.backoff[0]
        while not link.stop.is_set():
            pidfd = link.pidfd
            if pidfd is not None:
                if not select.select([pidfd], [], [], 0.25)[0]:
                    continue
            with link.lock:
                if link.stop.is_set():
                    return
                if link.pidfd is not None and self._alive(link):
                    continue          # ensure() replaced it meanwhile
                old = link.pid
                code = None
                if link.popen is not None:
                    try:
                        code = link.popen.wait(timeout=1)
                    except subprocess.TimeoutExpired:
                        pass
                self._release(link)
                log.warning("wireguard-go for %s (pid %s) exited (%s); starting it again",
                            link.name, old, code)
                try:
                    self._start(link)
                    self._configure(link, with_peers=True)
                    link.restarts += 1
                    delay = self.backoff[0]
                    continue
                except PynetError as exc:
                    log.error("restarting wireguard-go for %s failed: %s", link.name, exc.message)
                    if self._alive(link):     # started but not configured: start over
                        self._terminate(link.pidfd, link.popen)
                    self._release(link)
            link.stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])

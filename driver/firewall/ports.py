"""Host ports of published ports: chosen and held with a socket, as Docker's port mapper does.

A DNAT rule alone would silently steal a port that a host service (or docker-proxy, for a
port Docker publishes itself) listens on, and let them bind it later without noticing. So
for each published port pynet binds the host address and port (TCP: bound and listening
with backlog 0; UDP: bound), and keeps the socket for as long as the port is published:

* a port already in use fails ProgramExternalConnectivity with a clear conflict, before
  any rule is written;
* host port 0 and ranges are resolved by the kernel's bind: port 0 takes a free ephemeral
  port, a range takes its first free port;
* nobody else can take the port while it is published. The DNAT happens before any socket
  lookup, so the held socket never receives traffic.

IPv6 host addresses get IPv6 sockets with IPV6_V6ONLY, so :: is every IPv6 address and
0.0.0.0 every IPv4 one: Docker 27+ holds both for `-p 8080:80`, and a program bound to
either family's wildcard is a conflict for that family only.

Sockets belong to the plugin process: after a restart, sync() binds the recorded ports again.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Callable

from pynet_core.errors import BadRequest, Conflict, Exhausted

Key = tuple[str, str, int]  # proto, host_ip, host_port
SocketFactory = Callable[[int, int], socket.socket]  # (address family, socket type)


def _new_socket(family: int, kind: int) -> socket.socket:
    return socket.socket(family, kind)


class HostPorts:
    def __init__(self, socket_factory: SocketFactory = _new_socket) -> None:
        self._new = socket_factory
        self._held: dict[Key, socket.socket] = {}

    def held(self) -> set[Key]:
        return set(self._held)

    def reserve(self, proto: str, host_ip: str, start: int, end: int) -> int:
        """Bind a port for `proto` on `host_ip`: any free one (start 0), the one given, or
        the first free one of start..end. Returns it; raises Conflict if none is free."""
        if start == 0:
            return self._bind(proto, host_ip, 0)
        last_error: Conflict | None = None
        for port in range(start, end + 1):
            try:
                return self._bind(proto, host_ip, port)
            except Conflict as exc:
                last_error = exc
        if start == end and last_error is not None:
            raise last_error
        raise Conflict(f"cannot publish on {host_ip}: every host port in {start}-{end}/{proto} "
                       "is already in use")

    def hold(self, proto: str, host_ip: str, port: int) -> None:
        """Bind exactly this port (re-taking a recorded port after a restart); idempotent."""
        if (proto, host_ip, port) not in self._held:
            self._bind(proto, host_ip, port)

    def release(self, proto: str, host_ip: str, port: int) -> None:
        sock = self._held.pop((proto, host_ip, port), None)
        if sock is not None:
            sock.close()

    def release_all(self) -> None:
        for key in list(self._held):
            self.release(*key)

    def _bind(self, proto: str, host_ip: str, port: int) -> int:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        v6 = ipaddress.ip_address(host_ip).version == 6
        try:
            sock = self._new(socket.AF_INET6 if v6 else socket.AF_INET, kind)
        except OSError as exc:  # EMFILE/ENFILE: every held port costs a descriptor
            raise Exhausted(f"cannot hold host port {port or 'any'}/{proto} on {host_ip}: {exc.strerror} "
                            f"(pynet holds {len(self._held)} published ports, one descriptor each; "
                            "raise the plugin's open-files limit, LimitNOFILE= in its unit)") from None
        try:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if proto == "tcp":
                # Like Go's listeners: a port with connections in TIME_WAIT is still free.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host_ip, port))
            if proto == "tcp":
                sock.listen(0)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise Conflict(f"host port {port}/{proto} on {host_ip} is already in use (by another "
                               "container's published port or a program on the host)") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise BadRequest(f"cannot publish on {host_ip}: it is not an address of this host") from None
            raise Conflict(f"cannot bind host port {port}/{proto} on {host_ip}: {exc.strerror}") from None
        chosen = sock.getsockname()[1]
        self._held[(proto, host_ip, chosen)] = sock
        return chosen

"""A strict firewall stand-in, in the spirit of moby's StubFirewaller.

It keeps what a real firewall would have installed and refuses what a real one would have
to guess about: publishing an endpoint twice, publishing on a network it never installed,
removing a network's rules while endpoints on it still have published ports. Host ports
follow the real rules: in use (by pynet or, via `busy`, by someone else) is a Conflict;
0 picks a free port from 49153 up; a range picks its first free port.
"""
from __future__ import annotations

from pynet_core.errors import Conflict
from driver.portmap import ANY_IPV4, PortBinding

FIRST_DYNAMIC_PORT = 49153


class FirewallMisuse(Exception):
    """The caller broke the Firewall contract (a bug in pynet, not a user error)."""


class RecordingFirewall:
    def __init__(self) -> None:
        self.networks: dict[str, object] = {}
        self.published: dict[str, tuple[PortBinding, ...]] = {}
        self._owner: dict[str, str] = {}  # endpoint id -> network id
        self.busy: set[tuple[str, str, int]] = set()  # (proto, host_ip, port) used outside pynet

    def network_added(self, network) -> None:
        self.networks[network.id] = network

    def network_removed(self, network) -> None:
        left = [eid for eid, nid in self._owner.items() if nid == network.id]
        if left:
            raise FirewallMisuse(f"network {network.id[:12]} removed while endpoints "
                                 f"{[e[:12] for e in left]} still have published ports")
        self.networks.pop(network.id, None)

    def publish(self, network, endpoint, requests) -> tuple[PortBinding, ...]:
        if network.id not in self.networks:
            raise FirewallMisuse(f"publish on network {network.id[:12]}, which has no rules")
        if endpoint.id in self.published:
            raise FirewallMisuse(f"endpoint {endpoint.id[:12]} published twice")
        ip = next(a.split("/")[0] for a in endpoint.addresses if ":" not in a)
        bindings: list[PortBinding] = []
        for req in requests:
            port = self._pick(req, bindings)
            bindings.append(PortBinding(req.proto, ip, req.container_port, req.host_ip, port,
                                        req.host_port_start, req.host_port_end))
        if bindings:
            self.published[endpoint.id] = tuple(bindings)
            self._owner[endpoint.id] = network.id
        return tuple(bindings)

    def unpublish(self, network, endpoint) -> None:
        self.published.pop(endpoint.id, None)
        self._owner.pop(endpoint.id, None)

    def sync(self, networks, endpoints=()) -> None:
        # Like NftFirewall: only bridge networks have rules (macvlan traffic never crosses
        # the host's IP stack).
        self.networks = {n.id: n for n in networks if n.kind == "bridge"}
        self.published, self._owner = {}, {}
        for ep in endpoints:
            if ep.published and ep.network_id in self.networks:
                self.published[ep.id] = tuple(ep.published)
                self._owner[ep.id] = ep.network_id

    # --- host ports ----------------------------------------------------------------
    def _pick(self, req, pending: list[PortBinding]) -> int:
        if req.host_port_start == 0:
            candidates = range(FIRST_DYNAMIC_PORT, 65536)
        else:
            candidates = range(req.host_port_start, req.host_port_end + 1)
        for port in candidates:
            if not self._in_use(req.proto, req.host_ip, port, pending):
                return port
        if req.host_port_start == req.host_port_end:  # the real HostPorts' wording
            raise Conflict(f"host port {req.host_port_start}/{req.proto} on {req.host_ip} is already in use")
        raise Conflict(f"cannot publish on {req.host_ip}: every host port in "
                       f"{req.host_port_start}-{req.host_port_end}/{req.proto} is already in use")

    def _in_use(self, proto: str, host_ip: str, port: int, pending: list[PortBinding]) -> bool:
        taken = [b for bs in self.published.values() for b in bs] + pending
        if any(b.overlaps(proto, host_ip, port) for b in taken):
            return True
        return any((p, n) == (proto, port) and (h == host_ip or ANY_IPV4 in (h, host_ip))
                   for p, h, n in self.busy)

"""WireGuard in the kernel (the wireguard module) through pyroute2, behind the same port.

The link is `ip link add NAME type wireguard` (rtnetlink); key, port and peers go through the
generic netlink family (pyroute2_wg.KernelGenl). pyroute2's WireGuard.set() carries one peer
per message, so set_peers() is a diff: one message per peer removed, then one per peer kept or
added (with replace_allowed_ips); kept peers keep their sessions. Not one atomic operation, as
the UAPI's set is; a failure midway leaves a subset, and the next set_peers() repairs it.

Unit-tested only (tests/unit/test_wireguard_kernel.py): the kernel this groundwork was written
on has no wireguard module.
"""
from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface

from pynet_core.errors import BadRequest

from .api import (Endpoint, LinkNotFound, LinkStatus, PeerStatus, PrivateKey, PublicKey,
                  UapiProtocolError, check_ensure, check_link_name, check_peers, parse_allowed_ip)


class KernelWireGuard:
    implementation = "kernel"

    def __init__(self, links=None, genl=None) -> None:
        if links is None or genl is None:
            from .pyroute2_wg import KernelGenl, LinkOps
            links = links or LinkOps(None)
            genl = genl or KernelGenl()
        self.links = links
        self.genl = genl

    def ensure(self, name: str, private_key: PrivateKey, listen_port: int, mtu: int,
               address: IPv4Interface | IPv6Interface | None = None) -> bool:
        check_ensure(name, private_key, listen_port, mtu, address)
        created = self.links.create_wireguard(name)
        self.genl.set_device(name, private_key.reveal_base64(), listen_port)
        self.links.configure(name, mtu, address)
        return created

    def _status_peers(self, name: str) -> tuple[int | None, tuple[PeerStatus, ...]]:
        info = self.genl.info(name)
        peers = []
        try:
            for raw in info["peers"]:
                sec, nsec = raw["handshake"]
                peers.append(PeerStatus(
                    PublicKey.parse(raw["public_key"]),
                    Endpoint.parse(raw["endpoint"]) if raw["endpoint"] else None,
                    tuple(parse_allowed_ip(a) for a in raw["allowed_ips"]),
                    int(raw["keepalive"]),
                    None if (sec, nsec) == (0, 0) else sec + nsec / 1e9,
                    int(raw["rx"]), int(raw["tx"])))
        except (BadRequest, KeyError, TypeError, ValueError) as exc:
            raise UapiProtocolError(f"the kernel's WireGuard answer for {name} does not parse: "
                                    f"{getattr(exc, 'message', exc)}") from None
        return info["listen_port"], tuple(peers)

    def set_peers(self, name: str, peers) -> None:
        wanted = check_peers(peers)
        if not self.links.exists(name):
            raise LinkNotFound(f"WireGuard link {name} does not exist: ensure() it first")
        _, current = self._status_peers(name)
        keep = {p.public_key for p in wanted}
        for peer in current:
            if peer.public_key not in keep:
                self.genl.set_peer(name, {"public_key": peer.public_key.base64, "remove": True})
        for peer in wanted:
            spec = {"public_key": peer.public_key.base64, "persistent_keepalive": peer.keepalive,
                    "replace_allowed_ips": True, "allowed_ips": [str(n) for n in peer.allowed_ips]}
            if peer.endpoint is not None:
                spec["endpoint_addr"] = str(peer.endpoint.ip)
                spec["endpoint_port"] = peer.endpoint.port
            self.genl.set_peer(name, spec)

    def status(self, name: str) -> LinkStatus | None:
        check_link_name(name)
        if not self.links.exists(name):
            return None
        port, peers = self._status_peers(name)
        return LinkStatus(name, self.implementation, port, peers)

    def remove(self, name: str) -> bool:
        check_link_name(name)
        return self.links.delete(name)

    def close(self) -> None:
        """The kernel link needs no watching."""

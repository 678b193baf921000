"""A WireGuard port (driver/wireguard/api.py) in memory, and host keys without `wg`: what
the overlay's encrypted data path does to its one link, recorded for the unit tests."""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

from driver.wireguard.api import (LinkNotFound, LinkStatus, Peer, PeerStatus, PrivateKey, PublicKey,
                                  check_link_name, check_mtu, check_peers, check_port)
from driver.wireguard.keys import HostKeys


@dataclass
class FakeLink:
    private_key: PrivateKey
    listen_port: int
    mtu: int
    address: IPv4Interface | None
    peers: tuple[Peer, ...] = ()
    peer_sets: int = 0          # set_peers calls that reached the link


@dataclass
class FakeWireGuardLinks:
    implementation: str = "userspace"
    links: dict[str, FakeLink] = field(default_factory=dict)
    created: int = 0
    removed: int = 0
    fail_set_peers: bool = False

    def ensure(self, name, private_key, listen_port, mtu, address=None) -> bool:
        check_link_name(name), check_port(listen_port), check_mtu(mtu)
        link = self.links.get(name)
        if link is None:
            self.links[name] = FakeLink(private_key, listen_port, mtu, address)
            self.created += 1
            return True
        link.private_key, link.listen_port, link.mtu, link.address = private_key, listen_port, mtu, address
        return False

    def set_peers(self, name, peers) -> None:
        wanted = check_peers(peers)
        if name not in self.links:
            raise LinkNotFound(f"WireGuard link {name} does not exist")
        if self.fail_set_peers:
            raise RuntimeError("set_peers failed (test)")
        self.links[name].peers = wanted
        self.links[name].peer_sets += 1

    def status(self, name):
        link = self.links.get(name)
        if link is None:
            return None
        return LinkStatus(name, self.implementation, link.listen_port,
                          tuple(PeerStatus(p.public_key, p.endpoint, p.allowed_ips, p.keepalive, None, 0, 0)
                                for p in link.peers))

    def remove(self, name) -> bool:
        if self.links.pop(name, None) is None:
            return False
        self.removed += 1
        return True

    def close(self) -> None:
        pass


def fake_keys(host: str):
    """keys(state_dir) for one host: a fixed pair per host name (no `wg` needed). The public
    key is not derived from the private one here (nothing in the fakes checks it)."""
    seed = (sum(host.encode()) % 250) + 1

    def load(state_dir: str) -> HostKeys:
        return HostKeys(PrivateKey(bytes([seed]) * 32), PublicKey(bytes([seed, 7]) * 16),
                        Path(state_dir) / "wireguard.key")
    return load


@dataclass
class RecordingGuard:
    """The encrypted overlays' firewall table, as calls."""
    installed: tuple | None = None
    calls: list = field(default_factory=list)

    members: dict = field(default_factory=dict)

    def install(self, link: str, wireguard_port: int, vxlan_port: int, members=None) -> None:
        self.installed = (link, wireguard_port, vxlan_port)
        self.members = {vni: set(a) for vni, a in (members or {}).items()}
        self.calls.append(("install", self.installed, self.members))

    def remove(self) -> None:
        self.installed = None
        self.calls.append(("remove",))

    def covers(self, link: str, wireguard_port: int, vxlan_port: int) -> bool:
        return self.installed == (link, wireguard_port, vxlan_port)


def fake_rotate(host: str):
    """keys.rotate(state_dir, apply) for one host, without `wg`: each call a new pair."""
    count = [0]

    def rotate(state_dir: str, apply) -> HostKeys:
        count[0] += 1
        seed = (sum(host.encode()) + 17 * count[0]) % 250 + 1
        new = HostKeys(PrivateKey(bytes([seed, 1]) * 16), PublicKey(bytes([seed, 9]) * 16),
                       Path(state_dir) / "wireguard.key")
        apply(new)
        return new
    return rotate

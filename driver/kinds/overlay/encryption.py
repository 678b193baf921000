"""Encrypted overlays' data path on this host: ONE WireGuard link (not one per network)
carrying the VXLAN of every encrypted overlay the host is on.

    ensure(vtep, underlay_mtu)   the first encrypted overlay on this host (and restore): this
                                 host's key pair (state directory, 0600), its tunnel address
                                 (claimed cluster-wide), the link (MTU underlay - 60, the
                                 tunnel address on it), its record in the store
    apply(hosts, believed, seq)  the peer set (tunnels.py computes it), by one writer: an
                                 older view than one applied is not applied
    retire()                     after the last encrypted overlay went: the link (and its
                                 wireguard-go), the record and the claim; the key file stays

The link is the port of driver/wireguard/api.py (kernel module or wireguard-go: the
composition root chooses, --wireguard). Its UDP port is --wireguard-port; the VXLAN devices of
encrypted overlays use the tunnel address as their local address and the other hosts' tunnel
addresses as FDB remotes, on their own VXLAN port (runtime.port_for), which the firewall
closes to everything but this link (docs/overlay.md "Encryption").
"""
from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from dataclasses import replace

from driver.wireguard.api import OVERHEAD_IPV4, WireGuardLinks
from pynet_core.errors import BadRequest

from .model import WireGuardHost
from .registry import Registry
from .tunnels import LINK, Believed, wireguard_peers

log = logging.getLogger(__name__)


class Guard(Protocol):
    def install(self, link: str, wireguard_port: int, vxlan_port: int,
                members: Mapping[int, Iterable[str]] | None = None) -> None: ...
    def remove(self) -> None: ...
    def covers(self, link: str, wireguard_port: int, vxlan_port: int) -> bool: ...


class WireGuardPlane:
    def __init__(self, registry: Registry, host: str, *, subnet: str, port: int, state_dir: str,
                 links: Callable[[], WireGuardLinks], keys: Callable[[str], object],
                 link: str = LINK, guard: Guard | None = None, vxlan_port: int = 0,
                 rotate_keys: Callable[[str, Callable[[object], None]], object] | None = None) -> None:
        """`links`: makes the WireGuard port's adapter on first use (choosing it may fail:
        --wireguard=kernel without the module; then an encrypted CreateNetwork says so).
        `keys(state_dir)`: this host's HostKeys (driver/wireguard/keys.load_or_create).
        `guard`: the firewall that drops encrypted overlays' VXLAN port (`vxlan_port`) on
        every interface but the link (driver/firewall/wireguard_guard.py)."""
        self.guard = guard
        self.vxlan_port = vxlan_port
        # keys.rotate(state_dir, apply): a new key pair, applied, then kept (key rotation).
        self._rotate_keys = rotate_keys
        self._mtu: int | None = None
        self._members: dict[int, frozenset[str]] = {}   # VNI -> other members' tunnel addresses
        self.rotations = 0
        # Told the peer count after each change, and each rotation (the composition root's metrics).
        self.on_peers: Callable[[int], None] | None = None
        self.on_rotated: Callable[[], None] | None = None
        self.registry = registry
        self.host = host
        self.subnet = subnet
        self.port = port
        self.state_dir = state_dir
        self.link = link
        self._make_links = links
        self._load_keys = keys
        self._links: WireGuardLinks | None = None
        self._lock = threading.Lock()
        self._applied = -1
        self.address: str | None = None      # this host's tunnel address, once ensured
        self.record: WireGuardHost | None = None
        self.peers: tuple = ()

    @property
    def links(self) -> WireGuardLinks:
        if self._links is None:
            self._links = self._make_links()
        return self._links

    @property
    def implementation(self) -> str:
        return self.links.implementation

    def ensure(self, vtep: str, underlay_mtu: int) -> str:
        """The link up with this host's key, port and tunnel address, and this host's record
        in the store; the tunnel address. Safe to repeat (a re-adopted link keeps its
        sessions)."""
        with self._lock:
            keys = self._load_keys(self.state_dir)
            address = self.registry.claim_tunnel(self.subnet)
            prefix = ipaddress.IPv4Network(self.subnet).prefixlen
            # Before any encrypted VXLAN device can receive. A table a previous plugin process
            # installed for this very link and ports is kept: its per-overlay rules stay in
            # force until this process's first sync installs its own.
            if self.guard is not None and not (self.address is None and
                                               self.guard.covers(self.link, self.port, self.vxlan_port)):
                self.guard.install(self.link, self.port, self.vxlan_port, self._members)
            created = self.links.ensure(self.link, keys.private, self.port, underlay_mtu - OVERHEAD_IPV4,
                                        ipaddress.IPv4Interface(f"{address}/{prefix}"))
            record = WireGuardHost(self.host, keys.public.base64, f"{vtep}:{self.port}", address)
            self.registry.publish_wireguard(record)
            if self.address is None or created:
                log.info("encrypted overlays: WireGuard link %s %s (%s), tunnel address %s, UDP port %d",
                         self.link, "made" if created else "adopted", self.links.implementation,
                         address, self.port)
            self.address, self.record, self._mtu = address, record, underlay_mtu - OVERHEAD_IPV4
            if created and self.peers:
                self.links.set_peers(self.link, self.peers)
            return address

    def apply(self, hosts: Iterable[str], believed: Believed, seq: int | None = None) -> bool:
        """Make the link's peers exactly `hosts`' believed records (tunnels.wireguard_peers);
        False when there is no link (no encrypted overlay here) or a newer view was applied."""
        wanted = wireguard_peers(hosts, believed)
        with self._lock:
            if self.address is None:
                return False
            if seq is not None:
                if seq < self._applied:
                    return False
                self._applied = seq
            if wanted != self.peers:
                self.links.set_peers(self.link, wanted)
                log.info("encrypted overlays: WireGuard peers now %s",
                         ", ".join(f"{p.endpoint}" for p in wanted) or "none")
                self.peers = wanted
                if self.on_peers is not None:
                    self.on_peers(len(wanted))
            return True

    def set_members(self, members: Mapping[int, Iterable[str]], seq: int | None = None) -> bool:
        """The guard's per-overlay sources: VNI -> the tunnel addresses of its other members
        (a WireGuard peer sharing only another encrypted overlay cannot send into this one).
        Re-installs the guard table when they changed; False when there is no link."""
        wanted = {vni: frozenset(addresses) for vni, addresses in members.items()}
        with self._lock:
            if self.address is None or (seq is not None and seq < self._applied):
                return False
            if wanted != self._members:
                if self.guard is not None:
                    self.guard.install(self.link, self.port, self.vxlan_port, wanted)
                self._members = wanted
            return True

    def rotate(self) -> dict:
        """A new key pair for this host (`pynet overlay rotate-key`, or the schedule): set on
        the link, then kept in the key file, then published; the other hosts take the new
        public key at their next sync and re-handshake (the old sessions end with the old
        key). Without a link only the key file changes (the next link uses it)."""
        if self._rotate_keys is None:
            raise BadRequest("key rotation is not available in this plugin")
        with self._lock:
            old = self.record.public_key if self.record is not None else None

            def apply(keys) -> None:
                if self.address is not None:
                    prefix = ipaddress.IPv4Network(self.subnet).prefixlen
                    assert self._mtu is not None
                    self.links.ensure(self.link, keys.private, self.port, self._mtu,
                                      ipaddress.IPv4Interface(f"{self.address}/{prefix}"))
            new = self._rotate_keys(self.state_dir, apply)
            public = new.public.base64
            self.rotations += 1
            if self.on_rotated is not None:
                self.on_rotated()
            if self.record is not None:
                # What the link has now, whether or not the store takes it at once: the
                # watcher writes it again while the store's record differs.
                self.record = replace(self.record, public_key=public)
                self.registry.publish_wireguard(self.record)
            log.info("encrypted overlays: this host's WireGuard key rotated (public key now %s)", public)
            return {"PublicKey": public, "Previous": old, "Link": self.address is not None}

    def republish(self) -> None:
        """This host's record as its link has it, written again (the watcher's, when the
        store's differs)."""
        with self._lock:
            if self.record is not None:
                self.registry.publish_wireguard(self.record)

    def retire(self) -> None:
        """No link, no process, no record, no claim; the private key file stays (the next
        encrypted overlay keeps this host's identity)."""
        with self._lock:
            self.links.remove(self.link)
            if self.guard is not None:
                self.guard.remove()
            self.registry.retire_wireguard()
            log.info("encrypted overlays: WireGuard link %s removed (no encrypted overlay left)", self.link)
            self.address, self.record, self.peers, self._applied = None, None, (), -1
            self._members = {}
            if self.on_peers is not None:
                self.on_peers(0)

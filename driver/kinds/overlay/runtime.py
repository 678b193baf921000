"""What the overlay kind and the composition root share: the settings, the registry, the
applier and the watcher of this host."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pynet_core import deadline
from pynet_core.errors import BadRequest
from pynet_core.retry_queue import RetryQueue
from pynet_core.store.api import Store

from driver.netlink.api import Link, Netlink

from . import underlay
from .applier import DeviceBusy, PeerApplier
from .claims import AddressClaims, LocalRecords
from .model import DEFAULT_PORT, OverlayId

# The VXLAN UDP port of encrypted overlays: apart from the unencrypted ones' so that the
# firewall can drop it on every interface but the WireGuard link (docs/overlay.md
# "Encryption"): Linux demultiplexes VXLAN by port and VNI only, so on a shared port a
# frame from the underlay would reach an encrypted overlay. It never crosses the underlay
# in clear, so it only has to be free on each host.
DEFAULT_ENCRYPTED_PORT = 4799
DEFAULT_WIREGUARD_PORT = 51820
# Each host's WireGuard tunnel address is claimed from here (docs/overlay.md "Encryption").
DEFAULT_WIREGUARD_SUBNET = "100.127.0.0/16"
from .registry import Registry
from .watcher import PeerWatcher

log = logging.getLogger(__name__)

DEFAULT_PEER_TIMEOUT = 30.0
# Of a plugin call's budget, what a sync inside it leaves for the call's own store writes.
RESERVED_FOR_THE_CALL = 1.5


@dataclass(frozen=True, slots=True)
class OverlaySettings:
    # Whether the store is shared by every host (--store consul): an overlay needs it.
    shared_store: bool
    data_path_addr: str | None = None
    port: int = DEFAULT_PORT
    peer_timeout: float = DEFAULT_PEER_TIMEOUT
    # Encrypted overlays (docs/overlay.md "Encryption"): --wireguard (kernel, userspace or
    # auto), the WireGuard UDP port, the VXLAN port of encrypted overlays, and the prefix
    # every host's WireGuard tunnel address is claimed from.
    wireguard: str = "auto"
    wireguard_port: int = DEFAULT_WIREGUARD_PORT
    encrypted_port: int = DEFAULT_ENCRYPTED_PORT
    wireguard_subnet: str = DEFAULT_WIREGUARD_SUBNET


class OverlayRuntime:
    def __init__(self, store: Store, host: str, netlink: Netlink, settings: OverlaySettings,
                 retries: RetryQueue | None = None) -> None:
        self.settings = settings
        self.host = host
        self.netlink = netlink
        self.registry = Registry(store, host, retries or RetryQueue())
        self.applier = PeerApplier(netlink)
        self.watcher = PeerWatcher(store, self.registry, self.applier, host, settings.peer_timeout)
        # The WireGuard data path of encrypted overlays; None until the composition root
        # wires one (until then -o encrypted is refused, never served in clear).
        self.wireguard = None

    def wire(self, records: LocalRecords, claims: AddressClaims) -> None:
        """The composition root's: this host's own records (what its side of each overlay
        is) and the IPAM's claims (which host holds a peer's address)."""
        self.watcher.records = records
        self.watcher.claims = claims

    def require_shared_store(self) -> None:
        if not self.settings.shared_store:
            raise BadRequest("overlay networks need --store consul: their hosts agree on the "
                             "VNI and learn each other's endpoints through the shared store, and "
                             "this plugin runs with its local store")

    def attach_wireguard(self, plane) -> None:
        """The composition root's: encrypted overlays' WireGuard link (encryption.py)."""
        self.wireguard = plane
        self.watcher.wireguard = plane

    def require_wireguard(self) -> None:
        if self.wireguard is None:
            raise BadRequest("encrypted overlays (-o encrypted) are not served by this plugin: "
                             "its WireGuard data path is not set up (docs/overlay.md "
                             "\"Encryption\"); an overlay is never carried in clear instead")

    def port_for(self, encrypted: bool) -> int:
        """The VXLAN UDP port of an overlay: encrypted ones have their own."""
        return self.settings.encrypted_port if encrypted else self.settings.port

    def underlay(self) -> tuple[str, Link]:
        """(this host's VTEP address, the link it is on), or BadRequest naming the flag."""
        links = {link.name: link for link in self.netlink.links()}
        return underlay.choose(self.settings.data_path_addr, self.netlink.local_addresses(),
                               self.netlink.default_route_links(), links)

    def sync(self, only: OverlayId | None = None) -> None:
        """Program the peers of local overlays now (every one, or `only`: after its
        CreateNetwork or restore). Inside a plugin call, another sync of the same overlay
        is waited for only as long as the call's budget allows; past that the peers are
        left to that sync, which is programming them already."""
        left = deadline.remaining()
        wait = None if left is None else max(left - RESERVED_FOR_THE_CALL, 0.0)
        try:
            self.watcher.sync(only, wait=wait)
        except DeviceBusy as exc:
            log.warning("%s; this call leaves them to it", exc.message)

"""The one writer of overlay peer entries into the kernel.

Everything that programs FDB and neighbour entries (the watcher, CreateNetwork, restore)
comes here with the desired entries of one overlay; the applier reads what the VXLAN device
has, diffs (peers.diff) and changes only the difference, one overlay at a time.
"""
from __future__ import annotations

import logging
import threading

from pynet.errors import PynetError

from driver.netlink.api import Netlink

from .peers import Changes, Desired, diff

log = logging.getLogger(__name__)


class PeerApplier:
    def __init__(self, netlink: Netlink) -> None:
        self.netlink = netlink
        self._lock = threading.Lock()

    def apply(self, netns: str, vxlan: str, bridge: str, want: Desired) -> Changes | None:
        """Make `vxlan` (in namespace `netns`) hold exactly the FDB entries of `want`, and its
        `bridge` the neighbour entries (where neighbour suppression looks them up); None
        when the device is not there (yet, or any more): nothing to program."""
        with self._lock:
            try:
                inside = self.netlink.within(netns)
                if inside.vxlan(vxlan) is None:
                    return None
                changes = diff(want, inside.fdb_entries(vxlan), inside.neighbours(bridge))
            except PynetError as exc:
                log.debug("overlay device %s in %s not programmable: %s", vxlan, netns, exc.message)
                return None
            # One entry the kernel refuses must not keep the others from being programmed.
            for entry in changes.fdb_remove:
                _each(inside.remove_fdb, vxlan, entry.mac, entry.dst)
            for neighbour in changes.neigh_remove:
                _each(inside.remove_neighbour, bridge, neighbour.ip)
            for entry in changes.fdb_add:
                _each(inside.ensure_fdb, vxlan, entry.mac, entry.dst)
            for neighbour in changes.neigh_add:
                _each(inside.ensure_neighbour, bridge, neighbour.ip, neighbour.mac)
            if changes:
                log.info("overlay %s: %d peer entries changed (+%d fdb, -%d fdb, +%d neigh, -%d neigh)",
                         vxlan, changes.count(), len(changes.fdb_add), len(changes.fdb_remove),
                         len(changes.neigh_add), len(changes.neigh_remove))
            return changes


def _each(call, *args) -> None:
    try:
        call(*args)
    except Exception as exc:  # noqa: BLE001 - logged; the next sync diffs and tries again
        log.error("overlay peer entry %s %s failed: %s", call.__name__, " ".join(map(str, args)),
                  exc.message if isinstance(exc, PynetError) else f"{type(exc).__name__}: {exc}")

"""The one writer of overlay peer entries into the kernel.

Everything that programs FDB and neighbour entries (the watcher, CreateNetwork, restore)
comes here with the desired entries of one overlay; the applier reads what the VXLAN device
and its bridge have (one dump of each), diffs (peers.diff) and changes only the difference,
all on one netlink socket into the overlay's namespace. Thousands of peers are one batch,
not thousands of dumps and sockets.

One lock per device, not one for all: a sync of a big overlay never holds up the
CreateNetwork of another. Views are numbered in the order they were read (the watcher's
`seq`); a view older than one already applied to a device is not applied, so the kernel
never goes back to an older view when two syncs of one overlay race.
"""
from __future__ import annotations

import logging
import threading

from pynet_core import deadline
from pynet_core.errors import ErrorCategory, PynetError, describe_error

from driver.netlink.api import Netlink, NoSuchLink, NoSuchNamespace

from .peers import Changes, Desired, diff

log = logging.getLogger(__name__)

# Per-entry failures logged one by one; the rest are counted.
LOGGED_FAILURES = 5


class DeviceBusy(PynetError):
    """Another sync is programming this device and did not finish in the time allowed."""

    category = ErrorCategory.CONTENTION


class PeerApplier:
    def __init__(self, netlink: Netlink) -> None:
        self.netlink = netlink
        self._guard = threading.Lock()  # for the two dicts below only
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._applied: dict[tuple[str, str], int] = {}  # device -> seq of the newest view applied
        self.failed_entries = 0  # entries the kernel refused, since start (tests, metrics)

    def _lock(self, device: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(device, threading.Lock())

    def apply(self, netns: str, vxlan: str, bridge: str, want: Desired, seq: int | None = None,
              wait: float | None = None) -> Changes | None:
        """Make `vxlan` (in namespace `netns`) hold exactly the FDB entries of `want`, and its
        `bridge` the neighbour entries (where neighbour suppression looks them up); None
        when the device is not there (yet, or any more): nothing to program. `seq`: when
        the view was read (no change if a later one was applied already). `wait`: at most
        this long for another sync of the same device (DeviceBusy), None for as long as
        it takes."""
        device = (netns, vxlan)
        lock = self._lock(device)
        # Named in the plugin call's budget: a store call refused after this blames it.
        with deadline.spending(f"waiting for another peer sync of overlay device {vxlan}"):
            got = lock.acquire(timeout=-1 if wait is None else max(wait, 0.0))
        if not got:
            raise DeviceBusy(f"the peers of overlay device {vxlan} ({netns}) are being programmed "
                             f"by another sync, still running after {wait:.1f}s")
        try:
            if seq is not None and seq < self._applied.get(device, seq):
                return Changes()  # a newer view was applied meanwhile
            with deadline.spending(f"programming the peers of overlay device {vxlan} into the kernel"):
                changes = self._program(netns, vxlan, bridge, want)
            if changes is not None and seq is not None:
                self._applied[device] = seq
            return changes
        finally:
            lock.release()

    def _program(self, netns: str, vxlan: str, bridge: str, want: Desired) -> Changes | None:
        try:
            with self.netlink.within(netns).session() as inside:
                if inside.vxlan(vxlan) is None:
                    return None
                have = inside.peer_entries(vxlan, bridge)
                changes = diff(want, have.fdb, have.neighbours)
                failed = inside.change_peers(
                    vxlan, bridge, fdb_remove=changes.fdb_remove, neigh_remove=changes.neigh_remove,
                    fdb_add=changes.fdb_add, neigh_add=changes.neigh_add) if changes else []
        except (NoSuchNamespace, NoSuchLink) as exc:  # not there (yet, or any more)
            log.debug("overlay device %s in %s not programmable: %s", vxlan, netns, exc.message)
            return None
        except Exception as exc:  # one broken overlay must not stop the sync of the others
            log.warning("overlay device %s in %s: programming its peers failed: %s", vxlan,
                        netns, describe_error(exc))
            return None
        if changes:
            log.info("overlay %s: %d peer entries changed (+%d fdb, -%d fdb, +%d neigh, -%d neigh)%s",
                     vxlan, changes.count() - len(failed), len(changes.fdb_add), len(changes.fdb_remove),
                     len(changes.neigh_add), len(changes.neigh_remove),
                     f", {len(failed)} refused by the kernel" if failed else "")
        if failed:
            # One refused entry must not stop the others; the next sync tries it again.
            self.failed_entries += len(failed)
            for message in failed[:LOGGED_FAILURES]:
                log.warning("overlay %s: %s", vxlan, message)
            if len(failed) > LOGGED_FAILURES:
                log.warning("overlay %s: %d more peer entries refused by the kernel", vxlan,
                            len(failed) - LOGGED_FAILURES)
        return changes

"""The background job that keeps this host's VXLAN devices in step with the store.

One thread per host, started by the composition root: a blocking `store.watch` on every
overlay's records (Consul: a blocking query, so a change anywhere wakes every host at
once), then one sync: read the view, judge liveness, and hand each local overlay's desired
entries to the applier. The watch times out every `interval` even when nothing changed, so
this host's heartbeat moves on and dead hosts are noticed. With the store unreachable the
kernel is left as it is (traffic keeps flowing) and the watcher retries; after such an
outage every host gets a fresh liveness timeout before anyone is judged dead.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
import threading
import time
from collections.abc import Callable

from driver import naming
from pynet_core.errors import BackendUnavailable, PynetError
from pynet_core.store import bad_records, keys
from pynet_core.store.api import Entry, Store

from .admission import Admitted, Local, admit, local_overlays
from .applier import DeviceBusy, PeerApplier
from .claims import AddressClaims, LocalRecords
from .liveness import Liveness
from .model import Member, OverlayId, OverlayView
from .peers import Changes, Desired, desired
from .registry import Registry, WireGuardView, peer_version
from .tunnels import believe, encrypted_peers_of, tunnel_addresses

log = logging.getLogger(__name__)


class PeerWatcher:
    def __init__(self, store: Store, registry: Registry, applier: PeerApplier, host: str,
                 peer_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.registry = registry
        self.applier = applier
        self.host = host
        # Three heartbeats per timeout: one lost write does not make a host look dead.
        self.interval = peer_timeout / 3
        self.liveness = Liveness(peer_timeout)
        self.clock = clock
        # Held while reading the store's view (not while applying it): reads in order.
        self._lock = threading.Lock()
        self._reads = 0
        self._dead: set[str] = set()
        self._member = False
        self._last_beat: float | None = None
        self._failed: dict[OverlayId, str] = {}  # overlays whose last sync failed, and why
        # This host's own records (the ledger) and the IPAM's claims: wired by the
        # composition root. Without records no overlay is this host's; without claims no
        # remote peer is believed.
        self.records: LocalRecords | None = None
        self.claims: AddressClaims | None = None
        # Encrypted overlays' WireGuard link (encryption.WireGuardPlane), wired by the runtime.
        self.wireguard = None
        self.syncs = 0  # completed syncs (tests wait on it)
        # Told (seconds, entries changed) after every sync: the composition root's metrics.
        self.on_synced: Callable[[float, int], None] | None = None

    def sync(self, only: OverlayId | None = None, wait: float | None = None) -> dict[OverlayId, Changes]:
        """Bring every overlay this host is a member of (or only `only`) to the store's
        current view. Reads are serialized and numbered (a later read sees no less than an
        earlier one), and the applier never applies to a device a view older than one it
        already applied; applying takes only that overlay's lock, so a slow sync of one
        overlay does not hold up another's. `wait`: how long to wait for another sync of
        the same overlay (the applier's DeviceBusy). This host's side of each overlay is its
        own records, never the store's (admission.py); one overlay that fails is logged and
        the others go on."""
        started = time.monotonic()
        failed: dict[OverlayId, str] = {}
        wants: dict[OverlayId, tuple[Member, Desired]] = {}
        with self._lock:
            every, wg_view = self.registry.snapshot()
            views = every if only is None else {only: every.get(only) or OverlayView(only, None, {}, ())}
            beats = self.registry.beats()
            all_local = self._local()
            local = all_local
            if only is not None:
                local = {only: local[only]} if only in local else {}
            now = self.clock()
            hosts = {h for v in every.values() for h in v.members}
            self.liveness.observe(beats, hosts, now)
            self._report_deaths(now)
            self._reads += 1
            seq = self._reads
            alive = {h for h in hosts if self.liveness.alive(h, now)}
            # Only a made network makes this host beat: a create that fails leaves none.
            member = any(mine.ready for mine in local.values())
            if only is None:
                was_member, self._member = self._member, member
                if was_member and not member:
                    self._retire_beat()
            elif member:
                self._member = True
            # Encrypted overlays: the WireGuard peers from every encrypted overlay of this host
            # (an only-sync too: the link is shared), and where their entries point.
            via = self._encrypted(every, wg_view, all_local, alive, seq)
            # What to believe is decided with the view (and the claims) read here, in order.
            for oid, mine in local.items():
                try:
                    wants[oid] = self._want(views.get(oid) or OverlayView(oid, None, {}, ()), mine, alive,
                                            via if mine.encrypted else None)
                except BackendUnavailable:
                    raise  # the store went away: the whole sync is retried
                except Exception as exc:  # one overlay's trouble must not stop the others'
                    self._failing(oid, exc, failed)
        done: dict[OverlayId, Changes] = {}
        for oid, (member_, want) in wants.items():
            try:
                changes = self.applier.apply(member_.netns, member_.vxlan, naming.OVERLAY_BRIDGE, want,
                                             seq=seq, wait=wait)
            except (BackendUnavailable, DeviceBusy):
                raise
            except Exception as exc:
                self._failing(oid, exc, failed)
                continue
            if changes is not None:
                done[oid] = changes
        with self._lock:
            synced = set(local) - set(failed)
            for oid in sorted(synced & set(self._failed), key=str):
                log.info("overlay %s: its peers sync again", oid)
                del self._failed[oid]
            self._failed.update(failed)
            self.syncs += 1
        if self.on_synced is not None:
            self.on_synced(time.monotonic() - started, sum(c.count() for c in done.values()))
        return done

    def _failing(self, oid: OverlayId, exc: Exception, failed: dict[OverlayId, str]) -> None:
        failed[oid] = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        if self._failed.get(oid) != failed[oid]:  # once per distinct failure, not every sync
            log.error("overlay %s: its peers could not be synced: %s", oid, failed[oid],
                      exc_info=not isinstance(exc, PynetError))

    def _local(self) -> dict[OverlayId, Local]:
        if self.records is None:
            return {}
        return local_overlays(self.host, self.records.networks(), self.records.endpoints())

    def _encrypted(self, views: dict[OverlayId, OverlayView], wg_view: WireGuardView,
                   local: dict[OverlayId, Local], alive: set[str], seq: int) -> dict[str, str]:
        """Apply the WireGuard peer set (hosts alive on an encrypted overlay this host has,
        with a believed record) and answer host -> tunnel address for their VXLAN entries.
        Empty (no entries at all, never the VTEPs) while this host has no WireGuard link."""
        encrypted = [oid for oid, mine in local.items() if mine.encrypted]
        plane = self.wireguard
        if not encrypted or plane is None or plane.record is None:
            return {}
        claims = {address: claim.host for address, claim in wg_view.claims.items()}
        believed = believe(wg_view.hosts, claims, self.host, plane.subnet, plane.record)
        stored = wg_view.hosts.get(self.host)
        if stored is None or replace(stored, attempt="") != replace(plane.record, attempt=""):
            # This host's record is not what its link has (a rotation whose publish met a
            # store outage, a record deleted by hand): written again, or the peers could not
            # handshake with it.
            try:
                plane.republish()
            except PynetError as exc:
                log.warning("encrypted overlays: this host's WireGuard record could not be written "
                            "again: %s", exc.message)
        for refused in believed.refused:
            key = keys.overlay_wireguard(refused.host)
            bad_records.skipped(Entry(key, "", wg_view.versions.get(key, 0)), refused.reason,
                                "overlay WireGuard host")
        hosts = encrypted_peers_of(views, encrypted, self.host, alive.__contains__)
        via = tunnel_addresses(believed)
        # Per overlay, the tunnel addresses its frames may come from (the guard table).
        members = {local[oid].vni: {via[h] for h in views[oid].members if h in hosts and h in via}
                   for oid in encrypted if local[oid].vni is not None and oid in views}
        try:
            plane.apply(hosts, believed, seq)
            plane.set_members(members, seq)
        except Exception as exc:  # the link's trouble (wireguard-go not answering: a
            # BackendUnavailable too, but not the store's) must not stop the other overlays
            log.error("encrypted overlays: the WireGuard peers could not be set: %s",
                      getattr(exc, "message", exc), exc_info=not isinstance(exc, PynetError))
        return via

    def _want(self, view: OverlayView, mine: Local, alive: set[str],
              via: dict[str, str] | None = None) -> tuple[Member, Desired]:
        """(this host's member, the entries its device should have) for one overlay; `via`:
        an encrypted overlay's tunnel addresses (peers.desired)."""
        claims = None
        if self.claims is not None:
            claims = self.claims.owners(view.id.space, view.id.subnet)
        admitted = admit(view, self.host, mine, claims, alive.__contains__, partial(peer_version, view))
        self._report(view, admitted)
        assert mine.member is not None
        return mine.member, desired(admitted.view, self.host, alive.__contains__, via)

    def _report(self, view: OverlayView, admitted: Admitted) -> None:
        """Each record not believed: logged once per version, counted (bad_records.py)."""
        oid = view.id
        for refused in admitted.refused:
            if refused.endpoint is None:
                key, kind = keys.overlay_member(oid.space, oid.subnet, refused.host), "overlay member"
            else:
                key, kind = keys.overlay_peer(oid.space, oid.subnet, refused.host, refused.endpoint), "overlay peer"
            bad_records.skipped(Entry(key, "", view.versions.get(key, 0)), refused.reason, kind)
        if admitted.own_member_differs:
            key = keys.overlay_member(oid.space, oid.subnet, self.host)
            bad_records.skipped(Entry(key, "", view.versions.get(key, 0)),
                                "it differs from this host's own network record, which is what "
                                "counts (restore or the next CreateNetwork writes it again)",
                                "overlay member")

    def _retire_beat(self) -> None:
        """This host left its last overlay: its heartbeat key goes too (nothing of pynet's
        stays in the store after the last delete). The next membership beats at once."""
        try:
            self.registry.retire_beat()
        except BackendUnavailable:
            self._member = True  # retried at the next sync
            return
        self._last_beat = None

    def _report_deaths(self, now: float) -> None:
        dead = self.liveness.dead(now) - {self.host}
        for host in sorted(dead - self._dead):
            log.warning("overlay peer host %s has not moved its heartbeat for %g s: its entries "
                        "are withdrawn (its address claims stay)", host, self.liveness.timeout)
        for host in sorted(self._dead - dead):
            log.info("overlay peer host %s is back", host)
        self._dead = dead

    def beat_if_due(self) -> None:
        now = self.clock()
        if self._member and (self._last_beat is None or now - self._last_beat >= self.interval):
            self.registry.beat()
            self._last_beat = now

    def run(self, stop: threading.Event) -> None:
        index, failing = 0, False
        while not stop.is_set():
            try:
                self.beat_if_due()
                index = self.store.watch(keys.overlay_all(), index, self.interval)
                if stop.is_set():
                    return
                if failing:
                    self.liveness.forgive(self.clock())
                    log.info("overlay watcher: the store answers again; catching up")
                    failing = False
                self.sync()
                self.beat_if_due()  # a first membership beats at once
            except BackendUnavailable as exc:
                if not failing:
                    log.warning("overlay watcher: %s; the kernel keeps its entries meanwhile", exc.message)
                failing = True
                index = 0  # a fresh read once the store is back
                stop.wait(min(self.interval, 1.0))
            except Exception:  # a bug must not end the thread for good
                log.exception("overlay watcher failed; trying again")
                stop.wait(1.0)

    def start(self) -> threading.Event:
        stop = threading.Event()
        threading.Thread(target=self.run, args=(stop,), name="pynet-overlay-watcher",
                         daemon=True).start()
        return stop

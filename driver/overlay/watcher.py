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
import threading
import time
from collections.abc import Callable

from driver import naming
from pynet.errors import BackendUnavailable
from pynet.store import keys, rejected
from pynet.store.api import Store

from .admission import Admitted, Local, admit, local_overlays
from .applier import PeerApplier
from .claims import AddressClaims, LocalRecords
from .liveness import Liveness
from .model import OverlayId, OverlayView
from .peers import Changes, desired
from .registry import Registry

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
        self._lock = threading.Lock()
        self._dead: set[str] = set()
        self._member = False
        self._last_beat: float | None = None
        self._failed: dict[OverlayId, str] = {}  # overlays whose last sync failed, and why
        # This host's own records (the ledger) and the IPAM's claims: wired by the
        # composition root. Without records no overlay is this host's; without claims no
        # remote peer is believed.
        self.records: LocalRecords | None = None
        self.claims: AddressClaims | None = None
        self.syncs = 0  # completed syncs (tests wait on it)
        # Told (seconds, entries changed) after every sync: the composition root's metrics.
        self.on_synced: Callable[[float, int], None] | None = None

    def sync(self) -> dict[OverlayId, Changes]:
        """Bring every overlay this host is a member of to the store's current view. Reading
        and applying happen under one lock, so what the kernel gets is never older than what
        an earlier sync applied. This host's side of each overlay is its own records, never
        the store's (admission.py); one overlay that fails is logged and the others go on."""
        started = time.monotonic()
        with self._lock:
            views = self.registry.views()
            beats = self.registry.beats()
            local = self._local()
            now = self.clock()
            self.liveness.observe(beats, {h for v in views.values() for h in v.members}, now)
            self._report_deaths(now)
            done: dict[OverlayId, Changes] = {}
            was_member, self._member = self._member, False
            failed: dict[OverlayId, str] = {}
            for oid, mine in local.items():
                # Only a made network makes this host beat: a create that fails leaves none.
                self._member = self._member or mine.ready
                try:
                    changes = self._sync_one(views.get(oid) or OverlayView(oid, None, {}, ()), mine, now)
                except BackendUnavailable:
                    raise  # the store went away: the whole sync is retried
                except Exception as exc:  # one overlay's trouble must not stop the others'
                    failed[oid] = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
                    if self._failed.get(oid) != failed[oid]:
                        log.exception("overlay %s: its peers could not be synced", oid)
                    continue
                if changes is not None:
                    done[oid] = changes
            for oid in self._failed.keys() - failed.keys():
                log.info("overlay %s: its peers sync again", oid)
            self._failed = failed
            if was_member and not self._member:
                self._retire_beat()
            self.syncs += 1
        if self.on_synced is not None:
            self.on_synced(time.monotonic() - started, sum(c.count() for c in done.values()))
        return done

    def _local(self) -> dict[OverlayId, Local]:
        if self.records is None:
            return {}
        return local_overlays(self.host, self.records.networks(), self.records.endpoints())

    def _sync_one(self, view: OverlayView, mine: Local, now: float) -> Changes | None:
        claims = None
        if self.claims is not None:
            claims = self.claims.owners(view.id.space, view.id.subnet)
        admitted = admit(view, self.host, mine, claims)
        self._report(view, admitted)
        want = desired(admitted.view, self.host, lambda h: self.liveness.alive(h, now))
        assert mine.member is not None
        return self.applier.apply(mine.member.netns, mine.member.vxlan, naming.OVERLAY_BRIDGE, want)

    def _report(self, view: OverlayView, admitted: Admitted) -> None:
        """Each record not believed, once per version (pynet/store/rejected.py)."""
        oid = view.id
        for refused in admitted.refused:
            if refused.endpoint is None:
                key, kind = keys.overlay_member(oid.space, oid.subnet, refused.host), "overlay member"
            else:
                key, kind = keys.overlay_peer(oid.space, oid.subnet, refused.host, refused.endpoint), "overlay peer"
            rejected.report(key, view.versions.get(key, 0), kind, refused.reason)
        if admitted.own_member_differs:
            key = keys.overlay_member(oid.space, oid.subnet, self.host)
            rejected.report(key, view.versions.get(key, 0), "overlay member",
                            "it differs from this host's own network record, which is what counts "
                            "(restore or the next CreateNetwork writes it again)")

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

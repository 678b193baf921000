"""The overlays in the shared store: definitions, the cluster-wide VNI allocator, members,
peers and heartbeats (key schema: pynet_core/store/keys.py).

Every write that could land after pynet gave up (a join, a peer) goes through this host's
FencedWrites, so a late one is undone once the store answers (pynet_core/store/fenced.py).
Deletes name the version they delete, so a late delete can only hit what it meant to.

Joining and the last host leaving race safely: a join re-writes the definition (moving its
version) in the transaction that adds its member, and the last member's leave deletes the
definition only at the version it read. One of the two transactions fails and is retried.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pynet_core.errors import BadRecord, Conflict, StoreContention
from pynet_core.retry_queue import RetryQueue
from pynet_core.store import bad_records, keys, records
from pynet_core.store.api import Entry, Op, Store
from pynet_core.store.fenced import FencedWrites, claim_id, delete_if_unchanged

from .model import (FIRST_SWARM_VNI, VNI_MAX, InvalidRecord, Definition, Member, OverlayId,
                    OverlayView, Peer, TunnelClaim, VniClaim, WireGuardHost, agreed, heartbeat,
                    host_id, lowest_free_vni)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 32


def load_record(entry: Entry) -> Any:
    """The JSON of `entry`, or InvalidRecord: not UTF-8, not JSON, or nested beyond reason."""
    try:
        return records.checked_load(entry)
    except BadRecord as exc:
        raise InvalidRecord(exc.reason) from None


def _skipped(key: str, version: int, kind: str, reason: str) -> None:
    bad_records.skipped(Entry(key, "", version), reason, kind)


KIND_NAMES = {keys.DEF: "overlay definition", keys.MEMBER: "overlay member",
              keys.PEER: "overlay peer"}


def parse_views(entries: list[Entry],
                report: Callable[[str, int, str, str], object] = _skipped,
                memo: "records.ParsedOnce[Definition | Member | Peer] | None" = None
                ) -> dict[OverlayId, OverlayView]:
    """Every overlay in a listing of keys.overlay_all(): definitions, and each host's member
    and peer records, each validated once here (model.py's parsers). A record that fails is
    reported (`report(key, version, kind, reason)`: logged once per version, counted) and
    skipped; the rest of the view stands. A record under a host's prefix that names another
    host is not that host's word. VNI claims are validated too (and reported), not kept.
    `memo` (overlay_records(), kept by the caller across listings): a record whose text is
    unchanged since the last listing is not decoded and checked again (same text, same
    verdict)."""
    parse = memo if memo is not None else overlay_record
    found: dict[OverlayId, dict] = {}
    for entry in entries:
        parsed = keys.parse_overlay_key(entry.key)
        if parsed is None:
            _check_other(entry, report)
            continue
        parts = found.setdefault(OverlayId(parsed.space, parsed.subnet),
                                 {"def": None, "members": {}, "peers": [], "legacy": set(),
                                  "versions": {}, "rejected": {}, "unreadable": set()})
        if parsed.kind in (keys.LEGACY_MEMBER, keys.LEGACY_PEER):
            # Not read (not host-owned), but a host that still has one holds the overlay.
            if parsed.kind == keys.LEGACY_MEMBER:
                parts["legacy"].add(parsed.host)
            continue
        try:
            record = parse(entry)
            if parsed.kind == keys.DEF:
                parts["def"] = record
            elif parsed.kind == keys.MEMBER:
                parts["members"][parsed.host] = record
            else:
                parts["peers"].append(record)
            parts["versions"][entry.key] = entry.version
        except InvalidRecord as exc:  # one bad record must not blind a host
            parts["rejected"][entry.key] = exc.reason
            if parsed.kind == keys.MEMBER:
                parts["unreadable"].add(parsed.host)
            report(entry.key, entry.version, KIND_NAMES[parsed.kind], exc.reason)
    if memo is not None:
        memo.keep({e.key for e in entries})
    return {oid: OverlayView(oid, p["def"], p["members"], tuple(p["peers"]), frozenset(p["legacy"]),
                             p["versions"], p["rejected"], frozenset(p["unreadable"]))
            for oid, p in found.items()}


def overlay_record(entry: Entry) -> Definition | Member | Peer:
    """The definition, member or peer record at `entry` (a key keys.parse_overlay_key reads
    as one), checked: InvalidRecord saying why not. Depends on the key and the text alone."""
    parsed = keys.parse_overlay_key(entry.key)
    assert parsed is not None and parsed.kind in KIND_NAMES
    data = load_record(entry)
    if parsed.kind == keys.DEF:
        return Definition.from_dict(data)
    if parsed.kind == keys.MEMBER:
        member = Member.from_dict(data)
        _same_host(member.host, parsed.host)
        return member
    peer = Peer.from_dict(data)
    _same_host(peer.host, parsed.host)
    if peer.endpoint != parsed.endpoint:
        raise InvalidRecord(f"'endpoint' {peer.endpoint[:12]} is not the one its key names")
    return peer


def overlay_records() -> "records.ParsedOnce[Definition | Member | Peer]":
    """A memo for parse_views (records.ParsedOnce of overlay_record)."""
    return records.ParsedOnce(overlay_record)


def read_beats(store: Store) -> dict[str, int]:
    """host -> the version of its heartbeat; a heartbeat that is not one is no beat (the
    overlay's liveness, and the names' withdrawal of a host: driver/names/watcher.py)."""
    prefix = keys.overlay_alive_all()
    beats = {}
    for entry in store.list(prefix):
        host = entry.key[len(prefix):]
        try:
            host_id(host, "key's host")
            heartbeat(load_record(entry), host)
        except InvalidRecord as exc:
            bad_records.skipped(entry, exc.reason, "overlay heartbeat")
            continue
        beats[host] = entry.version
    return beats


def peer_version(view: OverlayView, peer: Peer) -> int:
    """The store version of `peer`'s record as read into `view` (admission.py compares it
    with address claims': versions only grow)."""
    return view.versions.get(keys.overlay_peer(view.id.space, view.id.subnet, peer.host, peer.endpoint), 0)


def _same_host(named: str, owner: str) -> None:
    if named != owner:
        raise InvalidRecord(f"it names host {named!r}, but sits under host {owner!r}'s prefix")


def _check_other(entry: Entry, report: Callable[[str, int, str, str], object]) -> None:
    """A VNI claim is validated (Registry reads it where it needs it); any other key under
    the overlay's prefix is not one pynet writes."""
    if entry.key.startswith(keys.overlay_vnis()):
        try:
            vni_claim(entry)
        except InvalidRecord as exc:
            report(entry.key, entry.version, "overlay VNI claim", exc.reason)
    elif keys.wireguard_host_of(entry.key) is not None or entry.key.startswith(keys.overlay_tunnels()):
        pass  # encrypted overlays' records: validated where they are read (parse_wireguard)
    elif entry.key.startswith((keys.overlay_nets(), keys.overlay_hosts())):
        report(entry.key, entry.version, "overlay key", "pynet writes no key of this shape")


@dataclass(frozen=True, slots=True)
class WireGuardView:
    """Every host's WireGuard record and every tunnel address claim, each validated (bad ones
    reported and skipped): host -> its record, address -> its claim; and the versions read."""
    hosts: Mapping[str, WireGuardHost]
    claims: Mapping[str, TunnelClaim]
    versions: Mapping[str, int] = field(default_factory=dict)


def parse_wireguard(entries: list[Entry],
                    report: Callable[[str, int, str, str], object] = _skipped) -> WireGuardView:
    """The encrypted overlays' records in a listing of keys.overlay_all(). A record under a
    host's prefix naming another host is not that host's word; a claim whose key is not an
    address is no claim."""
    hosts: dict[str, WireGuardHost] = {}
    claims: dict[str, TunnelClaim] = {}
    versions: dict[str, int] = {}
    for entry in entries:
        owner = keys.wireguard_host_of(entry.key)
        try:
            if owner is not None:
                host_id(owner, "key's host")
                record = WireGuardHost.from_dict(load_record(entry))
                _same_host(record.host, owner)
                hosts[owner] = record
            elif entry.key.startswith(keys.overlay_tunnels()):
                claim = TunnelClaim.from_dict(entry.key[len(keys.overlay_tunnels()):], load_record(entry))
                claims[claim.address] = claim
            else:
                continue
            versions[entry.key] = entry.version
        except InvalidRecord as exc:
            report(entry.key, entry.version,
                   "overlay WireGuard host" if owner is not None else "overlay tunnel claim", exc.reason)
    return WireGuardView(hosts, claims, versions)


def vni_of(key: str) -> int:
    """The VNI a key under keys.overlay_vnis() claims, or InvalidRecord."""
    text = key[len(keys.overlay_vnis()):]
    if not (text.isascii() and text.isdigit() and len(text) <= 8 and 1 <= int(text) <= VNI_MAX):
        raise InvalidRecord(f"{text!r} is not a VNI (1..{VNI_MAX})")
    return int(text)


def vni_claim(entry: Entry) -> tuple[int, VniClaim]:
    return vni_of(entry.key), VniClaim.from_dict(load_record(entry))


class Registry:
    def __init__(self, store: Store, host: str, retries: RetryQueue) -> None:
        self.store = store
        self.host = host
        self.writes = FencedWrites(store, host, retries, keys.overlay_fence(host))
        # Every record of the last listing, checked: each sync lists every overlay's records
        # again, and checking all of them each time made a burst of N endpoints O(N^2)
        # (issue 22); only records whose text changed are checked again.
        self._records = overlay_records()

    # --- reading -------------------------------------------------------------------
    def views(self) -> dict[OverlayId, OverlayView]:
        return parse_views(self.store.list(keys.overlay_all()), memo=self._records)

    def snapshot(self) -> tuple[dict[OverlayId, OverlayView], WireGuardView]:
        """Every overlay's view and the encrypted overlays' records, from one listing."""
        entries = self.store.list(keys.overlay_all())
        return parse_views(entries, memo=self._records), parse_wireguard(entries)

    def view(self, oid: OverlayId) -> OverlayView:
        return self._read(oid)[0]

    def _read(self, oid: OverlayId) -> tuple[OverlayView, dict[str, Entry]]:
        # One listing of everything (one consistent read): an overlay's records are under
        # its definition's prefix and under every host's own.
        entries = self.store.list(keys.overlay_all())
        view = parse_views(entries, memo=self._records).get(oid) or OverlayView(oid, None, {}, ())
        return view, {e.key: e for e in entries}

    def beats(self) -> dict[str, int]:
        """host -> the version of its heartbeat; a heartbeat that is not one is no beat."""
        return read_beats(self.store)

    # --- membership ----------------------------------------------------------------
    def join(self, oid: OverlayId, member: Member, *, vni: int | None, mtu: int | None,
             default_mtu: int, mtu_limit: int, port: int, encrypted: bool = False) -> Definition:
        """Record this host as a member, defining the overlay (and taking a VNI) if it is
        the first; the definition every host follows, or Conflict naming the holders."""
        for _ in range(MAX_ATTEMPTS):
            view, entries = self._read(oid)
            mine = replace(member, attempt=claim_id())
            member_key = keys.overlay_member(oid.space, oid.subnet, self.host)
            value = records.dump(mine.to_dict())
            held = entries.get(member_key)
            member_op = Op("cas", member_key, value, held.version) if held else Op("create", member_key, value)
            def_key = keys.overlay_def(oid.space, oid.subnet)
            others = sorted(h for h in view.members if h != self.host)
            if def_key in view.rejected:  # no host can follow a definition nobody can read
                if view.holders() - {self.host}:
                    raise BadRecord(def_key, view.rejected[def_key])
                self._drop_unreadable_definition(oid, view, entries[def_key])
                continue
            if view.definition is not None and not view.holders() - {self.host}:
                self._drop_stale_definition(oid, view.definition, entries[def_key])
                continue
            if view.definition is None:
                ops, definition = self._define(oid, mine, vni=vni, mtu=mtu if mtu is not None else default_mtu,
                                               port=port, encrypted=encrypted)
                if ops is None:
                    continue
                ops.append(member_op)
                settle = self._undo_join(oid, mine)
            else:
                definition = agreed(view.definition, others, oid, vni=vni, mtu=mtu,
                                    mtu_limit=mtu_limit, port=port, encrypted=encrypted)
                current = entries[def_key]
                ops = [Op("cas", def_key, current.value, current.version), member_op]
                settle = delete_if_unchanged(member_key, value)
            if self.writes.transaction(ops, settle, f"joining overlay {oid} ({mine.attempt})"):
                log.info("overlay %s: joined with VNI %d, MTU %d (other hosts: %s)", oid,
                         definition.vni, definition.mtu, ", ".join(others) or "none")
                return definition
        raise StoreContention(f"joining overlay {oid}: its records kept changing")

    def _define(self, oid: OverlayId, mine: Member, *, vni: int | None, mtu: int,
                port: int, encrypted: bool = False) -> tuple[list[Op] | None, Definition]:
        """The ops that define the overlay and take its VNI (None: the VNI chosen was taken
        meanwhile, choose again)."""
        chosen = vni if vni is not None else lowest_free_vni(self._taken_vnis())
        definition = Definition(chosen, mtu, port, attempt=mine.attempt, encrypted=encrypted)
        vni_key = keys.overlay_vni(chosen)
        held = self.store.get(vni_key)
        if held is not None:
            try:
                holder = vni_claim(held)[1]
            except InvalidRecord as exc:
                if vni is None:
                    return None, definition  # taken (by whatever it is): choose again
                raise BadRecord(vni_key, exc.reason) from None
            if vni is not None and holder.network == mine.network:
                # Allocated by a Swarm manager for this very network (allocate_swarm_vni):
                # the claim stays that allocation's, freed by FreeNetwork alone.
                ops = [Op("create", keys.overlay_def(oid.space, oid.subnet),
                          records.dump(definition.to_dict())),
                       Op("cas", vni_key, held.value, held.version)]
                return ops, definition
            if vni is None:
                return None, definition  # taken since the listing: choose again
            if not holder.holds(oid):
                raise Conflict(f"VNI {vni} is already used by "
                               + (f"Swarm network {holder.network[:12]}" if holder.network else
                                  f"overlay {holder.subnet} ({holder.space})")
                               + "; choose another -o vni, or none")
            # This overlay's own claim without a definition: left by a crash. Removed only
            # while there is still no definition (another host may be defining it now).
            self.store.transaction([Op("check_absent", keys.overlay_def(oid.space, oid.subnet)),
                                    Op("delete", vni_key, version=held.version)])
            return None, definition
        claim = records.dump({"space": oid.space, "subnet": oid.subnet, "attempt": mine.attempt})
        ops = [Op("create", keys.overlay_def(oid.space, oid.subnet), records.dump(definition.to_dict())),
               Op("create", vni_key, claim)]
        return ops, definition

    def _taken_vnis(self) -> list[int]:
        taken = []
        for entry in self.store.list(keys.overlay_vnis()):
            try:
                taken.append(vni_of(entry.key))
            except InvalidRecord:
                pass  # not a VNI: takes none
        return taken

    def _drop_stale_definition(self, oid: OverlayId, definition: Definition, entry: Entry) -> None:
        """A definition no host holds (the last one crashed while leaving): it and its VNI
        go, and the joining host defines the overlay afresh."""
        log.warning("overlay %s: removing its definition, which no host holds any more", oid)
        ops = [Op("delete", entry.key, version=entry.version)]
        vni_entry = self.store.get(keys.overlay_vni(definition.vni))
        if vni_entry is not None and _holds(vni_entry, oid):
            ops.append(Op("delete", vni_entry.key, version=vni_entry.version))
        self.store.transaction(ops)

    def _drop_unreadable_definition(self, oid: OverlayId, view: OverlayView, entry: Entry) -> None:
        """An unreadable definition no host holds: it and the overlay's VNI claim go (at the
        versions read), and the joining host defines the overlay afresh."""
        log.warning("overlay %s: removing its unreadable definition %s, which no host holds", oid, entry.key)
        self.store.transaction([Op("delete", entry.key, version=entry.version)] +
                               [Op("delete", e.key, version=e.version) for e in self._own_vni_claims(oid, view)])

    def _undo_join(self, oid: OverlayId, mine: Member):
        member_key = keys.overlay_member(oid.space, oid.subnet, self.host)

        def settle(store: Store) -> None:
            delete_if_unchanged(member_key, records.dump(mine.to_dict()))(store)
            view, entries = self._read(oid)
            if not view.holders() and view.definition is not None and view.definition.attempt == mine.attempt:
                self._drop_stale_definition(oid, view.definition, entries[keys.overlay_def(oid.space, oid.subnet)])
        return settle

    def leave(self, oid: OverlayId, network: str) -> None:
        """Remove this host's member record for `network` and its peers; the last host
        takes the definition and the VNI with it. Absent is fine. This host's own records
        that fail validation go too (they are under its prefix, and it is leaving), and an
        unreadable definition does not keep the last host from removing it."""
        for _ in range(MAX_ATTEMPTS):
            view, entries = self._read(oid)
            peers_prefix = keys.overlay_peers(oid.space, oid.subnet, self.host)
            mine_peers = {keys.overlay_peer(oid.space, oid.subnet, p.host, p.endpoint)
                          for p in view.peers if p.host == self.host and p.network == network}
            mine_peers |= {k for k in view.rejected if k.startswith(peers_prefix)}
            ops = [Op("delete", k, version=entries[k].version) for k in sorted(mine_peers)]
            member_key = keys.overlay_member(oid.space, oid.subnet, self.host)
            mine = view.members.get(self.host)
            if (mine is not None and mine.network == network) or member_key in view.rejected:
                ops.append(Op("delete", member_key, version=entries[member_key].version))
                def_key = keys.overlay_def(oid.space, oid.subnet)
                if not view.holders() - {self.host} and def_key in entries:
                    ops.append(Op("delete", def_key, version=entries[def_key].version))
                    ops += [Op("delete", e.key, version=e.version) for e in self._own_vni_claims(oid, view)]
            if not ops or self.store.transaction(ops):
                return
        raise StoreContention(f"leaving overlay {oid}: its records kept changing")

    def _own_vni_claims(self, oid: OverlayId, view: OverlayView) -> list[Entry]:
        """The overlay's own VNI claim: its definition's, or (definition unreadable) any
        claim that names the overlay."""
        if view.definition is not None:
            entry = self.store.get(keys.overlay_vni(view.definition.vni))
            return [entry] if entry is not None and _holds(entry, oid) else []
        return [e for e in self.store.list(keys.overlay_vnis()) if _holds(e, oid)]

    # --- Swarm: VNIs allocated by a manager (AllocateNetwork / FreeNetwork) ----------
    def swarm_vni(self, network: str) -> int | None:
        """The VNI allocated for Swarm network `network`, if any."""
        return next((vni for vni, holder in self._vni_claims() if holder.get("network") == network), None)

    def allocate_swarm_vni(self, network: str, oid: OverlayId, vni: int | None) -> int:
        """The VNI of Swarm network `network`, claimed cluster-wide (create-if-absent, so
        two managers never get one VNI): the one it already has (a retry, a new leader
        allocating again, or a parallel call of the same allocation), else `vni`, else the
        lowest free from FIRST_SWARM_VNI. Never a VNI some node's overlay definition still
        uses (its network freed while a node had not yet deleted it). A claim that lands
        after the call gave up is removed once the store answers (fenced)."""
        for _ in range(MAX_ATTEMPTS):
            entries = self._vni_entries()
            mine = sorted((v, e) for v, e in entries if _claim(e).get("network") == network)
            if mine:
                found = self._adopt(network, mine, vni)
                if found is not None:
                    return found
                continue
            in_use = self._definition_vnis(network)
            if vni is not None and vni in in_use:
                raise Conflict(f"VNI {vni} is still used by overlay {in_use[vni]}; choose another "
                               "-o vni, or none")
            chosen = vni if vni is not None else lowest_free_vni(
                [v for v, _ in entries] + list(in_use), FIRST_SWARM_VNI)
            key = keys.overlay_vni(chosen)
            value = records.dump({"space": oid.space, "subnet": oid.subnet, "network": network,
                                  "attempt": claim_id()})
            if self.writes.transaction([Op("create", key, value)], delete_if_unchanged(key, value),
                                       f"allocating VNI {chosen} to Swarm network {network[:12]}"):
                log.info("overlay %s: VNI %d allocated to Swarm network %s", oid, chosen, network[:12])
                # Settled like any other found claim: a parallel allocation of this network
                # that chose another VNI from an older listing gives way to the lowest.
                continue
            if vni is not None:
                held = self.store.get(key)
                holder = {} if held is None else _claim(held)
                if held is None or holder.get("network") == network:
                    continue  # gone meanwhile, or this network's own claim from a parallel call
                raise Conflict(f"VNI {vni} is already used by overlay {holder.get('subnet')} "
                               f"({holder.get('space')}); choose another -o vni, or none")
        raise StoreContention(f"allocating a VNI to Swarm network {network[:12]}: other hosts "
                              "kept taking the free one first")

    def _adopt(self, network: str, mine: list[tuple[int, Entry]], vni: int | None) -> int | None:
        """The network's lowest claim, adopted with a new write id (it may be the late landing
        of an attempt that failed, whose settling would otherwise delete it once the fence
        moves); its other claims (parallel calls that listed at different moments) go.
        None: a claim changed meanwhile, read again."""
        chosen, entry = mine[0]
        if vni is not None and vni != chosen:
            raise Conflict(f"Swarm network {network[:12]} already has VNI {chosen}; it asks "
                           f"for VNI {vni}")
        adopted = records.dump({**_claim(entry), "attempt": claim_id()})
        ops = [Op("cas", entry.key, adopted, entry.version)]
        ops += [Op("delete", extra.key, version=extra.version) for _, extra in mine[1:]]
        if self.writes.transaction(ops, lambda _store: None,
                                   f"adopting VNI {chosen} of Swarm network {network[:12]}"):
            return chosen
        return None

    def _definition_vnis(self, network: str) -> dict[int, str]:
        """VNI -> the overlay whose definition uses it, for every definition that is not
        `network`'s own (a node of that very network keeps its VNI)."""
        used: dict[int, str] = {}
        for oid, view in self.views().items():
            if view.definition is None:
                continue
            hosts = sorted(view.members)
            if any(m.network == network for m in view.members.values()):
                continue
            used[view.definition.vni] = (f"{oid}, defined on host {', '.join(hosts)}" if hosts
                                         else f"{oid}, whose definition no host holds yet")
        return used

    def free_swarm_vni(self, network: str) -> int | None:
        """Give back the VNI claim of Swarm network `network` (only that network's claim,
        at the version read). Absent is fine: FreeNetwork may be repeated."""
        for _ in range(MAX_ATTEMPTS):
            entry = next((e for e in self.store.list(keys.overlay_vnis())
                          if _claim(e).get("network") == network), None)
            if entry is None:
                return None
            if self.store.delete(entry.key, entry.version):
                return int(entry.key[len(keys.overlay_vnis()):])
        raise StoreContention(f"freeing the VNI of Swarm network {network[:12]}: its claim kept changing")

    def _vni_claims(self) -> list[tuple[int, dict]]:
        return [(vni, _claim(entry)) for vni, entry in self._vni_entries()]

    def _vni_entries(self) -> list[tuple[int, Entry]]:
        prefix = keys.overlay_vnis()
        return [(int(e.key[len(prefix):]), e) for e in self.store.list(prefix)
                if e.key[len(prefix):].isdigit()]

    # --- peers ---------------------------------------------------------------------
    def publish(self, oid: OverlayId, peer: Peer) -> None:
        """Record one of this host's endpoints (its IP, MAC and VTEP) for the other hosts."""
        key = keys.overlay_peer(oid.space, oid.subnet, self.host, peer.endpoint)
        for _ in range(MAX_ATTEMPTS):
            value = records.dump(replace(peer, attempt=claim_id()).to_dict())
            entry = self.store.get(key)
            op = Op("cas", key, value, entry.version) if entry else Op("create", key, value)
            if self.writes.transaction([op], delete_if_unchanged(key, value),
                                       f"publishing endpoint {peer.endpoint[:12]} on {oid}"):
                return
        raise StoreContention(f"publishing endpoint {peer.endpoint[:12]} on overlay {oid}")

    def withdraw(self, oid: OverlayId, endpoint: str) -> bool:
        key = keys.overlay_peer(oid.space, oid.subnet, self.host, endpoint)
        entry = self.store.get(key)
        return entry is not None and self.store.delete(key, entry.version)

    def withdraw_everywhere(self, endpoint: str) -> None:
        """The endpoint's peer records in whatever overlay (its network's record is gone)."""
        for oid, view in self.views().items():
            if any(p.host == self.host and p.endpoint == endpoint for p in view.peers):
                self.withdraw(oid, endpoint)

    # --- encrypted overlays: this host's WireGuard record and tunnel address -----------
    def wireguard_view(self) -> WireGuardView:
        return parse_wireguard(self.store.list(keys.overlay_all()))

    def claim_tunnel(self, subnet: str) -> str:
        """This host's WireGuard tunnel address: the one it already holds in `subnet` (its
        claim under v1/overlay/tunnels/, found by the claim's host), else the lowest free one,
        claimed create-if-absent (two hosts racing for one address: one wins, the other takes
        the next). A late claim after a give-up is removed once the store answers (fenced)."""
        import ipaddress

        from .tunnels import first_free_address
        net = ipaddress.IPv4Network(subnet)
        for _ in range(MAX_ATTEMPTS):
            view = self.wireguard_view()
            mine = sorted((c for c in view.claims.values()
                           if c.host == self.host and ipaddress.IPv4Address(c.address) in net),
                          key=lambda c: ipaddress.IPv4Address(c.address))
            if mine:
                return mine[0].address
            taken = list(view.claims)
            # Keys that are not readable claims still take their address.
            taken += [e.key[len(keys.overlay_tunnels()):] for e in self.store.list(keys.overlay_tunnels())]
            address = first_free_address(subnet, taken)
            if address is None:
                raise Conflict(f"--wireguard-subnet {subnet} has no tunnel address left for host "
                               f"{self.host}: every one is claimed (v1/overlay/tunnels/)")
            key = keys.overlay_tunnel(address)
            value = records.dump({"host": self.host, "attempt": claim_id()})
            if self.writes.transaction([Op("create", key, value)], delete_if_unchanged(key, value),
                                       f"claiming WireGuard tunnel address {address}"):
                log.info("overlay: WireGuard tunnel address %s claimed for this host", address)
                return address
        raise StoreContention(f"claiming a WireGuard tunnel address in {subnet}: other hosts kept "
                              "taking the free one first")

    def publish_wireguard(self, record: WireGuardHost) -> None:
        """This host's WireGuard record (public key, endpoint, tunnel address), under its own
        prefix; written again only when it changed."""
        key = keys.overlay_wireguard(self.host)
        for _ in range(MAX_ATTEMPTS):
            entry = self.store.get(key)
            if entry is not None:
                try:
                    if replace(WireGuardHost.from_dict(load_record(entry)), attempt="") == replace(record, attempt=""):
                        return
                except InvalidRecord:
                    pass  # this host's own bad record: written over
            value = records.dump(replace(record, attempt=claim_id()).to_dict())
            op = Op("cas", key, value, entry.version) if entry else Op("create", key, value)
            if self.writes.transaction([op], delete_if_unchanged(key, value),
                                       "publishing this host's WireGuard record"):
                return
        raise StoreContention("publishing this host's WireGuard record: it kept changing")

    def retire_wireguard(self) -> None:
        """This host left its last encrypted overlay: its WireGuard record and its tunnel
        address claims go (each at the version read). Absent is fine."""
        for _ in range(MAX_ATTEMPTS):
            ops = []
            entry = self.store.get(keys.overlay_wireguard(self.host))
            if entry is not None:
                ops.append(Op("delete", entry.key, version=entry.version))
            for claim in self.store.list(keys.overlay_tunnels()):
                try:
                    held = TunnelClaim.from_dict(claim.key[len(keys.overlay_tunnels()):], load_record(claim))
                except InvalidRecord:
                    continue
                if held.host == self.host:
                    ops.append(Op("delete", claim.key, version=claim.version))
            if not ops or self.store.transaction(ops):
                return
        raise StoreContention("removing this host's WireGuard record: it kept changing")

    # --- liveness ------------------------------------------------------------------
    def beat(self) -> None:
        """Move this host's heartbeat on (only its version matters to the others)."""
        records.update(self.store, keys.overlay_alive(self.host),
                       lambda _: {"host": self.host, "beat": claim_id()}, "overlay heartbeat")

    def retire_beat(self) -> None:
        self.store.delete(keys.overlay_alive(self.host))

    # --- the layout before host-owned keys -----------------------------------------
    def drop_legacy_records(self) -> int:
        """Delete this host's member and peer records of the old layout (each at the version
        read); other hosts' are theirs to delete. Restore re-published them in the new one."""
        dropped = 0
        for entry in self.store.list(keys.overlay_nets()):
            parsed = keys.parse_overlay_key(entry.key)
            if parsed is not None and parsed.kind in (keys.LEGACY_MEMBER, keys.LEGACY_PEER) \
                    and parsed.host == self.host and self.store.delete(entry.key, entry.version):
                dropped += 1
        if dropped:
            log.info("overlay: removed %d record(s) of this host in the old key layout", dropped)
        return dropped


def _claim(entry: Entry) -> dict:
    """A VNI claim's fields; {} for a value that is not a JSON object (it names no network,
    and its key still takes the VNI)."""
    try:
        data = records.checked_load(entry)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _holds(vni_entry: Entry, oid: OverlayId) -> bool:
    """Whether the VNI claim is the overlay's own (made by its first host's join). A Swarm
    manager's claim (it names its network) is never: FreeNetwork alone gives it back. An
    unreadable claim is nobody's: left alone."""
    try:
        return vni_claim(vni_entry)[1].holds(oid)
    except InvalidRecord:
        return False

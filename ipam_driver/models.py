"""What IPAM keeps in the store, typed, and the one way it becomes JSON and back.

v1/ipam/spaces/<space>  AddressSpace  {"pools": {cidr: {"subpool", "holders", "holds", "block"}}, "chosen"}
v1/ipam/addrs/...       AddressClaim  {"kind", "name", "host", "claim"} (+ "holders": gateways)
v1/ipam/blocks/...      BlockClaim    {"host", "claim"}
(The host fence, v1/ipam/fences/<host>, is the core's: pynet_core/store/fenced.py.)

Existing stores keep working: a field older pynet versions did not write ("block", "claim", "holds")
is optional on read and is not written back when it was absent, so a record read and
written again holds exactly the keys it held. Pure: no I/O besides the store passed in.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, Self, TypeVar

from pynet_core.errors import BadRecord, Conflict, StoreContention
from pynet_core.record_fields import Fields, is_count
from pynet_core.store import bad_records, keys, records
from pynet_core.store.api import Entry, Store

from .allocator import Address, Network

GATEWAY, ENDPOINT, AUX = "gateway", "endpoint", "aux"  # what an address claim is for
KINDS = (GATEWAY, ENDPOINT, AUX)


class Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: Mapping) -> Self: ...


R = TypeVar("R", bound=Record)


# --- the one serialisation path ---------------------------------------------------------
def encode(record: Record) -> str:
    """The stored text of a record: compact JSON with sorted keys (pynet_core.store.records.dump)."""
    return records.dump(record.to_dict())


def decode(cls: type[R], entry: Entry) -> R:
    """The record stored at entry, every field checked once, here; BadRecord (a ValueError)
    naming the key and the reason when it is not a record of that type (not UTF-8, not
    JSON, wrong types, bad CIDRs or addresses). Where a list is read, callers skip such a
    record (pynet_core/store/bad_records.py); a call that needs this very record answers it."""
    if cls is AddressSpace:
        hit = _spaces.get(entry.key)
        if hit is not None and hit[0] == entry.value:
            return hit[1]  # type: ignore[return-value]
        space = from_json(cls, records.checked_load(entry), entry.key)
        remember(entry.key, entry.value, space)  # type: ignore[arg-type]
        return space
    return from_json(cls, records.checked_load(entry), entry.key)


# The last AddressSpace read or written per key, with its stored text. A space holds every
# pool, so decoding it made each RequestPool and RequestAddress grow with the number of
# networks (issue 22); the same text is the same (immutable) record, any other text is
# decoded and checked as before. Two spaces exist; the bound only guards odd keys.
_spaces: dict[str, tuple[str, "AddressSpace"]] = {}
_SPACES_MAX = 16


def remember(key: str, text: str, space: "AddressSpace") -> None:
    """Note that `text` at `key` is `space` (what this process just wrote or decoded)."""
    if key not in _spaces and len(_spaces) >= _SPACES_MAX:
        _spaces.clear()
    _spaces[key] = (text, space)


def from_json(cls: type[R], data: Any, key: str = "?") -> R:
    """cls.from_dict, with any malformation reported as BadRecord naming key."""
    if not isinstance(data, dict):
        raise BadRecord(key, f"expected a JSON object, got {type(data).__name__}")
    try:
        return cls.from_dict(data)
    except BadRecord:
        raise
    except KeyError as exc:
        raise BadRecord(key, f"missing field {exc}") from None
    except (TypeError, AttributeError, ValueError) as exc:
        raise BadRecord(key, f"{cls.__name__}: {exc}") from None


def readable(entries: list[Entry], cls: type[R], kind: str) -> list[tuple[Entry, R]]:
    """(entry, record) for every entry that is a good record of cls; the others skipped,
    logged once per key and version, and counted."""
    found = []
    for entry in entries:
        try:
            found.append((entry, decode(cls, entry)))
        except BadRecord as exc:
            bad_records.skipped(entry, exc.reason, kind)
    return found


def read(store: Store, key: str, cls: type[R]) -> R | None:
    entry = store.get(key)
    return None if entry is None else decode(cls, entry)


def update(store: Any, key: str, cls: type[R], mutate: Callable[[R | None], R | None],
           what: str) -> R | None:
    """records.update on typed records: mutate(current) -> new (None: delete the key) until
    the write wins a CAS; returns the record written. BadRecord when the current record is
    not one: it is never written over blindly. The current record is read through decode
    (an AddressSpace unchanged since this process last read or wrote it is not decoded
    again), and the record written is mutate's own, not decoded back from its text."""
    try:
        for _ in range(records.MAX_ATTEMPTS):
            entry = store.get(key)
            new = mutate(None if entry is None else decode(cls, entry))
            if new is None:
                if entry is None or store.delete(key, entry.version):
                    return None
                continue
            text = encode(new)
            if store.create(key, text) if entry is None else store.cas(key, text, entry.version):
                if isinstance(new, AddressSpace):
                    remember(key, text, new)
                return new
    except BadRecord:
        raise
    except ValueError as exc:  # as records.update's own load said it: not JSON
        raise BadRecord(key, f"its value is not JSON ({exc})") from None
    raise StoreContention(f"gave up {what}: {records.MAX_ATTEMPTS} concurrent writers changed "
                          f"{key} first")


def claimed_ip(entry: Entry) -> Address:
    """The address an address claim's key names (its last level); BadRecord if it names none."""
    return claim_key(entry)[2]


def claim_key(entry: Entry) -> tuple[str, Network, Address]:
    """(space, pool, address) an address claim's key names; BadRecord for a key pynet never
    writes (another client's), so it is skipped like a bad value."""
    try:
        space, pool, ip = keys.claimed_address_parts(entry.key)
        network, address = ipaddress.ip_network(pool), ipaddress.ip_address(ip)
    except ValueError:
        raise BadRecord(entry.key, "its key names no address of a pool") from None
    if address not in network:
        raise BadRecord(entry.key, f"address {address} is not in pool {network}")
    return space, network, address


# --- field checks: a wrong type is a TypeError, a missing field a KeyError, which from_json
# names (pynet_core/record_fields.py) ---------------------------------------------------------
FIELDS = Fields(missing=KeyError, type_error=TypeError)


def _text(data: Mapping, name: str) -> str:
    return FIELDS.text(data, name, got=repr)


def _optional_text(data: Mapping, name: str) -> str | None:
    return FIELDS.text(data, name, None, optional=True, got=repr)


def _mapping(value: Any, name: str) -> Mapping:
    return FIELDS.object(value, name)


def _cidr(text: Any, name: str) -> Network:
    """A canonical CIDR (as pynet writes them): ValueError naming the field otherwise."""
    return FIELDS.parsed(text, name, ipaddress.ip_network, "a subnet (CIDR without host bits)",
                         expected="be a CIDR string")


# --- address spaces and their pools ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class PoolEntry:
    """One pool of an address space: its IP range, the hosts holding it and the addresses
    per host block. A host holds a pool once per network using it.

    holders counts every hold per host (what older pynet versions read and write); holds
    names each hold made since hold ids exist (hold id -> host), so a release removes
    exactly its own hold and a repeated release removes nothing. A host's holds without an
    id (made before) are its count minus its named holds."""
    subpool: Network | None
    holders: Mapping[str, int]
    # None: recorded before pools had a block size; the host's --ipam-block-size applies.
    block: int | None = None
    # None: recorded before hold ids (and not written back, so the record stays as it was).
    holds: Mapping[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"subpool": str(self.subpool) if self.subpool else None,
                                "holders": dict(self.holders)}
        if self.block is not None:
            data["block"] = self.block
        if self.holds is not None:
            data["holds"] = dict(self.holds)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "PoolEntry":
        sub = _optional_text(data, "subpool")
        holders = _mapping({} if data.get("holders") is None else data["holders"], "holders")
        if not all(isinstance(h, str) and is_count(n) for h, n in holders.items()):
            raise FIELDS.wrong_type("holders", "map hosts to counts", holders)
        block = data.get("block")
        if block is not None and not is_count(block):  # 0: no blocks
            raise FIELDS.wrong_type("block", "be a number of addresses", block)
        holds = data.get("holds")
        if holds is not None and not (isinstance(holds, dict) and all(
                isinstance(i, str) and isinstance(h, str) for i, h in holds.items())):
            raise FIELDS.wrong_type("holds", "map hold ids to hosts", holds, got=repr)
        return cls(_cidr(sub, "subpool") if sub else None, dict(holders), block,
                   None if holds is None else dict(holds))

    def held_by(self, host: str) -> bool:
        return self.holders.get(host, 0) > 0 or host in (self.holds or {}).values()

    def hold_ids(self, host: str) -> frozenset[str]:
        """The named holds of host."""
        return frozenset(i for i, h in (self.holds or {}).items() if h == host)

    def unnamed_holds(self, host: str) -> int:
        """How many of host's holds were made before hold ids (they have no name)."""
        return max(0, self.holders.get(host, 0) - len(self.hold_ids(host)))

    def with_hold(self, host: str, hold: str) -> "PoolEntry":
        return replace(self, holders={**self.holders, host: self.holders.get(host, 0) + 1},
                       holds={**(self.holds or {}), hold: host})

    def without_hold(self, hold: str) -> "PoolEntry | None":
        """This pool without the named hold (unchanged if it has no such hold: a replay);
        None once nobody holds the pool."""
        holds = dict(self.holds or {})
        host = holds.pop(hold, None)
        if host is None:
            return self
        return self._counted_down(host, holds)

    def without_unnamed_hold(self, host: str) -> "PoolEntry | None":
        """One of host's holds made before hold ids fewer (unchanged if it has none left)."""
        if self.unnamed_holds(host) == 0:
            return self
        return self._counted_down(host, dict(self.holds or {}) if self.holds is not None else None)

    def _counted_down(self, host: str, holds: dict[str, str] | None) -> "PoolEntry | None":
        holders = dict(self.holders)
        holders[host] = holders.get(host, 0) - 1
        if holders[host] <= 0:
            del holders[host]
        if not holders and not holds:
            return None
        return replace(self, holders=holders, holds=holds)

    def by(self) -> str:
        """' on host a, b' naming the holders, for error texts."""
        hosts = set(self.holders) | set((self.holds or {}).values())
        return f" on host {', '.join(sorted(hosts))}" if hosts else ""


@dataclass(frozen=True, slots=True)
class AddressSpace:
    """The pools of one address space, as one CAS'd record keyed by pool CIDR."""
    pools: Mapping[Network, PoolEntry]
    # The pool the last RequestPool chose, which older pynet versions read back from the
    # record they had just written. Read from existing stores, never written any more: each
    # hold is named now, and a late RequestPool undone must leave the record as it was.
    chosen: Network | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"pools": {str(n): p.to_dict() for n, p in self.pools.items()}}
        if self.chosen is not None:
            data["chosen"] = str(self.chosen)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "AddressSpace":
        pools = {} if data.get("pools") is None else data["pools"]
        chosen = _optional_text(data, "chosen")
        parsed = {}
        for cidr, p in _mapping(pools, "pools").items():
            pool, entry = _cidr(cidr, "pools"), PoolEntry.from_dict(_mapping(p, cidr))
            if entry.subpool is not None and (entry.subpool.version != pool.version
                                              or not entry.subpool.subnet_of(pool)):
                raise ValueError(f"pool {cidr}: its IP range {entry.subpool} is not inside it")
            parsed[pool] = entry
        return cls(parsed, _cidr(chosen, "chosen") if chosen else None)

    def holding(self, chosen: Network, sub: Network | None, host: str, block: int,
                exclusive: bool, hold: str) -> "AddressSpace":
        """This space with host holding chosen (made with sub and block when new) under the
        hold id `hold`. Conflict if that overlaps another
        pool or redefines this one, or (exclusive) host holds it already."""
        existing = self.pools.get(chosen)
        if existing is None:
            for other, entry in self.pools.items():
                if other.overlaps(chosen):
                    raise Conflict(f"subnet {chosen} overlaps pool {other}, already in use"
                                   f"{entry.by()}")
            # The block size is fixed when the pool is made, so every host cuts the same blocks.
            existing = PoolEntry(sub, {}, block)
        else:
            if existing.subpool != sub:
                raise Conflict(f"subnet {chosen} is already defined with IP range "
                               f"{existing.subpool or 'the whole subnet'}; this request asks for "
                               f"{sub or 'the whole subnet'}")
            if exclusive and existing.held_by(host):
                raise Conflict(f"subnet {chosen} is already used by another network on this host "
                               f"({host})")
        return AddressSpace({**self.pools, chosen: existing.with_hold(host, hold)})

    def releasing(self, pool: Network, hold: str | None, host: str) -> "AddressSpace":
        """This space without the hold named `hold` on pool (hold None: one of host's holds
        made before hold ids); the pool goes with its last hold. Unchanged holds (a replay)
        leave the pool as it is."""
        pools = dict(self.pools)
        entry = pools.pop(pool)
        left = entry.without_hold(hold) if hold is not None else entry.without_unnamed_hold(host)
        if left is not None:
            pools[pool] = left
        return AddressSpace(pools)


# --- claims -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AddressClaim:
    """Who owns one address. A gateway is shared by every host on the pool: holders."""
    kind: str
    name: str
    host: str
    # A random id making every value unique, so a claim left in doubt is known for ours.
    # None: claimed before pynet wrote ids.
    claim: str | None = None
    holders: tuple[str, ...] | None = None
    # The pool hold (PoolID) it was claimed under; None: before pynet recorded it.
    hold: str | None = None

    @classmethod
    def new(cls, kind: str, name: str, host: str, claim: str, hold: str | None = None) -> "AddressClaim":
        return cls(kind, name, host, claim, (host,) if kind == GATEWAY else None, hold)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "name": self.name, "host": self.host}
        if self.claim is not None:
            data["claim"] = self.claim
        if self.holders is not None:
            data["holders"] = list(self.holders)
        if self.hold is not None:
            data["hold"] = self.hold
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "AddressClaim":
        kind = _text(data, "kind")
        if kind not in KINDS:
            raise FIELDS.wrong_type("kind", f"be one of {', '.join(KINDS)}", kind, got=repr)
        holders = data.get("holders")
        if holders is not None and not (isinstance(holders, list)
                                        and all(isinstance(h, str) for h in holders)):
            raise FIELDS.wrong_type("holders", "be a list of hosts", holders)
        return cls(kind, _text(data, "name"), _text(data, "host"), _optional_text(data, "claim"),
                   None if holders is None else tuple(holders), _optional_text(data, "hold"))

    @property
    def gateway(self) -> bool:
        return self.kind == GATEWAY

    def same_owner(self, other: "AddressClaim") -> bool:
        """Whether other is this claim asked for again (the same named container)."""
        return bool(other.name) and (other.kind, other.name, other.host) == (
            self.kind, self.name, self.host)

    def restored_by(self, other: "AddressClaim") -> bool:
        """Whether `other`, a request for this claim's address in the global (Swarm) space,
        is a Swarm allocator restoring its own state: a new leader, or a restarted manager,
        asks again for every address its raft log assigned, under the hold of the pool it
        has just requested anew. The same hold asking for a taken address is a conflict."""
        return (not self.gateway and not other.gateway and self.hold is not None
                and other.hold is not None and self.hold != other.hold)

    def joined_by(self, host: str) -> "AddressClaim":
        """A gateway with host among its holders."""
        return replace(self, holders=tuple(sorted(set(self.holders or ()) | {host})))

    def freed_by(self, host: str) -> "AddressClaim | None":
        """The claim once host lets go of it: None (delete it), or a gateway others hold."""
        if not self.gateway:
            return None
        holders = tuple(h for h in self.holders or () if h != host)
        return replace(self, holders=holders) if holders else None

    def describe(self) -> str:
        if self.kind == ENDPOINT:
            return f"container {self.name!r} on host {self.host}"
        if self.kind == GATEWAY:
            return "the network's gateway"
        return f"an auxiliary address reserved on host {self.host}"


@dataclass(frozen=True, slots=True)
class BlockClaim:
    """A host's address block in a pool (a hint; see blocks.py)."""
    host: str
    claim: str

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "claim": self.claim}

    @classmethod
    def from_dict(cls, data: Mapping) -> "BlockClaim":
        return cls(_text(data, "host"), _text(data, "claim"))

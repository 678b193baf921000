"""The name table: which addresses a name has for a given asker (pure).

A record says: container C (id), called NAME (and ALIASES), has ADDRESS(es) on network N
(id and name), on HOST. The rules (issue 21):
- a question is answered only from the records of networks the asking container shares;
  a name held only on other networks is "not mine" (forwarded), so a network's names do not
  leak to another network, not even as NXDOMAIN;
- a name is the container name, each alias, and each of those as NAME.NETWORK, where
  NETWORK is the network's name; an exact name wins over a NAME.NETWORK reading of it
  (container names and network names may both hold dots);
- several records answering one name (a Compose service on two hosts) give every address,
  in an order that rotates by one on each question for that name;
- A gives the IPv4 addresses, AAAA the IPv6 ones; a name of ours asked for another type,
  or for a family it has no address of, is an empty answer (NODATA): it is ours, so
  forwarding it would only leak it upstream;
- everything else is "not mine": the caller forwards it.

Names compare case-insensitively, without the final dot. The table is built once from a
list of records and not changed: a new list makes a new table (the server swaps it).
"""
from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Optional, Union

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
Address = Union[IPv4, IPv6]

A, AAAA, OTHER = "A", "AAAA", "OTHER"

# A DNS name: labels of 1..63 bytes, 253 characters in all. Docker allows [a-zA-Z0-9_.-]
# in container names and aliases; anything else is not a name we could answer.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
MAX_NAME = 253


def normal(name: str) -> Optional[str]:
    """`name` lowercased without its final dot, or None when it is no valid DNS name."""
    if not isinstance(name, str):
        return None
    text = name.lower()
    if text.endswith("."):
        text = text[:-1]
    if not text or len(text) > MAX_NAME:
        return None
    if not all(_LABEL.fullmatch(label) for label in text.split(".")):
        return None
    return text


@dataclass(frozen=True)
class NameRecord:
    """One container's endpoint on one network, as the names see it."""
    container: str                      # container id
    name: str                           # container name (without Docker's leading "/")
    network: str                        # network id
    network_name: str                   # the network's name, for NAME.NETWORK
    host: str                           # the host whose record this is
    ipv4: Optional[IPv4] = None
    ipv6: Optional[IPv6] = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for label, value in (("container", self.container), ("network", self.network),
                             ("host", self.host)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{label!r} must be a non-empty string, got {value!r:.60}")
        if normal(self.name.lstrip("/")) is None:
            raise ValueError(f"'name' is not a DNS name: {self.name!r:.80}")
        if self.ipv4 is not None and not isinstance(self.ipv4, IPv4):
            raise ValueError(f"'ipv4' must be an IPv4 address, got {self.ipv4!r:.60}")
        if self.ipv6 is not None and not isinstance(self.ipv6, IPv6):
            raise ValueError(f"'ipv6' must be an IPv6 address, got {self.ipv6!r:.60}")
        if not isinstance(self.aliases, tuple):
            raise ValueError("'aliases' must be a tuple")

    def names(self) -> set[str]:
        """Every name this record answers to on its own network (bad aliases skipped)."""
        found = {normal(self.name.lstrip("/"))}
        found |= {normal(alias) for alias in self.aliases}
        found.discard(None)
        return found  # type: ignore[return-value]


@dataclass(frozen=True)
class Answer:
    """The table's word on a question: `mine` False means forward it; True means answer
    with `addresses` (empty: NODATA), or for a reverse question with `names`."""
    mine: bool
    addresses: tuple[Address, ...] = ()
    names: tuple[str, ...] = ()


NOT_MINE = Answer(False)


@dataclass
class NameTable:
    records: tuple[NameRecord, ...] = ()
    # (network id, name) -> records; network id -> its names (as NAME.NETWORK suffixes)
    _by_name: dict[tuple[str, str], list[NameRecord]] = field(default_factory=dict, repr=False)
    _net_names: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _by_address: dict[Address, set[str]] = field(default_factory=dict, repr=False)
    _networks_of: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _turns: dict[tuple[str, str, str], "itertools.count[int]"] = field(default_factory=dict,
                                                                      repr=False)

    def __post_init__(self) -> None:
        self.records = tuple(self.records)
        self._by_ip: dict[Address, list[NameRecord]] = {}
        for record in self.records:
            for address in (record.ipv4, record.ipv6):
                if address is not None:
                    self._by_ip.setdefault(address, []).append(record)
            for name in record.names():
                self._by_name.setdefault((record.network, name), []).append(record)
            net_name = normal(record.network_name)
            if net_name is not None:
                self._net_names.setdefault(record.network, set()).add(net_name)
            for address in (record.ipv4, record.ipv6):
                if address is not None:
                    self._by_address.setdefault(address, set()).add(record.container)
            self._networks_of.setdefault(record.container, set()).add(record.network)
        for found in self._by_name.values():
            found.sort(key=lambda r: (r.host, r.container))

    @classmethod
    def of(cls, records: Iterable[NameRecord]) -> "NameTable":
        return cls(tuple(records))

    def __len__(self) -> int:
        return len(self.records)

    # --- who is asking ---------------------------------------------------------------
    def networks_of(self, address: Address) -> frozenset[str]:
        """The networks of the container that holds `address`; empty when no container or
        more than one does (an address reused on two networks names no single asker)."""
        holders = self._by_address.get(address, set())
        if len(holders) != 1:
            return frozenset()
        (container,) = holders
        return frozenset(self._networks_of.get(container, ()))

    # --- answering -------------------------------------------------------------------
    def answer(self, qname: str, qtype: str, networks: Collection[str]) -> Answer:
        """What to answer `qname` (type "A", "AAAA" or anything else) asked by a container
        on `networks`."""
        name = normal(qname)
        if name is None or not networks:
            return NOT_MINE
        shared = sorted(set(networks))
        found: list[NameRecord] = []
        key = ""
        for net in shared:
            found += self._by_name.get((net, name), ())
        if found:
            key = "*"
        else:
            for net in shared:
                for net_name in self._net_names.get(net, ()):
                    if name.endswith("." + net_name):
                        short = name[: -len(net_name) - 1]
                        found += self._by_name.get((net, short), ())
                        key = net
        if not found:
            return NOT_MINE
        if qtype == A:
            addresses = _unique(r.ipv4 for r in found)
        elif qtype == AAAA:
            addresses = _unique(r.ipv6 for r in found)
        else:
            return Answer(True)
        if len(addresses) > 1:
            turn = self._turn((name, qtype, key + "|" + ",".join(shared)))
            k = turn % len(addresses)
            addresses = addresses[k:] + addresses[:k]
        return Answer(True, tuple(addresses))

    def reverse(self, address: Address, networks: Collection[str]) -> Answer:
        """A PTR question for `address` asked by a container on `networks`: the names
        (NAME.NETWORK, as Docker's own DNS answers, or NAME) of the containers holding it on a
        network the asker shares; not mine otherwise (forwarded like any reverse name)."""
        shared = set(networks)
        found = sorted({_reverse_name(r) for r in self._by_ip.get(address, ())
                        if r.network in shared} - {None})
        return Answer(True, names=tuple(found)) if found else NOT_MINE

    def _turn(self, key: tuple[str, str, str]) -> int:
        # Keys are names of this table asked by askers of it: bounded by the table, never
        # by what strangers ask. next() on itertools.count is atomic under the GIL.
        counter = self._turns.get(key)
        if counter is None:
            counter = self._turns.setdefault(key, itertools.count())
        return next(counter)


def _reverse_name(record: NameRecord) -> Optional[str]:
    name = normal(record.name.lstrip("/"))
    net = normal(record.network_name)
    if name is None:
        return None
    full = f"{name}.{net}" if net else name
    return full if normal(full) is not None else name


def _unique(addresses: Iterable[Optional[Address]]) -> list[Address]:
    seen: dict[Address, None] = {}
    for address in addresses:
        if address is not None:
            seen.setdefault(address, None)
    return list(seen)

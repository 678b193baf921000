"""The store contract every backend honours (embedded sqlite, Consul, in-memory).

Correctness of allocation rests only on these primitives: create-if-absent and
compare-and-set on a per-key version. Nothing here is a lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: str
    # Monotonic per store: a write gives the key a version greater than any before.
    version: int


@dataclass(frozen=True, slots=True)
class Op:
    """One step of an all-or-nothing transaction.

    verb: "create" (key must be absent), "cas" (key must be at `version`),
    "delete" (key must be at `version`, or any version when version is None),
    "check_absent", "check_version".
    """
    verb: str
    key: str
    value: str = ""
    version: int | None = None


class Store(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def list(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with prefix, sorted by key."""

    def create(self, key: str, value: str) -> bool:
        """Write key only if it does not exist. False when it already exists."""

    def cas(self, key: str, value: str, version: int) -> bool:
        """Replace key only if its version is still `version`. False otherwise."""

    def delete(self, key: str, version: int | None = None) -> bool:
        """Delete key (only at `version` if given). False if absent or version moved."""

    def transaction(self, ops: list[Op]) -> bool:
        """Apply ops atomically. False (and nothing written) if any check fails."""

    def watch(self, prefix: str, since: int, timeout: float) -> int:
        """Block until something under prefix may have changed after index `since`, or
        timeout passes; returns the index to pass as `since` next time. It may return
        early (a change elsewhere): callers re-read, never trust a wake-up alone."""

    def close(self) -> None: ...


class TransactionStore:
    """The single-key writes of the contract, spelled as one-step transactions: a backend
    that implements `transaction` (and the reads) inherits create, cas and delete."""

    def transaction(self, ops: list[Op]) -> bool:
        raise NotImplementedError

    def create(self, key: str, value: str) -> bool:
        return self.transaction([Op("create", key, value)])

    def cas(self, key: str, value: str, version: int) -> bool:
        return self.transaction([Op("cas", key, value, version)])

    def delete(self, key: str, version: int | None = None) -> bool:
        return self.transaction([Op("delete", key, version=version)])


WRITE_VERBS = ("create", "cas", "delete")


def op_applies(current: Entry | None, op: Op) -> bool:
    """Whether `op` may apply to the key's current entry (shared by the local backends)."""
    if op.verb in ("create", "check_absent"):
        return current is None
    if op.verb in ("cas", "check_version"):
        return current is not None and current.version == op.version
    if op.verb == "delete":
        return current is not None and (op.version is None or current.version == op.version)
    raise ValueError(f"unknown store operation {op.verb!r}")

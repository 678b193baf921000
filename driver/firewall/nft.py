"""Talk to nftables in-process, through libnftables (libnftables.so.1) and pynet's own small
ctypes adapter over it (libnftables.py; no Python binding from the distribution needed).

One context is made per Nft and kept: its netlink socket belongs to the network namespace
it was opened in (a throwaway namespace in the kernel tests, entered only while the context
is made), and its cache of the ruleset is reused while nothing else changed the kernel's.
No process is started per change: an element added costs a fraction of a millisecond
instead of a fork and exec of `nft`. libnftables is not thread-safe, so each context is
used under its own lock. Every apply() is one nft transaction: all of it or nothing.
"""
from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

from .forward_accept import FirewallError
from .libnftables import Libnftables, LibnftablesUnavailable
from .nft_rules import FAMILY, TABLE

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class Context(Protocol):
    """What pynet uses of a libnftables context (libnftables.Libnftables; tests may hand in
    a fake)."""
    def cmd(self, cmdline: str) -> tuple[int, str, str]: ...
    def json_cmd(self, json_root: dict) -> tuple[int, Any, str]: ...


def libnftables_context() -> Context:
    try:
        return Libnftables()
    except LibnftablesUnavailable as exc:
        raise FirewallError(str(exc)) from None


class Nft:
    def __init__(self, netns: str | None = None, *,
                 context: Callable[[], Context] = libnftables_context) -> None:
        # netns: work in that network namespace (kernel tests) instead of this one.
        with _entered(netns):
            self._ctx = context()
        self.netns = netns
        self._lock = threading.Lock()

    def apply(self, script: str) -> None:
        """Run one transaction: all of it is applied, or none (nft's batches are atomic)."""
        with self._lock:
            rc, _, err = self._ctx.cmd(script)
        if rc != 0:
            raise FirewallError(f"nft refused pynet's rules: {err.strip() or rc}")

    def text(self, what: str = f"table {FAMILY} {TABLE}") -> str:
        """`nft list WHAT` (default: the table, for people and golden files); empty if absent."""
        with self._lock:
            rc, out, _ = self._ctx.cmd(f"list {what}")
        return out if rc == 0 else ""

    def json(self, what: str) -> list[dict[str, Any]]:
        """`nft -j list WHAT` as objects (no metainfo); empty if absent."""
        with self._lock:
            rc, out, _ = self._ctx.json_cmd({"nftables": [{"list": _json_target(what)}]})
        if rc != 0 or not out:
            return []
        return [o for o in out["nftables"] if "metainfo" not in o]


def _json_target(what: str) -> dict[str, Any]:
    kind, family, table, *name = what.split()
    target: dict[str, Any] = {"family": family, ("table" if name else "name"): table}
    if name:
        target["name"] = name[0]
    return {kind: target}


@contextmanager
def _entered(netns: str | None) -> Iterator[None]:
    """Run the block in network namespace NETNS (this thread only), then come back."""
    if netns is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise FirewallError(f"cannot enter network namespace {netns}: "
                                    f"{os.strerror(ctypes.get_errno())}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise FirewallError("cannot return to the plugin's network namespace: "
                                    f"{os.strerror(ctypes.get_errno())}")
    finally:
        os.close(own)

"""Network types: one module per `-o type=`, each implementing base.NetworkKind.

A new type is its module plus its line below and its name in options.IMPLEMENTED_TYPES
(tests/unit/test_app_wiring.py checks that the two agree)."""
from __future__ import annotations

from .base import NetworkKind
from .bridge import BridgeKind
from .macvlan import MacvlanKind


def build_kinds(netlink, firewall) -> dict[str, NetworkKind]:
    """The kind serving each network type; options.IMPLEMENTED_TYPES must match the keys."""
    return {"bridge": BridgeKind(netlink, firewall), "macvlan": MacvlanKind(netlink)}

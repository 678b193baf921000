"""Network types. Each module implements kinds.base.NetworkKind for one `-o type=`."""
from __future__ import annotations

from .base import NetworkKind
from .bridge import BridgeKind
from .macvlan import MacvlanKind


def build_kinds(netlink, firewall) -> dict[str, NetworkKind]:
    """The kind serving each network type; options.IMPLEMENTED_TYPES must match the keys."""
    return {"bridge": BridgeKind(netlink, firewall), "macvlan": MacvlanKind(netlink)}

"""Network types: one module per `-o type=`, each implementing base.NetworkKind.

A new type is its module plus its line below and its name in options.IMPLEMENTED_TYPES
(tests/unit/test_app_wiring.py checks that the two agree). The overlay kind needs its
runtime (the composition root always builds one; with the local store the kind refuses
`-o type=overlay`, saying that overlay networks need --store consul)."""
from __future__ import annotations

from driver.kinds.overlay.runtime import OverlayRuntime

from .base import NetworkKind
from .bridge import BridgeKind
from .macvlan.kind import MacvlanKind
from .overlay.kind import OverlayKind, PoolOrigin


def build_kinds(netlink, firewall, overlay: OverlayRuntime | None = None,
                pool_origin: PoolOrigin | None = None) -> dict[str, NetworkKind]:
    """The kind serving each network type; options.IMPLEMENTED_TYPES must match the keys
    when `overlay` is given (the composition root always gives it). `pool_origin`: whether
    this host's pynet IPAM gave out a pool (the overlay kind refuses pools it did not)."""
    kinds: dict[str, NetworkKind] = {"bridge": BridgeKind(netlink, firewall), "macvlan": MacvlanKind(netlink)}
    if overlay is not None:
        kinds["overlay"] = OverlayKind(netlink, overlay, pool_origin)
    return kinds

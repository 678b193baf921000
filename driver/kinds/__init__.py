"""Network types: one module per `-o type=`, each implementing base.NetworkKind.

A new type is its module plus its line below and its name in options.IMPLEMENTED_TYPES
(tests/unit/test_app_wiring.py checks that the two agree). The overlay kind is served only
when the composition root is given its runtime (tests, until issue 10 is done); without it
`-o type=overlay` keeps today's refusal."""
from __future__ import annotations

from driver.overlay.runtime import OverlayRuntime

from .base import NetworkKind
from .bridge import BridgeKind
from .macvlan import MacvlanKind
from .overlay import OverlayKind


def build_kinds(netlink, firewall, overlay: OverlayRuntime | None = None) -> dict[str, NetworkKind]:
    """The kind serving each network type; options.IMPLEMENTED_TYPES must match the keys
    (overlay aside, see above)."""
    kinds: dict[str, NetworkKind] = {"bridge": BridgeKind(netlink, firewall), "macvlan": MacvlanKind(netlink)}
    if overlay is not None:
        kinds["overlay"] = OverlayKind(netlink, overlay)
    return kinds

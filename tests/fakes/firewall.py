"""A strict firewall stand-in: refuses to remove what it never installed."""
from __future__ import annotations


class RecordingFirewall:
    def __init__(self) -> None:
        self.networks: dict[str, object] = {}

    def network_added(self, network) -> None:
        self.networks[network.id] = network

    def network_removed(self, network) -> None:
        self.networks.pop(network.id, None)

    def sync(self, networks) -> None:
        self.networks = {n.id: n for n in networks}

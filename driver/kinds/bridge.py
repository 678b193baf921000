"""Bridge networks: one Linux bridge per network, one veth pair per endpoint."""
from __future__ import annotations

import ipaddress
import logging
from contextlib import ExitStack

from driver.firewall.api import Firewall
from driver.models import EndpointRecord, NetworkRecord
from driver.netlink.api import Netlink
from driver.portmap import PortBinding, PortRequest

log = logging.getLogger(__name__)


class BridgeKind:
    def __init__(self, netlink: Netlink, firewall: Firewall) -> None:
        self.netlink = netlink
        self.firewall = firewall

    def create_network(self, net: NetworkRecord, undo: ExitStack) -> NetworkRecord:
        """Bridge, gateway addresses, MTU and forwarding rules; undo entries registered
        for everything made, so a failure later in the call leaves nothing behind."""
        created = self._ensure_bridge(net)
        if created:
            undo.callback(self.netlink.remove_link, net.bridge)
        net = _with_created(net, created)
        self.firewall.network_added(net)
        undo.callback(self.firewall.network_removed, net)
        return net

    def _ensure_bridge(self, net: NetworkRecord) -> bool:
        gateways = [ipaddress.ip_interface(g) for g in net.gateways]
        return self.netlink.ensure_bridge(net.bridge, net.mtu, gateways)

    def delete_network(self, net: NetworkRecord) -> None:
        self.firewall.network_removed(net)
        if net.bridge_created:
            self.netlink.remove_link(net.bridge)

    def create_endpoint(self, net: NetworkRecord, ep: EndpointRecord, undo: ExitStack) -> None:
        # A bridge lost since the plugin started (deleted by hand) is made again here.
        if self.netlink.link(net.bridge) is None:
            self._ensure_bridge(net)
        self.netlink.remove_link(ep.host_if)  # a leftover of an interrupted earlier attempt
        self.netlink.add_veth(ep.host_if, ep.peer_if, net.mtu, net.bridge, ep.mac)
        undo.callback(self.netlink.remove_link, ep.host_if)

    def ensure_endpoint_ready(self, net: NetworkRecord, ep: EndpointRecord) -> None:
        """Before Join: the container end must exist in the host namespace for Docker to
        move it. Re-made if something removed the pair after CreateEndpoint."""
        if self.netlink.link(ep.peer_if) is None:
            self.netlink.remove_link(ep.host_if)
            self.netlink.add_veth(ep.host_if, ep.peer_if, net.mtu, net.bridge, ep.mac)

    def delete_endpoint(self, net: NetworkRecord | None, ep: EndpointRecord) -> None:
        # Ports Docker did not revoke (a crash, a network deleted under the endpoint) go first.
        if net is not None and ep.published:
            self.firewall.unpublish(net, ep)
        # Deleting either end of a veth deletes both; the container end may already have
        # gone with the container's namespace.
        self.netlink.remove_link(ep.host_if)

    def publish(self, net: NetworkRecord, ep: EndpointRecord,
                requests: tuple[PortRequest, ...]) -> tuple[PortBinding, ...]:
        """ProgramExternalConnectivity: DNAT host ports to the endpoint (see driver/firewall)."""
        return self.firewall.publish(net, ep, requests)

    def unpublish(self, net: NetworkRecord, ep: EndpointRecord) -> None:
        self.firewall.unpublish(net, ep)

    def restore_network(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """Plugin start: make the kernel match the record again."""
        if self._ensure_bridge(net) and not net.bridge_created:
            log.warning("re-created bridge %s for network %s", net.bridge, net.id[:12])
        for ep in endpoints:
            if self.netlink.link(ep.host_if) is not None:
                self.netlink.ensure_port(ep.host_if, net.bridge)
            else:
                log.warning("endpoint %s on network %s has lost its veth %s; its container "
                            "must be restarted to regain connectivity",
                            ep.id[:12], net.id[:12], ep.host_if)

    def owned_links(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> set[str]:
        names = {net.bridge} if net.bridge_created else set()
        for ep in endpoints:
            names |= {ep.host_if, ep.peer_if}
        return names


def _with_created(net: NetworkRecord, created: bool) -> NetworkRecord:
    from dataclasses import replace
    return replace(net, bridge_created=created or net.bridge_created)

"""Bridge networks: one Linux bridge per network, one veth pair per endpoint, and the
firewall's NAT, isolation and published ports (driver/firewall)."""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace

from driver import naming
from driver.firewall.api import Firewall
from driver.models import EndpointRecord, NetworkRecord
from driver.netlink.api import Netlink
from driver.portmap import PortBinding, PortRequest
from driver.protocol import JoinAnswer
from pynet.errors import Conflict

from .base import gateway_answer

log = logging.getLogger(__name__)


class BridgeKind:
    def __init__(self, netlink: Netlink, firewall: Firewall) -> None:
        self.netlink = netlink
        self.firewall = firewall

    # --- CreateNetwork / DeleteNetwork ---------------------------------------------
    def create_network(self, net: NetworkRecord, others: Sequence[NetworkRecord],
                       undo: ExitStack) -> NetworkRecord:
        """Bridge, gateway addresses, MTU and forwarding rules; undo entries registered
        for everything made, so a failure later in the call leaves nothing behind."""
        bridge = net.options.bridge_name or naming.bridge(net.id)
        for other in others:
            if other.id != net.id and other.bridge == bridge:
                raise Conflict(f"bridge name {bridge} is already used by pynet network "
                               f"{other.id[:12]}")
        net = replace(net, bridge=bridge)
        created = self._ensure_bridge(net)
        if created:
            undo.callback(self.netlink.remove_link, bridge)
        # A bridge pynet names itself is pynet's even if a crashed attempt left it behind.
        net = replace(net, bridge_created=created or net.options.bridge_name is None)
        self.firewall.network_added(net)
        undo.callback(self.firewall.network_removed, net)
        return net

    def _ensure_bridge(self, net: NetworkRecord) -> bool:
        assert net.bridge is not None
        gateways = [ipaddress.ip_interface(g) for g in net.gateways]
        return self.netlink.ensure_bridge(net.bridge, net.mtu, gateways)

    def delete_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> None:
        self.firewall.network_removed(net)
        if net.bridge_created and net.bridge is not None:
            self.netlink.remove_link(net.bridge)

    # --- CreateEndpoint / Join / DeleteEndpoint ------------------------------------
    def create_endpoint(self, net: NetworkRecord, ep: EndpointRecord,
                        undo: ExitStack) -> EndpointRecord:
        assert net.bridge is not None
        ep = replace(ep, host_if=naming.host_veth(ep.id))
        # A bridge lost since the plugin started (deleted by hand) is made again here.
        if self.netlink.link(net.bridge) is None:
            self._ensure_bridge(net)
        self.netlink.remove_link(ep.host_if)  # a leftover of an interrupted earlier attempt
        self.netlink.add_veth(ep.host_if, ep.peer_if, net.mtu, net.bridge, ep.mac)
        undo.callback(self.netlink.remove_link, ep.host_if)
        return ep

    def join(self, net: NetworkRecord, ep: EndpointRecord, sandbox: str) -> JoinAnswer:
        """The container end must be in the host namespace for Docker to move it: the pair
        is re-made if something removed it after CreateEndpoint, or if the end went with an
        earlier sandbox (a dying namespace takes its veths with it, a little later). But a
        Join repeated for the sandbox the end is already in must not cost the container its
        interface: with the host end still here, the pair is alive."""
        assert net.bridge is not None and ep.host_if is not None
        if self.netlink.link(ep.peer_if) is None:
            repeated = ep.sandbox == sandbox and self.netlink.link(ep.host_if) is not None
            if not repeated:
                self.netlink.remove_link(ep.host_if)
                self.netlink.add_veth(ep.host_if, ep.peer_if, net.mtu, net.bridge, ep.mac)
        return gateway_answer(net, ep)

    def delete_endpoint(self, net: NetworkRecord | None, ep: EndpointRecord) -> None:
        # Ports Docker did not revoke (a crash, a network deleted under the endpoint) go first.
        if net is not None and ep.published:
            self.firewall.unpublish(net, ep)
        # Deleting either end of a veth deletes both; the container end may already have
        # gone with the container's namespace.
        self.netlink.remove_link(ep.host_if or naming.host_veth(ep.id))

    # --- ProgramExternalConnectivity -----------------------------------------------
    def publishes(self, net: NetworkRecord) -> bool:
        return not net.options.internal

    def publish(self, net: NetworkRecord, ep: EndpointRecord,
                requests: tuple[PortRequest, ...]) -> tuple[PortBinding, ...]:
        """DNAT host ports to the endpoint (see driver/firewall)."""
        return self.firewall.publish(net, ep, requests)

    def unpublish(self, net: NetworkRecord, ep: EndpointRecord) -> None:
        self.firewall.unpublish(net, ep)

    # --- plugin start --------------------------------------------------------------
    def restore(self, networks: Sequence[NetworkRecord],
                endpoints: dict[str, list[EndpointRecord]]) -> None:
        """Re-make bridges, re-attach surviving veths, then make the firewall exactly that
        of these networks and their recorded ports (rules of vanished networks go)."""
        for net in networks:
            self._ensure_kernel(net, endpoints.get(net.id, []))
        self.firewall.sync(list(networks), [ep for net in networks
                                            for ep in endpoints.get(net.id, [])])

    def restore_network(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """A CreateNetwork replayed for a recorded network: its bridge, ports and rules."""
        self._ensure_kernel(net, endpoints)
        self.firewall.network_added(net)

    def _ensure_kernel(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        if self._ensure_bridge(net) and not net.bridge_created:
            log.warning("re-created bridge %s for network %s", net.bridge, net.id[:12])
        for ep in endpoints:
            if ep.host_if is not None and self.netlink.link(ep.host_if) is not None:
                self.netlink.ensure_port(ep.host_if, net.bridge)
            else:
                log.warning("endpoint %s on network %s has lost its veth %s; its container "
                            "must be restarted to regain connectivity",
                            ep.id[:12], net.id[:12], ep.host_if)

    def owned_links(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> set[str]:
        names = {net.bridge} if net.bridge_created and net.bridge else set()
        for ep in endpoints:
            names |= {ep.peer_if} | ({ep.host_if} if ep.host_if else set())
        return names

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
from driver.netlink.api import Link, LinkExists, Netlink, NoSuchLink
from driver.portmap import PortBinding, PortRequest
from driver.protocol import JoinAnswer
from pynet_core.errors import Conflict, describe_error

from .base import RECREATE, Carrier, ContainerName, Difference, gateway_answer

log = logging.getLogger(__name__)


class BridgeKind:
    def __init__(self, netlink: Netlink, firewall: Firewall) -> None:
        self.netlink = netlink
        self.firewall = firewall

    # --- CreateNetwork / DeleteNetwork ---------------------------------------------
    def plan_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> NetworkRecord:
        bridge = net.options.bridge_name or naming.bridge(net.id)
        for other in others:
            if other.id != net.id and other.bridge == bridge:
                raise Conflict(f"bridge name {bridge} is already used by pynet network "
                               f"{other.id[:12]}")
        # pynet makes the bridge unless the user named one that exists; one pynet names
        # itself is pynet's even if a crashed attempt left it behind. A user's bridge is
        # recorded as found, before anything changes it, so that it is left as found.
        found = self.netlink.found_link(bridge) if net.options.bridge_name else None
        return replace(net, bridge=bridge, bridge_created=found is None, found_bridge=found)

    def create_network(self, net: NetworkRecord, undo: ExitStack) -> NetworkRecord:
        """The bridge with every setting (see make_bridge); undo entries registered for
        everything made or changed, so a failure later in the call leaves nothing behind."""
        self.make_bridge(net, undo)
        return net

    def make_bridge(self, net: NetworkRecord, undo: ExitStack | None = None, *,
                    rules: bool = True) -> bool:
        """The network's bridge with every setting it has: the link, its MTU and gateway
        addresses, br_netfilter, and the firewall's part (sysctls such as route_localnet,
        the rule set's elements). CreateNetwork, CreateEndpoint's re-make of a bridge
        deleted by hand, a replayed CreateNetwork and restore all make it here, so a
        re-made bridge is the original. A user's bridge gets only what the network needs:
        no MTU unless the `mtu` option asks for one. RULES=False: the caller installs the
        firewall's part for many networks at once (restore's one sync). True if the bridge
        had to be created."""
        assert net.bridge is not None
        gateways = [ipaddress.ip_interface(g) for g in net.gateways]
        mtu = net.mtu if net.bridge_created else net.options.mtu
        created = self.netlink.ensure_bridge(net.bridge, mtu, gateways)
        if undo is not None:
            if created:
                undo.callback(self.netlink.remove_link, net.bridge)
            else:
                undo.callback(self._leave_as_found, net)
        self._bridge_netfilter(net)
        if rules:
            self.firewall.network_added(net)
            if undo is not None:
                undo.callback(self.firewall.network_removed, net)
        return created

    def _bridge_netfilter(self, net: NetworkRecord) -> None:
        """Frames between two ports of the bridge reach netfilter only through br_netfilter.
        icc=false is a drop of exactly those frames, so its bridges ask for them on their
        own, whatever the global net.bridge.bridge-nf-call-* say. With icc on nothing inside
        the network is filtered (published ports, hairpin included, are routed through the
        bridge device, which netfilter sees anyway): a bridge pynet made lets those frames
        skip netfilter, which the kernel does only where the global sysctls are off too
        (Docker turns them on). A user's bridge is never turned off."""
        assert net.bridge is not None
        if not net.options.icc:
            self.netlink.set_bridge_netfilter(net.bridge, True)
        elif net.bridge_created:
            self.netlink.set_bridge_netfilter(net.bridge, False)

    def delete_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> None:
        self.firewall.network_removed(net)
        if net.bridge is None:
            return
        if not net.bridge_created:
            self._leave_as_found(net)
            return
        link = self.netlink.link(net.bridge)
        if link is not None and link.kind != "bridge":
            # The name went to another link while the network was broken: not pynet's.
            log.warning("not removing %s of network %s: it is a %s now, not pynet's bridge",
                        net.bridge, net.id[:12], link.kind or "device")
        elif link is not None:
            self.netlink.remove_link(net.bridge)

    def _leave_as_found(self, net: NetworkRecord) -> None:
        """A user's bridge as it was before the network: the gateway addresses pynet added
        go (one the user had stays), its MTU is the one it was found with, a bridge found
        down is down again (route_localnet: the firewall's network_removed)."""
        found, bridge = net.found_bridge, net.bridge
        if found is None or bridge is None:
            return  # recorded before pynet kept what it found: nothing known to put back
        link = self.netlink.link(bridge)
        if link is None or link.kind != "bridge":
            return
        had = {ipaddress.ip_interface(a) for a in found.addresses}
        added = [g for g in map(ipaddress.ip_interface, net.gateways) if g not in had]
        self.netlink.put_back(bridge, found, added)

    def _port_mtu(self, net: NetworkRecord) -> int:
        """The MTU of an endpoint's veth: the network's, or on a user's bridge with no `mtu`
        option, the bridge's as found (a port with a smaller one pulls the bridge's MTU
        down; the kernel drops it to 1500 once the last port left, and brings it back up
        to its ports' with the next one)."""
        if net.bridge_created or net.options.mtu is not None:
            return net.mtu
        if net.found_bridge is not None:
            return net.found_bridge.mtu
        link = self.netlink.link(net.bridge) if net.bridge else None  # recorded before found_bridge
        return link.mtu if link is not None else net.mtu

    # --- CreateEndpoint / Join / DeleteEndpoint ------------------------------------
    def plan_endpoint(self, net: NetworkRecord, ep: EndpointRecord) -> EndpointRecord:
        return replace(ep, host_if=naming.host_veth(ep.id))

    def create_endpoint(self, net: NetworkRecord, ep: EndpointRecord,
                        undo: ExitStack) -> EndpointRecord:
        """The veth pair on the bridge: one netlink exchange in the common case. Only when
        the kernel says so is a bridge lost since the plugin started (deleted by hand) made
        again, or a leftover of an interrupted earlier attempt removed, and the pair tried
        once more."""
        assert net.bridge is not None and ep.host_if is not None
        for attempt in range(3):
            try:
                self.netlink.add_veth(ep.host_if, ep.peer_if, self._port_mtu(net), net.bridge,
                                      ep.mac)
                break
            except NoSuchLink:
                if attempt == 2 or self.netlink.link(net.bridge) is not None:
                    raise
                log.warning("re-making bridge %s of network %s: it was deleted", net.bridge,
                            net.id[:12])
                self.make_bridge(net)
            except LinkExists:
                if attempt == 2:
                    raise
                self.netlink.remove_link(ep.host_if)
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
                self.netlink.add_veth(ep.host_if, ep.peer_if, self._port_mtu(net), net.bridge,
                                      ep.mac)
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
        healthy = []
        # One dump of the links for every network: per endpoint it was two netlink
        # round trips (each on a new socket), which made restore grow with the endpoints.
        links = {link.name: link for link in self.netlink.links()}
        for net in networks:
            try:
                self._ensure_kernel(net, endpoints.get(net.id, []), links)
                healthy.append(net)
            except Exception as exc:  # one network's trouble must not keep the others down
                log.error("network %s cannot be restored: %s; its calls fail until the cause is "
                          "fixed, and DeleteNetwork still removes it", net.id[:12],
                          describe_error(exc))
        # No rules for a network that did not come back: its bridge name may be another
        # link's now, and without rules nothing reaches it past Docker's FORWARD policy.
        self.firewall.sync(healthy, [ep for net in healthy for ep in endpoints.get(net.id, [])])

    def restore_network(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """A CreateNetwork replayed for a recorded network: its bridge, ports and rules."""
        self._ensure_kernel(net, endpoints, rules=True)

    def _ensure_kernel(self, net: NetworkRecord, endpoints: list[EndpointRecord],
                       links: dict[str, Link] | None = None, *, rules: bool = False) -> None:
        """The bridge, and every surviving veth an up port of it. LINKS: the host's links
        read just before (one dump), else read here. RULES: the firewall's part too, else
        the caller syncs it for every network at once."""
        if self.make_bridge(net, rules=rules) and not net.bridge_created:
            log.warning("re-created bridge %s for network %s", net.bridge, net.id[:12])
        if links is None:
            links = {link.name: link for link in self.netlink.links()}
        for ep in endpoints:
            link = links.get(ep.host_if) if ep.host_if is not None else None
            if link is not None:
                if link.master != net.bridge or not link.up:
                    # detached (its bridge was re-made above, or it was taken off by hand)
                    self.netlink.ensure_port(ep.host_if, net.bridge)
            else:
                log.warning("endpoint %s on network %s has lost its veth %s; its container "
                            "must be restarted to regain connectivity",
                            ep.id[:12], net.id[:12], ep.host_if)

    def owned_links(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> set[str]:
        # The bridge even when pynet found it: a pn-named bridge of the user's is in use.
        names = {net.bridge} if net.bridge else set()
        for ep in endpoints:
            names |= set(ep.links())
        return names

    # --- pynet doctor, pynet networks ------------------------------------------------
    def check(self, net: NetworkRecord, endpoints: list[EndpointRecord],
              container_name: ContainerName) -> list[Difference]:
        """The bridge (a bridge, up, with its gateways) and every endpoint's veth (an up
        port of it). The firewall's part is audited for all networks at once
        (driver/firewall/audit.py)."""
        if not net.bridge:
            return []
        link = self.netlink.link(net.bridge)
        found = self._check_bridge(net, link)
        for ep in endpoints:
            if ep.host_if:
                found += self._check_veth(net, ep, link is not None, container_name)
        return found

    def _check_bridge(self, net: NetworkRecord, link: Link | None) -> list[Difference]:
        assert net.bridge is not None
        if link is None:
            return [Difference(f"bridge {net.bridge} of network {net.id[:12]} is missing", RECREATE)]
        found = []
        if link.kind != "bridge":
            found.append(Difference(f"{net.bridge} of network {net.id[:12]} is a "
                                    f"{link.kind or 'device'}, not a bridge",
                                    f"remove {net.bridge}, then {RECREATE}"))
        if not link.up:
            found.append(Difference(f"bridge {net.bridge} is down", f"ip link set {net.bridge} up"))
        addresses = {str(a) for name, a in self.netlink.local_addresses() if name == net.bridge}
        for gw in net.gateways:
            if gw not in addresses and not net.options.internal:
                found.append(Difference(f"bridge {net.bridge} lacks its gateway address {gw}",
                                        f"ip addr add {gw} dev {net.bridge}"))
        return found

    def _check_veth(self, net: NetworkRecord, ep: EndpointRecord, bridge_there: bool,
                    container_name: ContainerName) -> list[Difference]:
        assert ep.host_if is not None
        veth = self.netlink.link(ep.host_if)
        if veth is None:
            name = container_name(ep.id)
            fix = f"docker restart {name}" if name else f"restart the container of endpoint {ep.id[:12]}"
            return [Difference(f"veth {ep.host_if} of endpoint {ep.id[:12]} is missing", fix)]
        if veth.master != net.bridge:
            fix = f"ip link set {ep.host_if} master {net.bridge}" if bridge_there else RECREATE
            return [Difference(f"veth {ep.host_if} is not a port of {net.bridge} "
                               f"(master {veth.master or 'none'})", fix)]
        if not veth.up:
            return [Difference(f"veth {ep.host_if} is down", f"ip link set {ep.host_if} up")]
        return []

    def describe(self, net: NetworkRecord) -> Carrier:
        return Carrier(f"bridge {net.bridge}")

"""Macvlan networks: each endpoint is a macvlan link on the network's lower device.

The lower device is one of
* the `parent` interface the user named (pynet never deletes it);
* `parent=IFACE.VLAN` when missing: an 802.1q sub-interface pynet creates, shares among the
  pynet networks that name it, and deletes with the last of them;
* no parent: an empty bridge made for the network (Docker uses a dummy link; kernels
  without dummy links still have bridges, and macvlan accepts a bridge as lower device).
  Containers on it reach each other and nothing else.

No veth, no host address, no NAT, no firewall rule: the containers sit on the parent's
wire with their own MACs, and their gateway is a router there. The kernel keeps the host
itself from reaching them over the parent (macvlan delivers nothing between a lower device
and its macvlans).

Which networks share a lower device is read from the records the service passes in
(`others`): NetworkService serialises CreateNetwork and DeleteNetwork on a host, so the
check and the record it protects cannot race.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace

from driver import naming
from driver.models import DEFAULT_MTU, EndpointRecord, NetworkRecord
from pynet_core.errors import BadRequest, Conflict, describe_error
from driver.kinds.macvlan.parents import check_sharing, lower_still_used, split_vlan
from driver.netlink.api import KernelError, Link, Netlink, NotSupported
from driver.protocol import JoinAnswer

from ..base import RECREATE, Carrier, ContainerName, Difference, PublishesNothing, gateway_answer

log = logging.getLogger(__name__)


class MacvlanKind(PublishesNothing):
    def __init__(self, netlink: Netlink) -> None:
        self.netlink = netlink

    # --- NetworkDriver.CreateNetwork / DeleteNetwork --------------------------------
    def plan_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> NetworkRecord:
        """Choose the lower device and check it may carry this network; whether pynet makes
        it (its own bridge without a parent, a missing 802.1q sub-interface) or finds it."""
        if net.options.parent is None:
            lower = naming.bridge(net.id)  # pn-<network id>, pynet's own
            return replace(net, bridge=lower, lower=lower, lower_created=True, bridge_created=True)
        parent = net.options.parent
        others = [o for o in others if o.id != net.id]
        check_sharing(net, parent, others)
        link = self.netlink.link(parent)
        if link is None:
            vlan = split_vlan(parent)
            if vlan is None:
                raise BadRequest(f"macvlan parent {parent} does not exist on this host")
            base = self.netlink.link(vlan[0])
            _check_usable(base, vlan[0], f"the base of VLAN sub-interface {parent}")
            _check_mtu(net, base, vlan[0])
            created = True
        else:
            if naming.is_pynet_link(parent):
                raise Conflict(f"macvlan parent {parent} has a name pynet keeps for the links it "
                               f"makes and removes ({', '.join(naming.PYNET_PREFIXES)}...); choose "
                               "a host interface")
            _check_usable(link, parent, "")
            _check_mtu(net, link, parent)
            # A sub-interface another pynet network made stays pynet's: the last network on
            # it deletes it, whichever one that is.
            created = any(o.lower == parent and o.lower_created for o in others)
        return replace(net, bridge=None, lower=parent, lower_created=created, bridge_created=False)

    def create_network(self, net: NetworkRecord, undo: ExitStack) -> NetworkRecord:
        """Make the planned lower device, and prove it by creating (and removing) one
        macvlan link of the network's mode and MTU."""
        assert net.lower is not None
        if net.options.parent is None:
            if self.netlink.ensure_bridge(net.lower, net.options.mtu or DEFAULT_MTU, []):
                undo.callback(self.netlink.remove_link, net.lower)
        elif self.netlink.link(net.lower) is None:
            base, vlan_id = split_vlan(net.lower) or (None, 0)
            assert base is not None, "plan_network found a parent that is gone"
            try:
                self.netlink.add_vlan(net.lower, base, vlan_id)
            except NotSupported as exc:
                raise NotSupported(f"macvlan parent {net.lower} cannot be made: {exc.message}; "
                                   f"use an existing interface as parent") from None
            undo.callback(self._remove_if_vlan_of, net.lower, base)
        self._probe(net)
        log.info("macvlan network %s on %s (mode %s%s)", net.id[:12], net.lower,
                 net.options.macvlan_mode, ", made by pynet" if net.lower_created else "")
        return net

    def _probe(self, net: NetworkRecord) -> None:
        """Create and remove one macvlan like the endpoints' ones: the kernel says now, not
        at `docker run`, if the lower device cannot carry them (a bridge port, a passthru
        macvlan of someone else's on it, an MTU above the parent's)."""
        assert net.lower is not None
        name = naming.probe(net.id)  # pn-named: restore removes a leftover
        lower = self.netlink.link(net.lower)
        mtu = net.options.mtu or (lower.mtu if lower else DEFAULT_MTU)
        self.netlink.remove_link(name)
        try:
            self.netlink.add_macvlan(name, net.lower, net.options.macvlan_mode, mtu, None)
        except KernelError as exc:  # the kernel's refusal; a parent gone meanwhile is NoSuchLink
            hint = ("; passthru needs the parent to itself (is another macvlan on it?)"
                    if net.options.macvlan_mode == "passthru" else "")
            raise Conflict(f"macvlan parent {net.lower} cannot carry {net.options.macvlan_mode} "
                           f"macvlan links: {exc.message}{hint}") from None
        self.netlink.remove_link(name)

    def delete_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> None:
        """Remove the network's lower device if pynet made it and no other network uses
        it. Never removes an interface pynet did not make."""
        self.netlink.remove_link(naming.probe(net.id))  # a crash may have left the test link
        if not net.lower_created or net.lower is None:
            return
        if lower_still_used(net, others):
            log.info("keeping %s: other pynet networks still use it", net.lower)
            return
        if net.options.parent is None:
            link = self.netlink.link(net.lower)
            if link is not None and link.kind == "bridge":
                self.netlink.remove_link(net.lower)
        else:
            vlan = split_vlan(net.lower)
            if vlan is not None:
                self._remove_if_vlan_of(net.lower, vlan[0])

    def _remove_if_vlan_of(self, name: str, base: str) -> None:
        link = self.netlink.link(name)
        if link is not None and link.kind == "vlan" and link.parent == base:
            self.netlink.remove_link(name)
        elif link is not None:
            log.warning("not removing %s: it is no longer a VLAN sub-interface of %s", name, base)

    # --- NetworkDriver.CreateEndpoint / Join / DeleteEndpoint -----------------------
    def plan_endpoint(self, net: NetworkRecord, ep: EndpointRecord) -> EndpointRecord:
        if net.options.macvlan_mode == "passthru":
            return self._passthru_mac(net, ep, self._lower(net))
        return ep

    def create_endpoint(self, net: NetworkRecord, ep: EndpointRecord,
                        undo: ExitStack) -> EndpointRecord:
        """The endpoint's macvlan link (named ep.peer_if), down, in the host namespace;
        Docker moves it into the container at Join."""
        lower = self._lower(net)
        self.netlink.remove_link(ep.peer_if)  # a leftover of an interrupted earlier attempt
        self.netlink.add_macvlan(ep.peer_if, lower.name, net.options.macvlan_mode,
                                 net.options.mtu or lower.mtu, ep.mac)
        undo.callback(self.netlink.remove_link, ep.peer_if)
        return ep

    def join(self, net: NetworkRecord, ep: EndpointRecord, sandbox: str) -> JoinAnswer:
        """Re-make the macvlan if something removed it since CreateEndpoint, unless this
        Join repeats one whose link Docker has already moved into the sandbox (a second
        link with the same MAC on the parent would steal the container's traffic). The
        gateway is a router on the parent's wire, or there is none (no parent): never
        Docker's docker_gwbridge, which would give these containers a way out."""
        if ep.sandbox != sandbox and self.netlink.link(ep.peer_if) is None:
            lower = self._lower(net)
            self.netlink.add_macvlan(ep.peer_if, lower.name, net.options.macvlan_mode,
                                     net.options.mtu or lower.mtu, ep.mac)
        return gateway_answer(net, ep, disable_gateway_service=True)

    def delete_endpoint(self, net: NetworkRecord | None, ep: EndpointRecord) -> None:
        # Docker moves the link back to the host namespace when the container goes.
        self.netlink.remove_link(ep.peer_if)

    def _lower(self, net: NetworkRecord) -> Link:
        """The network's lower device, re-made if pynet made it and it has gone."""
        assert net.lower is not None
        link = self.netlink.link(net.lower)
        if link is None and net.lower_created:
            self._remake_lower(net)
            link = self.netlink.link(net.lower)
        if link is None:
            raise Conflict(f"macvlan parent {net.lower} of network {net.id[:12]} no longer "
                           "exists on this host")
        if not link.up:
            log.warning("macvlan parent %s of network %s is down: its containers have no "
                        "connectivity until it is up", net.lower, net.id[:12])
        if net.options.mtu and net.options.mtu > link.mtu:
            raise Conflict(f"network {net.id[:12]} has MTU {net.options.mtu}, but its macvlan "
                           f"parent {net.lower} now has MTU {link.mtu}")
        return link

    def _passthru_mac(self, net: NetworkRecord, ep: EndpointRecord, lower: Link) -> EndpointRecord:
        # A passthru macvlan carries its parent's MAC, and setting another MAC on it changes
        # the parent's own: only pynet's default MAC is replaced, a chosen one is refused.
        if ep.mac.lower() == lower.mac.lower():
            return ep
        ipv4 = next((a for a in ep.addresses if ":" not in a), None)
        if ep.mac != naming.mac_for(ep.id, ipv4):
            raise Conflict(f"MAC address {ep.mac} cannot be used on passthru network "
                           f"{net.id[:12]}: its endpoint carries the MAC {lower.mac} of parent "
                           f"{lower.name}, and another one would change the parent's own")
        return replace(ep, mac=lower.mac)

    # --- plugin start ----------------------------------------------------------------
    def restore(self, networks: Sequence[NetworkRecord],
                endpoints: dict[str, list[EndpointRecord]]) -> None:
        for net in networks:
            self.restore_network(net, endpoints.get(net.id, []))

    def restore_network(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """Re-make the network's lower device if pynet made it and it has gone. Trouble is
        logged, not raised: other networks must still come back."""
        if net.lower is None or self.netlink.link(net.lower) is not None:
            return
        if not net.lower_created:
            log.warning("macvlan parent %s of network %s does not exist; its containers "
                        "have no connectivity until it is back", net.lower, net.id[:12])
            return
        try:
            self._remake_lower(net)
            log.warning("re-created %s for macvlan network %s", net.lower, net.id[:12])
        except Exception as exc:  # one network's trouble must not keep the others down
            log.error("cannot re-create %s for macvlan network %s: %s", net.lower, net.id[:12],
                      describe_error(exc))

    def _remake_lower(self, net: NetworkRecord) -> None:
        assert net.lower is not None
        if net.options.parent is None:
            self.netlink.ensure_bridge(net.lower, net.options.mtu or DEFAULT_MTU, [])
            return
        vlan = split_vlan(net.lower)
        if vlan is not None:
            self.netlink.add_vlan(net.lower, *vlan)

    def owned_links(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> set[str]:
        # The parent is listed too, so restore's sweep of pynet-named links can never take it.
        names = {net.lower} if net.lower else set()
        for ep in endpoints:
            names.add(ep.peer_if)
        return names

    # --- pynet doctor, pynet networks ----------------------------------------------------
    def check(self, net: NetworkRecord, endpoints: list[EndpointRecord],
              container_name: ContainerName) -> list[Difference]:
        """The lower device. The endpoints' macvlan links are in their containers, out of
        this namespace's sight."""
        if net.lower and self.netlink.link(net.lower) is None:
            fix = RECREATE if net.lower_created else f"bring back interface {net.lower} (pynet never makes it)"
            return [Difference(f"macvlan parent {net.lower} of network {net.id[:12]} is missing", fix)]
        return []

    def describe(self, net: NetworkRecord) -> Carrier:
        return Carrier(f"parent {net.lower or net.options.parent or '-'}", net.lower)


def _check_usable(link: Link | None, name: str, role: str) -> None:
    what = f"macvlan parent {name}" + (f" ({role})" if role else "")
    if link is None:
        raise BadRequest(f"{what} does not exist on this host")
    if link.loopback:
        raise BadRequest(f"{what} is a loopback interface, which cannot carry macvlan links")
    if not link.up:
        raise BadRequest(f"{what} is down; bring it up first (ip link set {name} up)")


def _check_mtu(net: NetworkRecord, link: Link | None, name: str) -> None:
    if link is not None and net.options.mtu and net.options.mtu > link.mtu:
        raise BadRequest(f"MTU {net.options.mtu} is larger than the MTU {link.mtu} of macvlan "
                         f"parent {name}; a macvlan link cannot exceed its parent's MTU")

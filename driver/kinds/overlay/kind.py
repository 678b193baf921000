"""Overlay networks: one L2 segment across hosts, carried in VXLAN over the underlay.

On each host the network has a namespace of its own (/run/netns/pno-<network id>) holding
a bridge and a VXLAN device; each endpoint is a veth pair with one end on that bridge and
the other in the host namespace for Docker to move into the container. The VXLAN device is
made in the host namespace and moved in, so its UDP socket stays on the underlay. Why a
namespace rather than a host bridge: docs/overlay.md.

Which hosts share the overlay, its VNI and MTU, and every endpoint's IP, MAC and VTEP are in
the shared store (driver/kinds/overlay/registry.py); each host's watcher programs the remote ones
into the VXLAN device (driver/kinds/overlay/watcher.py -> applier.py). There is no gateway: Docker
attaches the containers to its docker_gwbridge for outbound traffic and published ports.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace

from driver import naming
from driver.models import EndpointRecord, NetworkRecord
from driver.netlink.api import Netlink, NoSuchNamespace
from driver.kinds.overlay.model import LOCAL_SPACE, Member, OverlayId, Peer, link_mtu, max_mtu
from driver.kinds.overlay.runtime import OverlayRuntime
from driver.protocol import JoinAnswer
from pynet_core.errors import BackendUnavailable, BadRequest, Conflict, PynetError, describe_error

from ..base import Carrier, ContainerName, Difference, PublishesNothing
from .check import check_network

log = logging.getLogger(__name__)

BRIDGE = naming.OVERLAY_BRIDGE
# (address space, subnet) -> whether this host's pynet IPAM gave out that pool.
PoolOrigin = Callable[[str, str], bool]


def overlay_id(net: NetworkRecord) -> OverlayId:
    v4 = [s for s in net.subnets if ipaddress.ip_network(s).version == 4]
    return OverlayId(net.address_space or LOCAL_SPACE, v4[0])


class OverlayKind(PublishesNothing):
    def __init__(self, netlink: Netlink, runtime: OverlayRuntime,
                 pool_origin: PoolOrigin | None = None) -> None:
        self.netlink = netlink
        self.runtime = runtime
        self.pool_origin = pool_origin
        self.registry = runtime.registry
        # Endpoint calls of one network run side by side (driver/call_locks.py); re-making a
        # lost namespace or VXLAN device is done by one of them at a time.
        self._kernel_lock = threading.Lock()

    # --- CreateNetwork / DeleteNetwork ---------------------------------------------
    def plan_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> NetworkRecord:
        """The checks that need no store write: a shared store, one IPv4 subnet, the VTEP
        and the MTU it allows, one local network per overlay."""
        self.runtime.require_shared_store()
        if net.options.ipv6 or any(ipaddress.ip_network(s).version == 6 for s in net.subnets):
            raise BadRequest("overlay networks are IPv4 only in this version of pynet; drop --ipv6")
        v4 = [s for s in net.subnets if ipaddress.ip_network(s).version == 4]
        if len(v4) != 1:
            raise BadRequest("an overlay network needs exactly one --subnet: the same subnet on "
                             "every host is what makes their networks one overlay"
                             + (f" (got {', '.join(v4)})" if v4 else ""))
        oid = OverlayId(net.address_space or LOCAL_SPACE, v4[0])
        if self.pool_origin is not None and not self.pool_origin(oid.space, oid.subnet):
            # Docker's own IPAM on each host hands out the same addresses on every host of
            # the overlay, and nothing says so until two containers collide (issue 18).
            raise BadRequest(
                f"overlay networks need --ipam-driver pynet (this pool, {oid.subnet} in address "
                f"space {oid.space or 'LocalDefault'}, came from another IPAM driver): only "
                "pynet's IPAM hands out each address once across the hosts. On a swarm, a "
                "--scope swarm overlay also needs the plugin set to PYNET_SCOPE=global on every "
                "node (docs/swarm.md)")
        for other in others:
            if other.id != net.id and other.kind == "overlay" and overlay_id(other) == oid:
                raise Conflict(f"overlay {oid} already has pynet network {other.id[:12]} on this "
                               "host; a host joins an overlay once")
        if net.options.encrypted:
            self.runtime.require_wireguard()
        vtep, link = self.runtime.underlay()
        mtu = link_mtu(link.mtu, net.options.mtu, link.name, net.options.encrypted)
        return replace(net, bridge=None, netns=naming.overlay_netns(net.id), vtep=vtep,
                       link_mtu=mtu, vni=net.options.vni, address_space=oid.space)

    def create_network(self, net: NetworkRecord, undo: ExitStack) -> NetworkRecord:
        """Join the overlay in the store (defining it, VNI and all, if first), then make the
        namespace, bridge and VXLAN device, and program the peers known so far."""
        assert net.netns is not None and net.vtep is not None and net.link_mtu is not None
        oid = overlay_id(net)
        _, link = self.runtime.underlay()
        if net.options.encrypted:
            # The link, this host's WireGuard record and its peers (the hosts already on the
            # overlay) before its member: a host that sees the member takes this one as a
            # peer and its first handshake is answered (one that reached a host not yet
            # knowing it would be retried only after WireGuard's 5 s REKEY_TIMEOUT).
            self._ensure_wireguard(net, link.mtu, undo)
            self.runtime.sync(oid)
        definition = self.registry.join(
            oid, self._member(net), vni=net.options.vni, mtu=net.options.mtu,
            default_mtu=net.link_mtu, mtu_limit=max_mtu(link.mtu, net.options.encrypted),
            port=self.runtime.port_for(net.options.encrypted), encrypted=net.options.encrypted)
        undo.callback(self.registry.leave, oid, net.id)
        net = replace(net, vni=definition.vni, link_mtu=definition.mtu)
        if self.netlink.ensure_netns(net.netns):
            undo.callback(self.netlink.remove_netns, net.netns)
        self._ensure_devices(net)
        undo.callback(self._remove_vxlan, net)
        self.runtime.sync(oid)  # this overlay only: others' syncs never hold it up
        log.info("overlay network %s: %s, VNI %d, MTU %d, VTEP %s", net.id[:12], oid,
                 definition.vni, definition.mtu, net.vtep)
        return net

    def _ensure_wireguard(self, net: NetworkRecord, underlay_mtu: int, undo: ExitStack | None = None) -> None:
        """This host's one WireGuard link, made with its first encrypted overlay; a failed
        create that made it takes it away again (unless another encrypted overlay has it)."""
        plane = self.runtime.wireguard
        if plane is None:
            self.runtime.require_wireguard()
        assert net.vtep is not None
        if undo is not None and plane.address is None:  # registered first: a half-made link goes too
            undo.callback(self._retire_wireguard_unless_used, net.id, None, True)
        plane.ensure(net.vtep, underlay_mtu)

    def _retire_wireguard_unless_used(self, leaving: str, others: Sequence[NetworkRecord] | None,
                                      failed_create: bool = False) -> None:
        """The WireGuard link, record and claim go with this host's last encrypted overlay
        (`failed_create`: also when the create that began making them failed halfway)."""
        plane = self.runtime.wireguard
        if plane is None or (plane.address is None and not failed_create):
            return
        if others is None:
            records = self.runtime.watcher.records
            others = records.networks() if records is not None else []
        if any(o.id != leaving and o.kind == "overlay" and o.options.encrypted for o in others):
            return
        plane.retire()

    def _local_address(self, net: NetworkRecord) -> str:
        """The VXLAN device's local address: the VTEP, or for an encrypted overlay this host's
        WireGuard tunnel address (its VXLAN then leaves only through the WireGuard link)."""
        assert net.vtep is not None
        if not net.options.encrypted:
            return net.vtep
        plane = self.runtime.wireguard
        if plane is None or plane.address is None:
            raise BackendUnavailable(f"encrypted overlay network {net.id[:12]} has no WireGuard "
                                     "link on this host yet")
        return plane.address

    def _member(self, net: NetworkRecord) -> Member:
        assert net.netns is not None and net.vtep is not None
        return Member(self.runtime.host, net.id, net.vtep, net.netns, naming.vxlan(net.id))

    def _ensure_devices(self, net: NetworkRecord) -> None:
        """The bridge and the VXLAN device in the network's namespace, as recorded; a VXLAN
        device that differs (another VNI, VTEP or port) is made again."""
        assert net.netns is not None and net.vni is not None and net.vtep is not None
        inside = self.netlink.within(net.netns)
        inside.ensure_bridge(BRIDGE, net.mtu, [])
        name, port = naming.vxlan(net.id), self.runtime.port_for(net.options.encrypted)
        local = self._local_address(net)
        found = inside.vxlan(name)
        if found is not None and (found.vni, found.local, found.port, found.master) == \
                (net.vni, local, port, BRIDGE):
            return
        inside.remove_link(name)
        self.netlink.remove_link(name)  # a leftover of a create interrupted before the move
        self.netlink.add_vxlan(name, net.vni, local, port, net.mtu, BRIDGE, netns=net.netns)

    def _remove_vxlan(self, net: NetworkRecord) -> None:
        self.netlink.remove_link(naming.vxlan(net.id))
        if net.netns is not None:
            try:
                self.netlink.within(net.netns).remove_link(naming.vxlan(net.id))
            except NoSuchNamespace:
                pass  # no namespace: nothing in it

    def delete_network(self, net: NetworkRecord, others: Sequence[NetworkRecord]) -> None:
        """The VXLAN device first (namespaces are torn down asynchronously, and its VNI may
        be taken again at once), then the namespace, then this host's part in the store."""
        self._remove_vxlan(net)
        if net.netns is not None:
            self.netlink.remove_netns(net.netns)
        if any(ipaddress.ip_network(s).version == 4 for s in net.subnets):
            self.registry.leave(overlay_id(net), net.id)
        if net.options.encrypted:
            self._retire_wireguard_unless_used(net.id, others)

    # --- CreateEndpoint / Join / DeleteEndpoint ------------------------------------
    def plan_endpoint(self, net: NetworkRecord, ep: EndpointRecord) -> EndpointRecord:
        if _ipv4(ep) is None:
            raise BadRequest(f"endpoint {ep.id[:12]} on overlay network {net.id[:12]} has no IPv4 "
                             "address: an overlay endpoint needs one for the other hosts")
        return replace(ep, host_if=naming.host_veth(ep.id))

    def create_endpoint(self, net: NetworkRecord, ep: EndpointRecord,
                        undo: ExitStack) -> EndpointRecord:
        """The veth pair (bridge end in the network's namespace), then the endpoint published
        for the other hosts: the write fails fast, naming the store, when it is unreachable."""
        assert net.netns is not None and ep.host_if is not None
        self._ensure_kernel(net)  # a namespace lost since the plugin started is made again
        inside = self.netlink.within(net.netns)
        inside.remove_link(ep.host_if)  # a leftover of an interrupted earlier attempt
        self.netlink.remove_link(ep.peer_if)
        self.netlink.add_veth(ep.host_if, ep.peer_if, net.mtu, BRIDGE, ep.mac, netns=net.netns)
        undo.callback(self._remove_links, net, ep)
        oid = overlay_id(net)
        self.registry.publish(oid, self._peer(net, ep))
        undo.callback(self.registry.withdraw, oid, ep.id)
        return ep

    def _peer(self, net: NetworkRecord, ep: EndpointRecord) -> Peer:
        assert net.vtep is not None
        return Peer(self.runtime.host, ep.id, net.id, str(_ipv4(ep)), ep.mac.lower(), net.vtep)

    def join(self, net: NetworkRecord, ep: EndpointRecord, sandbox: str) -> JoinAnswer:
        """Re-make the pair if its container end is gone, unless this Join repeats one for the
        sandbox that end is already in (then the pair is alive). No gateway: Docker adds its
        docker_gwbridge for the way out and for -p (none on an --internal network)."""
        assert net.netns is not None and ep.host_if is not None
        if self.netlink.link(ep.peer_if) is None:
            inside = self.netlink.within(net.netns)
            repeated = ep.sandbox == sandbox and inside.link(ep.host_if) is not None
            if not repeated:
                inside.remove_link(ep.host_if)
                self.netlink.add_veth(ep.host_if, ep.peer_if, net.mtu, BRIDGE, ep.mac, netns=net.netns)
        return JoinAnswer(ep.peer_if, net.options.iface_prefix, None, None, False)

    def delete_endpoint(self, net: NetworkRecord | None, ep: EndpointRecord) -> None:
        """The peer record first (the other hosts stop sending here), then the links."""
        if net is not None and any(ipaddress.ip_network(s).version == 4 for s in net.subnets):
            self.registry.withdraw(overlay_id(net), ep.id)
        else:
            self.registry.withdraw_everywhere(ep.id)
        self._remove_links(net, ep)

    def _remove_links(self, net: NetworkRecord | None, ep: EndpointRecord) -> None:
        # Docker moves the container end back to the host namespace when the container goes.
        self.netlink.remove_link(ep.peer_if)
        netns = net.netns if net is not None else naming.overlay_netns(ep.network_id)
        try:
            self.netlink.within(netns).remove_link(ep.host_if or naming.host_veth(ep.id))
        except NoSuchNamespace:
            pass  # the namespace went with its network

    # --- plugin start --------------------------------------------------------------
    def restore(self, networks: Sequence[NetworkRecord],
                endpoints: dict[str, list[EndpointRecord]]) -> None:
        for net in networks:
            try:
                self._restore(net, endpoints.get(net.id, []))
            except Exception as exc:  # one network's trouble must not keep the others down
                log.error("overlay network %s cannot be restored: %s", net.id[:12],
                          describe_error(exc))
        self._tidy_at_start(networks)
        if networks:
            self.runtime.sync()

    def _tidy_at_start(self, networks: Sequence[NetworkRecord]) -> None:
        """This host's records of the old key layout go (restore re-published what it has),
        and with no overlay here its heartbeat too: a killed plugin's would stay for good."""
        if not self.runtime.settings.shared_store:
            return
        try:
            self.registry.drop_legacy_records()
            if not networks:
                self.registry.retire_beat()
        except PynetError as exc:  # tidying; the next start tries again
            log.warning("overlay: could not tidy this host's old records at start: %s", exc.message)

    def restore_network(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        self._restore(net, endpoints)
        self.runtime.sync(overlay_id(net))

    def _restore(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> None:
        """Kernel objects as recorded, this host's member and peer records exactly its
        recorded endpoints (ones removed while pynet was down go, missing ones come back)."""
        self._ensure_kernel(net)
        inside = self.netlink.within(net.netns or "")
        oid = overlay_id(net)
        view = self.registry.view(oid)
        mine = view.members.get(self.runtime.host)
        # Written again unless it is exactly this host's own (a forged or stale one is not).
        if mine is None or replace(mine, attempt="") != self._member(net):
            _, link = self.runtime.underlay()
            self.registry.join(oid, self._member(net), vni=net.vni, mtu=net.mtu, default_mtu=net.mtu,
                               mtu_limit=max_mtu(link.mtu, net.options.encrypted),
                               port=self.runtime.port_for(net.options.encrypted),
                               encrypted=net.options.encrypted)
        recorded = {ep.id: ep for ep in endpoints}
        for peer in view.peers:
            if peer.host == self.runtime.host and peer.endpoint not in recorded:
                log.warning("overlay %s: withdrawing endpoint %s, removed while pynet was down",
                            oid, peer.endpoint[:12])
                _each_peer(peer.endpoint, "withdrawn", self.registry.withdraw, oid, peer.endpoint)
        published = {p.endpoint: p for p in view.peers if p.host == self.runtime.host}
        for ep in endpoints:  # peer by peer: one that fails leaves the others restored
            _each_peer(ep.id, "restored", self._restore_endpoint, net, ep, inside, published.get(ep.id))

    def _restore_endpoint(self, net: NetworkRecord, ep: EndpointRecord, inside: Netlink,
                          known: Peer | None) -> None:
        if ep.host_if is not None and inside.link(ep.host_if) is not None:
            inside.ensure_port(ep.host_if, BRIDGE)
        else:
            log.warning("endpoint %s on overlay network %s has lost its veth %s; its container "
                        "must be restarted to regain connectivity", ep.id[:12], net.id[:12], ep.host_if)
        peer = self._peer(net, ep)
        if known is None or replace(known, attempt="") != peer:
            self.registry.publish(overlay_id(net), peer)

    def _ensure_kernel(self, net: NetworkRecord) -> None:
        assert net.netns is not None
        if net.options.encrypted:  # restore: the link first (re-adopted when it outlived the plugin)
            plane = self.runtime.wireguard
            if plane is None or plane.address is None:
                _, link = self.runtime.underlay()
                self._ensure_wireguard(net, link.mtu)
        with self._kernel_lock:
            if self.netlink.ensure_netns(net.netns):
                log.warning("re-created namespace %s for overlay network %s", net.netns, net.id[:12])
            self._ensure_devices(net)

    def owned_links(self, net: NetworkRecord, endpoints: list[EndpointRecord]) -> set[str]:
        # In the host namespace: the container ends not yet moved, and the VXLAN device for
        # the moment between its creation and its move. The endpoints' host ends are made
        # right inside net.netns (Netlink.add_veth with netns), never here.
        return {naming.vxlan(net.id)} | {ep.peer_if for ep in endpoints}

    # --- pynet doctor, pynet networks ------------------------------------------------
    def check(self, net: NetworkRecord, endpoints: list[EndpointRecord],
              container_name: ContainerName) -> list[Difference]:
        """The namespace and its devices, then the peers against the store (check.py)."""
        return check_network(self.netlink, self.runtime, net, endpoints)

    def describe(self, net: NetworkRecord) -> Carrier:
        return Carrier(f"vni {net.vni}" if net.vni is not None else "vni -")


def _each_peer(endpoint: str, what: str, call, *args) -> None:
    try:
        call(*args)
    except BackendUnavailable:
        raise  # the store is down: restore as a whole is retried
    except Exception as exc:  # one endpoint's trouble must not keep the others down
        log.error("overlay endpoint %s could not be %s: %s", endpoint[:12], what,
                  describe_error(exc))


def _ipv4(ep: EndpointRecord) -> ipaddress.IPv4Address | None:
    for address in ep.addresses:
        iface = ipaddress.ip_interface(address)
        if iface.version == 4:
            return iface.ip
    return None

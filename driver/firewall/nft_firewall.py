"""The firewall pynet runs with: the iptables shim plus pynet's own nftables table.

* ForwardAccept (iptables chain PYNET-FORWARD) only lifts Docker's FORWARD policy DROP for
  traffic in and out of pynet bridges; it decides nothing.
* The `inet pynet` table (nft_rules.py) holds every decision: isolation, icc, internal
  networks, outbound NAT, published ports and hairpin.
* HostPorts holds a socket per published host port; KernelKnobs sets ip_forward,
  route_localnet and hairpin mode.

State is in memory (networks, published ports per endpoint) and mirrors the store: the
service calls network_added/publish/... as records change, and restore calls sync() with
the recorded networks and endpoints when the plugin starts. Only bridge networks have
rules; others are ignored.

Every change is one nft transaction, in-process (libnftables, nft.py), and touches only
what changed: a network adds or deletes its own set elements, a published port its map
element (nft_rules.py), each by its exact key. The table is built whole from the state at
plugin start (sync), for the first network, and when an incremental change is refused
(someone deleted the table or an element by hand): then the whole table is rebuilt from
the state the change leads to, in one transaction again. A change that fails both ways
leaves the kernel and the state as they were.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from typing import Iterable

from pynet_core.errors import BadRequest, PynetError
from driver.models import EndpointRecord, NetworkRecord
from driver.portmap import ANY, PortBinding, PortRequest

from .forward_accept import FirewallError, ForwardAccept
from .nft import Nft
from .nft_rules import (Element, NetworkPolicy, Published, ScriptValueError, add_elements,
                        delete_elements, delete_table, network_elements, port_element, ruleset,
                        script, set_uplinks)
from .ports import HostPorts
from .sysctl import KernelKnobs

log = logging.getLogger(__name__)

# Re-taking host ports busy at restore: every RETAKE_INTERVAL s, RETAKE_ATTEMPTS times.
RETAKE_INTERVAL = 0.2
RETAKE_ATTEMPTS = 25
UPLINK_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")


class NftFirewall:
    def __init__(self, forward: ForwardAccept | None = None, nft: Nft | None = None,
                 knobs: KernelKnobs | None = None, ports: HostPorts | None = None) -> None:
        self.forward = forward if forward is not None else ForwardAccept()
        self.nft = nft if nft is not None else Nft()
        self.knobs = knobs if knobs is not None else KernelKnobs()
        self.ports = ports if ports is not None else HostPorts()
        self._networks: dict[str, NetworkRecord] = {}
        # endpoint id -> (network id, host interface, bindings)
        self._published: dict[str, tuple[str, str, tuple[PortBinding, ...]]] = {}
        # Recorded ports a restore could not re-take yet (busy): retried in the background.
        self._awaiting: dict[str, tuple[str, str, tuple[PortBinding, ...]]] = {}
        self._lock = threading.RLock()
        # Whether this process has built the table (the first change builds it whole).
        self._table = False

    # --- networks ------------------------------------------------------------------
    def network_added(self, network: NetworkRecord) -> None:
        if network.kind != "bridge":
            return
        with self._lock:
            before = dict(self._networks)
            old = before.get(network.id)
            self._networks[network.id] = network
            try:
                self._prepare_kernel(network)
                self.forward.network_added(network)
                changed = old is not None and NetworkPolicy.of(old) != NetworkPolicy.of(network)
                gone = self._network_elements(old) if changed else []
                self._change([*delete_elements(gone),
                              *add_elements(self._network_elements(network)),
                              *set_uplinks(self._uplinks())])
            except BaseException:
                # The state follows the kernel, never runs ahead of it: a network whose rules
                # did not go in leaves nothing (a retry on its bridge must not inherit it).
                self._networks = before
                self._try(self.forward.sync, list(before.values()))
                raise

    def network_removed(self, network: NetworkRecord) -> None:
        if network.kind != "bridge":
            return
        with self._lock:
            found = network.found_bridge
            if found is not None and not found.route_localnet:
                # A user's bridge is left as found; off before the rule that guards it goes.
                self.knobs.reset_route_localnet(network.bridge)
            self._awaiting = {e: v for e, v in self._awaiting.items() if v[0] != network.id}
            gone: list[Element] = []
            for eid in [e for e, (nid, _, _) in self._published.items() if nid == network.id]:
                log.warning("network %s removed with published ports of endpoint %s: removing "
                            "them too", network.id[:12], eid[:12])
                nid, _, bindings = self._published.pop(eid)
                self._release(bindings)
                gone += self._port_elements(nid, eid, bindings)
            known = self._networks.pop(network.id, None)
            self.forward.network_removed(network)
            if known is not None:
                gone += self._network_elements(known)
            if not self._networks:
                self.nft.apply(delete_table())
                self._table = False
            elif gone:
                self._change(delete_elements(gone))

    # --- published ports -----------------------------------------------------------
    def publish(self, network: NetworkRecord, endpoint: EndpointRecord,
                requests: Iterable[PortRequest]) -> tuple[PortBinding, ...]:
        """ProgramExternalConnectivity: hold a host port for each request and DNAT it to the
        endpoint. All or nothing: a conflict raises with no port held and no rule written."""
        requests = tuple(requests)
        with self._lock:
            if network.id not in self._networks:
                raise FirewallError(f"network {network.id[:12]} has no firewall rules to publish on")
            if endpoint.id in self._published:
                raise FirewallError(f"endpoint {endpoint.id[:12]} already has published ports")
            self._awaiting.pop(endpoint.id, None)
            bindings: list[PortBinding] = []
            try:
                for req in requests:
                    bindings.append(self._bind(network, endpoint, req, bindings))
                if bindings:
                    if any(not b.routed for b in bindings):
                        self.knobs.ensure_hairpin(endpoint.host_if)
                    self._published[endpoint.id] = (network.id, endpoint.host_if, tuple(bindings))
                    self._change(add_elements(self._port_elements(network.id, endpoint.id,
                                                                  bindings)))
            except BaseException:
                self._published.pop(endpoint.id, None)
                self._release(bindings)
                raise
            return tuple(bindings)

    def _bind(self, network: NetworkRecord, endpoint: EndpointRecord, req: PortRequest,
              earlier: list[PortBinding]) -> PortBinding:
        """One request's binding. nat mode: a host port held (the same one as the request's
        other-family twin already bound, as Docker gives 0.0.0.0 and :: one port). routed
        mode: no host port; the container port is opened at the container's address."""
        family = ipaddress.ip_address(req.host_ip).version
        container_ip = _address_of(endpoint, family)
        mode = network.options.gateway_mode_ipv4 if family == 4 else network.options.gateway_mode_ipv6
        if mode == "routed":
            if req.host_port_start or req.host_ip != ANY[family]:
                log.warning("endpoint %s: %s is published in routed mode: at the container's "
                            "address, not on a host address or port", endpoint.id[:12],
                            req.describe())
            return PortBinding(req.proto, container_ip, req.container_port, req.host_ip,
                               req.container_port, req.host_port_start, req.host_port_end,
                               routed=True)
        twin = next((b for b in earlier if not b.routed and b.proto == req.proto
                     and b.container_port == req.container_port
                     and (b.host_port_start, b.host_port_end) == (req.host_port_start, req.host_port_end)
                     and b.host_ip == ANY[b.family] and req.host_ip == ANY[family]
                     and b.family != family), None)
        if twin is not None:
            port = self.ports.reserve(req.proto, req.host_ip, twin.host_port, twin.host_port)
        else:
            port = self.ports.reserve(req.proto, req.host_ip, req.host_port_start,
                                      req.host_port_end)
        return PortBinding(req.proto, container_ip, req.container_port, req.host_ip, port,
                           req.host_port_start, req.host_port_end)

    def unpublish(self, network: NetworkRecord, endpoint: EndpointRecord) -> None:
        """RevokeExternalConnectivity (and DeleteEndpoint): absent is fine."""
        with self._lock:
            self._awaiting.pop(endpoint.id, None)
            entry = self._published.pop(endpoint.id, None)
            if entry is None:
                return
            self._release(entry[2])
            try:
                self._change(delete_elements(self._port_elements(entry[0], endpoint.id, entry[2])))
            except BaseException:
                # The DNAT is still in place: keep it known, so a retry removes it (the host
                # ports are released either way; nothing else can be listening there).
                self._published[endpoint.id] = entry
                raise

    def published(self) -> dict[str, tuple[PortBinding, ...]]:
        with self._lock:
            return {eid: b for eid, (_, _, b) in self._published.items()}

    # --- plugin start --------------------------------------------------------------
    def sync(self, networks: Iterable[NetworkRecord],
             endpoints: Iterable[EndpointRecord] = ()) -> None:
        """Make the kernel match the records: rules of these networks and the published
        ports of these endpoints, nothing else (rules of vanished networks go)."""
        with self._lock:
            self._networks = {n.id: n for n in networks if n.kind == "bridge"}
            wanted: dict[str, tuple[str, str, tuple[PortBinding, ...]]] = {}
            for ep in endpoints:
                if ep.published and ep.network_id in self._networks:
                    wanted[ep.id] = (ep.network_id, ep.host_if, ep.published)
            keep = {(b.proto, b.host_ip, b.host_port) for _, _, bs in wanted.values() for b in bs
                    if not b.routed}
            for key in self.ports.held() - keep:
                self.ports.release(*key)
            self._published = {}
            busy: dict[str, tuple[str, str, tuple[PortBinding, ...]]] = {}
            for eid, (nid, host_if, bindings) in wanted.items():
                if self._retake(eid, bindings):
                    self._published[eid] = (nid, host_if, bindings)
                    self._try(self.knobs.ensure_hairpin, host_if)
                else:
                    busy[eid] = (nid, host_if, bindings)
            self._awaiting = busy
            if busy:
                self._retake_later()
            for net in self._networks.values():
                self._try(self._prepare_kernel, net)
            self.forward.sync(list(self._networks.values()))
            self._rebuild()

    def _retake(self, eid: str, bindings: tuple[PortBinding, ...], last_try: bool = False) -> bool:
        taken: list[PortBinding] = []
        for b in (b for b in bindings if not b.routed):
            try:
                self.ports.hold(b.proto, b.host_ip, b.host_port)
                taken.append(b)
            except PynetError as exc:
                if last_try:
                    log.error("endpoint %s: cannot publish %s again after restart: %s; its ports "
                              "stay unpublished until the container is restarted",
                              eid[:12], b.describe(), exc.message)
                self._release(taken)
                return False
        return True

    def _retake_later(self) -> None:
        """Ports still held by a previous plugin process that is exiting (a gunicorn worker
        being replaced) are re-taken in the background for a while, so restore never sleeps
        before the plugin answers. An endpoint unpublished or published anew meanwhile
        leaves the list (unpublish, publish and network_removed take it out)."""
        def retry() -> None:
            for attempt in range(RETAKE_ATTEMPTS):
                time.sleep(RETAKE_INTERVAL)
                with self._lock:
                    for eid, (nid, host_if, bindings) in list(self._awaiting.items()):
                        if self._retake(eid, bindings, last_try=attempt == RETAKE_ATTEMPTS - 1):
                            self._published[eid] = (nid, host_if, bindings)
                            self._try(self.knobs.ensure_hairpin, host_if)
                            self._try(self._change, add_elements(
                                self._port_elements(nid, eid, bindings)))
                            del self._awaiting[eid]
                    if not self._awaiting:
                        return
            with self._lock:
                self._awaiting = {}
        threading.Thread(target=retry, name="pynet-retake-ports", daemon=True).start()

    def remove_all(self) -> None:
        """Take every pynet rule away (tests, uninstall): the table, the shim, the ports."""
        with self._lock:
            self._networks, self._published, self._awaiting = {}, {}, {}
            self.ports.release_all()
            self.nft.apply(delete_table())
            self._table = False
            self.forward.remove_all()

    # --- internals -----------------------------------------------------------------
    def rules(self) -> str:
        """The transaction that builds the whole table from the current state (golden-tested)."""
        with self._lock:
            published = [Published(nid, eid, b) for eid, (nid, _, bs) in self._published.items()
                         for b in bs]
            nets = [NetworkPolicy.of(n) for n in self._networks.values()]
            return ruleset(nets, published, self._uplinks() if nets else ())

    def _rebuild(self) -> None:
        self.nft.apply(self.rules())
        self._table = bool(self._networks)

    def _change(self, lines: list[str]) -> None:
        """One change, as one transaction of just these lines; the whole table instead when
        this process has not built it yet, or when nft refuses the lines (the table or an
        element was changed behind pynet's back)."""
        if not self._table:
            self._rebuild()
            return
        if not lines:
            return
        try:
            self.nft.apply(script(lines))
        except FirewallError as exc:
            log.warning("nft refused an incremental change (%s); rebuilding table inet pynet "
                        "from pynet's state", exc.message)
            self._rebuild()

    @staticmethod
    def _network_elements(network: NetworkRecord) -> list[Element]:
        try:
            return network_elements(NetworkPolicy.of(network))
        except ScriptValueError as exc:
            raise BadRequest(f"network {network.id[:12]}: {exc}") from None

    @staticmethod
    def _port_elements(nid: str, eid: str, bindings: Iterable[PortBinding]) -> list[Element]:
        return [port_element(Published(nid, eid, b)) for b in bindings]

    def _uplinks(self) -> set[str]:
        names = set()
        for name in self.knobs.uplinks():
            if UPLINK_NAME.fullmatch(name):
                names.add(name)
            else:
                log.warning("bridge %r carries a default route but its name cannot be written "
                            "into an nft set: pynet networks will not reach it", name)
        return names

    def _prepare_kernel(self, network: NetworkRecord) -> None:
        if not network.options.internal:
            self.knobs.ensure_ip_forward()
            self.knobs.ensure_route_localnet(network.bridge)
            if any(ipaddress.ip_network(s).version == 6 for s in network.subnets):
                self.knobs.ensure_ipv6_forward()

    def _release(self, bindings: Iterable[PortBinding]) -> None:
        for b in bindings:
            if not b.routed:  # a routed binding holds no host port
                self.ports.release(b.proto, b.host_ip, b.host_port)

    @staticmethod
    def _try(fn, *args) -> None:
        try:
            fn(*args)
        except PynetError as exc:
            log.warning("%s", exc.message)


def _address_of(endpoint: EndpointRecord, family: int) -> str:
    for address in endpoint.addresses:
        iface = ipaddress.ip_interface(address)
        if iface.version == family:
            return str(iface.ip)
    raise BadRequest(f"endpoint {endpoint.id[:12]} has no IPv{family} address, so it cannot "
                     f"publish ports on IPv{family} host addresses")

"""The composition root: the one place that knows both drivers.

create_app() builds the outside world (store, netlink, firewall, Docker's API) unless a test
hands it in, wires the NetworkDriver and IpamDriver services onto one plugin socket, and
starts the background jobs: the restore gate's retries and the leak check.
"""
from __future__ import annotations

import ctypes
import gc
import ipaddress
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flask import Flask

from driver.firewall.api import Firewall
from driver.firewall.dns_guard import DnsGuard
from driver.kinds import build_kinds
from driver.netlink.api import Netlink
from driver.kinds.overlay.runtime import OverlayRuntime, OverlaySettings
from driver.restore import restore
from driver.routes import network_handlers
from driver.service import NetworkService
from driver.leaks import DockerNetworks, NetworkLeakCheck
from driver.names.server import DnsServer, Limits
from driver.names.service import ContainerSource, Names
from driver.names.store_names import retire as retire_names
from driver.swarm import SwarmNetworks
from ipam_driver.claim_owners import ClaimOwners
from ipam_driver.docker_addresses import DockerView
from ipam_driver.leaks import AddressLeakCheck
from ipam_driver.routes import ipam_handlers
from ipam_driver.service import IpamService

from . import last_seen, metrics
from .ops.address_users import EndpointsNamingAddress
from .jobs import every
from .plugin_api import plugin_app
from .readiness import RestoreGate
from pynet_core.retry_queue import RetryQueue
from .settings import Settings
from pynet_core.store.api import Store

log = logging.getLogger("pynet")

ACTIVATE = {"Implements": ["NetworkDriver", "IpamDriver"]}


@dataclass
class Deps:
    """Everything that touches the outside world, built once and passed in."""
    store: Store
    netlink: Netlink
    firewall: Firewall
    # What dockerd says of its networks (None: it could not be asked), for the leak check;
    # None here: no leak check.
    docker_addresses: Callable[[], DockerView | None] | None = None
    # Which networks and endpoints Docker has (None: dockerd could not be asked), for the
    # network leak check; None here: no such check.
    docker_networks: Callable[[], DockerNetworks | None] | None = None
    # Encrypted overlays: makes the WireGuard port's adapter (driver/wireguard/choice.py) on
    # first use, and loads this host's keys (driver/wireguard/keys.py); None: -o encrypted is
    # refused (never served in clear).
    wireguard_links: Callable[[], object] | None = None
    wireguard_keys: Callable[[str], object] | None = None
    # The firewall table that keeps underlay frames off encrypted overlays' VXLAN port
    # (driver/firewall/wireguard_guard.py); and the link's name (tests give each simulated
    # host its own: wireguard-go's UAPI socket path is not per network namespace).
    wireguard_guard: object | None = None
    wireguard_link: str | None = None
    # keys.rotate(state_dir, apply) (None: driver/wireguard/keys.py's).
    wireguard_rotate: Callable[[str, Callable], object] | None = None
    # What dockerd lists of its running containers and their networks, and its events, for
    # pynet DNS (--dns-addr; driver/names/); None here: DNS names are not served.
    containers: ContainerSource | None = None
    # pynet DNS's firewall table (driver/firewall/dns_guard.py); None: none (tests).
    dns_guard: DnsGuard | None = None


@dataclass
class Background:
    """The jobs create_app started, so a test (or a shutdown) can stop them."""
    gate: RestoreGate
    stops: list[threading.Event] = field(default_factory=list)
    servers: list = field(default_factory=list)  # the metrics listener
    dns: list = field(default_factory=list)      # the DNS server (--dns-addr)

    def stop(self) -> None:
        for stop in self.stops:
            stop.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for server in self.dns:
            server.close()
        self.gate.close()


def build_deps(settings: Settings) -> Deps:
    from driver.firewall.nft_firewall import NftFirewall
    from driver.docker_networks import DockerNetworkList
    from driver.netlink.pyroute2_netlink import Pyroute2Netlink
    from ipam_driver.docker_addresses import DockerAddresses

    from driver.firewall.wireguard_guard import WireGuardGuard
    from driver.wireguard.choice import make_links

    from .stores import open_store

    # --store local (sqlite in --state-dir) or consul; every call timed for the metrics.
    store = metrics.MeasuredStore(open_store(settings))
    containers = guard = None
    if settings.dns_addrs:
        from driver.names.docker_names import DockerNames
        containers = DockerNames(settings.docker_host)
        guard = DnsGuard(settings.dns_addrs, settings.dns_allow_from)
    else:
        # A pynet that served DNS before left its table (nothing removes it at exit): gone,
        # so its drop rules do not outlive the server they guarded.
        DnsGuard(()).remove(quiet=True)
    return Deps(store=store, netlink=Pyroute2Netlink(), firewall=NftFirewall(),
                docker_addresses=DockerAddresses(settings.docker_host,
                                                 ipam_driver=Path(settings.socket).stem),
                docker_networks=DockerNetworkList(settings.docker_host),
                # Chosen at the first encrypted overlay (--wireguard=kernel without the module
                # is then refused, naming the flag); wireguard-go logs in the state directory.
                wireguard_links=lambda: make_links(settings.wireguard,
                                                   log_dir=Path(settings.state_dir) / "wireguard"),
                wireguard_guard=WireGuardGuard(),
                containers=containers, dns_guard=guard)


def overlay_settings(settings: Settings) -> OverlaySettings:
    # Only Consul is shared by every host; the local store (sqlite) is this host's alone.
    return OverlaySettings(shared_store=settings.store == "consul",
                           data_path_addr=settings.data_path_addr, port=settings.vxlan_port,
                           peer_timeout=settings.overlay_peer_timeout,
                           wireguard=settings.wireguard, wireguard_port=settings.wireguard_port,
                           encrypted_port=settings.encrypted_vxlan_port,
                           wireguard_subnet=settings.wireguard_subnet)


def _restore_and_return_memory(network: NetworkService, netlink: Netlink) -> None:
    """Restore, then hand the memory it freed back to the system. Restore reads every
    record and dumps every link (pyroute2 messages are large Python objects); glibc keeps
    what they freed, so a plugin restored with 1,000 endpoints stayed at 174 MiB RSS
    against 122 MiB before the restart (issue 22). malloc_trim(0) gives it back (125 MiB)."""
    restore(network, netlink)
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (not musl)
    if trim is not None:
        trim(0)


def create_app(settings: Settings | None = None, deps: Deps | None = None,
               restore_on_start: bool = True, overlay: bool = True) -> Flask:
    """`overlay`: serve `-o type=overlay` (on by default). Its peer watcher runs only with a
    shared store (--store consul); with the local store the overlay kind refuses the network,
    naming --store consul. overlay=False: a plugin without the kind (some tests)."""
    settings = settings or Settings()
    deps = deps or build_deps(settings)
    retries = RetryQueue()
    runtime = OverlayRuntime(deps.store, settings.host, deps.netlink, overlay_settings(settings),
                             retries) if overlay else None
    ipam = IpamService(deps.store, settings.host, settings.default_pools,
                       block_size=settings.ipam_block_size,
                       host_routes=deps.netlink.routes)
    network = NetworkService(deps.store, settings.host,
                             build_kinds(deps.netlink, deps.firewall, runtime, ipam.holds_pool),
                             retries, scope=settings.scope)
    if runtime is not None and deps.wireguard_links is not None and runtime.settings.shared_store:
        from driver.kinds.overlay.encryption import WireGuardPlane
        from driver.kinds.overlay.tunnels import LINK
        from driver.wireguard.keys import load_or_create, rotate
        runtime.attach_wireguard(WireGuardPlane(
            runtime.registry, settings.host, subnet=settings.wireguard_subnet,
            port=settings.wireguard_port, state_dir=settings.state_dir, links=deps.wireguard_links,
            keys=deps.wireguard_keys or load_or_create, link=deps.wireguard_link or LINK,
            guard=deps.wireguard_guard, vxlan_port=settings.encrypted_vxlan_port,
            rotate_keys=deps.wireguard_rotate or rotate))
        runtime.wireguard.on_peers, runtime.wireguard.on_rotated = metrics.wireguard_peers, metrics.wireguard_rotated
    if runtime is not None:
        # The overlay believes its own side from this host's records, and a peer's address
        # only if the IPAM's claim is that peer's host's (driver/kinds/overlay/admission.py).
        runtime.wire(network.ledger, ClaimOwners(deps.store))
    # With the store down, start anyway: restore is retried and calls answer 503 until then.
    gate = RestoreGate(metrics.timed_restore(lambda: _restore_and_return_memory(network, deps.netlink)),
                       restored=not restore_on_start)
    gate.start()
    background = Background(gate)
    if runtime is not None and runtime.settings.shared_store:
        runtime.watcher.on_synced = metrics.overlay_synced
        background.stops.append(runtime.watcher.start())
        log.info("overlay: peer watcher started (VXLAN port %d, peer timeout %g s)",
                 settings.vxlan_port, settings.overlay_peer_timeout)
    if deps.docker_addresses is not None and settings.leak_check_interval > 0:
        # An address goes with the endpoint record naming it, or not at all (pynet/ops/address_users.py).
        check = AddressLeakCheck(deps.store, settings.host, deps.docker_addresses, ipam,
                          grace=settings.leak_grace, users=EndpointsNamingAddress(network))
        background.stops.append(every(settings.leak_check_interval,
                                      lambda: metrics.leak_released(check.check_once()), "leak check"))
        log.info("leak check: every %g s against dockerd at %s, grace %g s",
                 settings.leak_check_interval, settings.docker_host, settings.leak_grace)
    if deps.docker_networks is not None and settings.leak_check_interval > 0:
        # The same schedule and grace: a network or endpoint Docker abandoned is a leak too.
        network_leaks = NetworkLeakCheck(network, deps.docker_networks, grace=settings.leak_grace)
        background.stops.append(every(settings.leak_check_interval, network_leaks.check_once,
                                      "network leak check"))
    if settings.store == "consul":
        # With a shared store, `pynet ipam check` names the claims of hosts long unseen.
        background.stops.append(every(last_seen.INTERVAL, lambda: last_seen.report(deps.store, settings.host),
                                      "last-seen report", at_once=True, retry_after=last_seen.RETRY))
    if runtime is not None and runtime.wireguard is not None and settings.wireguard_rotate_interval > 0:
        plane = runtime.wireguard
        # Only while a link exists: a host without encrypted overlays has no sessions to renew.
        background.stops.append(every(settings.wireguard_rotate_interval,
                                      lambda: plane.rotate() if plane.address is not None else None,
                                      "WireGuard key rotation"))
        log.info("encrypted overlays: this host's WireGuard key rotates every %g s",
                 settings.wireguard_rotate_interval)
    if settings.dns_addrs and deps.containers is not None:
        start_dns(settings, deps, network, background)
    else:
        # Names an earlier run with --dns-addr stored are no longer this host's word.
        threading.Thread(target=retire_names, args=(deps.store, settings.host),
                         name="pynet-names-retire", daemon=True).start()
    if settings.metrics_addr:
        server = metrics.serve(settings.metrics_addr, settings.metrics_allow_remote, deps.store,
                               settings.host)
        background.servers.append(server)

    handlers = {"Plugin.Activate": lambda b: ACTIVATE,
                **network_handlers(network, settings.scope,
                                   SwarmNetworks(tuple(network.kinds), runtime)),
                **ipam_handlers(ipam),
                # `pynet overlay rotate-key` (pynet/ops/overlay.py), over the plugin socket.
                "Pynet.RotateWireGuardKey": lambda b: rotate_key(runtime)}
    app = plugin_app(handlers, gate)
    app.extensions["pynet"] = {"network": network, "ipam": ipam, "deps": deps, "gate": gate,
                               "background": background, "overlay": runtime}
    return app


def rotate_key(runtime: OverlayRuntime | None) -> dict:
    """Rotate this host's WireGuard key now (encryption.WireGuardPlane.rotate)."""
    from pynet_core.errors import BadRequest
    if runtime is None or runtime.wireguard is None:
        raise BadRequest("this plugin serves no encrypted overlays: there is no WireGuard key to rotate")
    return runtime.wireguard.rotate()


class _Removing:
    """Background.stop closes each of `dns`: the firewall table, and the server's metrics,
    go with the server."""

    def __init__(self, action: Callable[[], object]) -> None:
        self.close = action


def start_dns(settings: Settings, deps: Deps, network: NetworkService,
              background: Background) -> Names:
    """pynet DNS (docs/dns.md): the server on every --dns-addr, answering from the names of
    every host sharing the store, asked by this host's containers (by source address)."""
    assert deps.containers is not None
    server: DnsServer | None = None

    def answer_from(table) -> None:
        if server is not None:
            server.set_table(table)

    guard = deps.dns_guard
    names = Names(deps.store, settings.host, network.ledger, deps.containers,
                  settings.overlay_peer_timeout, answer_from,
                  on_interfaces=guard.update if guard is not None else None)
    # Another host's name is believed only for an address the IPAM says that host holds.
    names.watcher.claims = ClaimOwners(deps.store)
    server = DnsServer(list(settings.dns_addrs), asker_networks=names.networks_of,
                       upstreams=None if settings.dns_upstreams is None else list(settings.dns_upstreams),
                       allow_from=[ipaddress.ip_network(c) for c in settings.dns_allow_from],
                       limits=Limits(rate=settings.dns_rate, burst=2 * settings.dns_rate),
                       freebind=True)
    if guard is not None:
        # Before the first packet: only lo and docker_gwbridge until the first look adds
        # pynet's bridges (milliseconds later).
        guard.update({"docker_gwbridge"})
    server.start()  # a bind that fails (the port taken) stops pynet here, saying why
    background.dns.append(server)
    metrics.DNS.servers.append(server)
    background.dns.append(_Removing(lambda: metrics.DNS.servers.remove(server)))
    if guard is not None:
        background.dns.append(_Removing(guard.remove))
    background.stops.extend(names.start())
    log.info("DNS: serving names on %s, forwarding to %s",
             ", ".join(f"{h}:{p}" for h, p in server.addresses),
             ", ".join(f"{h}:{p}" for h, p in server.upstreams) or "nothing")
    return names

"""Prometheus metrics (the official prometheus_client library) on an opt-in listener.

`--metrics-addr` is off by default. It takes HOST:PORT or unix:PATH; a HOST that is not a
loopback address is refused unless --metrics-allow-remote says so (the page names every
network and pool on the host and has no authentication).

What is counted where:
- plugin calls by method and outcome, with latency (pynet/plugin_api.py);
- store calls by operation: latency and errors (MeasuredStore, wrapped around the store
  by the composition root);
- leak-check releases, restore duration, overlay syncs (the composition root's jobs);
- read from the store at each scrape (StateCollector), through the drivers' own record
  code: pools and claimed addresses per address space, endpoints per network of this
  host, overlay peers per overlay;
- pynet DNS (--dns-addr): its server's counters by outcome and the names it answers
  (DnsCollector, read from the running server at each scrape).
"""
from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from functools import partial
from http.server import HTTPServer
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler

from driver.kinds.overlay.registry import parse_views
from driver.ledger import endpoint_at, network_at
from ipam_driver import models as ipam_models
from ipam_driver.models import AddressClaim, AddressSpace
from pynet_core.errors import BadRecord
from pynet_core.store import bad_records, keys
from pynet_core.store.api import Entry, Op, Store

from .settings import check_addr

log = logging.getLogger(__name__)

T = TypeVar("T")

REGISTRY = CollectorRegistry(auto_describe=True)

# Plugin calls take milliseconds; a store stalled for seconds is what the upper buckets catch.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

PLUGIN_CALLS = Counter("pynet_plugin_calls", "Plugin calls answered, by method and outcome",
                       ["method", "outcome"], registry=REGISTRY)
PLUGIN_LATENCY = Histogram("pynet_plugin_call_duration_seconds", "Time to answer a plugin call",
                           ["method"], buckets=CALL_BUCKETS, registry=REGISTRY)
STORE_LATENCY = Histogram("pynet_store_call_duration_seconds", "Store calls, by operation",
                          ["op"], buckets=CALL_BUCKETS, registry=REGISTRY)
STORE_ERRORS = Counter("pynet_store_errors", "Store calls that raised (store unreachable, "
                       "timeout, refused)", ["op"], registry=REGISTRY)
LEAK_RELEASES = Counter("pynet_leak_check_releases", "What the leak check gave back "
                        "(address claims, pools)", ["what"], registry=REGISTRY)
SKIPPED_RECORDS = Counter("pynet_store_records_skipped", "Records read from the store that are "
                          "not what pynet writes, skipped where a list was read (logged once "
                          "per key and version)", ["kind"], registry=REGISTRY)
bad_records.listeners.append(lambda kind: SKIPPED_RECORDS.labels(kind).inc())
LEAK_CHECKS = Counter("pynet_leak_checks", "Leak checks run", registry=REGISTRY)
RESTORE_SECONDS = Gauge("pynet_restore_duration_seconds", "How long the last restore took",
                        registry=REGISTRY)
RESTORES = Counter("pynet_restores", "Restores run (plugin start, retries)", ["outcome"],
                   registry=REGISTRY)
OVERLAY_SYNC = Histogram("pynet_overlay_convergence_seconds", "Overlay peer syncs: from the "
                         "store change seen to the kernel's FDB and neighbour entries programmed",
                         buckets=CALL_BUCKETS, registry=REGISTRY)
OVERLAY_CHANGES = Counter("pynet_overlay_peer_entries_changed", "FDB and neighbour entries "
                          "the overlay watcher added or removed", registry=REGISTRY)


def outcome(status: int) -> str:
    if status == 200:
        return "ok"
    if status == 404:
        return "not_implemented"
    if status == 503:
        return "unavailable"
    return "refused" if status < 500 else "error"


def plugin_call(method: str, status: int, seconds: float) -> None:
    PLUGIN_CALLS.labels(method, outcome(status)).inc()
    PLUGIN_LATENCY.labels(method).observe(seconds)


def leak_released(released: list[str]) -> list[str]:
    LEAK_CHECKS.inc()
    for what in released:
        LEAK_RELEASES.labels("pool" if what.startswith("pool ") else "address").inc()
    return released


def timed_restore(restore):
    def run():
        started = time.monotonic()
        try:
            result = restore()
        except BaseException:
            RESTORES.labels("failed").inc()
            raise
        RESTORE_SECONDS.set(time.monotonic() - started)
        RESTORES.labels("ok").inc()
        return result
    return run


WIREGUARD_PEERS = Gauge("pynet_wireguard_peers", "Peers of this host's WireGuard link (encrypted "
                        "overlays); 0 without a link", registry=REGISTRY)
WIREGUARD_ROTATIONS = Counter("pynet_wireguard_key_rotations", "Rotations of this host's WireGuard "
                              "key (pynet overlay rotate-key, the schedule)", registry=REGISTRY)


def wireguard_peers(count: int) -> None:
    WIREGUARD_PEERS.set(count)


def wireguard_rotated() -> None:
    WIREGUARD_ROTATIONS.inc()


def overlay_synced(seconds: float, changed: int) -> None:
    OVERLAY_SYNC.observe(seconds)
    OVERLAY_CHANGES.inc(changed)


class MeasuredStore:
    """A store whose every call is timed and whose failures are counted (the contract of
    pynet_core/store/api.py unchanged). watch blocks by design: only its errors count."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _timed(self, op: str, fn, *args):
        started = time.monotonic()
        try:
            return fn(*args)
        except Exception:
            STORE_ERRORS.labels(op).inc()
            raise
        finally:
            STORE_LATENCY.labels(op).observe(time.monotonic() - started)

    def get(self, key: str) -> Entry | None:
        return self._timed("get", self._store.get, key)

    def list(self, prefix: str) -> list[Entry]:
        return self._timed("list", self._store.list, prefix)

    def create(self, key: str, value: str) -> bool:
        return self._timed("create", self._store.create, key, value)

    def cas(self, key: str, value: str, version: int) -> bool:
        return self._timed("cas", self._store.cas, key, value, version)

    def delete(self, key: str, version: int | None = None) -> bool:
        return self._timed("delete", self._store.delete, key, version)

    def transaction(self, ops: list[Op]) -> bool:
        return self._timed("transaction", self._store.transaction, ops)

    def watch(self, prefix: str, since: int, timeout: float) -> int:
        try:
            return self._store.watch(prefix, since, timeout)
        except Exception:
            STORE_ERRORS.labels("watch").inc()
            raise

    def close(self) -> None:
        self._store.close()


class DnsCollector:
    """pynet DNS's counters (driver/names/server.py `stats`: answered, forwarded, refused,
    rate limited, malformed...) and the size of its table, from the servers running now."""

    def __init__(self) -> None:
        self.servers: list = []

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        queries = CounterMetricFamily("pynet_dns_queries", "DNS queries pynet DNS handled, by "
                                      "outcome (answered, forwarded, refused_source, rate_limited, "
                                      "formerr, servfail, ...)", labels=["outcome"])
        names = GaugeMetricFamily("pynet_dns_records", "Container endpoints pynet DNS answers "
                                  "names of (this host's and the live hosts')")
        if not self.servers:
            return []
        totals: Tally[str] = Tally()
        for server in list(self.servers):
            totals.update(server.stats)
        for what, count in sorted(totals.items()):
            queries.add_metric([what], count)
        names.add_metric([], sum(len(server.table) for server in list(self.servers)))
        return [queries, names]


DNS = DnsCollector()
REGISTRY.register(DNS)


class StateCollector:
    """Gauges read from the store at scrape time (never cached: a scrape shows the store
    as it is). A store that cannot be read gives pynet_state_readable 0 and nothing else."""

    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.host = host

    def describe(self) -> Iterable:
        return []  # state metrics vary with the store; registered unchecked

    def collect(self) -> Iterable[GaugeMetricFamily]:
        readable = GaugeMetricFamily("pynet_state_readable", "Whether the store answered this scrape")
        try:
            spaces = self.store.list(keys.ipam_space(""))
            claims = self.store.list(keys.ipam_addrs_all())
            endpoints = self.store.list(keys.endpoints(self.host))
            networks = self.store.list(keys.networks(self.host))
            overlays = self.store.list(keys.overlay_hosts())
        except Exception as exc:
            log.warning("metrics: cannot read the store: %s", exc)
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        yield from self._pools(spaces)
        yield self._addresses(claims)
        yield from self._networks(networks, endpoints)
        yield self._overlay_peers(overlays)

    def _pools(self, spaces: list[Entry]) -> Iterable[GaugeMetricFamily]:
        pools = GaugeMetricFamily("pynet_pools", "Pools in the store, by address space",
                                  labels=["space"])
        held = GaugeMetricFamily("pynet_pools_held", "Pools this host holds, by address space",
                                 labels=["space"])
        for entry, space in _typed(spaces, partial(ipam_models.decode, AddressSpace)):
            name = entry.key[len(keys.ipam_space("")):]
            pools.add_metric([name], len(space.pools))
            held.add_metric([name], sum(1 for p in space.pools.values() if p.held_by(self.host)))
        yield pools
        yield held

    def _addresses(self, claims: list[Entry]) -> GaugeMetricFamily:
        allocated = GaugeMetricFamily("pynet_addresses_allocated", "Claimed addresses, by address "
                                      "space, pool and kind (endpoint, gateway, aux)",
                                      labels=["space", "pool", "kind"])
        tally: Tally = Tally(labels for _, labels in _typed(claims, _claim_labels))
        for labels, count in sorted(tally.items()):
            allocated.add_metric(list(labels), count)
        return allocated

    def _networks(self, networks: list[Entry], endpoints: list[Entry]) -> Iterable[GaugeMetricFamily]:
        nets = [net for _, net in _typed(networks, network_at)]
        eps = [ep for _, ep in _typed(endpoints, endpoint_at)]
        by_type = GaugeMetricFamily("pynet_networks", "This host's networks, by type",
                                    labels=["type"])
        for kind, count in sorted(Tally(n.kind for n in nets).items()):
            by_type.add_metric([kind], count)
        yield by_type
        per_net = GaugeMetricFamily("pynet_endpoints", "This host's endpoints, by network",
                                    labels=["network"])
        counts: Tally = Tally(ep.network_id for ep in eps)
        for nid in sorted({n.id for n in nets} | set(counts)):
            per_net.add_metric([nid[:12]], counts.get(nid, 0))
        yield per_net

    def _overlay_peers(self, overlays: list[Entry]) -> GaugeMetricFamily:
        peers = GaugeMetricFamily("pynet_overlay_peers", "Endpoints of other hosts on each "
                                  "overlay (what this host's VXLAN devices point at)",
                                  labels=["overlay"])
        remote: Tally = Tally()
        for oid, view in parse_views(overlays, report=lambda *_: None).items():
            remote[f"{oid.space}/{oid.subnet}"] += sum(1 for peer in view.peers if peer.host != self.host)
        for oid, count in sorted(remote.items()):
            if count:
                peers.add_metric([oid], count)
        return peers


def _claim_labels(entry: Entry) -> tuple[str, str, str]:
    """(space, pool, kind) of an address claim; BadRecord for a key or value pynet never writes."""
    space, pool, _ = ipam_models.claim_key(entry)
    return space, str(pool), ipam_models.decode(AddressClaim, entry).kind


def _typed(entries: list[Entry], parse: Callable[[Entry], T]) -> list[tuple[Entry, T]]:
    """(entry, record) of every entry the drivers' own record code reads. A bad record is left
    out without a word: the plugin's own reads log and count it
    (pynet_store_records_skipped_total); counted again at each scrape, that count would
    follow the scrape rate."""
    found = []
    for entry in entries:
        try:
            found.append((entry, parse(entry)))
        except BadRecord:
            pass
    return found


# --- the listener -------------------------------------------------------------------------
class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)  # http.server logs client_address[0]


class _TCPServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


def serve(addr: str, allow_remote: bool, store: Store, host: str) -> object:
    """Start the listener on a daemon thread; returns the server (shutdown() stops it)."""
    where, port = check_addr(addr, allow_remote)
    registry = CollectorRegistry()
    registry.register(_Forward(REGISTRY))
    registry.register(StateCollector(store, host))
    handler = MetricsHandler.factory(registry)
    if where == "unix":
        path = str(port)
        if os.path.exists(path):
            os.unlink(path)  # a socket a previous run left
        old = os.umask(0o177)  # root only, like the plugin socket
        try:
            server = _UnixHTTPServer(path, handler)
        finally:
            os.umask(old)
    else:
        family = socket.AF_INET6 if ":" in where else socket.AF_INET
        _TCPServer.address_family = family
        server = _TCPServer((where, int(port)), handler)
    threading.Thread(target=server.serve_forever, name="pynet-metrics", daemon=True).start()
    log.info("metrics: serving Prometheus metrics at %s", addr)
    return server


class _Forward:
    """The process-wide metrics inside the listener's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        return self.registry.collect()

"""Prometheus metrics (the official prometheus_client library) on an opt-in listener.

`--metrics-addr` is off by default. It takes HOST:PORT or unix:PATH; a HOST that is not a
loopback address is refused unless --metrics-allow-remote says so (the page names every
network and pool on the host and has no authentication).

What is counted where:
- plugin calls by method and outcome, with latency (pynet/plugin_api.py);
- store calls by operation: latency and errors (MeasuredStore, wrapped around the store
  by the composition root);
- leak-check releases, restore duration, overlay syncs (the composition root's jobs);
- read from the store at each scrape (StateCollector): pools and claimed addresses per
  address space, endpoints per network of this host, overlay peers per overlay.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import socketserver
import threading
import time
from collections import Counter as Tally
from http.server import HTTPServer
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler

from pynet_core.store import bad_records, keys, records
from pynet_core.store.api import Entry, Op, Store

log = logging.getLogger(__name__)

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
            peers = self.store.list(keys.overlay_hosts())
        except Exception as exc:
            log.warning("metrics: cannot read the store: %s", exc)
            readable.add_metric([], 0)
            yield readable
            return
        readable.add_metric([], 1)
        yield readable
        pools = GaugeMetricFamily("pynet_pools", "Pools in the store, by address space",
                                  labels=["space"])
        held = GaugeMetricFamily("pynet_pools_held", "Pools this host holds, by address space",
                                 labels=["space"])
        for entry in spaces:
            space = entry.key[len(keys.ipam_space("")):]
            data = _json(entry) or {}
            these = (data.get("pools") or {}).values()
            pools.add_metric([space], len(these))
            held.add_metric([space], sum(1 for p in these if _holds(p, self.host)))
        yield pools
        yield held
        allocated = GaugeMetricFamily("pynet_addresses_allocated", "Claimed addresses, by address "
                                      "space, pool and kind (endpoint, gateway, aux)",
                                      labels=["space", "pool", "kind"])
        tally: Tally = Tally()
        for entry in claims:
            space, pool, _ = keys.claimed_address_parts(entry.key)
            tally[(space, pool, str((_json(entry) or {}).get("kind", "unknown")))] += 1
        for labels, count in sorted(tally.items()):
            allocated.add_metric(list(labels), count)
        yield allocated
        nets = GaugeMetricFamily("pynet_networks", "This host's networks, by type",
                                 labels=["type"])
        by_type: Tally = Tally((_json(e) or {}).get("options", {}).get("type", "bridge")
                               for e in networks)
        for kind, count in sorted(by_type.items()):
            nets.add_metric([kind], count)
        yield nets
        per_net = GaugeMetricFamily("pynet_endpoints", "This host's endpoints, by network",
                                    labels=["network"])
        counts: Tally = Tally(e.key[len(keys.endpoints(self.host)):].split("/")[0] for e in endpoints)
        for nid in sorted({e.key[len(keys.networks(self.host)):] for e in networks} | set(counts)):
            per_net.add_metric([nid[:12]], counts.get(nid, 0))
        yield per_net
        overlay = GaugeMetricFamily("pynet_overlay_peers", "Endpoints of other hosts on each "
                                    "overlay (what this host's VXLAN devices point at)",
                                    labels=["overlay"])
        remote: Tally = Tally()
        for entry in peers:
            parsed = keys.parse_overlay_key(entry.key)
            if parsed and parsed.kind == keys.PEER and parsed.host != self.host:
                remote[f"{parsed.space}/{parsed.subnet}"] += 1
        for oid, count in sorted(remote.items()):
            overlay.add_metric([oid], count)
        yield overlay


def _json(entry: Entry):
    try:
        return records.load(entry)
    except ValueError:
        return None


def _holds(pool: object, host: str) -> bool:
    if not isinstance(pool, dict):
        return False
    return (pool.get("holders") or {}).get(host, 0) > 0 or host in (pool.get("holds") or {}).values()


# --- the listener -------------------------------------------------------------------------
def check_addr(addr: str, allow_remote: bool) -> tuple[str, str | int]:
    """("unix", PATH) or (HOST, PORT) of --metrics-addr; ValueError saying why not."""
    if addr.startswith("unix:"):
        path = addr[len("unix:"):]
        if not path.startswith("/"):
            raise ValueError(f"--metrics-addr {addr!r}: a Unix socket needs an absolute path "
                             "(unix:/run/pynet/metrics.sock)")
        return "unix", path
    host, colon, port = addr.rpartition(":")
    host = host.strip("[]")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-addr {addr!r}: expected HOST:PORT (127.0.0.1:9474) or unix:PATH")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        raise ValueError(f"--metrics-addr {addr!r}: {host or 'every address'} is not a loopback "
                         "address; the metrics page has no authentication and names every network "
                         "and pool of the host. Add --metrics-allow-remote to serve it there anyway")
    return host or "0.0.0.0", int(port)


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

"""What the names' unit tests share (tests/unit/test_dns_names.py, test_dns_event_looks.py):
pynet's own network and endpoint records, dockerd's container-list entries, name entries,
a settable clock and heartbeats."""
from __future__ import annotations

import ipaddress
import time

from driver.models import EndpointRecord, NetworkRecord
from driver.names.records import OVERLAY, NameEntry, NetworkIdentity
from driver.options import NetworkOptions
from pynet_core.store import keys, records
from pynet_core.store.memory import MemoryStore

IP = ipaddress.ip_address
OVER_NID, OVER_NID_B, BR_NID = "a" * 64, "b" * 64, "c" * 64
SUBNET = "10.77.0.0/24"
OVERLAY_KEY = f"overlay/LocalDefault/{SUBNET}"


def overlay_net(nid=OVER_NID) -> NetworkRecord:
    return NetworkRecord(nid, NetworkOptions(type="overlay"), subnets=(SUBNET,),
                         gateways=(), address_space="LocalDefault")


def bridge_net() -> NetworkRecord:
    return NetworkRecord(BR_NID, NetworkOptions(), bridge="pn-cccccccccccc",
                         gateways=("10.9.0.1/24",), subnets=("10.9.0.0/24",))


def ep(nid: str, eid: str, *addresses: str) -> EndpointRecord:
    return EndpointRecord(nid, eid, None, "pnc" + eid[:12], addresses, "02:42:0a:00:00:02")


def container(cid: str, name: str, **networks: dict) -> dict:
    return {"Id": cid, "Names": [f"/{name}", f"/other/{name}-link"], "State": "running",
            "NetworkSettings": {"Networks": networks}}


def on(nid: str, eid: str, ip: str = "", *, aliases=None, dns_names=None, ip6: str = "") -> dict:
    return {"NetworkID": nid, "EndpointID": eid, "IPAddress": ip, "GlobalIPv6Address": ip6,
            "Aliases": aliases, "DNSNames": dns_names}


def entry(host: str, eid: str, name: str, ip: str, cid: str | None = None) -> NameEntry:
    return NameEntry(host, eid, cid or eid, name,
                     NetworkIdentity(OVERLAY, space="LocalDefault", subnet=SUBNET), "appnet",
                     (), ip, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def beat(store: MemoryStore, host: str) -> None:
    records.update(store, keys.overlay_alive(host), lambda _: {"host": host, "beat": time.time()},
                   "beat")


class Records:
    def __init__(self, networks, endpoints) -> None:
        self._networks, self._endpoints = networks, endpoints

    def networks(self):
        return list(self._networks)

    def endpoints(self, nid=None):
        return [e for e in self._endpoints if nid is None or e.network_id == nid]

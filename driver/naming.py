"""Deterministic kernel names from Docker IDs, within IFNAMSIZ (15 characters).

All start with 'pn' so an operator (and pynet's restore) can tell pynet's links apart.
"""
from __future__ import annotations

import hashlib
import ipaddress

BRIDGE_PREFIX = "pn-"
HOST_VETH_PREFIX = "pnv"
PEER_VETH_PREFIX = "pnc"
# A macvlan network's test link (made and removed at CreateNetwork). Its own prefix: named
# like an endpoint's link from a network ID, it would be the link of an endpoint whose ID
# begins like that network's.
PROBE_PREFIX = "pnp"
# An overlay network's VXLAN device: made in the host namespace (its UDP socket stays there)
# and moved at once into the network's own namespace.
VXLAN_PREFIX = "pnx"
PYNET_PREFIXES = (BRIDGE_PREFIX, HOST_VETH_PREFIX, PEER_VETH_PREFIX, PROBE_PREFIX, VXLAN_PREFIX)
# An overlay network's namespace (/run/netns/pno-<network id>), and its bridge in there.
OVERLAY_NETNS_PREFIX = "pno-"
OVERLAY_BRIDGE = "br0"
# Kernel names carry this many characters of an ID, so two networks (or two endpoints)
# whose IDs share them would share links: NetworkService refuses the second (name_key).
ID_CHARS = 12


def name_key(object_id: str) -> str:
    """The part of an ID that kernel names are made of."""
    return object_id[:ID_CHARS]


def bridge(network_id: str) -> str:
    return BRIDGE_PREFIX + name_key(network_id)


def host_veth(endpoint_id: str) -> str:
    return HOST_VETH_PREFIX + name_key(endpoint_id)


def peer_veth(endpoint_id: str) -> str:
    return PEER_VETH_PREFIX + name_key(endpoint_id)


def probe(network_id: str) -> str:
    return PROBE_PREFIX + name_key(network_id)


def vxlan(network_id: str) -> str:
    return VXLAN_PREFIX + name_key(network_id)


def overlay_netns(network_id: str) -> str:
    return OVERLAY_NETNS_PREFIX + name_key(network_id)


def is_pynet_link(name: str) -> bool:
    return name.startswith(PYNET_PREFIXES)


def mac_for(endpoint_id: str, ipv4: str | None) -> str:
    """A stable, locally administered unicast MAC.

    From the IPv4 address like Docker's bridge (02:42:a.b.c.d), so a container that comes
    back with the same address keeps its MAC and neighbours' ARP caches stay right;
    otherwise derived from the endpoint ID.
    """
    if ipv4:
        octets = ipaddress.ip_interface(ipv4).ip.packed
    else:
        octets = hashlib.sha256(endpoint_id.encode()).digest()[:4]
    return ":".join(f"{b:02x}" for b in (0x02, 0x42, *octets))

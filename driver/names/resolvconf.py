"""The upstream servers a resolv.conf names (pure: the caller reads the file).

Every `nameserver` line with a valid address counts, loopback ones included (a host running
systemd-resolved lists 127.0.0.53; pynet forwards from the host's namespace, so a loopback
resolver is reachable, unlike from a container's). An IPv6 link-local address keeps its
zone ("fe80::1%eth0"). The server's own listening addresses are left out, so pynet never
forwards to itself.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Collection

DNS_PORT = 53
MAX_UPSTREAMS = 3  # as glibc and Docker's embedded resolver: more are never tried


def nameservers(text: str, own: Collection[tuple[str, int]] = (),
                limit: int = MAX_UPSTREAMS) -> list[tuple[str, int]]:
    """(address, 53) for each usable nameserver line of `text`, in order, at most `limit`,
    without duplicates and without any of `own` (address, port) pairs."""
    own_set = {(canonical(host), port) for host, port in own}
    found: list[tuple[str, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        address = canonical(fields[1])
        if address is None:
            continue
        entry = (address, DNS_PORT)
        if entry in own_set or entry in found:
            continue
        found.append(entry)
        if len(found) >= limit:
            break
    return found


def canonical(text: str) -> str | None:
    """`text` as an address in its canonical form (an IPv6 zone kept), or None."""
    host, _, zone = text.partition("%")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return f"{address}%{zone}" if zone and address.version == 6 else str(address)

"""Which local address is this host's VTEP, and the MTU of the link it is on (pure).

`--data-path-addr` (PYNET_DATA_PATH_ADDR, Docker's name for it) picks the address. Without
it pynet takes, in this order:
1. the IPv4 address of the link the default route leaves by (what the host uses to reach
   the others, on an ordinary server);
2. else the one global IPv4 address of the host outside Docker's and pynet's own bridges
   (a host whose underlay has no default route, like the simulated hosts of the tests).
Anything else is ambiguous, and the error names the flag. A loopback address never is one:
other hosts cannot send to it.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pynet_core.errors import BadRequest

from driver.netlink.api import Interface, Link

FLAG = "--data-path-addr (PYNET_DATA_PATH_ADDR)"


def _own_bridge(name: str) -> bool:
    # docker0, docker_gwbridge, br-<id> (Docker's bridges) and pn-... (pynet's) hold
    # gateway addresses of container networks, never an underlay address.
    return name.startswith(("docker", "br-", "pn"))


def choose(configured: str | None, addresses: Sequence[tuple[str, Interface]],
           default_links: Sequence[str], links: dict[str, Link]) -> tuple[str, Link]:
    """(VTEP address, the link holding it)."""
    v4 = [(name, iface) for name, iface in addresses if iface.version == 4]
    if configured:
        try:
            wanted = ipaddress.ip_address(configured.strip())
        except ValueError:
            raise BadRequest(f"{FLAG} {configured!r} is not an IP address") from None
        if wanted.version != 4:
            raise BadRequest(f"{FLAG} {wanted}: the overlay's underlay is IPv4 only for now")
        if wanted.is_loopback or wanted.is_unspecified or wanted.is_multicast:
            raise BadRequest(f"{FLAG} {wanted} cannot be a VTEP: other hosts cannot send to it")
        for name, iface in v4:
            if iface.ip == wanted and name in links:
                return str(wanted), links[name]
        raise BadRequest(f"{FLAG} {wanted} is not an address of this host")
    usable = [(n, i) for n, i in v4 if n in links and not links[n].loopback
              and not i.ip.is_loopback and not i.ip.is_link_local]
    for link_name in default_links:
        for name, iface in usable:
            if name == link_name:
                return str(iface.ip), links[name]
    candidates = [(n, i) for n, i in usable if not _own_bridge(n)]
    if len(candidates) == 1:
        name, iface = candidates[0]
        return str(iface.ip), links[name]
    found = ", ".join(f"{i.ip} on {n}" for n, i in candidates) or "none"
    raise BadRequest(f"cannot tell which address other hosts reach this one at for overlay "
                     f"traffic (no default route; candidates: {found}); set {FLAG}")

"""The nftables rules of pynet DNS (--dns-addr), as one nft script (pure: no I/O).

pynet DNS answers the containers of pynet networks, which reach it from their pynet bridge
(bridge networks) or from docker_gwbridge (overlay containers), and the host itself (lo).
Anything else sent to a served address and port is dropped before it reaches the server:
the served address is often a bridge gateway (docker0, docker_gwbridge), which the host
also accepts on any other interface (Linux's weak host model), so without this a host on the
LAN could use pynet as a resolver. Subnets given with --dns-allow-from are let through too.

A table of its own, `inet pynet_dns`, written whole on every change (a handful of elements):
it lives and goes with the DNS server, apart from the networks' table `inet pynet`, which
goes with the last bridge network. Its input chain runs just before the filter priority;
its accept only ends this table's chain (another table's drop still applies), its drop is
final. The server itself refuses a source that is no known container (server.py).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .nft_rules import _IFNAME, FAMILY, script_value

TABLE = "pynet_dns"
T = f"{FAMILY} {TABLE}"


def _served(endpoints: Iterable[tuple[str, int]], version: int) -> list[str]:
    found = []
    for host, port in endpoints:
        address = ipaddress.ip_address(host)
        if address.version != version:
            continue
        if not 0 < int(port) < 65536:
            raise ValueError(f"port {port!r} is not a port")
        found += [f"{address} . udp . {int(port)}", f"{address} . tcp . {int(port)}"]
    return found


def _allowed(subnets: Iterable[str], version: int) -> list[str]:
    nets = [ipaddress.ip_network(s, strict=False) for s in subnets]
    return [str(n) for n in nets if n.version == version]


def script(served: Iterable[tuple[str, int]], interfaces: Iterable[str],
           allow_from: Iterable[str] = ()) -> str:
    """The whole table: DNS to `served` (address, port) pairs is accepted from
    `interfaces` (and lo) and from `allow_from` subnets, and dropped from anywhere else."""
    served = list(served)
    allow = list(allow_from)
    names = sorted({"lo", *interfaces})
    lines = [f"add table {T}", f"delete table {T}", f"add table {T}",
             f"add set {T} askers {{ type ifname; }}",
             f"add set {T} served4 {{ type ipv4_addr . inet_proto . inet_service; }}",
             f"add set {T} served6 {{ type ipv6_addr . inet_proto . inet_service; }}",
             f"add set {T} allowed4 {{ type ipv4_addr; flags interval; }}",
             f"add set {T} allowed6 {{ type ipv6_addr; flags interval; }}",
             f"add chain {T} input {{ type filter hook input priority filter - 1; policy accept; }}"]
    for set_name, elements in (("askers", [f'"{script_value(n, _IFNAME)}"' for n in names]),
                               ("served4", _served(served, 4)), ("served6", _served(served, 6)),
                               ("allowed4", _allowed(allow, 4)), ("allowed6", _allowed(allow, 6))):
        if elements:
            lines.append(f"add element {T} {set_name} {{ {', '.join(elements)} }}")
    for ip, n in (("ip", "4"), ("ip6", "6")):
        match = f"{ip} daddr . meta l4proto . th dport @served{n}"
        lines += [f'add rule {T} input {match} iifname @askers accept comment "pynet DNS: containers"',
                  f'add rule {T} input {match} {ip} saddr @allowed{n} accept comment "pynet DNS: --dns-allow-from"',
                  f'add rule {T} input {match} drop comment "pynet DNS: no open resolver"']
    return "\n".join(lines) + "\n"


def delete() -> str:
    return f"add table {T}\ndelete table {T}\n"

"""pynet's nftables rule set, as the nft script libnftables reads (one script = one
transaction). Pure: no I/O.

Script rather than JSON: libnftables 1.0.6 (Debian 12) mis-parses a JSON map whose data is
a concatenation (`ipv4_addr . inet_service`, what a DNAT map needs) and crashes on the rule
using it. Every value written into a script is checked against a strict pattern first
(script_value), so nothing a client sends can change a script's meaning.

Everything lives in one table, `inet pynet`, which pynet owns whole. Its chains and rules
are fixed: they match against named sets and maps, and what a network or a published port
adds is **elements** of those, each keyed by what it is (a bridge name, a subnet, a
protocol and host port), so a change adds or deletes exactly its own elements and the work
is proportional to it, never to the size of the table. The table is rebuilt whole only at
plugin start (sync: "add table; delete table; add table ...", so rules of removed networks
cannot linger and rules deleted by hand come back) and by the first network. With no
bridge network left, the table is deleted.

The sets (B: a network's bridge, S: its subnets; each IPv4 set has an IPv6 twin named
with 6 instead of 4, or with a 6 appended):

* bridges / internal: B of the networks that may reach out / of --internal ones;
* icc (verdict map): "B . B" -> accept (icc on) or jump icc_off (icc=false: only DNAT'd
  connections, a container's hairpin to its own network's published port);
* own4 / own6: "B . S" of bridges that reach out; nat4 / nat6: S of those with masquerade
  on, in the nat gateway mode of that family;
* published_any / published_at (published_any6 / published_at6): "proto . host port" (host
  IP 0.0.0.0, or ::) or "host IP . proto . host port" -> "container IP . container port",
  one element per port;
* routed4 / routed6: B of networks in Docker's routed gateway mode for that family (ICMP
  reaches their containers); open4 / open6: "container IP . proto . port" published in
  routed mode (reachable at the container's own address, no host port);
* uplinks: bridges that carry a default route (the host's own way out).

What the chains do:

* forward (filter): replies pass; traffic inside one bridge is decided by icc; then
  internal networks: nothing leaves or enters B; published ports (DNAT'd connections, and
  in routed mode open4/open6 and ICMP) may enter B; from B, new traffic may not enter any
  other bridge (another pynet network, a Docker network...) unless it is an uplink; nothing
  else enters B.
* input (filter): route_localnet is on for B (so 127.0.0.1 can reach published ports), so
  packets from containers to 127.0.0.0/8 that are not replies of a DNAT'd connection are
  dropped (CVE-2020-8558).
* prerouting / output (nat): traffic to a local address goes through `published` (IPv4) or
  `published6` (IPv6), two map lookups each (a host IP given first, then every address).
  IPv6 loopback (::1) cannot be DNAT'd to a container (the kernel drops the replies; there
  is no route_localnet for IPv6), so ::1 is never a published host address.
* postrouting (nat): hairpin (a container to a published port of its own network) and
  loopback clients are masqueraded to B's address; traffic that stays on its own bridge is
  left alone; outbound traffic from nat4 / nat6 is masqueraded.

Docker's FORWARD policy DROP is lifted for pynet bridges by the iptables shim
(forward_accept.py), which accepts anything in or out of them: the decisions are here.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

from driver.models import NetworkRecord
from driver.portmap import ANY, PortBinding

FAMILY = "inet"
TABLE = "pynet"
UPLINKS = "uplinks"
PUBLISHED = "published"          # the chain of the two IPv4 DNAT lookups
PUBLISHED6 = "published6"        # ... and of the two IPv6 ones
BRIDGES = "bridges"              # bridges of networks that may reach out
INTERNAL = "internal"            # bridges of --internal networks
ICC = "icc"                      # "B . B" -> accept | jump icc_off
ICC_OFF = "icc_off"              # the chain of icc=false
OWN4, OWN6 = "own4", "own6"      # "B . S"
NAT4, NAT6 = "nat4", "nat6"      # S with masquerade on (nat gateway mode)
PORTS_ANY = "published_any"      # "proto . port" -> "ip . port"
PORTS_AT = "published_at"        # "host ip . proto . port" -> "ip . port"
PORTS_ANY6 = "published_any6"
PORTS_AT6 = "published_at6"
ROUTED4, ROUTED6 = "routed4", "routed6"  # B in routed gateway mode
OPEN4, OPEN6 = "open4", "open6"  # "container ip . proto . port" published in routed mode
SETS = (UPLINKS, BRIDGES, INTERNAL, ICC, OWN4, NAT4, PORTS_ANY, PORTS_AT,
        OWN6, NAT6, PORTS_ANY6, PORTS_AT6, ROUTED4, ROUTED6, OPEN4, OPEN6)
T = f"{FAMILY} {TABLE}"


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """What the firewall needs to know about one bridge network."""
    id: str
    bridge: str
    subnets4: tuple[str, ...]
    internal: bool
    icc: bool
    masquerade: bool
    subnets6: tuple[str, ...] = ()
    routed4: bool = False       # Docker's gateway_mode_ipv4=routed
    routed6: bool = False

    @classmethod
    def of(cls, net: NetworkRecord) -> "NetworkPolicy":
        v4 = tuple(s for s in net.subnets if ipaddress.ip_network(s).version == 4)
        v6 = tuple(s for s in net.subnets if ipaddress.ip_network(s).version == 6)
        o = net.options
        return cls(id=net.id, bridge=net.bridge, subnets4=v4, internal=o.internal, icc=o.icc,
                   masquerade=o.masquerade, subnets6=v6,
                   routed4=o.gateway_mode_ipv4 == "routed", routed6=o.gateway_mode_ipv6 == "routed")


@dataclass(frozen=True, slots=True)
class Published:
    """One published port and whom it belongs to (for the element's comment)."""
    network_id: str
    endpoint_id: str
    binding: PortBinding


@dataclass(frozen=True, slots=True)
class Element:
    """One element of one set or map: its key deletes it exactly."""
    set: str
    key: str
    comment: str
    data: str | None = None

    def text(self) -> str:
        data = "" if self.data is None else f" : {self.data}"
        return f'{self.key} comment "{self.comment}"{data}'


# --- the whole table ---------------------------------------------------------------------
def ruleset(networks: Iterable[NetworkPolicy], published: Iterable[Published],
            uplinks: Iterable[str]) -> str:
    """The whole table as one transaction (plugin start, first network; golden-tested)."""
    nets = sorted(networks, key=lambda n: n.bridge)
    if not nets:
        return delete_table()
    ports = sorted(published, key=lambda p: (p.binding.proto, p.binding.host_port,
                                             p.binding.host_ip, p.endpoint_id))
    elements = [e for n in nets for e in network_elements(n)] + [port_element(p) for p in ports]
    return script([f"add table {T}", f"delete table {T}", *skeleton(), *add_elements(elements),
                   *set_uplinks(uplinks)])


def delete_table() -> str:
    """Remove the table if it exists (add first: deleting a missing table is an error)."""
    return script([f"add table {T}", f"delete table {T}"])


def script(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def skeleton() -> list[str]:
    """The table, its sets and its fixed chains and rules, without elements."""
    sets = [
        f"add set {T} {UPLINKS} {{ type ifname; }}",
        f"add set {T} {BRIDGES} {{ type ifname; }}",
        f"add set {T} {INTERNAL} {{ type ifname; }}",
        f"add map {T} {ICC} {{ type ifname . ifname : verdict; }}",
        f"add set {T} {OWN4} {{ type ifname . ipv4_addr; flags interval; }}",
        f"add set {T} {NAT4} {{ type ipv4_addr; flags interval; }}",
        f"add map {T} {PORTS_ANY} {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}",
        f"add map {T} {PORTS_AT} {{ type ipv4_addr . inet_proto . inet_service : "
        "ipv4_addr . inet_service; }",
        f"add set {T} {OWN6} {{ type ifname . ipv6_addr; flags interval; }}",
        f"add set {T} {NAT6} {{ type ipv6_addr; flags interval; }}",
        f"add map {T} {PORTS_ANY6} {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}",
        f"add map {T} {PORTS_AT6} {{ type ipv6_addr . inet_proto . inet_service : "
        "ipv6_addr . inet_service; }",
        f"add set {T} {ROUTED4} {{ type ifname; }}",
        f"add set {T} {ROUTED6} {{ type ifname; }}",
        f"add set {T} {OPEN4} {{ type ipv4_addr . inet_proto . inet_service; }}",
        f"add set {T} {OPEN6} {{ type ipv6_addr . inet_proto . inet_service; }}",
    ]
    chains = [
        f"add chain {T} {ICC_OFF}",
        f"add chain {T} forward {{ type filter hook forward priority filter; policy accept; }}",
        f"add chain {T} input {{ type filter hook input priority filter; policy accept; }}",
        f"add chain {T} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain {T} output {{ type nat hook output priority -100; policy accept; }}",
        f"add chain {T} {PUBLISHED}",
        f"add chain {T} {PUBLISHED6}",
        f"add chain {T} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}",
    ]
    return [f"add table {T}", *sets, *chains,
            *(f'add rule {T} {chain} {rule} comment "{comment}"' for chain, rule, comment in RULES)]


# The fixed rules, in order (chain, rule, comment). Only elements change with the networks.
RULES: tuple[tuple[str, str, str], ...] = (
    (ICC_OFF, "ct status dnat accept", "icc=false: only connections to published ports"),
    (ICC_OFF, "drop", "icc=false"),
    ("forward", "ct state established,related accept", "replies"),
    ("forward", f"iifname . oifname vmap @{ICC}", "inside one network: icc"),
    ("forward", f"iifname @{INTERNAL} drop", "internal: no way out"),
    ("forward", f"oifname @{INTERNAL} drop", "internal: no way in"),
    ("forward", f"oifname @{BRIDGES} ct status dnat accept", "published ports"),
    ("forward", f"oifname @{BRIDGES} ip daddr . meta l4proto . th dport @{OPEN4} accept",
     "routed: published ports"),
    ("forward", f"oifname @{BRIDGES} ip6 daddr . meta l4proto . th dport @{OPEN6} accept",
     "routed: published ports"),
    ("forward", f"oifname @{ROUTED4} meta l4proto icmp accept", "routed: ICMP"),
    ("forward", f"oifname @{ROUTED6} meta l4proto ipv6-icmp accept", "routed: ICMPv6"),
    ("forward", f'iifname @{BRIDGES} meta oifkind "bridge" oifname != @{UPLINKS} drop',
     "isolated from other bridges"),
    ("forward", f"oifname @{BRIDGES} drop", "nothing else gets in"),
    ("input", f"iifname @{BRIDGES} ip daddr 127.0.0.0/8 ct status & dnat == 0 drop",
     "no container reaches the host's loopback"),
    ("prerouting", f"meta nfproto ipv4 fib daddr type local jump {PUBLISHED}", "published ports"),
    ("prerouting", f"meta nfproto ipv6 fib daddr type local jump {PUBLISHED6}", "published ports"),
    ("output", f"meta nfproto ipv4 fib daddr type local jump {PUBLISHED}", "published ports"),
    ("output", f"meta nfproto ipv6 fib daddr type local jump {PUBLISHED6}", "published ports"),
    (PUBLISHED, f"dnat ip to ip daddr . meta l4proto . th dport map @{PORTS_AT}",
     "published on one host address"),
    (PUBLISHED, f"dnat ip to meta l4proto . th dport map @{PORTS_ANY}",
     "published on every host address"),
    (PUBLISHED6, f"dnat ip6 to ip6 daddr . meta l4proto . th dport map @{PORTS_AT6}",
     "published on one host address"),
    (PUBLISHED6, f"dnat ip6 to meta l4proto . th dport map @{PORTS_ANY6}",
     "published on every host address"),
    ("postrouting", f"ct status dnat oifname . ip saddr @{OWN4} masquerade", "hairpin"),
    ("postrouting", f"ct status dnat oifname . ip6 saddr @{OWN6} masquerade", "hairpin"),
    ("postrouting", f"oifname @{BRIDGES} ip saddr 127.0.0.0/8 masquerade",
     "loopback to published ports"),
    ("postrouting", f"oifname . ip saddr @{OWN4} accept", "inside one network: no NAT"),
    ("postrouting", f"oifname . ip6 saddr @{OWN6} accept", "inside one network: no NAT"),
    ("postrouting", f"ip saddr @{NAT4} masquerade", "outbound NAT"),
    ("postrouting", f"ip6 saddr @{NAT6} masquerade", "outbound NAT"),
)


# --- elements ----------------------------------------------------------------------------
def network_elements(net: NetworkPolicy) -> list[Element]:
    """The elements that give one network its rules."""
    tag = f"net {script_value(net.id[:12], _HEX)}"
    b = _ifname(net.bridge)
    verdict = "accept" if net.icc else f"jump {ICC_OFF}"
    out = [Element(ICC, f"{b} . {b}", f"{tag}: icc={'on' if net.icc else 'off'}", verdict)]
    if net.internal:
        return out + [Element(INTERNAL, b, f"{tag}: internal")]
    out.append(Element(BRIDGES, b, tag))
    out += [Element(OWN4, f"{b} . {_cidr(s, 4)}", tag) for s in net.subnets4]
    out += [Element(OWN6, f"{b} . {_cidr(s, 6)}", tag) for s in net.subnets6]
    if net.masquerade and not net.routed4:
        out += [Element(NAT4, _cidr(s, 4), f"{tag}: outbound NAT") for s in net.subnets4]
    if net.masquerade and not net.routed6:
        out += [Element(NAT6, _cidr(s, 6), f"{tag}: outbound NAT") for s in net.subnets6]
    if net.routed4:
        out.append(Element(ROUTED4, b, f"{tag}: routed"))
    if net.routed6:
        out.append(Element(ROUTED6, b, f"{tag}: routed"))
    return out


def port_element(p: Published) -> Element:
    """One published port: its DNAT (map, key and target), or in routed mode the container
    address and port opened."""
    b = p.binding
    proto = script_value(b.proto, _PROTO)
    family = b.family
    container = _ip(b.container_ip, family)
    comment = (f"net {script_value(p.network_id[:12], _HEX)} "
               f"endpoint {script_value(p.endpoint_id[:12], _HEX)}")
    if b.routed:
        return Element(OPEN4 if family == 4 else OPEN6,
                       f"{container} . {proto} . {int(b.container_port)}", comment)
    target = f"{container} . {int(b.container_port)}"
    if b.host_ip == ANY[family]:
        return Element(PORTS_ANY if family == 4 else PORTS_ANY6,
                       f"{proto} . {int(b.host_port)}", comment, target)
    return Element(PORTS_AT if family == 4 else PORTS_AT6,
                   f"{_ip(b.host_ip, family)} . {proto} . {int(b.host_port)}", comment, target)


def add_elements(elements: Iterable[Element]) -> list[str]:
    """One `add element` per set touched."""
    return [f"add element {T} {name} {{ {', '.join(e.text() for e in group)} }}"
            for name, group in _by_set(elements)]


def delete_elements(elements: Iterable[Element]) -> list[str]:
    """The elements removed again by their keys (exact: nothing else goes)."""
    return [f"delete element {T} {name} {{ {', '.join(e.key for e in group)} }}"
            for name, group in _by_set(elements)]


def set_uplinks(uplinks: Iterable[str]) -> list[str]:
    """Replace the uplinks set's elements (in the same transaction as the change)."""
    names = sorted({_ifname(u) for u in uplinks})
    out = [f"flush set {T} {UPLINKS}"]
    if names:
        out.append(f"add element {T} {UPLINKS} {{ {', '.join(names)} }}")
    return out


def _by_set(elements: Iterable[Element]) -> list[tuple[str, list[Element]]]:
    """Grouped by set, each key once (two routed bindings of one container port are one
    element; deleting a key twice in one transaction would fail it)."""
    groups: dict[str, dict[str, Element]] = {}
    for e in elements:
        groups.setdefault(e.set, {}).setdefault(e.key, e)
    return [(name, list(groups[name].values())) for name in SETS if name in groups]


# --- values written into scripts -----------------------------------------------------------
_HEX = re.compile(r"[0-9A-Za-z_.-]{1,64}")
_IFNAME = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")
_PROTO = re.compile(r"tcp|udp")


class ScriptValueError(ValueError):
    """A value that is not what a script may contain (a bug or a hostile record)."""


def script_value(value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise ScriptValueError(f"{value!r} cannot be written into an nft script")
    return value


def _ifname(name: str) -> str:
    return f'"{script_value(name, _IFNAME)}"'


def _ip(address: str, family: int) -> str:
    return str(ipaddress.IPv4Address(address) if family == 4 else ipaddress.IPv6Address(address))


def _cidr(cidr: str, family: int) -> str:
    net = ipaddress.IPv4Network(cidr) if family == 4 else ipaddress.IPv6Network(cidr)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)

"""pynet's nftables rule set, as the JSON that `nft -j -f -` reads. Pure: no I/O.

Everything lives in one table, `inet pynet`, which pynet owns whole: each change rebuilds it
in one atomic transaction ("add table; delete table; add table ...": the add makes the
delete safe when the table is missing), so rules of removed networks cannot linger and
rules deleted by hand come back. With no bridge network left, the table is deleted.

What the chains do (B: a network's bridge, S: its IPv4 subnets):

* forward (filter): replies pass; internal networks: nothing leaves or enters B (checked
  first); published ports (DNAT'd connections) may enter B; inside B the network's icc
  setting decides; from B, new traffic may not enter any other bridge (another pynet
  network, a Docker network...) unless that bridge carries a default route (the host's own
  way out, set `uplinks`); nothing else enters B.
* input (filter): route_localnet is on for B (so 127.0.0.1 can reach published ports), so
  packets from containers to 127.0.0.0/8 that are not replies of a DNAT'd connection are
  dropped (CVE-2020-8558).
* prerouting / output (nat): traffic to a local address goes through `published`, one DNAT
  per published port.
* postrouting (nat): hairpin (a container to a published port of its own network) and
  loopback clients are masqueraded to B's address; outbound traffic from S is masqueraded
  unless the network has masquerade=false.

Docker's FORWARD policy DROP is lifted for pynet bridges by the iptables shim
(forward_accept.py), which accepts anything in or out of them: the decisions are here.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable

from driver.models import NetworkRecord
from driver.portmap import ANY_IPV4, PortBinding

FAMILY = "inet"
TABLE = "pynet"
UPLINKS = "uplinks"
PUBLISHED = "published"

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """What the firewall needs to know about one bridge network."""
    id: str
    bridge: str
    subnets4: tuple[str, ...]
    internal: bool
    icc: bool
    masquerade: bool

    @classmethod
    def of(cls, net: NetworkRecord) -> "NetworkPolicy":
        v4 = tuple(s for s in net.subnets if ipaddress.ip_network(s).version == 4)
        return cls(id=net.id, bridge=net.bridge, subnets4=v4, internal=net.options.internal,
                   icc=net.options.icc, masquerade=net.options.masquerade)


@dataclass(frozen=True, slots=True)
class Published:
    """One published port and whom it belongs to (for the rule comment)."""
    network_id: str
    endpoint_id: str
    binding: PortBinding


def ruleset(networks: Iterable[NetworkPolicy], published: Iterable[Published],
            uplinks: Iterable[str]) -> Json:
    """The whole table as one `nft -j -f -` transaction (golden-tested)."""
    nets = sorted(networks, key=lambda n: n.bridge)
    if not nets:
        return delete_table()
    ports = sorted(published, key=lambda p: (p.binding.proto, p.binding.host_port,
                                             p.binding.host_ip, p.endpoint_id))
    commands: list[Json] = [
        {"add": {"table": _table()}},
        {"delete": {"table": _table()}},
        {"add": {"table": _table()}},
        {"add": {"set": _uplinks(sorted(set(uplinks)))}},
        {"add": {"chain": _base("forward", "filter", "forward", 0)}},
        {"add": {"chain": _base("input", "filter", "input", 0)}},
        {"add": {"chain": _base("prerouting", "nat", "prerouting", -100)}},
        {"add": {"chain": _base("output", "nat", "output", -100)}},
        {"add": {"chain": _chain(PUBLISHED)}},
        {"add": {"chain": _base("postrouting", "nat", "postrouting", 100)}},
    ]
    rules = [("forward", r, c) for r, c in _forward(nets)]
    for net in nets:
        if not net.internal:
            rules.append(("input", [_iif(net.bridge), _daddr4("127.0.0.0/8"), _no_dnat(), DROP],
                          f"net {net.id[:12]}: no container reaches the host's loopback"))
    if ports:
        local = [_nfproto("ipv4"), _fib_daddr_local(), {"jump": {"target": PUBLISHED}}]
        rules += [("prerouting", local, "published ports"), ("output", local, "published ports")]
        rules += [(PUBLISHED, _dnat(p.binding), f"net {p.network_id[:12]} endpoint "
                   f"{p.endpoint_id[:12]}") for p in ports]
    for net in nets:
        rules += [("postrouting", r, c) for r, c in _postrouting(net)]
    commands += [{"add": {"rule": _rule(chain, expr, comment)}} for chain, expr, comment in rules]
    return {"nftables": commands}


def delete_table() -> Json:
    """Remove the table if it exists (add first: deleting a missing table is an error)."""
    return {"nftables": [{"add": {"table": _table()}}, {"delete": {"table": _table()}}]}


def _forward(nets: list[NetworkPolicy]) -> list[tuple[list[Json], str]]:
    """In phases, so that one network's accept never opens what another's drop closes:
    internal networks first (nothing in or out, not even to published ports), then
    published ports (reachable from wherever the host is), icc, and isolation."""
    out: list[tuple[list[Json], str]] = [([_ct_state("established", "related"), ACCEPT], "replies")]
    for n in nets:
        if n.internal:
            out.append(([_iif(n.bridge), _meta("oifname", n.bridge, "!="), DROP],
                        f"{_tag(n)}: internal, no way out"))
            out.append(([_oif(n.bridge), _meta("iifname", n.bridge, "!="), DROP],
                        f"{_tag(n)}: internal, no way in"))
    for n in nets:
        if not n.internal:
            out.append(([_oif(n.bridge), _ct_status_dnat(), ACCEPT], f"{_tag(n)}: published ports"))
    for n in nets:
        out.append(([_iif(n.bridge), _oif(n.bridge), ACCEPT if n.icc else DROP],
                    f"{_tag(n)}: icc={'on' if n.icc else 'off'}"))
    for n in nets:
        if not n.internal:
            out.append(([_iif(n.bridge), _meta("oifkind", "bridge"),
                         _meta("oifname", f"@{UPLINKS}", "!="), DROP],
                        f"{_tag(n)}: isolated from other bridges"))
    for n in nets:
        if not n.internal:
            out.append(([_oif(n.bridge), DROP], f"{_tag(n)}: nothing else gets in"))
    return out


def _tag(net: NetworkPolicy) -> str:
    return f"net {net.id[:12]}"


def _postrouting(net: NetworkPolicy) -> list[tuple[list[Json], str]]:
    if net.internal:
        return []
    b, tag = net.bridge, _tag(net)
    out: list[tuple[list[Json], str]] = []
    for subnet in net.subnets4:
        out.append(([_oif(b), _ct_status_dnat(), _saddr4(subnet), MASQUERADE], f"{tag}: hairpin"))
    out.append(([_oif(b), _saddr4("127.0.0.0/8"), MASQUERADE], f"{tag}: loopback to published ports"))
    if net.masquerade:
        for subnet in net.subnets4:
            out.append(([_saddr4(subnet), _meta("oifname", b, "!="), MASQUERADE],
                        f"{tag}: outbound NAT"))
    return out


def _dnat(b: PortBinding) -> list[Json]:
    expr = [] if b.host_ip == ANY_IPV4 else [_daddr4(b.host_ip)]
    return expr + [_match({"payload": {"protocol": b.proto, "field": "dport"}}, b.host_port),
                   {"dnat": {"family": "ip", "addr": b.container_ip, "port": b.container_port}}]


# --- JSON building blocks --------------------------------------------------------------
ACCEPT: Json = {"accept": None}
DROP: Json = {"drop": None}
MASQUERADE: Json = {"masquerade": None}


def _table() -> Json:
    return {"family": FAMILY, "name": TABLE}


def _chain(name: str) -> Json:
    return {"family": FAMILY, "table": TABLE, "name": name}


def _base(name: str, kind: str, hook: str, prio: int) -> Json:
    return {**_chain(name), "type": kind, "hook": hook, "prio": prio, "policy": "accept"}


def _uplinks(names: list[str]) -> Json:
    data: Json = {"family": FAMILY, "table": TABLE, "name": UPLINKS, "type": "ifname"}
    if names:
        data["elem"] = names
    return data


def _rule(chain: str, expr: list[Json], comment: str) -> Json:
    return {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr, "comment": comment}


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str, value: Any, op: str = "==") -> Json:
    return _match({"meta": {"key": key}}, value, op)


def _iif(name: str) -> Json:
    return _meta("iifname", name)


def _oif(name: str) -> Json:
    return _meta("oifname", name)


def _nfproto(name: str) -> Json:
    return _meta("nfproto", name)


def _prefix(cidr: str) -> Any:
    net = ipaddress.ip_network(cidr)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _saddr4(cidr: str) -> Json:
    return _match({"payload": {"protocol": "ip", "field": "saddr"}}, _prefix(cidr))


def _daddr4(cidr: str) -> Json:
    return _match({"payload": {"protocol": "ip", "field": "daddr"}}, _prefix(cidr))


def _ct_state(*states: str) -> Json:
    return _match({"ct": {"key": "state"}}, list(states), "in")


def _ct_status_dnat() -> Json:
    return _match({"ct": {"key": "status"}}, "dnat", "in")


def _no_dnat() -> Json:
    # ct status & dnat == 0: the connection was not DNAT'd (replies to loopback clients were).
    return _match({"&": [{"ct": {"key": "status"}}, "dnat"]}, 0)


def _fib_daddr_local() -> Json:
    return _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")

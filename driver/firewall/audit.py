"""Read-only: what pynet's firewall should hold for some records, against what the kernel
holds (`pynet doctor`). Nothing here writes.

The wanted state comes from the same model the firewall installs (nft_rules: the fixed
rules and each network's and port's elements; ForwardAccept's chain lines; the kernel
knobs); the installed one is read back through libnftables (`list table inet pynet`),
`iptables -S` and /proc. Rules are compared by chain and comment, elements by set and
comment (each names its network, and a port's its endpoint).
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

from driver.models import EndpointRecord, NetworkRecord

from . import commands
from .forward_accept import CHAIN
from .nft import Nft
from .nft_rules import (FAMILY, RULES, TABLE, UPLINKS, NetworkPolicy, Published,
                        network_elements, port_element)


@dataclass(frozen=True, slots=True)
class Difference:
    what: str
    fix: str


RESTART = "restart pynet (systemctl restart pynet): its restore rebuilds the whole table"


def differences(networks: Iterable[NetworkRecord], endpoints: Iterable[EndpointRecord],
                run: commands.Runner = commands.run_command,
                read_table: Callable[[], list[dict]] = lambda: _read_table()) -> list[Difference]:
    nets = [n for n in networks if n.kind == "bridge" and n.bridge]
    eps = [e for e in endpoints if e.published and any(n.id == e.network_id for n in nets)]
    found = _nft(nets, eps, read_table) + _iptables(nets, run) + _sysctls(nets, eps)
    return found


def _wanted(nets: list[NetworkRecord], eps: list[EndpointRecord]) -> Counter:
    """(kind, set or chain, comment) of every fixed rule and every element the records call for."""
    want: Counter = Counter(("rule", chain, comment) for chain, _, comment in RULES)
    for n in nets:
        want.update(("element", e.set, e.comment) for e in network_elements(NetworkPolicy.of(n)))
    for e in eps:
        want.update(("element", el.set, el.comment)
                    for el in (port_element(Published(e.network_id, e.id, b)) for b in e.published))
    return want


def _installed(objects: list[dict]) -> Counter:
    """The same triples read back from `list table` (JSON): rules by chain and comment,
    elements by set and comment (nft prints expressions in its own normal form, comments
    verbatim). The uplinks set carries no comments: it follows the host's routes."""
    have: Counter = Counter()
    for item in objects:
        if "rule" in item:
            have[("rule", item["rule"].get("chain"), item["rule"].get("comment"))] += 1
        for kind in ("set", "map"):
            body = item.get(kind)
            if not body or body.get("name") == UPLINKS:
                continue
            for elem in body.get("elem", []):
                entry = elem[0] if isinstance(elem, list) else elem  # a map's [key, data]
                inner = entry.get("elem", {}) if isinstance(entry, dict) else {}
                have[("element", body.get("name"), inner.get("comment"))] += 1
    return have


def _nft(nets: list[NetworkRecord], eps: list[EndpointRecord],
         read: Callable[[], list[dict]]) -> list[Difference]:
    objects = read()
    if not objects:
        if not nets:
            return []
        return [Difference(f"nft table {FAMILY} {TABLE} is missing", RESTART)]
    if not nets:
        return [Difference(f"nft table {FAMILY} {TABLE} exists with no pynet bridge network",
                           f"nft delete table {FAMILY} {TABLE} (or restart pynet)")]
    want, have = _wanted(nets, eps), _installed(objects)
    out = []
    for (kind, where, comment), n in sorted((want - have).items(), key=str):
        out.append(Difference(f"nft {_what(kind, where)} missing: {comment!r}"
                              + (f" (x{n})" if n > 1 else ""), RESTART))
    for (kind, where, comment), n in sorted((have - want).items(), key=str):
        out.append(Difference(f"nft {_what(kind, where)} not in pynet's model: {comment!r}"
                              + (f" (x{n})" if n > 1 else ""), RESTART))
    return out


def _what(kind: str, where: str) -> str:
    return f"rule in chain {where}" if kind == "rule" else f"element of {where}"


def _read_table() -> list[dict]:
    return Nft().json(f"table {FAMILY} {TABLE}")


def _iptables(nets: list[NetworkRecord], run: commands.Runner) -> list[Difference]:
    out = []
    want = {f"-A {CHAIN} -{d} {n.bridge} -j ACCEPT" for n in nets for d in ("i", "o")}
    proc = run(["iptables", "-w", str(commands.LOCK_WAIT), "-S", CHAIN], None, commands.TIMEOUT)
    have = {line.strip() for line in proc.stdout.splitlines() if line.startswith("-A ")} \
        if proc.returncode == 0 else set()
    if nets and proc.returncode != 0:
        return [Difference(f"iptables chain {CHAIN} is missing", RESTART)]
    for line in sorted(want - have):
        out.append(Difference(f"iptables rule missing: {line}", RESTART))
    for line in sorted(have - want):
        out.append(Difference(f"iptables rule of no pynet network: {line}", RESTART))
    if nets:
        jump = run(["iptables", "-w", str(commands.LOCK_WAIT), "-C", "FORWARD", "-j", CHAIN], None,
                   commands.TIMEOUT)
        if jump.returncode != 0:
            out.append(Difference(f"iptables FORWARD has no jump to {CHAIN}: Docker's policy DROP "
                                  "stops pynet bridge traffic", RESTART))
    return out


def _sysctls(nets: list[NetworkRecord], eps: list[EndpointRecord]) -> list[Difference]:
    out = []
    outward = [n for n in nets if not n.options.internal]
    if outward and _read("/proc/sys/net/ipv4/ip_forward") != "1":
        out.append(Difference("net.ipv4.ip_forward is not 1: containers cannot reach out",
                              "sysctl -w net.ipv4.ip_forward=1"))
    for n in outward:
        value = _read(f"/proc/sys/net/ipv4/conf/{n.bridge}/route_localnet")
        if value not in (None, "1"):
            out.append(Difference(f"net.ipv4.conf.{n.bridge}.route_localnet is {value}, not 1: "
                                  "127.0.0.1:PORT does not reach its published ports",
                                  f"sysctl -w net.ipv4.conf.{n.bridge}.route_localnet=1"))
    for e in eps:
        if e.host_if and _ipv4(e):
            value = _read(f"/sys/class/net/{e.host_if}/brport/hairpin_mode")
            if value not in (None, "1"):
                out.append(Difference(f"hairpin_mode of {e.host_if} is {value}, not 1: the container "
                                      "cannot reach its own published ports",
                                      f"echo 1 > /sys/class/net/{e.host_if}/brport/hairpin_mode"))
    return out


def _ipv4(e: EndpointRecord) -> bool:
    return any(ipaddress.ip_interface(a).version == 4 for a in e.addresses)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None  # the link is gone: the netlink check names that

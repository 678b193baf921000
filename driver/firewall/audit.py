"""Read-only: what pynet's firewall should hold for some records, against what the kernel
holds (`pynet doctor`). Nothing here writes.

The wanted rules come from the same model the firewall installs (nft_rules.ruleset,
ForwardAccept's chain lines, the kernel knobs); the installed ones are read back with
`nft -j list table inet pynet`, `iptables -S` and /proc. nft rules are compared by chain
and comment (every pynet rule carries one naming its network, endpoint and purpose): nft
prints expressions back in its own normal form, the comments verbatim.
"""
from __future__ import annotations

import ipaddress
import json
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from driver.models import EndpointRecord, NetworkRecord

from . import commands
from .forward_accept import CHAIN
from .nft_rules import FAMILY, TABLE, NetworkPolicy, Published, ruleset


@dataclass(frozen=True, slots=True)
class Difference:
    what: str
    fix: str


RESTART = "restart pynet (systemctl restart pynet): its restore rebuilds the whole table"


def differences(networks: Iterable[NetworkRecord], endpoints: Iterable[EndpointRecord],
                run: commands.Runner = commands.run_command) -> list[Difference]:
    nets = [n for n in networks if n.options.type == "bridge" and n.bridge]
    eps = [e for e in endpoints if e.published and any(n.id == e.network_id for n in nets)]
    found = _nft(nets, eps, run) + _iptables(nets, run) + _sysctls(nets, eps)
    return found


def _wanted_rules(nets: list[NetworkRecord], eps: list[EndpointRecord]) -> Counter:
    published = [Published(e.network_id, e.id, b) for e in eps for b in e.published]
    doc = ruleset([NetworkPolicy.of(n) for n in nets], published, ())
    return Counter((c["add"]["rule"]["chain"], c["add"]["rule"]["comment"])
                   for c in doc["nftables"] if "rule" in c.get("add", {}))


def _nft(nets: list[NetworkRecord], eps: list[EndpointRecord], run: commands.Runner) -> list[Difference]:
    proc = run(["nft", "-j", "list", "table", FAMILY, TABLE], None, commands.TIMEOUT)
    if proc.returncode != 0:
        if not nets:
            return []
        return [Difference(f"nft table {FAMILY} {TABLE} is missing ({proc.stderr.strip()})", RESTART)]
    have: Counter = Counter()
    for item in json.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule:
            have[(rule.get("chain"), rule.get("comment"))] += 1
    want = _wanted_rules(nets, eps)
    if not nets:
        return [Difference(f"nft table {FAMILY} {TABLE} exists with no pynet bridge network",
                           f"nft delete table {FAMILY} {TABLE} (or restart pynet)")] if have else []
    out = []
    for (chain, comment), n in sorted((want - have).items()):
        out.append(Difference(f"nft rule missing in chain {chain}: {comment!r}"
                              + (f" (x{n})" if n > 1 else ""), RESTART))
    for (chain, comment), n in sorted((have - want).items(), key=str):
        out.append(Difference(f"nft rule not pynet's model in chain {chain}: {comment!r}"
                              + (f" (x{n})" if n > 1 else ""), RESTART))
    return out


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

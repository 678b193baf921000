"""What the storm asserts: the store's records, the kernel and Docker agree, and nothing is
duplicated or left behind. Every function returns problems as text (empty: all good), so a
failure shows each one."""
from __future__ import annotations

import ipaddress
import json
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from driver.models import READY, EndpointRecord, NetworkRecord
from ipam_driver import models as ipam_models
from pynet_core.store import keys, records
from tests.harness.dockerd import DockerDaemon
from tests.harness.plugin import PluginProcess

PYNET_LINK_PREFIXES = ("pn-", "pnv", "pnc", "pnp")


@dataclass
class Records:
    networks: list[NetworkRecord]
    endpoints: list[EndpointRecord]
    claims: list[tuple[str, ipam_models.AddressClaim]]  # (key, claim)
    pools: list[tuple[str, str]]  # (space, pool CIDR)
    names: list[str]  # v1/hosts/<host>/names/... keys

    @property
    def ready_networks(self) -> dict[str, NetworkRecord]:
        return {n.id: n for n in self.networks if n.state == READY}

    def not_ready(self) -> list[str]:
        return ([f"network {n.id[:12]} {n.state}" for n in self.networks if n.state != READY]
                + [f"endpoint {e.id[:12]} {e.state}" for e in self.endpoints if e.state != READY])

    def links_named(self) -> set[str]:
        out: set[str] = set()
        for n in self.networks:
            out |= {x for x in (n.bridge, n.lower) if x}
        for e in self.endpoints:
            out |= set(e.links())
        return out


def read_records(plugin: PluginProcess, host: str) -> Records:
    nets = [NetworkRecord.from_dict(records.load(e)) for e in plugin.stored(keys.networks(host))]
    eps = [EndpointRecord.from_dict(records.load(e)) for e in plugin.stored(keys.endpoints(host))]
    claims = [(e.key, ipam_models.decode(ipam_models.AddressClaim, e))
              for e in plugin.stored(keys.ipam_addrs_all())]
    pools: list[tuple[str, str]] = []
    for e in plugin.stored(keys.ipam_space("")):
        space = e.key.rsplit("/", 1)[1]
        for cidr in ipam_models.decode(ipam_models.AddressSpace, e).pools:
            pools.append((space, str(cidr)))
    names = [e.key for e in plugin.stored(keys.host_names(host))]
    return Records(nets, eps, claims, pools, names)


# ---- the kernel ------------------------------------------------------------------------

def links() -> dict[str, dict]:
    out = subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True, check=True)
    return {ln["ifname"]: ln for ln in json.loads(out.stdout or "[]")}


def pynet_links(baseline: set[str], extra_prefixes: tuple[str, ...] = ()) -> set[str]:
    """pn* links (and links with EXTRA_PREFIXES, e.g. custom bridge names) not in BASELINE."""
    return {n for n in links() if n.startswith(PYNET_LINK_PREFIXES + extra_prefixes) and n not in baseline}


def nft_rule_comments() -> list[str]:
    """The comments of pynet's rules and of its set and map elements (a network is elements
    of the table's sets, each commented "net <id12>...")."""
    out = subprocess.run(["nft", "-j", "list", "table", "inet", "pynet"], capture_output=True, text=True)
    if out.returncode != 0:
        return []  # no table: no rules
    objects = json.loads(out.stdout)["nftables"]
    comments = [x["rule"].get("comment", "") for x in objects if "rule" in x]
    for x in objects:
        for elem in (x.get("set") or x.get("map") or {}).get("elem", []):
            key = elem[0] if isinstance(elem, list) else elem
            if isinstance(key, dict) and "elem" in key:
                comments.append(key["elem"].get("comment", ""))
    return comments


def forward_entries() -> list[str]:
    out = subprocess.run(["iptables", "-S", "PYNET-FORWARD"], capture_output=True, text=True)
    if out.returncode != 0:
        return []  # no chain
    return [ln for ln in out.stdout.splitlines() if ln.startswith("-A ")]


def forward_jumps() -> list[str]:
    out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True)
    return [ln for ln in out.stdout.splitlines() if "PYNET-FORWARD" in ln]


# ---- invariants --------------------------------------------------------------------------

def kernel_vs_records(rec: Records, baseline: set[str], extra_prefixes: tuple[str, ...]) -> list[str]:
    """Every ready network's bridge (or lower device) and every ready endpoint's host link
    exists; no pn* link (nor custom bridge) exists that no record names; firewall entries
    exist exactly for the ready bridge networks."""
    problems: list[str] = []
    kernel = links()
    ready = rec.ready_networks
    for n in ready.values():
        for link in {x for x in (n.bridge, n.lower) if x}:
            if link not in kernel:
                problems.append(f"network {n.id[:12]} ready, but its link {link} is missing")
    for e in rec.endpoints:
        net = ready.get(e.network_id)
        if e.state != READY or net is None:
            continue
        if e.host_if and e.host_if not in kernel:
            problems.append(f"endpoint {e.id[:12]} ready, but its host veth {e.host_if} is missing")
        elif e.host_if and net.bridge and kernel[e.host_if].get("master") != net.bridge:
            problems.append(f"endpoint {e.id[:12]}: {e.host_if} is not on bridge {net.bridge}")
        if e.sandbox is None and e.peer_if not in kernel:
            problems.append(f"endpoint {e.id[:12]} ready and not joined, but {e.peer_if} is missing")
    named = rec.links_named()
    for link in sorted(n for n in kernel if n.startswith(PYNET_LINK_PREFIXES + extra_prefixes)
                       and n not in baseline and n not in named):
        problems.append(f"orphan link {link}: no record names it")
    bridges = {n.id[:12]: n.bridge for n in ready.values() if n.kind == "bridge"}
    tagged: set[str] = set()
    for comment in nft_rule_comments():
        if comment.startswith("net "):
            tag = comment.split()[1].rstrip(":")
            tagged.add(tag)
            if tag not in bridges:
                problems.append(f"nft rule for a network not recorded ready: {comment!r}")
    for tag in sorted(set(bridges) - tagged):
        problems.append(f"bridge network {tag} ready, but no nft rule names it")
    fwd = forward_entries()
    on_fwd = {ln.split()[3] for ln in fwd if len(ln.split()) > 3 and ln.split()[2] in ("-i", "-o")}
    for br in sorted(on_fwd - set(bridges.values())):
        problems.append(f"PYNET-FORWARD entry for {br}, which no ready network has")
    for br in sorted(set(bridges.values()) - on_fwd):
        problems.append(f"bridge {br} of a ready network has no PYNET-FORWARD entry")
    return problems


@dataclass
class Duplicates:
    containers: list[str] = field(default_factory=list)  # one IP, two live containers
    claims: list[str] = field(default_factory=list)  # one IP, two claim keys
    pools: list[str] = field(default_factory=list)  # overlapping pools

    def count(self) -> int:
        return len(self.containers) + len(self.claims) + len(self.pools)

    def all(self) -> list[str]:
        return self.containers + self.claims + self.pools


def live_containers(dockerd: DockerDaemon, prefix: str) -> list[dict]:
    ids = dockerd.cli("ps", "-q", "--filter", f"name={prefix}", timeout=60).stdout.split()
    if not ids:
        return []
    out = dockerd.cli("inspect", *ids, check=False, timeout=60)
    return json.loads(out.stdout or "[]")  # a container removed meanwhile is just missing


def duplicates(dockerd: DockerDaemon, rec: Records, prefix: str) -> Duplicates:
    d = Duplicates()
    holders: defaultdict[str, list[str]] = defaultdict(list)
    for c in live_containers(dockerd, prefix):
        for net in (c["NetworkSettings"].get("Networks") or {}).values():
            if net.get("IPAddress"):
                holders[net["IPAddress"]].append(c["Name"].lstrip("/"))
    d.containers = [f"{ip} held by {', '.join(names)}" for ip, names in sorted(holders.items()) if len(names) > 1]
    by_ip = Counter(keys.claimed_address(k) for k, _ in rec.claims)
    d.claims = [f"{ip} claimed {n} times" for ip, n in sorted(by_ip.items()) if n > 1]
    pools = [ipaddress.ip_network(p) for _, p in rec.pools]
    d.pools = [f"pools {a} and {b} overlap" for i, a in enumerate(pools) for b in pools[i + 1:]
               if a.overlaps(b)]
    return d


def docker_vs_records(dockerd: DockerDaemon, rec: Records, prefix: str) -> list[str]:
    """Every live container's pynet endpoint has a ready record with its address, and (seen
    from inside the container) an interface with the recorded MAC; its address is claimed."""
    problems: list[str] = []
    eps = {(e.network_id, e.id): e for e in rec.endpoints}
    claimed = {keys.claimed_address(k) for k, _ in rec.claims}
    for c in live_containers(dockerd, prefix):
        name, pid = c["Name"].lstrip("/"), c["State"].get("Pid") or 0
        for net in (c["NetworkSettings"].get("Networks") or {}).values():
            ep = eps.get((net.get("NetworkID"), net.get("EndpointID")))
            if ep is None or ep.state != READY:
                problems.append(f"container {name}: endpoint {net.get('EndpointID', '')[:12]} "
                                f"has no ready record ({ep.state if ep else 'none'})")
                continue
            ip = net.get("IPAddress")
            if ip and ip not in {a.split("/")[0] for a in ep.addresses}:
                problems.append(f"container {name}: Docker says {ip}, the record {ep.addresses}")
            if ip and ip not in claimed:
                problems.append(f"container {name}: its address {ip} is not claimed in the store")
            if pid:
                inside = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-j", "link"],
                                        capture_output=True, text=True)
                macs = {ln.get("address") for ln in json.loads(inside.stdout or "[]")}
                if inside.returncode == 0 and ep.mac not in macs:
                    problems.append(f"container {name}: no interface with the recorded MAC {ep.mac}")
    return problems


def endpoints_docker_lacks(dockerd: DockerDaemon, rec: Records) -> list[str]:
    """Ready endpoint records on ready networks that no endpoint of Docker's is."""
    known: set[str] = set()
    for nid in rec.ready_networks:
        out = dockerd.cli("network", "inspect", nid, check=False, timeout=60)
        for net in json.loads(out.stdout or "[]"):
            known |= {c.get("EndpointID") for c in (net.get("Containers") or {}).values()}
    return [f"endpoint {e.id[:12]} on {e.network_id[:12]} ({e.host_if or e.peer_if})"
            for e in rec.endpoints if e.state == READY and e.network_id in rec.ready_networks
            and e.id not in known]

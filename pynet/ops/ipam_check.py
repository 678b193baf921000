"""`pynet ipam check [--repair] [--older-than S] [--host-timeout S] [--yes]`.

The store's claims against what Docker uses, judged by the background leak check's own
code and rules (ipam_driver/leaks.py with docker_addresses.py and pynet_core/docker_proof.py):
only this host's claims, only against a dockerd proven this host's, only in pools whose
networks Docker listed completely. A dry run shows what is unused now; --repair looks again
after --older-than seconds and releases only what stayed unused, unchanged, all that time.

Beside that, read from every host's records (the shared store with Consul): claims of hosts
whose last-seen report (pynet/last_seen.py) is older than --host-timeout, addresses two endpoint
records name, and endpoint addresses in a pynet pool that no claim holds. Swarm-scope
(GlobalDefault) claims are made by a Swarm manager for tasks on any node, so this host's
dockerd cannot judge them: they are listed apart, never released here.
"""
from __future__ import annotations

import ipaddress
import sys
import time
from pathlib import Path

from driver.kinds import build_kinds
from driver.ledger import endpoint_at
from driver.models import EndpointRecord
from driver.service import NetworkService
from ipam_driver import models
from ipam_driver.docker_addresses import DockerAddresses
from ipam_driver.leaks import AddressLeakCheck
from ipam_driver.models import AddressClaim, BlockClaim
from ipam_driver.pools import GLOBAL_SPACE
from ipam_driver.service import IpamService
from pynet import last_seen
from pynet_core.defaults import MIN_LEAK_GRACE
from pynet_core.errors import BadRecord
from pynet_core.store import bad_records, keys
from pynet_core.store.api import Entry

from .address_users import EndpointsNamingAddress
from .context import CannotLook, Context, PluginsFirewall, ReadOnlyStore
from .ipam_show import read_pools
from .render import DECLINED, OK, PROBLEMS, UNAVAILABLE

DEFAULT_HOST_TIMEOUT = 600.0


def _describe(ctx: Context, what: str) -> dict:
    if what.startswith("pool "):
        return {"what": "pool", "pool": what[len("pool "):], "key": None,
                "text": f"pool {what[len('pool '):]}: held by this host, no network of dockerd uses it"}
    space, pool, ip = keys.claimed_address_parts(what)
    entry = ctx.store.get(what)
    claim = next((c for _, c in models.readable([entry], AddressClaim, "address claim")), None) \
        if entry else None
    kind = claim.kind if claim else "claim"
    owner = f" {claim.name}" if claim and claim.name else ""
    endpoints = _naming(ctx, what)
    named = f"; named by endpoint {', '.join(endpoints)}, removed with it" if endpoints else ""
    return {"what": kind, "pool": f"{space}/{pool}", "address": ip, "key": what,
            "endpoints": endpoints,
            "text": f"address {ip} ({kind}{owner}) in pool {space}/{pool}: claimed by this host, "
                    f"unknown to dockerd{named}"}


def _leak_check(ctx: Context, grace: float, read_only: bool) -> AddressLeakCheck:
    s = ctx.settings
    ipam = IpamService(ctx.store, ctx.host, s.default_pools, block_size=s.ipam_block_size)
    docker = DockerAddresses(s.docker_host, ipam_driver=Path(s.socket).stem)
    return AddressLeakCheck(ReadOnlyStore(ctx.store) if read_only else ctx.store, ctx.host, docker, ipam,
                     grace=grace, judged_space=lambda space: space != GLOBAL_SPACE,
                     users=None if read_only else _endpoints(ctx))


def _endpoints(ctx: Context) -> EndpointsNamingAddress:
    """An address goes with the endpoint record naming it, its links removed here as
    DeleteEndpoint removes them, or not at all (pynet/ops/address_users.py). Without the
    overlay kind: its namespaces are the running plugin's. The firewall is the plugin's too:
    endpoints with published ports are refused."""
    service = NetworkService(ctx.store, ctx.host, build_kinds(ctx.netlink, PluginsFirewall()))

    def refuse(ep: EndpointRecord) -> str | None:
        if ep.kind not in service.kinds:
            return (f"is on a {ep.kind} network, whose namespace only the running plugin holds: "
                    "the plugin's own checks remove both")
        if ep.published:
            return ("has published ports, whose rules and host sockets only the running plugin "
                    "holds: the plugin's own checks remove both")
        return None
    return EndpointsNamingAddress(service, refuse)


def _naming(ctx: Context, what: str) -> list[str]:
    """The endpoint records of this host that name an unused address: --repair removes them
    with it (and their links), or releases neither."""
    try:
        space, pool, ip = models.claim_key(Entry(what, "", 0))
    except ValueError:
        return []
    return [f"{ep.network_id[:12]}/{ep.id[:12]}"
            for ep in EndpointsNamingAddress(NetworkService(ctx.store, ctx.host, {})).naming(space, pool, ip)]


def _local(ctx: Context, check: AddressLeakCheck) -> dict:
    view = check.last_view
    held = check.held_pools()
    if view is None:
        state, note = "unreachable", f"dockerd at {ctx.settings.docker_host} does not answer: nothing judged"
    elif not held:
        state, note = "nothing held", "this host holds no pool (outside GlobalDefault): nothing to judge"
    elif not check.proven:
        state, note = "not proven", (f"dockerd at {view.docker_host} knows none of this host's pynet "
                                     "pools (a wrong --docker-host, or an empty dockerd): nothing "
                                     "judged, nothing released")
    else:
        state, note = "proven", f"dockerd at {view.docker_host} is this host's"
    return {"dockerd": ctx.settings.docker_host, "state": state, "note": note,
            "unused": [_describe(ctx, w) for w in check.suspects()]}


def _claims_by_host(ctx: Context, pools: list[dict]) -> dict[str, dict]:
    hosts: dict[str, dict] = {}

    def of(host: str) -> dict:
        return hosts.setdefault(host, {"addresses": [], "pools": [], "blocks": 0, "names": 0})

    for entry, claim in models.readable(ctx.store.list(keys.ipam_addrs_all()), AddressClaim,
                                        "address claim"):
        space, pool, ip = keys.claimed_address_parts(entry.key)
        for host in (claim.holders or (claim.host,)) if claim.gateway else (claim.host,):
            of(host)["addresses"].append(f"{space}/{pool} {ip} ({claim.kind})")
    for p in pools:
        for host in p["holders"]:
            of(host)["pools"].append(f"{p['space']}/{p['pool']}")
    for _, block in models.readable(ctx.store.list(f"{keys.VERSION}/ipam/blocks/"), BlockClaim,
                                    "block claim"):
        of(block.host)["blocks"] += 1
    # Its containers' DNS name records (--dns-addr): no longer answered once the host is
    # withdrawn, but kept until it starts again or someone deletes them (docs/dns.md).
    for entry in ctx.store.list(keys.names_hosts()):
        parsed = keys.parse_name_key(entry.key)
        if parsed is not None:
            of(parsed[0])["names"] += 1
    return hosts


def _unseen(ctx: Context, pools: list[dict], limit: float) -> list[dict]:
    seen = last_seen.read_all(ctx.store)
    now = time.time()
    found = []
    for host, held in sorted(_claims_by_host(ctx, pools).items()):
        if host == ctx.host:
            continue
        last = seen.get(host)
        age = None if last is None else now - last.time
        if age is not None and age <= limit:
            continue
        found.append({"host": host, "last_seen_s": None if age is None else round(age),
                      "addresses": held["addresses"], "pools": held["pools"], "blocks": held["blocks"],
                      "names": held["names"]})
    return found


def _endpoint_records(ctx: Context) -> list[tuple[str, EndpointRecord]]:
    found = []
    for entry in ctx.store.list(keys.hosts_all()):
        host = keys.host_of(entry.key)
        if host and entry.key.startswith(keys.endpoints(host)):
            try:
                found.append((host, endpoint_at(entry)))
            except BadRecord as exc:
                bad_records.skipped(entry, exc.reason, "endpoint")
    return found


def _consistency(ctx: Context, pools: list[dict]) -> tuple[list[dict], list[dict]]:
    """(duplicates, unclaimed): addresses two endpoint records name; endpoint addresses in
    a pynet pool that no claim holds (another container could be given them)."""
    owners: dict[str, list[str]] = {}
    unclaimed = []
    nets = [(p["space"], p["pool"], ipaddress.ip_network(p["pool"])) for p in pools]
    for host, ep in _endpoint_records(ctx):
        for text in ep.addresses:
            ip = ipaddress.ip_interface(text).ip
            owners.setdefault(str(ip), []).append(f"{host}/{ep.id[:12]}")
            inside = [(s, p) for s, p, n in nets if n.version == ip.version and ip in n]
            if inside and not any(ctx.store.get(keys.ipam_addr(s, p, str(ip))) for s, p in inside):
                unclaimed.append({"host": host, "endpoint": ep.id, "address": str(ip),
                                  "pool": f"{inside[0][0]}/{inside[0][1]}"})
    duplicates = [{"address": ip, "endpoints": who} for ip, who in sorted(owners.items()) if len(who) > 1]
    return duplicates, unclaimed


def _swarm_claims(ctx: Context) -> list[dict]:
    found = []
    for entry, claim in models.readable(ctx.store.list(keys.ipam_addrs_all() + GLOBAL_SPACE + "/"),
                                        AddressClaim, "address claim"):
        _, pool, ip = keys.claimed_address_parts(entry.key)
        found.append({"pool": pool, "address": ip, "kind": claim.kind, "host": claim.host})
    return found


def ipam_check(ctx: Context, args) -> int:
    if args.older_than < MIN_LEAK_GRACE:
        raise CannotLook(f"--older-than {args.older_than:g}: expected at least {MIN_LEAK_GRACE:g} s "
                         "(the leak check's smallest grace: Docker retries a call for 30 s)")
    if args.host_timeout < 2 * last_seen.INTERVAL:
        raise CannotLook(f"--host-timeout {args.host_timeout:g}: expected at least "
                         f"{2 * last_seen.INTERVAL:g} s (hosts beat every {last_seen.INTERVAL:g} s)")
    check = _leak_check(ctx, args.older_than, read_only=not args.repair)
    check.check_once()
    pools = read_pools(ctx)
    local = _local(ctx, check)
    unseen = _unseen(ctx, pools, args.host_timeout)
    duplicates, unclaimed = _consistency(ctx, pools)
    swarm = _swarm_claims(ctx)
    released: list[str] = []
    declined = False
    if args.repair and local["unused"]:
        _report(ctx, local, unseen, duplicates, unclaimed, swarm, None, args)
        if sys.stdin.isatty() and not args.yes and not _confirm(ctx, len(local["unused"]), args.older_than):
            declined = True
        else:
            if not ctx.out.as_json:
                ctx.out.line(f"waiting {args.older_than:g} s: only what stays unused and unchanged "
                             "that long is released ...")
            time.sleep(args.older_than)
            released = check.check_once()
            local = _local(ctx, check)  # what is still unused (found anew: not yet overdue)
            local["released"] = [_describe_released(w) for w in released]
    problems = bool(local["unused"] or unseen or duplicates or unclaimed)
    if ctx.out.as_json:
        ctx.out.json({"host": ctx.host, "local": local, "unseen_hosts": unseen,
                      "duplicates": duplicates, "unclaimed": unclaimed, "swarm_scope": swarm,
                      "repair": args.repair, "released": released, "declined": declined,
                      "problems": problems})
    else:
        _report(ctx, local, unseen, duplicates, unclaimed, swarm, released if args.repair else None, args)
    if declined:
        return DECLINED
    if problems:
        return PROBLEMS
    return UNAVAILABLE if local["state"] in ("unreachable", "not proven") else OK


def _describe_released(what: str) -> str:
    if what.startswith("pool "):
        return what
    space, pool, ip = keys.claimed_address_parts(what)
    return f"{ip} in pool {space}/{pool}"


def _confirm(ctx: Context, count: int, wait: float) -> bool:
    sys.stderr.write(f"Release {count} unused item(s) if they stay unused for {wait:g} s? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _report(ctx: Context, local: dict, unseen: list, duplicates: list, unclaimed: list,
            swarm: list, released: list[str] | None, args) -> None:
    if ctx.out.as_json:
        return
    out = ctx.out
    tone = {"proven": "ok", "not proven": "warn", "unreachable": "bad"}.get(local["state"])
    out.heading("This host's claims against its dockerd")
    out.line(f"  {out.paint(local['state'], tone) if tone else local['state']}: {local['note']}")
    if released is not None:
        for what in local.get("released", []):
            out.line(out.paint(f"  released {what}", "ok"))
    if local["unused"]:
        out.line(f"  unused now ({len(local['unused'])}); "
                 + ("--repair releases what stays so for " if released is None else "still waiting: ")
                 + f"{args.older_than:g} s:")
        for item in local["unused"]:
            out.line(out.paint(f"    {item['text']}", "bad"))
    elif local["state"] == "proven":
        out.line(out.paint("  no leaked addresses, pools or gateways", "ok"))
    out.heading(f"Hosts unseen for more than {args.host_timeout:g} s")
    if not unseen:
        out.line(out.paint("  none", "ok"))
    for h in unseen:
        when = "never (no heartbeat)" if h["last_seen_s"] is None else f"{h['last_seen_s']} s ago"
        out.line(out.paint(f"  {h['host']}: last seen {when}; {len(h['addresses'])} address claims, "
                           f"{len(h['pools'])} pool holds, {h['blocks']} blocks, "
                           f"{h['names']} DNS name records", "bad"))
        if h["names"]:
            out.line(f"    its names are not answered while it is withdrawn; if it is gone for good: "
                     f"consul kv delete -recurse {ctx.settings.consul_prefix}{keys.names_host(h['host'])}")
        for a in h["addresses"][:10]:
            out.line(f"    {a}")
        if len(h["addresses"]) > 10:
            out.line(f"    ... {len(h['addresses']) - 10} more (--json lists them all)")
    out.heading("Records of every host")
    if not duplicates and not unclaimed:
        out.line(out.paint("  no address named by two endpoints; every endpoint address is claimed", "ok"))
    for d in duplicates:
        out.line(out.paint(f"  duplicate {d['address']}: endpoints {', '.join(d['endpoints'])}", "bad"))
    for u in unclaimed:
        out.line(out.paint(f"  unclaimed {u['address']} of endpoint {u['host']}/{u['endpoint'][:12]} "
                           f"in pool {u['pool']}", "bad"))
    if swarm:
        out.heading("Swarm-scope claims (GlobalDefault; not judged against this dockerd)")
        out.table(["POOL", "ADDRESS", "KIND", "HOST"],
                  [[c["pool"], c["address"], c["kind"], c["host"]] for c in swarm])

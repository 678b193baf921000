"""`pynet ipam show [POOL]`: every pool with its holders and claimed addresses, or one
pool's claims with their owners."""
from __future__ import annotations

import ipaddress

from ipam_driver import models
from ipam_driver.models import AddressClaim, AddressSpace
from pynet_core.store import keys

from .context import CannotLook, Context
from .render import OK


def read_pools(ctx: Context) -> list[dict]:
    pools = []
    for entry, record in models.readable(ctx.store.list(keys.ipam_space("")), AddressSpace,
                                         "address space"):
        space = entry.key[len(keys.ipam_space("")):]
        for cidr, pool in sorted(record.pools.items(), key=lambda p: (p[0].version, p[0])):
            hosts = sorted(set(pool.holders) | set((pool.holds or {}).values()))
            pools.append({"space": space, "pool": str(cidr),
                          "range": str(pool.subpool) if pool.subpool else None,
                          "block": pool.block,
                          "holders": {h: max(pool.holders.get(h, 0), len(pool.hold_ids(h)))
                                      for h in hosts}})
    return pools


def read_claims(ctx: Context, space: str, pool: str) -> list[dict]:
    names = ctx.docker_names
    by_address: dict[str, str] = {}
    for ep in ctx.endpoints():
        for a in ep.addresses:
            by_address[a.split("/")[0]] = names.containers.get(ep.id) or ep.id[:12]
    found = []
    for entry, claim in models.readable(ctx.store.list(keys.ipam_addrs(space, pool)), AddressClaim,
                                        "address claim"):
        ip = keys.claimed_address(entry.key)
        found.append({"address": ip, "kind": claim.kind, "host": claim.host,
                      "holders": list(claim.holders or ()), "name": claim.name or None,
                      "container": by_address.get(ip)})
    found.sort(key=lambda c: ipaddress.ip_address(c["address"]))
    return found


def usable(cidr: str, subpool: str | None) -> int:
    net = ipaddress.ip_network(subpool or cidr)
    size = net.num_addresses
    return size - 2 if net.version == 4 and net.prefixlen < 31 else size


def show(ctx: Context, args) -> int:
    pools = read_pools(ctx)
    if args.pool:
        chosen = [p for p in pools if p["pool"] == args.pool or f"{p['space']}/{p['pool']}" == args.pool]
        if not chosen:
            raise CannotLook(f"no pool {args.pool!r} in the store (see pynet ipam show)")
        pool = chosen[0]
        claims = read_claims(ctx, pool["space"], pool["pool"])
        if ctx.out.as_json:
            ctx.out.json({**pool, "claims": claims})
            return OK
        ctx.out.line(f"pool {pool['space']}/{pool['pool']}"
                     + (f" (range {pool['range']})" if pool["range"] else "")
                     + f": {len(claims)} of {usable(pool['pool'], pool['range'])} addresses claimed")
        ctx.out.table(["ADDRESS", "KIND", "HOST", "OWNER", "CONTAINER"],
                      [[c["address"], c["kind"],
                        c["host"] if c["kind"] != "gateway" else ",".join(c["holders"]) or c["host"],
                        c["name"], c["container"]] for c in claims], empty="no addresses claimed")
        return OK
    for pool in pools:
        pool["claimed"] = len(ctx.store.list(keys.ipam_addrs(pool["space"], pool["pool"])))
        pool["size"] = usable(pool["pool"], pool["range"])
    if ctx.out.as_json:
        ctx.out.json({"pools": pools})
        return OK
    ctx.out.table(["SPACE", "POOL", "RANGE", "BLOCK", "HOLDERS", "CLAIMED", "SIZE"],
                  [[p["space"], p["pool"], p["range"], p["block"],
                    [f"{h}:{n}" for h, n in p["holders"].items()], p["claimed"], p["size"]]
                   for p in pools], empty="no pools")
    return OK

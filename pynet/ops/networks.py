"""`pynet networks` and `pynet endpoints [NETWORK]`: this host's records, with Docker's names."""
from __future__ import annotations

from driver.models import READY, EndpointRecord, NetworkRecord

from .context import Context, resolve_network
from .render import OK


def network_row(ctx: Context, net: NetworkRecord, endpoints: int) -> dict:
    carrier = ctx.kind(net).describe(net)
    return {"id": net.id, "name": ctx.docker_names.networks.get(net.id), "type": net.kind,
            "subnets": list(net.subnets), "gateways": list(net.gateways), "device": carrier.device,
            "bridge": net.bridge, "parent": carrier.parent, "vni": net.vni, "netns": net.netns,
            "mtu": net.mtu, "internal": net.options.internal, "endpoints": endpoints, "state": net.state}


def endpoint_row(ctx: Context, ep: EndpointRecord) -> dict:
    return {"id": ep.id, "network": ep.network_id,
            "network_name": ctx.docker_names.networks.get(ep.network_id),
            "container": ctx.docker_names.containers.get(ep.id), "addresses": list(ep.addresses),
            "mac": ep.mac, "host_if": ep.host_if, "kind": ep.kind, "sandbox": ep.sandbox,
            "published": [b.describe() for b in ep.published], "state": ep.state}


def networks(ctx: Context, args) -> int:
    counts: dict[str, int] = {}
    for ep in ctx.endpoints():
        counts[ep.network_id] = counts.get(ep.network_id, 0) + 1
    rows = [network_row(ctx, n, counts.get(n.id, 0)) for n in ctx.networks()]
    if ctx.out.as_json:
        ctx.out.json({"host": ctx.host, "networks": rows, "docker": ctx.docker_names.error})
        return OK
    ctx.out.table(["NAME", "ID", "TYPE", "SUBNET", "GATEWAY", "DEVICE", "ENDPOINTS", "STATE"],
                  [[r["name"], r["id"][:12], r["type"], r["subnets"],
                    [g.split("/")[0] for g in r["gateways"]], r["device"], r["endpoints"], r["state"]]
                   for r in rows],
                  tones=[None if r["state"] == READY else "warn" for r in rows],
                  empty=f"no pynet networks on this host ({ctx.host})")
    _docker_note(ctx)
    return OK


def endpoints(ctx: Context, args) -> int:
    nid = resolve_network(ctx, args.network).id if args.network else None
    rows = [endpoint_row(ctx, e) for e in ctx.endpoints(nid)]
    if ctx.out.as_json:
        ctx.out.json({"host": ctx.host, "endpoints": rows, "docker": ctx.docker_names.error})
        return OK
    ctx.out.table(["CONTAINER", "NETWORK", "ENDPOINT", "ADDRESS", "MAC", "HOST IF", "STATE"],
                  [[r["container"], r["network_name"] or r["network"][:12], r["id"][:12],
                    r["addresses"], r["mac"], r["host_if"], r["state"]] for r in rows],
                  tones=[None if r["state"] == READY else "warn" for r in rows],
                  empty="no endpoints")
    _docker_note(ctx)
    return OK


def _docker_note(ctx: Context) -> None:
    if ctx.docker_names.error:
        ctx.out.line(ctx.out.paint(f"(names not shown: {ctx.docker_names.error})", "dim"))

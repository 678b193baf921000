"""`pynet ports`: the published ports `docker ps` and `docker port` cannot show for a remote
driver (moby/libnetwork#2451), as the endpoint records keep them."""
from __future__ import annotations

from .context import Context
from .render import OK


def ports(ctx: Context, args) -> int:
    rows = []
    for ep in ctx.endpoints():
        for b in ep.published:
            rows.append({"container": ctx.docker_names.containers.get(ep.id),
                         "network": ctx.docker_names.networks.get(ep.network_id) or ep.network_id[:12],
                         "endpoint": ep.id, "host_ip": b.host_ip, "host_port": b.host_port,
                         "container_ip": b.container_ip, "container_port": b.container_port,
                         "proto": b.proto, "routed": b.routed,
                         "requested": (f"{b.host_port_start}" if b.host_port_start == b.host_port_end
                                       else f"{b.host_port_start}-{b.host_port_end}")})
    rows.sort(key=lambda r: (r["proto"], r["host_port"], r["host_ip"]))
    if ctx.out.as_json:
        ctx.out.json({"host": ctx.host, "ports": rows, "docker": ctx.docker_names.error})
        return OK
    ctx.out.table(["CONTAINER", "NETWORK", "HOST ADDRESS", "", "CONTAINER ADDRESS", "PROTO", "REQUESTED"],
                  [[r["container"] or r["endpoint"][:12], r["network"],
                    "(routed)" if r["routed"] else f"{_host(r['host_ip'])}:{r['host_port']}", "->",
                    f"{_host(r['container_ip'])}:{r['container_port']}", r["proto"], r["requested"]]
                   for r in rows], empty="no published ports")
    return OK


def _host(address: str) -> str:
    """An IPv6 address in brackets, as in a URL, so its port stays readable."""
    return f"[{address}]" if ":" in address else address

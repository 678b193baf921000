"""`pynet status`: the store and its health, this host's networks, restore and leak-check
state, the version."""
from __future__ import annotations

import os
import time
from importlib import metadata

from driver.models import READY
from pynet import last_seen
from pynet_core import docker_proof
from pynet_core.errors import PynetError
from pynet_core.store import keys, records

from .context import Context
from .render import OK, PROBLEMS


def version() -> str:
    try:
        return metadata.version("pynet")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def store_health(ctx: Context) -> dict:
    s = ctx.settings
    where = os.path.join(s.state_dir, "pynet.db") if s.store == "local" else \
        "{}://{}/{}".format(*ctx.settings.consul_endpoint, s.consul_prefix)
    health = {"backend": s.store, "at": where, "reachable": False, "latency_ms": None,
              "leader": None, "error": None}
    started = time.monotonic()
    try:
        ctx.store.get(keys.docker_engine(ctx.host))
        health["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        health["reachable"] = True
        leader = getattr(ctx.store, "leader", None)
        if leader is not None:
            health["leader"] = leader() or None
    except PynetError as exc:
        health["error"] = exc.message
    return health


def status(ctx: Context, args) -> int:
    s = ctx.settings
    health = store_health(ctx)
    doc: dict = {"version": version(), "host": ctx.host, "store": health}
    problems = []
    if not health["reachable"]:
        problems.append(f"the store does not answer: {health['error']}")
    elif s.store == "consul" and not health["leader"]:
        problems.append("the Consul cluster has no leader")
    if health["reachable"]:
        nets = ctx.networks()
        eps = ctx.endpoints()
        counts: dict[str, int] = {}
        for ep in eps:
            counts[ep.network_id] = counts.get(ep.network_id, 0) + 1
        pending = [n.id for n in nets if n.state != READY] + [e.id for e in eps if e.state != READY]
        engine = records.read(ctx.store, keys.docker_engine(ctx.host)) or {}
        seen = last_seen.read_all(ctx.store).get(ctx.host)
        doc["networks"] = [{"id": n.id, "name": ctx.docker_names.networks.get(n.id),
                            "type": n.kind, "subnets": list(n.subnets),
                            "device": ctx.kind(n).describe(n).device,
                            "endpoints": counts.get(n.id, 0), "state": n.state} for n in nets]
        doc["restore"] = {"plugin_socket": s.socket, "socket_present": os.path.exists(s.socket),
                          "records_not_ready": len(pending),
                          "note": "a record not ready is finished by restore when pynet starts"}
        doc["leak_check"] = {"interval_s": s.leak_check_interval, "grace_s": s.leak_grace,
                             "docker_host": s.docker_host,
                             "proven_engine": engine.get("engine"),
                             "dockerd_engine": _engine(ctx),
                             "heartbeat_age_s": None if seen is None else round(time.time() - seen.time, 1)}
        doc["leak_check"]["dockerd_proven"] = _proven(ctx, doc["leak_check"]["dockerd_engine"])
        if pending:
            problems.append(f"{len(pending)} records are not ready (an interrupted call; restore "
                            "finishes it when pynet starts)")
    doc["wireguard"] = wireguard_choice(s)
    doc["wireguard"]["link"] = wireguard_link(doc["wireguard"]["mode"])
    doc["problems"] = problems
    if ctx.out.as_json:
        ctx.out.json(doc)
        return PROBLEMS if problems else OK
    out = ctx.out
    out.line(f"pynet {doc['version']} on host {ctx.host}")
    state = out.paint("reachable", "ok") if health["reachable"] else out.paint("UNREACHABLE", "bad")
    extra = f", {health['latency_ms']} ms" if health["latency_ms"] is not None else ""
    if s.store == "consul" and health["reachable"]:
        extra += f", leader {health['leader'] or out.paint('NONE', 'bad')}"
    out.line(f"store:      {s.store} at {health['at']}: {state}{extra}")
    if "networks" in doc:
        r, lc = doc["restore"], doc["leak_check"]
        out.line(f"plugin:     socket {r['plugin_socket']} "
                 f"{'present' if r['socket_present'] else out.paint('absent', 'warn')}; "
                 f"{r['records_not_ready']} records awaiting restore")
        check = "off" if not lc["interval_s"] else f"every {lc['interval_s']:g} s, grace {lc['grace_s']:g} s"
        proof = ("dockerd proven this host's" if lc.get("dockerd_proven") else
                 "dockerd not proven this host's yet" if lc["dockerd_engine"] else
                 f"dockerd at {lc['docker_host']} does not answer")
        out.line(f"leak check: {check}; {proof}")
        out.line()
        out.table(["NAME", "ID", "TYPE", "SUBNET", "DEVICE", "ENDPOINTS", "STATE"],
                  [[n["name"], n["id"][:12], n["type"], n["subnets"], n["device"], n["endpoints"],
                    n["state"]] for n in doc["networks"]],
                  tones=[None if n["state"] == READY else "warn" for n in doc["networks"]],
                  empty="no pynet networks on this host")
    wg = doc["wireguard"]
    chosen = wg["mode"] or out.paint(f"unavailable ({wg['error']})", "warn")
    out.line(f"wireguard:  {chosen} (--wireguard={wg['setting']}), UDP port {wg['port']}, "
             f"encrypted overlays' VXLAN port {wg['vxlan_port']}, tunnel addresses from {wg['subnet']}")
    link = wg["link"]
    if link.get("error"):
        out.line(f"            link {link['name']}: {out.paint(link['error'], 'warn')}")
    elif not link["present"]:
        out.line(f"            link {link['name']}: none (no encrypted overlay on this host)")
    else:
        ages = [p["handshake_age_s"] for p in link["peers"]]
        fresh = sum(1 for a in ages if a is not None and a < 180)
        out.line(f"            link {link['name']}: {len(ages)} peers, {fresh} with a handshake in the "
                 f"last 3 min" + (f", wireguard-go pid {link['pid']}" if link.get("pid") else ""))
    for p in problems:
        out.line(out.paint(f"problem: {p}", "bad"))
    return PROBLEMS if problems else OK


def wireguard_choice(s, probe=None) -> dict:
    """What carries encrypted overlays on this host: --wireguard resolved the way the plugin
    resolves it (driver/wireguard/choice.py). `mode` None, with `error`, when --wireguard=kernel
    and the kernel has no module. Not a problem while no encrypted overlay needs it."""
    from driver.wireguard.choice import choose, kernel_has_wireguard
    doc = {"setting": s.wireguard, "mode": None, "error": None, "port": s.wireguard_port,
           "vxlan_port": s.encrypted_vxlan_port, "subnet": s.wireguard_subnet}
    try:
        doc["mode"] = choose(s.wireguard, probe or kernel_has_wireguard)
    except PynetError as exc:
        doc["error"] = exc.message
    return doc


def _proven(ctx: Context, engine: str | None) -> bool:
    """The leak check's proof (pynet_core/docker_proof.py), read only: the dockerd lists a pynet
    network on a pool this host holds, or has the engine ID once recorded."""
    if not engine:
        return False
    if docker_proof.proven(ctx.store, ctx.host, engine, False):
        return True
    from ipaddress import ip_network
    from ipam_driver.docker_addresses import DockerAddresses
    from pathlib import Path
    from .ipam_show import read_pools
    view = DockerAddresses(ctx.settings.docker_host, ipam_driver=Path(ctx.settings.socket).stem)()
    held = [ip_network(p["pool"]) for p in read_pools(ctx) if ctx.host in p["holders"]]
    return view is not None and view.knows_pynet_pool(held)


def _engine(ctx: Context) -> str | None:
    try:
        with ctx.docker_api() as api:
            return str(api.info().get("ID") or "") or None
    except Exception:
        return None


def wireguard_link(mode: str | None, links=None, name: str | None = None) -> dict:
    """The WireGuard link of encrypted overlays as the kernel or wireguard-go has it (read
    only): present, its peers with their endpoint and handshake age."""
    from driver.kinds.overlay.tunnels import LINK
    name = name or LINK
    doc: dict = {"name": name, "present": False, "peers": [], "pid": None, "error": None}
    if mode is None and links is None:
        return doc
    try:
        if links is None:
            if mode == "kernel":
                from driver.wireguard.kernel import KernelWireGuard
                links = KernelWireGuard()
            else:
                from driver.wireguard.userspace import UserspaceWireGuard
                links = UserspaceWireGuard(supervise=False)
        found = links.status(name)
    except Exception as exc:  # a report: say it, do not fail the whole status
        doc["error"] = f"cannot read it: {getattr(exc, 'message', exc)}"
        return doc
    if found is None:
        return doc
    now = time.time()
    doc.update(present=True, pid=found.pid, peers=[
        {"public_key": p.public_key.base64, "endpoint": str(p.endpoint) if p.endpoint else None,
         "allowed_ips": [str(n) for n in p.allowed_ips],
         "handshake_age_s": None if p.last_handshake is None else round(now - p.last_handshake, 1),
         "rx_bytes": p.rx_bytes, "tx_bytes": p.tx_bytes} for p in found.peers])
    return doc

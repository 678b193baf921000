#!/usr/bin/env python3
"""Scale: per-operation cost as containers, networks and hosts grow, pynet beside Docker.

    sudo flock /run/lock/pynet-tests.lock python3 bench/scale.py --quick     # N up to 100, ~6 min
    sudo flock /run/lock/pynet-tests.lock python3 bench/scale.py             # N up to 1,000, long
    sudo ... bench/scale.py --only containers,api --max-containers 1000

Sections (--only picks some):
* `containers`: one network per driver (pynet bridge and Docker's bridge, each a /22 given
  explicitly) and `docker run -d ... sleep` alternately on each, up to N containers; run
  without `-p` and again with one `-p HOSTPORT:80` per container. Per-operation time "at N"
  is the median of the 10 `docker run`s ending at the N-th container (N = 10, 100, 1,000).
  The plugin's RSS and store size are read at each N.
* `networks`: `docker network create` of up to M networks alternately per driver, each with
  an explicit /26 (without --subnet Docker's bridge stops where its default pools end: 31
  networks on a stock dockerd, 128 on the bench's), then `docker network rm` of all.
* `api`: the plugin alone (no dockerd: only pynet's own cost), in a network namespace of its
  own (so it touches nothing of the host's):
  RequestAddress, CreateEndpoint, Join, ProgramExternalConnectivity per endpoint up to N
  endpoints on one network, per-method latency at each N; RSS and store size; then kill -9
  and the time from the new process's start to answering calls that need restored state,
  with N endpoints recorded (and the same with none, the process start alone); then
  DeleteEndpoint of all, timed.
* `multihost`: three simulated hosts (tests/harness/multihost.py) with a pynet bridge network
  of the same --subnet on each, so one Consul pool, and K `docker run`s per host, the three
  hosts at once. Docker has no cluster-wide IPAM without Swarm: no built-in column.

Containers are the harness's local busybox image running `sleep`; networks have no route out
(the bench dockerd runs --ip-masq=false). Everything made is removed at the end.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ipaddress
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import bench_docker, timed

from tests.harness.plugin import PluginProcess  # noqa: E402

WINDOW = 10
# one /22 per driver and pass (without -p, with -p): a pass never waits for the last one's subnet
CONTAINER_NETS = {False: {"pynet": "198.18.64.0/22", "docker": "198.18.68.0/22"},
                  True: {"pynet": "198.18.76.0/22", "docker": "198.18.80.0/22"}}
NETWORK_BLOCKS = {"pynet": "198.18.128.0/18", "docker": "198.18.192.0/18"}
API_SUBNET = "198.18.72.0/22"
MULTIHOST_SUBNET = "198.18.96.0/22"
PORT_BASE = {"pynet": 20000, "docker": 22000}


# ---- figures -------------------------------------------------------------------------
def at(times: list[float], n: int) -> float | None:
    """Median of the WINDOW operations ending at the n-th (None if the ramp stopped short)."""
    if len(times) < n:
        return None
    return statistics.median(times[max(0, n - WINDOW):n])


def points(limit: int) -> list[int]:
    return [n for n in (10, 100, 1000) if n <= limit] or [limit]


def net_points(m: int) -> list[int]:
    return sorted({n for n in (10, 100, 200) if n <= m} | {m})


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:8.1f}"


def print_curve(title: str, series: dict[str, list[float]], ns: list[int]) -> None:
    """One row per driver: ms at each N, growth last/first; then the pynet/docker ratio."""
    print(f"\n{title}: per-operation time, ms (median of the {WINDOW} ending at N)")
    print(f"  {'':8}" + "".join(f"{'N=' + str(n):>10}" for n in ns) + f"{'growth':>10}")
    for kind, times in series.items():
        vals = [at(times, n) for n in ns]
        growth = (vals[-1] / vals[0]) if vals[0] and vals[-1] else None
        print(f"  {kind:<8}" + "".join(f"{fmt_ms(v):>10}" for v in vals)
              + (f"{growth:9.2f}x" if growth else f"{'-':>10}"))
    if {"pynet", "docker"} <= series.keys():
        for n in ns:
            p, d = at(series["pynet"], n), at(series["docker"], n)
            if p and d:
                print(f"{title} at N={n}  pynet {p * 1000:.1f} ms docker {d * 1000:.1f} ms "
                      f"ratio pynet/docker {p / d:.3f}")
    if "pynet" in series:
        vals = [at(series["pynet"], n) for n in ns]
        if vals[0] and vals[-1] and len(ns) > 1:
            print(f"{title} pynet cost growth N={ns[-1]} vs N=10  ratio N{ns[-1]}/N10 "
                  f"{vals[-1] / vals[0]:.3f}")


def rss_kib(pid: int) -> int:
    """RSS of the plugin: the gunicorn master and its worker(s) (children in its group)."""
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (p / "stat").read_text()
            pgid = int(stat.rsplit(")", 1)[1].split()[2])
            if pgid == pid:
                for line in (p / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total


def store_bytes(state_dir: Path) -> tuple[int, int]:
    """(database file, its write-ahead log): the WAL grows to ~4 MB before sqlite checkpoints it."""
    def size(name: str) -> int:
        f = state_dir / name
        return f.stat().st_size if f.exists() else 0
    return size("pynet.db"), size("pynet.db-wal")


def plugin_figures(plugin: PluginProcess) -> str:
    db, wal = store_bytes(plugin.state_dir)
    return (f"plugin RSS {rss_kib(plugin.pid) / 1024:.1f} MiB, "
            f"store {db / 1024:.0f} KiB (+ WAL {wal / 1024:.0f} KiB)")


# "NetworkDriver.CreateNetwork <ids> -> 200 (12.3 ms)" (plugin_api.py; whole ms before)
CALL_LINE = re.compile(r"(?P<method>(?:NetworkDriver|IpamDriver|Plugin)\.\w+) .*-> 200 .*?"
                       r"\((?P<ms>\d+(?:\.\d+)?) ms\)$")


def plugin_calls(plugin: PluginProcess, offset: int) -> dict[str, list[float]]:
    """Each method's answer times (s), in call order, from the plugin's log after OFFSET
    (the plugin logs every call with its duration)."""
    calls: dict[str, list[float]] = {}
    with open(plugin.log_path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            if m := CALL_LINE.search(line):
                calls.setdefault(m["method"], []).append(float(m["ms"]) / 1000)
    return calls


def print_plugin_calls(title: str, calls: dict[str, list[float]], ns: list[int]) -> None:
    print(f"  {title}: pynet's own time per call, ms (median of the {WINDOW} ending at N; p99 of all)")
    for method in sorted(calls, key=lambda k: -len(calls[k])):
        ts = calls[method]
        if len(ts) < ns[0]:
            continue
        p99 = sorted(ts)[min(len(ts) - 1, int(len(ts) * 0.99))]
        print(f"    {method:<42}" + "".join(f"{fmt_ms(at(ts, k)):>9}" for k in ns)
              + f"   p99 {p99 * 1000:.0f}")


# ---- containers on one network --------------------------------------------------------
def containers(daemon, image: str, plugin: PluginProcess, n: int, publish: bool, tag: str) -> None:
    label = "docker run -d" + (" -p" if publish else "")
    nets = {}
    for kind, subnet in CONTAINER_NETS[publish].items():
        nets[kind] = f"bench-sc-{kind}{'-p' if publish else ''}-{tag}"
        driver = ["-d", "pynet", "--ipam-driver", "pynet"] if kind == "pynet" else ["-d", "bridge"]
        daemon.cli("network", "create", *driver, "--subnet", subnet, nets[kind])
    times: dict[str, list[float]] = {k: [] for k in nets}
    made: dict[str, list[str]] = {k: [] for k in nets}
    ns = points(n)
    started = time.monotonic()
    log_offset = plugin.log_path.stat().st_size
    try:
        for i in range(n):
            for kind in (("pynet", "docker") if i % 2 == 0 else ("docker", "pynet")):
                name = f"bench-sc-{kind}{'-p' if publish else ''}-{i}-{tag}"
                extra = ["-p", f"{PORT_BASE[kind] + i}:80"] if publish else []
                times[kind].append(timed(lambda: daemon.cli(
                    "run", "-d", "--pull", "never", "--name", name, "--network", nets[kind], *extra,
                    image, "sleep", "36000", timeout=180)))
                made[kind].append(name)
            if i + 1 in ns:
                print(f"  {label}: {i + 1} per driver after {time.monotonic() - started:.0f} s; "
                      f"{plugin_figures(plugin)}", flush=True)
        print_curve(f"{label} (one network)", times, ns)
        print_plugin_calls(label, plugin_calls(plugin, log_offset), ns)
    finally:
        removal = {}
        for kind, names in made.items():
            t0 = time.perf_counter()
            # Ten at a time: `docker rm -f` of 100 running containers at once left containerd
            # answering nothing for 10 minutes on a 2-core machine at N = 1,000.
            for chunk in range(0, len(names), 10):
                rm = daemon.cli("rm", "-f", *names[chunk:chunk + 10], check=False, timeout=600)
                if rm.returncode:
                    print(f"  docker rm -f: {rm.stderr.strip()[:300]}")
            removal[kind] = (time.perf_counter() - t0) / max(1, len(names))
            if not _remove_network(daemon, nets[kind]):
                keep = Path(tempfile.gettempdir()) / f"pynet-bench-scale-{tag}-plugin.log"
                keep.write_bytes(plugin.log_path.read_bytes())
                dlog = keep.with_name(f"pynet-bench-scale-{tag}-dockerd.log")
                dlog.write_bytes(daemon.log_path.read_bytes())
                print(f"  (plugin log kept at {keep}, dockerd's at {dlog})")
        if made["pynet"]:
            print(f"docker rm -f, {len(made['pynet'])} containers{' with -p' if publish else ''}, "
                  f"per container  pynet {removal['pynet'] * 1000:.1f} ms docker "
                  f"{removal['docker'] * 1000:.1f} ms ratio pynet/docker "
                  f"{removal['pynet'] / removal['docker']:.3f}")


def _remove_network(daemon, name: str) -> bool:
    """docker network rm, after any container still on it (a removal dockerd reported done
    can leave its endpoint a moment longer): retried for a while, reported if it stays."""
    for _ in range(10):
        left = daemon.cli("ps", "-aq", "--filter", f"network={name}", check=False).stdout.split()
        if left:
            daemon.cli("rm", "-f", *left, check=False, timeout=600)
        rm = daemon.cli("network", "rm", name, check=False)
        if rm.returncode == 0 or "not found" in rm.stderr:
            return True
        time.sleep(1)
    print(f"  network rm {name} failed: {rm.stderr.strip()}")
    return False


# ---- many networks --------------------------------------------------------------------
def networks(daemon, plugin: PluginProcess, m: int, tag: str) -> None:
    subnets = {k: ipaddress.ip_network(b).subnets(new_prefix=26) for k, b in NETWORK_BLOCKS.items()}
    create: dict[str, list[float]] = {k: [] for k in subnets}
    remove: dict[str, list[float]] = {k: [] for k in subnets}
    made: dict[str, list[str]] = {k: [] for k in subnets}
    log_offset = plugin.log_path.stat().st_size
    try:
        for i in range(m):
            for kind in (("pynet", "docker") if i % 2 == 0 else ("docker", "pynet")):
                name = f"bench-sn-{kind}-{i}-{tag}"
                driver = ["-d", "pynet", "--ipam-driver", "pynet"] if kind == "pynet" else ["-d", "bridge"]
                subnet = str(next(subnets[kind]))
                create[kind].append(timed(lambda: daemon.cli("network", "create", *driver,
                                                             "--subnet", subnet, name)))
                made[kind].append(name)
        ns = net_points(m)
        print_curve(f"docker network create ({m} networks)", create, ns)
        print_plugin_calls("network create", plugin_calls(plugin, log_offset), ns)
    finally:
        for i in reversed(range(max(len(v) for v in made.values()) if made else 0)):
            for kind in ("pynet", "docker"):
                if i < len(made[kind]):
                    remove[kind].append(timed(lambda: daemon.cli("network", "rm", made[kind][i],
                                                                 check=False)))
    if remove["pynet"]:
        for kind in remove:
            remove[kind].reverse()  # index i = the removal that left i networks
        print_curve(f"docker network rm (from {m} networks)", remove, net_points(m))


# ---- the plugin alone -----------------------------------------------------------------
def api(n: int, publish: bool, tag: str) -> None:
    """The plugin alone, in a network namespace of its own: its links, nft table and
    iptables chain are private, so this section touches nothing of the host's (and needs
    no dockerd)."""
    from tests.harness.netns import Namespaces
    namespaces = Namespaces(prefix="pnbapi")
    with tempfile.TemporaryDirectory(prefix="pynet-bench-api-") as tmp:
        ns = namespaces.make()
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        sock = Path(tmp) / "pynet.sock"
        plugin = PluginProcess(Path(tmp) / "state", socket_path=sock, startup_timeout=120,
                               extra_env={"PYNET_LEAK_CHECK_INTERVAL": "0"},
                               command_prefix=("ip", "netns", "exec", ns))
        try:
            plugin.start()
            _api_run(plugin, n, publish, tag)
        finally:
            plugin.stop()
            namespaces.close()


def _call(plugin: PluginProcess, method: str, body: dict) -> dict:
    status, answer = plugin.call("/" + method, body, timeout=30)
    if status != 200:
        raise RuntimeError(f"{method}: {status} {answer}")
    return answer or {}


def _api_run(plugin: PluginProcess, n: int, publish: bool, tag: str) -> None:
    net = ipaddress.ip_network(API_SUBNET)
    nid = secrets.token_hex(32)
    pool = _call(plugin, "IpamDriver.RequestPool", {"AddressSpace": "LocalDefault", "Pool": str(net),
                                                    "SubPool": "", "Options": {}, "V6": False})["PoolID"]
    gw = _call(plugin, "IpamDriver.RequestAddress", {
        "PoolID": pool, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    _call(plugin, "NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": str(net), "Gateway": gw["Address"]}],
        "IPv6Data": []})
    methods = ["RequestAddress", "CreateEndpoint", "Join"] + (["ProgramExternalConnectivity"] if publish else [])
    times: dict[str, list[float]] = {m: [] for m in methods}
    eids = []
    ns = points(n)
    for i in range(n):
        eid = secrets.token_hex(32)
        t0 = time.perf_counter()
        addr = _call(plugin, "IpamDriver.RequestAddress", {"PoolID": pool, "Address": "", "Options": {}})
        t1 = time.perf_counter()
        _call(plugin, "NetworkDriver.CreateEndpoint", {
            "NetworkID": nid, "EndpointID": eid,
            "Interface": {"Address": addr["Address"], "AddressIPv6": "", "MacAddress": ""}, "Options": {}})
        t2 = time.perf_counter()
        _call(plugin, "NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                             "SandboxKey": f"/var/run/docker/netns/{eid[:12]}", "Options": {}})
        t3 = time.perf_counter()
        times["RequestAddress"].append(t1 - t0)
        times["CreateEndpoint"].append(t2 - t1)
        times["Join"].append(t3 - t2)
        if publish:
            _call(plugin, "NetworkDriver.ProgramExternalConnectivity", {
                "NetworkID": nid, "EndpointID": eid, "Options": {"com.docker.network.portmap": [
                    {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 24000 + i,
                     "HostPortEnd": 24000 + i}]}})
            times["ProgramExternalConnectivity"].append(time.perf_counter() - t3)
        eids.append((eid, addr["Address"]))
        if i + 1 in ns:
            print(f"  api: {i + 1} endpoints; {plugin_figures(plugin)}", flush=True)
    print(f"\nplugin API alone, {n} endpoints on one network{' with one -p each' if publish else ''}: "
          f"per-call ms (median of the {WINDOW} ending at N)")
    print(f"  {'method':<30}" + "".join(f"{'N=' + str(k):>10}" for k in ns) + f"{'growth':>10}")
    for m, ts in times.items():
        vals = [at(ts, k) for k in ns]
        print(f"  {m:<30}" + "".join(f"{fmt_ms(v):>10}" for v in vals)
              + (f"{vals[-1] / vals[0]:9.2f}x" if len(ns) > 1 else ""))
        if len(ns) > 1:
            print(f"{m} (plugin alone) cost growth N={ns[-1]} vs N=10  ratio N{ns[-1]}/N10 "
                  f"{vals[-1] / vals[0]:.3f}")
    print(f"  with {n} endpoints: {plugin_figures(plugin)}")

    # kill -9, then time a fresh process to the first answer that needs restored state
    restore = []
    for _ in range(3):
        plugin.kill9()
        restore.append(_time_to_ready(plugin, nid, eids[-1][0]))
    print(f"restore after kill -9 with {n} endpoints recorded (plugin start to ready)  "
          f"{statistics.median(restore):.2f} s (runs {', '.join(f'{r:.2f}' for r in restore)})")
    print(f"  after restore: {plugin_figures(plugin)}")

    deletes: dict[str, list[float]] = {"DeleteEndpoint": [], "ReleaseAddress": []}
    for eid, address in reversed(eids):
        if publish:
            _call(plugin, "NetworkDriver.RevokeExternalConnectivity", {"NetworkID": nid, "EndpointID": eid})
        _call(plugin, "NetworkDriver.Leave", {"NetworkID": nid, "EndpointID": eid})
        deletes["DeleteEndpoint"].append(timed(lambda: _call(plugin, "NetworkDriver.DeleteEndpoint",
                                                             {"NetworkID": nid, "EndpointID": eid})))
        deletes["ReleaseAddress"].append(timed(lambda: _call(plugin, "IpamDriver.ReleaseAddress", {
            "PoolID": pool, "Address": address.split("/")[0]})))
    for m, ts in deletes.items():
        ts.reverse()
        print(f"  {m:<30}" + "".join(f"{fmt_ms(at(ts, k)):>10}" for k in ns))
    _call(plugin, "NetworkDriver.DeleteNetwork", {"NetworkID": nid})
    _call(plugin, "IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": gw["Address"].split("/")[0]})
    _call(plugin, "IpamDriver.ReleasePool", {"PoolID": pool})
    # the same restart with nothing recorded: what the process start alone costs
    plugin.kill9()
    empty = _time_to_ready(plugin, None, None)
    print(f"restore after kill -9 with 0 endpoints recorded (process start alone)  {empty:.2f} s")


def _time_to_ready(plugin: PluginProcess, nid: str | None, eid: str | None) -> float:
    """Seconds from spawning the plugin to a call that needs restored state answering."""
    t0 = time.monotonic()
    plugin.start()
    if nid is not None:
        while True:
            status, _ = plugin.call("/NetworkDriver.EndpointOperInfo", {"NetworkID": nid, "EndpointID": eid})
            if status == 200:
                break
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"plugin not ready after 120 s: {status}")
            time.sleep(0.02)
    return time.monotonic() - t0


# ---- three hosts, one Consul pool -----------------------------------------------------
def multihost(k: int, tag: str) -> None:
    from tests.harness.busybox import IMAGE
    from tests.harness.multihost import MultiHost
    with tempfile.TemporaryDirectory(prefix="pynet-bench-mh-") as tmp:
        bed = MultiHost(Path(tmp), name="pnsc", underlay="198.18.11.0/24",
                        plugin_env={"PYNET_LEAK_CHECK_INTERVAL": "0"})
        with bed:
            for h in bed.hosts:
                h.docker("network", "create", "-d", "pynet", "--ipam-driver", "pynet",
                         "--subnet", MULTIHOST_SUBNET, "pool")

            def ramp(h) -> list[float]:
                out = []
                for i in range(k):
                    out.append(timed(lambda: h.docker("run", "-d", "--pull", "never", "--network", "pool",
                                                      "--name", f"sc-{i}", IMAGE, "sleep", "36000",
                                                      timeout=180)))
                return out

            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(len(bed.hosts)) as pool:
                per_host = dict(zip((h.name for h in bed.hosts), pool.map(ramp, bed.hosts)))
            wall = time.monotonic() - t0
            ns = [n for n in (10, 100, 300) if n <= k] or [k]
            print_curve(f"docker run -d, {len(bed.hosts)} hosts x {k} on one Consul pool (per host)",
                        per_host, ns)
            addrs = set()
            for h in bed.hosts:
                out = h.docker("network", "inspect", "pool", "-f",
                               "{{range .Containers}}{{.IPv4Address}} {{end}}").stdout.split()
                addrs.update(out)
            print(f"  {len(bed.hosts) * k} containers in {wall:.0f} s, {len(addrs)} distinct addresses; "
                  "Docker has no built-in counterpart (no cluster-wide IPAM without Swarm)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N up to 100 (a smoke run, minutes)")
    parser.add_argument("--only", default="api,containers,networks,multihost")
    parser.add_argument("--max-containers", type=int)
    parser.add_argument("--max-networks", type=int)
    parser.add_argument("--per-host", type=int)
    parser.add_argument("--publish", choices=("both", "yes", "no"), default="both",
                        help="containers/api sections: with -p, without, or both")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root")
    n = args.max_containers or (100 if args.quick else 1000)
    m = args.max_networks or (50 if args.quick else 200)
    k = args.per_host or (30 if args.quick else 300)
    only = set(args.only.split(","))
    publish = {"both": (False, True), "yes": (True,), "no": (False,)}[args.publish]
    tag = secrets.token_hex(2)
    t0 = time.monotonic()
    if "api" in only:
        for p in publish:
            api(n, p, tag)
    if only & {"containers", "networks"}:
        holder: dict = {}
        with bench_docker(plugin_env={"PYNET_LEAK_CHECK_INTERVAL": "0"}, holder=holder) as (daemon, image):
            if "networks" in only:
                print("\nDocker's bridge without --subnet stops at its default pools: 31 networks on a "
                      "stock dockerd (172.17-31/16 + 192.168/16 in /20s), 128 on the bench dockerd "
                      "(198.19.0.0/17 in /24s); both drivers get explicit /26s here")
                networks(daemon, holder["plugin"], m, tag)
            if "containers" in only:
                for p in publish:
                    containers(daemon, image, holder["plugin"], n, p, tag)
    if "multihost" in only:
        multihost(k, tag)
    print(f"\nscale bench done in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()

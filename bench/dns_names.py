#!/usr/bin/env python3
"""pynet DNS on the three-host bed (issue 21 item 5): query latency through Docker's resolver,
and how soon a container started on one host is found by name on another.

    sudo flock /run/lock/pynet-tests.lock python3 bench/dns_names.py [--queries 500]
                                  [--containers 20] [--per-host 50] [--poll-ms 2]

One run brings up the multi-host bed of the tests (tests/harness/multihost.py: three
simulated hosts, each with dockerd, a Consul server and pynet `--store consul`) as a swarm
(tests/harness/swarm.py, h1 the manager, pynet still the legacy plugin), every plugin
serving DNS on its host's docker0 gateway (`--dns-addr 198.19.24N.1`, forwarding to nothing
real), a pynet overlay (10.62.0.0/22) on every host and Docker's own attachable swarm
overlay (10.63.0.0/22): Docker's names across hosts, the counterpart measured beside pynet's
(its containers get `--dns 127.0.0.1`, so a name it does not know yet goes nowhere). Then:

* **query latency** (p50/p99 of `--queries` one at a time, dnspython in an asker's network
  namespace on h1): Docker's embedded resolver (127.0.0.11) answering a name of its own host
  (Docker's own DNS), the same resolver asked a name of a container on h2 (Docker forwards it
  to pynet), pynet's address asked that name directly, and Docker's resolver asked a name on
  h2 of its swarm overlay; ratios pynet/docker against the swarm's and against its own host's;
* **name propagation**: the time from `docker run -d` returning on one host to the name
  answering on another (a poller in a container's namespace there asks every pending name
  every 2 ms: pynet's address for pynet's side, 127.0.0.11 for Docker's), p50/p99:
  `--containers` started one at a time on h2 and watched from h1; then `--per-host` on each
  of the three hosts at once (h2's and h3's watched from h1, h1's from h2); each for pynet,
  then for Docker's swarm, and the ratios.
Each host's docker_gwbridge is made by the bench before the swarm is formed (a /24,
198.19.23N.0/24, as Docker's docs show for a custom docker_gwbridge): the bed's own address
pool gives it a /26, room for 61 containers, fewer than both sides need on h2.
`--poll-ms`: how often the poller asks each pending name (every ask of a name not known yet
is also forwarded by pynet: at 2 ms and a dozen pending names, thousands of queries a second
land on the watching host's pynet, on the same two cores as the three dockerds).
Everything is removed at the end (the swarm's and the bed's own teardown), also on failure
or Ctrl-C.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.dnsprobe import POLLER  # noqa: E402
from tests.harness.multihost import Host  # noqa: E402
from tests.harness.swarm import SwarmBed  # noqa: E402
from tests.multihost.support import IMAGE, Ctr, overlay_create, run_on  # noqa: E402

SUBNET, PYNET_VNI = "10.62.0.0/22", 10062
DOCKER_SUBNET = "10.63.0.0/22"

# Asks `server` for `name` `count` times, one at a time; prints the seconds of each.
TIMER = r"""
import sys, time
import dns.message, dns.query
server, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(count):
    q = dns.message.make_query(name, "A")
    t0 = time.perf_counter()
    r = dns.query.udp(q, server, timeout=2)
    took = time.perf_counter() - t0
    assert r.answer, (name, r)
    print(took)
"""

def gateway(h: Host) -> str:
    return f"198.19.{240 + h.index}.1"


def in_ns(pid: int, script: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", script, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kw)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def show(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{label:58s} n={len(ms):4d}  p50 {statistics.median(ms):7.2f} ms  p99 {pct(ms, 99):7.2f} ms",
          flush=True)


def timed(pid: int, server: str, name: str, count: int) -> list[float]:
    proc = in_ns(pid, TIMER, server, name, str(count))
    out, _ = proc.communicate(timeout=600)
    if proc.returncode:
        raise RuntimeError(f"asking {server} for {name} failed")
    return [float(line) for line in out.split()]


@dataclass(frozen=True)
class Side:
    """One side of the comparison: the network its containers join, the server a watcher
    in a container of that network asks, and what that side's addresses start with."""
    label: str
    network: str
    prefix: str
    server: Callable[[Ctr], str]
    run_args: tuple[str, ...] = ()


PYNET = Side("pynet", "appnet", "10.62.", lambda c: gateway(c.host))
# Docker's own names across hosts: a swarm's attachable overlay, asked through its embedded
# resolver. `--dns 127.0.0.1`: a name it does not know yet goes nowhere off the machine.
DOCKER = Side("Docker (Swarm)", "swarmnet", "10.63.", lambda c: "127.0.0.11", ("--dns", "127.0.0.1"))


def propagation(side: Side, starts: dict[Host, list[str]], watchers: dict[Host, Ctr],
                poll: float) -> list[float]:
    """Start `starts[host]` containers (names) on each host at once; each is watched from the
    poller of watchers[host] (a Ctr of the same side on another host)."""
    pollers = {h: in_ns(c.pid, POLLER, side.server(c), side.prefix, str(poll)) for h, c in watchers.items()}
    results: list[float] = []
    try:
        def start(host: Host) -> None:
            for name in starts[host]:
                host.docker("run", "-d", "--pull", "never", "--network", side.network, "--name", name,
                            *side.run_args, IMAGE, "sleep", "3600")
                t0 = time.monotonic()
                poller = pollers[host]
                assert poller.stdin is not None
                poller.stdin.write(f"{name} {t0}\n")
                poller.stdin.flush()
        with concurrent.futures.ThreadPoolExecutor(len(starts)) as pool:
            list(pool.map(start, starts))
        for host, poller in pollers.items():
            for _ in starts[host]:
                assert poller.stdout is not None
                line = poller.stdout.readline()
                if not line:
                    raise RuntimeError(f"a {side.label} poller ended early")
                results.append(float(line.split()[1]))
    finally:
        for poller in pollers.values():
            poller.kill()
            poller.wait()
    return results


def compare(what: str, pynet: list[float], docker: list[float]) -> None:
    for p in (50, 99):
        print(f"{what}, p{p}  ratio pynet/docker {pct(pynet, p) / pct(docker, p):.3f}  (lower is better)",
              flush=True)


def wait_resolves(ctr: Ctr, server: str, name: str, ip: str) -> None:
    deadline = time.monotonic() + 30
    while ip not in ctr.host.docker("exec", ctr.name, "nslookup", name, server, check=False).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never resolved through {server} on {ctr.host.name}")
        time.sleep(0.2)


def gwbridge(h: Host) -> None:
    """Each host's docker_gwbridge a /24 before the swarm makes one from the bed's pool (a /26:
    61 containers, fewer than both sides' containers on h2)."""
    h.docker("network", "create", "--subnet", f"198.19.{232 + h.index}.0/24",
             "-o", "com.docker.network.bridge.name=docker_gwbridge",
             "-o", "com.docker.network.bridge.enable_icc=false", "docker_gwbridge")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--containers", type=int, default=20)
    # h2 holds, per side, web, asker2, --containers and --per-host containers, each with a
    # docker_gwbridge address (the bench's /24: 253 at most).
    parser.add_argument("--per-host", type=int, default=50)
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="run the plugins with --log-level debug (each look and table rebuild "
                             "timed) and copy their logs to DIR before the bed goes")
    args = parser.parse_args()
    if 2 * (2 + args.containers + args.per_host) > 250:
        parser.error("h2's docker_gwbridge (a /24) holds 2 x (2 + --containers + --per-host) containers")
    with tempfile.TemporaryDirectory(prefix="pynet-bench-dns-") as tmp:
        swarm = SwarmBed(Path(tmp), None, name="pndnb", underlay="198.18.32.0/24", prepare=gwbridge,
                         plugin_args=("--overlay-peer-timeout", "6", "--dns-upstream", "127.0.0.1:5399",
                                      "--dns-rate", "1000000",  # the pollers ask a lot
                                      *(("--log-level", "debug") if args.keep_logs else ())),
                         plugin_args_for=lambda h: ("--dns-addr", gateway(h)))
        started = time.monotonic()
        with swarm:  # brings the bed up, each host's docker_gwbridge made, then the swarm
            bed = swarm.bed
            print(f"bed and swarm up in {time.monotonic() - started:.1f} s", flush=True)
            h1, h2, h3 = bed.hosts
            for h in bed.hosts:
                # A VNI of its own: the swarm's overlays (its ingress too) take theirs from
                # 4096 up on the same UDP port, where pynet's allocator starts as well.
                overlay_create(h, "appnet", SUBNET, "-o", f"vni={PYNET_VNI}")
            h1.docker("network", "create", "-d", "overlay", "--attachable", "--subnet", DOCKER_SUBNET,
                      DOCKER.network)
            asker = run_on(h1, "asker", "appnet", "--dns", gateway(h1))
            run_on(h1, "local", "appnet")
            web = run_on(h2, "web", "appnet")
            watcher2 = run_on(h2, "asker2", "appnet", "--dns", gateway(h2))
            dasker = run_on(h1, "dasker", DOCKER.network, *DOCKER.run_args)
            dweb = run_on(h2, "dweb", DOCKER.network, *DOCKER.run_args)
            dwatcher2 = run_on(h2, "dasker2", DOCKER.network, *DOCKER.run_args)
            wait_resolves(asker, "127.0.0.11", "web", web.ip)
            wait_resolves(dasker, "127.0.0.11", "dweb", dweb.ip)

            print("\n-- query latency from a container on h1 --", flush=True)
            docker_own = timed(asker.pid, "127.0.0.11", "local", args.queries)
            show("Docker's resolver, a name of its own host (Docker's DNS)", docker_own)
            forwarded = timed(asker.pid, "127.0.0.11", "web", args.queries)
            show("Docker's resolver, a name on h2 (forwarded to pynet)", forwarded)
            show("pynet's address directly, a name on h2",
                 timed(asker.pid, gateway(h1), "web", args.queries))
            swarm_names = timed(dasker.pid, "127.0.0.11", "dweb", args.queries)
            show("Docker's resolver, a name on h2 in Docker's swarm overlay", swarm_names)
            compare("query, a name on another host: pynet (via Docker's resolver) vs Docker's swarm",
                    forwarded, swarm_names)
            compare("query, a name on another host (via pynet) vs one of Docker's own host",
                    forwarded, docker_own)

            print("\n-- from `docker run` returning to the name answering on another host --", flush=True)
            one_by_one: dict[str, list[float]] = {}
            burst: dict[str, list[float]] = {}
            for side, (watch1, watch2) in ((PYNET, (asker, watcher2)), (DOCKER, (dasker, dwatcher2))):
                tag = "d" if side is DOCKER else ""
                names = [f"{tag}seq{i}" for i in range(args.containers)]
                one_by_one[side.label] = propagation(side, {h2: names}, {h2: watch1}, args.poll_ms / 1000)
                show(f"{side.label}: {args.containers} one at a time on h2, seen from h1",
                     one_by_one[side.label])
            for side, (watch1, watch2) in ((PYNET, (asker, watcher2)), (DOCKER, (dasker, dwatcher2))):
                tag = "d" if side is DOCKER else ""
                starts = {h: [f"{tag}{h.name}x{i}" for i in range(args.per_host)] for h in bed.hosts}
                # h2's and h3's containers watched from h1, h1's from h2; all three hosts at once.
                burst[side.label] = propagation(side, starts, {h1: watch2, h2: watch1, h3: watch1},
                                                args.poll_ms / 1000)
                show(f"{side.label}: 3 hosts x {args.per_host} at once, each seen from another host",
                     burst[side.label])
            compare(f"name propagation, {args.containers} one at a time", one_by_one[PYNET.label],
                    one_by_one[DOCKER.label])
            compare(f"name propagation, 3 hosts x {args.per_host} at once", burst[PYNET.label],
                    burst[DOCKER.label])
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for h in bed.hosts:
                    shutil.copy(h.procs["plugin"].log_path, args.keep_logs / f"{h.name}-pynet.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())

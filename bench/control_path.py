"""Control path under load: 50 concurrent `docker run -d -p` on pynet and on Docker's bridge,
alternated, and pynet's own plugin calls per method (issue 22 item 3).

    sudo flock /run/lock/pynet-tests.lock python3 bench/control_path.py [--rounds 5] [--concurrency 50]
        [--sequential 0] [--plugin-tree DIR]

One private dockerd, the pynet plugin, a pynet network and a Docker bridge network (each an
explicit /24). A warm-up burst of 10 on each (not counted), then each round, alternating
which driver goes first: CONCURRENCY `docker run -d -p 80` at once on one driver's network
(each container's `docker run` timed, and the burst's wall time from the first start to the
last return), all of them removed at once (`docker rm -f`, timed), then the same on the
other. Reported, pynet against Docker over every round's containers pooled: the per-container
start p50 and p99 (goal pynet/Docker <= 1.0 at p50, <= 1.2 at p99), the burst's wall time
and the removal's (medians of the rounds), and each round's own ratios (the noise). Every
plugin call made during the bursts and removals is read back from the plugin's log line
("NetworkDriver.Join ... -> 200 (1.3 ms)", time spent inside the plugin's handler) and
summarised per method as p50/p95/p99. --sequential K adds K single `docker run -d -p 80`
and `docker run -d` per driver and round.

--plugin-tree runs the plugin from another checkout (e.g. `git archive <commit> | tar -x -C
/tmp/before`), for before/after figures with the same benchmark.

bench/all.py calls run(rounds) -> [(name, pynet, docker, ratio)]: `docker run` rows carry
seconds for both drivers and the ratio pynet/docker; per-method rows carry pynet's
milliseconds and None for docker and ratio (Docker's built-in driver has no plugin calls).
run() also prints the summary, one "ratio pynet/docker" line per figure, which all.py's
table collects.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import _remove_plugin_firewall, _restore_host, timed

from tests.harness import plugin as plugin_harness
from tests.harness.busybox import ensure_busybox_image
from tests.harness.dockerd import DockerDaemon, Snapshot, nft_tables, read_ip_forward

METHODS = ("IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join",
           "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
           "NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint", "IpamDriver.ReleaseAddress")
CALL = re.compile(r"\b((?:NetworkDriver|IpamDriver)\.\w+) .*-> (\d{3}) .*\(([\d.]+) ms\)\s*$")

Row = tuple[str, float, "float | None", "float | None"]


@contextlib.contextmanager
def _docker_and_plugin(plugin_tree: Path | None):
    """(dockerd, image, plugin) with the pynet plugin serving; all torn down afterwards."""
    if os.geteuid() != 0:
        sys.exit("benchmarks need root: they start a private dockerd and the pynet plugin")
    if plugin_tree is not None:
        plugin_harness.REPO_ROOT = plugin_tree.resolve()  # the plugin runs from that tree
    with tempfile.TemporaryDirectory(prefix="pynet-bench-") as tmp, \
            _restore_host(nft_tables(), read_ip_forward()):
        daemon = DockerDaemon(Path(tmp) / "dockerd")
        plugin = plugin_harness.PluginProcess(
            Path(tmp) / "state", extra_env={"PYNET_DEFAULT_ADDRESS_POOLS": "base=198.19.224.0/19,size=24",
                                            "PYNET_LEAK_CHECK_INTERVAL": "0"})
        daemon.start()
        try:
            plugin.start()
            try:
                yield daemon, ensure_busybox_image(daemon), plugin
            finally:
                daemon.remove_since(Snapshot())
                plugin.stop()
                _remove_plugin_firewall()
        finally:
            daemon.stop()


def _calls(log_path: Path, offset: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    with open(log_path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            m = CALL.search(line)
            if m and m.group(2) == "200":
                found.setdefault(m.group(1), []).append(float(m.group(3)))
    return found


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


SUBNETS = {"pynet": "198.18.84.0/24", "docker": "198.18.85.0/24"}
WARMUP = 10


def _burst(daemon: DockerDaemon, image: str, net: str, n: int, tag: str) -> tuple[list[float], float, float]:
    """N `docker run -d -p 80` at once: each one's time and the burst's wall time; then all
    of them removed at once (the removal's wall time)."""
    names = [f"bench-cp-{tag}-{i}" for i in range(n)]
    gate = threading.Barrier(n + 1)

    def run(name: str) -> float:
        gate.wait()
        return timed(lambda: daemon.cli("run", "-d", "--pull", "never", "--name", name, "--network",
                                        net, "-p", "80", image, "sleep", "600", timeout=300))

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, name) for name in names]
        gate.wait()  # every thread ready: the burst starts now
        started = time.perf_counter()
        starts = [f.result() for f in futures]
        wall = time.perf_counter() - started
        removal = timed(lambda: list(pool.map(
            lambda name: daemon.cli("rm", "-f", name, timeout=300), names)))
    return starts, wall, removal


def _one(daemon: DockerDaemon, image: str, net: str, publish: bool, tag: str) -> float:
    name = f"bench-cp1-{tag}"
    extra = ["-p", "80"] if publish else []
    took = timed(lambda: daemon.cli("run", "-d", "--pull", "never", "--name", name, "--network", net,
                                    *extra, image, "sleep", "600"))
    daemon.cli("rm", "-f", name)
    return took


def run(rounds: int = 5, concurrency: int = 50, sequential: int = 0,
        plugin_tree: Path | None = None, quick: bool = False) -> list[Row]:
    if quick:
        rounds = min(rounds, 2)
    tag = secrets.token_hex(2)
    started = time.monotonic()
    with _docker_and_plugin(plugin_tree) as (daemon, image, plugin):
        nets = {"pynet": f"bench-cp-pynet-{tag}", "docker": f"bench-cp-docker-{tag}"}
        daemon.cli("network", "create", "-d", "pynet", "--ipam-driver", "pynet",
                   "--subnet", SUBNETS["pynet"], nets["pynet"])
        daemon.cli("network", "create", "-d", "bridge", "--subnet", SUBNETS["docker"], nets["docker"])
        for kind in nets:  # first use: the plugin's first calls, image and dockerd caches
            _burst(daemon, image, nets[kind], min(WARMUP, concurrency), f"{tag}w{kind[0]}")
        starts = {k: [] for k in nets}
        per_round = {k: [] for k in nets}
        walls = {k: [] for k in nets}
        removal = {k: [] for k in nets}
        single = {(k, p): [] for k in nets for p in (True, False)}
        calls: dict[str, list[float]] = {}
        for r in range(rounds):
            order = list(nets) if r % 2 == 0 else list(nets)[::-1]
            for kind in order:
                offset = plugin.log_path.stat().st_size
                got, wall, took = _burst(daemon, image, nets[kind], concurrency, f"{tag}{r}{kind[0]}")
                if kind == "pynet":
                    for method, values in _calls(plugin.log_path, offset).items():
                        calls.setdefault(method, []).extend(values)
                starts[kind] += got
                per_round[kind].append(got)
                walls[kind].append(wall)
                removal[kind].append(took)
            print(f"round {r + 1}/{rounds} ({order[0]} first): per-container start p50 / p99 / burst "
                  f"wall, s: pynet {_pct(per_round['pynet'][-1], 0.5):.3f} / "
                  f"{_pct(per_round['pynet'][-1], 0.99):.3f} / {walls['pynet'][-1]:.3f}, docker "
                  f"{_pct(per_round['docker'][-1], 0.5):.3f} / {_pct(per_round['docker'][-1], 0.99):.3f} / "
                  f"{walls['docker'][-1]:.3f}", flush=True)
            for i in range(sequential):
                for kind in (order if i % 2 == 0 else order[::-1]):
                    for publish in (True, False):
                        single[(kind, publish)].append(
                            _one(daemon, image, nets[kind], publish, f"{tag}{r}{i}{kind[0]}"))
    rows: list[Row] = []

    def both(name: str, p: float, d: float) -> None:
        rows.append((name, p, d, p / d if d else None))

    n = f"{rounds} rounds x {concurrency}"
    both(f"docker run -d -p, {concurrency} at once: per-container start p50 (s, {n})",
         _pct(starts["pynet"], 0.5), _pct(starts["docker"], 0.5))
    both(f"docker run -d -p, {concurrency} at once: per-container start p99 (s, {n})",
         _pct(starts["pynet"], 0.99), _pct(starts["docker"], 0.99))
    both(f"docker run -d -p, {concurrency} at once: burst wall time (s, median of {rounds})",
         statistics.median(walls["pynet"]), statistics.median(walls["docker"]))
    both(f"docker rm -f of {concurrency} at once (s, wall, median of {rounds})",
         statistics.median(removal["pynet"]), statistics.median(removal["docker"]))
    if sequential:
        both("docker run -d -p, one at a time (s, median)",
             statistics.median(single[("pynet", True)]), statistics.median(single[("docker", True)]))
        both("docker run -d, one at a time (s, median)",
             statistics.median(single[("pynet", False)]), statistics.median(single[("docker", False)]))
    for method in METHODS:
        values = calls.get(method, [])
        if values:
            for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                rows.append((f"{method} {label} (ms, n={len(values)})", _pct(values, q), None, None))
    print()
    for q, goal in ((0.5, 1.0), (0.99, 1.2)):
        ratios = [_pct(p, q) / _pct(d, q) for p, d in zip(per_round["pynet"], per_round["docker"])]
        print(f"per-round pynet/docker at p{round(q * 100)} (goal <= {goal}): "
              + ", ".join(f"{x:.3f}" for x in ratios))
    print_summary(rows)
    print(f"({rounds} rounds, {time.monotonic() - started:.0f} s)")
    return rows


def print_summary(rows: list[Row]) -> None:
    """One line per figure; those with both drivers end in "ratio pynet/docker X" (all.py)."""
    for name, p, d, ratio in rows:
        if d is None:
            print(f"{name:<72} pynet {p:9.1f}")
        else:
            print(f"{name:<72} pynet {p:7.3f} docker {d:7.3f} ratio pynet/docker "
                  f"{ratio if ratio is not None else float('nan'):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--sequential", type=int, default=0, help="single runs per driver and round")
    parser.add_argument("--plugin-tree", type=Path, help="run the plugin from this checkout")
    args = parser.parse_args()
    run(args.rounds, args.concurrency, args.sequential, args.plugin_tree)


if __name__ == "__main__":
    main()

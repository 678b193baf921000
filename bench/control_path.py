"""Control path: pynet's plugin calls under 50 concurrent `docker run`, per method, from the
plugin's own timing, and `docker run` itself beside Docker's built-in bridge.

    sudo flock /run/lock/pynet-tests.lock python3 bench/control_path.py [--rounds 3] [--concurrency 50]
        [--sequential 10] [--plugin-tree DIR]

Each round, alternating which driver goes first: a burst of CONCURRENCY `docker run -d -p 80`
at once on a pynet network and on a Docker bridge network (each container's `docker run`
timed), then all of them removed at once (`docker rm -f`); then SEQUENTIAL single
`docker run -d -p 80` and `docker run -d` on each. Every plugin call of the run is read back
from the plugin's log line ("NetworkDriver.Join ... -> 200 (1.3 ms)", time spent inside the
plugin's handler) and summarised per method as p50/p95/p99.

--plugin-tree runs the plugin from another checkout (e.g. `git worktree add /tmp/before
<commit>`), for before/after figures with the same benchmark.

bench/all.py calls run(rounds) -> [(name, pynet, docker, ratio)]: `docker run` rows carry
seconds for both drivers and the ratio pynet/docker; per-method rows carry pynet's
milliseconds and None for docker and ratio (Docker's built-in driver has no plugin calls).
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


def _burst(daemon: DockerDaemon, image: str, net: str, n: int, tag: str) -> tuple[list[float], float]:
    """N `docker run -d -p 80` at once; their times, then all removed at once (timed)."""
    names = [f"bench-cp-{tag}-{i}" for i in range(n)]

    def run(name: str) -> float:
        return timed(lambda: daemon.cli("run", "-d", "--pull", "never", "--name", name, "--network",
                                        net, "-p", "80", image, "sleep", "600", timeout=300))

    with ThreadPoolExecutor(max_workers=n) as pool:
        starts = list(pool.map(run, names))
        removal = timed(lambda: list(pool.map(
            lambda name: daemon.cli("rm", "-f", name, timeout=300), names)))
    return starts, removal


def _one(daemon: DockerDaemon, image: str, net: str, publish: bool, tag: str) -> float:
    name = f"bench-cp1-{tag}"
    extra = ["-p", "80"] if publish else []
    took = timed(lambda: daemon.cli("run", "-d", "--pull", "never", "--name", name, "--network", net,
                                    *extra, image, "sleep", "600"))
    daemon.cli("rm", "-f", name)
    return took


def run(rounds: int = 3, concurrency: int = 50, sequential: int = 10,
        plugin_tree: Path | None = None) -> list[Row]:
    tag = secrets.token_hex(2)
    with _docker_and_plugin(plugin_tree) as (daemon, image, plugin):
        nets = {"pynet": f"bench-cp-pynet-{tag}", "docker": f"bench-cp-docker-{tag}"}
        daemon.cli("network", "create", "-d", "pynet", "--ipam-driver", "pynet", nets["pynet"])
        daemon.cli("network", "create", "-d", "bridge", nets["docker"])
        offset = plugin.log_path.stat().st_size
        burst = {k: [] for k in nets}
        removal = {k: [] for k in nets}
        single = {(k, p): [] for k in nets for p in (True, False)}
        for r in range(rounds):
            order = list(nets) if r % 2 == 0 else list(nets)[::-1]
            for kind in order:
                starts, took = _burst(daemon, image, nets[kind], concurrency, f"{tag}{r}{kind[0]}")
                burst[kind] += starts
                removal[kind].append(took)
            for i in range(sequential):
                for kind in (order if i % 2 == 0 else order[::-1]):
                    for publish in (True, False):
                        single[(kind, publish)].append(
                            _one(daemon, image, nets[kind], publish, f"{tag}{r}{i}{kind[0]}"))
        calls = _calls(plugin.log_path, offset)
    rows: list[Row] = []

    def both(name: str, p: list[float], d: list[float]) -> None:
        mp, md = statistics.median(p), statistics.median(d)
        rows.append((name, mp, md, mp / md if md else None))

    both(f"docker run -d -p, {concurrency} at once (s, median)", burst["pynet"], burst["docker"])
    both(f"docker run -d -p, {concurrency} at once (s, p95)",
         [_pct(burst["pynet"], 0.95)], [_pct(burst["docker"], 0.95)])
    both(f"docker rm -f of {concurrency} at once (s, wall)", removal["pynet"], removal["docker"])
    both("docker run -d -p, one at a time (s, median)", single[("pynet", True)], single[("docker", True)])
    both("docker run -d, one at a time (s, median)", single[("pynet", False)], single[("docker", False)])
    for method in METHODS:
        values = calls.get(method, [])
        if values:
            for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                rows.append((f"{method} {label} (ms, n={len(values)})", _pct(values, q), None, None))
    return rows


def print_rows(rows: list[Row]) -> None:
    print(f"{'':<62} {'pynet':>9} {'docker':>9} {'ratio':>7}")
    for name, p, d, ratio in rows:
        print(f"{name:<62} {p:9.3f} {'' if d is None else f'{d:9.3f}':>9} "
              f"{'' if ratio is None else f'{ratio:7.3f}':>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--sequential", type=int, default=10, help="single runs per driver and round")
    parser.add_argument("--plugin-tree", type=Path, help="run the plugin from this checkout")
    args = parser.parse_args()
    started = time.monotonic()
    rows = run(args.rounds, args.concurrency, args.sequential, args.plugin_tree)
    print_rows(rows)
    print(f"({args.rounds} rounds, {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Network create and delete as the number of networks on the host grows, pynet beside
Docker's own bridge, alternately in one run (issue 22, item 1).

    sudo python3 bench/network_create.py [--networks 200] [--rounds 2]

Each round creates M networks per driver, alternating pynet and Docker's bridge (each with
an explicit /26: Docker's bridge without --subnet stops where its default pools end), then
removes them all, newest first, alternating again. Every `docker network create` and
`docker network rm` is timed from the CLI; pynet's own time per call (CreateNetwork,
DeleteNetwork, from the plugin's log) is printed beside it. For each driver: the median of
each tenth of the ramp, and the growth (median of the last 10 / of the first 10 creates;
for removals, of the 10 that left the most networks / the 10 that left the fewest), then
pynet's growth / Docker's growth (goal <= 1.1).

Takes the machine-wide test lock (/run/lock/pynet-tests.lock, as the e2e tiers do), so it
never runs beside another dockerd-using run. Everything made is removed, even on failure.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

from common import bench_docker, machine_lock, timed

from scale import CALL_LINE, NETWORK_BLOCKS  # noqa: E402

WINDOW = 10
KINDS = ("pynet", "docker")


def plugin_calls(log_path: Path, offset: int) -> dict[str, list[float]]:
    calls: dict[str, list[float]] = {}
    with open(log_path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            if m := CALL_LINE.search(line):
                calls.setdefault(m["method"], []).append(float(m["ms"]) / 1000)
    return calls


def deciles(times: list[float]) -> list[float]:
    n = len(times)
    return [statistics.median(times[i * n // 10:(i + 1) * n // 10]) for i in range(10)]


def growth(times: list[float]) -> float:
    return statistics.median(times[-WINDOW:]) / statistics.median(times[:WINDOW])


def print_series(title: str, series: dict[str, list[float]]) -> dict[str, float]:
    n = len(next(iter(series.values())))
    print(f"\n{title}: ms, median of each tenth of {n} (then growth = last {WINDOW} / first {WINDOW})")
    print(f"  {'':26}" + "".join(f"{f'{i * 10}-{i * 10 + 10}%':>9}" for i in range(10)) + f"{'growth':>9}")
    out = {}
    for kind, times in series.items():
        if len(times) < 2 * WINDOW:
            continue
        out[kind] = growth(times)
        print(f"  {kind:<26}" + "".join(f"{d * 1000:9.1f}" for d in deciles(times))
              + f"{out[kind]:8.2f}x")
    return out


def ramp(daemon, m: int, tag: str, rnd: int, made: dict[str, list[str]]):
    subnets = {k: ipaddress.ip_network(b).subnets(new_prefix=26) for k, b in NETWORK_BLOCKS.items()}
    create: dict[str, list[float]] = {k: [] for k in KINDS}
    for i in range(m):
        for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
            name = f"bench-nc-{kind}-{rnd}-{i}-{tag}"
            driver = ["-d", "pynet", "--ipam-driver", "pynet"] if kind == "pynet" else ["-d", "bridge"]
            subnet = str(next(subnets[kind]))
            create[kind].append(timed(lambda: daemon.cli("network", "create", *driver, "--subnet",
                                                         subnet, name)))
            made[kind].append(name)
    return create


def unramp(daemon, made: dict[str, list[str]]) -> dict[str, list[float]]:
    remove: dict[str, list[float]] = {k: [] for k in KINDS}
    i = 0
    while any(made.values()):
        for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
            if made[kind]:
                name = made[kind][-1]
                t = timed(lambda: daemon.cli("network", "rm", name, check=False))
                made[kind].pop()
                remove[kind].append(t)
        i += 1
    for times in remove.values():
        times.reverse()  # index i: the removal that left i networks of that driver
    return remove


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=200, help="networks per driver and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root")
    tag = secrets.token_hex(2)
    summary = []
    with machine_lock():
        holder: dict = {}
        with bench_docker(plugin_env={"PYNET_LEAK_CHECK_INTERVAL": "0"}, holder=holder) as (daemon, _):
            plugin = holder["plugin"]
            made: dict[str, list[str]] = {k: [] for k in KINDS}
            try:
                for rnd in range(args.rounds):
                    t0 = time.monotonic()
                    offset = plugin.log_path.stat().st_size
                    create = ramp(daemon, args.networks, tag, rnd, made)
                    calls = plugin_calls(plugin.log_path, offset)
                    offset = plugin.log_path.stat().st_size
                    remove = unramp(daemon, made)
                    rm_calls = plugin_calls(plugin.log_path, offset)
                    print(f"\n=== round {rnd + 1}/{args.rounds}: {args.networks} networks per driver, "
                          f"{time.monotonic() - t0:.0f} s")
                    g = print_series("docker network create", {
                        **create, "pynet's own CreateNetwork": calls.get("NetworkDriver.CreateNetwork", [])})
                    r = print_series("docker network rm", {
                        **remove,
                        "pynet's own DeleteNetwork": rm_calls.get("NetworkDriver.DeleteNetwork", [])[::-1]})
                    cg, rg = g["pynet"] / g["docker"], r["pynet"] / r["docker"]
                    print(f"network create growth N={args.networks}/N=10  pynet {g['pynet']:.2f}x docker "
                          f"{g['docker']:.2f}x  ratio pynet/docker {cg:.3f}  (goal <= 1.1)")
                    print(f"network rm growth N={args.networks}/N=10      pynet {r['pynet']:.2f}x docker "
                          f"{r['docker']:.2f}x  ratio pynet/docker {rg:.3f}")
                    pm = statistics.median(create["pynet"]) / statistics.median(create["docker"])
                    print(f"network create, median of all {args.networks}: ratio pynet/docker {pm:.3f}")
                    summary.append((g["pynet"], g["docker"], cg, r["pynet"], r["docker"], rg, pm))
            finally:
                unramp(daemon, made)  # whatever a failure left
                keep = Path("/tmp") / f"pynet-bench-nc-{tag}-plugin.log"
                with contextlib.suppress(OSError):
                    keep.write_bytes(plugin.log_path.read_bytes())
                    print(f"(plugin log kept at {keep})")
    print("\nsummary per round: create growth pynet / docker / ratio; rm growth pynet / docker / "
          "ratio; create pynet/docker overall")
    for i, s in enumerate(summary, 1):
        print(f"  round {i}: create {s[0]:.2f}x / {s[1]:.2f}x / {s[2]:.3f};  rm {s[3]:.2f}x / "
              f"{s[4]:.2f}x / {s[5]:.3f};  overall {s[6]:.3f}")


if __name__ == "__main__":
    main()

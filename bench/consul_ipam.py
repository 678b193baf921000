"""Cluster-wide IPAM throughput: three hosts allocating from one pool at once, per-host
address blocks against the plain one-claim-per-address baseline (every host takes the
lowest free address), side by side in one run.

    sudo python3 bench/consul_ipam.py [--threads 4] [--per-thread 40] [--rounds 2]

Starts a three-host bed (tests/harness/multihost.py: one Consul server and one pynet
plugin per host, no dockerd; underlay 198.18.1.0/24, so it can run next to the test bed)
and drives the plugins over their sockets as dockerd would: RequestPool on every host,
then `threads` callers per host each making `per-thread` RequestAddress calls, then every
address released. Modes alternate round by round so drift on the machine hits both alike.
Reports allocations/s per host and in total, RequestAddress latency p50/p99, failed calls,
and Raft log entries per allocation (every claim attempt, won or lost, is one Raft write).
Everything is torn down at the end, also on Ctrl-C.

Docker has no counterpart to measure beside it: its IPAM is per host without Swarm, and in
Swarm the managers allocate overlay addresses inside their own Raft store, with no call a
bench could drive per address. The baseline measured in the same run is therefore the plain
allocator (lowest free address, one compare-and-set per claim) that pynet's blocks replace.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.multihost import Host, MultiHost  # noqa: E402

MODES = {"lowest-free": "0", "blocks": None}  # pynet.block-size per pool (None: the default)


@dataclass
class Result:
    mode: str
    latencies: list[float] = field(default_factory=list)
    per_host: dict[str, tuple[int, float]] = field(default_factory=dict)  # host -> (allocs, seconds)
    failures: int = 0
    errors: set[str] = field(default_factory=set)
    wall: float = 0.0
    raft_entries: int = 0
    release_wall: float = 0.0
    allocations: int = 0


def call(host: Host, method: str, body: dict) -> tuple[int, dict]:
    status, answer = host.plugin_call(method, body, timeout=30)
    return status, answer or {}


def raft_index(bed: MultiHost) -> int:
    leader = bed.consul_leader()
    stats = bed.consul_get("/v1/agent/self", leader)["Stats"]["raft"]
    return int(stats["last_log_index"])


def background_writes(bed: MultiHost, seconds: float = 3.0) -> float:
    """Raft entries per second Consul writes on its own (node syncs, coordinates)."""
    before = raft_index(bed)
    time.sleep(seconds)
    return (raft_index(bed) - before) / seconds


def run_mode(bed: MultiHost, mode: str, subnet: str, threads: int, per_thread: int,
             idle_rate: float) -> Result:
    res = Result(mode)
    options = {"pynet.block-size": MODES[mode]} if MODES[mode] is not None else {}
    pool_id = ""
    for h in bed.hosts:  # the same subnet on every host: one cluster-wide pool
        status, answer = call(h, "/IpamDriver.RequestPool",
                              {"AddressSpace": "LocalDefault", "Pool": subnet, "Options": options})
        assert status == 200, answer
        pool_id = answer["PoolID"]
    granted: list[tuple[Host, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads * len(bed.hosts))
    finished: dict[str, float] = {}

    def worker(h: Host, n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            started = time.perf_counter()
            status, answer = call(h, "/IpamDriver.RequestAddress", {
                "PoolID": pool_id, "Address": "",
                "Options": {"com.docker.network.endpoint.name": f"bench-{h}-{n}-{i}"}})
            took = time.perf_counter() - started
            with lock:
                if status == 200:
                    res.latencies.append(took)
                    granted.append((h, answer["Address"].split("/")[0]))
                else:
                    res.failures += 1
                    res.errors.add(str(answer.get("Err", answer))[:160])
        with lock:
            finished[h.name] = max(finished.get(h.name, 0.0), time.perf_counter())

    before = raft_index(bed)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads * len(bed.hosts)) as pool:
        list(pool.map(lambda a: worker(*a), [(h, n) for h in bed.hosts for n in range(threads)]))
    res.wall = time.perf_counter() - started
    res.raft_entries = max(0, round(raft_index(bed) - before - idle_rate * res.wall))
    res.allocations = len(granted)
    for h in bed.hosts:
        res.per_host[h.name] = (sum(1 for g, _ in granted if g is h), finished[h.name] - started)
    addresses = [a for _, a in granted]
    if len(set(addresses)) != len(addresses):
        raise SystemExit(f"{mode}: DUPLICATE addresses handed out: this is a bug")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads * len(bed.hosts)) as pool:
        list(pool.map(lambda g: call(g[0], "/IpamDriver.ReleaseAddress",
                                     {"PoolID": pool_id, "Address": g[1]}), granted))
    res.release_wall = time.perf_counter() - started
    for h in bed.hosts:
        call(h, "/IpamDriver.ReleasePool", {"PoolID": pool_id})
    left = bed.kv("pynet/v1/ipam/addrs/")
    if left:
        raise SystemExit(f"{mode}: {len(left)} addresses still claimed after release: a leak")
    return res


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def summarize(results: list[Result], hosts: list[str]) -> list[dict]:
    rows = []
    for mode in MODES:
        rs = [r for r in results if r.mode == mode]
        allocs = sum(r.allocations for r in rs)
        lat = [x for r in rs for x in r.latencies]
        row = {
            "mode": mode,
            "allocations": allocs,
            "total_per_s": allocs / sum(r.wall for r in rs),
            "per_host_per_s": {h: sum(r.per_host[h][0] for r in rs) / sum(r.per_host[h][1] for r in rs)
                               for h in hosts},
            "p50_ms": pct(lat, 0.50),
            "p99_ms": pct(lat, 0.99),
            "failed_calls": sum(r.failures for r in rs),
            "errors": sorted({e for r in rs for e in r.errors}),
            "raft_entries_per_alloc": sum(r.raft_entries for r in rs) / max(allocs, 1),
            "releases_per_s": allocs / sum(r.release_wall for r in rs),
        }
        rows.append(row)
    return rows


def print_table(rows: list[dict], hosts: list[str], args: argparse.Namespace) -> None:
    print(f"\nRequestAddress, {len(hosts)} hosts x {args.threads} callers x {args.per_thread} calls, "
          f"{args.rounds} round(s) per mode, one shared pool")
    head = ["mode", "allocs/s total"] + [f"{h} /s" for h in hosts] + [
        "p50 ms", "p99 ms", "raft writes/alloc", "failed", "releases/s"]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        cells = [r["mode"], f"{r['total_per_s']:.0f}"] + [f"{r['per_host_per_s'][h]:.0f}" for h in hosts] + [
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['raft_entries_per_alloc']:.2f}",
            str(r["failed_calls"]), f"{r['releases_per_s']:.0f}"]
        print(" | ".join(cells))
    for r in rows:
        for e in r["errors"]:
            print(f"  {r['mode']} failure: {e}")
    base, blocks = rows[0], rows[1]
    print(f"\nblocks vs lowest-free: {blocks['total_per_s'] / base['total_per_s']:.1f}x the throughput, "
          f"p99 {base['p99_ms'] / blocks['p99_ms']:.1f}x lower, "
          f"{base['raft_entries_per_alloc'] / blocks['raft_entries_per_alloc']:.1f}x fewer Raft writes")
    print("(no Docker counterpart: Docker's IPAM is per host without Swarm, and Swarm allocates "
          "inside its managers' own Raft store; the baseline is the lowest-free allocator, same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4, help="concurrent callers per host")
    parser.add_argument("--per-thread", type=int, default=40, help="RequestAddress calls per caller")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode (alternating)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if args.threads * args.per_thread * 3 > 4000:
        parser.error("at most 4000 allocations per round (the pool is a /20)")
    with tempfile.TemporaryDirectory(prefix="pynet-bench-consul-") as tmp:
        bed = MultiHost(Path(tmp), name="pnb", underlay="198.18.1.0/24", docker=False,
                        plugin_args=("--threads", str(max(16, args.threads * 2))))
        bed.up()
        try:
            print(f"bed up in {bed.startup_seconds:.1f}s (3 Consul servers, 3 pynet plugins)")
            idle_rate = background_writes(bed)
            print(f"Consul's own Raft writes while idle: {idle_rate:.1f}/s (subtracted below)")
            results = []
            for r in range(args.rounds):
                for i, mode in enumerate(MODES):
                    subnet = f"10.{230 + i}.{16 * r}.0/20"
                    res = run_mode(bed, mode, subnet, args.threads, args.per_thread, idle_rate)
                    print(f"round {r + 1} {mode:12} {res.allocations / res.wall:7.0f} allocs/s "
                          f"p99 {pct(res.latencies, 0.99):6.1f} ms  failed {res.failures}", flush=True)
                    results.append(res)
            hosts = [h.name for h in bed.hosts]
            rows = summarize(results, hosts)
            print_table(rows, hosts, args)
            if args.json:
                print(json.dumps(rows, indent=2))
        finally:
            left = bed.down()
            if left:
                print(f"WARNING: the bed left {left}", file=sys.stderr)


if __name__ == "__main__":
    main()

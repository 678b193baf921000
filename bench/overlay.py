#!/usr/bin/env python3
"""Overlay networks on the three-host bed: throughput against the underlay, and convergence.

    sudo flock /run/lock/pynet-tests.lock python3 bench/overlay.py [--seconds 5] [--rounds 3]
                                                            [--containers 20] [--per-host 50 ...]

Issue 22's 3 hosts x 300 endpoints starting at once (convergence only, ~10 min, mostly
`docker run` and `docker rm` of 900 containers; 3 x 50 first, for comparison):

    sudo flock /run/lock/pynet-tests.lock python3 bench/overlay.py --rounds 0 --containers 0 --per-host 50 300

One run brings up the multi-host bed of the tests (tests/harness/multihost.py: three
simulated hosts, each with dockerd, a Consul server and pynet `--store consul`) and an
overlay (10.70.0.0/22) on every host, then measures:

* **throughput**: one TCP stream (iperf3, run from the test machine in the namespaces with
  nsenter; the image has no iperf3) from a container on h1 to a container on h2 over the
  overlay, and between the same two hosts' own namespaces over the underlay, rounds
  alternating so drift hits both alike. Printed: Gbit/s, medians and overlay/underlay.
* **convergence**: the time from `docker run -d` returning on one host to the new container
  answering a ping from another host (a pinger in a probe container there sends an ICMP echo
  every 2 ms to each address it is told about), p50/p99; and the time until that host's
  kernel has the container's neighbour entry (pynet's watcher latency, seen with
  `ip monitor neigh` in the overlay's namespace). First `--containers` started one at a time
  on h1 and pinged from h2; then `--per-host` on each of the three hosts at once, each
  pinged from the two others (each value of `--per-host` in turn, on the same bed). Printed
  per burst: p50/p99 over all, and per host that sees the new containers; how long each
  `docker run` took; each pynet watcher's syncs (count, mean, total: its
  pynet_overlay_convergence_seconds, read on a --metrics-addr socket); and the CPU seconds the
  machine spent, by program, during the burst (so a tail that is `docker run` / containerd on
  2 cores, not pynet, shows). `--rounds 0` skips the throughput part, `--containers 0` the
  one-at-a-time part. Every host's docker_gwbridge is made with a /22 (dockerd's own would
  take a /26 of the bed's address pools: 61 containers); the overlay (a /22) holds 1,000.
Everything is removed at the end (the bed's own teardown), also on failure or Ctrl-C.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import ipaddress
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import iperf3_in as iperf3  # noqa: E402
from driver import naming  # noqa: E402
from tests.harness.multihost import Host, MultiHost  # noqa: E402
from tests.multihost.support import IMAGE, network_id, overlay_create, run_on  # noqa: E402

SUBNET = "10.70.0.0/22"
# Every container gets a fixed address (an address left to pynet's IPAM comes from its host's
# block, anywhere in the subnet): the probes .2-.4, the containers measured from .16 on.
FIRST = 16


def gwbridge_subnet(h: Host) -> str:
    """A docker_gwbridge for 1,000 containers, inside the host (198.19.0.0/16 is the bed's)."""
    return f"198.19.{16 + 4 * (h.index - 1)}.0/22"


def addresses(count: int, skip: int = 0) -> list[str]:
    net = ipaddress.ip_network(SUBNET)
    if FIRST + skip + count > net.num_addresses - 1:
        raise SystemExit(f"{count} containers do not fit in {SUBNET} (from .{FIRST}, after {skip})")
    return [str(net.network_address + FIRST + skip + i) for i in range(count)]

# Reads "IP T0" lines (T0: time.monotonic() when docker run returned); pings each IP every
# 2 ms until it answers; prints "IP SECONDS" (answer time - T0). CLOCK_MONOTONIC is one clock
# for every process of the machine.
PINGER = r"""
import os, select, socket, struct, sys, threading, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xffff
pending, lock = {}, threading.Lock()
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xffff); total += total >> 16
    return ~total & 0xffff
def reader():
    for line in sys.stdin:
        ip, t0 = line.split()
        with lock:
            pending[ip] = float(t0)
threading.Thread(target=reader, daemon=True).start()
print("ready", flush=True)
seq = 0
while True:
    with lock:
        targets = list(pending)
    for ip in targets:
        seq = (seq + 1) & 0xffff
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        try:
            s.sendto(struct.pack("!BBHHH", 8, 0, checksum(header), ident, seq), (ip, 0))
        except OSError:
            pass
    end = time.monotonic() + 0.002
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        data, peer = s.recvfrom(2048)
        ihl = (data[0] & 0x0f) * 4
        kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind == 0 and rid == ident:
            with lock:
                t0 = pending.pop(peer[0], None)
            if t0 is not None:
                print(peer[0], time.monotonic() - t0, flush=True)
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def throughput(bed: MultiHost, seconds: int, rounds: int) -> None:
    h1, h2 = bed.hosts[:2]
    a, b = run_on(h1, "tput-a", "ov"), run_on(h2, "tput-b", "ov")
    ctr = (["nsenter", f"--net=/proc/{b.pid}/ns/net"], ["nsenter", f"--net=/proc/{a.pid}/ns/net"], b.ip)
    under = (["ip", "netns", "exec", h2.netns], ["ip", "netns", "exec", h1.netns], h2.address)
    results: dict[str, list[float]] = {"overlay": [], "underlay": []}
    for r in range(rounds):
        for label, (srv, cli, ip) in (("overlay", ctr), ("underlay", under)) if r % 2 == 0 else \
                (("underlay", under), ("overlay", ctr)):
            results[label].append(iperf3(srv, cli, ip, seconds))
            print(f"  round {r + 1} {label:<9} {results[label][-1]:7.2f} Gbit/s", flush=True)
    o, u = statistics.median(results["overlay"]), statistics.median(results["underlay"])
    print(f"TCP 1 stream h1->h2: overlay {o:.2f} Gbit/s, underlay {u:.2f} Gbit/s, "
          f"ratio overlay/underlay {o / u:.3f} (goal >= 0.75; median of {rounds})")
    h1.docker("rm", "-f", "tput-a"), h2.docker("rm", "-f", "tput-b")


class Pinger:
    """PINGER in a probe container's namespace; answer times by address."""

    def __init__(self, pid: int) -> None:
        self.proc = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", PINGER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.answers: dict[str, float] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ip, seconds = line.split()
            with self._lock:
                self.answers[ip] = float(seconds)

    def ask(self, ip: str, t0: float) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(f"{ip} {t0}\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class NeighWatch:
    """`ip monitor neigh` in a host's overlay namespace: when each address got its entry."""

    def __init__(self, host: Host, nid: str) -> None:
        self.proc = subprocess.Popen([*host.enter_argv(), "ip", "-n", naming.overlay_netns(nid), "monitor",
                                      "neigh"], stdout=subprocess.PIPE, text=True, bufsize=1)
        self.seen: dict[str, float] = {}
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.3)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "PERMANENT" in line and not line.startswith("Deleted"):
                self.seen.setdefault(line.split()[0], time.monotonic())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_timed(host: Host, name: str, ip: str) -> tuple[float, float]:
    """(when `docker run -d` returned, how long it took)."""
    began = time.monotonic()
    host.docker("run", "-d", "--pull", "never", "--network", "ov", "--name", name, "--ip", ip, IMAGE,
                "sleep", "3600")
    done = time.monotonic()
    return done, done - began


def metrics_socket(h: Host) -> Path:
    return h.dir / "metrics.sock"


def watcher_syncs(h: Host) -> tuple[float, float]:
    """(syncs, seconds in them) of the host's pynet watcher so far, from its metrics socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(metrics_socket(h)))
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: pynet\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    text = data.decode()
    found = [float(re.search(rf"^pynet_overlay_convergence_seconds_{k} ([0-9.e+-]+)$", text, re.M)[1])
             for k in ("count", "sum")]
    return found[0], found[1]


def cpu_by_program() -> tuple[dict[str, float], float, float]:
    """(CPU seconds used so far by the machine's live processes, by program; all CPUs' busy
    seconds; idle seconds). Processes that ended meanwhile (runc, each docker CLI) show only
    in the machine's total."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = collections.Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if "pynet.cli" in cmd and " serve " in cmd:
            name = "pynet"
        elif comm.startswith("containerd-shim"):
            name = "containerd-shim"
        elif comm in ("dockerd", "containerd", "consul", "docker", "runc", "ip", "python3"):
            name = comm
        else:
            name = "other"
        used[name] += (int(fields[11]) + int(fields[12])) / tick
    cpu = [int(x) / tick for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = cpu[3] + cpu[4]
    return used, sum(cpu) - idle, idle


def convergence(bed: MultiHost, nets: dict[Host, str], title: str, plan: list[tuple[Host, str, str]],
                parallel: bool) -> None:
    """plan: (host, name, ip) of the containers to start; each is pinged from every other host."""
    net = ipaddress.ip_network(SUBNET)
    probes = {h: run_on(h, f"probe{h.index}", "ov", "--ip", str(net.network_address + 1 + h.index))
              for h in bed.hosts}
    pingers = {h: Pinger(p.pid) for h, p in probes.items()}
    watches = {h: NeighWatch(h, nets[h]) for h in bed.hosts}
    t0s: dict[str, tuple[Host, float]] = {}
    runs: dict[Host, list[float]] = {h: [] for h in bed.hosts}
    syncs_before = {h: watcher_syncs(h) for h in bed.hosts}
    cpu_before = cpu_by_program()
    began = time.monotonic()
    try:
        def start(item: tuple[Host, str, str]) -> None:
            host, name, ip = item
            t0, took = start_timed(host, name, ip)
            runs[host].append(took)
            t0s[ip] = (host, t0)
            for other, pinger in pingers.items():
                if other is not host:
                    pinger.ask(ip, t0)

        if parallel:
            per_host: dict[Host, list] = {}
            for item in plan:
                per_host.setdefault(item[0], []).append(item)
            with concurrent.futures.ThreadPoolExecutor(len(per_host)) as pool:
                list(pool.map(lambda items: [start(i) for i in items], per_host.values()))
        else:
            for item in plan:
                start(item)
        started = time.monotonic() - began
        deadline = time.monotonic() + 30
        expected = sum(len(bed.hosts) - 1 for _ in plan)
        while time.monotonic() < deadline:
            if sum(len(p.answers) for p in pingers.values()) >= expected and \
                    all(ip in w.seen for ip, (host, _) in t0s.items() for h, w in watches.items() if h is not host):
                break
            time.sleep(0.1)
        cpu_after = cpu_by_program()
        syncs_after = {h: watcher_syncs(h) for h in bed.hosts}
        ping = [p.answers[ip] for ip, (host, _) in t0s.items() for h, p in pingers.items()
                if h is not host and ip in p.answers]
        lost = expected - len(ping)
        entry = [w.seen[ip] - t0 for ip, (host, t0) in t0s.items() for h, w in watches.items()
                 if h is not host and ip in w.seen]
        print(f"{title}: ping answered after docker run returned: p50 {percentile(ping, 50) * 1000:.0f} ms, "
              f"p99 {percentile(ping, 99) * 1000:.0f} ms, max {max(ping) * 1000:.0f} ms "
              f"over {len(ping)} (unanswered within 30 s: {lost}; goal p99 <= 200 ms)")
        if entry:
            print(f"{' ' * len(title)}  neighbour entry programmed (watcher): p50 "
                  f"{percentile(entry, 50) * 1000:.0f} ms, p99 {percentile(entry, 99) * 1000:.0f} ms, "
                  f"max {max(entry) * 1000:.0f} ms over {len(entry)} "
                  f"(negative: before docker run returned)")
        for h in bed.hosts:  # where the new containers are seen
            ping_h = [pingers[h].answers[ip] for ip, (host, _) in t0s.items()
                      if host is not h and ip in pingers[h].answers]
            entry_h = [watches[h].seen[ip] - t0 for ip, (host, t0) in t0s.items()
                       if host is not h and ip in watches[h].seen]
            n, total = (syncs_after[h][i] - syncs_before[h][i] for i in (0, 1))
            print(f"  seen on {h.name}: ping p50 {percentile(ping_h, 50) * 1000:.0f} ms, p99 "
                  f"{percentile(ping_h, 99) * 1000:.0f} ms; entry p50 {percentile(entry_h, 50) * 1000:.0f} ms, "
                  f"p99 {percentile(entry_h, 99) * 1000:.0f} ms; its watcher: {n:.0f} syncs, mean "
                  f"{total / max(n, 1) * 1000:.0f} ms, {total:.1f} s in all")
        for h, took in runs.items():
            print(f"  docker run -d on {h.name}: p50 {percentile(took, 50) * 1000:.0f} ms, p99 "
                  f"{percentile(took, 99) * 1000:.0f} ms over {len(took)}")
        used = {k: cpu_after[0][k] - cpu_before[0].get(k, 0.0) for k in cpu_after[0]}
        busy, idle = cpu_after[1] - cpu_before[1], cpu_after[2] - cpu_before[2]
        print(f"  CPU while starting ({started:.0f} s to start them all) and converging: busy "
              f"{busy:.0f} s, idle {idle:.0f} s of {os.cpu_count()} cores; by program (live "
              "processes): " + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(used.items(), key=lambda kv: -kv[1])
                                         if v >= 0.5))
    finally:
        for x in (*pingers.values(), *watches.values()):
            x.close()
    for h in bed.hosts:
        ids = h.docker("ps", "-aq").stdout.split()
        if ids:
            h.docker("rm", "-f", *ids, timeout=1200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--per-host", type=int, nargs="+", default=[50],
                        help="containers per host started at once; several values: one burst each")
    args = parser.parse_args()
    for count in (args.containers, 3 * max(args.per_host)):
        addresses(count)  # fits in the overlay, or say so before the bed comes up
    with tempfile.TemporaryDirectory(prefix="pynet-bench-overlay-") as tmp:
        bed = MultiHost(Path(tmp), name="pnbo", underlay="198.18.9.0/24",
                        plugin_args_for=lambda h: ("--metrics-addr", f"unix:{metrics_socket(h)}"))
        started = time.monotonic()
        with bed:
            print(f"bed up in {time.monotonic() - started:.1f}s", flush=True)
            for h in bed.hosts:
                h.docker("network", "create", "--subnet", gwbridge_subnet(h),
                         "-o", "com.docker.network.bridge.name=docker_gwbridge",
                         "-o", "com.docker.network.bridge.enable_icc=false",
                         "-o", "com.docker.network.bridge.enable_ip_masquerade=true", "docker_gwbridge")
            nets = {h: (overlay_create(h, "ov", SUBNET), network_id(h, "ov"))[1] for h in bed.hosts}
            if args.rounds > 0:
                throughput(bed, args.seconds, args.rounds)
            h1 = bed.hosts[0]
            if args.containers > 0:
                convergence(bed, nets, f"{args.containers} containers on h1, pinged from h2 and h3",
                            [(h1, f"one{i}", ip) for i, ip in enumerate(addresses(args.containers))],
                            parallel=False)
            for per_host in args.per_host:
                ips = addresses(3 * per_host)
                convergence(bed, nets, f"3 hosts x {per_host} containers at once",
                            [(h, f"many{h.index}-{i}", ips[(h.index - 1) * per_host + i])
                             for h in bed.hosts for i in range(per_host)], parallel=True)
            for h in bed.hosts:
                # After hundreds of `docker rm -f`, dockerd may still be releasing endpoints.
                for _ in range(20):
                    if h.docker("network", "rm", "ov", check=False).returncode == 0:
                        break
                    time.sleep(3)
                else:
                    h.docker("network", "rm", "ov")
            left = {k for k in bed.kv("pynet/v1/overlay/")}
            print("overlay keys left in Consul:", sorted(left) or "none")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Through a published port: pynet's bridge vs Docker's built-in bridge with the same `-p`.

    sudo python3 bench/published_ports.py [--seconds 3] [--rounds 5] [--conn-seconds 2]

One run sets up, side by side:
* a private dockerd and the pynet plugin (bench/common.py), a busybox image;
* an "outside" namespace joined to the host by a veth (198.18.120.1 host / .2 outside);
* a pynet network (198.18.121.0/24) and a Docker bridge network (from the daemon's pool),
  one container on each, publishing a TCP port for iperf3 and one for connection tests,
  each with `-p HOSTPORT:PORT`.
Measured from the outside namespace to the host's address (the kernel NAT path for both),
and from the host's 127.0.0.1 (pynet: kernel DNAT; Docker 20.10: docker-proxy in userland):
* throughput: iperf3, one TCP stream (the image has no iperf3: the server runs in the
  container's namespace through nsenter);
* connection rate: new TCP connections per second (connect, read the server's byte, close),
  two client processes; the server (also in the container's namespace) accepts and closes.
  Both sides are Python, which caps absolute rates: the ratio shows the NAT path's cost
  only where it is not hidden by that cap.
Each round measures both back to back; the ratio printed is the median of the per-round
ratios, so drift on the machine between rounds cancels out. Bounded: at
most rounds x (4 x seconds + 4 x conn-seconds) plus ~40 s of set-up and warm-up, and at most
--conn-budget connections per measurement (conntrack entries linger 120 s). Everything made
is removed at the end, also on failure or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack

from common import bench_docker, container_pid

OUTSIDE_HOST, OUTSIDE = "198.18.120.1", "198.18.120.2"
PYNET_SUBNET = "198.18.121.0/24"

CONN_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1024)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.send(b"x"); c.close()
"""

CONN_CLIENT = r"""
import socket, sys, time
host, port, seconds, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
n, errors, start = 0, 0, time.perf_counter()
while n < budget and time.perf_counter() - start < seconds:
    try:
        c = socket.create_connection((host, port), timeout=2)
        c.recv(1); c.close(); n += 1
    except OSError:
        errors += 1
print(n, errors, time.perf_counter() - start)
"""


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def make_outside(stack: ExitStack, tag: str) -> list[str]:
    ns, link = f"pnt-bpp{tag}", f"pntbpp{tag}"
    sh("ip", "netns", "add", ns)
    stack.callback(sh, "ip", "netns", "del", ns, check=False)
    sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
    stack.callback(sh, "ip", "link", "del", link, check=False)
    sh("ip", "addr", "add", f"{OUTSIDE_HOST}/24", "dev", link)
    sh("ip", "link", "set", link, "up")
    for argv in (("ip", "addr", "add", f"{OUTSIDE}/24", "dev", "eth0"), ("ip", "link", "set", "eth0", "up"),
                 ("ip", "link", "set", "lo", "up")):
        sh("ip", "netns", "exec", ns, *argv)
    return ["ip", "netns", "exec", ns]


def start(stack: ExitStack, argv: list[str], wait_ready: bool = False) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stack.callback(stop)
    if wait_ready and proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{argv} did not start")
    return proc


def iperf(server_ns: list[str], client: list[str], host: str, port: int,
          seconds: int) -> float:
    with ExitStack() as local:
        start(local, [*server_ns, "iperf3", "-s", "-1", "-p", "5201"])
        time.sleep(0.3)
        out = sh(*client, "iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J",
                 timeout=seconds + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def conn_rate(client: list[str], host: str, port: int, seconds: float, budget: int) -> float:
    procs = [subprocess.Popen([*client, sys.executable, "-c", CONN_CLIENT, host, str(port), str(seconds),
                               str(budget // 2)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    total, elapsed = 0, 0.0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 30)
        n, errors, took = out.split()
        if int(errors):
            print(f"  ({errors} failed connections to {host}:{port})")
        total, elapsed = total + int(n), max(elapsed, float(took))
    return total / elapsed


def ratio_line(title: str, unit: str, pynet: list[float], docker: list[float]) -> str:
    """Medians, and the median of per-round ratios (each round measures both back to back,
    so a round's ratio is immune to the machine's drift between rounds)."""
    p, d = statistics.median(pynet), statistics.median(docker)
    paired = sorted(a / b for a, b in zip(pynet, docker) if b)
    return (f"{title:<46} pynet {p:9.2f} {unit:<6} docker {d:9.2f} {unit:<6} ratio pynet/docker "
            f"{statistics.median(paired):5.2f} (per-round {paired[0]:.2f}-{paired[-1]:.2f}, {len(paired)} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="iperf3 duration per measurement")
    parser.add_argument("--conn-seconds", type=float, default=2.0, help="connection-rate duration")
    parser.add_argument("--conn-budget", type=int, default=8000, help="max connections per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per driver and path")
    args = parser.parse_args()
    tag = secrets.token_hex(2)
    ours = False
    try:
        with bench_docker() as (daemon, image), ExitStack() as stack:
            ours = True  # the harness refuses to run beside another session: the plugin is ours
            measure(args, tag, daemon, image, stack)
    finally:
        if ours:  # the plugin drops its table with its last network; make sure, even on failure
            sh("nft", "delete", "table", "inet", "pynet", check=False)


def measure(args: argparse.Namespace, tag: str, daemon, image: str, stack: ExitStack) -> None:
    outside, nets, targets = set_up(tag, daemon, image, stack)
    paths = {"outside": (outside, OUTSIDE_HOST), "host 127.0.0.1": ([], "127.0.0.1")}
    tput = {(p, k): [] for p in paths for k in nets}
    rate = {(p, k): [] for p in paths for k in nets}
    for path, (client, host) in paths.items():  # warm-up (caches, ARP, conntrack): not counted
        for kind, (ns, iperf_port, conn_port) in targets.items():
            iperf(ns, client, host, iperf_port, 1)
    for r in range(args.rounds):
        for path, (client, host) in paths.items():
            order = list(targets.items())[::-1 if r % 2 else 1]  # who goes first alternates
            for kind, (ns, iperf_port, conn_port) in order:
                tput[path, kind].append(iperf(ns, client, host, iperf_port, args.seconds))
                rate[path, kind].append(conn_rate(client, host, conn_port, args.conn_seconds,
                                                  args.conn_budget))
        print(f"round {r + 1}: " + "  ".join(
            f"{p}/{k} {tput[p, k][-1]:.2f} Gbit/s {rate[p, k][-1]:.0f} conn/s" for p in paths for k in nets))
    print()
    for path in paths:
        print(ratio_line(f"TCP throughput, 1 stream, from {path}", "Gbit/s",
                         tput[path, "pynet"], tput[path, "docker"]))
        print(ratio_line(f"TCP connection rate, from {path}", "conn/s",
                         rate[path, "pynet"], rate[path, "docker"]))


def set_up(tag: str, daemon, image: str, stack: ExitStack):
    """The outside namespace, both networks, one container on each with published ports
    and the connection server in its namespace."""
    outside = make_outside(stack, tag)
    nets = {"pynet": f"bench-pp-pynet-{tag}", "docker": f"bench-pp-docker-{tag}"}
    daemon.cli("network", "create", "-d", "pynet", "--ipam-driver", "pynet", "--subnet", PYNET_SUBNET,
               nets["pynet"])
    daemon.cli("network", "create", "-d", "bridge", nets["docker"])
    targets = {}
    for kind, net in nets.items():
        iperf_port, conn_port = free_port(), free_port()
        ctr = f"bench-pp-{kind}-{tag}"
        daemon.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net,
                   "-p", f"{iperf_port}:5201", "-p", f"{conn_port}:7000", image, "sleep", "3600")
        ns = ["nsenter", f"--net=/proc/{container_pid(daemon, ctr)}/ns/net"]
        start(stack, [*ns, sys.executable, "-c", CONN_SERVER, "7000"], wait_ready=True)
        targets[kind] = (ns, iperf_port, conn_port)
    print("published ports: " + ", ".join(f"{k} iperf3 {v[1]} conn {v[2]}" for k, v in targets.items()))
    return outside, nets, targets


if __name__ == "__main__":
    main()

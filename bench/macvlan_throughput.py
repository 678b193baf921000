#!/usr/bin/env python3
"""Container <-> LAN-host TCP throughput: pynet macvlan vs Docker's built-in macvlan driver.

    sudo python3 bench/macvlan_throughput.py [--seconds 3] [--rounds 3]

One run sets up, side by side on the same parent:
* a private dockerd and the pynet plugin (the e2e harness's, so nothing is shared with a
  system dockerd), and a busybox image;
* the "LAN": a veth whose root-namespace end is the parent and whose peer sits in a
  namespace made here, with 198.18.110.1/24 and 198.18.111.1/24 (the LAN host);
* a pynet macvlan network (198.18.110.0/24) and a Docker macvlan network (198.18.111.0/24)
  on that parent, bridge mode, one container on each.
iperf3 runs in the LAN host's namespace (server) and in each container's namespace from the
host through nsenter (client; the image has no iperf3). Rounds alternate between the two
networks, each direction, so drift affects both alike. Printed: Gbit/s per run, medians,
and the pynet/Docker ratio. Duration is bounded (about 4 x rounds x seconds plus ~20 s of
set-up); everything made is removed at the end, also on failure or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.busybox import ensure_busybox_image  # noqa: E402
from tests.harness.dockerd import DockerDaemon  # noqa: E402
from tests.harness.plugin import PluginProcess  # noqa: E402

NETS = {  # label -> (docker driver args, subnet, LAN host address)
    "pynet": (["-d", "pynet", "-o", "type=macvlan"], "198.18.110.0/24", "198.18.110.1"),
    "docker": (["-d", "macvlan"], "198.18.111.0/24", "198.18.111.1"),
}


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def make_lan(stack: ExitStack, tag: str) -> tuple[str, str]:
    """The parent veth end (root namespace) and the LAN host's namespace."""
    ns, parent = f"pnt-bench{tag}", f"pntb{tag}"
    sh("ip", "netns", "add", ns)
    stack.callback(sh, "ip", "netns", "del", ns, check=False)
    sh("ip", "link", "add", parent, "type", "veth", "peer", "name", f"{parent}p")
    stack.callback(sh, "ip", "link", "del", parent, check=False)
    sh("ip", "link", "set", f"{parent}p", "netns", ns)
    sh("ip", "-n", ns, "link", "set", f"{parent}p", "name", "lan")
    for _, _, address in NETS.values():
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "lan")
    for link in ("lan", "lo"):
        sh("ip", "-n", ns, "link", "set", link, "up")
    sh("ip", "link", "set", parent, "up")
    return parent, ns


def start_iperf_server(stack: ExitStack, ns: str) -> None:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # our own process group: iperf3 we started
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    stack.callback(stop)
    for _ in range(50):  # until it listens
        if sh("ip", "netns", "exec", ns, "ss", "-ltn", "sport = :5201", check=False).stdout.count("LISTEN"):
            return
        time.sleep(0.1)
    raise RuntimeError("iperf3 server did not start")


def iperf(pid: int, server: str, seconds: int, reverse: bool) -> float:
    """Gbit/s received, client in the container's network namespace."""
    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "iperf3", "-c", server, "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    out = sh(*argv, timeout=seconds + 30).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=3, help="iperf3 duration per run (1-30)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per network and direction (1-10)")
    args = parser.parse_args()
    if not (1 <= args.seconds <= 30 and 1 <= args.rounds <= 10):
        parser.error("--seconds must be 1-30 and --rounds 1-10 (the run stays bounded)")
    if os.geteuid() != 0:
        parser.error("needs root: it starts dockerd and makes namespaces and links")
    tag = secrets.token_hex(3)
    with ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="pynet-bench-"))
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        dockerd = DockerDaemon(base / "dockerd")
        dockerd.start()
        stack.callback(dockerd.stop)
        plugin = PluginProcess(base / "pynet-state")
        plugin.start()
        stack.callback(plugin.stop)
        image = ensure_busybox_image(dockerd)
        parent, ns = make_lan(stack, tag)
        # Docker objects go before the plugin and the wire (the stack unwinds in reverse).
        made: list[tuple[str, str]] = []
        stack.callback(lambda: [dockerd.cli(*cmd, name, check=False) for cmd, name in reversed(made)])
        pids = {}
        for label, (driver, subnet, gateway) in NETS.items():
            net = f"pynet-bench-{label}-{tag}"
            dockerd.cli("network", "create", *driver, "-o", f"parent={parent}", "--subnet", subnet,
                        "--gateway", gateway, net)
            made.append((("network", "rm"), net))
            ctr = f"pynet-bench-{label}-c-{tag}"
            made.append((("rm", "-f"), ctr))
            dockerd.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, image, "sleep", "3600")
            pids[label] = int(dockerd.cli("inspect", "-f", "{{.State.Pid}}", ctr).stdout)
        start_iperf_server(stack, ns)
        for label, pid in pids.items():  # what is being compared: the two containers' links
            detail = sh("nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-d", "link", "show", "eth0").stdout
            print(f"{label}: " + " ".join(detail.split()), flush=True)

        results: dict[tuple[str, str], list[float]] = {}
        for rnd in range(args.rounds):
            for reverse in (False, True):
                direction = "lan->ctr" if reverse else "ctr->lan"
                order = list(NETS) if rnd % 2 == 0 else list(reversed(NETS))
                for label in order:
                    gbps = iperf(pids[label], NETS[label][2], args.seconds, reverse)
                    results.setdefault((label, direction), []).append(gbps)
                    print(f"round {rnd + 1} {direction:9} {label:7} {gbps:7.2f} Gbit/s", flush=True)

        print(f"\nTCP throughput, median of {args.rounds} x {args.seconds} s "
              f"(kernel {os.uname().release}, parent veth {parent}):")
        print(f"{'direction':10} {'pynet':>10} {'docker':>10} {'ratio':>7}")
        ratios = []
        for direction in ("ctr->lan", "lan->ctr"):
            ours = statistics.median(results[("pynet", direction)])
            theirs = statistics.median(results[("docker", direction)])
            ratios.append(ours / theirs)
            print(f"{direction:10} {ours:8.2f} G {theirs:8.2f} G {ours / theirs:7.3f}")
        print(f"pynet/docker macvlan throughput ratio: {statistics.fmean(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pynet bridge vs Docker's built-in bridge: `docker run` start latency and
container-to-container TCP throughput, side by side in one run.

    sudo python3 bench/bridge.py [--runs 10] [--seconds 5]
"""
from __future__ import annotations

import argparse
import secrets

from common import bench_docker, container_ip, container_pid, iperf3, report, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="docker run repetitions per driver")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="throughput measurements per driver")
    args = parser.parse_args()
    tag = secrets.token_hex(2)
    with bench_docker() as (daemon, image):
        nets = {"pynet": f"bench-pynet-{tag}", "docker": f"bench-docker-{tag}"}
        daemon.cli("network", "create", "-d", "pynet", "--ipam-driver", "pynet", nets["pynet"])
        daemon.cli("network", "create", "-d", "bridge", nets["docker"])

        starts: dict[str, list[float]] = {k: [] for k in nets}
        for _ in range(args.runs):  # alternate, so drift on the machine hits both alike
            for kind, net in nets.items():
                starts[kind].append(timed(lambda: daemon.cli(
                    "run", "--rm", "--pull", "never", "--network", net, image, "true")))
        report("docker run --rm (start+stop latency)", "s", starts["pynet"], starts["docker"], False)

        pairs = {}
        for kind, net in nets.items():
            a, b = (f"bench-{kind}-{x}-{tag}" for x in "ab")
            for ctr in (a, b):
                daemon.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, image,
                           "sleep", "3600")
            pairs[kind] = (container_pid(daemon, a), container_pid(daemon, b), container_ip(daemon, b))
        rates: dict[str, list[float]] = {k: [] for k in nets}
        for _ in range(args.rounds):
            for kind, (pid_a, pid_b, ip_b) in pairs.items():
                rates[kind].append(iperf3(pid_b, pid_a, ip_b, args.seconds))
        report("container->container TCP, 1 stream", "Gbit/s", rates["pynet"], rates["docker"], True)


if __name__ == "__main__":
    main()

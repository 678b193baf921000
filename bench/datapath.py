#!/usr/bin/env python3
"""What pynet's per-packet work costs: container<->container TCP on a pynet bridge vs
Docker's bridge, side by side, with one piece of the netfilter path taken away at a time.

    sudo flock /run/lock/pynet-tests.lock python3 bench/datapath.py [--rounds 7] [--seconds 3]

Each round measures every variant below, pynet pair and Docker pair back to back (the order
alternates by round), and puts the variant's change back before the next one:

* `baseline`          as pynet and Docker leave the host;
* `no-pynet-rules`    table inet pynet deleted (restored from its own listing afterwards);
                      the PYNET-FORWARD shim stays, so traffic still passes Docker's policy;
* `shim-first`        the FORWARD jump to PYNET-FORWARD replaced by one ACCEPT for the pynet
                      bridge at the top of FORWARD: the cost of walking Docker's FORWARD rules
                      before the shim;
* `per-bridge-nf-off` IFLA_BR_NF_CALL_IPTABLES/IP6TABLES/ARPTABLES = 0 on both bridges, the
                      global bridge-nf-call-* left at 1 (the kernel ORs the two);
* `global-nf-off`     net.bridge.bridge-nf-call-iptables/ip6tables/arptables = 0 (both
                      drivers; restored afterwards): no netfilter at all for bridged frames;
* `notrack-intra`     a raw-priority rule `iifname B ip saddr S ip daddr S (not the gateway)
                      notrack` for pynet's bridge only: conntrack skipped for traffic inside
                      the network (the candidate "past parity" change).

It also prints the veth and bridge settings of both drivers side by side (MTU, txqueuelen,
GSO/GRO sizes, offload features, bridge options), so a difference there shows.
Medians, min-max spread and the pynet/Docker ratio per variant. Nothing is left behind.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import secrets
import statistics
import subprocess
from pathlib import Path

from common import bench_docker, container_ip, container_pid, iperf3

SYSCTLS = [f"/proc/sys/net/bridge/bridge-nf-call-{t}" for t in ("iptables", "ip6tables", "arptables")]
BRIDGE_KNOBS = ("nf_call_iptables", "nf_call_ip6tables", "nf_call_arptables")
VARIANTS = ("baseline", "no-pynet-rules", "shim-first", "per-bridge-nf-off", "global-nf-off",
            "notrack-intra")
BENCH_TABLE = "pynetbench"


def sh(*argv: str, input: str | None = None, check: bool = True) -> str:
    return subprocess.run(argv, input=input, capture_output=True, text=True, check=check).stdout


@contextlib.contextmanager
def variant(name: str, pynet_bridge: str, docker_bridge: str, subnet: str, gateway: str):
    """Apply one variant's change; put it back on exit."""
    if name == "baseline":
        yield
    elif name == "no-pynet-rules":
        saved = sh("nft", "list", "table", "inet", "pynet")
        sh("nft", "delete", "table", "inet", "pynet")
        try:
            yield
        finally:
            sh("nft", "-f", "-", input=saved)
    elif name == "shim-first":
        rule = ["FORWARD", "-i", pynet_bridge, "-o", pynet_bridge, "-j", "ACCEPT"]
        sh("iptables", "-I", *rule[:1], "1", *rule[1:])
        sh("iptables", "-D", "FORWARD", "-j", "PYNET-FORWARD")
        try:
            yield
        finally:
            sh("iptables", "-A", "FORWARD", "-j", "PYNET-FORWARD")
            sh("iptables", "-D", *rule)
    elif name == "per-bridge-nf-off":
        saved = {(br, k): Path(f"/sys/class/net/{br}/bridge/{k}").read_text()
                 for br in (pynet_bridge, docker_bridge) for k in BRIDGE_KNOBS}
        for (br, k) in saved:
            Path(f"/sys/class/net/{br}/bridge/{k}").write_text("0")
        try:
            yield
        finally:
            for (br, k), v in saved.items():
                Path(f"/sys/class/net/{br}/bridge/{k}").write_text(v)
    elif name == "global-nf-off":
        saved = {p: Path(p).read_text() for p in SYSCTLS}
        for p in SYSCTLS:
            Path(p).write_text("0")
        try:
            yield
        finally:
            for p, v in saved.items():
                Path(p).write_text(v)
    elif name == "notrack-intra":
        sh("nft", "-f", "-", input=(
            f"table inet {BENCH_TABLE} {{\n chain pre {{\n  type filter hook prerouting priority raw;\n"
            f'  iifname "{pynet_bridge}" ip saddr {subnet} ip daddr != {gateway} ip daddr {subnet} notrack\n'
            f" }}\n}}\n"))
        try:
            yield
        finally:
            sh("nft", "delete", "table", "inet", BENCH_TABLE)
    else:
        raise ValueError(name)


def host_veth_of(daemon, ctr: str) -> str:
    iflink = daemon.cli("exec", ctr, "cat", "/sys/class/net/eth0/iflink").stdout.strip()
    for dev in Path("/sys/class/net").iterdir():
        with contextlib.suppress(OSError):
            if (dev / "ifindex").read_text().strip() == iflink:
                return dev.name
    raise RuntimeError(f"host end of {ctr}'s eth0 (ifindex {iflink}) not found")


def link_settings(daemon, ctr: str) -> dict[str, str]:
    """Container and host ends of the veth, and the bridge the host end is on."""
    from pyroute2.ethtool import Ethtool  # bench-only reading; the driver goes through driver/netlink
    out: dict[str, str] = {}
    for f in ("mtu", "tx_queue_len", "gso_max_size", "gso_max_segs", "gro_max_size"):
        out[f"ctr eth0 {f}"] = daemon.cli("exec", ctr, "cat", f"/sys/class/net/eth0/{f}",
                                          check=False).stdout.strip() or "-"
    host = host_veth_of(daemon, ctr)
    sysdir = Path("/sys/class/net") / host
    for f in ("mtu", "tx_queue_len", "gso_max_size", "gso_max_segs", "gro_max_size"):
        with contextlib.suppress(OSError):
            out[f"host veth {f}"] = (sysdir / f).read_text().strip()
    for f in ("hairpin_mode", "learning", "flood", "mcast_flood", "isolated", "proxyarp"):
        with contextlib.suppress(OSError):
            out[f"brport {f}"] = (sysdir / "brport" / f).read_text().strip()
    bridge = (sysdir / "master").resolve().name
    bdir = Path("/sys/class/net") / bridge
    for f in ("mtu", "tx_queue_len", "gso_max_size", "gro_max_size"):
        with contextlib.suppress(OSError):
            out[f"bridge {f}"] = (bdir / f).read_text().strip()
    for opt in sorted(p.name for p in (bdir / "bridge").iterdir()):
        if opt in ("bridge_id", "root_id", "designated_root", "hello_timer", "tcn_timer",
                   "topology_change_timer", "gc_timer", "flush", "root_port", "designated_port"):
            continue
        with contextlib.suppress(OSError):
            out[f"bridge opt {opt}"] = (bdir / "bridge" / opt).read_text().strip()
    with contextlib.suppress(Exception):
        with contextlib.closing(Ethtool()) as et:
            feats = et.get_features(host)
            for name, feat in feats.features.items():
                if feat.available or feat.enable:
                    out[f"host veth feature {name}"] = "on" if feat.enable else "off"
    return out


def print_settings(pynet: dict[str, str], docker: dict[str, str]) -> None:
    print("\nveth/bridge settings (only the rows that differ):")
    diff = [k for k in sorted(set(pynet) | set(docker)) if pynet.get(k) != docker.get(k)]
    for k in diff:
        print(f"  {k:<44} pynet {pynet.get(k, '-'):<12} docker {docker.get(k, '-')}")
    if not diff:
        print("  none: every setting read is the same")
    print(f"  ({len(set(pynet) | set(docker))} settings compared)")


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} [{min(xs):5.2f}-{max(xs):5.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    variants = args.variants.split(",")
    tag = secrets.token_hex(2)
    with bench_docker() as (daemon, image):
        subnet = "198.19.240.0/24"
        nets = {"pynet": f"bench-dp-pynet-{tag}", "docker": f"bench-dp-docker-{tag}"}
        daemon.cli("network", "create", "-d", "pynet", "--ipam-driver", "pynet", "--subnet", subnet,
                   nets["pynet"])
        daemon.cli("network", "create", "-d", "bridge", "--subnet", "198.19.241.0/24", nets["docker"])
        pairs, ctrs = {}, {}
        for kind, net in nets.items():
            a, b = (f"bench-dp-{kind}-{x}-{tag}" for x in "ab")
            for ctr in (a, b):
                daemon.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, image,
                           "sleep", "3600")
            ctrs[kind] = a
            pairs[kind] = (container_pid(daemon, a), container_pid(daemon, b), container_ip(daemon, b))
        settings = {k: link_settings(daemon, c) for k, c in ctrs.items()}
        pynet_bridge = (Path("/sys/class/net") / host_veth_of(daemon, ctrs["pynet"]) / "master").resolve().name
        docker_bridge = (Path("/sys/class/net") / host_veth_of(daemon, ctrs["docker"]) / "master").resolve().name
        gateway = str(next(ipaddress.ip_network(subnet).hosts()))
        print(f"pynet bridge {pynet_bridge}, docker bridge {docker_bridge}; "
              f"{args.rounds} rounds x {args.seconds} s per measurement", flush=True)
        for kind, (pa, pb, ip) in pairs.items():  # warm-up: ARP, conntrack, page cache
            iperf3(pb, pa, ip, 1)
        rates = {v: {"pynet": [], "docker": []} for v in variants}
        for r in range(args.rounds):
            order = ("pynet", "docker") if r % 2 == 0 else ("docker", "pynet")
            for v in variants:
                with variant(v, pynet_bridge, docker_bridge, subnet, gateway):
                    for kind in order:
                        pa, pb, ip = pairs[kind]
                        rates[v][kind].append(iperf3(pb, pa, ip, args.seconds))
                print(f"round {r + 1} {v:<18} pynet {rates[v]['pynet'][-1]:6.2f}  "
                      f"docker {rates[v]['docker'][-1]:6.2f} Gbit/s", flush=True)
        base_p = statistics.median(rates["baseline"]["pynet"]) if "baseline" in rates else None
        print(f"\ncontainer->container TCP, 1 stream, Gbit/s: median [min-max] of {args.rounds}")
        print(f"{'variant':<18} {'pynet':>20} {'docker':>20} {'pynet/docker':>13} {'pynet vs baseline':>18}")
        for v in variants:
            p = statistics.median(rates[v]["pynet"])
            per_round = [a / b for a, b in zip(rates[v]["pynet"], rates[v]["docker"])]
            vs = f"{p / base_p:18.3f}" if base_p else ""
            print(f"{v:<18} {spread(rates[v]['pynet']):>20} {spread(rates[v]['docker']):>20} "
                  f"{statistics.median(per_round):13.3f}{vs}")
        for v in variants:
            per_round = sorted(a / b for a, b in zip(rates[v]["pynet"], rates[v]["docker"]))
            print(f"container->container TCP, {v}  pynet {statistics.median(rates[v]['pynet']):.2f} "
                  f"docker {statistics.median(rates[v]['docker']):.2f} Gbit/s ratio pynet/docker "
                  f"{statistics.median(per_round):.3f} (per-round {per_round[0]:.2f}-{per_round[-1]:.2f})")
        print_settings(settings["pynet"], settings["docker"])
        if args.json:
            Path(args.json).write_text(json.dumps({"rates": rates, "settings": settings}, indent=1))


if __name__ == "__main__":
    main()

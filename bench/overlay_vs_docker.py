#!/usr/bin/env python3
"""pynet's overlay, Docker's own overlay and the underlay, side by side in one run.

    sudo flock /run/lock/pynet-tests.lock python3 bench/overlay_vs_docker.py [--seconds 5] [--rounds 5]
        [--streams 1,4] [--variants NAME,...|all] [--no-settings]

One run brings up the three-host bed (tests/harness/swarm.py's SwarmBed with the bed's own
legacy `pynet serve` on every host: dockerd, Consul and pynet per host, h1 a swarm manager,
h2 and h3 workers), then on h1 and h2:

* **pynet overlay**: `-d pynet -o type=overlay -o vni=10071` (a local network on each host,
  one overlay through Consul), a container on each;
* **Docker's overlay**: `-d overlay --attachable` made on the manager (VNI 10072, as the
  Swarm tests make it), a container on each;
* **underlay**: h1's and h2's own namespaces, over the bed's switch.

Both overlays have MTU 1450 on the 1500 underlay and use UDP 4789. Each round measures TCP
h1 -> h2 (iperf3 from the test machine in the namespaces with nsenter; the image has none)
on every path, for each `--streams` count (1: one stream; 4: `iperf3 -P 4`), the order of
the paths rotating by round so drift hits all alike. Printed: every measurement, then per
stream count the medians [min-max], pynet/Docker, pynet/underlay and Docker/underlay
(ratios of the medians; the median of the per-round pynet/Docker ratios beside it), and
where the machine's CPUs went during each path's runs (/proc/stat: user, system, softirq,
idle, in % of one CPU summed over all CPUs).

`--variants` adds paths: pynet's overlay with one kernel setting changed on its devices on
h1 and h2 (applied just before that path is measured, put back right after):

* `veth-gro`        GRO on both ends of the container's veth (`ethtool -K gro on`: NAPI
                    receive on the veth instead of the per-CPU backlog);
* `veth-gro-ctr`    GRO on the container's end only (the receive into the container);
* `veth-threaded`   `veth-gro` plus threaded NAPI on the bridge end (the container's
                    frames are then bridged, encapsulated and sent on by a kernel thread
                    the scheduler may put on another core than the sender's);
* `bridge-nf-off`   net.bridge.bridge-nf-call-iptables/ip6tables/arptables = 0 in the
                    overlay namespace (a new namespace starts with 1, so the bridge passes
                    every frame through br_netfilter although that namespace has no rules);
* `bridge-nf-on`    the same = 1 (a new namespace's default: the A/B if pynet ever sets 0);
* `no-udpcsum`      the VXLAN device made again without outer UDP checksums (the kernel's
                    default, which both drivers' devices keep, is with);
* `vxlan-csum-off`  `tx-checksum-ip-generic off` on the VXLAN device (the workaround for the
                    VXLAN + NAT checksum bug: inner checksums computed in software);
* `no-bridge`       the bridge bypassed: tc redirects between the veth and the VXLAN device
                    in both directions (one container per host, so nothing to switch);
* `rps`             receive packet steering to every CPU on the bridge end.

(Threaded NAPI for the VXLAN device's GRO cells was tried too: 0.01 Gbit/s, the flow all but
stopped. The container's end takes no sysfs setting here: its /sys is Docker's read-only
sysfs, and a sysfs mounted for that namespace shares its read-only superblock.)

Unless `--no-settings`, it first prints the settings of both drivers' devices side by side
(VXLAN attributes from `ip -d link`, MTU, queue, GSO/GRO sizes, offload features, threaded
NAPI and RPS of the VXLAN device, bridge, bridge port and both veth ends) where they differ.
Everything is removed at the end (the bed's own teardown), also on failure or Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import json
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

from common import iperf3_in  # noqa: E402
from driver import naming  # noqa: E402
from tests.harness.multihost import Host  # noqa: E402
from tests.harness.swarm import SwarmBed  # noqa: E402
from tests.multihost.support import network_id, overlay_create, run_on  # noqa: E402

PYNET_SUBNET, PYNET_VNI = "10.71.0.0/24", 10071
DOCKER_SUBNET, DOCKER_VNI = "10.71.1.0/24", 10072
PYNET, DOCKER, UNDERLAY = "pynet overlay", "Docker's overlay", "underlay"
VARIANT_PREFIX = PYNET + " + "

# Run in a side's overlay namespace, then in its container's (argv[2]: that namespace's file),
# each with a sysfs of its own mounted: reads or changes the settings of their links.
# argv[1]: JSON {"ns": [op...], "ctr": [op...]}, op one of ["dump", dev...],
# ["feature", dev, name, on], ["sysfs", dev, relative path, value]. Prints JSON per place.
KNOBS = r"""
import json, subprocess, sys
from pyroute2 import netns
from pyroute2.ethtool import Ethtool

def run(ops):
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    out = {}
    with Ethtool() as et:
        for op in ops:
            if op[0] == "feature":
                feats = et.get_features(op[1])
                feats.features[op[2]].enable = op[3]
                et.set_features(op[1], feats)
            elif op[0] == "sysfs":
                with open(f"/sys/class/net/{op[1]}/{op[2]}", "w") as f:
                    f.write(op[3])
            elif op[0] == "dump":
                for dev in op[1:]:
                    d = out[dev] = {}
                    for name, feat in et.get_features(dev).features.items():
                        if feat.available or feat.enable:
                            d[f"feature {name}"] = "on" if feat.enable else "off"
                    for f in ("threaded", "queues/rx-0/rps_cpus", "tx_queue_len", "gro_flush_timeout",
                              "napi_defer_hard_irqs"):
                        try:
                            d[f] = open(f"/sys/class/net/{dev}/{f}").read().strip()
                        except OSError:
                            pass
    return out

todo = json.loads(sys.argv[1])
done = {"ns": run(todo["ns"]) if todo.get("ns") else {}}
if todo.get("ctr"):
    netns.setns(sys.argv[2], flags=0)
    done["ctr"] = run(todo["ctr"])
print(json.dumps(done))
"""


@dataclass
class Side:
    """One driver's devices on one host: the overlay namespace (entered by `enter`) with its
    VXLAN device, bridge and the bridge end of the container's veth; the container's end."""
    host: Host
    enter: list[str]
    vxlan: str
    bridge: str
    port: str
    ctr_pid: int
    ctr_if: str
    ctr_ip: str

    @property
    def ctr_enter(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.ctr_pid}/ns/net"]

    def knobs(self, ns: list | None = None, ctr: list | None = None) -> dict:
        """KNOBS's operations in the overlay namespace (`ns`) and the container's (`ctr`):
        one process for both."""
        argv = [*self.enter, "unshare", "-m", "--propagation", "private", sys.executable, "-c", KNOBS,
                json.dumps({"ns": ns or [], "ctr": ctr or []}), f"/proc/{self.ctr_pid}/ns/net"]
        return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)

    def ip(self, *argv: str, ctr: bool = False, check: bool = True) -> str:
        return subprocess.run([*(self.ctr_enter if ctr else self.enter), "ip", *argv], capture_output=True,
                              text=True, check=check).stdout

    def tc(self, *argv: str, check: bool = True) -> None:
        subprocess.run([*self.enter, "tc", *argv], capture_output=True, text=True, check=check)


def _links(argv: list[str]) -> list[dict]:
    return json.loads(subprocess.run([*argv, "ip", "-d", "-j", "link", "show"], capture_output=True,
                                     text=True, check=True).stdout)


def find_side(host: Host, ns_file: str, ctr_pid: int, ctr_ip: str) -> Side:
    """The devices of one overlay namespace, the container's veth end found by its address."""
    enter = [*host.enter_argv(), "nsenter", f"--net={ns_file}"]
    ctr_enter = ["nsenter", f"--net=/proc/{ctr_pid}/ns/net"]
    addrs = json.loads(subprocess.run([*ctr_enter, "ip", "-j", "addr", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    ctr = next(a for a in addrs if any(i.get("local") == ctr_ip for i in a.get("addr_info", [])))
    links = _links(enter)
    kind = {link["ifname"]: link.get("linkinfo", {}).get("info_kind") for link in links}
    port = next(link["ifname"] for link in links if link["ifindex"] == ctr["link_index"])
    return Side(host, enter, next(n for n, k in kind.items() if k == "vxlan"),
                next(n for n, k in kind.items() if k == "bridge"), port, ctr_pid, ctr["ifname"], ctr_ip)


def docker_overlay_ns(host: Host, vni: int) -> str:
    """The file of the namespace in which the host's dockerd keeps the VXLAN device of `vni`."""
    for f in host.run("sh", "-c", "ls -d /run/docker/netns/*").stdout.split():
        with contextlib.suppress(subprocess.CalledProcessError, json.JSONDecodeError):
            for link in _links([*host.enter_argv(), "nsenter", f"--net={f}"]):
                if link.get("linkinfo", {}).get("info_data", {}).get("id") == vni:
                    return f
    raise RuntimeError(f"{host}: no Docker namespace holds VXLAN {vni}")


# --- device settings side by side ---------------------------------------------------------
_VOLATILE = {"ifindex", "link_index", "address", "broadcast", "operstate", "link_netnsid", "stats64",
             "ifname", "flags", "addr_info", "parentbus", "parentdev", "inet6_addr_gen_mode", "perm_address",
             "alt_ifnames", "link", "master", "qdisc", "group", "promiscuity", "allmulti", "num_tx_queues",
             "num_rx_queues", "linkmode", "link_type", "info_slave_data", "info_slave_kind"}


def _flatten(prefix: str, value, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in _VOLATILE and not k.endswith(("_timer", "_id", "bridge_id", "root_id")):
                _flatten(f"{prefix} {k}", v, out)
    elif not isinstance(value, list):
        out[prefix.strip()] = str(value)


def side_settings(side: Side) -> dict[str, str]:
    out: dict[str, str] = {}
    roles = {side.vxlan: "vxlan", side.bridge: "bridge", side.port: "veth (bridge end)"}
    for link in _links(side.enter):
        role = roles.get(link["ifname"])
        if role:
            _flatten(role, link, out)
            if role == "vxlan":  # how it sits on the bridge
                _flatten("vxlan port", link.get("linkinfo", {}).get("info_slave_data", {}), out)
            if role == "veth (bridge end)":
                _flatten("veth port", link.get("linkinfo", {}).get("info_slave_data", {}), out)
    for link in _links(side.ctr_enter):
        if link["ifname"] == side.ctr_if:
            _flatten("veth (container end)", link, out)
    sysctls = subprocess.run([*side.enter, "sysctl", "net.bridge", "net.ipv4.ip_forward"], capture_output=True,
                             text=True, check=False).stdout
    out.update({f"namespace {k.strip()}": v.strip() for k, _, v in
                (line.partition("=") for line in sysctls.splitlines()) if v})
    got = side.knobs(ns=[["dump", side.vxlan, side.bridge, side.port]], ctr=[["dump", side.ctr_if]])
    for dev, values in got["ns"].items():
        out.update({f"{roles[dev]} {k}": v for k, v in values.items()})
    out.update({f"veth (container end) {k}": v for k, v in got["ctr"][side.ctr_if].items()})
    return out


def print_settings(pynet: Side, docker: Side) -> None:
    a, b = side_settings(pynet), side_settings(docker)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    print(f"device settings on {pynet.host} (the receiver): {len(a.keys() | b.keys())} compared, "
          f"{len(differ)} differ")
    print(f"  {'setting':<58} {'pynet':<22} Docker")
    for k in differ:
        print(f"  {k:<58} {a.get(k, '-'):<22} {b.get(k, '-')}")
    print(f"  (pynet: {pynet.vxlan}, {pynet.port}; Docker: {docker.vxlan}, {docker.port})", flush=True)


# --- variants on pynet's devices ----------------------------------------------------------
def _gro(side: Side, on: bool) -> None:
    side.knobs(ns=[["feature", side.port, "rx-gro", on]], ctr=[["feature", side.ctr_if, "rx-gro", on]])


def _gro_ctr(side: Side, on: bool) -> None:
    side.knobs(ctr=[["feature", side.ctr_if, "rx-gro", on]])


def _threaded(side: Side, on: bool) -> None:
    # GRO (NAPI) first on, last off: threaded mode is a property of the veth's NAPI. Only on
    # the bridge end: the container's /sys is Docker's read-only sysfs, and a sysfs mounted
    # for that namespace shares its read-only superblock.
    ops = [["feature", side.port, "rx-gro", on], ["sysfs", side.port, "threaded", "1" if on else "0"]]
    side.knobs(ns=ops if on else ops[::-1], ctr=[["feature", side.ctr_if, "rx-gro", on]])


def _vxlan_csum(side: Side, on: bool) -> None:
    side.knobs(ns=[["feature", side.vxlan, "tx-checksum-ip-generic", not on]])


def _rps(side: Side, on: bool) -> None:
    side.knobs(ns=[["sysfs", side.port, "queues/rx-0/rps_cpus", "3" if on else "0"]])


_NF_SYSCTLS = tuple(f"net.bridge.bridge-nf-call-{t}" for t in ("iptables", "ip6tables", "arptables"))
_nf_before: dict[int, list[str]] = {}


def _bridge_nf(value: str) -> Callable[[Side, bool], None]:
    """br_netfilter's per-namespace sysctls (since Linux 5.3; a new namespace starts with 1)
    set to `value` in the overlay namespace, then put back as they were."""
    def toggle(side: Side, on: bool) -> None:
        if on:
            now = subprocess.run([*side.enter, "sysctl", "-n", *_NF_SYSCTLS], capture_output=True,
                                 text=True, check=True).stdout.split()
            _nf_before[id(side)] = now
        values = [value] * 3 if on else _nf_before.pop(id(side))
        subprocess.run([*side.enter, "sysctl", "-qw", *(f"{k}={v}" for k, v in zip(_NF_SYSCTLS, values))],
                       capture_output=True, text=True, check=True)
    return toggle


def _no_bridge(side: Side, on: bool) -> None:
    for a, b in ((side.port, side.vxlan), (side.vxlan, side.port)):
        if on:
            side.tc("qdisc", "add", "dev", a, "clsact")
            side.tc("filter", "add", "dev", a, "ingress", "u32", "match", "u32", "0", "0",
                    "action", "mirred", "egress", "redirect", "dev", b)
        else:
            side.tc("qdisc", "del", "dev", a, "clsact", check=False)


def _udpcsum(side: Side, on: bool) -> None:
    """Make the VXLAN device again with udpcsum off (on: put back), keeping its FDB."""
    link = next(x for x in _links(side.enter) if x["ifname"] == side.vxlan)
    data = link["linkinfo"]["info_data"]
    fdb = [e for e in json.loads(subprocess.run([*side.enter, "bridge", "-j", "fdb", "show", "dev", side.vxlan],
                                                capture_output=True, text=True, check=True).stdout)
           if e.get("dst") or e.get("state") == "static"]  # not learnt ones, not its own MAC
    tmp = "pnxtmp"
    host_enter = side.host.enter_argv()
    ns_file = side.enter[-1].split("=", 1)[1]
    subprocess.run([*side.enter, "ip", "link", "del", side.vxlan], check=True)
    subprocess.run([*host_enter, "ip", "link", "add", tmp, "type", "vxlan", "id", str(data["id"]), "local",
                    data["local"], "dstport", str(data["port"]), "nolearning",
                    "noudpcsum" if on else "udpcsum"], check=True)
    subprocess.run([*host_enter, "ip", "link", "set", tmp, "mtu", str(link["mtu"]), "netns", ns_file],
                   check=True)
    for argv in (["ip", "link", "set", tmp, "name", side.vxlan],
                 ["ip", "link", "set", side.vxlan, "master", side.bridge],
                 ["bridge", "link", "set", "dev", side.vxlan, "neigh_suppress", "on"],
                 ["ip", "link", "set", side.vxlan, "up"]):
        subprocess.run([*side.enter, *argv], check=True)
    for e in fdb:
        argv = ["bridge", "fdb", "append" if e["mac"] == "00:00:00:00:00:00" else "add", e["mac"], "dev",
                side.vxlan]
        argv += ["dst", e["dst"]] if e.get("dst") else ["master", "static"]
        subprocess.run([*side.enter, *argv], check=False)


VARIANTS: dict[str, Callable[[Side, bool], None]] = {
    "veth-gro": _gro, "veth-gro-ctr": _gro_ctr, "veth-threaded": _threaded,
    "bridge-nf-off": _bridge_nf("0"), "bridge-nf-on": _bridge_nf("1"), "no-udpcsum": _udpcsum, "vxlan-csum-off": _vxlan_csum, "no-bridge": _no_bridge, "rps": _rps,
}


# --- figures --------------------------------------------------------------------------------
_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times() -> dict[str, list[int]]:
    """/proc/stat's per-CPU jiffies (the fields above), by CPU."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            out[name] = [int(v) for v in values[:len(_CPU_FIELDS)]]
    return out


def cpu_share(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, float]:
    """Where the machine's CPUs went between two readings, in % of one CPU summed over all
    (200 = both cores of a 2-core machine busy): user (+nice), system, softirq, idle."""
    delta = {cpu: [a - b for a, b in zip(after[cpu], before[cpu])] for cpu in after}
    total = sum(sum(d) for d in delta.values()) or 1
    n = len(delta)
    pick = {"user": (0, 1), "system": (2,), "softirq": (6,), "idle": (3, 4), "steal": (7,)}
    return {k: 100.0 * n * sum(d[i] for d in delta.values() for i in idx) / total for k, idx in pick.items()}


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def summary(results: dict[int, dict[str, list[float]]],
            cpu: dict[int, dict[str, list[dict[str, float]]]] | None = None) -> list[str]:
    """The lines printed at the end (bench/all.py collects the `ratio A/B X` ones); `cpu`:
    each measurement's cpu_share, printed as medians per path."""
    lines = []
    for streams, per_path in results.items():
        what = "1 stream" if streams == 1 else f"{streams} streams"
        lines.append(f"TCP {what} h1->h2, Gbit/s, median [min-max] of {len(per_path[PYNET])}:")
        per_path = {p: xs for p, xs in per_path.items() if xs}  # a dropped variant has none
        lines += [f"  {path:<34} {spread(xs)}" for path, xs in per_path.items()]
        med = {p: statistics.median(xs) for p, xs in per_path.items()}
        per_round = statistics.median(p / d for p, d in zip(per_path[PYNET], per_path[DOCKER]))
        lines.append(f"TCP {what} h1->h2, pynet overlay / Docker's overlay: ratio pynet/docker "
                     f"{med[PYNET] / med[DOCKER]:.3f} (median of per-round ratios {per_round:.3f}; goal >= 1.0)")
        lines.append(f"TCP {what} h1->h2, pynet overlay / underlay: ratio pynet/underlay "
                     f"{med[PYNET] / med[UNDERLAY]:.3f} (goal >= 0.80)")
        lines.append(f"TCP {what} h1->h2, Docker's overlay / underlay: ratio docker/underlay "
                     f"{med[DOCKER] / med[UNDERLAY]:.3f}")
        lines += [f"  {path}: {med[path] / med[PYNET]:.3f} of pynet overlay, {med[path] / med[DOCKER]:.3f} "
                  f"of Docker's, {med[path] / med[UNDERLAY]:.3f} of underlay"
                  for path in per_path if path.startswith(VARIANT_PREFIX)]
        for path, shares in (cpu or {}).get(streams, {}).items():
            if shares:
                lines.append(f"  CPU during {path:<34} " + ", ".join(
                    f"{k} {statistics.median(s[k] for s in shares):5.1f}%" for k in shares[0]))
    return lines


def measure(paths: dict[str, tuple[list[str], list[str], str]], variants: dict[str, list[Side]],
            streams: list[int], rounds: int, seconds: int) -> tuple[dict, dict]:
    names = list(paths) + [VARIANT_PREFIX + v for v in variants]
    results = {n: {p: [] for p in names} for n in streams}
    cpu: dict[int, dict[str, list[dict[str, float]]]] = {n: {p: [] for p in names} for n in streams}
    broken: set[str] = set()
    for name in names:  # warm-up (ARP, first-flow costs), not counted
        srv, cli, ip = paths[name if name in paths else PYNET]
        iperf3_in(srv, cli, ip, 1)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in streams:
            for name in order:
                variant = name.removeprefix(VARIANT_PREFIX) if name not in paths else None
                if variant in broken:
                    continue
                srv, cli, ip = paths[name if variant is None else PYNET]
                sides = variants[variant] if variant else []
                try:
                    for side in sides:
                        VARIANTS[variant](side, True)
                    before = cpu_times()
                    got = iperf3_in(srv, cli, ip, seconds, extra=("-P", str(n)) if n > 1 else ())
                    cpu[n][name].append(cpu_share(before, cpu_times()))
                except subprocess.CalledProcessError as exc:
                    if variant is None:
                        raise
                    broken.add(variant)  # the other paths' figures still count
                    print(f"  variant {variant} failed, dropped: {exc} {exc.stderr or ''}", flush=True)
                    continue
                finally:
                    for side in sides:
                        try:
                            VARIANTS[variant](side, False)
                        except subprocess.CalledProcessError as exc:
                            broken.add(variant)
                            print(f"  variant {variant}: undoing failed on {side.host}: {exc} "
                                  f"{exc.stderr or ''}", flush=True)
                results[n][name].append(got)
                print(f"  round {r + 1} P={n} {name:<34} {got:7.2f} Gbit/s", flush=True)
    return results, cpu


def wait_reachable(label: str, cli: list[str], ip: str) -> None:
    deadline = time.monotonic() + 60
    while subprocess.run([*cli, "busybox", "ping", "-c", "1", "-W", "1", ip], capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise SystemExit(f"{label}: {ip} does not answer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", default="1,4", help="comma-separated stream counts (iperf3 -P)")
    parser.add_argument("--variants", default="", help=f"comma-separated, or all: {', '.join(VARIANTS)}")
    parser.add_argument("--no-settings", action="store_true", help="skip the device settings comparison")
    args = parser.parse_args()
    chosen = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    streams = [int(s) for s in args.streams.split(",")]
    with tempfile.TemporaryDirectory(prefix="pynet-bench-ovd-") as tmp:
        started = time.monotonic()
        with SwarmBed(Path(tmp), None, name="pnbod", underlay="198.18.38.0/24") as swarm:
            h1, h2 = swarm.hosts[:2]
            print(f"bed and swarm up in {time.monotonic() - started:.1f}s {swarm.timings}", flush=True)
            try:
                run(swarm, h1, h2, args, chosen, streams)
            finally:
                for h in (h1, h2):
                    h.docker("rm", "-f", "pa", "pb", "da", "db", check=False, timeout=120)
                    h.docker("network", "rm", "pyov", check=False, timeout=120)
                h1.docker("network", "rm", "dkov", check=False, timeout=120)
    return 0


def run(swarm: SwarmBed, h1: Host, h2: Host, args: argparse.Namespace, chosen: list[str],
        streams: list[int]) -> None:
    version = h1.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    print(f"dockerd {version}, kernel {subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout.strip()}")
    for h in (h1, h2):
        overlay_create(h, "pyov", PYNET_SUBNET, "-o", f"vni={PYNET_VNI}")
    h1.docker("network", "create", "-d", "overlay", "--attachable", "--subnet", DOCKER_SUBNET,
              "-o", f"com.docker.network.driver.overlay.vxlanid_list={DOCKER_VNI}", "dkov")
    pa, pb = run_on(h1, "pa", "pyov"), run_on(h2, "pb", "pyov")
    da, db = run_on(h1, "da", "dkov", timeout=120), run_on(h2, "db", "dkov", timeout=120)

    def ns(pid: int) -> list[str]:
        return ["nsenter", f"--net=/proc/{pid}/ns/net"]
    paths = {
        PYNET: (ns(pb.pid), ns(pa.pid), pb.ip),
        DOCKER: (ns(db.pid), ns(da.pid), db.ip),
        UNDERLAY: (["ip", "netns", "exec", h2.netns], ["ip", "netns", "exec", h1.netns], h2.address),
    }
    for label, (_, cli, ip) in paths.items():
        wait_reachable(label, cli, ip)
    pynet_ns = f"/run/netns/{naming.overlay_netns(network_id(h1, 'pyov'))}"
    pynet_sides = [find_side(h1, pynet_ns, pa.pid, pa.ip),
                   find_side(h2, f"/run/netns/{naming.overlay_netns(network_id(h2, 'pyov'))}", pb.pid, pb.ip)]
    if not args.no_settings:
        docker_b = find_side(h2, docker_overlay_ns(h2, DOCKER_VNI), db.pid, db.ip)
        print_settings(pynet_sides[1], docker_b)
    variants = {v: pynet_sides for v in chosen}
    results, cpu = measure(paths, variants, streams, args.rounds, args.seconds)
    print("\n".join(summary(results, cpu)))


if __name__ == "__main__":
    sys.exit(main())

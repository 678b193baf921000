"""What the multi-host tests share: plugin calls, allocation storms, and reading the IPAM
state straight from Consul (the tests trust Consul, not what the plugins say)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from tests.harness.multihost import BedError, Host, MultiHost

IMAGE = "pynet-test/busybox:1"
B = TypeVar("B", bound=Any)
PREFIX = "pynet/v1/ipam/"
SPACE = "LocalDefault"


@contextlib.contextmanager
def brought_up(what: str, bed: B, *, outside: bool = False) -> Iterator[B]:
    """`bed` (a MultiHost or a SwarmBed) up for the tests of a fixture, saying how long that
    took, then down; the tests fail, naming it, if it left anything behind (namespaces,
    links, processes, rules). `outside`: an Outside namespace on the underlay too, as
    `bed.outside`."""
    started = time.monotonic()
    bed.up()
    timings = getattr(bed, "timings", None)
    print(f"\n{what} bed up in {time.monotonic() - started:.1f}s" + (f" {timings}" if timings else ""))
    world = None
    try:
        if outside:
            world = bed.outside = Outside(bed)
        yield bed
    finally:
        if world is not None:
            world.remove()
        left = bed.down()
        if left:
            pytest.fail(f"the {what} bed left things behind:\n" + "\n".join(left), pytrace=False)


def consul_delete_tree(bed: MultiHost, prefix: str) -> None:
    last: Exception | None = None
    for h in bed.hosts:
        req = urllib.request.Request(f"http://{h.consul_addr}/v1/kv/{prefix}?recurse=true", method="DELETE")
        try:
            with urllib.request.urlopen(req, timeout=5):
                return
        except OSError as e:
            last = e
    raise BedError(f"could not delete {prefix} in Consul: {last}")


def clear_overlay_bed(bed: MultiHost) -> None:
    """What a failed test left on an overlay bed: every container and pynet network on each
    host, then the overlay and IPAM records in Consul (a passing test leaves nothing)."""
    for h in bed.hosts:
        ids = h.docker("ps", "-aq").stdout.split()
        if ids:
            h.docker("rm", "-f", *ids, timeout=120)
        nets = h.docker("network", "ls", "--filter", "driver=pynet", "-q").stdout.split()
        if nets:
            h.docker("network", "rm", *nets, timeout=120)
    for prefix in ("pynet/v1/overlay/", "pynet/v1/ipam/addrs/", "pynet/v1/ipam/blocks/",
                   "pynet/v1/ipam/spaces/"):
        consul_delete_tree(bed, prefix)


def _cidr_key(cidr: str) -> str:
    return cidr.replace("/", "_")


def claims(bed: MultiHost, pool: str, host: Host | None = None) -> dict[str, dict]:
    """address -> owner record, for every address claimed in the pool."""
    prefix = f"{PREFIX}addrs/{SPACE}/{_cidr_key(pool)}/"
    return {k[len(prefix):]: json.loads(v) for k, v in bed.kv(prefix, host).items()}


def blocks(bed: MultiHost, pool: str) -> dict[str, str]:
    """block -> host, for every claimed block of the pool."""
    prefix = f"{PREFIX}blocks/{SPACE}/{_cidr_key(pool)}/"
    return {k[len(prefix):].replace("_", "/"): json.loads(v)["host"] for k, v in bed.kv(prefix).items()}


def pool_record(bed: MultiHost, pool: str, space: str = SPACE) -> dict | None:
    record = bed.kv(f"{PREFIX}spaces/{space}").get(f"{PREFIX}spaces/{space}")
    return json.loads(record)["pools"].get(pool) if record else None


def pool_id(pool: str, space: str = SPACE) -> str:
    return f"{space}/{pool}"


def network_create(host: Host, name: str, subnet: str, *extra: str, check: bool = True):
    return host.docker("network", "create", "-d", "pynet", "--ipam-driver", "pynet", "--subnet", subnet,
                       *extra, name, check=check)


def run_container(host: Host, name: str, network: str, check: bool = True, timeout: float = 60):
    return host.docker("run", "-d", "--pull", "never", "--network", network, "--name", name,
                       IMAGE, "sleep", "3600", check=check, timeout=timeout)


def container_ip(host: Host, name: str) -> str:
    return host.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                       name).stdout.strip()


@dataclass
class Attempt:
    host: str
    name: str
    started: float
    seconds: float
    status: int
    address: str = ""  # without the prefix length
    error: str = ""


def request_address(host: Host, pool: str, name: str, address: str = "", timeout: float = 15) -> Attempt:
    """One RequestAddress through the host's plugin, timed (OSError: status 0)."""
    body = {"PoolID": pool_id(pool), "Address": address,
            "Options": {"com.docker.network.endpoint.name": name}}
    started = time.monotonic()
    try:
        status, answer = host.plugin_call("/IpamDriver.RequestAddress", body, timeout=timeout)
    except OSError as e:
        status, answer = 0, {"Err": f"{type(e).__name__}: {e}"}
    seconds = time.monotonic() - started
    if status == 200:
        return Attempt(host.name, name, started, seconds, status, answer["Address"].split("/")[0])
    return Attempt(host.name, name, started, seconds, status, error=(answer or {}).get("Err", str(answer)))


def release_address(host: Host, pool: str, address: str) -> tuple[int, Any]:
    return host.plugin_call("/IpamDriver.ReleaseAddress", {"PoolID": pool_id(pool), "Address": address})


@dataclass
class Storm:
    """Threads on every host calling RequestAddress as fast as they can, until `per_thread`
    calls each succeeded or stop() is called. A failed call backs off `pause` seconds."""
    bed: MultiHost
    pool: str
    threads_per_host: int = 3
    per_thread: int | None = None
    pause: float = 0.2
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Storm:
        for h in self.bed.hosts:
            for n in range(self.threads_per_host):
                t = threading.Thread(target=self._work, args=(h, n), daemon=True)
                self._threads.append(t)
                t.start()
        return self

    def _work(self, host: Host, n: int) -> None:
        done = i = 0
        while not self._stop.is_set() and (self.per_thread is None or done < self.per_thread):
            a = request_address(host, self.pool, f"storm-{host.name}-{n}-{i}")
            i += 1
            with self._lock:
                self.attempts.append(a)
            if a.status == 200:
                done += 1
            else:
                time.sleep(self.pause)

    def stop(self) -> Storm:
        self._stop.set()
        return self.join()

    def join(self, timeout: float = 300) -> Storm:
        for t in self._threads:
            t.join(timeout)
        return self

    @property
    def granted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.status == 200]

    @property
    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if a.status != 200]


def duplicates(addresses: list[str]) -> dict[str, int]:
    return {a: n for a, n in Counter(addresses).items() if n > 1}


# --- overlay networks (tests/multihost/test_overlay.py, bench/overlay.py) ---------------
def overlay_create(host: Host, name: str, subnet: str, *extra: str, check: bool = True):
    return network_create(host, name, subnet, "-o", "type=overlay", *extra, check=check)


def network_id(host: Host, name: str) -> str:
    return host.docker("network", "inspect", "-f", "{{.Id}}", name).stdout.strip()


@dataclass(frozen=True)
class Ctr:
    """A container on a host, as the tests address it."""
    host: Host
    name: str
    network: str
    ip: str
    mac: str
    pid: int


def run_on(host: Host, name: str, network: str, *extra: str, timeout: float = 60) -> Ctr:
    """`docker run -d` a sleeping busybox container on `network`; its address, MAC and PID."""
    host.docker("run", "-d", "--pull", "never", "--network", network, "--name", name, *extra,
                IMAGE, "sleep", "3600", timeout=timeout)
    return inspect_ctr(host, name, network)


def inspect_ctr(host: Host, name: str, network: str) -> Ctr:
    fmt = (f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}} '
           f'{{{{(index .NetworkSettings.Networks "{network}").MacAddress}}}} {{{{.State.Pid}}}}')
    ip, mac, pid = host.docker("inspect", "-f", fmt, name).stdout.split()
    return Ctr(host, name, network, ip, mac.lower(), int(pid))


def in_netns_of(pid: int, *argv: str, timeout: float = 20,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv (a program of the test machine) in the network namespace of process pid."""
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", *argv], capture_output=True,
                          text=True, timeout=timeout, input=input)


def ctr_python(ctr: Ctr, script: str, *args: str, timeout: float = 20) -> str:
    return in_netns_of(ctr.pid, sys.executable, "-c", script, *args, timeout=timeout).stdout.strip()


def pings(ctr: Ctr, address: str, wait: int = 1) -> bool:
    return in_netns_of(ctr.pid, "busybox", "ping", "-c", "1", "-W", str(wait), address).returncode == 0


def start_server(pid: int, port: int = 7000) -> subprocess.Popen[str]:
    """netprobe's PEER_SERVER in the namespace of pid, ready (kill it when done)."""
    from tests.harness.netprobe import PEER_SERVER
    proc = subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", PEER_SERVER,
                             str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def fdb(host: Host, nid: str) -> set[tuple[str, str]]:
    """(MAC, remote VTEP) of the network's VXLAN device on host (entries with a dst only)."""
    from driver import naming
    out = host.run("bridge", "-n", naming.overlay_netns(nid), "-j", "fdb", "show", "dev",
                   naming.vxlan(nid)).stdout
    return {(e["mac"], e["dst"]) for e in json.loads(out or "[]") if "dst" in e}


def neighbours(host: Host, nid: str) -> set[tuple[str, str]]:
    """(IP, MAC) of the permanent neighbour entries on the network's bridge on host."""
    from driver import naming
    out = host.run("ip", "-n", naming.overlay_netns(nid), "-j", "neigh", "show", "dev",
                   naming.OVERLAY_BRIDGE).stdout
    return {(e["dst"], e["lladdr"]) for e in json.loads(out or "[]")
            if "PERMANENT" in e.get("state", []) and "lladdr" in e}


def vxlan_vni(host: Host, nid: str) -> int:
    from driver import naming
    out = host.run("ip", "-n", naming.overlay_netns(nid), "-d", "-j", "link", "show",
                   naming.vxlan(nid)).stdout
    return int(json.loads(out)[0]["linkinfo"]["info_data"]["id"])


class Outside:
    """A namespace on the bed's underlay standing for the world outside the hosts
    (<bed>-out, the address .250 of the underlay; no route anywhere else)."""

    def __init__(self, bed: MultiHost, index: int = 250) -> None:
        self.bed = bed
        self.netns = f"{bed.name}-out"
        self.address = str(bed.network.network_address + index)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        for argv in (["ip", "netns", "add", self.netns],
                     ["ip", "-n", bed.switch_ns, "link", "add", "vout", "type", "veth", "peer", "name",
                      "eth0", "netns", self.netns],
                     ["ip", "-n", bed.switch_ns, "link", "set", "vout", "master", "ul", "up"],
                     ["ip", "-n", self.netns, "link", "set", "lo", "up"],
                     ["ip", "-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0"],
                     ["ip", "-n", self.netns, "link", "set", "eth0", "up"]):
            subprocess.run(argv, check=True, capture_output=True, timeout=20)

    def run(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                              text=True, timeout=timeout)

    def python(self, script: str, *args: str) -> str:
        return self.run(sys.executable, "-c", script, *args).stdout.strip()

    def server(self, port: int = 7000) -> subprocess.Popen[str]:
        from tests.harness.netprobe import PEER_SERVER
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c", PEER_SERVER,
                                 str(port)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

"""The e2e tier's "outside": a namespace the test makes, joined to the host by a veth, with
helpers to run containers on pynet bridge networks and to reach them from there (used by
tests/e2e/test_bridge_external.py and test_bridge_ipv6.py).

The outside has no route anywhere but its own subnet, so it only answers a container whose
traffic was NATed to the host's address. Every address is in 198.18.0.0/15 (IPv6: fd18::/16);
traffic goes only between namespaces and containers the tests made, and over loopback.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.harness.dockerd import DockerDaemon
from tests.harness.netprobe import CLIENT, PEER_SERVER
from tests.harness.plugin import PluginProcess

DRIVER = ["-d", "pynet", "--ipam-driver", "pynet"]
TABLE = ["inet", "pynet"]
PAGE = "pynet-published-page"


def unique_name(kind: str) -> str:
    return f"pynet-t-ext-{kind}-{secrets.token_hex(3)}"


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def _routed() -> list[ipaddress.IPv4Network]:
    nets = []
    for route in json.loads(run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            try:
                nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                pass
    return nets


def free_subnets(n: int) -> list[str]:
    """n /24s of 198.18.160.0-198.18.199.255 that no route on the host touches."""
    used = _routed()
    pool = [ipaddress.ip_network(f"198.18.{x}.0/24") for x in range(160, 200)]
    free = [s for s in pool if not any(s.overlaps(u) for u in used)]
    return [str(s) for s in random.sample(free, n)]


def free_port() -> int:
    for _ in range(100):
        port = random.randint(20000, 29999)
        if all(bindable(proto, port) for proto in ("tcp", "udp")):
            return port
    raise RuntimeError("no free port found in 20000-29999")


def bindable(proto: str, port: int, host: str = "0.0.0.0") -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def nft_table() -> list[dict]:
    proc = run("nft", "-j", "list", "table", *TABLE, check=False)
    if proc.returncode != 0:
        return []
    return [x for x in json.loads(proc.stdout)["nftables"] if "metainfo" not in x]


def nft_text() -> str:
    return run("nft", "list", "table", *TABLE, check=False).stdout


def published_ports() -> list[dict]:
    """One entry per published port, from the elements of the two DNAT maps: its host port
    and its comment (naming the network and the endpoint)."""
    found = []
    for x in nft_table():
        m = x.get("map", {})
        if m.get("name") in ("published_any", "published_at"):
            for key, _target in m.get("elem", []):
                elem = key.get("elem", {"val": key}) if isinstance(key, dict) else {"val": key}
                found.append({"port": elem["val"]["concat"][-1], "comment": elem.get("comment", "")})
    return sorted(found, key=lambda p: (p["port"], p["comment"]))


def dnat_port(published: dict) -> int:
    return published["port"]


def shim_rules() -> list[str]:
    return run("iptables", "-S", "PYNET-FORWARD", check=False).stdout.splitlines()


@dataclass
class Env:
    dockerd: DockerDaemon
    image: str
    plugin: PluginProcess
    ns: str                # the outside namespace
    host_ip: str           # the host's address toward the outside
    outside_ip: str
    outside_subnet: str
    link: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    # --- docker ---------------------------------------------------------------------
    def network(self, subnet: str, *opts: str, internal: bool = False) -> str:
        name = unique_name("net")
        argv = ["network", "create", *DRIVER, "--subnet", subnet, *opts]
        self.dockerd.cli(*argv, *(["--internal"] if internal else []), name)
        return name

    def run(self, network: str, *extra: str, cmd: tuple[str, ...] = ("sleep", "600")) -> str:
        ctr = unique_name("c")
        self.dockerd.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", network,
                         *extra, self.image, *cmd)
        return ctr

    def httpd(self, network: str, *extra: str) -> str:
        return self.run(network, *extra, cmd=(
            "sh", "-c", f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www"))

    def ip_of(self, ctr: str) -> str:
        return self.dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                ctr).stdout.strip()

    def endpoint_of(self, ctr: str) -> str:
        return self.dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.EndpointID}}{{end}}",
                                ctr).stdout.strip()

    def gateway_of(self, network: str) -> str:
        """The address pynet put on the network's bridge (the containers' gateway)."""
        info = json.loads(run("ip", "-j", "-4", "addr", "show", "dev", self.bridge_of(network)).stdout)
        return info[0]["addr_info"][0]["local"]

    def bridge_of(self, network: str) -> str:
        return "pn-" + self.dockerd.cli("network", "inspect", "-f", "{{.Id}}", network).stdout.strip()[:12]

    def ping(self, ctr: str, target: str) -> bool:
        return self.dockerd.cli("exec", ctr, "ping", "-c", "1", "-W", "2", target, check=False).returncode == 0

    def tcp_from(self, ctr: str, target: str, port: int) -> str:
        """What the outside's peer server saw as our address ('tcp A.B.C.D'), or ''."""
        return self.dockerd.cli("exec", ctr, "sh", "-c", f"nc -w 3 {target} {port} </dev/null",
                                check=False).stdout.strip()

    def wget_from(self, ctr: str, url: str) -> str:
        return self.dockerd.cli("exec", ctr, "timeout", "5", "wget", "-qO-", url, check=False).stdout.strip()

    # --- processes in namespaces -----------------------------------------------------
    def netns_of(self, ctr: str) -> list[str]:
        pid = self.dockerd.cli("inspect", "-f", "{{.State.Pid}}", ctr).stdout.strip()
        return ["nsenter", f"--net=/proc/{pid}/ns/net"]

    def in_outside(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def serve(self, prefix: list[str], port: int) -> None:
        proc = subprocess.Popen([*prefix, sys.executable, "-c", PEER_SERVER, str(port)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"

    def ask(self, prefix: list[str], proto: str, host: str, port: int) -> str:
        return run(*prefix, sys.executable, "-c", CLIENT, proto, host, str(port)).stdout.strip()

    def curl(self, prefix: list[str], url: str) -> str:
        return run(*prefix, "curl", "-s", "--max-time", "5", url, check=False).stdout.strip()


@contextmanager
def outside_env(dockerd: DockerDaemon, busybox_image: str, plugin: PluginProcess,
        make_netns: Callable[[], str]) -> Iterator[Env]:
    """An Env with its outside namespace and veth, removed again (processes first)."""
    subnet = ipaddress.ip_network(free_subnets(1)[0])
    ns, link = make_netns(), f"pnto-{secrets.token_hex(3)}"
    host_ip, outside_ip = str(subnet[1]), str(subnet[2])
    e = Env(dockerd, busybox_image, plugin, ns, host_ip, outside_ip, str(subnet), link)
    try:
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "addr", "add", f"{host_ip}/24", "dev", link)
        run("ip", "link", "set", link, "up")
        for argv in (("ip", "addr", "add", f"{outside_ip}/24", "dev", "eth0"), ("ip", "link", "set", "eth0", "up"),
                     ("ip", "link", "set", "lo", "up")):
            run("ip", "netns", "exec", ns, *argv)
        yield e
    finally:
        for proc in e.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        run("ip", "link", "del", link, check=False)

"""The crash storm's workload and kill schedule, both from one seeded RNG.

Each cycle runs a container (bridge networks with `-p`, macvlan networks on a veth parent, on
a bridge the test made, or with no parent) and removes older ones; now and then a network is
created (some with a custom bridge name) or deleted. The KillPolicy tells the proxy
(tests/harness/plugin_proxy.py) when to kill the plugin: inside CreateNetwork and
DeleteNetwork, between RequestAddress and CreateEndpoint, inside any other call now and then,
and at random moments from a timer. Docker commands fail while the plugin is down: each is
recorded by outcome, and what it left is removed later.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.harness.dockerd import DockerDaemon
from tests.harness.plugin_proxy import Call, KillProxy

PREFIX = "pynet-st-"
DRIVER = ("-d", "pynet", "--ipam-driver", "pynet")
GATEWAY_REQUEST = "com.docker.network.gateway"
# Explicit subnets: /26s from 198.18.1.0 on (never reused, so a leaked pool cannot fail a
# later create); automatic ones come from the plugin's default pool (conftest).
EXPLICIT_BASE = (198 << 24) | (18 << 16) | (1 << 8)
AUTO_POOL = "base=198.18.192.0/18,size=26"
MACVLAN_PARENT = "stpar0"  # a veth pair the test makes (this kernel has no dummy links)
MACVLAN_BRIDGE_PARENT = "stparbr0"  # a bridge the test makes
CUSTOM_BRIDGE_PREFIX = "stormbr"
KINDS = ("bridge", "bridge-named", "macvlan-veth", "macvlan-bridge", "macvlan-none")
# Per-window odds of a kill (the storm's point is these windows).
P_INSIDE = {"NetworkDriver.CreateNetwork": 0.5, "NetworkDriver.DeleteNetwork": 0.5}
P_ADDRESS_GAP = 0.12
P_OTHER = 0.02
P_TIMER = 0.06  # per cycle: a kill at a random moment of the cycle
MIN_GAP = 2.5  # seconds between kills, so Docker's ~30 s retry can always get through


# Windows every run hits: the first chance at each is taken (then the odds above apply).
INSIDE_CREATE, INSIDE_DELETE = "inside NetworkDriver.CreateNetwork", "inside NetworkDriver.DeleteNetwork"
ADDRESS_GAP = "between RequestAddress and CreateEndpoint"
MUST_HIT = (INSIDE_CREATE, INSIDE_DELETE, ADDRESS_GAP)


class KillPolicy:
    """Seeded decisions for the proxy; disarmed, it kills nothing."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lock = threading.Lock()
        self.armed = False
        self.kills: Counter[str] = Counter()
        self._last = 0.0

    def _roll(self, window: str, p: float) -> bool:
        with self.lock:
            if not self.armed or time.monotonic() - self._last < MIN_GAP:
                return False
            return (window in MUST_HIT and not self.kills[window]) or self.rng.random() < p

    def inside(self, call: Call) -> float | None:
        p = P_INSIDE.get(call.method, P_OTHER)
        if call.method == "Plugin.Activate" or not self._roll(f"inside {call.method}", p):
            return None
        with self.lock:
            return self.rng.uniform(0.0, 0.05)

    def after(self, call: Call) -> str | None:
        if (call.method == "IpamDriver.RequestAddress" and call.status == 200
                and ((call.body or {}).get("Options") or {}).get("RequestAddressType") != GATEWAY_REQUEST
                and self._roll(ADDRESS_GAP, P_ADDRESS_GAP)):
            return ADDRESS_GAP
        return None

    def can_kill(self) -> bool:
        with self.lock:
            return self.armed and time.monotonic() - self._last >= MIN_GAP

    def killed(self, window: str) -> None:
        with self.lock:
            self.kills[window] += 1
            self._last = time.monotonic()

    def downtime(self) -> float:
        with self.lock:
            return self.rng.uniform(0.0, 1.5)


@dataclass
class Net:
    name: str
    kind: str
    subnet: str | None  # None: an automatic pool
    bridge_name: str | None = None
    containers: list[str] = field(default_factory=list)
    published: bool = False


class Storm:
    def __init__(self, dockerd: DockerDaemon, image: str, proxy: KillProxy, policy: KillPolicy,
                 rng: random.Random) -> None:
        self.dockerd, self.image, self.proxy, self.policy, self.rng = dockerd, image, proxy, policy, rng
        self.nets: list[Net] = []
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.failures: list[str] = []  # one line per failed command (the first ones are printed)
        self._subnets = 0
        self._serial = 0
        self._port = 30000

    # ---- docker commands, recorded by outcome ------------------------------------------
    def docker(self, what: str, *argv: str, timeout: float = 150) -> bool:
        try:
            proc = self.dockerd.cli(*argv, check=False, timeout=timeout)
        except RuntimeError as exc:  # a timeout
            self.outcomes[(what, "timeout")] += 1
            self.failures.append(f"{what}: {str(exc)[:300]}")
            return False
        if proc.returncode == 0:
            self.outcomes[(what, "ok")] += 1
            return True
        self.outcomes[(what, "failed")] += 1
        self.failures.append(f"{what}: {proc.stderr.strip()[:300]}")
        return False

    def _next(self, kind: str) -> str:
        self._serial += 1
        return f"{PREFIX}{kind}-{self._serial}"

    # ---- networks -----------------------------------------------------------------------
    def create_network(self, kind: str) -> Net | None:
        name = self._next(kind)
        subnet = None
        if kind != "bridge" or self.rng.random() < 0.7:
            subnet = _subnet(self._subnets)
            self._subnets += 1
        net = Net(name, kind, subnet)
        argv = ["network", "create", *DRIVER]
        if subnet:
            argv += ["--subnet", subnet]
        if kind.startswith("bridge"):
            # No NAT: traffic stays on this machine (and dockerd runs with --ip-masq=false).
            argv += ["-o", "com.docker.network.bridge.enable_ip_masquerade=false"]
        if kind == "bridge-named":
            net.bridge_name = f"{CUSTOM_BRIDGE_PREFIX}{self._serial}"
            argv += ["-o", f"com.docker.network.bridge.name={net.bridge_name}"]
        elif kind == "macvlan-veth":
            argv += ["-o", "type=macvlan", "-o", f"parent={MACVLAN_PARENT}"]
        elif kind == "macvlan-bridge":
            argv += ["-o", "type=macvlan", "-o", f"parent={MACVLAN_BRIDGE_PARENT}"]
        elif kind == "macvlan-none":
            argv += ["-o", "type=macvlan"]
        ok = self.docker("network create", *argv, name)
        # A create that failed may still exist in Docker (the answer was lost, not the work).
        if ok or self._network_exists(name):
            self.nets.append(net)
            return net
        return None

    def _network_exists(self, name: str) -> bool:
        proc = self.dockerd.cli("network", "ls", "-q", "--filter", f"name=^{name}$", check=False, timeout=60)
        return bool(proc.stdout.strip())

    def delete_network(self, net: Net) -> bool:
        for ctr in list(net.containers):
            self.remove_container(net, ctr)
        if net.containers:
            return False
        if self.docker("network rm", "network", "rm", net.name) or not self._network_exists(net.name):
            self.nets.remove(net)
            return True
        return False

    # ---- containers ----------------------------------------------------------------------
    def run_container(self, net: Net) -> None:
        name = self._next("c")
        argv = ["run", "-d", "--pull", "never", "--name", name, "--network", net.name]
        if net.kind.startswith("bridge"):
            self._port += 1
            argv += ["-p", f"{self._port}:80"]
            net.published = True
        self.docker("docker run", *argv, self.image, "sleep", "3600")
        net.containers.append(name)  # even a failed run may leave a container to remove

    def remove_container(self, net: Net, name: str) -> None:
        if self.docker("docker rm", "rm", "-f", "-v", name) or not self._container_exists(name):
            net.containers.remove(name)

    def _container_exists(self, name: str) -> bool:
        proc = self.dockerd.cli("ps", "-aq", "--filter", f"name=^{name}$", check=False, timeout=60)
        return bool(proc.stdout.strip())

    def churn_first(self) -> None:
        """A network made and deleted at once, each retried until it worked: the policy kills
        the plugin inside the first CreateNetwork and DeleteNetwork it sees."""
        net = None
        for _ in range(5):
            if (net := self.create_network("bridge-named")) is not None:
                break
            time.sleep(MIN_GAP)
        for _ in range(5):
            time.sleep(MIN_GAP)
            if net is None or self.delete_network(net):
                return

    # ---- one cycle ------------------------------------------------------------------------
    def cycle(self) -> None:
        timer = None
        if self.rng.random() < P_TIMER:
            timer = threading.Timer(self.rng.uniform(0.0, 1.5), self._timer_kill)
            timer.start()
        try:
            self._step()
        finally:
            if timer is not None:
                timer.cancel()

    def _timer_kill(self) -> None:
        if self.policy.can_kill():
            self.proxy.kill("random moment", self.policy.downtime())

    def _step(self) -> None:
        r = self.rng.random()
        if r < 0.10 and len(self.nets) < 7:
            self.create_network(self.rng.choice(KINDS))
            return
        if r < 0.18 and len(self.nets) > 2:
            self.delete_network(self.rng.choice(self.nets))
            return
        if not self.nets:
            self.create_network("bridge")
            return
        self.run_container(self.rng.choice(self.nets))
        everyone = [(n, c) for n in self.nets for c in n.containers]
        while len(everyone) > 8 or (everyone and self.rng.random() < 0.3):
            net, ctr = everyone.pop(self.rng.randrange(len(everyone)))
            self.remove_container(net, ctr)

    def remove_everything(self) -> list[str]:
        """Every container, then every network the storm made, via docker (a few tries each).
        Returns what could not be removed."""
        for _ in range(3):
            for net in list(self.nets):
                self.delete_network(net)
            if not self.nets:
                break
        left = self.dockerd.cli("ps", "-aq", "--filter", f"name={PREFIX}", timeout=60).stdout.split()
        if left:
            self.docker("docker rm", "rm", "-f", "-v", *left)
        nets = self.dockerd.cli("network", "ls", "-q", "--filter", f"name={PREFIX}", timeout=60).stdout.split()
        if nets:
            self.docker("network rm", "network", "rm", *nets)
        return (self.dockerd.cli("ps", "-aq", "--filter", f"name={PREFIX}", timeout=60).stdout.split()
                + self.dockerd.cli("network", "ls", "-q", "--filter", f"name={PREFIX}",
                                   timeout=60).stdout.split())


def _subnet(i: int) -> str:
    base = EXPLICIT_BASE + 64 * i
    if base >= (198 << 24) | (18 << 16) | (192 << 8):
        raise RuntimeError("the storm ran out of explicit subnets")
    return f"{base >> 24}.{(base >> 16) & 255}.{(base >> 8) & 255}.{base & 255}/26"

"""Several simulated Docker hosts on one machine, sharing one Consul cluster.

    with MultiHost(tmp_path) as bed:             # three hosts: h1, h2, h3
        h1 = bed["h1"]
        h1.docker("network", "create", "-d", "pynet", "--ipam-driver", "pynet", ...)
        h1.plugin_call("/IpamDriver.RequestAddress", {...})
        bed.cut(h1); ...; bed.heal(h1)           # take h1 off the underlay and back
        bed.kill_consul(bed.consul_leader())     # and bed.start_consul(host) to bring it back

Each host hN has
* its own network namespace `<name>-hN`, with `eth0` (198.18.K.1N/24, no default route: no
  way out) on an underlay bridge. The bridge lives in a namespace of its own (`<name>-sw`),
  not in the root namespace: there, with bridge-nf-call-iptables=1 and Docker's FORWARD
  policy DROP, it would need ACCEPT rules in the machine's shared FORWARD chain, which the
  single-host suite manages. `<name>-root` (198.18.K.1) is the root namespace's one leg on
  the underlay, so the test process reaches the Consul HTTP APIs directly. A host is cut off
  by setting its switch port `vhN` down (cut/heal);
* its own mount and UTS namespaces (hostname hN), persisted as files under
  /run/pynet-mh/<name>/. In it every inherited mount other than /, /proc, /sys, /dev (and the
  mounts holding the bed's directory) is dropped -- a copied nsfs mount of another namespace
  would keep that namespace alive -- then a tmpfs goes over /run (so /run/docker,
  /run/containerd, /run/docker/plugins and the netns files are private) and over
  /etc/docker (engine ID), and a fresh sysfs for the host's netns over /sys, with the
  cgroup tree moved back in (dockerd needs it; `ip netns exec` would lose it);
* its own dockerd (state in <base>/hN, API socket <base>/hN/docker.sock, cgroup parent
  <name>-hN, no iptables/forwarding/masquerade of its own), Consul server (one cluster of
  all hosts: -bootstrap-expect=N, raft_multiplier=1, dead servers never pruned so a healed
  host rejoins at once) and pynet plugin (`--store consul --host-id hN` on its local agent;
  its socket /run/docker/plugins/pynet.sock is <base>/hN/plugins/pynet.sock from outside).

Daemons start with setsid and are stopped by PID after checking /proc/PID/cmdline. down()
ends every process left in the hosts' namespaces or cgroups, unmounts, deletes the
namespaces and links, and reports anything still there (leftovers()). A bed left behind by
a killed test run is reaped by the next up() with the same name; one still in use is not.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.harness.busybox import IMAGE, build_rootfs_tar, find_busybox
from tests.harness.cgroups import cgroup_dirs, kill_cgroup_procs, rmdir_cgroups
from tests.harness import engines
from tests.harness.dockerd import (alive, cmdline, die_with_parent, pgid_members, signal_if, tail,
                                   wait_gone)
from tests.harness.plugin import call_socket

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_ROOT = Path("/run/pynet-mh")
CONSUL_HTTP = 8500
PLUGIN_SOCKET_IN_HOST = "/run/docker/plugins/pynet.sock"
_KERNEL_MOUNTS = ("/proc", "/sys", "/dev")


class BedError(RuntimeError):
    pass


@dataclass(eq=False)
class HostProcess:
    """One daemon running inside a host's namespaces (argv is exec'd by nsenter: same PID)."""
    host: Host
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    wd: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.host.dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> HostProcess:
        if self.running():
            return self
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            # Must run on a thread that outlives the process: PDEATHSIG fires when the
            # *thread* that forked it ends.
            self._proc = subprocess.Popen(
                self.host.enter_argv(wd=self.wd or self.host.dir) + self.argv, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)
        return self

    def send(self, sig: int) -> bool:
        """Send sig if the PID is still this daemon (its command line names the host's dir)."""
        if self._proc is None or self._proc.poll() is not None:
            return False
        return signal_if(self._proc.pid, sig, str(self.host.dir))

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if self._proc is None:
            return
        pid = self._proc.pid
        if self.send(sig):
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        for member in pgid_members(pid):  # e.g. gunicorn workers of a killed master
            _kill_if_in(member, self.host)
        wait_gone(pgid_members(pid), 5.0)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self.stop(timeout=10, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


@dataclass(eq=False)  # hashable by identity
class Host:
    bed: MultiHost
    index: int
    dir: Path
    procs: dict[str, HostProcess] = field(default_factory=dict)

    # --- names and addresses ------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.bed.name}-{self.name}"

    @property
    def address(self) -> str:
        return str(self.bed.network.network_address + 10 + self.index)

    @property
    def consul_addr(self) -> str:
        """The host's Consul HTTP API as the test process reaches it (over the root leg)."""
        return f"{self.address}:{CONSUL_HTTP}"

    @property
    def switch_port(self) -> str:
        return f"vh{self.index}"

    @property
    def docker_socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def plugin_socket(self) -> Path:
        return self.dir / "plugins" / "pynet.sock"

    @property
    def cgroup_parent(self) -> str:
        return f"{self.bed.name}-{self.name}"

    @property
    def mnt_file(self) -> Path:
        return self.bed.run_dir / f"{self.name}.mnt"

    @property
    def uts_file(self) -> Path:
        return self.bed.run_dir / f"{self.name}.uts"

    def __str__(self) -> str:
        return self.name

    # --- running things in the host -----------------------------------------------------
    def enter_argv(self, wd: Path | None = None) -> list[str]:
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", f"--mount={self.mnt_file}",
                f"--uts={self.uts_file}"]
        return argv + ([f"--wd={wd}"] if wd else []) + ["--"]

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host (its network, mount and UTS namespaces)."""
        return _run([*self.enter_argv(self.dir), *argv], check=check, timeout=timeout, input=input)

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this host's dockerd (run from the root namespace)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = f"unix://{self.docker_socket}"
        env["DOCKER_CONFIG"] = str(self.bed.base_dir / "docker-cli")
        return _run(["docker", *args], check=check, timeout=timeout, input=input, env=env)

    def plugin_call(self, method: str, body: Any = None, timeout: float = 15.0) -> tuple[int, Any]:
        """POST to this host's pynet plugin as dockerd does: (status, parsed JSON or None)."""
        status, _, raw = call_socket(self.plugin_socket, method, body, timeout)
        return status, (json.loads(raw) if raw.strip() else None)

    # --- its daemons --------------------------------------------------------------------
    @property
    def dockerd(self) -> HostProcess:
        return self.procs["dockerd"]

    @property
    def consul(self) -> HostProcess:
        return self.procs["consul"]

    @property
    def plugin(self) -> HostProcess:
        return self.procs["plugin"]

    def ns_inodes(self) -> set[tuple[str, int]]:
        """(kind, inode) of this host's namespaces, to find processes still inside them."""
        out = set()
        for kind, path in (("net", Path(f"/run/netns/{self.netns}")), ("mnt", self.mnt_file)):
            with contextlib.suppress(OSError):
                out.add((kind, path.stat().st_ino))
        return out


class MultiHost:
    """A bed of `hosts` simulated Docker hosts (see the module docstring).

    name: prefix of every namespace, link, cgroup and run directory (keep it <= 6
    characters, link names are limited to 15); underlay: a /24 of 198.18.0.0/15, distinct
    per bed running at the same time; plugin_args/plugin_env: extra `pynet serve` flags and
    environment; docker=False: no dockerd (Consul and plugins only); docker_iptables: the
    hosts (by name) whose dockerd writes its own iptables rules, masquerade and forwarding
    (inside that host's network namespace only: docker_gwbridge egress and `-p`), the others
    run with --iptables=false; dockerd_args: extra flags for every dockerd;
    legacy_plugin=False: no `pynet serve` of the bed's own (tests/harness/swarm.py installs
    the managed plugin in each dockerd instead); engine: the Docker Engine every host runs
    (tests/harness/engines.py; default the machine's own dockerd); plugin_args_for: a
    function of the Host giving that host's own extra `pynet serve` flags."""

    def __init__(self, base_dir: Path, *, hosts: int = 3, name: str = "pnm",
                 underlay: str = "198.18.0.0/24", plugin_args: tuple[str, ...] = (),
                 plugin_env: dict[str, str] | None = None, docker: bool = True,
                 startup_timeout: float = 60.0, docker_iptables: tuple[str, ...] = (),
                 dockerd_args: tuple[str, ...] = (), legacy_plugin: bool = True,
                 engine: str | None = None, plugin_args_for: Any = None) -> None:
        self.legacy_plugin = legacy_plugin
        self.engine = engine or engines.HOST_ENGINE
        self.base_dir = Path(base_dir).resolve()
        self.name = name
        self.network = ipaddress.ip_network(underlay)
        if not (self.network.subnet_of(ipaddress.ip_network("198.18.0.0/15")) and self.network.prefixlen == 24):
            raise ValueError(f"underlay {underlay} must be a /24 inside 198.18.0.0/15")
        if not 1 <= hosts <= 9:
            raise ValueError("1 to 9 hosts")
        if len(name) > 6 or not name.isalnum():
            raise ValueError(f"bed name {name!r}: up to 6 letters or digits")
        if str(self.base_dir).startswith("/run/"):
            raise ValueError("base_dir must not be under /run: the hosts put a tmpfs over /run")
        self.run_dir = RUN_ROOT / name
        self.plugin_args = plugin_args
        # Host -> extra `pynet serve` flags of that host alone (e.g. its own --dns-addr).
        self.plugin_args_for = plugin_args_for
        self.plugin_env = dict(plugin_env or {})
        self.with_docker = docker
        self.docker_iptables = tuple(docker_iptables)
        self.dockerd_args = tuple(dockerd_args)
        self.startup_timeout = startup_timeout
        self.hosts = [Host(self, i, self.base_dir / f"h{i}") for i in range(1, hosts + 1)]
        self._inodes: set[tuple[str, int]] = set()
        self._started = False

    # --- lookup -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def switch_ns(self) -> str:
        return f"{self.name}-sw"

    @property
    def root_link(self) -> str:
        return f"{self.name}-root"

    @property
    def root_address(self) -> str:
        return str(self.network.network_address + 1)

    # --- up -------------------------------------------------------------------------------
    def __enter__(self) -> MultiHost:
        return self.up()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.down()

    def up(self) -> MultiHost:
        """Build the hosts and start every daemon; ready when each dockerd answers, Consul
        has a leader with all servers voting, and each plugin answers Plugin.Activate."""
        started = time.monotonic()
        _preflight(self.with_docker)
        self._reap_stale()
        self._started = True
        try:
            self._make_network()
            for h in self.hosts:
                self._make_host(h)
            self._inodes = {i for h in self.hosts for i in h.ns_inodes()}
            for h in self.hosts:
                self._define_daemons(h)
                h.consul.start()
                if self.with_docker:
                    h.dockerd.start()
            self.wait_for_cluster()
            for h in self.hosts:
                if self.legacy_plugin:
                    h.plugin.start()
            with concurrent.futures.ThreadPoolExecutor(len(self.hosts)) as pool:
                list(pool.map(self._wait_host_ready, self.hosts))
        except BaseException as exc:
            report = self._failure_report()
            self.down()
            raise BedError(f"multi-host bed {self.name} failed to come up: {exc}\n{report}") from exc
        self.startup_seconds = time.monotonic() - started
        return self

    def _make_network(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "docker-cli").mkdir(exist_ok=True)
        # Mount-namespace files can only be bind-mounted on a private mount.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _sh(["mount", "--bind", str(self.run_dir), str(self.run_dir)])
        _sh(["mount", "--make-private", str(self.run_dir)])
        sw = self.switch_ns
        _sh(["ip", "netns", "add", sw])
        _sh(["ip", "-n", sw, "link", "set", "lo", "up"])
        _sh(["ip", "-n", sw, "link", "add", "ul", "type", "bridge"])
        _sh(["ip", "-n", sw, "link", "set", "ul", "up"])
        _sh(["ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns", sw])
        _sh(["ip", "-n", sw, "link", "set", "root", "master", "ul", "up"])
        _sh(["ip", "addr", "add", f"{self.root_address}/24", "dev", self.root_link])
        _sh(["ip", "link", "set", self.root_link, "up"])

    def _make_host(self, h: Host) -> None:
        h.dir.mkdir(parents=True, exist_ok=True)
        (h.dir / "plugins").mkdir(exist_ok=True)
        (h.dir / "daemon.json").write_text("{}\n")
        _sh(["ip", "netns", "add", h.netns])
        _sh(["ip", "-n", self.switch_ns, "link", "add", h.switch_port, "type", "veth", "peer",
             "name", "eth0", "netns", h.netns])
        _sh(["ip", "-n", self.switch_ns, "link", "set", h.switch_port, "master", "ul", "up"])
        for argv in (["link", "set", "lo", "up"], ["addr", "add", f"{h.address}/24", "dev", "eth0"],
                     ["link", "set", "eth0", "up"]):
            _sh(["ip", "-n", h.netns, *argv])
        # Like any Docker host it forwards (published ports, overlays); with no default
        # route nothing leaves the underlay.
        _sh(["ip", "netns", "exec", h.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for f in (h.mnt_file, h.uts_file):
            f.touch()
        _sh(["unshare", f"--mount={h.mnt_file}", f"--uts={h.uts_file}", "--propagation", "private",
             "nsenter", f"--net=/run/netns/{h.netns}", "--", "sh", "-ec", _host_setup_script(h)])

    def _define_daemons(self, h: Host) -> None:
        others = [o.address for o in self.hosts if o is not h]
        consul = ["consul", "agent", "-server", f"-bootstrap-expect={len(self.hosts)}", f"-node={h.name}",
                  f"-bind={h.address}", f"-advertise={h.address}", f"-client=127.0.0.1 {h.address}",
                  *[f"-retry-join={a}" for a in others], "-retry-interval=1s",
                  f"-data-dir={h.dir / 'consul'}", f"-pid-file={h.dir / 'consul.pid'}",
                  "-log-level=info", "-dns-port=-1",
                  "-hcl=performance { raft_multiplier = 1 }", "-hcl=disable_update_check = true",
                  "-hcl=autopilot { cleanup_dead_servers = false }"]
        h.procs["consul"] = HostProcess(h, "consul", consul)
        dockerd = ["dockerd", "--data-root", str(h.dir / "docker"), "--exec-root", "/run/docker",
                   "--pidfile", str(h.dir / "dockerd.pid"), "-H", f"unix://{h.docker_socket}",
                   "--config-file", str(h.dir / "daemon.json"),
                   "--bip", f"198.19.{240 + h.index}.1/24",
                   "--default-address-pool", f"base=198.19.{248 - h.index}.0/24,size=26",
                   "--cgroup-parent", h.cgroup_parent, "--userland-proxy=false", "--shutdown-timeout", "3",
                   *(["--iptables=true", "--ip-forward=true", "--ip-masq=true"] if h.name in self.docker_iptables
                     else ["--iptables=false", "--ip-forward=false", "--ip-masq=false"]),
                   *self.dockerd_args]
        # A newer engine's binaries first on PATH (its containerd, shim, docker-proxy, docker-init).
        engine_bin = engines.bin_dir(self.engine)
        path_env = {"PATH": f"{engine_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"} \
            if engine_bin else {}
        h.procs["dockerd"] = HostProcess(h, "dockerd", dockerd, env=path_env)
        plugin = [sys.executable, "-m", "pynet.cli", "serve", "--socket", PLUGIN_SOCKET_IN_HOST,
                  "--state-dir", str(h.dir / "pynet"), "--store", "consul",
                  "--consul-addr", f"127.0.0.1:{CONSUL_HTTP}", "--host-id", h.name,
                  "--docker-host", f"unix://{h.docker_socket}", *self.plugin_args,
                  *(self.plugin_args_for(h) if self.plugin_args_for else ())]
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               **self.plugin_env}
        h.procs["plugin"] = HostProcess(h, "plugin", plugin, env=env, wd=REPO_ROOT)

    def _wait_host_ready(self, h: Host) -> None:
        deadline = time.monotonic() + self.startup_timeout
        if self.with_docker:
            _poll(lambda: h.docker("version", "--format", "{{.Server.Version}}", check=False,
                                   timeout=10).returncode == 0,
                  deadline, f"dockerd on {h}", h.dockerd)
        if self.legacy_plugin:
            self.wait_plugin(h, deadline - time.monotonic())
        if self.with_docker:
            # Docker 26+ gives `docker exec` no default PATH in an image that has none.
            h.docker("import", "--change", 'CMD ["sh"]', "--change", "ENV PATH=/bin", "-", IMAGE,
                     input=_busybox_tar())

    def restart_dockerd(self, h: Host, timeout: float = 60.0) -> None:
        """Stop the host's dockerd (SIGTERM) and start it again; back when it answers."""
        h.dockerd.stop()
        h.dockerd.start()
        _poll(lambda: h.docker("version", "--format", "{{.Server.Version}}", check=False,
                               timeout=10).returncode == 0,
              time.monotonic() + timeout, f"dockerd on {h}", h.dockerd)

    def wait_plugin(self, h: Host, timeout: float = 30.0) -> None:
        def ready() -> bool:
            try:
                return h.plugin_call("/Plugin.Activate", timeout=2)[0] == 200
            except OSError:
                return False
        _poll(ready, time.monotonic() + timeout, f"pynet plugin on {h}", h.plugin)

    # --- Consul -------------------------------------------------------------------------
    def consul_get(self, path: str, host: Host | None = None, timeout: float = 2.0) -> Any:
        """GET the Consul HTTP API of `host`, or of the first host that answers."""
        last: Exception | None = None
        for h in [host] if host else self.hosts:
            try:
                with urllib.request.urlopen(f"http://{h.consul_addr}{path}", timeout=timeout) as r:
                    return json.loads(r.read() or b"null")
            except urllib.error.HTTPError as e:
                if e.code == 404:  # e.g. no key under a KV prefix
                    return None
                last = e
            except (OSError, ValueError) as e:
                last = e
        raise BedError(f"no Consul answered GET {path}: {last}")

    def consul_leader(self, asking: list[Host] | None = None) -> Host | None:
        """The host whose Consul server leads, as the first host in `asking` that answers sees it."""
        for h in asking or self.hosts:
            try:
                leader = self.consul_get("/v1/status/leader", h)
            except BedError:
                continue
            if leader:
                return self._host_at(leader.rsplit(":", 1)[0])
        return None

    def wait_for_leader(self, timeout: float = 30.0, among: list[Host] | None = None) -> Host:
        """Wait until the hosts `among` (default: all running Consuls) agree on a leader
        that is one of them, and a write through each of them commits."""
        among = among or [h for h in self.hosts if h.consul.running()]
        deadline = time.monotonic() + timeout
        while True:
            seen = {self.consul_leader([h]) for h in among}
            leader = seen.pop() if len(seen) == 1 else None
            if leader in among and all(self._kv_write_works(h) for h in among):
                return leader
            if time.monotonic() > deadline:
                raise BedError(f"no Consul leader among {[h.name for h in among]} after {timeout}s")
            time.sleep(0.2)

    def wait_for_cluster(self, timeout: float | None = None) -> Host:
        """All servers running, one leader, every server a raft voter."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        leader = self.wait_for_leader(max(1.0, deadline - time.monotonic()))

        def voters() -> bool:
            try:
                cfg = self.consul_get("/v1/operator/raft/configuration", leader)
            except BedError:
                return False
            return sum(1 for s in cfg["Servers"] if s["Voter"]) == len(self.hosts)
        _poll(voters, deadline, "all Consul servers voting")
        return leader

    def _kv_write_works(self, h: Host) -> bool:
        req = urllib.request.Request(f"http://{h.consul_addr}/v1/kv/pynet-bed/probe/{h.name}",
                                     data=b"1", method="PUT")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                ok = r.read().strip() == b"true"
            delete = urllib.request.Request(f"http://{h.consul_addr}/v1/kv/pynet-bed?recurse=true",
                                            method="DELETE")
            with urllib.request.urlopen(delete, timeout=2):
                pass
            return ok
        except (OSError, urllib.error.URLError):
            return False

    def kill_consul(self, host: Host) -> None:
        """SIGKILL the host's Consul server (a crash; its data stays for a restart)."""
        host.consul.kill()

    def start_consul(self, host: Host) -> None:
        host.consul.start()

    def kv(self, prefix: str = "pynet/", host: Host | None = None) -> dict[str, str]:
        """Every key under prefix with its value, read through `host` (or any that answers)."""
        items = self.consul_get(f"/v1/kv/{prefix}?recurse=true", host) or []
        return {i["Key"]: base64.b64decode(i["Value"] or b"").decode() for i in items}

    def _host_at(self, address: str) -> Host | None:
        return next((h for h in self.hosts if h.address == address), None)

    # --- faults ---------------------------------------------------------------------------
    def cut(self, host: Host) -> None:
        """Take the host off the underlay (its switch port down): it reaches no other host."""
        _sh(["ip", "-n", self.switch_ns, "link", "set", host.switch_port, "down"])

    def heal(self, host: Host) -> None:
        _sh(["ip", "-n", self.switch_ns, "link", "set", host.switch_port, "up"])

    # --- down -----------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop and remove everything; returns what could not be removed (empty: clean)."""
        if not self._started:
            return []
        for h in self.hosts:  # containers go first, while every plugin can still answer
            with contextlib.suppress(BedError):
                self.heal(h)
        for h in self.hosts:
            self._remove_containers(h)
        # dockerd first: its idle keep-alive connections would hold a stopping plugin up.
        for name in ("dockerd", "plugin", "consul"):
            procs = [h.procs[name] for h in self.hosts if name in h.procs]
            with concurrent.futures.ThreadPoolExecutor(len(self.hosts)) as pool:
                list(pool.map(lambda p: p.stop(), procs))
        inodes = self._inodes | {i for h in self.hosts for i in h.ns_inodes()}
        _kill_in_namespaces(inodes)
        for h in self.hosts:
            kill_cgroup_procs(h.cgroup_parent)
            for f in (h.mnt_file, h.uts_file):
                subprocess.run(["umount", str(f)], capture_output=True)
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.root_link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch_ns], capture_output=True)
        for h in self.hosts:
            rmdir_cgroups(h.cgroup_parent)
        subprocess.run(["umount", str(self.run_dir)], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            RUN_ROOT.rmdir()
        for h in self.hosts:  # image layers: the only bulky thing; logs stay for post-mortems
            if not any(m.startswith(str(h.dir)) for m in _mountpoints()):
                shutil.rmtree(h.dir / "docker", ignore_errors=True)
        self._started = False
        return self.leftovers(inodes)

    def _remove_containers(self, h: Host) -> None:
        # busybox `sleep` as PID 1 ignores SIGTERM: without rm -f dockerd waits per container.
        if not (self.with_docker and "dockerd" in h.procs and h.dockerd.running()):
            return
        with contextlib.suppress(Exception):
            ids = h.docker("ps", "-aq", check=False, timeout=20).stdout.split()
            if ids:
                h.docker("rm", "-f", *ids, check=False, timeout=60)

    def leftovers(self, inodes: set[tuple[str, int]] | None = None) -> list[str]:
        """Anything of this bed still on the machine."""
        found = []
        names = set(_run(["ip", "netns", "list"], check=False).stdout.split())
        found += [f"netns {n}" for n in sorted(names) if n.startswith(f"{self.name}-")]
        links = _run(["ip", "-o", "link", "show"], check=False).stdout
        found += [f"link {self.root_link}" for line in links.splitlines() if f" {self.root_link}@" in line]
        found += [f"mount {m}" for m in _mountpoints() if m.startswith(str(self.run_dir))]
        for pid in _pids_in_namespaces(inodes if inodes is not None else self._inodes):
            found.append(f"process {pid}: {cmdline(pid)[:100]}")
        for h in self.hosts:
            found += [f"cgroup {d}" for d in cgroup_dirs(h.cgroup_parent)]
            for name, p in h.procs.items():
                if p.running():
                    found.append(f"{name} of {h} (pid {p.pid})")
        if self.run_dir.exists():
            found.append(f"directory {self.run_dir}")
        return found

    def _reap_stale(self) -> None:
        """Remove a bed of this name that a killed test run left behind (never a live one)."""
        names = set(_run(["ip", "netns", "list"], check=False).stdout.split())
        stale_ns = [n for n in names if n.startswith(f"{self.name}-")]
        stale_link = Path(f"/sys/class/net/{self.root_link}").exists()
        if not stale_ns and not stale_link and not self.run_dir.exists():
            return
        inodes = set()
        for n in stale_ns:
            with contextlib.suppress(OSError):
                inodes.add(("net", Path(f"/run/netns/{n}").stat().st_ino))
        for f in self.run_dir.glob("*.mnt") if self.run_dir.exists() else []:
            with contextlib.suppress(OSError):
                inodes.add(("mnt", f.stat().st_ino))
        live = [p for p in _pids_in_namespaces(inodes)
                if "consul" in cmdline(p) or "dockerd" in cmdline(p) or "pynet.cli" in cmdline(p)]
        if live:
            raise BedError(f"a multi-host bed named {self.name!r} is running (pids {live}); "
                           "use another name, or stop that test session first")
        self._inodes = inodes
        self._started = True
        left = self.down()
        if left:
            raise BedError(f"could not remove a stale bed {self.name!r}: {left}")

    def _failure_report(self) -> str:
        parts = []
        for h in self.hosts:
            for name, p in h.procs.items():
                state = "running" if p.running() else f"exited {p._proc.returncode if p._proc else '-'}"
                parts.append(f"--- {h} {name} ({state}) ---\n{p.log_tail(15)}")
        return "\n".join(parts)


# ---- building blocks --------------------------------------------------------------------


def _host_setup_script(h: Host) -> str:
    """Run once inside the host's new mount + UTS namespaces, in its netns."""
    keep = " ".join(f'"{k}"' for k in (h.bed.base_dir, REPO_ROOT, sys.prefix))
    kernel_case = " | ".join(f"{m} | {m}/*" for m in _KERNEL_MOUNTS)
    return f"""
hostname {h.name}
# Drop every inherited mount but the kernel's and those holding our directories, deepest
# first: copied nsfs mounts (other hosts' namespaces, other dockerds' containers) would
# otherwise stay alive as long as this host does.
for m in $(awk '{{print $5}}' /proc/self/mountinfo | sort -r); do
    case "$m" in / | {kernel_case}) continue ;; esac
    holds=no
    for k in {keep}; do
        case "$k/" in "$m"/*) holds=yes ;; esac
    done
    [ "$holds" = yes ] && continue
    umount -l "$m" 2>/dev/null || true
done
mount -t tmpfs -o mode=0755,size=64m {h.bed.name}-{h.name}-run /run
mkdir -p /run/docker/plugins /run/containerd /run/lock /run/.cgroup
mount --bind {h.dir}/plugins /run/docker/plugins
mount -t tmpfs -o mode=0755,size=4m {h.bed.name}-{h.name}-etc-docker /etc/docker
# A sysfs of this netns (dockerd reads /sys/class/net), with the cgroup tree kept.
mount --rbind /sys/fs/cgroup /run/.cgroup
umount -l /sys
mount -t sysfs sysfs /sys
mount --move /run/.cgroup /sys/fs/cgroup
rmdir /run/.cgroup
"""


_BUSYBOX: bytes | None = None


def _busybox_tar() -> bytes:
    global _BUSYBOX
    if _BUSYBOX is None:
        _BUSYBOX = build_rootfs_tar(find_busybox())
    return _BUSYBOX


def _preflight(docker: bool) -> None:
    if os.geteuid() != 0:
        raise BedError("the multi-host bed needs root (namespaces, mounts, dockerd)")
    need = ["ip", "nsenter", "unshare", "consul"] + (["dockerd", "docker"] if docker else [])
    missing = [b for b in need if shutil.which(b) is None]
    if missing:
        raise BedError(f"missing {missing}: run scripts/install-test-deps.sh "
                       "(Debian docker.io, util-linux; consul from bullseye)")


def _run(argv: list[str], *, check: bool = True, timeout: float = 60, input: str | bytes | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    data = input.encode() if isinstance(input, str) else input
    try:
        raw = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, env=env,
                             stdin=None if data is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BedError(f"`{' '.join(argv)}` timed out after {timeout}s; stderr so far: "
                       f"{(e.stderr or b'').decode(errors='replace')[-500:]}") from None
    proc = subprocess.CompletedProcess(argv, raw.returncode, raw.stdout.decode(errors="replace"),
                                       raw.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise BedError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return proc


def _sh(argv: list[str]) -> None:
    _run(argv, timeout=30)


def _poll(ready: Any, deadline: float, what: str, proc: HostProcess | None = None) -> None:
    while not ready():
        if proc is not None and not proc.running() and proc._proc is not None:
            raise BedError(f"{what}: exited with {proc._proc.returncode}\n{proc.log_tail(20)}")
        if time.monotonic() > deadline:
            raise BedError(f"{what}: not ready in time" + (f"\n{proc.log_tail(20)}" if proc else ""))
        time.sleep(0.2)


def _mountpoints() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pids_in_namespaces(inodes: set[tuple[str, int]]) -> list[int]:
    if not inodes:
        return []
    me = os.getpid()
    found = []
    for pid in _pids():
        if pid == me:
            continue
        for kind in ("net", "mnt"):
            try:
                if (kind, os.stat(f"/proc/{pid}/ns/{kind}").st_ino) in inodes:
                    found.append(pid)
                    break
            except OSError:
                pass
    return [p for p in found if alive(p)]


def _kill_if_in(pid: int, host: Host) -> None:
    if pid in _pids_in_namespaces(host.ns_inodes()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _kill_in_namespaces(inodes: set[tuple[str, int]]) -> None:
    """SIGKILL what is still inside the bed's namespaces (containerd shims, strays)."""
    pids = _pids_in_namespaces(inodes)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(pids, 5.0)

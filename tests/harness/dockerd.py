"""A private, real `dockerd` for the end-to-end suite.

Private: its own --data-root (a temp dir), --exec-root, API socket, pidfile, config file,
engine key, cgroup parent and default bridge, so it can run next to a system dockerd on
/var/run/docker.sock. Fixed paths under /run/pynet-test: one test dockerd per machine at a
time (a second session is refused with a clear message).

NOT private (hard-coded in dockerd/containerd, no flag):
* /run/docker/plugins: every dockerd on the machine discovers legacy plugins there, so the
  suite's /run/docker/plugins/pynet.sock is visible to a system dockerd too, and a real pynet
  installed on the host would collide with the test one (PluginProcess refuses to start then).
* /run/containerd/s (containerd 1.6 shim sockets).
* iptables: dockerd's bridge driver flushes the DOCKER* chains when it starts, wiping another
  running dockerd's per-bridge rules; start() saves and puts them back. stop() deletes the
  rules naming our bridges and, when no other dockerd runs, the DOCKER* chains, the FORWARD
  policy, net.ipv4.ip_forward and the nft tables as they were before start().

Realism: FORWARD policy is DROP while our dockerd runs (dockerd only sets it when it had to
turn ip_forward on; we set it either way). --ip-masq=false: no NAT way out for test containers.

Engine: the host's dockerd (Debian 12's 20.10) unless ENGINE (or PYNET_TEST_ENGINE) names a
newer one from tests/harness/engines.py (26.1, 28.5): its binaries' directory then goes first
on PATH for dockerd (so its containerd, shim, docker-proxy and docker-init are found, and the
host's runc after them) and for the docker CLI, the engine's own client.

Deliberate deviations from the plain flag set:
* `--bridge pnt-docker0` (a bridge we create with 198.19.200.1/24) instead of `--bip`:
  --bip always configures the bridge named docker0, which a system dockerd also owns.
* The config file is not quite `{}`: it sets "deprecated-key-path" (20.10 has no CLI flag
  for it) so the engine key goes to our temp dir, not /etc/docker/key.json.
* docker_gwbridge is pre-created on bridge pnt-gwbridge (198.19.201.0/24, ICC off, no
  masquerade): its Linux bridge name is otherwise fixed and shared with a system dockerd.
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import docker

from tests.harness import engines
from tests.harness.cgroups import kill_cgroup_procs, rmdir_cgroups

RUN_DIR = Path("/run/pynet-test")  # short: unix socket paths are limited to 108 bytes
PLUGINS_DIR = Path("/run/docker/plugins")
# Hard-coded shared dirs dockerd/containerd create (containerd 1.6 shims put their sockets in
# /run/containerd/s whatever the state dir). Removed at stop if we created them and they are empty.
SHARED_DIRS = (PLUGINS_DIR, PLUGINS_DIR.parent, Path("/run/containerd/s"), Path("/run/containerd"))
BRIDGE = "pnt-docker0"
BRIDGE_CIDR = "198.19.200.1/24"
GWBRIDGE = "pnt-gwbridge"
GWBRIDGE_SUBNET = "198.19.201.0/24"
ADDRESS_POOL = "base=198.19.0.0/17,size=24"
CGROUP_PARENT = "pynet-test"


@dataclass(frozen=True)
class Layout:
    """What one test dockerd owns on the host. The default is the suite's one daemon;
    SECOND is a second daemon that can run next to it (its own bridge, cgroup parent and
    run dir; no docker_gwbridge of its own), e.g. a dockerd pynet must not trust."""
    run_dir: Path = RUN_DIR
    bridge: str = BRIDGE
    bridge_cidr: str = BRIDGE_CIDR
    gwbridge: str | None = GWBRIDGE  # None: none pre-created
    address_pool: str = ADDRESS_POOL
    cgroup_parent: str = CGROUP_PARENT


SECOND = Layout(run_dir=Path("/run/pynet-test2"), bridge="pnt-docker1", bridge_cidr="198.19.202.1/24",
                gwbridge=None, address_pool="base=198.19.128.0/20,size=24", cgroup_parent="pynet-test2")
TEST_RANGE = ipaddress.ip_network("198.19.0.0/16")  # benchmark range: every test network lives here
BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "docker_gwbridge"})
_PR_SET_PDEATHSIG = 1


class DockerCLIError(RuntimeError):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        super().__init__(
            f"`docker {' '.join(args)}` failed with exit code {proc.returncode}\n"
            f"stderr: {proc.stderr.strip()}\nstdout: {proc.stdout.strip()[-2000:]}"
        )


@dataclass
class Snapshot:
    """IDs present at one moment; remove_since() deletes what appeared later.

    Volumes are deliberately not tracked: listing them makes dockerd activate every socket in
    /run/docker/plugins (to find volume drivers), which blocks ~15 s on a killed plugin's
    stale socket. Containers are removed with -v, so their anonymous volumes go too."""

    containers: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)


class DockerDaemon:
    def __init__(self, base_dir: Path | None = None, *, run_dir: Path | None = None,
                 startup_timeout: float = 30.0, extra_args: tuple[str, ...] = (),
                 layout: Layout = Layout(), engine: str | None = None) -> None:
        run_dir = run_dir or layout.run_dir
        self.engine = engine or engines.selected()
        self._engine_bin: Path | None = None  # set by start(): fetching may take a minute
        self.layout = layout
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="pynet-dockerd-"))
        self.data_root = self.base_dir / "data"
        self.log_path = self.base_dir / "dockerd.log"
        self.run_dir = run_dir
        self.exec_root = run_dir / "docker-exec"
        self.socket = run_dir / "docker.sock"
        self.pidfile = run_dir / "docker.pid"
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.env: dict[str, str] = self._make_env()
        self._proc: subprocess.Popen[bytes] | None = None
        self._host_before: _HostState | None = None
        self._started = False  # stop() touches shared paths only after our own start()

    # ---- public API -------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, timeout: int = 60) -> docker.DockerClient:
        """A new SDK client (version="auto": docker-py 7 defaults to API 1.44, 20.10 speaks 1.41)."""
        return docker.DockerClient(base_url=self.base_url, version="auto", timeout=timeout)

    def cli(self, *args: str, check: bool = True, timeout: float = 120,
            input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; stderr goes into the error on failure."""
        argv = list(args)
        data = input.encode() if isinstance(input, str) else input
        try:
            raw = subprocess.run(["docker", *argv], env=self.env, input=data, capture_output=True,
                                 timeout=timeout, stdin=None if data is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"`docker {' '.join(argv)}` timed out after {timeout}s; "
                               f"stderr so far: {(e.stderr or b'').decode(errors='replace')}") from None
        proc = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                           raw.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise DockerCLIError(argv, proc)
        return proc

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ---- start ------------------------------------------------------------------------

    def start(self) -> DockerDaemon:
        if os.geteuid() != 0:
            raise RuntimeError("the e2e suite needs root (dockerd, iptables, network namespaces)")
        try:
            self._engine_bin = engines.bin_dir(self.engine)
        except engines.EngineError as e:
            raise RuntimeError(f"docker engine {self.engine}: {e}") from None
        self.env = self._make_env()
        binary = self._dockerd_binary()
        if binary is None:
            raise RuntimeError("dockerd is not installed; run scripts/install-test-deps.sh (Debian docker.io)")
        if shutil.which("docker", path=self.env["PATH"]) is None:
            raise RuntimeError("the docker CLI is not installed; run scripts/install-test-deps.sh")
        self._refuse_if_already_running()
        self._started = True
        self._host_before = _HostState.capture()
        # dockerd's bridge driver flushes the DOCKER* chains at start-up, wiping the per-bridge
        # rules of any other running dockerd; save them so they can be put back.
        foreign = _docker_chain_rules() if other_dockerds() else {}
        try:
            self._prepare_dirs()
            _reap_stale_bridges()
            _make_bridge(self.layout.bridge, self.layout.bridge_cidr)
            self._spawn(binary)
            self._wait_ready()
            _restore_rules(foreign)
            if not foreign:
                # dockerd sets FORWARD to DROP only when it had to turn ip_forward on itself;
                # make the realistic fresh-machine case the deterministic one.
                subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True, capture_output=True)
            self._make_gwbridge()
        except BaseException as e:
            tail_text = self.log_tail()
            self.stop()
            if isinstance(e, Exception):
                raise RuntimeError(f"dockerd failed to start: {e}\n--- dockerd log tail ---\n{tail_text}") from e
            raise
        return self

    def _refuse_if_already_running(self) -> None:
        # A leftover from a crashed session (or a concurrent one) owns our fixed paths.
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and alive(pid) and "dockerd" in cmdline(pid):
            raise RuntimeError(f"a test dockerd (pid {pid}) already runs with pidfile {self.pidfile}; "
                               f"another test session? Stop it first (kill {pid}).")
        stray = pids_with_cmdline_containing(str(self.exec_root))
        if stray:
            raise RuntimeError(f"processes from an earlier test dockerd still run on {self.exec_root}: "
                               + "; ".join(f"{p}: {cmdline(p)[:120]}" for p in stray))
        if socket_answers(self.socket):
            raise RuntimeError(f"something already answers on {self.socket}")

    def _prepare_dirs(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Stale files from a crashed run (we checked nothing of ours runs).
        _unmount_under(self.exec_root)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        for p in (self.socket, self.pidfile):
            p.unlink(missing_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "cli-config").mkdir(exist_ok=True)
        (self.base_dir / "daemon.json").write_text(
            json.dumps({"deprecated-key-path": str(self.base_dir / "key.json")}) + "\n")

    def _spawn(self, binary: str) -> None:
        cmd = [binary,
               "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
               "-H", self.base_url, "--pidfile", str(self.pidfile),
               "--config-file", str(self.base_dir / "daemon.json"),
               "--ip-masq=false",  # no route out through Docker's NAT for test containers
               "--bridge", self.layout.bridge,  # instead of --bip, see the module docstring
               "--default-address-pool", self.layout.address_pool,
               "--cgroup-parent", self.layout.cgroup_parent,  # lets stop() find our containers' processes
               "--shutdown-timeout", "3",
               *self.extra_args]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          env=self._daemon_env(), start_new_session=True,
                                          preexec_fn=die_with_parent)

    def _dockerd_binary(self) -> str | None:
        return shutil.which("dockerd", path=self.env["PATH"])

    def _daemon_env(self) -> dict[str, str]:
        # The engine's directory first: dockerd finds containerd, the shim, docker-proxy and
        # docker-init there, and runc further on PATH (the host's).
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["PATH"] = self.env["PATH"]
        return env

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with code {self._proc.returncode} during start-up")
            if self.socket.exists():
                try:
                    with contextlib.closing(self.client(timeout=5)) as c:
                        c.info()
                    return
                except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
                    last = e
            time.sleep(0.2)
        raise RuntimeError(f"dockerd not ready after {self.startup_timeout}s (last error: {last})")

    def _make_gwbridge(self) -> None:
        if self.layout.gwbridge is None:
            return
        # Pre-create docker_gwbridge: libnetwork uses an existing network of that name, so its
        # Linux bridge gets our name and our subnet instead of clashing with a system dockerd.
        self.cli("network", "create", "--driver", "bridge", "--subnet", GWBRIDGE_SUBNET,
                 "-o", f"com.docker.network.bridge.name={self.layout.gwbridge}",
                 "-o", "com.docker.network.bridge.enable_icc=false",
                 "-o", "com.docker.network.bridge.enable_ip_masquerade=false",
                 "docker_gwbridge")

    # ---- per-test cleanup ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with contextlib.closing(self.client(timeout=30)) as c:
            return Snapshot(
                containers={x["Id"] for x in c.api.containers(all=True)},
                networks={x.id for x in c.networks.list()},
            )

    def remove_since(self, before: Snapshot, name_prefix: str = "pynet-t-", timeout: float = 90) -> list[str]:
        """Remove containers, then networks, that are not in BEFORE (or are named
        NAME_PREFIX*). Returns error strings; empty means everything went."""
        errors: list[str] = []
        with contextlib.closing(self.client(timeout=int(timeout))) as c:
            ctrs = {x["Id"]: x["Names"][0].lstrip("/") if x.get("Names") else "" for x in c.api.containers(all=True)}
            nets = {x.id: x.name for x in c.networks.list()}
        new_ctrs = [i for i, n in ctrs.items() if i not in before.containers or n.startswith(name_prefix)]
        new_nets = [i for i, n in nets.items()
                    if (i not in before.networks or n.startswith(name_prefix)) and n not in BUILTIN_NETWORKS]
        for kind, ids in (("container", new_ctrs), ("network", new_nets)):
            if not ids:
                continue
            argv = ["rm", "-f", "-v"] if kind == "container" else ["network", "rm"]
            try:
                proc = self.cli(*argv, *ids, check=False, timeout=timeout)
                if proc.returncode != 0:
                    errors.append(f"{kind} removal: {proc.stderr.strip()}")
            except RuntimeError as e:
                errors.append(f"{kind} removal: {e}")
        return errors

    # ---- stop ---------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """Stop dockerd and undo everything it did to the host. Safe to call twice."""
        if not self._started:
            return  # e.g. start() refused: the paths belong to another session
        bridges = {self.layout.bridge} | ({self.layout.gwbridge} if self.layout.gwbridge else set())
        if self.running():
            bridges |= self._our_bridges()
            self._kill_containers()
        if self._proc is not None:
            pid = self._proc.pid
            if self._proc.poll() is None and signal_if(pid, signal.SIGTERM, str(self.exec_root)):
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(pid, signal.SIGKILL)
                    self._proc.wait(timeout=10)
            self._proc.wait()
            # docker-proxy and friends share dockerd's process group.
            for member in pgid_members(pid):
                signal_if(member, signal.SIGKILL, "")
            self._proc = None
        # containerd (own session) and its shims carry our exec-root in their command lines.
        terminate_matching(str(self.exec_root))
        kill_cgroup_procs(self.layout.cgroup_parent)
        _unmount_under(self.exec_root)
        _unmount_under(self.data_root)
        for br in sorted(bridges):
            subprocess.run(["ip", "link", "del", br], capture_output=True)
        if self._host_before is not None:
            _cleanup_firewall(bridges, self._host_before)
            remove_empty_shared_dirs(self._host_before.absent_dirs)
        rmdir_cgroups(self.layout.cgroup_parent)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        for p in (self.socket, self.pidfile):
            p.unlink(missing_ok=True)
        try:
            self.run_dir.rmdir()
        except OSError:
            pass
        shutil.rmtree(self.data_root, ignore_errors=True)
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self._started = False

    def restart(self, *, crash: bool = False, timeout: float = 30.0) -> None:
        """Stop dockerd (SIGTERM; SIGKILL with CRASH=True) and start it again on the same data
        root, as a host's service manager would. Containers and networks are kept: what
        Docker does with them on the way down and up is what is being tested."""
        assert self._proc is not None and self._started, "restart() needs a running daemon"
        pid = self._proc.pid
        if signal_if(pid, signal.SIGKILL if crash else signal.SIGTERM, str(self.exec_root)):
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
        self._proc.wait(timeout=10)
        if not crash:
            for member in pgid_members(pid):
                signal_if(member, signal.SIGKILL, "")
        # dockerd's own containerd dies with it (parent-death signal) but stays a zombie until
        # this machine's init reaps it; a dockerd started before that waits on it in vain.
        self._wait_containerd_reaped(timeout=15)
        self.socket.unlink(missing_ok=True)
        self._spawn(self._dockerd_binary() or "dockerd")
        try:
            self._wait_ready()
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n--- dockerd log tail ---\n{self.log_tail()}") from None

    def _wait_containerd_reaped(self, timeout: float) -> None:
        try:
            pid = int((self.exec_root / "containerd" / "containerd.pid").read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        # Alive, or a zombie (its command line reads empty); a reused PID is someone else's.
        while Path(f"/proc/{pid}").exists() and (not cmdline(pid) or "containerd" in cmdline(pid)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd's containerd (pid {pid}) still exists {timeout}s after dockerd died")
            time.sleep(0.2)

    def _kill_containers(self) -> None:
        # Each container's own stop timeout is 10 s and busybox `sleep` as PID 1 ignores
        # SIGTERM, so a plain dockerd shutdown would wait 10 s per running container.
        try:
            with contextlib.closing(self.client(timeout=30)) as c:
                for ctr in c.containers.list():
                    try:
                        ctr.kill()
                    except docker.errors.APIError:
                        pass
        except Exception:  # noqa: BLE001 - a hung daemon must not block the host cleanup
            pass

    def _our_bridges(self) -> set[str]:
        """Linux bridge names of this daemon's bridge networks (for the host cleanup)."""
        out: set[str] = set()
        try:
            with contextlib.closing(self.client(timeout=30)) as c:
                for net in c.networks.list():
                    if net.attrs.get("Driver") == "bridge":
                        opts = net.attrs.get("Options") or {}
                        out.add(opts.get("com.docker.network.bridge.name") or f"br-{net.id[:12]}")
        except Exception:  # noqa: BLE001 - a hung daemon must not block the host cleanup
            pass
        out.discard("docker0")  # never ours: --bridge replaces it
        return out

    def _make_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_API_VERSION")}
        env["DOCKER_HOST"] = self.base_url
        env["DOCKER_CONFIG"] = str(self.base_dir / "cli-config")  # keep ~/.docker untouched
        path = env.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        if self._engine_bin is not None:
            path = f"{self._engine_bin}:{path}"
        env["PATH"] = path
        return env


# ---- host state: firewall, bridges, mounts, cgroups ----------------------------------------


@dataclass
class _HostState:
    forward_policy: dict[str, str]  # iptables binary -> FORWARD policy before we started
    nft_before: set[str]  # "family name" of nft tables that existed before
    absent_dirs: set[Path]  # SHARED_DIRS that did not exist
    ip_forward: str  # dockerd turns net.ipv4.ip_forward on and never back off

    @staticmethod
    def capture() -> _HostState:
        pol = {}
        for ipt in ("iptables", "ip6tables"):
            out = _run([ipt, "-S", "FORWARD"])
            pol[ipt] = next((ln.split()[2] for ln in out.splitlines() if ln.startswith("-P FORWARD")), "ACCEPT")
        return _HostState(pol, nft_tables(), {d for d in SHARED_DIRS if not d.exists()}, read_ip_forward())


def _cleanup_firewall(bridges: set[str], before: _HostState | None) -> None:
    """Delete rules naming our bridges; if no dockerd is left (and BEFORE is known), also
    Docker's chains, the FORWARD policy change and the nft tables iptables-nft made for them."""
    others = bool(other_dockerds()) or before is None
    for ipt in ("iptables", "ip6tables"):
        if shutil.which(ipt) is None:
            continue
        for table in ("filter", "nat"):
            rules = _run([ipt, "-t", table, "-S"]).splitlines()
            for rule in reversed(rules):
                if not rule.startswith("-A "):
                    continue
                toks = shlex.split(rule)
                names_ours = any(t in bridges and toks[i - 1] in ("-i", "-o") for i, t in enumerate(toks) if i)
                jumps_docker = "-j" in toks and toks[toks.index("-j") + 1].startswith("DOCKER")
                in_docker_chain = toks[1].startswith("DOCKER")
                if names_ours or (not others and jumps_docker and not in_docker_chain):
                    subprocess.run([ipt, "-t", table, "-D", *toks[1:]], capture_output=True)
            if not others:
                chains = [ln.split()[1] for ln in rules if ln.startswith("-N DOCKER")]
                for ch in chains:
                    subprocess.run([ipt, "-t", table, "-F", ch], capture_output=True)
                for ch in chains:
                    subprocess.run([ipt, "-t", table, "-X", ch], capture_output=True)
        if not others and before is not None:
            subprocess.run([ipt, "-P", "FORWARD", before.forward_policy.get(ipt, "ACCEPT")], capture_output=True)
    if not others and before is not None:
        drop_empty_nft_tables(before.nft_before)
        restore_ip_forward(before.ip_forward)


def _reap_stale_bridges() -> None:
    """Bridges a killed test session left behind (its stop() never ran): Docker-named
    br-<12 hex> bridges addressed in 198.19.0.0/16, the range reserved for the tests. Only
    when no other dockerd runs, so a live daemon's bridge is never touched."""
    if other_dockerds():
        return
    try:
        links = json.loads(_run(["ip", "-j", "-4", "addr", "show", "type", "bridge"]) or "[]")
    except ValueError:
        return
    stale = {ln["ifname"] for ln in links
             if re.fullmatch(r"br-[0-9a-f]{12}", ln.get("ifname", ""))
             and any(ipaddress.ip_address(a["local"]) in TEST_RANGE for a in ln.get("addr_info", []))}
    for br in sorted(stale):
        subprocess.run(["ip", "link", "del", br], capture_output=True)
    if stale:
        _cleanup_firewall(stale, None)


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def read_ip_forward() -> str:
    return IP_FORWARD.read_text().strip()


def restore_ip_forward(value: str) -> None:
    if not other_dockerds() and read_ip_forward() != value:
        IP_FORWARD.write_text(value + "\n")


def remove_empty_shared_dirs(absent_before: set[Path]) -> None:
    """rmdir the SHARED_DIRS that did not exist before, if empty and no dockerd/containerd is left."""
    if other_dockerds() or _other_containerds():
        return
    for d in SHARED_DIRS:  # deepest first
        if d in absent_before:
            try:
                d.rmdir()  # only if empty: never remove someone's plugin socket
            except OSError:
                pass


def _docker_chain_rules() -> dict[tuple[str, str], list[str]]:
    """The rules in Docker's user chains, per (iptables binary, table)."""
    out: dict[tuple[str, str], list[str]] = {}
    for ipt in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            out[(ipt, table)] = [r for r in _run([ipt, "-t", table, "-S"]).splitlines()
                                 if r.startswith("-A DOCKER")]
    return out


def _restore_rules(saved: dict[tuple[str, str], list[str]]) -> None:
    # Missing rules go back at the top of their chain, in their old order (so before the
    # chain's final RETURN, which is still there).
    for (ipt, table), rules in saved.items():
        present = set(_run([ipt, "-t", table, "-S"]).splitlines())
        for rule in reversed([r for r in rules if r not in present]):
            toks = shlex.split(rule)
            subprocess.run([ipt, "-t", table, "-I", toks[1], "1", *toks[2:]], capture_output=True)


def nft_tables() -> set[str]:
    if shutil.which("nft") is None:
        return set()
    return {" ".join(ln.split()[1:3]) for ln in _run(["nft", "list", "tables"]).splitlines() if ln.startswith("table ")}


def drop_empty_nft_tables(existed: set[str]) -> None:
    # iptables-nft leaves "ip filter"/"ip nat" with empty base chains; the host had none.
    for tbl in nft_tables() - existed:
        family, name = tbl.split()
        try:
            data = json.loads(_run(["nft", "-j", "list", "table", family, name]))["nftables"]
        except (ValueError, KeyError):
            continue
        rules = [x for x in data if "rule" in x or "set" in x or "map" in x]
        chains = [x["chain"] for x in data if "chain" in x]
        if not rules and all(c.get("hook") and c.get("policy", "accept") == "accept" for c in chains):
            subprocess.run(["nft", "delete", "table", family, name], capture_output=True)


def _make_bridge(name: str, cidr: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True)  # a leftover of a crashed run
    for argv in (["ip", "link", "add", name, "type", "bridge"], ["ip", "addr", "add", cidr, "dev", name],
                 ["ip", "link", "set", name, "up"]):
        subprocess.run(argv, check=True, capture_output=True)


def _unmount_under(root: Path) -> None:
    prefix = str(root).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == str(root) or mp.startswith(prefix):
                points.append(mp)
    for mp in sorted(points, key=len, reverse=True):  # children before parents
        subprocess.run(["umount", "-l", mp], capture_output=True)


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def die_with_parent() -> None:
    # If the test process is killed outright (no fixture teardown), dockerd is told to stop too.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# ---- process helpers (also used by plugin.py) ----------------------------------------------
# They identify processes precisely (PID + /proc/PID/cmdline, process group, private path in
# the command line, private cgroup) and re-read the command line before signalling.


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    """PID exists and is not a zombie."""
    f = _stat_fields(pid)
    return bool(f) and f[0] not in ("Z", "X")


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pgid_members(pgid: int) -> list[int]:
    return [p for p in _pids() if (f := _stat_fields(p)) and int(f[2]) == pgid and f[0] not in ("Z", "X")]


def pids_with_cmdline_containing(needle: str) -> list[int]:
    me = os.getpid()
    return [p for p in _pids() if p != me and needle in cmdline(p) and alive(p)]


def other_dockerds(exclude: int | None = None) -> list[int]:
    """PIDs of dockerd processes other than EXCLUDE (e.g. a system dockerd)."""
    return [p for p in _pids() if p != exclude and _comm(p) == "dockerd" and alive(p)]


def _other_containerds() -> list[int]:
    """containerd processes not started by any test dockerd (those were ended already)."""
    return [p for p in _pids() if _comm(p) == "containerd" and alive(p)]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def signal_if(pid: int, sig: int, expect_in_cmdline: str) -> bool:
    """Signal PID only if it is alive and its command line still contains EXPECT_IN_CMDLINE."""
    if not alive(pid) or expect_in_cmdline not in cmdline(pid):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def terminate_matching(needle: str, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process whose command line contains NEEDLE."""
    pids = pids_with_cmdline_containing(needle)
    for pid in pids:
        signal_if(pid, signal.SIGTERM, needle)
    for pid in wait_gone(pids, grace):
        signal_if(pid, signal.SIGKILL, needle)
    wait_gone(pids, 5.0)
    return pids


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError as e:
        return f"<no log at {path}: {e}>"
    return "\n".join(data.splitlines()[-lines:])

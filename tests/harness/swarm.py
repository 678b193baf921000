"""A Docker Swarm on the multi-host bed, with pynet installed as a managed plugin everywhere.

    with SwarmBed(tmp_path, plugin_dir) as swarm:    # h1 manager, h2 and h3 workers
        swarm.manager.docker("network", "create", "-d", "pynet:latest", ...)
        swarm.promote("h2", "h3")                    # the three-manager variant

On top of tests/harness/multihost.py (own network, mount and UTS namespaces per host, a
dockerd and a Consul server each, no legacy `pynet serve`): every dockerd gets the plugin
from `plugin_dir` (config.json + rootfs, as scripts/build-plugin.sh writes it) with
`docker plugin create`, set to `--store consul` on the host's Consul agent, its own host id,
data-path address and state directory (the `state` mount's source), then enabled; h1 inits
the swarm on its underlay address and the others join as workers.

With plugin_dir=None the hosts keep the bed's legacy `pynet serve` instead (driver `pynet`,
local scope: its networks are node-local networks beside the swarm's): for putting pynet's
overlay next to Docker's own overlay on one swarm (bench/overlay_vs_docker.py).

dev_plugin_dir() writes a plugin directory whose rootfs is nearly empty and bind-mounts this
machine's /usr, Python and the source tree read-only instead: the code under test, built in
a second, for iterating on the driver (PYNET_SWARM_PLUGIN=dev in tests/multihost/test_swarm.py).

Down: services removed, every node leaves the swarm (a swarm-mode dockerd must leave before
it stops), the plugins are disabled and removed, then the bed goes as usual.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from tests.harness.multihost import REPO_ROOT, BedError, Host, MultiHost

PLUGIN = "pynet:latest"
SWARM_PORT = 2377


def dev_plugin_dir(out: Path) -> Path:
    """A plugin directory running this checkout with this machine's Python (see above)."""
    config = json.loads((REPO_ROOT / "plugin" / "config.json").read_text())
    python = Path(os.path.realpath(sys.executable))
    prefix = Path(sys.prefix)
    # As plugin/entrypoint.sh: Docker's default spec mounts /sys and /proc/sys read-only.
    config["entrypoint"] = ["/bin/sh", "-c", "mount -o remount,bind,rw /proc/sys; mount -o remount,rw /sys; "
                            f"exec {python} -m pynet.cli serve"]
    config["env"] = [e for e in config.get("env", []) if e["name"] not in ("PYTHONPATH", "PATH")] + [
        {"name": "PYTHONPATH", "description": "the checkout under test", "value": str(REPO_ROOT)},
        {"name": "PATH", "description": "iptables and nft", "value": "/usr/sbin:/usr/bin:/sbin:/bin"}]
    binds = [Path("/usr"), prefix, REPO_ROOT]
    config["mounts"] = [m for m in config.get("mounts", []) if m.get("destination") not in map(str, binds)] + [
        {"name": f"dev{i}", "description": "dev plugin: from the machine", "source": str(p),
         "destination": str(p), "type": "bind", "options": ["rbind", "ro"]} for i, p in enumerate(binds)]
    if out.exists():
        shutil.rmtree(out)
    rootfs = out / "rootfs"
    for d in ("usr", "etc", "tmp", "run/docker/plugins", "var/lib/pynet", "proc", "sys", "dev",
              str(prefix).lstrip("/"), str(REPO_ROOT).lstrip("/")):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    for link in ("bin", "sbin", "lib", "lib64"):
        os.symlink(f"usr/{link}", rootfs / link)
    shutil.copy("/etc/ld.so.cache", rootfs / "etc" / "ld.so.cache")
    shutil.copytree("/etc/alternatives", rootfs / "etc" / "alternatives", symlinks=True)  # iptables
    for f in ("hosts", "resolv.conf"):
        (rootfs / "etc" / f).touch()
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def built_plugin_dir(out: Path) -> Path:
    """The plugin directory scripts/build-plugin.sh writes, run as a user runs it (~10 s with
    its cache warm, about a minute cold)."""
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build-plugin.sh"), "-o", str(out),
                           "--no-create", PLUGIN], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise BedError(f"scripts/build-plugin.sh failed:\n{proc.stderr[-3000:]}")
    return out


class SwarmBed:
    """`managers`: how many hosts join as managers (h1 always is one)."""

    def __init__(self, base_dir: Path, plugin_dir: Path | None, *, name: str = "pnsw",
                 underlay: str = "198.18.9.0/24", hosts: int = 3, managers: int = 1,
                 plugin_env: dict[str, str] | None = None,
                 dockerd_args: tuple[str, ...] = (), docker_iptables: tuple[str, ...] = (),
                 engine: str | None = None, plugin_args: tuple[str, ...] = (),
                 plugin_args_for: Callable[[Host], tuple[str, ...]] | None = None,
                 prepare: Callable[[Host], None] | None = None) -> None:
        """`plugin_args`, `plugin_args_for`: the legacy plugin's (plugin_dir None), as
        MultiHost takes them. `prepare(host)`: run on every host before the swarm forms
        (e.g. a docker_gwbridge of one's own, which the swarm would otherwise make)."""
        if plugin_dir is not None and (plugin_args or plugin_args_for):
            raise ValueError("plugin_args are the legacy plugin's; the managed one takes plugin_env")
        self.bed = MultiHost(base_dir, hosts=hosts, name=name, underlay=underlay,
                             legacy_plugin=plugin_dir is None, dockerd_args=dockerd_args,
                             docker_iptables=docker_iptables, engine=engine, plugin_args=plugin_args,
                             plugin_args_for=plugin_args_for)
        self.prepare = prepare
        self.plugin_dir = Path(plugin_dir) if plugin_dir is not None else None
        self.plugin_env = dict(plugin_env or {})
        self.managers = managers
        self.timings: dict[str, float] = {}
        self._up = False

    # --- lookup ---------------------------------------------------------------------
    @property
    def hosts(self) -> list[Host]:
        return self.bed.hosts

    def __getitem__(self, name: str) -> Host:
        return self.bed[name]

    @property
    def manager(self) -> Host:
        """A host whose dockerd is the swarm's leader (asked of every manager that answers)."""
        for h in self.hosts:
            if not h.dockerd.running():
                continue
            out = h.docker("node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}", check=False,
                           timeout=20)
            if out.returncode == 0:
                for line in out.stdout.splitlines():
                    name, _, status = line.partition(" ")
                    if status.strip() == "Leader":
                        return self[name]
        raise BedError("no swarm manager answers with a leader")

    # --- up -------------------------------------------------------------------------
    def __enter__(self) -> SwarmBed:
        return self.up()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.down()

    def up(self) -> SwarmBed:
        started = time.monotonic()
        self.bed.up()
        self._up = True
        try:
            self.timings["hosts"] = time.monotonic() - started
            if self.plugin_dir is not None:
                mark = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(len(self.hosts)) as pool:
                    list(pool.map(self.install_plugin, self.hosts))
                self.timings["plugins"] = time.monotonic() - mark
            if self.prepare is not None:
                for h in self.hosts:
                    self.prepare(h)
            mark = time.monotonic()
            self._form_swarm()
            self.timings["swarm"] = time.monotonic() - mark
        except BaseException as exc:
            report = self._report()
            self.down()
            raise BedError(f"swarm bed failed to come up: {exc}\n{report}") from exc
        self.timings["total"] = time.monotonic() - started
        return self

    def plugin_settings(self, h: Host) -> dict[str, str]:
        """The `docker plugin set` of host h: Consul, its own names and mount sources (every
        host of the bed shares the machine's /var/lib and /etc; Docker creates no source)."""
        assert self.plugin_dir is not None, "the legacy plugin takes the bed's own settings"
        state, certs = h.dir / "pynet-state", h.dir / "pynet-certs"
        state.mkdir(exist_ok=True)
        certs.mkdir(exist_ok=True)
        mounts = {m["name"] for m in json.loads((self.plugin_dir / "config.json").read_text()).get("mounts", [])}
        sources = {"state": state, "certs": certs, "docker-socket": h.docker_socket}
        return {"PYNET_STORE": "consul", "PYNET_CONSUL_ADDR": "127.0.0.1:8500",
                "PYNET_HOST_ID": h.name, "PYNET_DATA_PATH_ADDR": h.address,
                "PYNET_SCOPE": "global", "PYNET_LOG_LEVEL": "info",
                **{f"{name}.source": str(path) for name, path in sources.items() if name in mounts},
                **self.plugin_env}

    def install_plugin(self, h: Host) -> None:
        """docker plugin create / set / enable on the host's dockerd."""
        h.docker("plugin", "create", PLUGIN, str(self.plugin_dir), timeout=300)
        h.docker("plugin", "set", PLUGIN,
                 *[f"{k}={v}" for k, v in self.plugin_settings(h).items()], timeout=60)
        h.docker("plugin", "enable", PLUGIN, timeout=60)

    def _form_swarm(self) -> None:
        first = self.hosts[0]
        first.docker("swarm", "init", "--advertise-addr", first.address,
                     "--listen-addr", f"{first.address}:{SWARM_PORT}", timeout=60)
        tokens = {role: first.docker("swarm", "join-token", "-q", role).stdout.strip()
                  for role in ("worker", "manager")}
        for i, h in enumerate(self.hosts[1:], start=1):
            role = "manager" if i < self.managers else "worker"
            h.docker("swarm", "join", "--token", tokens[role], "--advertise-addr", h.address,
                     "--listen-addr", f"{h.address}:{SWARM_PORT}", f"{first.address}:{SWARM_PORT}",
                     timeout=60)
        self.wait_nodes_ready()

    def wait_nodes_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = self.manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}",
                                      check=False, timeout=20)
            states = [line.split() for line in out.stdout.splitlines()]
            if out.returncode == 0 and len(states) == len(self.hosts) and all(s[1] == "Ready" for s in states):
                return
            if time.monotonic() > deadline:
                late = [self[s[0]] for s in states if len(s) > 1 and s[1] != "Ready" and s[0] in {h.name for h in self.hosts}]
                logs = "\n".join(f"--- {h}: dockerd's Swarm lines ---\n{self.swarm_log(h)}"
                                  for h in [*late, self.hosts[0]])
                raise BedError(f"swarm nodes not ready after {timeout}s: {out.stdout or out.stderr}\n{logs}")
            time.sleep(0.5)

    def promote(self, *names: str) -> None:
        self.manager.docker("node", "promote", *names)
        deadline = time.monotonic() + 60
        while True:
            out = self.manager.docker("node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}")
            status = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
            if all(status.get(n, "").strip() in ("Reachable", "Leader") for n in names):
                return
            if time.monotonic() > deadline:
                raise BedError(f"promoting {names}: {out.stdout}")
            time.sleep(0.5)

    def swarm_log(self, h: Host, lines: int = 30) -> str:
        """dockerd's own lines about the node, its agent and sessions (a post-mortem of a
        node that stays Down), without the plugin's output."""
        text = h.dockerd.log_path.read_text(errors="replace").splitlines()
        keep = [line for line in text if "plugin=" not in line and
                any(k in line for k in ("module=node", "session", "dispatcher", "=====", "level=error"))]
        return "\n".join(keep[-lines:])

    # --- plugin ---------------------------------------------------------------------
    def plugin_log(self, h: Host, lines: int = 60) -> str:
        """The plugin's output: dockerd logs it with plugin=<id>."""
        text = h.dockerd.log_path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if "plugin=" in line][-lines:])

    # --- down -----------------------------------------------------------------------
    def down(self) -> list[str]:
        if not self._up:
            return []
        for h in self.hosts:
            with contextlib.suppress(BedError):
                self.bed.heal(h)
        for h in self.hosts:
            if not h.dockerd.running():
                continue
            with contextlib.suppress(BedError):
                ids = h.docker("service", "ls", "-q", check=False, timeout=20).stdout.split()
                if ids:
                    h.docker("service", "rm", *ids, check=False, timeout=60)
        for h in reversed(self.hosts):  # workers first, the first manager last
            if h.dockerd.running():
                with contextlib.suppress(BedError):
                    h.docker("swarm", "leave", "--force", check=False, timeout=60)
        for h in self.hosts:
            if h.dockerd.running():
                with contextlib.suppress(BedError):
                    h.docker("rm", "-f", *h.docker("ps", "-aq", check=False).stdout.split(),
                             check=False, timeout=60)
                    if self.plugin_dir is not None:
                        h.docker("plugin", "disable", "-f", PLUGIN, check=False, timeout=60)
                        h.docker("plugin", "rm", "-f", PLUGIN, check=False, timeout=60)
        self._up = False
        return self.bed.down()

    def _report(self) -> str:
        parts = []
        for h in self.hosts:
            if "dockerd" in h.procs:
                parts.append(f"--- {h} dockerd ---\n{h.dockerd.log_tail(25)}")
        return "\n".join(parts)

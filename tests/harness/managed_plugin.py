"""pynet's managed (v2) plugin for the tests: built with scripts/build-plugin.sh, installed on
a test dockerd.

* build_plugin(out_dir) -> Path: runs the build script (no dockerd needed) and returns the
  plugin directory (config.json + rootfs/). The script's cache (PYNET_BUILD_CACHE, default
  /var/cache/pynet-build) makes repeat builds ~10 s; a clean machine builds cold (~1 min).
  The session fixture `managed_plugin_dir` (tests/conftest.py) builds once per session for
  every tier that needs it.
* ManagedPlugin: one plugin NAME on one DockerDaemon: install (create, set, enable),
  disable/enable, its process, its log lines, remove.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.harness.dockerd import DockerDaemon, alive, cmdline

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-plugin.sh"
ENTRYPOINT = "/opt/pynet/bin/pynet serve"
# Automatic subnets from the benchmark range, like every address the suites use.
TEST_POOLS = "base=198.19.224.0/19,size=24"


class BuildError(RuntimeError):
    pass


def build_plugin(out_dir: Path, *, name: str = "pynet:latest", docker_host: str | None = None,
                 timeout: float = 900) -> Path:
    """Run scripts/build-plugin.sh -o OUT_DIR; with DOCKER_HOST also create NAME there."""
    argv = ["bash", str(BUILD_SCRIPT), "-o", str(out_dir)]
    env = dict(os.environ)
    if docker_host is None:
        argv.append("--no-create")
    else:
        env["DOCKER_HOST"] = docker_host
    argv.append(name)
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed (exit {proc.returncode}) after "
                         f"{time.monotonic() - started:.0f} s:\n{proc.stderr[-4000:]}")
    if not (out_dir / "config.json").is_file() or not (out_dir / "rootfs" / "opt" / "pynet").is_dir():
        raise BuildError(f"{out_dir} lacks config.json or rootfs/opt/pynet after the build")
    return out_dir


def second_plugin_dir(plugin_dir: Path, out_dir: Path, description: str) -> Path:
    """A copy of PLUGIN_DIR (hard-linked rootfs) whose config.json has another description:
    a distinguishable plugin to upgrade to. Its rootfs differs by one file: dockerd 20.10
    refuses to create a plugin whose rootfs layer it already holds ("content sha256:...
    already exists")."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(plugin_dir / "rootfs"), str(out_dir / "rootfs")], check=True)
    (out_dir / "rootfs" / "etc" / "pynet-plugin-build").write_text(description + "\n")
    text = (plugin_dir / "config.json").read_text()
    text = re.sub(r'"description": "[^"]*"', f'"description": "{description}"', text, count=1)
    (out_dir / "config.json").write_text(text)
    return out_dir


class ManagedPlugin:
    """NAME installed from a plugin directory on DOCKERD, the leak check pointed at DOCKERD's
    own socket. Nothing is made on the host first: the store is in the plugin's propagated
    mount, whose source Docker creates (state_dir)."""

    def __init__(self, dockerd: DockerDaemon, plugin_dir: Path, *,
                 name: str = "pynet:latest", settings: dict[str, str] | None = None) -> None:
        self.dockerd = dockerd
        self.plugin_dir = plugin_dir
        self.name = name
        self.settings = {"PYNET_DEFAULT_ADDRESS_POOLS": TEST_POOLS, **(settings or {})}

    # ---- lifecycle ---------------------------------------------------------------------------

    def install(self) -> ManagedPlugin:
        self.dockerd.cli("plugin", "create", self.name, str(self.plugin_dir), timeout=300)
        self.set(*self.mount_settings(), *(f"{k}={v}" for k, v in self.settings.items()))
        self.enable()
        return self

    def mount_settings(self) -> list[str]:
        # The test dockerd's socket is not at the default /var/run/docker.sock.
        return [f"docker-socket.source={self.dockerd.socket}"]

    @property
    def state_dir(self) -> Path:
        """The store's directory on the host: the propagated mount's source, which dockerd
        makes under its data root (plugins/<id>/propagated-mount)."""
        return self.dockerd.data_root / "plugins" / self.id / "propagated-mount"

    def set(self, *assignments: str) -> None:
        self.dockerd.cli("plugin", "set", self.name, *assignments)

    def enable(self) -> float:
        started = time.monotonic()
        self.dockerd.cli("plugin", "enable", self.name, timeout=60)
        return time.monotonic() - started

    def disable(self, force: bool = False) -> float:
        """Seconds `docker plugin disable` took (Docker SIGKILLs a plugin after 10 s)."""
        started = time.monotonic()
        self.dockerd.cli("plugin", "disable", *(["-f"] if force else []), self.name, timeout=60)
        return time.monotonic() - started

    def exists(self) -> bool:
        return self.dockerd.cli("plugin", "inspect", self.name, check=False).returncode == 0

    def enabled(self) -> bool:
        return self.inspect("{{.Enabled}}") == "true"

    def remove(self) -> None:
        """Disable (forcibly) and remove, if installed."""
        if self.exists():
            self.dockerd.cli("plugin", "rm", "-f", self.name, timeout=60)

    def mount_source(self, mount: str, where: str = "Config") -> str:
        """A mount's source in the plugin's Config (what dockerd mounts) or its Settings
        (what `docker plugin inspect` lists under Settings)."""
        return self.inspect(f'{{{{range .{where}.Mounts}}}}{{{{if eq .Name "{mount}"}}}}{{{{.Source}}}}'
                            '{{end}}{{end}}')

    def inspect(self, template: str) -> str:
        return self.dockerd.cli("plugin", "inspect", "-f", template, self.name).stdout.strip()

    @property
    def id(self) -> str:
        return self.inspect("{{.ID}}")

    # ---- its process and log -----------------------------------------------------------------

    def pids(self) -> list[int]:
        """PIDs of the plugin's `pynet serve` processes (master first): their root is this
        plugin's rootfs under the dockerd's data root."""
        marker = os.stat(self.dockerd.data_root / "plugins" / self.id / "rootfs" / "opt" / "pynet")
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or not alive(int(entry)) or ENTRYPOINT not in cmdline(int(entry)):
                continue
            try:
                seen = os.stat(f"/proc/{entry}/root/opt/pynet")
            except OSError:
                continue
            if (seen.st_dev, seen.st_ino) == (marker.st_dev, marker.st_ino):
                found.append(int(entry))
        return sorted(found)

    def log_lines(self) -> list[str]:
        """What the plugin wrote to stdout/stderr (dockerd logs it with plugin=<id>)."""
        tag = f"plugin={self.id}"
        try:
            text = self.dockerd.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if tag in line]

    def wait_log(self, pattern: str, timeout: float = 30.0, after: int = 0) -> str:
        """The first plugin log line (from index AFTER on) matching PATTERN, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines()[after:]:
                if re.search(pattern, line):
                    return line
            if time.monotonic() > deadline:
                tail = "\n".join(self.log_lines()[-20:])
                raise AssertionError(f"no plugin log line matching {pattern!r} within {timeout:.0f} s; "
                                     f"last lines:\n{tail}")
            time.sleep(0.5)


def pynet_links() -> set[str]:
    """Links in the root namespace named like pynet's (bridges, veth ends)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {n for n in names if n.startswith(("pn-", "pnv", "pnc", "pnp"))}

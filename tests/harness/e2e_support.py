"""What several single-host e2e modules share: naming, running and inspecting containers on
pynet networks, and reading the addresses the plugin's store holds.

The e2e modules never import each other; whatever two of them need lives here.
"""
from __future__ import annotations

import secrets
import subprocess

from pynet_core.store import keys
from tests.harness.dockerd import DockerDaemon

DRIVER = ["-d", "pynet", "--ipam-driver", "pynet"]


def name(kind: str) -> str:
    """A Docker object name the suite's cleanup recognises (pynet-t-*)."""
    return f"pynet-t-{kind}-{secrets.token_hex(3)}"


def run(dockerd: DockerDaemon, image: str, net: str, *extra: str, ctr: str | None = None) -> str:
    ctr = ctr or name("c")
    dockerd.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, *extra, image, "sleep", "600")
    return ctr


def ip_of(dockerd: DockerDaemon, ctr: str) -> str:
    return dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                       ctr).stdout.strip()


def ping(dockerd: DockerDaemon, ctr: str, target: str) -> subprocess.CompletedProcess:
    return dockerd.cli("exec", ctr, "ping", "-c", "2", "-W", "2", target, check=False)


def claimed(plugin, subnet: str) -> set[str]:
    """The addresses pynet's store holds for SUBNET."""
    return {keys.claimed_address(e.key) for e in plugin.stored(keys.ipam_addrs("LocalDefault", subnet))}

"""dockerd restarts (cleanly, and after a crash) with containers on pynet networks.

Afterwards no address is duplicated or leaked, and the kernel matches what pynet recorded:
one endpoint record and one veth per container that runs, and nothing for those that do not.
"""
from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from pynet_core.store import keys
from tests.harness.e2e_support import DRIVER, claimed, ip_of, name, ping, run

GATEWAY_OF = {"198.19.220.0/28": "198.19.220.1", "198.19.221.0/28": "198.19.221.1"}


def recorded(plugin, subnet: str, nid: str) -> tuple[set[str], set[str]]:
    """(claimed addresses in SUBNET, host-side veth names of the network's endpoints)."""
    endpoints = plugin.stored(keys.endpoints(socket.gethostname(), nid))  # the plugin's default host id
    return claimed(plugin, subnet), {json.loads(e.value)["host_if"] for e in endpoints}


def attached_to(bridge: str) -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True,
                         check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def wait_running(dockerd, ctr: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while dockerd.cli("inspect", "-f", "{{.State.Running}}", ctr).stdout.strip() != "true":
        assert time.monotonic() < deadline, f"{ctr} did not come back after the dockerd restart"
        time.sleep(0.5)


@pytest.mark.parametrize("crash, subnet", [(False, "198.19.220.0/28"), (True, "198.19.221.0/28")],
                         ids=["sigterm", "sigkill"])
def test_dockerd_restart_leaves_no_duplicate_no_leak_and_a_matching_kernel(
        dockerd, busybox_image, plugin, crash, subnet):
    gateway = GATEWAY_OF[subnet]
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", subnet, "--gateway", gateway, net)
    nid = dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    kept = run(dockerd, busybox_image, net, "--restart", "always")
    gone = run(dockerd, busybox_image, net)
    before, _ = recorded(plugin, subnet, nid)
    assert before == {gateway, ip_of(dockerd, kept), ip_of(dockerd, gone)}

    dockerd.restart(crash=crash)
    wait_running(dockerd, kept)
    assert dockerd.cli("inspect", "-f", "{{.State.Running}}", gone).stdout.strip() == "false"

    addresses, veths = recorded(plugin, subnet, nid)
    assert addresses == {gateway, ip_of(dockerd, kept)}, "an address leaked or was lost"
    assert len(veths) == 1 and attached_to("pn-" + nid[:12]) == veths, "kernel and records differ"
    assert ping(dockerd, kept, gateway).returncode == 0

    # The stopped container starts again with an address of its own.
    dockerd.cli("start", gone)
    assert ip_of(dockerd, gone) != ip_of(dockerd, kept)
    res = ping(dockerd, gone, ip_of(dockerd, kept))
    assert res.returncode == 0, res.stdout + res.stderr
    assert recorded(plugin, subnet, nid)[0] == {gateway, ip_of(dockerd, kept), ip_of(dockerd, gone)}

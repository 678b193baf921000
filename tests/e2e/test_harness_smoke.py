"""The harness itself works: private dockerd, busybox image, container networking, cleanup.

None of these needs the pynet plugin.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Callable

from tests.harness.dockerd import DockerDaemon, Snapshot, other_dockerds


def _name(kind: str) -> str:
    return f"pynet-t-{kind}-{secrets.token_hex(3)}"


def test_dockerd_is_private_and_ready(dockerd: DockerDaemon) -> None:
    with contextlib.closing(dockerd.client()) as c:
        info = c.info()
        nets = {n.name: n for n in c.networks.list()}
    assert info["DockerRootDir"] == str(dockerd.data_root)
    assert info["DefaultAddressPools"] == [{"Base": "198.19.0.0/17", "Size": 24}]
    # The default bridge and docker_gwbridge are ours, in the benchmark range.
    assert nets["bridge"].attrs["IPAM"]["Config"][0]["Subnet"] == "198.19.200.0/24"
    assert nets["docker_gwbridge"].attrs["Options"]["com.docker.network.bridge.name"] == "pnt-gwbridge"
    assert dockerd.cli("version", "--format", "{{.Server.APIVersion}}").stdout.strip()
    # As on a fresh machine: Docker's FORWARD policy is DROP, so the plugin must cope. Checked
    # always: the harness sets DROP itself unless another dockerd owns the policy, and the
    # suite proves nothing about DROP if that other daemon left it ACCEPT.
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    others = other_dockerds(exclude=dockerd.pid)
    why = (f"; another dockerd (pids {others}) runs on this machine and the harness leaves the policy to it"
           if others else "")
    assert forward.startswith("-P FORWARD DROP"), (
        f"the FORWARD policy is not DROP{why}, so the e2e tests would not show that pynet copes "
        f"with Docker's DROP:\n{forward}")


def test_busybox_echo(docker_cli: Callable[..., subprocess.CompletedProcess[str]], busybox_image: str) -> None:
    out = docker_cli("run", "--rm", "--pull", "never", busybox_image, "echo", "hi")
    assert out.stdout == "hi\n"


def test_two_containers_ping_on_internal_bridge(dockerd: DockerDaemon, busybox_image: str) -> None:
    net, a, b = _name("int"), _name("a"), _name("b")
    dockerd.cli("network", "create", "--internal", net)
    for ctr in (a, b):
        dockerd.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, busybox_image, "sleep", "300")
    ip_b = dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", b).stdout.strip()
    assert ip_b.startswith("198.19."), ip_b  # from --default-address-pool

    by_ip = dockerd.cli("exec", a, "ping", "-c", "3", "-W", "2", ip_b, check=False)
    assert by_ip.returncode == 0, by_ip.stdout + by_ip.stderr
    assert " 0% packet loss" in by_ip.stdout
    by_name = dockerd.cli("exec", b, "ping", "-c", "1", "-W", "2", a, check=False)  # Docker's embedded DNS
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr

    # --internal still gives a default route via the bridge (Docker 20.10), but Docker's
    # isolation rules drop anything that would leave the network's subnet.
    net_id = dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    rules = subprocess.run(["iptables", "-S", "DOCKER-ISOLATION-STAGE-1"], capture_output=True, text=True).stdout
    assert "! -d 198.19." in rules and f"-i br-{net_id[:12]} -j DROP" in rules, rules


def test_remove_since_removes_what_a_test_made(dockerd: DockerDaemon, busybox_image: str) -> None:
    before: Snapshot = dockerd.snapshot()
    net = f"unprefixed-{secrets.token_hex(3)}"  # caught by the snapshot diff, not the name
    dockerd.cli("network", "create", "--internal", net)
    dockerd.cli("run", "-d", "--pull", "never", "--network", net, busybox_image, "sleep", "300")
    assert dockerd.remove_since(before) == []
    after = dockerd.snapshot()
    assert after.containers == before.containers
    assert after.networks == before.networks


def test_make_netns(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    assert name.startswith("pnt-")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert name in listed
    lo = subprocess.run(["ip", "netns", "exec", name, "ip", "-br", "link"], capture_output=True, text=True, check=True)
    assert lo.stdout.startswith("lo")

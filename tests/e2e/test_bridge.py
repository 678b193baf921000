"""pynet bridge networks driven by the real dockerd: the foundation's promises, end to end."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.e2e_support import DRIVER, ip_of, name, ping, run


def pynet_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": pn" in line}


def test_two_containers_talk_by_address_and_name(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.210.0/24", net)
    a, b = run(dockerd, busybox_image, net), run(dockerd, busybox_image, net)
    ip_a, ip_b = ip_of(dockerd, a), ip_of(dockerd, b)
    subnet = ipaddress.ip_network("198.19.210.0/24")
    assert ipaddress.ip_address(ip_a) in subnet and ipaddress.ip_address(ip_b) in subnet
    assert ip_a != ip_b and "198.19.210.1" not in (ip_a, ip_b)  # .1 is the gateway
    by_ip = ping(dockerd, a, ip_b)
    assert by_ip.returncode == 0, by_ip.stdout + by_ip.stderr
    by_name = ping(dockerd, b, a)
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr
    # The container's default route goes through pynet's gateway on the bridge.
    route = dockerd.cli("exec", a, "ip", "route").stdout
    assert "default via 198.19.210.1 dev eth0" in route


def test_inspect_shows_pynet_ipam_and_the_bridge_is_real(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.211.0/24",
                "--gateway", "198.19.211.254", "-o", "mtu=1400", net)
    info = json.loads(dockerd.cli("network", "inspect", net).stdout)[0]
    assert info["Driver"] == "pynet" and info["IPAM"]["Driver"] == "pynet"
    assert info["IPAM"]["Config"] == [{"Subnet": "198.19.211.0/24", "Gateway": "198.19.211.254"}]
    bridge = "pn-" + info["Id"][:12]
    assert bridge in pynet_links()
    ctr = run(dockerd, busybox_image, net)
    eth0 = dockerd.cli("exec", ctr, "ip", "link", "show", "eth0").stdout
    assert "mtu 1400" in eth0
    assert "default via 198.19.211.254" in dockerd.cli("exec", ctr, "ip", "route").stdout


def test_static_ip_is_honoured_and_taken_ip_refused(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.212.0/24", net)
    ctr = run(dockerd, busybox_image, net, "--ip", "198.19.212.77")
    assert ip_of(dockerd, ctr) == "198.19.212.77"
    clash = dockerd.cli("run", "-d", "--pull", "never", "--name", name("c"), "--network", net,
                        "--ip", "198.19.212.77", busybox_image, "sleep", "60", check=False)
    assert clash.returncode != 0 and "198.19.212.77 is already in use" in clash.stderr


def test_network_rm_removes_bridge_and_frees_the_pool(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.213.0/24", net)
    nid = dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    ctr = run(dockerd, busybox_image, net)
    host_links_with_ctr = pynet_links()
    assert "pn-" + nid[:12] in host_links_with_ctr
    dockerd.cli("rm", "-f", ctr)
    dockerd.cli("network", "rm", net)
    assert not {l for l in pynet_links() if l.startswith("pn-" + nid[:12])}
    assert not (pynet_links() - host_links_with_ctr)
    # The subnet is free again: the same network can be made once more.
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.213.0/24", name("again"))


def test_automatic_subnet_when_none_given(dockerd, busybox_image, plugin):
    a, b = name("auto"), name("auto")
    dockerd.cli("network", "create", *DRIVER, a)
    dockerd.cli("network", "create", *DRIVER, b)
    sa = dockerd.cli("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", a).stdout.strip()
    sb = dockerd.cli("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", b).stdout.strip()
    assert sa and sb and not ipaddress.ip_network(sa).overlaps(ipaddress.ip_network(sb))
    ctr = run(dockerd, busybox_image, a)
    assert ipaddress.ip_address(ip_of(dockerd, ctr)) in ipaddress.ip_network(sa)


def test_bad_input_is_refused_clearly_and_changes_nothing(dockerd, plugin):
    before = pynet_links()
    bad_opt = dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.214.0/24",
                          "-o", "colour=blue", name("bad"), check=False)
    assert bad_opt.returncode != 0 and "unknown option 'colour'" in bad_opt.stderr
    bad_mtu = dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.214.0/24",
                          "-o", "mtu=huge", name("bad"), check=False)
    assert bad_mtu.returncode != 0 and "'huge'" in bad_mtu.stderr and "whole number" in bad_mtu.stderr
    assert pynet_links() == before
    # IPAM was rolled back by Docker: the subnet is still free.
    good = name("good")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.214.0/24", good)
    overlap = dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.214.128/25",
                          name("bad"), check=False)
    assert overlap.returncode != 0 and "overlaps pool 198.19.214.0/24" in overlap.stderr
    assert pynet_links() - before == {"pn-" + dockerd.cli(
        "network", "inspect", "-f", "{{.Id}}", good).stdout.strip()[:12]}


@pytest.mark.parametrize("body, fragment", [
    (b'{"NetworkID": "abc", ', "not valid JSON"),
    ({"NetworkID": 42}, "NetworkID must be"),
    ({"NetworkID": "a" * 64, "IPv4Data": "nope"}, "IPv4Data must be a list"),
    ({"NetworkID": "a" * 64, "Options": {"com.docker.network.generic": {"mtu": 9000}}}, "string"),
])
def test_malformed_calls_get_json_errors(plugin, body, fragment):
    before = pynet_links()
    status, answer = plugin.call("/NetworkDriver.CreateNetwork", body)
    assert status == 400 and fragment in answer["Err"], answer
    assert pynet_links() == before


def test_unimplemented_method_is_404_json(plugin):
    status, answer = plugin.call("/NetworkDriver.GwAllocCheck", {"NetworkID": "a" * 64})
    assert status == 404 and "GwAllocCheck" in answer["Err"]


def test_plugin_killed_while_containers_run(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.215.0/29", net)
    first = [run(dockerd, busybox_image, net) for _ in range(2)]
    plugin.kill9()
    plugin.start()
    later = [run(dockerd, busybox_image, net) for _ in range(3)]
    addresses = [ip_of(dockerd, c) for c in first + later]
    # a /29 has 5 container addresses next to the gateway: all handed out, none twice
    assert len(set(addresses)) == 5, addresses
    full = dockerd.cli("run", "-d", "--pull", "never", "--name", name("c"), "--network", net,
                       busybox_image, "sleep", "60", check=False)
    assert full.returncode != 0 and "no free address" in full.stderr
    res = ping(dockerd, later[-1], addresses[0])
    assert res.returncode == 0, res.stdout + res.stderr


def test_restart_recreates_a_deleted_bridge(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", "198.19.216.0/24", net)
    a, b = run(dockerd, busybox_image, net), run(dockerd, busybox_image, net)
    nid = dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    plugin.stop()
    subprocess.run(["ip", "link", "del", "pn-" + nid[:12]], check=True)
    plugin.start()
    res = ping(dockerd, a, ip_of(dockerd, b))
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_project(dockerd, busybox_image, plugin, tmp_path: Path):
    project = name("compose").replace("-", "")
    (tmp_path / "docker-compose.yml").write_text(f"""
version: "2.4"
services:
  web:
    image: {busybox_image}
    command: ["httpd", "-f", "-p", "8080", "-h", "/"]
    networks: [appnet]
  client:
    image: {busybox_image}
    command: ["sleep", "600"]
    networks: [appnet]
networks:
  appnet:
    driver: pynet
    driver_opts:
      mtu: "1420"
    ipam:
      driver: pynet
      config:
        - subnet: 198.19.217.0/24
""")
    env = {**dockerd.env, "COMPOSE_PROJECT_NAME": project}
    compose = ["docker-compose", "-f", str(tmp_path / "docker-compose.yml")]
    try:
        up = subprocess.run([*compose, "up", "-d"], env=env, capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + 20
        while True:
            got = subprocess.run([*compose, "exec", "-T", "client", "sh", "-c",
                                  "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 8080"],
                                 env=env, capture_output=True, text=True, timeout=30)
            if "HTTP/1." in got.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "HTTP/1." in got.stdout, got.stdout + got.stderr
        mtu = subprocess.run([*compose, "exec", "-T", "client", "ip", "link", "show", "eth0"],
                             env=env, capture_output=True, text=True, timeout=30).stdout
        assert "mtu 1420" in mtu
    finally:
        subprocess.run([*compose, "down", "-t", "1"], env=env, capture_output=True, timeout=180)


def test_socket_is_root_only_and_removed_on_sigterm(plugin):
    import os
    import stat
    info = os.stat(plugin.socket_path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == 0
    plugin.stop()
    assert not plugin.socket_path.exists()
    plugin.start()

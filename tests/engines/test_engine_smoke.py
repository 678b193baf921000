"""pynet on Docker Engine 20.10, 26.1 and 28.5 (see conftest.py): the single-host promises, lean.

Each test makes its own networks (fixed subnets: one bed per engine at a time) and leaves
them to the bed's tear-down, so the bed's dockerd starts and stops once per engine.
"""
from __future__ import annotations

import json
import random
import secrets
import subprocess
import time


from driver.docker_networks import DockerNetworkList
from tests.engines.conftest import HOST_IP, OUTSIDE_IP, Bed

DRIVER = ["-d", "pynet", "--ipam-driver", "pynet"]
PAGE = "pynet-engine-page"


def _name(kind: str) -> str:
    return f"pynet-t-eng-{kind}-{secrets.token_hex(3)}"


def network(bed: Bed, *args: str) -> str:
    net = _name("net")
    bed.dockerd.cli("network", "create", *DRIVER, *args, net)
    return net


def run(bed: Bed, net: str, *extra: str, cmd: tuple[str, ...] = ("sleep", "600")) -> str:
    ctr = _name("c")
    bed.dockerd.cli("run", "-d", "--pull", "never", "--name", ctr, "--network", net, *extra, bed.image, *cmd)
    return ctr


def addresses(bed: Bed, ctr: str) -> tuple[str, str]:
    """(IPv4, IPv6) of the container's one network, "" where it has none."""
    out = bed.dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} "
                          "{{.GlobalIPv6Address}}{{end}}", ctr).stdout
    v4, _, v6 = out.strip("\n").partition(" ")
    return v4.strip(), v6.strip()


def ping(bed: Bed, ctr: str, target: str) -> bool:
    return bed.dockerd.cli("exec", ctr, "ping", "-c", "2", "-W", "2", target, check=False).returncode == 0


def free_port() -> int:
    import socket
    for _ in range(100):
        port = random.randint(30000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free TCP port in 30000-32000")


def curl(prefix: list[str], url: str) -> str:
    return subprocess.run([*prefix, "curl", "-s", "--max-time", "5", url], capture_output=True,
                          text=True).stdout.strip()


def _nft_pynet() -> str:
    return subprocess.run(["nft", "list", "table", "inet", "pynet"], capture_output=True, text=True).stdout


def test_engine_is_the_one_asked_for(bed: Bed) -> None:
    assert bed.version.startswith(bed.engine), f"asked for docker {bed.engine}, the daemon is {bed.version}"


def test_bridge_containers_talk_by_address_and_by_name(bed: Bed) -> None:
    net = network(bed, "--subnet", "198.18.210.0/24")
    a, b = run(bed, net), run(bed, net)
    ip_a, ip_b = addresses(bed, a)[0], addresses(bed, b)[0]
    assert ip_a.startswith("198.18.210.") and ip_b.startswith("198.18.210.") and ip_a != ip_b
    assert ping(bed, a, ip_b)
    assert ping(bed, b, a), "DNS by container name within the network"  # Docker's embedded DNS
    assert "default via 198.18.210.1 dev eth0" in bed.dockerd.cli("exec", a, "ip", "route").stdout
    # Outbound through pynet's masquerade: the outside only answers the host's address.
    assert ping(bed, a, OUTSIDE_IP)


def test_published_port_reached_from_the_host_and_the_outside(bed: Bed) -> None:
    net = network(bed, "--subnet", "198.18.211.0/24")
    port = free_port()
    run(bed, net, "-p", f"{port}:80", cmd=(
        "sh", "-c", f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www"))
    assert curl([], f"http://127.0.0.1:{port}/") == PAGE
    assert curl(["ip", "netns", "exec", bed.outside_ns], f"http://{HOST_IP}:{port}/") == PAGE


def test_two_pynet_networks_are_isolated(bed: Bed) -> None:
    one, two = network(bed, "--subnet", "198.18.212.0/25"), network(bed, "--subnet", "198.18.212.128/25")
    a, b = run(bed, one), run(bed, two)
    assert not ping(bed, a, addresses(bed, b)[0])
    assert not ping(bed, b, addresses(bed, a)[0])
    assert ping(bed, a, OUTSIDE_IP) and ping(bed, b, OUTSIDE_IP)  # each keeps its way out


def test_internal_network_talks_inside_only(bed: Bed) -> None:
    net = network(bed, "--internal", "--subnet", "198.18.216.0/24")
    a, b = run(bed, net, "--cap-add", "NET_ADMIN"), run(bed, net)
    assert ping(bed, a, addresses(bed, b)[0])
    assert "default" not in bed.dockerd.cli("exec", a, "ip", "route").stdout
    # With a route added by hand (and one back in the outside), only the firewall says no.
    bed.dockerd.cli("exec", a, "ip", "route", "add", "198.18.214.0/24", "via", "198.18.216.1")
    subprocess.run(["ip", "-n", bed.outside_ns, "route", "replace", "198.18.216.0/24", "via", HOST_IP],
                   check=True, capture_output=True)
    assert not ping(bed, a, OUTSIDE_IP)


def test_macvlan_containers_reach_each_other_and_the_lan(bed: Bed) -> None:
    net = network(bed, "--subnet", "198.18.213.0/24", "--gateway", "198.18.213.254",
                  "-o", "type=macvlan", "-o", f"parent={bed.lan_parent}")
    a, b = run(bed, net), run(bed, net)
    assert ping(bed, a, addresses(bed, b)[0])
    assert ping(bed, b, "198.18.213.254"), "the LAN host"


def test_ipv6_network_gives_addresses_that_carry_traffic(bed: Bed) -> None:
    net = network(bed, "--ipv6", "--subnet", "198.18.217.0/24", "--subnet", "fd18:217::/64")
    a, b = run(bed, net), run(bed, net)
    (v4a, v6a), (v4b, v6b) = addresses(bed, a), addresses(bed, b)
    assert v4a.startswith("198.18.217.") and v4b.startswith("198.18.217.") and v4a != v4b
    assert v6a.startswith("fd18:217::") and v6b.startswith("fd18:217::")
    assert ping(bed, a, v6b) and ping(bed, b, v6a)


def test_ipv6_only_network(bed: Bed) -> None:
    """Docker 28.0 added `--ipv4=false` (com.docker.network.enable_ipv4): no IPv4 pool is
    asked of pynet's IPAM and CreateNetwork carries no IPv4Data."""
    if float(bed.engine) < 28:
        # No IPv6-only networks before 28.0: such an engine refuses the flag (its own CLI),
        # or a newer CLI drops it and the engine makes an ordinary network, IPv4 included,
        # with pynet. Either way pynet never sees an IPv6-only request from it.
        name = _name("net")
        proc = bed.dockerd.cli("network", "create", *DRIVER, "--ipv4=false", "--ipv6", "--subnet",
                               "fd18:218::/64", name, check=False)
        if proc.returncode == 0:
            info = json.loads(bed.dockerd.cli("network", "inspect", name).stdout)[0]
            subnets = [c["Subnet"] for c in info["IPAM"]["Config"]]
            bed.dockerd.cli("network", "rm", name)
            assert any(":" not in s for s in subnets) and "fd18:218::/64" in subnets, subnets
        else:
            assert "ipv4" in proc.stderr, proc.stderr
        return
    net = network(bed, "--ipv4=false", "--ipv6", "--subnet", "fd18:218::/64")
    a, b = run(bed, net), run(bed, net)
    (v4a, v6a), (v4b, v6b) = addresses(bed, a), addresses(bed, b)
    assert (v4a, v4b) == ("", "") and v6a.startswith("fd18:218::") and v6b.startswith("fd18:218::")
    assert "inet " not in bed.dockerd.cli("exec", a, "ip", "-4", "addr", "show", "eth0").stdout
    assert ping(bed, a, v6b)
    info = json.loads(bed.dockerd.cli("network", "inspect", net).stdout)[0]
    assert [c["Subnet"] for c in info["IPAM"]["Config"]] == ["fd18:218::/64"]


def test_endpoint_ifname_is_refused_with_the_reason(bed: Bed) -> None:
    """Docker's remote-driver proxy drops the exact name (it passes only the prefix), so
    pynet refuses com.docker.network.endpoint.ifname rather than silently ignore it."""
    net = network(bed, "--subnet", "198.18.219.0/24")
    proc = bed.dockerd.cli("run", "-d", "--pull", "never", "--name", _name("c"),
                           "--network", f"name={net},driver-opt=com.docker.network.endpoint.ifname=lan0",
                           bed.image, "sleep", "600", check=False)
    assert proc.returncode != 0 and "com.docker.network.endpoint.ifname" in proc.stderr, proc.stderr


def test_plugin_restart_keeps_connectivity(bed: Bed) -> None:
    net = network(bed, "--subnet", "198.18.220.0/24")
    a, b = run(bed, net), run(bed, net)
    bed.plugin.restart()
    assert ping(bed, a, addresses(bed, b)[0]) and ping(bed, b, a)
    c = run(bed, net)  # and the restarted plugin serves new containers
    assert ping(bed, c, addresses(bed, a)[0])


def test_pynet_docker_client_negotiates_the_api_version(bed: Bed) -> None:
    """pynet's own dockerd client (the stale-endpoint check) reads this engine."""
    net = network(bed, "--subnet", "198.18.221.0/24")
    ctr = run(bed, net)
    nid = bed.dockerd.cli("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    eid = bed.dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.EndpointID}}{{end}}",
                          ctr).stdout.strip()
    view = DockerNetworkList(bed.dockerd.base_url)()
    assert view is not None, "pynet could not read this dockerd"
    assert eid in (view.networks.get(nid) or ())


def test_published_port_is_released_when_dockerd_crashes_and_comes_back(bed: Bed) -> None:
    """Last in the module: it restarts the bed's dockerd. A container with a published port
    does not come back after dockerd is killed; whatever Docker sends on the way up (28 and
    older: Revoke, Leave, DeleteEndpoint; 29: no Revoke for an endpoint it did not see Join),
    the port is free again and a new container publishes it."""
    net = network(bed, "--subnet", "198.18.222.0/24")
    port = free_port()
    serve = ("sh", "-c", f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www")
    gone = run(bed, net, "-p", f"{port}:80", cmd=serve)
    assert curl([], f"http://127.0.0.1:{port}/") == PAGE
    bed.dockerd.restart(crash=True)
    assert bed.dockerd.cli("inspect", "-f", "{{.State.Running}}", gone).stdout.strip() == "false"
    deadline = time.monotonic() + 30
    while curl([], f"http://127.0.0.1:{port}/") == PAGE and time.monotonic() < deadline:
        time.sleep(1)  # pynet's own check reclaims endpoints Docker abandoned
    assert curl([], f"http://127.0.0.1:{port}/") != PAGE, "the crashed container's port is still published"
    # Not only is nothing serving: no DNAT element names the port any more.
    while f" {port} " in _nft_pynet() and time.monotonic() < deadline:
        time.sleep(1)
    assert f" {port} " not in _nft_pynet(), f"pynet still publishes host port {port}"
    run(bed, net, "-p", f"{port}:80", cmd=serve)
    assert curl([], f"http://127.0.0.1:{port}/") == PAGE

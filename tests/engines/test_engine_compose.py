"""Compose v2 (`docker compose`, the plugin each engine's Debian suite carries: 2.26 with 26.1,
2.40 with 28.5) driving pynet, as tests/e2e and tests/multihost do with Compose v1 on 20.10.

- A bridge project on the single-host bed of tests/engines/conftest.py: `driver_opts` (the
  bridge's name and MTU) and `ipam` (pynet, a subnet and a gateway that is not the first
  address) reach the kernel and Docker as written, the services find each other by service and
  by container name, and `down` leaves no network, no bridge and no claim in pynet's store.
- An overlay project: the same file `up` on two simulated hosts (tests/harness/multihost.py)
  running the same engine joins one overlay; the container on one host reaches the other's
  by address; `down` on both leaves no network, no overlay namespace and no record in Consul.

One Compose project per engine and bed; every address is in 198.18.0.0/15.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driver import naming
from tests.engines.conftest import Bed
from tests.harness.compose import COMPOSE_OF_ENGINE, Compose, ComposeError
from tests.harness.multihost import MultiHost
from tests.harness.plugin import REPO_ROOT
from tests.harness.wait import wait_until
from tests.multihost.support import IMAGE, claims, inspect_ctr, pool_record, vxlan_vni

ENGINES = ("26.1", "28.5")
PROJECT = "pynet-t-compose"  # bed tear-down removes pynet-t-* leftovers of a failed test
NETWORK = f"{PROJECT}_appnet"
BRIDGE = "pnc-compose"
MTU = 1400
SUBNET, GATEWAY = "198.18.230.0/24", "198.18.230.254"  # not .1: the file's gateway, not a default
OVERLAY_SUBNET = "198.18.231.0/24"

BRIDGE_FILE = """\
services:
  web:
    image: {image}
    pull_policy: never
    command: ["httpd", "-f", "-p", "8080", "-h", "/"]
    networks: [appnet]
  client:
    image: {image}
    pull_policy: never
    command: ["sleep", "600"]
    networks: [appnet]
networks:
  appnet:
    driver: pynet
    driver_opts:
      com.docker.network.bridge.name: {bridge}
      mtu: "{mtu}"
    ipam:
      driver: pynet
      config:
        - subnet: {subnet}
          gateway: {gateway}
"""

OVERLAY_FILE = """\
services:
  app:
    image: {image}
    pull_policy: never
    command: ["sleep", "3600"]
    networks: [appnet]
networks:
  appnet:
    driver: pynet
    driver_opts:
      type: overlay
    ipam:
      driver: pynet
      config:
        - subnet: {subnet}
"""


def _compose(engine: str, docker_host: str, file: Path) -> Compose:
    """`docker compose` for FILE against DOCKER_HOST, with ENGINE's CLI and Compose plugin."""
    try:
        compose = Compose(engine, docker_host, file, PROJECT, file.parent / "docker-config")
        version = compose.version()
    except ComposeError as e:
        pytest.fail(str(e), pytrace=False)
    assert version.startswith(COMPOSE_OF_ENGINE[engine]), \
        f"docker {engine}: Compose {version}, not the suite's {COMPOSE_OF_ENGINE[engine]}"
    return compose


def _pynet(bed: Bed, *args: str) -> tuple[int, dict]:
    """`pynet ARGS --json` as an operator runs it, against the bed plugin's store."""
    proc = subprocess.run([sys.executable, "-m", "pynet.cli", *args, "--json", "--state-dir",
                           str(bed.plugin.state_dir), "--docker-host", bed.dockerd.base_url],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("PYNET_")},
                               "PYTHONPATH": str(REPO_ROOT)})
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"pynet {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}") from None


def _link(name: str) -> dict | None:
    """The root namespace's link NAME with its addresses (ip -j), None when there is none."""
    proc = subprocess.run(["ip", "-j", "addr", "show", "dev", name], capture_output=True, text=True)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 and proc.stdout.strip() else None


def _resolved(compose: Compose, service: str, name: str) -> str:
    """The address NAME resolves to inside SERVICE's container, through Docker's embedded DNS
    (busybox ping prints "PING name (address)"); "" when it does not answer."""
    out = compose("exec", "-T", service, "ping", "-c", "1", "-W", "2", name, check=False).stdout
    head = out.splitlines()[0] if out else ""
    return head.split("(", 1)[1].split(")", 1)[0] if "(" in head and " 0% packet loss" in out else ""


# --- the overlay: the same file on two hosts ------------------------------------------------
@pytest.fixture(params=ENGINES, ids=[f"docker{e}" for e in ENGINES])
def two_hosts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    """Two simulated hosts running one engine; the only test that uses them makes and removes
    one project, so one bed per engine (about 10 s each)."""
    engine = request.param
    started = time.monotonic()
    bed = MultiHost(tmp_path_factory.mktemp(f"compose-overlay-{engine}"), hosts=2, name="pnec",
                    underlay="198.18.13.0/24", engine=engine)
    bed.up()
    try:
        yield bed
    finally:
        for h in bed.hosts:
            if h.dockerd.running():  # what a failed test left
                ids = h.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    h.docker("rm", "-f", *ids, timeout=120, check=False)
                nets = h.docker("network", "ls", "--filter", "driver=pynet", "-q", check=False).stdout.split()
                if nets:
                    h.docker("network", "rm", *nets, timeout=120, check=False)
        left = bed.down()
        print(f"\n[engines] docker {engine} two-host Compose overlay bed: {time.monotonic() - started:.1f} s")
        if left:
            pytest.fail("the Compose overlay bed left things behind:\n" + "\n".join(left), pytrace=False)


def _pings(h, ctr: str, address: str) -> bool:
    return h.docker("exec", ctr, "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


def test_compose_v2_overlay_project_on_two_hosts(two_hosts: MultiHost, tmp_path: Path) -> None:
    engine = two_hosts.engine
    h1, h2 = two_hosts.hosts
    file = tmp_path / "compose.yaml"  # one file, `up` on each host
    file.write_text(OVERLAY_FILE.format(image=IMAGE, subnet=OVERLAY_SUBNET))
    composes = [_compose(engine, f"unix://{h.docker_socket}", file) for h in (h1, h2)]
    ctr = f"{PROJECT}-app-1"
    up: list[Compose] = []
    try:
        for h, compose in zip((h1, h2), composes):
            version = h.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
            assert version.startswith(engine), f"{h} runs docker {version}, not {engine}"
            up.append(compose)
            compose("up", "-d")
        a, b = inspect_ctr(h1, ctr, NETWORK), inspect_ctr(h2, ctr, NETWORK)
        subnet = ipaddress.ip_network(OVERLAY_SUBNET)
        assert a.ip != b.ip and ipaddress.ip_address(a.ip) in subnet and ipaddress.ip_address(b.ip) in subnet, (a, b)
        nets = [json.loads(h.docker("network", "inspect", NETWORK).stdout)[0] for h in (h1, h2)]
        for net in nets:
            assert net["Driver"] == "pynet" and net["Options"].get("type") == "overlay", net
            assert [c["Subnet"] for c in net["IPAM"]["Config"]] == [OVERLAY_SUBNET], net["IPAM"]
        # Two local networks (each host's dockerd made its own), one overlay: the same VNI.
        assert nets[0]["Id"] != nets[1]["Id"] and vxlan_vni(h1, nets[0]["Id"]) == vxlan_vni(h2, nets[1]["Id"])
        wait_until(lambda: _pings(h1, ctr, b.ip) and _pings(h2, ctr, a.ip), 20,
                   f"{ctr} on {h1} and on {h2} pinging each other by address")
        assert len(claims(two_hosts, OVERLAY_SUBNET)) >= 2  # both containers, claimed in Consul

        for compose in up[::-1]:
            compose("down", "-t", "1")
            up.remove(compose)
        for h, net in zip((h1, h2), nets):
            assert not h.docker("ps", "-aq").stdout.strip(), f"`compose down` left containers on {h}"
            assert NETWORK not in h.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
            left_ns = [n for n in h.run("ip", "netns", "list").stdout.split()
                       if n == naming.overlay_netns(net["Id"])]
            assert not left_ns, f"`compose down` left the overlay namespace {left_ns} on {h}"
        wait_until(lambda: not claims(two_hosts, OVERLAY_SUBNET) and pool_record(two_hosts, OVERLAY_SUBNET) is None,
                   10, "the overlay's claims and pool gone from Consul")
        left_records = list(two_hosts.kv("pynet/v1/overlay/"))  # defs, VNIs, members, peers
        assert not left_records, f"overlay records left in Consul: {left_records}"
    finally:
        for compose in up:
            compose("down", "-t", "1", check=False)


# --- the bridge: one host ------------------------------------------------------------------
@pytest.mark.parametrize("bed", ENGINES, indirect=True, ids=[f"docker{e}" for e in ENGINES])
def test_compose_v2_bridge_project_with_driver_opts_and_ipam(bed: Bed, tmp_path: Path) -> None:
    assert bed.version.startswith(bed.engine), f"asked for docker {bed.engine}, the daemon is {bed.version}"
    file = tmp_path / "compose.yaml"
    file.write_text(BRIDGE_FILE.format(image=bed.image, bridge=BRIDGE, mtu=MTU, subnet=SUBNET, gateway=GATEWAY))
    compose = _compose(bed.engine, bed.dockerd.base_url, file)
    docker = bed.dockerd.cli
    downed = False
    try:
        compose("up", "-d")
        # ipam and driver_opts as Docker keeps them.
        net = json.loads(docker("network", "inspect", NETWORK).stdout)[0]
        assert net["Driver"] == "pynet" and net["IPAM"]["Driver"] == "pynet", net
        assert [(c["Subnet"], c.get("Gateway")) for c in net["IPAM"]["Config"]] == [(SUBNET, GATEWAY)], net["IPAM"]
        assert net["Options"].get("com.docker.network.bridge.name") == BRIDGE, net["Options"]
        assert net["Options"].get("mtu") == str(MTU), net["Options"]
        assert net["Labels"].get("com.docker.compose.project") == PROJECT, net["Labels"]
        # ... and as the kernel has them: pynet's bridge under the given name, MTU and gateway.
        link = _link(BRIDGE)
        assert link is not None, f"no link {BRIDGE} after `compose up` on docker {bed.engine}"
        assert link["mtu"] == MTU, link
        assert [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"] == [(GATEWAY, 24)]
        ips = {}
        for service in ("web", "client"):
            ctr = f"{PROJECT}-{service}-1"
            ips[service] = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
                                  ctr).stdout.strip()
            assert ipaddress.ip_address(ips[service]) in ipaddress.ip_network(SUBNET), (ctr, ips[service])
            assert compose("exec", "-T", service, "cat", "/sys/class/net/eth0/mtu").stdout.strip() == str(MTU)
            assert f"default via {GATEWAY} dev eth0" in compose("exec", "-T", service, "ip", "route").stdout
        assert ips["web"] != ips["client"]
        # Names: each service finds the other by service name and by container name.
        for src, dst in (("client", "web"), ("web", "client")):
            for name in (dst, f"{PROJECT}-{dst}-1"):
                assert _resolved(compose, src, name) == ips[dst], f"{src} resolving {name} on docker {bed.engine}"
        reply = ""
        for _ in range(20):  # httpd may still be starting
            reply = compose("exec", "-T", "client", "sh", "-c",
                            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 8080", check=False).stdout
            if "HTTP/1." in reply:
                break
            time.sleep(0.5)
        assert "HTTP/1." in reply, f"client -> web:8080 by service name: {reply!r}"
        # pynet's store: the pool, with the gateway and the two containers' addresses claimed
        # (kind "endpoint" only from 29 on, which names the endpoint; before, "aux").
        code, shown = _pynet(bed, "ipam", "show", SUBNET)
        assert code == 0, shown
        held = {c["address"]: c for c in shown["claims"]}
        assert set(held) == {GATEWAY, ips["web"], ips["client"]} and held[GATEWAY]["kind"] == "gateway", shown
        assert {held[ips[s]]["container"] for s in ips} == {f"{PROJECT}-{s}-1" for s in ips}, shown

        net_id = net["Id"]
        compose("down", "-t", "1")
        downed = True
        assert not docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.strip()
        assert NETWORK not in docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert _link(BRIDGE) is None, f"`compose down` left the bridge {BRIDGE}"
        code, pools = _pynet(bed, "ipam", "show")
        assert code == 0 and SUBNET not in [p["pool"] for p in pools["pools"]], pools
        code, nets = _pynet(bed, "networks")
        assert code == 0 and net_id not in [n["id"] for n in nets["networks"]], nets
        code, checked = _pynet(bed, "ipam", "check")
        assert code == 0, checked  # no leak, no duplicate, no unclaimed address
    finally:
        if not downed:
            compose("down", "-t", "1", check=False)

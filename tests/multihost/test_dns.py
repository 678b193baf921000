"""Names across hosts (issue 21) on a three-host bed of its own: every plugin serves pynet DNS
on its host's docker0 gateway (198.19.24N.1, `--dns-addr`), forwarding to nothing real
(`--dns-upstream 127.0.0.1:5399`, where nothing listens); containers are started with
`--dns <their host's gateway>`, as docs/dns.md sets up.

* a container on an overlay on h1 finds one started on h2 by name and by alias, asking
  through Docker's embedded resolver (Docker does not know it, so it forwards from the
  container's namespace; the source is the container's docker_gwbridge address), and the
  time from `docker run` returning on h2 to the name answering on h1 is measured;
* a name held on two hosts (a Compose service on h2 and h3) answers both addresses;
* a container of another overlay is not answered those names;
* the name goes with the container, and with its host when liveness withdraws it (h3 cut
  off the underlay: its record still stored, no longer answered), and comes back when h3 is
  healed;
* a Compose service brought up on two hosts (the same file, `docker-compose up` on each)
  answers both its containers' addresses by the service name to a Compose client on a third,
  and one of them once its host's project is down;
* `--internal`: a container only on an internal overlay reaches no pynet DNS address, so
  other hosts' names do not resolve there (its own host's still do, through Docker's DNS);
  connected to another network as well, it asks through that one and is answered the names
  of both.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.dnsprobe import POLLER
from tests.harness.multihost import Host, MultiHost
from tests.multihost.support import (IMAGE, brought_up, clear_overlay_bed, consul_delete_tree, inspect_ctr,
                                     overlay_create, run_on)

APPNET, APPNET_SUBNET = "appnet", "10.61.1.0/24"
OTHER, OTHER_SUBNET = "othernet", "10.61.2.0/24"
SEALED, SEALED_SUBNET = "sealed", "10.61.3.0/24"
PEER_TIMEOUT = 6


def dns_addr(h: Host) -> str:
    return f"198.19.{240 + h.index}.1"  # the host's docker0 gateway (--bip in the bed)


@pytest.fixture(scope="module")
def dbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    bed = MultiHost(tmp_path_factory.mktemp("dns"), name="pndns", underlay="198.18.36.0/24",
                    plugin_args=("--overlay-peer-timeout", str(PEER_TIMEOUT),
                                 "--dns-upstream", "127.0.0.1:5399",  # nothing listens there
                                 "--dns-rate", "100000"),  # the poller asks every 2 ms
                    plugin_args_for=lambda h: ("--dns-addr", dns_addr(h)))
    with brought_up("DNS", bed):
        yield bed


def nslookup(h: Host, ctr: str, name: str) -> str:
    """Through Docker's embedded resolver (the container's resolv.conf: 127.0.0.11)."""
    return h.docker("exec", ctr, "timeout", "10", "nslookup", name, check=False).stdout


def eventually(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_a_container_finds_others_on_other_hosts_by_name(dbed: MultiHost):
    h1, h2, h3 = dbed.hosts
    try:
        for h in dbed.hosts:
            overlay_create(h, APPNET, APPNET_SUBNET)
        overlay_create(h1, OTHER, OTHER_SUBNET)
        asker = run_on(h1, "asker", APPNET, "--dns", dns_addr(h1))
        # Warm: the asker's own names are read (its docker_gwbridge address maps it).
        assert eventually(lambda: "asker" in json.dumps(dbed.kv("pynet/v1/names/")))

        # The name of a container started on h2, watched from the asker's namespace on h1
        # (straight to pynet's address, as Docker's resolver sends it).
        poller = subprocess.Popen(["nsenter", f"--net=/proc/{asker.pid}/ns/net", sys.executable, "-c",
                                   POLLER, dns_addr(h1), "10.61.1."], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            h2.docker("run", "-d", "--pull", "never", "--network", APPNET, "--name", "web",
                      "--network-alias", "api", IMAGE, "sleep", "3600")
            poller.stdin.write(f"web {time.monotonic()}\n")
            poller.stdin.flush()
            ready, _, _ = select.select([poller.stdout], [], [], 20)
            assert ready, "the name of h2's container never answered on h1"
            latency = float(poller.stdout.readline().split()[1])
        finally:
            poller.kill()
            poller.wait()
        web = inspect_ctr(h2, "web", APPNET)
        print(f"\nname visible on h1 {latency * 1000:.0f} ms after `docker run` returned on h2")
        assert latency < 2.0, latency

        # Through Docker's embedded resolver, by name and by alias.
        assert web.ip in nslookup(h1, "asker", "web")
        assert web.ip in nslookup(h1, "asker", "api")

        # A service on two hosts: both addresses.
        run_on(h3, "web3", APPNET, "--network-alias", "api")
        web3 = inspect_ctr(h3, "web3", APPNET)
        assert eventually(lambda: web3.ip in nslookup(h1, "asker", "api"))
        both = nslookup(h1, "asker", "api")
        assert web.ip in both and web3.ip in both

        # Another overlay's container is not answered them.
        run_on(h1, "stranger", OTHER, "--dns", dns_addr(h1))
        out = nslookup(h1, "stranger", "api")
        assert web.ip not in out and web3.ip not in out, out

        # A container going on h1 leaves h1's other askers alone (the asker asks from its
        # docker_gwbridge address; the stranger's die is looked at on its own).
        h1.docker("rm", "-f", "stranger")
        time.sleep(1)
        assert web.ip in nslookup(h1, "asker", "api")

        # The container goes on h2: its name goes on h1.
        h2.docker("rm", "-f", "web")
        assert eventually(lambda: web.ip not in nslookup(h1, "asker", "api"))
        assert web3.ip in nslookup(h1, "asker", "api")

        # h3 cut off: once liveness withdraws it, its names are no longer answered on h1.
        dbed.cut(h3)
        try:
            assert eventually(lambda: web3.ip not in nslookup(h1, "asker", "api"),
                              timeout=PEER_TIMEOUT * 4)
            # Withdrawn, not deleted: h3's record is still in the store h1 reads (h3 could
            # not have removed it), so liveness alone took the name away.
            kept = dbed.kv(f"pynet/v1/names/hosts/{h3.name}/", h1)
            assert any(web3.ip in value for value in kept.values()), kept
        finally:
            dbed.heal(h3)
        assert eventually(lambda: web3.ip in nslookup(h1, "asker", "api"), timeout=PEER_TIMEOUT * 4)
    finally:
        clear_overlay_bed(dbed)
        consul_delete_tree(dbed, "pynet/v1/names/")


def test_internal_networks_reach_no_pynet_dns_until_connected_to_another(dbed: MultiHost):
    h1, h2, _ = dbed.hosts
    try:
        for h in (h1, h2):
            overlay_create(h, SEALED, SEALED_SUBNET, "--internal")
            overlay_create(h, APPNET, APPNET_SUBNET)
        remote = run_on(h2, "remote", SEALED)
        run_on(h2, "web", APPNET)
        neighbour = run_on(h1, "neighbour", SEALED)
        run_on(h1, "inside", SEALED, "--dns", dns_addr(h1))
        # The remote name is stored (h1's watcher reads it within milliseconds; the end of
        # this test shows h1 answers it), so what follows is the internal network's reach.
        assert eventually(lambda: remote.ip in json.dumps(dbed.kv("pynet/v1/names/")))
        time.sleep(1)
        # No route to any host address: Docker's resolver cannot reach pynet, so another
        # host's name does not resolve; a name of this host's is Docker's own and does.
        assert remote.ip not in nslookup(h1, "inside", "remote")
        assert neighbour.ip in nslookup(h1, "inside", "neighbour")
        # Connected to a non-internal overlay too: dockerd gives it docker_gwbridge (its
        # route to the host), and pynet answers it the names of both its networks.
        h1.docker("network", "connect", APPNET, "inside")
        web = inspect_ctr(h2, "web", APPNET)
        assert eventually(lambda: remote.ip in nslookup(h1, "inside", "remote"))
        assert eventually(lambda: web.ip in nslookup(h1, "inside", "web"))
    finally:
        clear_overlay_bed(dbed)
        consul_delete_tree(dbed, "pynet/v1/names/")


COMPOSE = """version: "2.4"
services:
  api:
    image: {image}
    command: ["sleep", "3600"]
    networks: [shopnet]
  client:
    image: {image}
    command: ["sleep", "3600"]
    networks: [shopnet]
    dns: ["${{PYNET_TEST_DNS}}"]
networks:
  shopnet:
    driver: pynet
    driver_opts:
      type: overlay
    ipam:
      driver: pynet
      config:
        - subnet: 10.61.4.0/24
"""


def test_a_compose_service_on_two_hosts_answers_both_by_its_service_name(dbed: MultiHost, tmp_path: Path):
    h1, h2, h3 = dbed.hosts
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(COMPOSE.format(image=IMAGE))

    def compose_on(h: Host, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{h.docker_socket}", PYNET_TEST_DNS=dns_addr(h))
        proc = subprocess.run(["docker-compose", "-p", "shop", "-f", str(compose), *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr

    up = []
    try:
        for h, service in ((h2, "api"), (h3, "api"), (h1, "client")):
            up.append(h)
            compose_on(h, "up", "-d", service)
        a2, a3 = inspect_ctr(h2, "shop_api_1", "shop_shopnet"), inspect_ctr(h3, "shop_api_1", "shop_shopnet")
        # Compose names the service as an alias on its network: both hosts' containers answer
        # "api" on h1, where Docker's own DNS knows no "api" and asks pynet.
        assert eventually(lambda: all(ip in nslookup(h1, "shop_client_1", "api") for ip in (a2.ip, a3.ip))), \
            nslookup(h1, "shop_client_1", "api")
        compose_on(h2, "down", "-t", "0")  # sleep ignores SIGTERM: no 10 s wait
        up.remove(h2)
        assert eventually(lambda: a2.ip not in nslookup(h1, "shop_client_1", "api"))
        assert a3.ip in nslookup(h1, "shop_client_1", "api")
    finally:
        for h in up:
            compose_on(h, "down", "-t", "0")
        clear_overlay_bed(dbed)
        consul_delete_tree(dbed, "pynet/v1/names/")

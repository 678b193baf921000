"""Repair is whole, against the real dockerd (issue 17, item 7).

A container removed while pynet was down leaves its address claim and its endpoint record
(Docker's Leave, DeleteEndpoint and ReleaseAddress all failed, and Docker never repeats them).
`pynet ipam check --repair` released the address alone, so the next `pynet ipam check`
failed with "unclaimed <ip> of endpoint ...": the address was free for a new container while
a record still named it. Now the address goes together with the endpoint record (and its
links), and `pynet ipam check` and `pynet doctor` are clean afterwards.
"""
from __future__ import annotations

import time

from pynet_core.store import keys
from tests.e2e.test_ops import OLDER_THAN, network_id, pynet
from tests.harness.e2e_support import DRIVER, claimed, ip_of, name, run

SUBNET = "198.19.217.0/28"
GATEWAY = "198.19.217.1"


def endpoint_ids(plugin) -> set[str]:
    return {e.key.rsplit("/", 1)[1] for e in plugin.stored(keys.hosts_all()) if "/endpoints/" in e.key}


def endpoint_id(dockerd, ctr: str) -> str:
    return dockerd.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.EndpointID}}{{end}}",
                       ctr).stdout.strip()


def test_a_container_removed_while_pynet_was_down_is_repaired_whole(dockerd, busybox_image, plugin):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", SUBNET, "--gateway", GATEWAY, net)
    keeper, victim = run(dockerd, busybox_image, net), run(dockerd, busybox_image, net)
    keeper_ip, victim_ip = ip_of(dockerd, keeper), ip_of(dockerd, victim)
    keeper_ep, victim_ep = endpoint_id(dockerd, keeper), endpoint_id(dockerd, victim)
    assert {keeper_ep, victim_ep} <= endpoint_ids(plugin)

    plugin.stop()  # pynet down: Docker's Leave, DeleteEndpoint and ReleaseAddress fail
    try:
        dockerd.cli("rm", "-f", victim, timeout=180)
    finally:
        plugin.start()
    assert victim_ep in endpoint_ids(plugin)
    assert claimed(plugin, SUBNET) == {GATEWAY, keeper_ip, victim_ip}

    code, doc = pynet(plugin, dockerd, "ipam", "check")
    assert code == 1 and doc["local"]["state"] == "proven", doc
    [unused] = doc["local"]["unused"]
    assert unused["address"] == victim_ip and unused["endpoints"] == [f"{network_id(dockerd, net)[:12]}/{victim_ep[:12]}"], doc

    started = time.monotonic()
    code, doc = pynet(plugin, dockerd, "ipam", "check", "--repair", "--yes", "--older-than", str(OLDER_THAN))
    assert time.monotonic() - started >= OLDER_THAN
    assert code == 0, doc
    assert doc["released"] == [keys.ipam_addr("LocalDefault", SUBNET, victim_ip)], doc
    assert doc["unclaimed"] == [] and doc["duplicates"] == [], doc
    # The address and the record naming it went together; Docker's own stayed.
    assert claimed(plugin, SUBNET) == {GATEWAY, keeper_ip}
    assert victim_ep not in endpoint_ids(plugin) and keeper_ep in endpoint_ids(plugin)

    code, doc = pynet(plugin, dockerd, "ipam", "check")
    assert code == 0 and doc["unclaimed"] == [] and doc["local"]["unused"] == [], doc
    code, doc = pynet(plugin, dockerd, "doctor")
    assert code == 0, doc
    # The address serves a new container.
    assert ip_of(dockerd, run(dockerd, busybox_image, net, "--ip", victim_ip)) == victim_ip

"""A crash between Docker's RequestAddress and CreateEndpoint leaks nothing for good.

Docker asks pynet for an address, pynet answers and is killed before CreateEndpoint arrives;
Docker's ReleaseAddress then fails (the plugin is down) and Docker forgets it. The leak check
gives the address back once this host's dockerd has not used it for the grace period, and
keeps every address Docker does use: containers, aux addresses, and containers on a network
of Docker's own bridge driver that takes its addresses from pynet's IPAM.
"""
from __future__ import annotations

import time

from tests.harness.e2e_support import DRIVER, claimed, ip_of, name, run

SUBNET = "198.19.218.0/28"
GATEWAY = "198.19.218.1"
AUX = "198.19.218.14"
OTHER_SUBNET = "198.19.219.0/28"  # Docker's bridge driver, pynet's IPAM
GRACE = 60  # the smallest grace pynet accepts
INTERVAL = 2


def in_use_error(dockerd, image: str, net: str, ip: str) -> str:
    """Run a container asking for IP; return Docker's error (the container must not start)."""
    res = dockerd.cli("run", "-d", "--pull", "never", "--name", name("c"), "--network", net, "--ip", ip,
                      image, "sleep", "600", check=False)
    assert res.returncode != 0, f"{ip} was handed out twice"
    return res.stderr


def test_an_address_leaked_by_a_crash_is_given_back_and_used_ones_are_kept(dockerd, busybox_image, plugin):
    net, other = name("net"), name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", SUBNET, "--gateway", GATEWAY,
                "--aux-address", f"router={AUX}", net)
    dockerd.cli("network", "create", "-d", "bridge", "--ipam-driver", "pynet", "--subnet", OTHER_SUBNET, other)
    keeper = ip_of(dockerd, run(dockerd, busybox_image, net))
    bystander = ip_of(dockerd, run(dockerd, busybox_image, other))
    # What Docker does for a container: RequestAddress... and then pynet dies.
    status, answer = plugin.call("/IpamDriver.RequestAddress",
                                 {"PoolID": f"LocalDefault/{SUBNET}", "Address": "", "Options": {}})
    assert status == 200, answer
    leaked = answer["Address"].split("/")[0]
    plugin.kill9()
    saved = dict(plugin.extra_env)
    plugin.extra_env.update(PYNET_LEAK_CHECK_INTERVAL=str(INTERVAL), PYNET_LEAK_GRACE=str(GRACE))
    try:
        plugin.start()
        started = time.monotonic()
        # Within the grace the address stays claimed: a CreateEndpoint Docker retries may still come.
        assert "already in use" in in_use_error(dockerd, busybox_image, net, leaked)
        deadline = started + GRACE + 10 * INTERVAL
        while leaked in claimed(plugin, SUBNET):
            assert time.monotonic() < deadline, f"{leaked} still claimed; plugin log:\n{plugin.log_tail()}"
            time.sleep(1)
        assert time.monotonic() - started >= GRACE - INTERVAL, "released before the grace was up"
        assert claimed(plugin, SUBNET) == {GATEWAY, AUX, keeper}
        assert bystander in claimed(plugin, OTHER_SUBNET)
        # The freed address serves a container; the kept ones are still refused.
        assert ip_of(dockerd, run(dockerd, busybox_image, net, "--ip", leaked)) == leaked
        assert "already in use" in in_use_error(dockerd, busybox_image, net, keeper)
        assert "already in use" in in_use_error(dockerd, busybox_image, other, bystander)
    finally:
        plugin.extra_env.clear()
        plugin.extra_env.update(saved)
        plugin.restart()

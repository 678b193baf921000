"""A crash between Docker's RequestAddress and CreateEndpoint leaks nothing for good.

Docker asks pynet for an address, pynet answers and is killed before CreateEndpoint arrives;
Docker's ReleaseAddress then fails (the plugin is down) and Docker forgets it. The leak check
gives the address back once this host's dockerd has not used it for the grace period, and
keeps every address Docker does use: containers, aux addresses, and containers on a network
of Docker's own bridge driver that takes its addresses from pynet's IPAM.

And it never takes the word of a dockerd that is not the one using pynet: pointed at a
second, empty dockerd, it releases nothing, however long, and says so in its log.
"""
from __future__ import annotations

import time

from pathlib import Path

from pynet_core.store import keys
from tests.harness.dockerd import SECOND, DockerDaemon
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


EMPTY_SUBNET = "198.19.220.0/28"


def test_an_empty_dockerd_given_as_docker_host_releases_nothing(dockerd, busybox_image, plugin, tmp_path: Path):
    net = name("net")
    dockerd.cli("network", "create", *DRIVER, "--subnet", EMPTY_SUBNET, net)
    live = [ip_of(dockerd, run(dockerd, busybox_image, net)) for _ in range(2)]
    before = claimed(plugin, EMPTY_SUBNET)
    assert set(live) < before
    with DockerDaemon(tmp_path / "empty-dockerd", layout=SECOND, extra_args=("--iptables=false",)) as empty:
        saved = dict(plugin.extra_env)
        plugin.extra_env.update(PYNET_DOCKER_HOST=empty.base_url, PYNET_LEAK_CHECK_INTERVAL=str(INTERVAL),
                                PYNET_LEAK_GRACE=str(GRACE))
        try:
            plugin.restart()
            started = time.monotonic()
            while time.monotonic() < started + GRACE + 5 * INTERVAL:
                assert claimed(plugin, EMPTY_SUBNET) == before, \
                    f"released on the word of an empty dockerd; plugin log:\n{plugin.log_tail()}"
                time.sleep(INTERVAL)
            log = plugin.log_tail(2000).rsplit("===== pynet test start", 1)[-1]  # this run only
            assert f"dockerd at {empty.base_url} knows none of the" in log, log
            assert log.count("knows none of the") == 1, "the warning must be said once, not every check"
            # Past the grace, the live addresses are still claimed: Docker cannot hand them out again.
            for ip in live:
                assert "already in use" in in_use_error(dockerd, busybox_image, net, ip)
            pools = [e for e in plugin.stored(keys.ipam_space("LocalDefault")) if EMPTY_SUBNET in e.value]
            assert pools, "the pool was released"
        finally:
            plugin.extra_env.clear()
            plugin.extra_env.update(saved)
            plugin.restart()

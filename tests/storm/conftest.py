"""Crash storm tier: the real dockerd (tests/harness/dockerd.py) and the real plugin
(tests/harness/plugin.py), with a kill proxy (tests/harness/plugin_proxy.py) on the socket
dockerd uses, so the plugin can be killed -9 inside chosen calls.

Needs root and docker.io; fails, never skips, without them. Shares the host firewall and
/run/docker/plugins with tests/e2e and tests/multihost: run it under the machine-wide lock.

    PYNET_STORM_SEED=N      replay a run (the seed is printed in the header and in the result)
    PYNET_STORM_CYCLES=N    docker run/rm cycles (default 40, the CI size; 500 is the full run)
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.harness.busybox import ensure_busybox_image  # noqa: E402
from tests.harness.dockerd import (  # noqa: E402
    SHARED_DIRS, DockerDaemon, drop_empty_nft_tables, nft_tables, read_ip_forward,
    remove_empty_shared_dirs, restore_ip_forward, socket_answers)
from tests.harness.plugin import DEFAULT_SOCKET, PluginProcess  # noqa: E402
from tests.harness.plugin_proxy import KillProxy, PassThrough  # noqa: E402
from tests.storm import checks, storm  # noqa: E402

DEFAULT_CYCLES = 40
HOST_ID = "storm-host"
LEAK_INTERVAL = 2
LEAK_GRACE = 60  # the smallest grace pynet accepts
_HERE = Path(__file__).resolve().parent


def _settings() -> tuple[int, int]:
    text = os.environ.get("PYNET_STORM_SEED", "").strip()
    seed = int(text) if text else secrets.randbelow(2 ** 32)
    return seed, int(os.environ.get("PYNET_STORM_CYCLES", DEFAULT_CYCLES))


SEED, CYCLES = _settings()


def pytest_report_header(config):
    return f"pynet storm: seed={SEED} cycles={CYCLES} (PYNET_STORM_SEED={SEED} replays it)"


def pytest_collection_modifyitems(items):
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.storm)
            item.add_marker(pytest.mark.timeout(600 + 10 * CYCLES))


# Package scope, like the e2e tier's: one pytest session runs both, and each tier's dockerd
# and plugin socket must be gone before the other's start.
@pytest.fixture(scope="package")
def storm_config() -> dict:
    return {"seed": SEED, "cycles": CYCLES, "host": HOST_ID, "grace": LEAK_GRACE}


@pytest.fixture(scope="package", autouse=True)
def _host_baseline() -> Iterator[None]:
    tables = nft_tables()
    absent = {d for d in SHARED_DIRS if not d.exists()}
    ip_forward = read_ip_forward()
    yield
    drop_empty_nft_tables(tables)
    remove_empty_shared_dirs(absent)
    restore_ip_forward(ip_forward)


@pytest.fixture(scope="package")
def dockerd(tmp_path_factory) -> Iterator[DockerDaemon]:
    daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="package")
def busybox_image(dockerd: DockerDaemon) -> str:
    return ensure_busybox_image(dockerd)


@pytest.fixture
def macvlan_parents() -> Iterator[None]:
    """A veth pair and an empty bridge for macvlan networks to sit on (no dummy links here)."""
    made = []
    try:
        for argv in (["ip", "link", "add", storm.MACVLAN_PARENT, "type", "veth", "peer", "name",
                      storm.MACVLAN_PARENT + "p"],
                     ["ip", "link", "add", storm.MACVLAN_BRIDGE_PARENT, "type", "bridge"]):
            subprocess.run(argv, check=True, capture_output=True)
            made.append(argv[3])
        for link in (storm.MACVLAN_PARENT, storm.MACVLAN_PARENT + "p", storm.MACVLAN_BRIDGE_PARENT):
            subprocess.run(["ip", "link", "set", link, "up"], check=True, capture_output=True)
        yield
    finally:
        for link in made:
            subprocess.run(["ip", "link", "del", link], capture_output=True)


@pytest.fixture
def storm_plugin(tmp_path, dockerd: DockerDaemon) -> Iterator[tuple[PluginProcess, KillProxy]]:
    """The plugin on a socket of its own, the kill proxy on the one dockerd uses. The leak
    check runs throughout, with the smallest grace pynet accepts."""
    if os.geteuid() != 0:
        pytest.fail("the storm tier needs root (dockerd, links, firewall)", pytrace=False)
    if socket_answers(DEFAULT_SOCKET):
        pytest.fail(f"something already serves {DEFAULT_SOCKET}: another pynet or test session",
                    pytrace=False)
    # The real socket keeps the name pynet.sock: pynet takes the driver name Docker knows it
    # by from its socket's file name (the leak check looks for networks of that IPAM driver).
    plugin = PluginProcess(tmp_path / "state", socket_path=tmp_path / "real" / "pynet.sock",
                           log_path=tmp_path / "plugin.log",
                           extra_args=("--host-id", HOST_ID),
                           extra_env={"PYNET_DEFAULT_ADDRESS_POOLS": storm.AUTO_POOL,
                                      "PYNET_LEAK_CHECK_INTERVAL": str(LEAK_INTERVAL),
                                      "PYNET_LEAK_GRACE": str(LEAK_GRACE)},
                           startup_timeout=60)
    baseline = checks.pynet_links(set())
    plugin.start()
    proxy = KillProxy(DEFAULT_SOCKET, plugin.socket_path, crash=plugin.kill9, restart=plugin.start)
    proxy.start()
    plugin.baseline_links = baseline  # type: ignore[attr-defined]
    try:
        yield plugin, proxy
    finally:
        proxy.policy = PassThrough()
        proxy.wait_up()
        if not plugin.running():
            plugin.start()
        # Whatever a failed test left in Docker goes while the plugin answers.
        for what in (["ps", "-aq"], ["network", "ls", "-q"]):
            ids = dockerd.cli(*what, "--filter", f"name={storm.PREFIX}", check=False).stdout.split()
            if ids:
                dockerd.cli(*(["rm", "-f", "-v"] if what[0] == "ps" else ["network", "rm"]), *ids,
                            check=False, timeout=300)
        proxy.stop()
        plugin.stop()
        # Links a defect left behind (the test reports them): never leave them on the machine.
        for link in checks.pynet_links(baseline, (storm.CUSTOM_BRIDGE_PREFIX,)):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        keep = os.environ.get("PYNET_STORM_KEEP_LOG")
        if keep:
            subprocess.run(["cp", str(plugin.log_path), keep], check=False)
        _remove_plugin_firewall()


def _remove_plugin_firewall() -> None:
    # The plugin keeps its firewall across restarts on purpose; the suite must not leave it.
    from driver.firewall.nft_firewall import NftFirewall
    NftFirewall().remove_all()

"""The managed-plugin tier: pynet as a Docker managed (v2) plugin, built by
scripts/build-plugin.sh (once per session, `managed_plugin_dir`), on a private dockerd.

A tier of its own, not part of tests/e2e: the plugin and the e2e suite's legacy pynet would be
two pynets on one host, and they share the host's firewall table (`inet pynet`) and
PYNET-FORWARD chain. Package scope, like tests/e2e, so the two dockerds never overlap.

Every test here is marked `managed`. After each test the containers and networks it made are
removed while the plugin is enabled; the tier ends by removing the plugin and pynet's
firewall table and checking that no pynet link is left.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.harness.busybox import ensure_busybox_image  # noqa: E402
from tests.harness.dockerd import (  # noqa: E402
    SHARED_DIRS,
    DockerDaemon,
    drop_empty_nft_tables,
    nft_tables,
    read_ip_forward,
    remove_empty_shared_dirs,
    restore_ip_forward,
    socket_answers,
)
from tests.harness.managed_plugin import ManagedPlugin, pynet_links  # noqa: E402
from tests.harness.plugin import DEFAULT_SOCKET  # noqa: E402

_HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "managed: needs root and a real dockerd; pynet as a managed "
                                       "plugin built by scripts/build-plugin.sh")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.managed)


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
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    if socket_answers(DEFAULT_SOCKET):
        pytest.fail(f"a pynet already serves {DEFAULT_SOCKET}: it would share the firewall table with "
                    "the managed plugin; stop it first", pytrace=False)
    daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd-managed"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="package")
def busybox_image(dockerd: DockerDaemon) -> str:
    return ensure_busybox_image(dockerd)


@pytest.fixture(scope="package")
def managed(dockerd: DockerDaemon, managed_plugin_dir: Path) -> Iterator[ManagedPlugin]:
    """pynet:latest installed and enabled; the leak check every 2 s against this dockerd."""
    links_before = pynet_links()  # another pynet's (a kernel test's, say) are not ours to judge
    plugin = ManagedPlugin(dockerd, managed_plugin_dir,
                           settings={"PYNET_LEAK_CHECK_INTERVAL": "2", "PYNET_LEAK_GRACE": "60"})
    try:
        plugin.install()
        yield plugin
    finally:
        if plugin.exists() and not plugin.enabled():
            plugin.enable()  # so dockerd can take down what still uses it
        errors = dockerd.remove_since(_empty_snapshot()) if dockerd.running() else []
        plugin.remove()
        _remove_pynet_firewall()
        left = pynet_links() - links_before
        assert not errors and not left, f"left behind: {errors} links {sorted(left)}"


@pytest.fixture(autouse=True)
def _cleanup_docker(request: pytest.FixtureRequest) -> Iterator[None]:
    if "dockerd" not in request.fixturenames:
        yield
        return
    daemon: DockerDaemon = request.getfixturevalue("dockerd")
    before = daemon.snapshot()
    yield
    plugin = request.getfixturevalue("managed") if "managed" in request.fixturenames else None
    if plugin is not None and plugin.exists() and not plugin.enabled():
        plugin.enable()
    errors = daemon.remove_since(before)
    if errors:
        pytest.fail("cleanup could not remove everything:\n" + "\n".join(errors), pytrace=False)


def _empty_snapshot():
    from tests.harness.dockerd import Snapshot
    return Snapshot()


def _remove_pynet_firewall() -> None:
    # pynet keeps its table and PYNET-FORWARD chain across restarts on purpose; the tier must
    # not leave them on the machine. No other pynet ran (the dockerd fixture checked).
    from driver.firewall.nft_firewall import NftFirewall
    NftFirewall().remove_all()

"""Fixtures for the end-to-end suite: one private dockerd and one pynet plugin per session.

Every test in tests/e2e is marked `e2e`. Any test that uses `dockerd` (directly or through
another fixture) gets `cleanup_docker` automatically: the containers and networks it
created (anything new since the test began, or named `pynet-t-*`) are removed afterwards,
even when the test fails, while the plugin is still up to answer Leave/DeleteEndpoint.
Throwaway network namespaces come from `make_netns` in tests/conftest.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # so `import tests.harness` works under plain `pytest` too
    sys.path.insert(0, str(_ROOT))

from tests.harness.busybox import ensure_busybox_image  # noqa: E402
from tests.harness.dockerd import (  # noqa: E402
    SHARED_DIRS,
    DockerDaemon,
    Snapshot,
    drop_empty_nft_tables,
    nft_tables,
    read_ip_forward,
    remove_empty_shared_dirs,
    restore_ip_forward,
)
from tests.harness.plugin import PluginProcess  # noqa: E402

NAME_PREFIX = "pynet-t-"
_HERE = Path(__file__).resolve().parent
# Session objects, so function-scoped fixtures can reach them without instantiating them.
_session: dict[str, object] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only ours: mark just the ones under tests/e2e.
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="package", autouse=True)
def _host_baseline() -> Iterator[None]:
    # Set up before, torn down after, every other e2e fixture: iptables-nft leaves empty
    # "ip filter"/"ip6 filter" tables behind once dockerd and the plugin removed their chains,
    # and /run/docker/plugins may have been made by the plugin rather than by dockerd.
    # dockerd and the plugin both turn net.ipv4.ip_forward on; put back what the host had.
    tables = nft_tables()
    absent = {d for d in SHARED_DIRS if not d.exists()}
    ip_forward = read_ip_forward()
    yield
    drop_empty_nft_tables(tables)
    remove_empty_shared_dirs(absent)
    restore_ip_forward(ip_forward)


@pytest.fixture(scope="package")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd"))
    daemon.start()
    _session["dockerd"] = daemon
    try:
        yield daemon
    finally:
        _session.pop("dockerd", None)
        daemon.stop()


@pytest.fixture(scope="package")
def docker_cli(dockerd: DockerDaemon) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`docker_cli("run", "--rm", ...)`: dockerd.cli bound to the session daemon."""
    return dockerd.cli


@pytest.fixture(scope="package")
def busybox_image(dockerd: DockerDaemon) -> str:
    return ensure_busybox_image(dockerd)


@pytest.fixture(scope="package")
def plugin_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pynet-state")


@pytest.fixture(scope="package")
def _plugin_session(plugin_state_dir: Path) -> Iterator[PluginProcess]:
    # Automatic subnets from the benchmark range too, like every address the suite uses.
    proc = PluginProcess(plugin_state_dir,
                         extra_env={"PYNET_DEFAULT_ADDRESS_POOLS": "base=198.19.224.0/19,size=24"})
    proc.start()
    _session["plugin"] = proc
    try:
        yield proc
    finally:
        # If dockerd is still up, let it tear down its pynet objects while the plugin answers.
        daemon = _session.get("dockerd")
        if isinstance(daemon, DockerDaemon) and daemon.running():
            daemon.remove_since(Snapshot())  # everything but built-in networks
        _session.pop("plugin", None)
        proc.stop()
        _remove_plugin_firewall()


@pytest.fixture
def plugin(_plugin_session: PluginProcess) -> PluginProcess:
    """The session's plugin, (re)started if an earlier test killed or stopped it. Tests may
    call .kill9(), .stop(), .restart(), .start() on it freely."""
    if not _plugin_session.running():
        _plugin_session.start()
    return _plugin_session


@pytest.fixture
def cleanup_docker(dockerd: DockerDaemon) -> Iterator[None]:
    before = dockerd.snapshot()
    yield
    errors: list[str] = []
    proc = _session.get("plugin")
    if isinstance(proc, PluginProcess) and not proc.running():
        try:  # a test that killed the plugin would otherwise make each removal wait ~30 s
            proc.start()
        except RuntimeError as e:
            errors.append(f"restarting the plugin for cleanup failed: {e}")
    errors += dockerd.remove_since(before, name_prefix=NAME_PREFIX)
    if errors:
        pytest.fail("cleanup_docker could not remove everything:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(autouse=True)
def _auto_cleanup_docker(request: pytest.FixtureRequest) -> None:
    # Tests that touch dockerd get cleanup_docker without asking for it.
    if "dockerd" in request.fixturenames:
        request.getfixturevalue("cleanup_docker")


def _remove_plugin_firewall() -> None:
    # The plugin keeps its PYNET-FORWARD chain and its `inet pynet` nftables table across
    # restarts on purpose; the suite must not leave them on the machine. We refused to start
    # over another live pynet, so they are ours.
    try:
        from driver.firewall.nft_firewall import NftFirewall
    except ImportError:
        return
    NftFirewall().remove_all()

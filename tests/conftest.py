"""Shared fixtures: a plugin app wired to in-memory fakes for fast tests, and throwaway
network namespaces for the tiers that need a real kernel."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pynet.app import Deps
from tests.harness.app_client import AppClient, app_client, fake_deps as _fake_deps
from tests.harness.netns import Namespaces, NetnsError, require_root


@pytest.fixture
def fake_deps() -> Deps:
    return _fake_deps()


@pytest.fixture
def plugin_client(fake_deps) -> AppClient:
    """`plugin_client(method, body=None, raw=None) -> (status, json)` over fake_deps."""
    return app_client(fake_deps, host_id="test-host")


@pytest.fixture
def make_netns() -> Iterator[Callable[..., str]]:
    """`name = make_netns()` (or `make_netns("tag")`) creates a throwaway network namespace
    `pnt-...`; all are deleted, after killing what runs inside, when the test ends. Needs
    root: fails (never skips) without it."""
    try:
        require_root()
    except NetnsError as exc:
        pytest.fail(str(exc), pytrace=False)
    spaces = Namespaces()
    yield spaces.make
    left = spaces.close()
    if left:
        pytest.fail(f"could not delete network namespaces {left}", pytrace=False)


@pytest.fixture
def ns(make_netns) -> str:
    """One throwaway network namespace (see make_netns)."""
    return make_netns()


@pytest.fixture(scope="session")
def managed_plugin_dir(tmp_path_factory: pytest.TempPathFactory):
    """The managed plugin's directory (config.json + rootfs/), built once per session by
    scripts/build-plugin.sh (tests/harness/managed_plugin.py); every tier installs from it."""
    from tests.harness.managed_plugin import BuildError, build_plugin
    try:
        return build_plugin(tmp_path_factory.mktemp("managed-plugin") / "plugin")
    except BuildError as exc:
        pytest.fail(str(exc), pytrace=False)

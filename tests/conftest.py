"""Shared fixtures: a plugin app wired to in-memory fakes for fast tests, and throwaway
network namespaces for the tiers that need a real kernel."""
from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pynet.app import Deps
from tests.harness.app_client import AppClient, app_client, fake_deps as _fake_deps
from tests.harness.netns import Namespaces, NetnsError, require_root


# Tiers that share the host's firewall, /run/docker/plugins or its dockerd binaries: two
# pytest sessions running them at once corrupt each other's state, so a session that
# collected any of them holds this lock until it ends (a second one waits, and says so).
SHARED_HOST_TIERS = frozenset({"e2e", "engines", "multihost", "storm", "managed", "fuzz", "bench_smoke"})
SHARED_HOST_LOCK = Path(os.environ.get("PYNET_TEST_LOCK", "/run/lock/pynet-tests.lock"))
_TESTS_DIR = Path(__file__).resolve().parent
_held_lock: list[int] = []


def _tier(item: pytest.Item) -> str:
    try:
        return Path(str(item.path)).resolve().relative_to(_TESTS_DIR).parts[0]
    except ValueError:
        return ""


def pytest_collection_finish(session: pytest.Session) -> None:
    tiers = sorted({_tier(item) for item in session.items} & SHARED_HOST_TIERS)
    if not tiers or _held_lock:
        return
    SHARED_HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(SHARED_HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"\n[pynet tests] tiers {', '.join(tiers)} share this host; waiting for another "
              f"test session to release {SHARED_HOST_LOCK}", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    _held_lock.append(fd)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _held_lock:
        os.close(_held_lock.pop())


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

"""Every Store backend behind one `store` fixture, so one suite keeps them all honest."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pynet_core.store.api import Store
from pynet_core.store.consul import ConsulStore
from pynet_core.store.local import LocalStore
from pynet_core.store.memory import MemoryStore
from tests.harness.consul import ConsulAgent


@pytest.fixture(scope="session")
def consul_agent() -> Iterator[ConsulAgent]:
    """One dev agent for the whole session; tests stay apart by key prefix."""
    with ConsulAgent() as agent:
        yield agent


@pytest.fixture
def consul_prefix() -> str:
    return f"pynet-test/{uuid.uuid4().hex[:12]}/"


def _make_consul(request: pytest.FixtureRequest) -> Callable[[], Store]:
    agent: ConsulAgent = request.getfixturevalue("consul_agent")
    prefix: str = request.getfixturevalue("consul_prefix")
    return lambda: ConsulStore(agent.addr, prefix=prefix)


def _make_local(request: pytest.FixtureRequest) -> Callable[[], Store]:
    path: Path = request.getfixturevalue("tmp_path") / "store.db"
    return lambda: LocalStore(str(path))


def _make_memory(request: pytest.FixtureRequest) -> Callable[[], Store]:
    shared = MemoryStore()  # "another instance" of an in-process store is the same one
    return lambda: shared


@pytest.fixture(
    params=[
        pytest.param(_make_memory, id="memory"),
        pytest.param(_make_local, id="local"),
        pytest.param(_make_consul, id="consul", marks=pytest.mark.consul),
    ]
)
def open_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    """Opens another handle on the same backing data (same file, same Consul prefix);
    every handle is closed after the test."""
    make = request.param(request)
    opened: list[Store] = []

    def _open() -> Store:
        opened.append(make())
        return opened[-1]

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()

"""Shared fixtures: a plugin app wired to in-memory fakes for fast tests."""
from __future__ import annotations

import pytest

from pynet.app import Deps, create_app
from pynet.settings import Settings
from pynet.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink


@pytest.fixture
def fake_deps() -> Deps:
    return Deps(store=MemoryStore(), netlink=FakeNetlink(), firewall=RecordingFirewall())


@pytest.fixture
def plugin_client(fake_deps):
    app = create_app(Settings(host_id="test-host"), fake_deps)
    client = app.test_client()

    def call(method: str, body=None, raw: bytes | None = None):
        import json
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        # Like Docker: no Content-Type header.
        resp = client.post(f"/{method}", data=data)
        return resp.status_code, resp.get_json(force=True)

    return call

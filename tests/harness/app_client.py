"""The plugin's app, built in-process, and a client that calls it the way Docker does.

    client = app_client(deps)                  # create_app(Settings(host_id=...), deps)
    status, answer = client.call("NetworkDriver.CreateNetwork", {...})
    client("Plugin.Activate")                  # the same as .call
    client.network, client.ipam, client.gate   # app.extensions["pynet"][...]

Every test that drives the app (unit, kernel) builds it here; `plugin_client` in
tests/conftest.py is one of these over fakes.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Flask

from pynet.app import Deps, create_app
from pynet.settings import Settings
from pynet_core.store.memory import MemoryStore
from tests.fakes.firewall import RecordingFirewall
from tests.fakes.netlink import FakeNetlink


def fake_deps() -> Deps:
    """An in-memory store, the strict fake kernel and the recording firewall."""
    return Deps(store=MemoryStore(), netlink=FakeNetlink(), firewall=RecordingFirewall())


class AppClient:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self._client = app.test_client()

    @property
    def services(self) -> dict[str, Any]:
        return self.app.extensions["pynet"]

    @property
    def deps(self) -> Deps:
        return self.services["deps"]

    @property
    def network(self):
        return self.services["network"]

    @property
    def ipam(self):
        return self.services["ipam"]

    @property
    def overlay(self):
        """The OverlayRuntime (None when built with overlay=False)."""
        return self.services["overlay"]

    @property
    def gate(self):
        return self.services["gate"]

    def call(self, method: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        """POST /<method> with `body` as JSON (or the bytes `raw`), and, like Docker, no
        Content-Type header. Returns (status, decoded JSON answer)."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        resp = self._client.post(f"/{method}", data=data)
        return resp.status_code, resp.get_json(force=True)

    __call__ = call


def app_client(deps: Deps | None = None, *, host_id: str = "test-host", settings: Settings | None = None,
               restore_on_start: bool = True, overlay: bool = True) -> AppClient:
    """create_app over `deps` (fakes if None) for host `host_id`; restore runs as at start.
    `overlay`: the app serves overlay networks (as in production; see pynet/app.py)."""
    app = create_app(settings or Settings(host_id=host_id), deps if deps is not None else fake_deps(),
                     restore_on_start=restore_on_start, overlay=overlay)
    return AppClient(app)

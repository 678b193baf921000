"""The Flask app: one socket serving both NetworkDriver and IpamDriver.

Every answer is JSON. Success is 200; a failure is a non-200 status with {"Err": ...}
(and "Error", the field Docker's IPAM client reads); an unknown method is 404, which Docker
reads as "not implemented".
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request

from ipam_driver.routes import ipam_handlers
from ipam_driver.service import IpamService

from . import deadline
from .errors import PynetError
from driver.firewall.api import Firewall
from driver.kinds import build_kinds
from driver.netlink.api import Netlink
from .wire import Body
from .readiness import RestoreGate
from driver.restore import restore
from driver.routes import network_handlers
from driver.service import NetworkService
from .settings import Settings
from .store.api import Store

log = logging.getLogger("pynet")

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
ACTIVATE = {"Implements": ["NetworkDriver", "IpamDriver"]}
# Calls answered without the store: they work before restore has run (see readiness.py).
STATELESS = frozenset({"Plugin.Activate", "NetworkDriver.GetCapabilities",
                       "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces"})


@dataclass
class Deps:
    """Everything that touches the outside world, built once and passed in."""
    store: Store
    netlink: Netlink
    firewall: Firewall


def build_deps(settings: Settings) -> Deps:
    from driver.firewall.nft_firewall import NftFirewall
    from driver.netlink.pyroute2_netlink import Pyroute2Netlink
    from .store.factory import open_store

    store = open_store(settings)  # --store local (sqlite in --state-dir) or consul
    return Deps(store=store, netlink=Pyroute2Netlink(), firewall=NftFirewall())


def create_app(settings: Settings | None = None, deps: Deps | None = None,
               restore_on_start: bool = True) -> Flask:
    settings = settings or Settings()
    deps = deps or build_deps(settings)
    kinds = build_kinds(deps.netlink, deps.firewall)
    network = NetworkService(deps.store, settings.host, kinds)
    ipam = IpamService(deps.store, settings.host, settings.default_pools,
                       block_size=settings.ipam_block_size,
                       host_routes=deps.netlink.routes)
    # With the store down, start anyway: restore is retried and calls answer 503 until then.
    gate = RestoreGate(lambda: restore(network, deps.netlink, deps.firewall),
                       restored=not restore_on_start)
    gate.start()

    handlers = {"Plugin.Activate": lambda b: ACTIVATE,
                **network_handlers(network), **ipam_handlers(ipam)}
    app = Flask("pynet")
    app.extensions["pynet"] = {"network": network, "ipam": ipam, "deps": deps, "gate": gate}

    @app.post("/<method>")
    def call(method: str) -> Response:
        started = time.monotonic()
        handler = handlers.get(method)
        body: Body | None = None
        if handler is None:
            status, answer = 404, {"Err": f"pynet does not implement {method}"}
        else:
            with deadline.budget():  # no chain of store calls may outlast dockerd's patience
                try:
                    body = Body(request.get_data())
                    if method not in STATELESS:
                        gate.ensure()  # state restored, or a 503 saying why not
                    status, answer = _invoke(method, handler, body)
                except PynetError as exc:  # the body itself is malformed, or state not restored
                    status, answer = exc.status, {"Err": exc.message, "Error": exc.message}
        log.info("%s %s -> %d %s(%.0f ms)", method, _ids(body), status,
                 f"{answer['Err']} " if status != 200 else "", (time.monotonic() - started) * 1000)
        return Response(json.dumps(answer), status=status, content_type=CONTENT_TYPE)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(exc) -> Response:
        body = {"Err": f"pynet does not implement {request.method} {request.path}"}
        return Response(json.dumps(body), status=404, content_type=CONTENT_TYPE)

    return app


def _invoke(method: str, handler, body: Body) -> tuple[int, dict[str, Any]]:
    try:
        return 200, handler(body)
    except PynetError as exc:
        return exc.status, {"Err": exc.message, "Error": exc.message}
    except Exception as exc:  # a bug: keep the traceback in the log, a sentence for Docker
        log.exception("%s failed unexpectedly", method)
        message = f"pynet hit an internal error in {method}: {type(exc).__name__}: {exc} (see the plugin log)"
        return 500, {"Err": message, "Error": message}


def _ids(body: Body | None) -> str:
    """The IDs of a call, cut to 12 characters, for the one-line log."""
    if body is None:
        return ""
    data = body.data
    parts = []
    for key in ("NetworkID", "EndpointID", "PoolID", "Pool", "Address"):
        value = data.get(key)
        if isinstance(value, str) and value:
            parts.append(f"{key}={value[:12] if key.endswith('ID') and '/' not in value else value}")
    return " ".join(parts)

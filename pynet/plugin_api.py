"""The plugin's HTTP surface: one POST route per protocol method, every answer JSON.

Success is 200; a failure is a non-200 status with {"Err": ...} (and "Error", the field
Docker's IPAM client reads); an unknown method is 404, which Docker reads as "not
implemented". This is the one place an error's category becomes an HTTP status (STATUS,
status_of), and the one place that knows how Docker reads a 404. Each call runs inside one
time budget (deadline.py) and, unless it is stateless, only once restore has run
(readiness.py). Nothing here knows a driver: the composition root (app.py) hands in the
table of handlers.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from flask import Flask, Response, request

from pynet_core import deadline

from . import metrics
from pynet_core.errors import ErrorCategory, PynetError, describe_error
from .readiness import RestoreGate
from pynet_core.wire import Body, printable

log = logging.getLogger("pynet")

Handler = Callable[[Body], dict]

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
# Docker's largest requests (a CreateNetwork with many options, a long portmap) are a few
# kilobytes; anything near this is not Docker, and must not cost memory or log space.
MAX_BODY = 1 << 20
# An Err names the value and the reason in a sentence; a message built from a client's
# value is cut here, whatever built it, so no answer echoes a large request back.
MAX_MESSAGE = 1000
# Calls answered without the store: they work before restore has run (see readiness.py).
STATELESS = frozenset({"Plugin.Activate", "NetworkDriver.GetCapabilities",
                       "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces"})

# What each category of failure answers. Every category has a status (a unit test holds it).
STATUS: dict[ErrorCategory, int] = {
    ErrorCategory.INVALID: 400,
    ErrorCategory.NOT_FOUND: 404,
    ErrorCategory.CONFLICT: 409,
    ErrorCategory.EXHAUSTED: 507,
    ErrorCategory.UNAVAILABLE: 503,
    ErrorCategory.CONTENTION: 503,
    ErrorCategory.BAD_RECORD: 409,
    ErrorCategory.UNSUPPORTED: 501,
    ErrorCategory.INTERNAL: 500,
}
# Docker reads a 404 from these calls as "the plugin does not implement this method" and goes
# on as if it had worked (moby drivers/remote/driver.go, plugins.IsNotFound): a container
# would start without its published ports. A network or endpoint they name that does not
# exist is the caller's mistake there: answered as INVALID, never 404.
NOT_FOUND_MEANS_UNIMPLEMENTED = frozenset({"NetworkDriver.ProgramExternalConnectivity",
                                           "NetworkDriver.RevokeExternalConnectivity"})


def plugin_app(handlers: dict[str, Handler], gate: RestoreGate) -> Flask:
    app = Flask("pynet")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    # No automatic OPTIONS answer (Flask would give an empty text/html 200): every method
    # but POST is a JSON 404 (not_found below).
    @app.post("/<method>", provide_automatic_options=False)
    def call(method: str) -> Response:
        started = time.monotonic()
        handler = handlers.get(method)
        body: Body | None = None
        if handler is None:
            status, answer = 404, {"Err": f"pynet does not implement {printable(method)}"}
        else:
            with deadline.budget():  # no chain of store calls may outlast dockerd's patience
                try:
                    body = Body(request.get_data())
                    if method not in STATELESS:
                        gate.ensure()  # state restored, or a 503 saying why not
                    status, answer = _invoke(method, handler, body)
                except PynetError as exc:  # the body itself is malformed, or state not restored
                    status, answer = status_of(method, exc), failure(exc.message)
        seconds = time.monotonic() - started
        shown = printable(method, 60)[1:-1]
        error = _escaped(answer['Err']) if status != 200 else None
        metrics.plugin_call(shown if handler is not None else "unknown", status, seconds)
        log.info("%s %s -> %d %s(%.1f ms)", shown, _ids(body), status,
                 f"{error} " if error else "", seconds * 1000,
                 extra=_fields(shown, body, status, seconds, error))
        return Response(json.dumps(answer), status=status, content_type=CONTENT_TYPE)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def not_found(exc) -> Response:
        message = f"pynet does not implement {request.method} {printable(request.path)}"
        return Response(json.dumps({"Err": _cut(message)}), status=404, content_type=CONTENT_TYPE)

    @app.errorhandler(413)
    def too_large(exc) -> Response:
        message = f"request body is larger than {MAX_BODY} bytes: not a plugin request"
        log.info("%s -> 413 %s", printable(request.path), message)
        return Response(json.dumps(failure(message)), status=413,
                        content_type=CONTENT_TYPE)

    @app.errorhandler(Exception)
    def unexpected(exc) -> Response:
        # Flask would answer HTML; Docker must always get JSON with Err.
        code = getattr(exc, "code", None) or 500
        if code == 500:
            log.exception("%s failed outside its handler", printable(request.path))
        message = f"pynet could not serve {printable(request.path)}: {type(exc).__name__}"
        return Response(json.dumps(failure(message)), status=code,
                        content_type=CONTENT_TYPE)

    return app


def _invoke(method: str, handler: Handler, body: Body) -> tuple[int, dict[str, Any]]:
    try:
        return 200, handler(body)
    except PynetError as exc:
        return status_of(method, exc), failure(exc.message)
    except Exception as exc:  # a bug: keep the traceback in the log, a sentence for Docker
        log.exception("%s failed unexpectedly", method)
        message = f"pynet hit an internal error in {method}: {describe_error(exc)} (see the plugin log)"
        return STATUS[ErrorCategory.INTERNAL], failure(message)


def status_of(method: str, exc: PynetError) -> int:
    """The HTTP status of `method` failing with `exc`: its category's, except that a call
    Docker treats as optional never answers 404 for a failure (see above)."""
    category = exc.category
    if category is ErrorCategory.NOT_FOUND and method in NOT_FOUND_MEANS_UNIMPLEMENTED:
        category = ErrorCategory.INVALID
    return STATUS[category]


def failure(message: str) -> dict[str, str]:
    """A failure's answer: Err for the network driver's client, Error for the IPAM one."""
    message = _cut(message)
    return {"Err": message, "Error": message}


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... ({len(message)} characters in all)"


def _ids(body: Body | None) -> str:
    """The IDs of a call, cut to 12 characters, for the one-line log."""
    if body is None:
        return ""
    data = body.data
    parts = []
    for key in ("NetworkID", "EndpointID", "PoolID", "Pool", "Address"):
        value = data.get(key)
        if isinstance(value, str) and value:
            shown = value[:12] if key.endswith("ID") and "/" not in value else value
            parts.append(f"{key}={_escaped(shown)}")
    return " ".join(parts)


def _fields(method: str, body: Body | None, status: int, seconds: float,
            error: str | None) -> dict[str, Any]:
    """The call's fields for --log-format json (pynet/logformat.py)."""
    data = body.data if body is not None else {}

    def text(key: str) -> str | None:
        value = data.get(key)
        return _escaped(value, 100) if isinstance(value, str) and value else None

    return {"call": method, "network": text("NetworkID"), "endpoint": text("EndpointID"),
            "pool": text("PoolID") or text("Pool"), "address": text("Address"),
            "duration_ms": round(seconds * 1000, 1), "status": status,
            "outcome": metrics.outcome(status), "error": error}


def _escaped(text: str, limit: int = 300) -> str:
    """Client text as one log line: control characters escaped, length bounded."""
    return printable(text, limit)[1:-1]

"""`--log-format json`: one JSON object per log line, for log shippers.

Every line has time (RFC 3339, UTC), level, logger and message; a plugin call's line
(pynet/plugin_api.py) adds call, network, endpoint, duration_ms, status and outcome.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The fields a plugin call's log line carries (set with logging's `extra`).
CALL_FIELDS = ("call", "network", "endpoint", "pool", "address", "duration_ms", "status", "outcome",
               "error")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CALL_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def gunicorn_logconfig(log_format: str, level: str) -> dict:
    """gunicorn's logconfig_dict: its own lines in the same format as pynet's, on stderr."""
    fmt = {"()": "pynet.logformat.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "pynet", "stream": "ext://sys.stderr"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"pynet": fmt},
        "handlers": {"stderr": handler},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
                    "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False}},
    }

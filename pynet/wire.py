"""Reading Docker's plugin requests: the only place that checks field names and types.

Docker sends no Content-Type and an empty body for calls without arguments, so the body
is decoded by hand rather than trusted to Flask's JSON handling.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .errors import BadRequest

# Docker's IDs are 64 hex characters. IDs become store keys, so nothing path-like passes.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class Body:
    def __init__(self, raw: bytes) -> None:
        if not raw.strip():
            self.data: dict[str, Any] = {}
            return
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}")
        self.data = data

    def id(self, name: str) -> str:
        value = self.data.get(name)
        if not isinstance(value, str) or not _ID.match(value):
            raise BadRequest(f"{name} must be an ID of 1-128 letters and digits, got {value!r}")
        return value

    def string(self, name: str, required: bool = False) -> str:
        value = self.data.get(name)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value):
            raise BadRequest(f"{name} must be a{' non-empty' if required else ''} string, got {value!r}")
        return value

    def mapping(self, name: str) -> dict:
        value = self.data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise BadRequest(f"{name} must be an object, got {type(value).__name__}")
        return value

    def strings(self, name: str) -> dict[str, str]:
        value = self.mapping(name)
        for key, item in value.items():
            if not isinstance(item, str):
                raise BadRequest(f"{name}[{key!r}] must be a string, got {item!r}")
        return value

    def items(self, name: str) -> list:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise BadRequest(f"{name} must be a list, got {type(value).__name__}")
        return value

    def flag(self, name: str) -> bool:
        value = self.data.get(name, False)
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false, got {value!r}")
        return value

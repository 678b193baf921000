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
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Docker's requests nest a few levels (Options -> generic -> a driver option); pynet refuses
# deeper bodies itself rather than rely on the JSON parser's recursion limit, which differs
# between Python versions (3.11 stops at ~1,000 levels, 3.13 parses several thousand).
MAX_DEPTH = 64


class Body:
    def __init__(self, raw: bytes) -> None:
        if not raw.strip():
            self.data: dict[str, Any] = {}
            return
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest("request body is nested too deeply to be a plugin request") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}")
        _refuse_broken_text(data)
        self.data = data

    def id(self, name: str) -> str:
        value = self.data.get(name)
        # fullmatch: `$` would let a trailing newline through, and kernel names are made
        # of an ID's first characters.
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise BadRequest(f"{name} must be an ID of 1-128 letters and digits, got "
                             f"{printable(value)}")
        return value

    def string(self, name: str, required: bool = False) -> str:
        value = self.data.get(name)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value):
            raise BadRequest(f"{name} must be a{' non-empty' if required else ''} string, got "
                             f"{printable(value)}")
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
                raise BadRequest(f"{name}[{printable(key)}] must be a string, got {printable(item)}")
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
            raise BadRequest(f"{name} must be true or false, got {printable(value)}")
        return value


def printable(value: Any, limit: int = 80) -> str:
    """repr() of a client's value for a message or a log line: escaped (no forged line),
    and cut (a 5 MB ID must not come back as a 5 MB answer)."""
    text = repr(value)
    if not text.isascii():
        text = ascii(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _refuse_broken_text(data: Any) -> None:
    """JSON may carry lone surrogates (\\ud800), which no store, log or kernel name can hold:
    refuse them here, once, instead of failing deep inside a call; and bodies nested deeper
    than MAX_DEPTH. Iterative, so a body nested as deep as the JSON parser allows cannot
    exhaust the stack."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)) and depth > MAX_DEPTH:
            raise BadRequest(f"request body is nested too deeply to be a plugin request "
                             f"(more than {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item.keys())
            pending.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            pending.extend((value, depth + 1) for value in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(f"request body holds text that is not valid Unicode: "
                                 f"{printable(item)}") from None

"""The checks of a stored record's fields, one set for every record of both drivers (pure).

Records are read from a store other clients can write, so each model's from_dict checks
every field once, at the edge of the model. The checks are here; a family of records (the
network driver's, IPAM's, the overlay's) says through its `Fields` which exceptions they
raise and how a wrong value is shown, so that each family's messages stay what they are.

Messages have one grammar: `'name' must <be what>, got <the value>` for a wrong type, and
`'name'<sep> <the value> is not <what>` for a value of the right type that is wrong.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REQUIRED: Any = object()  # a field with no default: missing is an error

Shown = Callable[[Any], str]


# --- how a value is shown in a message ---------------------------------------------------
# Stored records nest a few levels (an address space's pools and holders are the deepest).
# Deeper values are refused by this check, not left to the JSON parser's recursion limit,
# which differs between Python versions (3.11 stops near 1,000 levels, 3.13 parses several
# thousand): the same stored value is refused, for the same reason, on every Python.
MAX_RECORD_DEPTH = 32


def nested_deeper_than(value: Any, limit: int = MAX_RECORD_DEPTH) -> bool:
    """Whether a decoded JSON value nests objects and arrays more than `limit` levels
    (iterative: a value as deep as the parser allows cannot exhaust the stack)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def cut(value: Any) -> str:
    """The value's repr, cut after 60 characters."""
    return f"{value!r:.60}"


def shown(value: Any) -> str:
    """The value's repr, cut to 60 characters with '...' where it was cut."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def typed(value: Any) -> str:
    """The value's type and repr (`int 5`), for a value of the wrong type."""
    return f"{type(value).__name__} {shown(value)}"


def type_name(value: Any) -> str:
    return type(value).__name__


def is_integer(value: Any) -> bool:
    """An integer as JSON has it: bool is an int to Python, never to a record."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    return is_integer(value) and value >= 0


# --- the checks ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Fields:
    """The field checks of one family of records.

    missing: the exception of a required field that is absent (given the field's name);
    error: of a value that is not what pynet writes; type_error: of one of the wrong type
    (None: error's); got: how a wrong-typed value is shown; show and sep: how a wrong value is
    shown in `'name'<sep> <value> is not <what>`."""
    missing: Callable[[str], Exception]
    error: Callable[[str], Exception] = ValueError
    type_error: Callable[[str], Exception] | None = None
    got: Shown = cut
    show: Shown = cut
    sep: str = ":"

    def wrong_type(self, name: str, expected: str, value: Any, got: Shown | None = None) -> Exception:
        """`'name' must <expected>, got <value>` (expected: "be a string", "hold ...")."""
        return (self.type_error or self.error)(f"{name!r} must {expected}, got {(got or self.got)(value)}")

    def wrong_value(self, name: str, value: Any, what: str) -> Exception:
        return self.error(f"{name!r}{self.sep} {self.show(value)} is not {what}")

    def field(self, data: Mapping[str, Any], name: str, default: Any = REQUIRED) -> Any:
        if name in data:
            return data[name]
        if default is REQUIRED:
            raise self.missing(name)
        return default

    def object(self, value: Any, name: str, got: Shown | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.wrong_type(name, "be an object", value, got)
        return value

    def string(self, value: Any, name: str, expected: str = "be a string",
               got: Shown | None = None) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(name, expected, value, got)
        return value

    def text(self, data: Mapping[str, Any], name: str, default: Any = REQUIRED, *,
             optional: bool = False, pattern: re.Pattern | None = None,
             got: Shown | None = None) -> Any:
        """A string field (optional: null too); a missing one is `default`, or an error.
        PATTERN: the whole string must match it (`... is not a valid <name>`)."""
        if name not in data and default is not REQUIRED:
            return default
        value = self.field(data, name)
        if value is None and optional:
            return None
        self.string(value, name, got=got)
        if pattern is not None and not pattern.fullmatch(value):
            raise self.wrong_value(name, value, f"a valid {name}")
        return value

    def matching(self, value: Any, name: str, pattern: re.Pattern, what: str) -> str:
        """A string that PATTERN matches whole, else `... is not <what>`, whatever its type."""
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise self.wrong_value(name, value, what)
        return value

    def of_types(self, data: Mapping[str, Any], types: Mapping[str, tuple[type, ...]],
                 label: str = "field") -> None:
        """Each present field of TYPES of one of its types (a bool is an int only where bool
        is named): `<label> 'name' has the wrong type: <value>`."""
        for name, allowed in types.items():
            if name in data and (not isinstance(data[name], allowed)
                                 or (bool not in allowed and isinstance(data[name], bool))):
                raise self.error(f"{label} {name!r} has the wrong type: {self.got(data[name])}")

    def flag(self, data: Mapping[str, Any], name: str, default: bool) -> bool:
        value = data.get(name, default)
        if not isinstance(value, bool):
            raise self.wrong_type(name, "be true or false", value)
        return value

    def number(self, data: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
        """An optional integer from LOW to HIGH (null or absent: None)."""
        value = data.get(name)
        if value is None:
            return None
        if not is_integer(value) or not low <= value <= high:
            raise self.wrong_type(name, f"be a number from {low} to {high}", value)
        return value

    def integer(self, data: Mapping[str, Any], name: str, low: int, high: int) -> int:
        """A required integer (not a float such as 4096.0), from LOW to HIGH."""
        value = self.field(data, name)
        if not is_integer(value):
            raise self.wrong_type(name, "be an integer", value)
        if not low <= value <= high:
            raise self.error(f"{name!r} {value} is outside {low}..{high}")
        return value

    def listed(self, data: Mapping[str, Any], name: str, check: Callable[[Any, str], Any],
               got: Shown | None = None) -> tuple:
        """A list field (absent: empty), CHECK(item, name) on each item."""
        value = data.get(name, [])
        if not isinstance(value, (list, tuple)):  # tuple: a record not yet through JSON
            raise self.wrong_type(name, "be a list", value, got)
        return tuple(check(item, name) for item in value)

    def parsed(self, value: Any, name: str, parse: Callable[[str], Any], what: str, *,
               expected: str = "be a string") -> Any:
        """PARSE(value) of a string (an address, a CIDR): a string that does not parse
        (PARSE raises ValueError) is `... is not <what>`."""
        self.string(value, name, expected)
        try:
            return parse(value)
        except ValueError:
            raise self.wrong_value(name, value, what) from None

"""Errors that become a plugin answer. Each message says what, which value, and why.

An error says what went wrong in the domain's words, its `category`; it knows nothing of
HTTP. The plugin's HTTP surface (pynet/plugin_api.py) is the one place a category becomes a
status, and the one place that knows how Docker reads those statuses. A subclass that sets
no category has its parent's.
"""
from __future__ import annotations

from enum import Enum


class ErrorCategory(Enum):
    INVALID = "invalid"          # the caller sent something malformed or an unacceptable value
    NOT_FOUND = "not found"      # the call names a network, endpoint, pool... that does not exist
    CONFLICT = "conflict"        # it clashes with existing state (overlap, address in use, name taken)
    EXHAUSTED = "exhausted"      # no free pool or address left
    UNAVAILABLE = "unavailable"  # the store or the kernel could not be reached in time
    CONTENTION = "contention"    # others kept winning the race for the same state; may be retried
    BAD_RECORD = "bad record"    # the store holds a record pynet does not write: the store's fault
    UNSUPPORTED = "unsupported"  # this host lacks a feature pynet needs
    INTERNAL = "internal"        # pynet itself failed (a refusal it did not foresee, a bug)


class PynetError(Exception):
    """A failure pynet reports to Docker as {"Err": message}, answered by its `category`."""

    category = ErrorCategory.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(PynetError):
    """The caller sent something malformed or an unacceptable value."""

    category = ErrorCategory.INVALID


class NotFound(PynetError):
    category = ErrorCategory.NOT_FOUND


class Conflict(PynetError):
    """The request clashes with existing state (overlap, address in use, name taken)."""

    category = ErrorCategory.CONFLICT


class Exhausted(PynetError):
    """No free pool or address left."""

    category = ErrorCategory.EXHAUSTED


class BackendUnavailable(PynetError):
    """The store or the kernel could not be reached in time."""

    category = ErrorCategory.UNAVAILABLE


class StoreContention(PynetError):
    """Compare-and-set kept losing races; the caller may retry."""

    category = ErrorCategory.CONTENTION


class BadRecord(PynetError, ValueError):
    """A record read from the store is not what pynet writes (wrong types, not JSON, not
    UTF-8, a bad address). It is the store's fault, not the caller's: the answer names the
    key and the reason, never a traceback (and never an internal error). A ValueError too, so
    code that skips unreadable records keeps doing so."""

    category = ErrorCategory.BAD_RECORD

    def __init__(self, key: str, reason: str):
        super().__init__(f"the store's record at {key} is unreadable: {reason}")
        self.key = key
        self.reason = reason


def describe_error(exc: BaseException) -> str:
    """An exception as a sentence for an answer or a log: a PynetError's own message (it
    already says what, which value and why), anything else its type and text."""
    return exc.message if isinstance(exc, PynetError) else f"{type(exc).__name__}: {exc}"

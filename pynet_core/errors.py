"""Errors that become a plugin answer. Each message says what, which value, and why."""
from __future__ import annotations


class PynetError(Exception):
    """A failure pynet reports to Docker as {"Err": message} with `status`."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(PynetError):
    """The caller sent something malformed or an unacceptable value."""

    status = 400


class NotFound(PynetError):
    status = 404


class Conflict(PynetError):
    """The request clashes with existing state (overlap, address in use, name taken)."""

    status = 409


class Exhausted(PynetError):
    """No free pool or address left."""

    status = 507


class BackendUnavailable(PynetError):
    """The store or the kernel could not be reached in time."""

    status = 503


class StoreContention(PynetError):
    """Compare-and-set kept losing races; the caller may retry."""

    status = 503


class BadRecord(PynetError, ValueError):
    """A record read from the store is not what pynet writes (wrong types, not JSON, not
    UTF-8, a bad address). It is the store's fault, not the caller's: the answer names the
    key and the reason, never a traceback (and never a 500). A ValueError too, so code that
    skips unreadable records keeps doing so."""

    status = 409

    def __init__(self, key: str, reason: str):
        super().__init__(f"the store's record at {key} is unreadable: {reason}")
        self.key = key
        self.reason = reason

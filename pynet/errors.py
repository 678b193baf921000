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


class BadStoreRecord(PynetError):
    """A record in the shared store is not what pynet writes (a hand or another host wrote
    it), and the call cannot go on without it: the store's fault, not the caller's nor a bug."""

    status = 502

    def __init__(self, key: str, reason: str):
        super().__init__(f"the store's record {key} is unusable: {reason} (pynet did not write it "
                         "so; fix or delete that key)")
        self.key = key
        self.reason = reason

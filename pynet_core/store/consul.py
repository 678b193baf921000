"""The Consul store: the contract on Consul's KV, through py-consul.

Version = the key's ModifyIndex (a Raft index, so it only grows). Uniqueness rests on CAS
alone: create is `?cas=0`, replace is `?cas=N`, and everything multi-key (and every delete,
see `delete`) goes through the all-or-nothing `/v1/txn`. Reads use Consul's default
consistency: a stale read can only make a later CAS fail and be retried, never win.

Every HTTP call is bounded by `timeout` (watch: by its own timeout plus `timeout`), and any
failure to talk to Consul becomes BackendUnavailable naming the address and the operation,
so the plugin can still answer dockerd within its 5 s even with Consul down or leaderless.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import consul
import requests

from .. import deadline
from ..errors import BackendUnavailable
from .api import Entry, Op

# Consul 1.8 rejects a /v1/txn with more operations (413 "Transaction contains too many
# operations (65 > 64)"); newer releases allow 128.
MAX_TXN_OPS = 64
_VERBS = ("create", "cas", "delete", "check_absent", "check_version")
# Inside ConsulStore the method `list` shadows the builtin for type checkers, so the
# class body spells its list types through these aliases.
_Ops = list[Op]
_TxnOps = list[dict[str, Any]]


class ConsulStore:
    def __init__(
        self,
        addr: str,
        token: str | None = None,
        scheme: str = "http",
        ca_cert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        verify: bool = True,
        prefix: str = "pynet/",
        timeout: float = 3.0,
    ) -> None:
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or "/" in addr:
            raise ValueError(f"consul address {addr!r} is not host:port (e.g. 127.0.0.1:8500)")
        if timeout <= 0:
            raise ValueError(f"consul timeout must be positive, not {timeout}")
        self.addr = addr
        self.timeout = timeout
        self._prefix = prefix
        cert = (client_cert, client_key) if client_cert and client_key else client_cert
        self._c = consul.Consul(
            host=host, port=int(port), scheme=scheme, verify=(ca_cert or True) if verify else False,
            cert=cert, connections_timeout=timeout,
        )
        # py-consul lets CONSUL_HTTP_TOKEN override the token it is given; ours is explicit.
        self._c.token = token
        # Never through HTTP(S)_PROXY from the environment (requests honours it by default):
        # the ACL token would travel to the proxy. pynet talks to its agent directly.
        self._c.http.session.trust_env = False
        # Inside a plugin call, no request may outlive the call's budget (driver/deadline.py).
        own_timeout = self._c.http.timeout
        self._c.http.timeout = lambda params: deadline.clamp(own_timeout(params))  # type: ignore[method-assign]

    def __repr__(self) -> str:  # never shows the token
        return f"ConsulStore(addr={self.addr!r}, prefix={self._prefix!r})"

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        with self._call(f"reading key {key!r}"):
            _, item = self._c.kv.get(self._prefix + key)
        return self._entry(item) if item else None

    def list(self, prefix: str) -> list[Entry]:
        with self._call(f"listing prefix {prefix!r}"):
            _, items = self._c.kv.get(self._prefix + prefix, recurse=True)
        return sorted((self._entry(i) for i in items or ()), key=lambda e: e.key)

    def leader(self) -> str:
        """The Consul cluster leader's address, "" when it has none (`pynet status`)."""
        with self._call("asking for the cluster leader"):
            return str(self._c.status.leader() or "")

    def watch(self, prefix: str, since: int, timeout: float) -> int:
        """A blocking query on the prefix. Consul may add up to timeout/16 of jitter, and
        like the other backends it may return early without a change under the prefix
        (it does when the prefix holds no keys and a KV write happens anywhere)."""
        wait_ms = int(timeout * 1000)
        # index=0 or wait=0 would not block (wait=0 means Consul's 5-minute default).
        blocking = since > 0 and wait_ms >= 1
        with self._call(f"watching prefix {prefix!r}"):
            index, _ = self._c.kv.get(
                self._prefix + prefix, recurse=True, keys=True,
                index=since if blocking else None, wait=f"{wait_ms}ms" if blocking else None,
            )
        return int(index)

    # -- writes --------------------------------------------------------------------------

    def create(self, key: str, value: str) -> bool:
        with self._call(f"creating key {key!r}"):
            return bool(self._c.kv.put(self._prefix + key, value.encode(), cas=0))

    def cas(self, key: str, value: str, version: int) -> bool:
        if version < 1:  # ?cas=0 would mean create-if-absent, not "at version 0"
            return False
        with self._call(f"replacing key {key!r} at version {version}"):
            return bool(self._c.kv.put(self._prefix + key, value.encode(), cas=version))

    def delete(self, key: str, version: int | None = None) -> bool:
        # Not DELETE ?cas=N: Consul answers true for a key that is absent, and plain
        # DELETE cannot say whether the key existed. The txn checks first, atomically.
        at = "" if version is None else f" at version {version}"
        return self._transaction([Op("delete", key, version=version)], f"deleting key {key!r}{at}")

    def transaction(self, ops: _Ops) -> bool:
        first = f" (first key {ops[0].key!r})" if ops else ""
        return self._transaction(ops, f"applying a transaction of {len(ops)} ops{first}")

    def _transaction(self, ops: _Ops, what: str) -> bool:
        checks: _TxnOps = []
        writes: _TxnOps = []
        for op in ops:
            c, w = self._txn_ops(op)
            checks += c
            writes += w
        # Consul applies txn ops in order, each seeing the ones before; the contract checks
        # every op against the state *before* the transaction. Running all checks first,
        # then all writes, gives exactly that.
        payload = [{"KV": kv} for kv in checks + writes]
        if len(payload) > MAX_TXN_OPS:
            raise ValueError(
                f"transaction of {len(ops)} store ops needs {len(payload)} consul operations; "
                f"consul 1.8 accepts at most {MAX_TXN_OPS} per transaction: split it"
            )
        if any(kv.get("Index", 1) < 1 for kv in checks):  # no key is ever at version < 1
            return False
        if not payload:
            return True
        with self._call(what):
            return bool(self._c.http.put(
                _txn_result, "/v1/txn", data=json.dumps(payload), headers=self._c.prepare_headers()
            ))

    def _txn_ops(self, op: Op) -> tuple[_TxnOps, _TxnOps]:
        """(checks, writes) for one store op, as Consul txn KV operations."""
        if op.verb not in _VERBS:
            raise ValueError(f"unknown store operation {op.verb!r}")
        key = self._prefix + op.key
        index = -1 if op.version is None else op.version
        if op.verb in ("create", "check_absent"):
            check: dict[str, Any] = {"Verb": "check-not-exists", "Key": key}
        elif op.verb == "delete" and op.version is None:
            check = {"Verb": "get", "Key": key}  # fails the txn if the key is absent
        else:
            check = {"Verb": "check-index", "Key": key, "Index": index}
        if op.verb in ("create", "cas"):
            value = base64.b64encode(op.value.encode()).decode()
            return [check], [{"Verb": "set", "Key": key, "Value": value}]
        if op.verb == "delete":
            return [check], [{"Verb": "delete", "Key": key}]
        return [check], []

    # -- plumbing ------------------------------------------------------------------------

    def _entry(self, item: dict[str, Any]) -> Entry:
        value = item.get("Value")  # bytes, or None for an empty value
        # Bytes that are not UTF-8 (written by another client) must not fail the whole
        # listing: they are kept, escaped, and refused by records.checked_load for that key alone.
        text = value.decode("utf-8", "surrogateescape") if value else ""
        return Entry(item["Key"][len(self._prefix):], text, item["ModifyIndex"])

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Turn every way of failing to talk to Consul into one actionable error."""
        left = deadline.remaining()
        if left is not None and left <= 0:
            elsewhere = deadline.spent_elsewhere(share=0.5)
            if elsewhere is not None:
                # The time went to the kernel or a sync, not to Consul: say so.
                raise BackendUnavailable(
                    f"this plugin call used up its {deadline.CALL_BUDGET:g}s before {what}: "
                    f"{elsewhere[1]:.1f}s of it went to {elsewhere[0]} (consul at {self.addr} "
                    "was not the cause)")
            raise BackendUnavailable(
                f"consul at {self.addr} is answering too slowly: this plugin call used up its "
                f"{deadline.CALL_BUDGET:g}s before {what}; is the agent up and does its cluster have a leader?"
            )
        waited = deadline.clamp(self.timeout)
        try:
            yield
        except requests.Timeout:
            within = (f"within {self.timeout}s" if waited is None or waited >= self.timeout
                      else f"in the {deadline.CALL_BUDGET:g}s one plugin call may take")
            elsewhere = deadline.spent_elsewhere(share=0.1)
            if waited is not None and waited < self.timeout and elsewhere is not None:
                within += f", of which {elsewhere[1]:.1f}s went to {elsewhere[0]} first"
            raise BackendUnavailable(
                f"consul at {self.addr} did not answer {within} ({what}); "
                "is the agent up and does its cluster have a leader?"
            ) from None
        except requests.exceptions.SSLError as e:
            raise BackendUnavailable(f"consul at {self.addr}: TLS failed ({what}): {_root(e)}") from None
        except requests.ConnectionError as e:
            raise BackendUnavailable(
                f"consul at {self.addr} could not be reached ({what}): {_root(e)}"
            ) from None
        except consul.ACLPermissionDenied as e:
            raise BackendUnavailable(
                f"consul at {self.addr} refused access ({what}): {str(e).strip()}; give the "
                f"store an ACL token with key read/write on {self._prefix!r}"
            ) from None
        except consul.ConsulException as e:
            detail = str(e).strip()
            if "No cluster leader" in detail:
                raise BackendUnavailable(f"consul at {self.addr} has no cluster leader ({what})") from None
            raise BackendUnavailable(f"consul at {self.addr} failed ({what}): {detail[:200]}") from None

    def close(self) -> None:
        self._c.http.session.close()


def _txn_result(response: Any) -> bool:
    """200: applied. 409: a check failed and Consul rolled everything back -- unless the
    failure was an ACL denial, which Consul also reports as 409 and must not look like
    a lost race (the caller would retry in vain)."""
    if response.code == 409:
        errors = json.loads(response.body).get("Errors") or []
        if any(e.get("What") == "Permission denied" for e in errors):
            raise consul.ACLPermissionDenied("Permission denied")
        return False
    if response.code == 403:
        raise consul.ACLPermissionDenied(response.body)
    if response.code != 200:
        raise consul.ConsulException(f"{response.code} {response.body}")
    return True


def _root(e: BaseException) -> str:
    """The innermost cause (e.g. "[Errno 111] Connection refused"), not requests' wrapping."""
    while e.__cause__ or e.__context__:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return str(e)


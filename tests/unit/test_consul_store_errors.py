"""ConsulStore decisions that need no agent: argument checks, what is refused before any
I/O, and how a /v1/txn answer is read. The address below has nothing listening, so any
call that did reach the network would raise BackendUnavailable instead."""
from __future__ import annotations

import json

import consul
import pytest
from consul.base import Response

from pynet_core.store.api import Op
from pynet_core.store.consul import MAX_TXN_OPS, ConsulStore, _txn_result

NOWHERE = "127.0.0.1:1"


@pytest.mark.parametrize("addr", ["127.0.0.1", ":8500", "127.0.0.1:http", "http://127.0.0.1:8500", ""])
def test_bad_address_is_refused_up_front(addr: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        ConsulStore(addr)


def test_token_stays_out_of_repr_even_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-token")
    store = ConsulStore("[::1]:8500", token="s3cr3t")
    assert "s3cr3t" not in repr(store) and store._c.token == "s3cr3t"  # explicit beats env


def test_oversized_transaction_is_refused_before_any_io() -> None:
    store = ConsulStore(NOWHERE)
    with pytest.raises(ValueError, match=f"needs {MAX_TXN_OPS + 2} consul operations"):
        store.transaction([Op("check_absent", f"k{i}") for i in range(MAX_TXN_OPS)] + [Op("create", "x", "")])
    with pytest.raises(ValueError, match="unknown store operation 'put'"):
        store.transaction([Op("put", "k", "v")])


@pytest.mark.parametrize(
    "op", [Op("cas", "k", "v", 0), Op("check_version", "k", version=-3), Op("delete", "k", version=0)]
)
def test_versions_below_one_never_match_and_need_no_io(op: Op) -> None:
    store = ConsulStore(NOWHERE)
    assert not store.transaction([Op("create", "other", "v"), op])
    if op.verb == "cas":
        assert not store.cas(op.key, op.value, 0)


def _answer(code: int, errors: list[str] | None = None, body: str | None = None) -> Response:
    if body is None:
        body = json.dumps({"Results": None, "Errors": [{"OpIndex": i, "What": w} for i, w in enumerate(errors or [])]})
    return Response(code, {}, body)


def test_txn_answer_409_from_a_check_is_false() -> None:
    assert _txn_result(_answer(200, body='{"Results": [], "Errors": null}')) is True
    assert _txn_result(_answer(409, ['failed to check index, key "pynet/k" doesn\'t exist'])) is False


@pytest.mark.parametrize("answer", [_answer(409, ["Permission denied", "Permission denied"]),
                                    _answer(403, body="ACL not found")])
def test_txn_answer_acl_denial_is_an_error_not_a_lost_race(answer: Response) -> None:
    with pytest.raises(consul.ACLPermissionDenied):
        _txn_result(answer)


def test_txn_answer_other_failures_raise() -> None:
    with pytest.raises(consul.ConsulException, match="500 No cluster leader"):
        _txn_result(_answer(500, body="No cluster leader"))

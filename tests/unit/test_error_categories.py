"""Errors carry a category; only the HTTP edge (pynet/plugin_api.py) turns it into a status,
and only the edge knows that Docker reads a 404 from some calls as "not implemented"."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from driver.netlink.api import NoSuchLink, NotSupported
from driver.protocol import ProgramExternal
from pynet.plugin_api import NOT_FOUND_MEANS_UNIMPLEMENTED, STATUS, plugin_app, status_of
from pynet.readiness import RestoreGate
from pynet_core.errors import (BackendUnavailable, BadRecord, BadRequest, Conflict, ErrorCategory, Exhausted,
                               NotFound, PynetError, StoreContention, describe_error)
from tests.harness.app_client import app_client

REPO = Path(__file__).resolve().parents[2]
NID, EID = "a" * 64, "e" * 64
OPTIONAL = sorted(NOT_FOUND_MEANS_UNIMPLEMENTED)


def test_every_category_has_one_status_and_none_is_success():
    assert set(STATUS) == set(ErrorCategory)
    assert all(isinstance(s, int) and 400 <= s < 600 for s in STATUS.values())


@pytest.mark.parametrize("error, status", [
    (PynetError, 500), (BadRequest, 400), (NotFound, 404), (Conflict, 409), (Exhausted, 507),
    (BackendUnavailable, 503), (StoreContention, 503), (NotSupported, 501)])
def test_each_error_answers_the_status_it_always_did(error, status):
    assert status_of("NetworkDriver.Join", error("x")) == status


def test_a_bad_record_is_a_409_never_a_500():
    assert status_of("IpamDriver.RequestAddress", BadRecord("v1/k", "not JSON")) == 409


@pytest.mark.parametrize("method", OPTIONAL)
@pytest.mark.parametrize("category", list(ErrorCategory))
def test_a_call_docker_treats_as_optional_never_answers_404(method, category):
    error = type("Failure", (PynetError,), {"category": category})("x")
    assert status_of(method, error) != 404


def test_docker_reads_404_as_not_implemented_only_for_the_external_connectivity_calls():
    assert NOT_FOUND_MEANS_UNIMPLEMENTED == {"NetworkDriver.ProgramExternalConnectivity",
                                             "NetworkDriver.RevokeExternalConnectivity"}
    assert status_of("NetworkDriver.ProgramExternalConnectivity", NotFound("x")) == 400
    assert status_of("NetworkDriver.Join", NotFound("x")) == 404
    assert status_of("IpamDriver.ReleasePool", NotFound("x")) == 404


def test_the_service_says_not_found_and_the_edge_answers_400(fake_deps):
    client = app_client(fake_deps)
    request = ProgramExternal(NID, EID, ())
    with pytest.raises(NotFound, match="is not a pynet network") as caught:
        client.services["network"].program_external(request)
    status, answer = client("NetworkDriver.ProgramExternalConnectivity",
                            {"NetworkID": NID, "EndpointID": EID, "Options": {}})
    assert (status, answer) == (400, {"Err": caught.value.message, "Error": caught.value.message})


class Gone(NotFound):
    """As the netlink API's named errors do: a subclass that sets no category."""


class GoneForGood(Gone):
    pass


class Stuck(BackendUnavailable):
    pass


class Odd(PynetError):
    pass


@pytest.mark.parametrize("error, category, status", [
    (Gone, ErrorCategory.NOT_FOUND, 404), (GoneForGood, ErrorCategory.NOT_FOUND, 404),
    (Stuck, ErrorCategory.UNAVAILABLE, 503), (Odd, ErrorCategory.INTERNAL, 500),
    (NoSuchLink, ErrorCategory.INVALID, 400)])
def test_a_subclass_without_its_own_category_has_its_parents(error, category, status):
    assert "category" not in vars(error)
    assert error("x").category is category
    assert status_of("NetworkDriver.Join", error("x")) == status


def test_a_subclass_is_answered_by_its_parents_category_over_http():
    def handler(body):
        raise GoneForGood("endpoint e is gone")

    app = plugin_app({"NetworkDriver.Join": handler, "NetworkDriver.ProgramExternalConnectivity": handler},
                     RestoreGate(lambda: None, restored=True))
    client = app.test_client()
    for method, status in (("NetworkDriver.Join", 404), ("NetworkDriver.ProgramExternalConnectivity", 400)):
        resp = client.post(f"/{method}", data=b"{}")
        assert resp.status_code == status
        assert resp.get_data() == b'{"Err": "endpoint e is gone", "Error": "endpoint e is gone"}'


def _python_files():
    for top in ("driver", "ipam_driver", "pynet_core", "pynet", "tests/fakes"):
        yield from sorted((REPO / top).rglob("*.py"))


def test_no_error_class_carries_an_http_status():
    """A status on an error would bypass the edge's table (and its 404 rule)."""
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [
                        stmt.target] if isinstance(stmt, ast.AnnAssign) else []
                    if any(isinstance(t, ast.Name) and t.id == "status" for t in targets):
                        found.append(f"{path.relative_to(REPO)}:{stmt.lineno} {node.name}")
    assert found == []


def test_only_the_edge_maps_categories_or_knows_docker_404_rule():
    """Outside pynet/plugin_api.py nothing reads an error's status, and no service turns a
    NotFound into another error for Docker's sake."""
    edge = REPO / "pynet" / "plugin_api.py"
    found = []
    for path in _python_files():
        if path == edge:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "status" and isinstance(node.value, ast.Name) \
                    and node.value.id in {"exc", "error", "err", "e"}:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} reads .status")
            if isinstance(node, ast.ExceptHandler) and node.type is not None and "NotFound" in ast.unparse(node.type):
                raised = [ast.unparse(r.exc) for r in ast.walk(node) if isinstance(r, ast.Raise) and r.exc]
                if any("BadRequest" in r for r in raised):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} turns NotFound into BadRequest")
    assert found == []


@pytest.mark.parametrize("exc, text", [
    (BadRequest("PoolID must be a string"), "PoolID must be a string"),
    (BadRecord("v1/k", "not JSON"), "the store's record at v1/k is unreadable: not JSON"),
    (KeyError("web"), "KeyError: 'web'"),
    (RuntimeError("a bug"), "RuntimeError: a bug")])
def test_describe_error_is_the_message_of_pynets_errors_and_type_and_text_of_others(exc, text):
    assert describe_error(exc) == text

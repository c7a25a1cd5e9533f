"""Every error class is RFC 9457 problem+json carrying the request id, and 500s leak nothing."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar import get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.testing import AsyncTestClient
from sqlalchemy.exc import IntegrityError

from rosetta.core.errors import ConflictError, NotFoundError, PreconditionFailedError
from rosetta.core.http import ContextApi, create_app
from rosetta.core.schemas import CamelStruct
from rosetta.core.security.permissions import Permission, requires
from rosetta.core.settings import Settings

PUBLIC = [requires(Permission.PUBLIC)]
SECRET_MARKER = "very-secret-internal-detail"


class Payload(CamelStruct):
    """A body with one required, typed field."""

    app_code: str
    amount: int


@post("/payloads", guards=PUBLIC, sync_to_thread=False)
def create_payload(data: JSONBody[Payload]) -> Payload:
    return data


@get("/items/{item_id:int}", guards=PUBLIC, sync_to_thread=False)
def read_item(item_id: FromPath[int], limit: FromQuery[int] = 10) -> dict[str, int]:
    if item_id == 404:
        raise NotFoundError(f"item {item_id} does not exist")
    return {"id": item_id, "limit": limit}


@get("/conflict", guards=PUBLIC, sync_to_thread=False)
def conflict() -> None:
    raise ConflictError("a run of this job is already in progress")


@get("/integrity", guards=PUBLIC, sync_to_thread=False)
def integrity() -> None:
    raise IntegrityError("INSERT INTO secret_table ...", {}, Exception(SECRET_MARKER))


@get("/stale", guards=PUBLIC, sync_to_thread=False)
def stale() -> None:
    raise PreconditionFailedError("the resource changed since you read it")


@get("/boom", guards=PUBLIC, sync_to_thread=False)
def boom() -> None:
    raise RuntimeError(SECRET_MARKER)


@get("/private", guards=[requires(Permission.FINOPS_READ)], sync_to_thread=False)
def private() -> str:
    return "never"


def _app(settings: Settings) -> Any:
    context = ContextApi(
        name="probe",
        title="Probe",
        description="Routes that fail on purpose.",
        database="finops",
        route_handlers=[create_payload, read_item, conflict, integrity, stale, boom, private],
    )
    return create_app([context], process="test", settings=settings)


def _assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["requestId"] == response.headers["x-request-id"]
    assert SECRET_MARKER not in response.text
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize(
    ("method", "path", "json", "status", "field"),
    [
        ("POST", "/api/probe/v1/payloads", {"appCode": "X", "amount": "ten"}, 400, "amount"),
        ("POST", "/api/probe/v1/payloads", {"amount": 3}, 400, "appCode"),
        ("GET", "/api/probe/v1/items/1?limit=many", None, 400, "limit"),
    ],
)
async def test_validation_errors_name_the_failing_field(
    settings: Settings, method: str, path: str, json: Any, status: int, field: str
) -> None:
    async with AsyncTestClient(app=_app(settings)) as client:
        response = await client.request(method, path, json=json)
    body = _assert_problem(response, status)
    assert field in body["detail"]
    assert any(field in error["field"] or field in error["message"] for error in body["errors"])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/probe/v1/items/404", 404),
        ("/api/probe/v1/nothing-here", 404),
        ("/api/probe/v1/conflict", 409),
        ("/api/probe/v1/integrity", 409),
        ("/api/probe/v1/stale", 412),
        ("/api/probe/v1/boom", 500),
    ],
)
async def test_error_classes_are_problem_details(settings: Settings, path: str, status: int) -> None:
    async with AsyncTestClient(app=_app(settings)) as client:
        response = await client.get(path)
    _assert_problem(response, status)


async def test_missing_token_is_401_with_www_authenticate(settings: Settings) -> None:
    async with AsyncTestClient(app=_app(settings)) as client:
        response = await client.get("/api/probe/v1/private")
    _assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_request_id_is_accepted_or_generated(settings: Settings) -> None:
    async with AsyncTestClient(app=_app(settings)) as client:
        given = await client.get("/api/probe/v1/items/404", headers={"X-Request-ID": "trace-abc.123"})
        garbage = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\x01"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    assert given.json()["requestId"] == "trace-abc.123"
    assert garbage.headers["x-request-id"] != "bad id with spaces\x01"
    assert len(garbage.headers["x-request-id"]) == 32


async def test_bodies_are_camel_case_on_the_wire(settings: Settings) -> None:
    async with AsyncTestClient(app=_app(settings)) as client:
        response = await client.post("/api/probe/v1/payloads", json={"appCode": "PAY-1", "amount": 3})
    assert response.status_code == 201
    assert response.json() == {"appCode": "PAY-1", "amount": 3}
    assert msgspec.json.decode(response.content, type=Payload).app_code == "PAY-1"

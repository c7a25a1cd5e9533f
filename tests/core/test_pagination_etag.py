"""Cursor pagination and ETag helpers, on a real table."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.testing import AsyncTestClient
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Uuid, select
from sqlalchemy.ext.asyncio import AsyncSession

from rosetta.core.db import Databases
from rosetta.core.errors import BadRequestError
from rosetta.core.etag import check_if_match, compute_etag, is_not_modified
from rosetta.core.http import ContextApi, create_app
from rosetta.core.pagination import decode_cursor, encode_cursor, keyset_page, next_link
from rosetta.core.schemas import Page
from rosetta.core.security.permissions import Permission, requires
from rosetta.core.settings import Settings

metadata = MetaData()
items = Table(
    "pagination_probe",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("name", String, nullable=False),
    Column("rank", Integer, nullable=False),
)


@pytest.fixture
async def seeded(databases: Databases) -> AsyncIterator[list[dict[str, Any]]]:
    engine = databases.engines["ref"]
    async with engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)
        await connection.run_sync(metadata.create_all)
        base = datetime(2026, 1, 1, tzinfo=UTC)
        # Several rows share created_at so the primary key must break ties.
        rows = [
            {"id": uuid.UUID(int=i + 1), "created_at": base + timedelta(hours=i // 3), "name": f"item-{i}", "rank": i}
            for i in range(23)
        ]
        await connection.execute(items.insert(), rows)
    yield rows
    async with engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)


def test_cursor_round_trips_typed_keys() -> None:
    key = (datetime(2026, 3, 1, 12, tzinfo=UTC), uuid.UUID(int=7), "PAY-1")
    assert decode_cursor(encode_cursor(key), (datetime, uuid.UUID, str)) == key


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", encode_cursor(["x", "y"])])
def test_a_foreign_cursor_is_a_400_naming_cursor(cursor: str) -> None:
    with pytest.raises(BadRequestError, match="cursor"):
        decode_cursor(cursor, (datetime, uuid.UUID))


@pytest.mark.parametrize("descending", [False, True])
async def test_keyset_pages_cover_every_row_once(
    databases: Databases, seeded: list[dict[str, Any]], descending: bool
) -> None:
    seen: list[uuid.UUID] = []
    cursor: str | None = None
    pages = 0
    async with databases.unit_of_work("ref") as session:
        while True:
            rows, cursor = await keyset_page(
                session,
                select(items),
                key=[items.c.created_at, items.c.id],
                key_types=[datetime, uuid.UUID],
                limit=5,
                cursor=cursor,
                descending=descending,
            )
            seen.extend(row.id for row in rows)
            pages += 1
            if cursor is None:
                break
    expected = sorted(seeded, key=lambda row: (row["created_at"], row["id"]), reverse=descending)
    assert seen == [row["id"] for row in expected]
    assert pages == 5


async def test_next_link_keeps_filters_and_replaces_cursor(settings: Settings, seeded: list[dict[str, Any]]) -> None:
    @get("/items", guards=[requires(Permission.PUBLIC)])
    async def list_items(
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        limit: FromQuery[int] = 10,
        cursor: FromQuery[str | None] = None,
    ) -> Page[str]:
        rows, next_cursor = await keyset_page(
            session, select(items), key=[items.c.rank], key_types=[int], limit=limit, cursor=cursor
        )
        return Page(items=[row.name for row in rows], limit=limit, next=next_link(request, next_cursor))

    context = ContextApi(name="probe", title="Probe", description="", database="ref", route_handlers=[list_items])
    app = create_app([context], process="test", settings=settings)
    names: list[str] = []
    async with AsyncTestClient(app=app) as client:
        url: str | None = "/api/probe/v1/items?limit=10&q=keep"
        while url:
            page = (await client.get(url)).json()
            names.extend(page["items"])
            url = page["next"]
            if url:
                assert "q=keep" in url
                assert url.count("cursor=") == 1
        too_big = await client.get("/api/probe/v1/items?limit=100000")
    assert names == [f"item-{i}" for i in range(23)]
    assert too_big.status_code == 400
    assert "limit" in too_big.json()["detail"]


async def test_if_match_and_if_none_match(settings: Settings) -> None:
    current = compute_etag({"code": "PAY-1", "amount": "10.00"})
    assert current == compute_etag({"amount": "10.00", "code": "PAY-1"})
    assert current != compute_etag({"code": "PAY-1", "amount": "10.01"})

    @get("/thing", guards=[requires(Permission.PUBLIC)], sync_to_thread=False)
    def thing(request: Request[Any, Any, Any], required: FromQuery[bool] = False) -> dict[str, bool]:
        check_if_match(request, current, required=required)
        return {"notModified": is_not_modified(request, current)}

    context = ContextApi(name="probe", title="Probe", description="", database="ref", route_handlers=[thing])
    app = create_app([context], process="test", settings=settings)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/api/probe/v1/thing", headers={"If-Match": current})).status_code == 200
        assert (await client.get("/api/probe/v1/thing", headers={"If-Match": f'"x", {current}'})).status_code == 200
        assert (await client.get("/api/probe/v1/thing", headers={"If-Match": "*"})).status_code == 200
        stale = await client.get("/api/probe/v1/thing", headers={"If-Match": '"stale"'})
        assert stale.status_code == 412
        assert stale.json()["currentEtag"] == current
        assert (await client.get("/api/probe/v1/thing", headers={"If-Match": f"W/{current}"})).status_code == 412
        assert (await client.get("/api/probe/v1/thing?required=true")).status_code == 428
        assert (await client.get("/api/probe/v1/thing")).status_code == 200
        cached = await client.get("/api/probe/v1/thing", headers={"If-None-Match": f"W/{current}"})
        assert cached.json() == {"notModified": True}

"""The finops migration tree: it builds what the models declare, and its data-dependent steps refuse bad rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import URL

from rosetta.core.db import asyncpg_dsn
from rosetta.core.errors import RosettaError
from rosetta.core.migrations import alembic_config, upgrade
from rosetta.core.settings import DatabaseRole


async def _execute(url: URL, *statements: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _fetch(url: URL, query: str) -> list[tuple[Any, ...]]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return [tuple(row) for row in await connection.fetch(query)]
    finally:
        await connection.close()


def test_the_finops_models_match_the_migrations(fresh_database_urls: Callable[[], dict[DatabaseRole, URL]]) -> None:
    # Raises if autogenerate would produce anything: models and alembic/finops agree.
    command.check(alembic_config("finops", fresh_database_urls()["finops"]))


def test_finops_0009_stops_on_aliases_that_differ_only_by_case_and_names_them(
    fresh_database_urls: Callable[[], dict[DatabaseRole, URL]],
) -> None:
    url = fresh_database_urls()["finops"]
    command.downgrade(alembic_config("finops", url), "finops_0008")
    insert = "INSERT INTO mapping_alias (kind, alias, canonical) VALUES ('tag_key', {!r}, 'environment')"
    asyncio.run(_execute(url, insert.format(" ENV")))
    with pytest.raises(RosettaError, match=r"tag_key: 'env' -> 'environment' \(id \d+\), ' ENV' -> 'environment'"):
        upgrade("finops", url)
    # Nothing was half-done: the old constraint is still there, so the admin's fix is the only step left.
    asyncio.run(_execute(url, "DELETE FROM mapping_alias WHERE alias = ' ENV'"))
    upgrade("finops", url)
    with pytest.raises(asyncpg.UniqueViolationError, match="uq_mapping_alias_kind_folded_alias"):
        asyncio.run(_execute(url, insert.format("Env ")))


def test_finops_0010_keeps_existing_pricing_views_as_revision_1_and_downgrades_to_the_current_card(
    fresh_database_urls: Callable[[], dict[DatabaseRole, URL]],
) -> None:
    url = fresh_database_urls()["finops"]
    config = alembic_config("finops", url)
    command.downgrade(config, "finops_0009")
    view = uuid.uuid4()
    asyncio.run(
        _execute(
            url,
            "INSERT INTO pricing_view (id, name, version, description, currency, created_by)"
            f" VALUES ('{view}', 'Old card', 1, 'edited in place', 'EUR', 'fiona')",
            f"INSERT INTO pricing_view_rate VALUES ('{view}', 'Compute', 'vCPU-hours', 0.0412),"
            f" ('{view}', 'Storage', 'GB-months', 0.021)",
        )
    )
    upgrade("finops", url)
    # The view as it stood becomes revision 1, dated and signed as the view was created.
    assert asyncio.run(
        _fetch(
            url,
            "SELECT v.revision, r.revision, r.description, r.created_by, r.created_at = v.created_at"
            " FROM pricing_view v JOIN pricing_view_revision r ON r.pricing_view_id = v.id",
        )
    ) == [(1, 1, "edited in place", "fiona", True)]
    rates = "SELECT revision, service_category, unit, unit_price::text FROM pricing_view_revision_rate ORDER BY 2"
    assert asyncio.run(_fetch(url, rates)) == [
        (1, "Compute", "vCPU-hours", "0.0412"),
        (1, "Storage", "GB-months", "0.021"),
    ]
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
        asyncio.run(_execute(url, "UPDATE pricing_view_revision_rate SET unit_price = 1"))
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
        asyncio.run(_execute(url, "DELETE FROM pricing_view_revision"))

    # A second revision, as the API makes it; the downgrade puts the current card back in place.
    asyncio.run(
        _execute(
            url,
            f"INSERT INTO pricing_view_revision VALUES ('{view}', 2, 'second', 'fiona', now())",
            f"INSERT INTO pricing_view_revision_rate VALUES ('{view}', 2, 'Compute', 'vCPU-hours', 0.05)",
            f"UPDATE pricing_view SET revision = 2 WHERE id = '{view}'",
        )
    )
    command.downgrade(config, "finops_0009")
    assert asyncio.run(_fetch(url, "SELECT description FROM pricing_view")) == [("second",)]
    assert asyncio.run(_fetch(url, "SELECT service_category, unit, unit_price::text FROM pricing_view_rate")) == [
        ("Compute", "vCPU-hours", "0.05")
    ]
    upgrade("finops", url)
    assert asyncio.run(_fetch(url, rates)) == [(1, "Compute", "vCPU-hours", "0.05")]

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


def test_finops_0011_keeps_existing_budgets_as_revision_1_and_downgrades_to_the_current_lines(
    fresh_database_urls: Callable[[], dict[DatabaseRole, URL]],
) -> None:
    url = fresh_database_urls()["finops"]
    config = alembic_config("finops", url)
    command.downgrade(config, "finops_0010")
    edited, untouched = uuid.uuid4(), uuid.uuid4()
    audit = "INSERT INTO audit_log (actor_subject, action, entity_type, entity_id, outcome) VALUES"
    asyncio.run(
        _execute(
            url,
            "INSERT INTO budget_version (id, name, description, row_version, created_by, created_at, updated_at)"
            f" VALUES ('{edited}', 'Edited budget', 'edited in place', 4, 'fiona', '2026-01-05T09:00Z',"
            " '2026-03-01T10:00Z')",
            f"INSERT INTO budget_version (id, name, created_by) VALUES ('{untouched}', 'Untouched budget', 'uma')",
            f"INSERT INTO budget_line VALUES ('{edited}', 'product', 'PAY-ONLINE', '2026-01-01', 1000.00, 'EUR'),"
            f" ('{edited}', 'domain', 'COMMERCE', '2026-02-01', 5000, 'EUR')",
            # The version's last change was oliver's; a refused attempt and another entity's row do not count.
            f"{audit} ('fiona', 'budget.create', 'budget_version', '{edited}', 'succeeded'),"
            f" ('oliver', 'budget.replace', 'budget_version', '{edited}', 'succeeded'),"
            f" ('mallory', 'budget.replace', 'budget_version', '{edited}', 'denied'),"
            f" ('victor', 'pricing_view.replace', 'pricing_view', '{edited}', 'succeeded')",
        )
    )
    upgrade("finops", url)
    # Each budget as it stood becomes revision 1: dated when its lines were last written, signed by whoever
    # wrote them (its creator when nothing was ever changed).
    assert asyncio.run(
        _fetch(
            url,
            "SELECT v.name, v.revision, r.revision, r.name, r.description, r.created_by,"
            " r.created_at = v.created_at, r.created_at = '2026-03-01T10:00Z'"
            " FROM budget_version v JOIN budget_revision r ON r.budget_version_id = v.id ORDER BY v.name",
        )
    ) == [
        ("Edited budget", 1, 1, "Edited budget", "edited in place", "oliver", False, True),
        ("Untouched budget", 1, 1, "Untouched budget", None, "uma", True, False),
    ]
    lines = (
        "SELECT revision, scope_level, scope_code, month::text, amount::text FROM budget_revision_line"
        " ORDER BY revision, month"
    )
    assert asyncio.run(_fetch(url, lines)) == [
        (1, "product", "PAY-ONLINE", "2026-01-01", "1000.00"),
        (1, "domain", "COMMERCE", "2026-02-01", "5000"),
    ]
    # The lines have one home now, and the version no counter or time of its own.
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = '{}' ORDER BY column_name"
    assert asyncio.run(_fetch(url, columns.format("budget_line"))) == []
    assert asyncio.run(_fetch(url, columns.format("budget_version"))) == [
        ("created_at",),
        ("created_by",),
        ("id",),
        ("name",),
        ("revision",),
    ]
    for statement in (
        "UPDATE budget_revision_line SET amount = 1",
        "DELETE FROM budget_revision_line",
        "UPDATE budget_revision SET name = 'rewritten'",
        "DELETE FROM budget_revision",
    ):
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
            asyncio.run(_execute(url, statement))

    # A second revision, as the API makes it; the downgrade puts the current one back in place.
    asyncio.run(
        _execute(
            url,
            f"INSERT INTO budget_revision VALUES ('{edited}', 2, 'Edited budget v2', 'second', 'fiona',"
            " '2026-04-01T08:00Z')",
            f"INSERT INTO budget_revision_line VALUES ('{edited}', 2, 'product', 'PAY-ONLINE', '2026-01-01', 1200.50,"
            " 'EUR')",
            f"UPDATE budget_version SET revision = 2, name = 'Edited budget v2' WHERE id = '{edited}'",
        )
    )
    command.downgrade(config, "finops_0010")
    assert asyncio.run(
        _fetch(
            url,
            "SELECT name, description, row_version, updated_at = created_at, updated_at = '2026-04-01T08:00Z'"
            " FROM budget_version ORDER BY name",
        )
    ) == [("Edited budget v2", "second", 2, False, True), ("Untouched budget", None, 1, True, False)]
    assert asyncio.run(
        _fetch(url, "SELECT budget_version_id, scope_level, scope_code, month::text, amount::text FROM budget_line")
    ) == [(edited, "product", "PAY-ONLINE", "2026-01-01", "1200.50")]
    upgrade("finops", url)
    assert asyncio.run(_fetch(url, lines)) == [(1, "product", "PAY-ONLINE", "2026-01-01", "1200.50")]

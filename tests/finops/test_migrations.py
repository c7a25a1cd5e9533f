"""The finops migration tree: it builds what the models declare, and its data-dependent steps refuse bad rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import URL

from rosetta.core.db import asyncpg_dsn
from rosetta.core.migrations import alembic_config, upgrade
from rosetta.core.settings import DatabaseRole


async def _execute(url: URL, *statements: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for statement in statements:
            await connection.execute(statement)
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
    with pytest.raises(RuntimeError, match=r"tag_key: 'env' -> 'environment' \(id \d+\), ' ENV' -> 'environment'"):
        upgrade("finops", url)
    # Nothing was half-done: the old constraint is still there, so the admin's fix is the only step left.
    asyncio.run(_execute(url, "DELETE FROM mapping_alias WHERE alias = ' ENV'"))
    upgrade("finops", url)
    with pytest.raises(asyncpg.UniqueViolationError, match="uq_mapping_alias_kind_folded_alias"):
        asyncio.run(_execute(url, insert.format("Env ")))

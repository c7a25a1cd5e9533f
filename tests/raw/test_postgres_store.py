"""PostgreSQL-specific behaviour of the raw store: its migration, its factory, its errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy.engine import URL

from rosetta.core.db import asyncpg_dsn, create_missing_databases
from rosetta.core.errors import ConfigurationError
from rosetta.core.migrations import alembic_config
from rosetta.core.settings import Settings
from rosetta.raw.mongo import MongoRawStore
from rosetta.raw.postgres import PostgresRawStore
from rosetta.raw.store import open_raw_store


def test_the_raw_models_match_the_migrations(contract_raw_url: URL) -> None:
    # Raises if autogenerate would produce anything: models and alembic/raw agree.
    command.check(alembic_config("raw", contract_raw_url))


async def test_the_factory_follows_the_raw_store_setting(settings: Settings) -> None:
    postgres = open_raw_store(settings)
    mongo = open_raw_store(Settings(raw_store="mongodb", mongodb_url=SecretStr("mongodb://db:27017")))
    try:
        assert isinstance(postgres, PostgresRawStore)
        assert isinstance(mongo, MongoRawStore)
        # The factory's store works on the configured raw database.
        import_id = await postgres.begin_import(source="factory", kind="check")
        assert import_id in {i.import_id for i in await postgres.list_imports(source="factory")}
    finally:
        await postgres.close()
        await mongo.close()


@pytest.fixture
def unmigrated_url(server_url: URL) -> Iterator[URL]:
    """An existing but empty database (never migrated)."""
    url = server_url.set(database=f"rawempty_{uuid.uuid4().hex[:8]}")
    asyncio.run(create_missing_databases({"raw": url}))
    yield url

    async def drop() -> None:
        connection = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


async def test_an_unmigrated_or_missing_database_is_a_clear_configuration_error(
    unmigrated_url: URL, server_url: URL
) -> None:
    store = PostgresRawStore(asyncpg_dsn(unmigrated_url))
    try:
        with pytest.raises(ConfigurationError, match=r"not migrated: run `rosetta db upgrade --db raw`"):
            await store.begin_import(source="s", kind="k")
    finally:
        await store.close()

    missing = PostgresRawStore(asyncpg_dsn(server_url.set(database=f"nowhere_{uuid.uuid4().hex[:8]}")))
    with pytest.raises(ConfigurationError, match="does not exist"):
        await missing.begin_import(source="s", kind="k")
    await missing.close()

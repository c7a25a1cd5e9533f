"""Raw-store fixtures: one store per implementation, each test starting from an empty store.

PostgreSQL always runs (a raw database of its own on the session's server, emptied before each test);
MongoDB runs when ``ROSETTA_TEST_MONGO_URL`` names a server (a throw-away database per test), and is
skipped otherwise, since no MongoDB server can be installed in every development environment.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from pymongo import AsyncMongoClient
from sqlalchemy.engine import URL

from rosetta.core import migrations
from rosetta.core.db import asyncpg_dsn, create_missing_databases
from rosetta.raw.mongo import MongoRawStore
from rosetta.raw.postgres import PostgresRawStore
from rosetta.raw.store import RawStore

MONGO_URL_VARIABLE = "ROSETTA_TEST_MONGO_URL"
MONGO_SKIP_REASON = f"{MONGO_URL_VARIABLE} is not set: the MongoDB run of the raw-store contract needs a server"

# Small chunks, so that multi-chunk landing is exercised with a few hundred documents.
TEST_CHUNK_SIZE = 50


@pytest.fixture
def chunk_size() -> int:
    """The chunk size the ``store`` fixture's stores land with."""
    return TEST_CHUNK_SIZE


async def _drop(server: URL, name: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def contract_raw_url(server_url: URL) -> Iterator[URL]:
    """A migrated raw database used only by the raw tests that need an empty store."""
    name = f"rc{os.getpid()}_raw"
    url = server_url.set(database=name)
    asyncio.run(_drop(server_url, name))
    asyncio.run(create_missing_databases({"raw": url}))
    migrations.upgrade("raw", url)
    yield url
    asyncio.run(_drop(server_url, name))


async def _empty_postgres(url: URL) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("TRUNCATE raw_document, raw_import, raw_rejected, raw_watermark RESTART IDENTITY")
    finally:
        await connection.close()


@pytest.fixture(params=["postgres", pytest.param("mongodb", marks=pytest.mark.mongo)])
async def store(request: pytest.FixtureRequest, contract_raw_url: URL) -> AsyncIterator[RawStore]:
    """An empty raw store of each implementation, closed afterwards."""
    if request.param == "postgres":
        await _empty_postgres(contract_raw_url)
        postgres = PostgresRawStore(asyncpg_dsn(contract_raw_url), chunk_size=TEST_CHUNK_SIZE)
        try:
            yield postgres
        finally:
            await postgres.close()
        return

    mongo_url = os.environ.get(MONGO_URL_VARIABLE)
    if not mongo_url:
        pytest.skip(MONGO_SKIP_REASON)
    database = f"rosetta_test_{uuid.uuid4().hex[:12]}"
    mongo = MongoRawStore(mongo_url, database, chunk_size=TEST_CHUNK_SIZE)
    try:
        yield mongo
    finally:
        await mongo.close()
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
        try:
            await client.drop_database(database)
        finally:
            await client.close()

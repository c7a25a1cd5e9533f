"""Connector and pull fixtures: a raw database of their own (emptied before each test) and the test world."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from rosetta.core import migrations
from rosetta.core.db import asyncpg_dsn, create_missing_databases
from rosetta.core.settings import Settings
from rosetta.raw.store import RawStore, open_raw_store
from rosetta.simulators.dataset import Dataset
from simulators.world import written_and_loaded


async def _drop(server: URL, name: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pull_raw_url(server_url: URL) -> Iterator[URL]:
    """A migrated raw database used only by the pull tests."""
    name = f"rpull{os.getpid()}_raw"
    url = server_url.set(database=name)
    asyncio.run(_drop(server_url, name))
    asyncio.run(create_missing_databases({"raw": url}))
    migrations.upgrade("raw", url)
    yield url
    asyncio.run(_drop(server_url, name))


@pytest.fixture
async def raw_settings(pull_raw_url: URL) -> Settings:
    """Settings whose raw database is the pull tests' one, emptied."""
    connection = await asyncpg.connect(asyncpg_dsn(pull_raw_url))
    try:
        await connection.execute("TRUNCATE raw_document, raw_import, raw_rejected, raw_watermark RESTART IDENTITY")
    finally:
        await connection.close()
    return Settings(raw_database_url=pull_raw_url.render_as_string(hide_password=False))


@pytest.fixture
async def raw_store(raw_settings: Settings) -> AsyncIterator[RawStore]:
    """The configured raw store (PostgreSQL) on the emptied database."""
    store = open_raw_store(raw_settings, process="test.pull")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The test world, read back from dataset files."""
    directory: Path = tmp_path_factory.mktemp("world")
    return written_and_loaded(directory)

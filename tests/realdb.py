"""Real-database plumbing shared by the tests: paths, database sets migrated from the alembic trees.

Importable from any test module (``from realdb import settings_for``); the fixtures live in conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from rosetta.core import migrations
from rosetta.core.db import asyncpg_dsn, create_missing_databases
from rosetta.core.settings import DATABASE_ROLES, DatabaseRole, Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _database_names(prefix: str) -> dict[DatabaseRole, str]:
    return {role: f"{prefix}_{role}" for role in DATABASE_ROLES}


async def drop_databases(server: URL, names: Sequence[str]) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def make_migrated_databases(server: URL, prefix: str) -> dict[DatabaseRole, URL]:
    """Create the four databases under ``prefix`` on ``server`` and migrate each to head."""
    urls = {role: server.set(database=name) for role, name in _database_names(prefix).items()}
    asyncio.run(drop_databases(server, [url.database or "" for url in urls.values()]))
    asyncio.run(create_missing_databases(urls))
    for role, url in urls.items():
        migrations.upgrade(role, url)
    return urls


def settings_for(urls: dict[DatabaseRole, URL], **overrides: Any) -> Settings:
    """Settings pointing at a given database set (e.g. from ``fresh_database_urls``)."""
    values: dict[str, Any] = {
        f"{role}_database_url": url.render_as_string(hide_password=False) for role, url in urls.items()
    }
    values.update(overrides)
    return Settings(**values)

"""Alembic, one migration tree per database, driven from code (``rosetta db upgrade``) and from ``env.py``.

The trees live in the top-level ``alembic/<database>/`` folders (packaged as ``rosetta/_migrations`` in a
wheel). Each tree's ``env.py`` calls :func:`run_migrations` with its own context's metadata only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from rosetta.core.errors import ConfigurationError
from rosetta.core.settings import DatabaseRole

# Order matters only for humans reading the output: every tree is independent.
MIGRATION_ORDER: tuple[DatabaseRole, ...] = ("ref", "finops", "monitoring", "raw")


def migrations_root() -> Path:
    """The folder holding one alembic tree per database."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_migrations", package.parents[1] / "alembic"):
        if (candidate / "finops" / "env.py").is_file():
            return candidate
    raise ConfigurationError(f"alembic migration trees not found next to {package}")


def alembic_config(role: DatabaseRole, url: URL) -> Config:
    """An alembic ``Config`` for one database's tree, pointed at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(migrations_root() / role))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["url"] = url
    return config


def upgrade(role: DatabaseRole, url: URL, revision: str = "head") -> None:
    """Upgrade one database to ``revision`` (blocking; call through ``asyncio.to_thread`` from async code)."""
    command.upgrade(alembic_config(role, url), revision)


def heads(role: DatabaseRole) -> set[str]:
    """The head revision(s) of one tree."""
    config = Config()
    config.set_main_option("script_location", str(migrations_root() / role))
    return set(ScriptDirectory.from_config(config).get_heads())


async def current_revisions(url: URL) -> set[str]:
    """The revision(s) a database is at (empty when never migrated)."""
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: set(MigrationContext.configure(sync).get_current_heads()))
    finally:
        await engine.dispose()


def run_migrations(target_metadata: MetaData) -> None:
    """Body of every tree's ``env.py``: online migrations on the configured URL, offline SQL otherwise."""
    config = context.config
    url: URL | None = config.attributes.get("url")
    if url is None:
        raise ConfigurationError("run migrations through `rosetta db upgrade`, which supplies the database URL")

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run_sync(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run_sync)
        finally:
            await engine.dispose()

    asyncio.run(run_async())

"""Databases: naming convention, one async engine per database, sessions and the unit of work.

Each bounded context owns one database and declares its own ``DeclarativeBase`` with
``MetaData(naming_convention=NAMING_CONVENTION)``. Engines are built by ``Databases.open`` inside an app's
lifespan or a CLI command, never at import time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import asyncpg
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from rosetta.core.embedded import embedded_server_url
from rosetta.core.errors import ConfigurationError
from rosetta.core.settings import DATABASE_ROLES, DEFAULT_DATABASE_NAMES, DatabaseRole, Settings

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A ``MetaData`` carrying the project's naming convention (so alembic names constraints predictably)."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def database_urls(settings: Settings, roles: Iterable[DatabaseRole] = DATABASE_ROLES) -> dict[DatabaseRole, URL]:
    """The URL of each requested database, starting the embedded server when nothing is configured."""
    roles = tuple(roles)
    if settings.uses_embedded_database:
        server = embedded_server_url(settings.data_dir.expanduser().resolve())
        return {role: server.set(database=DEFAULT_DATABASE_NAMES[role]) for role in roles}
    urls: dict[DatabaseRole, URL] = {}
    for role in roles:
        url = settings.explicit_database_url(role)
        if url is None:
            raise ConfigurationError(
                f"ROSETTA_{role.upper()}_DATABASE_URL is not set (set it, or ROSETTA_DATABASE_URL for all databases)"
            )
        urls[role] = url
    return urls


def sql_literal(text: str) -> str:
    """``text`` as an SQL string literal, for the few statements that cannot take a parameter (DDL, COMMENT)."""
    return "'" + text.replace("'", "''") + "'"


def asyncpg_dsn(url: URL) -> str:
    """A DSN asyncpg accepts directly (no ``+asyncpg`` driver suffix), password included."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def create_missing_databases(urls: Mapping[DatabaseRole, URL]) -> list[str]:
    """Create each database that does not exist yet (connecting to ``postgres`` on the same server).

    Returns the names created. Idempotent: an existing database is left alone.
    """
    created: list[str] = []
    for url in urls.values():
        assert url.database, "database URLs always name a database"
        maintenance = url.set(database="postgres")
        connection = await asyncpg.connect(asyncpg_dsn(maintenance))
        try:
            exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database)
            if not exists:
                # CREATE DATABASE cannot take a bind parameter; the name is quoted as an identifier.
                quoted = '"' + url.database.replace('"', '""') + '"'
                await connection.execute(f"CREATE DATABASE {quoted}")
                created.append(url.database)
        finally:
            await connection.close()
    return created


async def decode_numeric_as_printed(connection: asyncpg.Connection) -> None:
    """Decode ``numeric`` from PostgreSQL's text form, so a Decimal reads as the database prints it.

    asyncpg's binary decoder turns trailing zeros of the integer part into an exponent (100000 arrives as
    ``Decimal('1.0E+5')``), and ``str()`` of that, which is how the APIs send amounts, is ``"1.0E+5"``. The text
    form is always plain notation with the value's scale. For API processes only: a binary ``COPY`` of
    ``numeric`` (the batches) needs the binary codec.
    """
    await connection.set_type_codec("numeric", schema="pg_catalog", encoder=str, decoder=Decimal, format="text")


DatabaseErrorKind = Literal["configuration", "unavailable", "failed"]


def database_error(error: BaseException) -> tuple[DatabaseErrorKind, str] | None:
    """What a database error outside a run means, in one line; None if ``error`` is not a database error.

    ``configuration``: the URL names a database or role the server does not have (SQLSTATE 3D000, class 28);
    retrying will not help. ``unavailable``: the server refuses connections for now (class 08, 57P03).
    ``failed``: anything else the server or the driver reported.
    """
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415 - only on the error path

    if not isinstance(error, DBAPIError | asyncpg.PostgresError | asyncpg.InterfaceError):
        return None
    chain = _driver_chain(error)
    sqlstate = sqlstate_of(error)
    message = " ".join(str(chain[-1]).split()) or type(chain[-1]).__name__
    if sqlstate == "3D000" or sqlstate.startswith("28"):
        hint = "check the database URL settings; `rosetta db upgrade` creates and migrates the databases"
        return "configuration", f"database: {message} ({hint})"
    if sqlstate.startswith("08") or sqlstate == "57P03":
        return "unavailable", f"database unavailable: {message}"
    return "failed", f"database: {message}"


def _driver_chain(error: BaseException) -> list[BaseException]:
    # SQLAlchemy's DBAPIError wraps the dialect's adapted error, which wraps asyncpg's own.
    chain: list[BaseException] = [error]
    for _ in range(2):
        cause = getattr(chain[-1], "orig", None) or chain[-1].__cause__
        if cause is None:
            break
        chain.append(cause)
    return chain


def sqlstate_of(error: BaseException) -> str:
    """The SQLSTATE PostgreSQL reported for ``error`` (through SQLAlchemy's wrapping), or ``""``."""
    return next((str(code) for link in _driver_chain(error) if (code := getattr(link, "sqlstate", None))), "")


def _decode_numeric_as_printed_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    del connection_record
    dbapi_connection.run_async(decode_numeric_as_printed)


@dataclass
class Databases:
    """The engines and session factories one process uses, keyed by database role."""

    engines: dict[DatabaseRole, AsyncEngine] = field(default_factory=dict)
    sessionmakers: dict[DatabaseRole, async_sessionmaker[AsyncSession]] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        settings: Settings,
        roles: Iterable[DatabaseRole],
        *,
        process: str,
        urls: Mapping[DatabaseRole, URL] | None = None,
        numeric_as_printed: bool = False,
    ) -> Databases:
        """Build one engine per role, named ``rosetta.<process>`` in ``pg_stat_activity``.

        ``numeric_as_printed`` decodes ``numeric`` in plain notation (:func:`decode_numeric_as_printed`), for
        processes whose amounts go out as text.
        """
        roles = tuple(roles)
        urls = dict(urls) if urls is not None else database_urls(settings, roles)
        databases = cls()
        for role in roles:
            pool_size = settings.db_pool_sizes.get(role, settings.db_pool_size)
            engine = create_async_engine(
                urls[role],
                pool_size=pool_size,
                max_overflow=settings.db_max_overflow,
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args={
                    "server_settings": {
                        "application_name": f"rosetta.{process}",
                        "statement_timeout": str(settings.db_statement_timeout_ms),
                        "timezone": "UTC",
                    },
                    "timeout": 10,
                },
            )
            if numeric_as_printed:
                event.listen(engine.sync_engine, "connect", _decode_numeric_as_printed_on_connect)
            databases.engines[role] = engine
            databases.sessionmakers[role] = async_sessionmaker(engine, expire_on_commit=False)
        return databases

    def sessionmaker(self, role: DatabaseRole) -> async_sessionmaker[AsyncSession]:
        """The session factory of one database; a clear error if this process did not open it."""
        try:
            return self.sessionmakers[role]
        except KeyError:
            raise ConfigurationError(f"database {role!r} is not opened by this process") from None

    @contextlib.asynccontextmanager
    async def unit_of_work(self, role: DatabaseRole) -> AsyncIterator[AsyncSession]:
        """One transaction: commit when the block succeeds, roll back when it raises."""
        async with self.sessionmaker(role)() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> dict[DatabaseRole, str]:
        """``ok`` or the error class for each database (for ``/readyz``)."""
        results: dict[DatabaseRole, str] = {}
        for role, engine in self.engines.items():
            try:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
                results[role] = "ok"
            except Exception as error:
                results[role] = f"unavailable ({type(error).__name__})"
        return results

    async def dispose(self) -> None:
        """Close every pool."""
        for engine in self.engines.values():
            await engine.dispose()
        self.engines.clear()
        self.sessionmakers.clear()

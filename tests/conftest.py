"""Test infrastructure: one real PostgreSQL per test session, migrated databases, app clients.

With ``ROSETTA_TEST_DATABASE_URL`` (a server URL, e.g. ``postgresql://user:pw@host:5432/postgres``) the
tests use that server; otherwise they start the embedded pgserver in a temporary directory. Each session
creates its own databases (unique names), so several sessions can share one server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

# Settings are read from the environment; keep the developer's .env and variables out of the tests.
for _key in [key for key in os.environ if key.startswith("ROSETTA_") and not key.startswith("ROSETTA_TEST_")]:
    del os.environ[_key]
os.environ["ROSETTA_ENV"] = "test"

from realdb import drop_databases, make_migrated_databases  # noqa: E402
from rosetta.core.db import Databases  # noqa: E402
from rosetta.core.settings import DATABASE_ROLES, DatabaseRole, Settings, get_settings  # noqa: E402


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """A PostgreSQL server URL (on its ``postgres`` database) for the whole session."""
    configured = os.environ.get("ROSETTA_TEST_DATABASE_URL")
    if configured:
        yield make_url(configured).set(drivername="postgresql+asyncpg", database="postgres")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415 - heavy, only when no server URL is given

        tmp = Path(tempfile.mkdtemp(prefix="rosetta-test-"))
        server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    try:
        yield URL.create(
            "postgresql+asyncpg", username="postgres", database="postgres", query={"host": str(tmp / "pg")}
        )
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def database_urls(server_url: URL) -> Iterator[dict[DatabaseRole, URL]]:
    """The session's four migrated databases; also exported as ``ROSETTA_*_DATABASE_URL``."""
    prefix = f"rt{os.getpid()}"
    urls = make_migrated_databases(server_url, prefix)
    for role, url in urls.items():
        os.environ[f"ROSETTA_{role.upper()}_DATABASE_URL"] = url.render_as_string(hide_password=False)
    get_settings.cache_clear()
    yield urls
    for role in urls:
        os.environ.pop(f"ROSETTA_{role.upper()}_DATABASE_URL", None)
    get_settings.cache_clear()
    asyncio.run(drop_databases(server_url, [url.database or "" for url in urls.values()]))


@pytest.fixture(scope="session")
def settings(database_urls: dict[DatabaseRole, URL]) -> Settings:
    """Settings pointing at the session's databases."""
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
async def databases(settings: Settings, database_urls: dict[DatabaseRole, URL]) -> AsyncIterator[Databases]:
    """Engines on the four session databases, closed after the test."""
    opened = Databases.open(settings, DATABASE_ROLES, process="test", urls=database_urls)
    try:
        yield opened
    finally:
        await opened.dispose()


@pytest.fixture
def fresh_database_urls(server_url: URL) -> Iterator[Callable[[], dict[DatabaseRole, URL]]]:
    """A factory of brand-new migrated database sets, for tests that need empty tables; dropped afterwards.

    From an async test call it off the loop: ``urls = await asyncio.to_thread(make)``.
    """
    created: list[dict[DatabaseRole, URL]] = []

    def make() -> dict[DatabaseRole, URL]:
        urls = make_migrated_databases(server_url, f"rf{uuid.uuid4().hex[:10]}")
        created.append(urls)
        return urls

    yield make
    for urls in created:
        asyncio.run(drop_databases(server_url, [url.database or "" for url in urls.values()]))


# Identity-provider fixtures (a real issuer on loopback, tokens, an app trusting it): tests/security/identity.py.
from security.identity import (  # noqa: E402, F401
    api_client,
    auth_headers,
    identity_server,
    make_token,
    secured_app,
    secured_settings,
)

"""What the finops-api tests share: a migrated database set per module, an app trusting the test issuer.

The app is ``rosetta serve finops``'s (only the finops context), built on its own databases with the
in-process batch launcher, so ``POST batch/runs`` really runs finops-batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import URL

from conftest import make_migrated_databases, settings_for
from rosetta.batch.jobs import registered_jobs
from rosetta.batch.launcher import InProcessLauncher
from rosetta.core.db import asyncpg_dsn
from rosetta.core.http import create_app
from rosetta.core.settings import DatabaseRole, Settings
from rosetta.finops.api import context_api

API = "/api/finops/v1"


def migrated_databases(server_url: URL, prefix: str) -> Iterator[dict[DatabaseRole, URL]]:
    """A brand-new migrated database set, dropped when the generator is closed."""
    urls = make_migrated_databases(server_url, f"{prefix}{uuid.uuid4().hex[:8]}")
    try:
        yield urls
    finally:

        async def drop() -> None:
            connection = await asyncpg.connect(asyncpg_dsn(server_url))
            try:
                for url in urls.values():
                    await connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
            finally:
                await connection.close()

        asyncio.run(drop())


def finops_settings(urls: dict[DatabaseRole, URL], issuer: Any) -> Settings:
    """Settings on ``urls`` trusting the test issuer."""
    return settings_for(urls, oidc_issuers=[issuer.settings()])


def finops_app(settings: Settings) -> tuple[Litestar, InProcessLauncher]:
    """The finops API alone, with a launcher that runs batch jobs in this process."""
    launcher = InProcessLauncher(registered_jobs(), settings)
    return create_app([context_api()], process="test", settings=settings, launcher=launcher), launcher


async def finops_client(settings: Settings) -> AsyncIterator[tuple[AsyncTestClient[Litestar], InProcessLauncher]]:
    """A client on :func:`finops_app` with its lifespan started (the launcher's runs awaited at the end)."""
    app, launcher = finops_app(settings)
    async with AsyncTestClient(app=app) as client:
        yield client, launcher
        await launcher.wait()

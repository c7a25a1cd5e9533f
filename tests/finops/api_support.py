"""What the finops-api tests share: a migrated database set per module, an app trusting the test issuer.

The app is ``rosetta serve finops``'s (only the finops context), built on its own databases with the
in-process batch launcher, so ``POST batch/runs`` really runs finops-batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import URL

from realdb import drop_databases, make_migrated_databases, settings_for
from rosetta.batch.jobs import registered_jobs
from rosetta.batch.launcher import InProcessLauncher
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
        asyncio.run(drop_databases(server_url, [url.database or "" for url in urls.values()]))


def finops_settings(urls: dict[DatabaseRole, URL], issuer: Any) -> Settings:
    """Settings on ``urls`` trusting the test issuer."""
    return settings_for(urls, oidc_issuers=[issuer.settings()])


def finops_app(settings: Settings) -> tuple[Litestar, InProcessLauncher]:
    """The finops API alone, with a launcher that runs batch jobs in this process."""
    launcher = InProcessLauncher(registered_jobs(), settings)
    return create_app([context_api()], process="test", settings=settings, launcher=launcher), launcher


async def finops_client(settings: Settings) -> AsyncIterator[tuple[AsyncTestClient[Litestar], InProcessLauncher]]:
    """A client on :func:`finops_app` with its lifespan started.

    The app runs on the client's own event loop: a test that triggers a run follows it through the API
    (``GET batch/runs/{id}``) until it ends, rather than awaiting the launcher from the test's loop.
    """
    app, launcher = finops_app(settings)
    async with AsyncTestClient(app=app) as client:
        yield client, launcher

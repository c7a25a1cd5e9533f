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
# The AD groups of the three roles the finops routes tell apart.
USER = "Rosetta_User"
FINOPS_ADMIN = "Rosetta_FinOps_Admin"
ADMIN = "Rosetta_Admin"


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


async def audit_rows(
    client: AsyncTestClient[Litestar], headers: dict[str, str], entity_type: str, entity_id: str
) -> list[dict[str, Any]]:
    """The audit log rows of one entity, read through the API (``headers`` of an admin)."""
    response = await client.get(
        f"{API}/audit", params={"entityType": entity_type, "entityId": entity_id}, headers=headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem of ``status`` (naming ``field`` in its detail and errors); its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if field is not None:
        assert field in body["detail"]
        assert any(error.get("field") == field for error in body.get("errors", [])), body
    return body


async def all_pages(client: AsyncTestClient[Litestar], url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list, following ``next`` from ``url`` (each page must be a 200)."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        page = await client.get(next_url, headers=headers)
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        next_url = page.json()["next"]
    return items

"""finops-api read routes on a mart with a gap: months finops-batch never built are unknown, never zero costs.

The small demo world is landed in full (13 months), but finops-batch builds only its first two months and
its fourth and fifth: the third is a gap, the months after the fifth are not built yet. The summary's top
movers must not rank applications against a month that is not built, and a `from` sent alone is compared
with the latest built month (the default `to`), which its 400 names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from api_support import API, assert_problem, finops_client, finops_settings, migrated_databases
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import URL

from realdb import settings_for
from rosetta.batch.jobs import registered_jobs
from rosetta.batch.runner import execute
from rosetta.core.db import Databases
from rosetta.core.settings import DatabaseRole
from rosetta.demo.landing import land_world
from rosetta.demo.world import Granularity, WorldSize, build_world
from rosetta.finops.queries import add_months
from rosetta.raw.store import opened_raw_store

Client = AsyncTestClient[Litestar]
D = Decimal


@pytest.fixture(scope="module")
def gap_urls(server_url: URL) -> Iterator[dict[DatabaseRole, URL]]:
    yield from migrated_databases(server_url, "fgap")


@pytest.fixture(scope="module")
async def months(gap_urls: dict[DatabaseRole, URL]) -> list[date]:
    """Land the small world (one line per month: same money, fewer documents); build months 1-2 and 4-5.

    Returns the world's 13 months; indexes 0, 1, 3 and 4 are built.
    """
    settings = settings_for(gap_urls)
    world = build_world(WorldSize.SMALL, seed=1)
    async with opened_raw_store(settings, process="test") as store:
        await land_world(store, world, Granularity.MONTH)
    spec = registered_jobs()["finops"]
    window = [date(year, month, 1) for year, month in world.window.months()]
    databases = Databases.open(settings, spec.all_databases, process="test", urls=gap_urls)
    try:
        for first, last in ((window[0], window[1]), (window[3], window[4])):
            await execute(
                spec, {"from": f"{first:%Y-%m}", "to": f"{last:%Y-%m}"}, databases=databases, settings=settings
            )
    finally:
        await databases.dispose()
    return window


@pytest.fixture(scope="module")
async def client(gap_urls: dict[DatabaseRole, URL], months: list[date], identity_server: Any) -> AsyncIterator[Client]:
    async for api, _ in finops_client(finops_settings(gap_urls, identity_server.entra)):
        yield api


@pytest.fixture(scope="module")
def as_user(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers("Rosetta_User", subject="uma")


def ym(month: date) -> str:
    return f"{month:%Y-%m}"


async def get(client: Client, headers: dict[str, str], path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{API}{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_top_movers_are_only_ranked_against_a_built_previous_month(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    # The first built month, and the month after the gap: the previous month is unknown, so nothing "moved"
    # (counting it as 0 would list the ten largest applications, each as if its whole cost were new).
    for month in (months[0], months[3]):
        summary = await get(client, as_user, "/costs/summary", period=ym(month))
        assert summary["previousMonth"]["total"] is None
        assert summary["topMovers"] == []
        assert D(summary["total"]) > 0
    # With the previous month built, each mover's previous cost is its real cost that month.
    for month in (months[1], months[4]):
        summary = await get(client, as_user, "/costs/summary", period=ym(month))
        assert len(summary["topMovers"]) == 10
        before = await get(
            client, as_user, "/costs/drilldown", level="application", limit=500,
            **{"from": ym(add_months(month, -1)), "to": ym(add_months(month, -1))},
        )  # fmt: skip
        previous = {row["code"]: D(row["total"]) for row in before["items"]}
        for mover in summary["topMovers"]:
            assert D(mover["previous"]) == previous.get(mover["code"], D(0))
            assert D(mover["changeAmount"]) == D(mover["current"]) - D(mover["previous"])
        assert any(D(mover["previous"]) != 0 for mover in summary["topMovers"])


async def test_a_from_alone_after_the_latest_built_month_is_a_400_naming_the_default_to(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    after = await client.get(
        f"{API}/costs/drilldown", params={"level": "domain", "from": ym(months[5])}, headers=as_user
    )
    assert assert_problem(after, 400, "from")["detail"] == (
        f"from: {ym(months[5])} is after the default to, {ym(months[4])} (the latest month finops-batch built)"
    )
    # With to sent, it is that to.
    before = await client.get(
        f"{API}/costs/drilldown",
        params={"level": "domain", "from": ym(months[5]), "to": ym(months[4])},
        headers=as_user,
    )
    assert assert_problem(before, 400, "from")["detail"] == f"from: {ym(months[5])} is after to {ym(months[4])}"

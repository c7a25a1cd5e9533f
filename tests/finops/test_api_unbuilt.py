"""finops-api read routes on a mart with a gap: months finops-batch never built are unknown, never zero costs.

The small demo world is landed in full (13 months), but finops-batch builds only its first two months and
its fourth and fifth: the third is a gap, the months after the fifth are not built yet. Every read route must
tell these months apart from months that cost nothing: the summary's top movers, the drill-down and the
application page (404 when no month of the window is built, ``builtMonths`` when some are), and the 404s
must list what the mart holds, gap included. A ``from`` sent alone is compared with the latest built month
(the default ``to``), which its 400 names.
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


async def costed_application(client: Client, headers: dict[str, str]) -> str:
    """The code of an application of the CMDB with costs in the latest built month (not UNALLOCATED)."""
    top = (await get(client, headers, "/costs/drilldown", level="application"))["items"]
    return next(str(row["code"]) for row in top if row["code"] != "UNALLOCATED")


async def not_found(client: Client, headers: dict[str, str], path: str, *fields: str, **params: Any) -> str:
    """The detail of the 404 problem ``path`` answers, which names exactly ``fields`` in errors[]."""
    body = assert_problem(await client.get(f"{API}{path}", params=params, headers=headers), 404)
    assert [error["field"] for error in body.get("errors", [])] == list(fields), body
    detail: str = body["detail"]
    return detail


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


async def test_a_window_with_no_built_month_is_a_404_listing_the_built_ranges(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    held = f"the mart holds {ym(months[0])} to {ym(months[1])} and {ym(months[3])} to {ym(months[4])}"
    gap = ym(months[2])
    assert await not_found(client, as_user, "/costs/summary", "period", period=gap) == (
        f"period: month {gap} is not built by finops-batch ({held})"
    )
    # The drill-down names the window parameters the client sent.
    assert await not_found(
        client, as_user, "/costs/drilldown", "from", "to", level="domain", **{"from": gap, "to": gap}
    ) == (f"from, to: month {gap} is not built by finops-batch ({held})")
    assert await not_found(client, as_user, "/costs/drilldown", "to", level="product", to=gap) == (
        f"to: month {gap} is not built by finops-batch ({held})"
    )
    assert await not_found(
        client, as_user, "/costs/drilldown", "from", "to", level="application", **{"from": "2020-01", "to": "2020-02"}
    ) == (f"from, to: no month from 2020-01 to 2020-02 is built by finops-batch ({held})")
    # Also with a filter and CSV: a wrong window is never an empty export.
    exported = await client.get(
        f"{API}/costs/drilldown",
        params={"level": "domain", "from": gap, "to": gap, "environment": "prod"},
        headers={**as_user, "Accept": "text/csv"},
    )
    assert_problem(exported, 404, "from")

    code = await costed_application(client, as_user)
    future = ym(add_months(months[-1], 24))
    window = f"{ym(add_months(months[-1], 12))} to {future}"
    assert await not_found(client, as_user, f"/applications/{code}/costs", "to", to=future) == (
        f"to: no month from {window} is built by finops-batch ({held})"
    )
    # An unknown application is said to be one first, whatever its window.
    assert await not_found(client, as_user, "/applications/NOPE/costs", to=future) == "no application 'NOPE'"


async def test_a_partly_built_window_answers_for_its_built_months_and_lists_them(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    built = [ym(months[index]) for index in (0, 1, 3, 4)]
    across = await get(
        client, as_user, "/costs/drilldown", level="family", limit=500, **{"from": ym(months[1]), "to": ym(months[3])}
    )
    assert across["builtMonths"] == [ym(months[1]), ym(months[3])]
    one_by_one = [
        await get(client, as_user, "/costs/drilldown", level="family", **{"from": ym(month), "to": ym(month)})
        for month in (months[1], months[3])
    ]
    assert D(across["total"]) == sum(D(page["total"]) for page in one_by_one)
    assert [page["builtMonths"] for page in one_by_one] == [[ym(months[1])], [ym(months[3])]]
    # from alone runs to the latest built month.
    since = await get(client, as_user, "/costs/drilldown", level="domain", **{"from": ym(months[0])})
    assert (since["periodTo"], since["builtMonths"]) == (ym(months[4]), built)

    code = await costed_application(client, as_user)
    page = await get(client, as_user, f"/applications/{code}/costs", to=ym(months[2]))
    assert page["builtMonths"] == built[:2]
    assert page["months"][-1] == {"period": ym(months[2]), "total": "0", "direct": "0", "indirect": "0"}
    assert D(page["total"]) == sum(D(month["total"]) for month in page["months"]) > 0
    latest = await get(client, as_user, f"/applications/{code}/costs")
    assert (latest["periodTo"], latest["builtMonths"]) == (ym(months[4]), built)


async def test_a_known_application_with_no_cost_in_the_window_keeps_its_name_and_hierarchy(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    code = await costed_application(client, as_user)
    costed = await get(client, as_user, f"/applications/{code}/costs")
    assert all(costed[key] for key in ("name", "product", "family", "domain"))
    # The demo world bills in EUR: in USD the application has no cost in a built window, and is still itself.
    uncosted = await get(client, as_user, f"/applications/{code}/costs", currency="USD")
    identity = ("code", "name", "product", "family", "domain")
    assert {key: uncosted[key] for key in identity} == {key: costed[key] for key in identity}
    assert (uncosted["total"], uncosted["allocations"], uncosted["builtMonths"]) == ("0", [], costed["builtMonths"])
    # The hierarchy is the one the drill-down attributes it to.
    products = await get(client, as_user, "/costs/drilldown", level="application", parent=costed["product"], limit=500)
    assert code in {row["code"] for row in products["items"]}

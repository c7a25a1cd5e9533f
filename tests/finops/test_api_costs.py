"""finops-api read routes on the small demo world, built the real way: landed in the raw zone, then finops-batch.

Coherence is checked through the API only: for every month, the summary's parts add up to its total and to
the source costs the batch read (its control totals), each drill-down level adds up to the level above, and
an application's page explains its indirect cost by the allocated shares it lists.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from api_support import API, assert_problem, finops_client, finops_settings, migrated_databases
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import URL

from realdb import settings_for
from rosetta.batch.jobs import registered_jobs
from rosetta.batch.runner import execute
from rosetta.core.db import Databases, asyncpg_dsn
from rosetta.core.runs import advisory_lock_key
from rosetta.core.settings import DatabaseRole
from rosetta.demo.landing import land_world
from rosetta.demo.world import WorldSize, build_world
from rosetta.finops.queries import add_months, ratio
from rosetta.raw.store import opened_raw_store

Client = AsyncTestClient[Litestar]
D = Decimal
CHILD = {"domain": "family", "family": "product", "product": "application"}


@pytest.fixture(scope="module")
def world_urls(server_url: URL) -> Iterator[dict[DatabaseRole, URL]]:
    yield from migrated_databases(server_url, "fcost")


@pytest.fixture(scope="module")
async def demo_mart(world_urls: dict[DatabaseRole, URL]) -> list[asyncpg.Record]:
    """Land the small world (seed 1), run finops-batch once; return the batch's control totals per month."""
    settings = settings_for(world_urls)
    async with opened_raw_store(settings, process="test") as store:
        await land_world(store, build_world(WorldSize.SMALL, seed=1))
    spec = registered_jobs()["finops"]
    databases = Databases.open(settings, spec.all_databases, process="test", urls=world_urls)
    try:
        await execute(spec, {}, databases=databases, settings=settings)
    finally:
        await databases.dispose()
    connection = await asyncpg.connect(asyncpg_dsn(world_urls["finops"]))
    try:
        return list(
            await connection.fetch(
                "SELECT period_month AS period, currency, source_effective, pool_amount FROM fact_period_control"
                " ORDER BY period_month"
            )
        )
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def client(
    world_urls: dict[DatabaseRole, URL], demo_mart: list[asyncpg.Record], identity_server: Any
) -> AsyncIterator[Client]:
    async for api, _ in finops_client(finops_settings(world_urls, identity_server.entra)):
        yield api


@pytest.fixture(scope="module")
def as_user(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers("Rosetta_User", subject="uma")


@pytest.fixture(scope="module")
def as_finops(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers("Rosetta_FinOps_Admin", subject="fiona")


@pytest.fixture(scope="module")
def months(demo_mart: list[asyncpg.Record]) -> list[date]:
    periods = sorted({row["period"] for row in demo_mart})
    assert len(periods) == 13
    return periods


async def get(client: Client, headers: dict[str, str], path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{API}{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def drill(client: Client, headers: dict[str, str], month: date, level: str, parent: str | None) -> dict[str, Any]:
    params = {"level": level, "from": f"{month:%Y-%m}", "to": f"{month:%Y-%m}", "limit": 500}
    if parent is not None:
        params["parent"] = parent
    body = await get(client, headers, "/costs/drilldown", **params)
    assert body["next"] is None
    return body


# ----------------------------------------------------------------------------------------------- coherence


# Revision suffixes a comparison side must refuse (400 naming the side): not a positive integer as written.
MALFORMED_REVISIONS = ("@x", "@0", "@", "@-1", "@01", "@1.0", "@2147483648")


async def comparison_problem(
    client: Client, headers: dict[str, str], window: dict[str, Any], status: int, field: str, **sides: str
) -> str:
    """The detail of the problem the comparison answers for ``sides`` over ``window`` (status, field checked)."""
    response = await client.get(f"{API}/budgets/comparison", params={**window, **sides}, headers=headers)
    detail: str = assert_problem(response, status, field)["detail"]
    return detail


async def test_summary_parts_add_up_to_the_landed_source_costs_every_month(
    client: Client, as_user: dict[str, str], demo_mart: list[asyncpg.Record], months: list[date]
) -> None:
    source = {(row["period"], row["currency"]): row["source_effective"] + row["pool_amount"] for row in demo_mart}
    for month in months:
        summary = await get(client, as_user, "/costs/summary", period=f"{month:%Y-%m}")
        # Amounts are decimal strings on the wire, never JSON numbers.
        assert all(isinstance(summary[key], str) for key in ("total", "direct", "indirect", "unallocated"))
        total = D(summary["total"])
        assert D(summary["direct"]) + D(summary["indirect"]) + D(summary["unallocated"]) == total
        assert total == source[(month, summary["currency"])]
        assert D(summary["unallocated"]) > 0  # the demo world has untagged cloud lines and they are shown
        # The first month has no built month before it to have moved from (see test_api_unbuilt).
        assert len(summary["topMovers"]) == (0 if month == months[0] else 10)


async def test_each_drilldown_level_adds_up_to_the_level_above_every_month(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    for month in months:
        summary = await get(client, as_user, "/costs/summary", period=f"{month:%Y-%m}")
        domains = await drill(client, as_user, month, "domain", None)
        assert D(domains["total"]) == D(summary["total"])
        assert sum(D(row["total"]) for row in domains["items"]) == D(summary["total"])
        queue = [("domain", row) for row in domains["items"]]
        while queue:
            level, node = queue.pop()
            assert D(node["direct"]) + D(node["indirect"]) == D(node["total"])
            if level not in CHILD:
                continue
            children = await drill(client, as_user, month, CHILD[level], node["code"])
            assert D(children["total"]) == D(node["total"]), (month, level, node["code"])
            assert D(children["direct"]) == D(node["direct"])
            assert D(children["indirect"]) == D(node["indirect"])
            assert sum(D(row["total"]) for row in children["items"]) == D(node["total"])
            shares = [D(row["shareOfParent"]) for row in children["items"] if row["shareOfParent"] is not None]
            assert abs(sum(shares) - 1) <= D("0.0001") * len(shares)
            queue.extend((CHILD[level], row) for row in children["items"])


async def test_a_quarter_drilldown_is_the_sum_of_its_months(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    quarter = await get(
        client,
        as_user,
        "/costs/drilldown",
        level="family",
        **{"from": f"{months[-3]:%Y-%m}", "to": f"{months[-1]:%Y-%m}"},
    )
    by_month = [await drill(client, as_user, month, "family", None) for month in months[-3:]]
    assert D(quarter["total"]) == sum(D(page["total"]) for page in by_month)
    expected: dict[str, Decimal] = {}
    for page in by_month:
        for row in page["items"]:
            expected[row["code"]] = expected.get(row["code"], D(0)) + D(row["total"])
    assert {row["code"]: D(row["total"]) for row in quarter["items"]} == expected


async def test_drilldown_pages_and_csv_export_cover_every_node_once(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    params = {"level": "application", "from": f"{months[0]:%Y-%m}", "to": f"{months[-1]:%Y-%m}"}
    everything = await get(client, as_user, "/costs/drilldown", limit=500, **params)
    paged: list[dict[str, Any]] = []
    url: str | None = f"{API}/costs/drilldown?level=application&from={params['from']}&to={params['to']}&limit=7"
    while url is not None:
        page = (await client.get(url, headers=as_user)).json()
        assert len(page["items"]) <= 7
        assert page["total"] == everything["total"]
        paged.extend(page["items"])
        url = page["next"]
    assert paged == everything["items"]
    totals = [D(row["total"]) for row in paged]
    assert totals == sorted(totals, reverse=True)

    exported = await client.get(
        f"{API}/costs/drilldown", params={**params, "limit": 5}, headers={**as_user, "Accept": "text/csv"}
    )
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["code"], row["total"]) for row in rows] == [(item["code"], item["total"]) for item in paged]


async def test_a_client_refusing_csv_gets_json_from_the_drilldown_and_the_summary(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    month = f"{months[-1]:%Y-%m}"
    for accept in ("text/csv;q=0", "text/csv;q=0, application/json", "*/*, text/csv;q=0"):
        headers = {**as_user, "Accept": accept}
        drilled = await client.get(f"{API}/costs/drilldown", params={"level": "domain", "to": month}, headers=headers)
        assert drilled.status_code == 200, drilled.text
        assert drilled.headers["content-type"] == "application/json", accept
        assert drilled.json()["items"]
        summary = await client.get(f"{API}/costs/summary", params={"period": month}, headers=headers)
        assert summary.status_code == 200, (accept, summary.text)
        assert summary.headers["content-type"] == "application/json", accept
    # Wildcards count: text/* accepts CSV (the list exports) and refuses JSON (the summary is a 406).
    headers = {**as_user, "Accept": "text/*"}
    drilled = await client.get(f"{API}/costs/drilldown", params={"level": "domain", "to": month}, headers=headers)
    assert drilled.headers["content-type"] == "text/csv; charset=utf-8"
    assert (await client.get(f"{API}/costs/summary", params={"period": month}, headers=headers)).status_code == 406


async def test_environment_filter_splits_the_total(client: Client, as_user: dict[str, str], months: list[date]) -> None:
    month = f"{months[-1]:%Y-%m}"
    whole = await get(client, as_user, "/costs/summary", period=month)
    environments = ["prod", "preprod", "test", "dev", "shared", "unknown"]
    parts = [await get(client, as_user, "/costs/summary", period=month, environment=name) for name in environments]
    assert sum(D(part["total"]) for part in parts) == D(whole["total"])
    # Shared pools are charged to applications, not to one of their environments.
    assert D(parts[environments.index("shared")]["direct"]) == 0
    assert sum(D(part["indirect"]) for part in parts[:4]) == 0


# ----------------------------------------------------------------------------------------------- application page


async def test_application_page_explains_its_indirect_cost(
    client: Client, as_user: dict[str, str], months: list[date]
) -> None:
    top = (await drill(client, as_user, months[-1], "application", None))["items"]
    code = next(row["code"] for row in top if row["code"] != "UNALLOCATED" and D(row["indirect"]) > 0)
    page = await get(client, as_user, f"/applications/{code}/costs")
    assert page["periodTo"] == f"{months[-1]:%Y-%m}"
    assert [month["period"] for month in page["months"]] == [f"{month:%Y-%m}" for month in months]
    total, direct, indirect = D(page["total"]), D(page["direct"]), D(page["indirect"])
    assert direct + indirect == total
    assert sum(D(month["total"]) for month in page["months"]) == total
    assert sum(D(row["total"]) for row in page["byEnvironment"]) == total
    assert sum(D(row["total"]) for row in page["byServiceCategory"]) == total
    # "Why does my app pay this?": every euro of indirect cost comes from a listed share of a pool.
    assert page["allocations"]
    assert sum(D(line["amount"]) for line in page["allocations"]) == indirect
    for line in page["allocations"]:
        assert line["method"] == f"{line['ruleId']}@{line['ruleVersion']}"
        assert D("0") <= D(line["ratio"]) <= D("1")
        assert line["keyType"] in ("even", "direct_cost", "usage", "fixed")
    # The same numbers as the drill-down for the last month.
    last = next(row for row in top if row["code"] == code)
    assert D(page["months"][-1]["total"]) == D(last["total"])


# ----------------------------------------------------------------------------------------------- comparison


async def test_budget_comparison_against_actuals_and_a_pricing_view(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str], months: list[date]
) -> None:
    last = months[-1]
    products = (await drill(client, as_user, last, "product", None))["items"]
    first, second = products[0], products[1]
    lines = [
        {"scopeLevel": "product", "scopeCode": first["code"], "period": f"{last:%Y-%m}", "amount": "1000.00"},
        {"scopeLevel": "product", "scopeCode": second["code"], "period": f"{last:%Y-%m}", "amount": "500.00"},
        {"scopeLevel": "product", "scopeCode": first["code"], "period": f"{last.year}-12", "amount": "300.00"},
    ]
    created = await client.post(f"{API}/budgets", json={"name": "Comparison budget", "lines": lines}, headers=as_finops)
    assert created.status_code == 201, created.text
    budget_id = created.json()["id"]

    compared = await get(
        client, as_user, "/budgets/comparison", right=f"budget:{budget_id}", level="product", limit=500,
        **{"from": f"{last:%Y-%m}", "to": f"{last:%Y-%m}"},
    )  # fmt: skip
    rows = {row["code"]: row for row in compared["items"]}
    row = rows[first["code"]]
    assert D(row["left"]) == D(first["total"])
    assert D(row["right"]) == D("1000.00")
    assert D(row["variance"]) == D(first["total"]) - D("1000.00")
    assert D(row["variancePct"]) == ((D(row["variance"]) * 100) / D("1000.00")).quantize(D("0.01"))
    assert D(row["rightYearEnd"]) == D("1300.00")  # a budget's year end is its full-year total
    assert D(compared["totalRight"]) == D("1500.00")
    assert D(compared["totalLeft"]) == sum(D(product["total"]) for product in products)

    # The same budget at family level: product lines roll up through the hierarchy of their month.
    families = await get(
        client, as_user, "/budgets/comparison", right=f"budget:{budget_id}", level="family", limit=500,
        **{"from": f"{last:%Y-%m}", "to": f"{last:%Y-%m}"},
    )  # fmt: skip
    assert D(families["totalRight"]) == D("1500.00")
    assert D(families["totalLeft"]) == D(compared["totalLeft"])

    # A pricing view values the same quantities: a zero rate card values everything at zero.
    view = await client.post(
        f"{API}/pricing-views",
        json={
            "name": "Free compute",
            "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0"}],
        },
        headers=as_finops,
    )
    valued = await get(
        client, as_user, "/budgets/comparison", left=f"pricing-view:{view.json()['id']}", right=f"budget:{budget_id}",
        level="domain", **{"from": f"{last:%Y-%m}", "to": f"{last:%Y-%m}"},
    )  # fmt: skip
    assert D(valued["totalLeft"]) == 0
    assert D(valued["totalRight"]) == D("1500.00")
    # The CSV export carries the same rows; negative variances stay numbers (no formula-guard quote).
    exported = await client.get(
        f"{API}/budgets/comparison",
        params={
            "left": f"pricing-view:{view.json()['id']}", "right": f"budget:{budget_id}", "level": "domain",
            "from": f"{last:%Y-%m}", "to": f"{last:%Y-%m}",
        },
        headers={**as_user, "Accept": "text/csv"},
    )  # fmt: skip
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    exported_rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(line["code"], line["variance"]) for line in exported_rows] == [
        (item["code"], item["variance"]) for item in valued["items"]
    ]
    assert any(line["variance"].startswith("-") for line in exported_rows)
    assert all(D(line["variance"]) == D(line["left"]) - D(line["right"]) for line in exported_rows)


async def test_the_comparison_reports_budget_money_no_row_carries(
    client: Client,
    as_user: dict[str, str],
    as_finops: dict[str, str],
    months: list[date],
    world_urls: dict[DatabaseRole, URL],
) -> None:
    last = f"{months[-1]:%Y-%m}"
    domains = (await drill(client, as_user, months[-1], "domain", None))["items"]
    products = (await drill(client, as_user, months[-1], "product", None))["items"]
    lines = [
        {"scopeLevel": "product", "scopeCode": products[0]["code"], "period": last, "amount": "100.00"},
        {"scopeLevel": "domain", "scopeCode": domains[0]["code"], "period": last, "amount": "40.00"},
    ]
    created = await client.post(f"{API}/budgets", json={"name": "Unmatched budget", "lines": lines}, headers=as_finops)
    assert created.status_code == 201, created.text
    budget_id = created.json()["id"]
    # A line the API now refuses, as older versions or the raw-zone import could still have stored it.
    connection = await asyncpg.connect(asyncpg_dsn(world_urls["finops"]))
    try:
        await connection.execute(
            "INSERT INTO budget_revision_line VALUES ($1, 1, 'product', 'NO-SUCH-PRODUCT', $2, 7.5, 'EUR')",
            uuid.UUID(budget_id), months[-1],
        )  # fmt: skip
    finally:
        await connection.close()
    window = {"from": last, "to": last}
    by_domain = await get(client, as_user, "/budgets/comparison", right=f"budget:{budget_id}", level="domain", **window)
    assert D(by_domain["totalRight"]) == D("140.00")
    assert D(by_domain["unmatchedRight"]) == D("7.5")
    assert D(by_domain["unmatchedLeft"]) == 0
    # At product level the domain line has no product to land on either: it is reported, not dropped.
    by_product = await get(
        client, as_user, "/budgets/comparison", right=f"budget:{budget_id}", level="product", limit=500, **window
    )
    assert D(by_product["totalRight"]) == D("100.00")
    assert D(by_product["unmatchedRight"]) == D("47.50")
    swapped = await get(
        client, as_user, "/budgets/comparison", left=f"budget:{budget_id}", right="actual", level="domain", **window
    )
    assert (D(swapped["unmatchedLeft"]), D(swapped["unmatchedRight"])) == (D("7.5"), 0)


async def compute_cells(world_urls: dict[DatabaseRole, URL], month: date) -> dict[str, int]:
    """Per domain, how many (application, service category, unit) a Compute vCPU-hours card values in ``month``:
    each is valued and rounded to the cent once, so two cards' values can part by a cent per cell."""
    connection = await asyncpg.connect(asyncpg_dsn(world_urls["finops"]))
    try:
        rows = await connection.fetch(
            "SELECT domain_code, count(DISTINCT application_code) AS cells FROM mv_finops_quantity_monthly"
            " WHERE period = $1 AND service_category = 'Compute' AND unit = 'vCPU-hours' GROUP BY domain_code",
            month,
        )
    finally:
        await connection.close()
    return {row["domain_code"]: row["cells"] for row in rows}


async def test_pricing_view_values_quantities_with_its_rates(
    client: Client,
    as_user: dict[str, str],
    as_finops: dict[str, str],
    months: list[date],
    world_urls: dict[DatabaseRole, URL],
) -> None:
    last = f"{months[-1]:%Y-%m}"
    unit_price = D("0.05")
    view = await client.post(
        f"{API}/pricing-views",
        json={
            "name": "Catalogue",
            "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": str(unit_price)}],
        },
        headers=as_finops,
    )
    doubled = await client.post(
        f"{API}/pricing-views",
        json={
            "name": "Catalogue",
            "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": str(unit_price * 2)}],
        },
        headers=as_finops,
    )
    left = f"pricing-view:{doubled.json()['id']}"
    right = f"pricing-view:{view.json()['id']}"
    compared = await get(
        client, as_user, "/budgets/comparison", left=left, right=right, level="domain", **{"from": last, "to": last}
    )
    assert D(compared["totalRight"]) > 0
    # Same quantities, twice the rate: twice the value (each application's month, category and unit valued
    # to the cent, so within a cent per such cell), a +100 % variance.
    cells = await compute_cells(world_urls, months[-1])
    assert abs(D(compared["totalLeft"]) - 2 * D(compared["totalRight"])) <= D("0.01") * sum(cells.values())
    assert D(compared["totalVariancePct"]) == D("100.00")
    for row in compared["items"]:
        assert abs(D(row["left"]) - 2 * D(row["right"])) <= D("0.01") * cells.get(row["code"], 0)
        # Valuations are money: two decimals on every row, never the product's full scale.
        assert all(D(row[key]).as_tuple().exponent == -2 for key in ("left", "right", "projectedYearEnd")), row
    # Every level values the same cents: the same total at each level, and a domain is the sum of its families.
    for level in ("family", "product", "application"):
        finer = await get(
            client, as_user, "/budgets/comparison", left=left, right=right, level=level, limit=500,
            **{"from": last, "to": last},
        )  # fmt: skip
        assert (finer["totalLeft"], finer["totalRight"]) == (compared["totalLeft"], compared["totalRight"]), level
        assert sum(D(row["left"]) for row in finer["items"]) == D(compared["totalLeft"])
    for row in compared["items"]:
        families = await get(
            client, as_user, "/budgets/comparison", left=left, right=right, level="family", parent=row["code"],
            **{"from": last, "to": last},
        )  # fmt: skip
        assert (families["totalLeft"], families["totalRight"]) == (row["left"], row["right"]), row["code"]


async def test_a_comparison_against_a_pricing_view_revision_is_reproduced_after_the_view_changes(
    client: Client,
    as_user: dict[str, str],
    as_finops: dict[str, str],
    months: list[date],
    world_urls: dict[DatabaseRole, URL],
) -> None:
    window = {"from": f"{months[-1]:%Y-%m}", "to": f"{months[-1]:%Y-%m}", "level": "domain"}
    rate = {"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.05"}
    created = await client.post(
        f"{API}/pricing-views", json={"name": "Catalogue 2026 revised", "rates": [rate]}, headers=as_finops
    )
    assert created.status_code == 201, created.text
    view_id = created.json()["id"]
    last_week = await get(
        client, as_user, "/budgets/comparison", left=f"pricing-view:{view_id}", right="actual", **window
    )
    # The label names the revision the numbers come from, so the comparison can be asked for again.
    assert last_week["left"] == "pricing-view:Catalogue 2026 revised v1 r1"
    assert D(last_week["totalLeft"]) > 0

    changed = await client.put(
        f"{API}/pricing-views/{view_id}",
        json={"rates": [{**rate, "unitPrice": "0.10"}]},
        headers={**as_finops, "If-Match": created.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    # The plain id values with the current revision...
    now = await get(client, as_user, "/budgets/comparison", left=f"pricing-view:{view_id}", right="actual", **window)
    assert now["left"] == "pricing-view:Catalogue 2026 revised v1 r2"
    cells = sum((await compute_cells(world_urls, months[-1])).values())
    assert abs(D(now["totalLeft"]) - 2 * D(last_week["totalLeft"])) <= D("0.01") * cells
    explicit = await get(
        client, as_user, "/budgets/comparison", left=f"pricing-view:{view_id}@2", right="actual", **window
    )
    assert explicit == now
    # ...and @1 gives last week's comparison again, to the cent, on either side.
    again = await get(
        client, as_user, "/budgets/comparison", left=f"pricing-view:{view_id}@1", right="actual", **window
    )
    assert again == last_week
    swapped = await get(
        client, as_user, "/budgets/comparison", left="actual", right=f"pricing-view:{view_id}@1", **window
    )
    assert swapped["right"] == "pricing-view:Catalogue 2026 revised v1 r1"
    assert swapped["totalRight"] == last_week["totalLeft"]

    async def problem(status: int, field: str, **sides: str) -> str:
        return await comparison_problem(client, as_user, window, status, field, **sides)

    for suffix in MALFORMED_REVISIONS:
        await problem(400, "right", right=f"pricing-view:{view_id}{suffix}")
        await problem(400, "left", left=f"pricing-view:{view_id}{suffix}", right="actual")
    assert await problem(404, "right", right=f"pricing-view:{view_id}@3") == (
        "right: pricing view Catalogue 2026 revised v1 has no revision 3 (it has 1 to 2)"
    )
    await problem(404, "left", left=f"pricing-view:{view_id}@3", right="actual")
    await problem(404, "right", right=f"pricing-view:{uuid.uuid4()}@1")
    await problem(404, "right", right=f"pricing-view:{uuid.uuid4()}")


async def test_a_comparison_against_a_budget_revision_gives_the_old_numbers_after_the_budget_changes(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str], months: list[date]
) -> None:
    last = months[-1]
    products = [row["code"] for row in (await drill(client, as_user, last, "product", None))["items"][:2]]
    domain = (await drill(client, as_user, last, "domain", None))["items"][0]["code"]
    month, december = f"{last:%Y-%m}", f"{last.year}-12"
    assert month != december  # the year-end line must be a month of its own

    def line(level: str, code: str, period: str, amount: str) -> dict[str, str]:
        return {"scopeLevel": level, "scopeCode": code, "period": period, "amount": amount}

    initial = [
        line("product", products[0], month, "1000.00"),
        line("product", products[1], month, "500.00"),
        line("product", products[0], december, "300.00"),
        # Coarser than the compared level: reported as unmatched, from the revision compared only.
        line("domain", domain, month, "70.00"),
    ]
    created = await client.post(f"{API}/budgets", json={"name": "Q3 forecast", "lines": initial}, headers=as_finops)
    assert created.status_code == 201, created.text
    budget_id = created.json()["id"]
    window = {"from": month, "to": month, "level": "product", "limit": 500}
    last_week = await get(client, as_user, "/budgets/comparison", right=f"budget:{budget_id}", **window)
    # The label names the revision the numbers come from (and the name the budget had then).
    assert last_week["right"] == "budget:Q3 forecast r1"
    rows = {row["code"]: row for row in last_week["items"]}
    assert (D(rows[products[0]]["right"]), D(rows[products[0]]["rightYearEnd"])) == (D("1000.00"), D("1300.00"))
    assert D(rows[products[1]]["right"]) == D("500.00")
    assert (D(last_week["totalRight"]), D(last_week["unmatchedRight"])) == (D("1500.00"), D("70.00"))

    # Someone corrects the budget: renamed, one product's lines changed, the other's and the domain line removed.
    replaced = await client.put(
        f"{API}/budgets/{budget_id}",
        json={
            "name": "Q3 forecast corrected",
            "lines": [line("product", products[0], month, "1200.00"), line("product", products[0], december, "400.00")],
        },
        headers={**as_finops, "If-Match": created.headers["etag"]},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["revision"] == 2

    # The plain id compares the current revision: the new numbers...
    now = await get(client, as_user, "/budgets/comparison", right=f"budget:{budget_id}", **window)
    assert now["right"] == "budget:Q3 forecast corrected r2"
    rows = {row["code"]: row for row in now["items"]}
    assert (D(rows[products[0]]["right"]), D(rows[products[0]]["rightYearEnd"])) == (D("1200.00"), D("1600.00"))
    assert D(rows.get(products[1], {"right": "0"})["right"]) == 0
    assert (D(now["totalRight"]), D(now["unmatchedRight"])) == (D("1200.00"), 0)
    assert await get(client, as_user, "/budgets/comparison", right=f"budget:{budget_id}@2", **window) == now
    # ...and @1 gives last week's comparison again, to the cent, label included, on either side.
    again = await get(client, as_user, "/budgets/comparison", right=f"budget:{budget_id}@1", **window)
    assert again == last_week
    swapped = await get(client, as_user, "/budgets/comparison", left=f"budget:{budget_id}@1", right="actual", **window)
    assert swapped["left"] == "budget:Q3 forecast r1"
    assert (D(swapped["totalLeft"]), D(swapped["unmatchedLeft"])) == (D("1500.00"), D("70.00"))
    # Two revisions of one budget compare with each other: the correction, product by product.
    delta = await get(
        client, as_user, "/budgets/comparison", left=f"budget:{budget_id}", right=f"budget:{budget_id}@1", **window
    )
    assert D(delta["totalVariance"]) == D("-300.00")

    async def problem(status: int, field: str, **sides: str) -> str:
        return await comparison_problem(client, as_user, window, status, field, **sides)

    for suffix in MALFORMED_REVISIONS:
        await problem(400, "right", right=f"budget:{budget_id}{suffix}")
        await problem(400, "left", left=f"budget:{budget_id}{suffix}", right="actual")
    assert await problem(404, "right", right=f"budget:{budget_id}@3") == (
        "right: budget version Q3 forecast corrected has no revision 3 (it has 1 to 2)"
    )
    await problem(404, "left", left=f"budget:{budget_id}@3", right="actual")
    await problem(404, "right", right=f"budget:{uuid.uuid4()}@1")


async def test_amounts_are_plain_decimal_strings_and_projections_use_built_months(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str], months: list[date]
) -> None:
    last = months[-1]
    product = (await drill(client, as_user, last, "product", None))["items"][0]["code"]
    lines = [
        {"scopeLevel": "product", "scopeCode": product, "period": f"{last:%Y-%m}", "amount": "20000"},
        {"scopeLevel": "product", "scopeCode": product, "period": f"{last.year}-12", "amount": "100000"},
    ]
    created = await client.post(f"{API}/budgets", json={"name": "Round budget", "lines": lines}, headers=as_finops)
    assert created.status_code == 201, created.text
    # PostgreSQL's numeric 100000 reaches asyncpg's binary decoder as Decimal('1.0E+5'): the API must still
    # send plain notation, never an exponent (budget money is kept at 2 decimals).
    assert created.json()["totals"] == {"EUR": "120000.00"}
    budget_lines = await get(client, as_user, f"/budgets/{created.json()['id']}/lines")
    assert sorted(line["amount"] for line in budget_lines["items"]) == ["100000.00", "20000.00"]

    # A window running past the last built month: the run rate divides by the months built, not the calendar.
    built = [month for month in months if month.year == last.year]
    compared = await get(
        client, as_user, "/budgets/comparison", right=f"budget:{created.json()['id']}", level="domain", limit=500,
        **{"from": f"{last.year}-01", "to": f"{last.year}-12"},
    )  # fmt: skip
    assert compared["runRateMonths"] == len(built)
    for row in compared["items"]:
        ytd = D(row["leftYearToDate"])
        expected = (ytd + ytd / len(built) * (12 - len(built))).quantize(D("0.01"))
        assert D(row["projectedYearEnd"]) == expected
        assert row["projectedYearEnd"] == str(expected)  # to the cent, plain notation
    assert D(compared["totalRight"]) == D("120000")


async def test_unknown_parents_environments_and_currencies_are_errors_not_zero_costs(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str], months: list[date]
) -> None:
    window = {"from": f"{months[-1]:%Y-%m}", "to": f"{months[-1]:%Y-%m}"}
    domain = (await drill(client, as_user, months[-1], "domain", None))["items"][0]["code"]

    async def problem(path: str, status: int, **params: Any) -> str:
        response = await client.get(f"{API}{path}", params=params, headers=as_user)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        detail: str = response.json()["detail"]
        return detail

    # Each 404 names its parameter in errors[], like a 400.
    wrong_parent = await client.get(
        f"{API}/costs/drilldown", params={"level": "family", "parent": "NOPE", **window}, headers=as_user
    )
    assert assert_problem(wrong_parent, 404, "parent")["detail"] == "parent: no domain 'NOPE' (the parent of a family)"
    # A domain is not a product: asking for its applications is a wrong parent, not an empty list.
    assert (
        await problem("/costs/drilldown", 404, level="application", parent=domain, **window)
        == f"parent: no product {domain!r} (the parent of an application)"
    )
    for path, params in (
        ("/costs/drilldown", {"level": "domain", **window}),
        ("/costs/summary", {"period": f"{months[-1]:%Y-%m}"}),
    ):
        wrong_environment = await client.get(f"{API}{path}", params={**params, "environment": "nope"}, headers=as_user)
        body = assert_problem(wrong_environment, 404, "environment")
        assert body["detail"] == "environment: no environment 'nope'"
        assert "field" not in body  # in errors[], not beside them
    assert "no domain 'NOPE'" in await problem(
        "/budgets/comparison", 404, left="actual", right="actual", level="family", parent="NOPE", **window
    )
    # A month the batch never built is not a month that cost nothing.
    future = f"{months[-1].year + 5}-01"
    unbuilt = assert_problem(await client.get(f"{API}/costs/summary?period={future}", headers=as_user), 404, "period")
    assert unbuilt["detail"] == (
        f"period: month {future} is not built by finops-batch (the mart holds {months[0]:%Y-%m} to {months[-1]:%Y-%m})"
    )
    # ...and the first built month has no previous month to compare with: null, not a zero.
    first = await get(client, as_user, "/costs/summary", period=f"{months[0]:%Y-%m}")
    assert first["previousMonth"] == {
        "period": f"{add_months(months[0], -1):%Y-%m}",
        "total": None,
        "changeAmount": None,
        "changeRatio": None,
    }
    # A known parent with nothing in a built window is still a 200 with no rows (the demo world bills in EUR).
    empty = await get(client, as_user, "/costs/drilldown", level="family", parent=domain, currency="USD", **window)
    assert empty["items"] == []
    assert D(empty["total"]) == 0
    assert empty["builtMonths"] == [f"{months[-1]:%Y-%m}"]

    rates = [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "1"}]
    dollars = await client.post(
        f"{API}/pricing-views", json={"name": "Dollar card", "currency": "USD", "rates": rates}, headers=as_finops
    )
    assert dollars.status_code == 201, dollars.text
    comparison = {"right": f"pricing-view:{dollars.json()['id']}", "currency": "EUR", "level": "domain", **window}
    assert await problem("/budgets/comparison", 400, **comparison) == (
        "currency: amounts in different currencies cannot be compared:"
        " currency is in EUR, pricing-view:Dollar card v1 r1 is in USD"
    )


# ----------------------------------------------------------------------------------------------- Cost Insights


async def test_cost_insights_daily_series_for_an_application_and_a_group(
    client: Client, as_user: dict[str, str], months: list[date], world_urls: dict[DatabaseRole, URL]
) -> None:
    billing = await get(client, as_user, "/cost-insights/last-complete-billing-date")
    last_day = date.fromisoformat(billing["date"])
    assert last_day.replace(day=1) == months[-1]
    end = last_day.fromordinal(last_day.toordinal() + 1)
    intervals = f"R2/P30D/{end:%Y-%m-%d}"
    top = (await drill(client, as_user, months[-1], "application", None))["items"]
    code = next(row["code"] for row in top if row["code"] != "UNALLOCATED")

    cost = await get(client, as_user, f"/cost-insights/entities/{code}/daily", intervals=intervals)
    assert cost["id"] == code
    days = [point["date"] for point in cost["aggregation"]]
    assert len(days) == 60
    assert days[-1] == f"{last_day:%Y-%m-%d}"
    assert all(isinstance(point["amount"], (int, float)) for point in cost["aggregation"])  # plugin's types
    old = sum(point["amount"] for point in cost["aggregation"][:30])
    new = sum(point["amount"] for point in cost["aggregation"][30:])
    assert cost["change"]["amount"] == pytest.approx(new - old, abs=0.01)
    assert cost["change"]["ratio"] == pytest.approx((new - old) / old, rel=1e-3)
    assert set(cost["trendline"]) == {"slope", "intercept"}
    environments = cost["groupedCosts"]["environment"]
    for index in (0, 29, 59):
        assert sum(series["aggregation"][index]["amount"] for series in environments) == pytest.approx(
            cost["aggregation"][index]["amount"], abs=0.01 * len(environments)
        )

    # Cost Insights groups are the CMDB owner groups.
    connection = await asyncpg.connect(asyncpg_dsn(world_urls["finops"]))
    try:
        group = await connection.fetchval(
            "SELECT owner_group FROM dim_application_month WHERE application_code = $1 ORDER BY period DESC LIMIT 1",
            code,
        )
    finally:
        await connection.close()
    group_cost = await get(client, as_user, f"/cost-insights/groups/{group}/daily", intervals=intervals)
    assert group_cost["id"] == group
    # The group's cost includes its application's, every day.
    for index in (0, 30, 59):
        assert group_cost["aggregation"][index]["amount"] >= cost["aggregation"][index]["amount"]
    products = group_cost["groupedCosts"]["product"]
    assert sum(series["aggregation"][-1]["amount"] for series in products) == pytest.approx(
        group_cost["aggregation"][-1]["amount"], abs=0.01 * len(products)
    )
    # An unknown group is a 404 (an all-zero series would read as "this team costs nothing").
    for path, params in (
        ("/cost-insights/groups/nobody/daily", {}),
        ("/cost-insights/groups/daily", {"group": "group:default/nobody"}),
    ):
        unknown = await client.get(f"{API}{path}", params={"intervals": intervals, **params}, headers=as_user)
        assert unknown.status_code == 404, unknown.text
        assert unknown.headers["content-type"].startswith("application/problem+json")


async def test_cost_insights_take_backstage_refs_in_any_case(
    client: Client, as_user: dict[str, str], months: list[date], world_urls: dict[DatabaseRole, URL]
) -> None:
    """What the plugin sends: ``getCatalogEntityDailyCost("component:default/apim-inbox", ...)``, lower case."""
    last = months[-1]
    # Quarters, as the plugin asks for them: two three-month periods ending before the month after the last.
    intervals = f"R2/P3M/{date(last.year + last.month // 12, last.month % 12 + 1, 1):%Y-%m-%d}"
    top = (await drill(client, as_user, last, "application", None))["items"]
    code = next(row["code"] for row in top if row["code"] != "UNALLOCATED")
    assert code != code.lower()
    expected = await get(client, as_user, f"/cost-insights/entities/{code}/daily", intervals=intervals)
    assert expected["id"] == code
    assert len(expected["aggregation"]) > 120  # two quarters, day by day
    for path, params in (
        (f"/cost-insights/entities/{code.lower()}/daily", {}),
        (f"/cost-insights/entities/component:{code.lower()}/daily", {}),
        ("/cost-insights/entities/daily", {"entityRef": f"component:default/{code.lower()}"}),
        ("/cost-insights/entities/daily", {"entityRef": code.lower()}),
    ):
        assert await get(client, as_user, path, intervals=intervals, **params) == expected, path

    connection = await asyncpg.connect(asyncpg_dsn(world_urls["finops"]))
    try:
        group = await connection.fetchval(
            "SELECT owner_group FROM dim_application WHERE application_code = $1 ORDER BY valid_from DESC LIMIT 1",
            code,
        )
    finally:
        await connection.close()
    by_name = await get(client, as_user, f"/cost-insights/groups/{group}/daily", intervals=intervals)
    assert by_name["id"] == group
    for path, params in (
        (f"/cost-insights/groups/group:{group}/daily", {}),
        (f"/cost-insights/groups/{group.upper()}/daily", {}),
        ("/cost-insights/groups/daily", {"group": f"group:default/{group}"}),
    ):
        assert await get(client, as_user, path, intervals=intervals, **params) == by_name, path

    missing = await client.get(
        f"{API}/cost-insights/entities/daily",
        params={"entityRef": "component:default/no-such-app", "intervals": intervals},
        headers=as_user,
    )
    assert missing.status_code == 404, missing.text
    wrong_kind = await client.get(
        f"{API}/cost-insights/groups/daily",
        params={"group": "user:default/jdoe", "intervals": intervals},
        headers=as_user,
    )
    assert assert_problem(wrong_kind, 400, "group")["detail"] == (
        "group: expected a group ref (group:default/<name>), got 'user:default/jdoe', of kind 'user'"
    )
    # An api ref, a common kind in a Backstage catalogue, where an entity is expected.
    api_ref = await client.get(
        f"{API}/cost-insights/entities/daily",
        params={"entityRef": "api:default/inbox", "intervals": intervals},
        headers=as_user,
    )
    assert assert_problem(api_ref, 400, "entityRef")["detail"] == (
        "entityRef: expected a component ref (component:default/<name>), got 'api:default/inbox', of kind 'api'"
    )


async def test_batch_runs_are_listed_and_a_run_is_triggered_by_an_admin(
    client: Client,
    as_user: dict[str, str],
    as_finops: dict[str, str],
    months: list[date],
    auth_headers: Callable[..., dict[str, str]],
) -> None:
    runs = await get(client, as_user, "/batch/runs")
    assert runs["items"][0]["status"] == "succeeded"
    assert runs["items"][0]["readCount"] > 0
    assert {step["name"] for step in runs["items"][0]["steps"]}

    before = await get(client, as_user, "/costs/summary", period=f"{months[-1]:%Y-%m}")
    triggered = await client.post(f"{API}/batch/runs", json={"period": f"{months[-1]:%Y-%m}"}, headers=as_finops)
    assert triggered.status_code == 202, triggered.text
    location = triggered.headers["location"]
    assert location == triggered.json()["location"]
    assert location.endswith(triggered.json()["runId"])
    run = await get(client, as_user, location.removeprefix(API))
    assert run["parameters"] == {"period": f"{months[-1]:%Y-%m}"}
    assert run["requestedBy"] == "oid-fiona"
    deadline = time.monotonic() + 180
    while run["status"] in ("queued", "running") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        run = await get(client, as_user, location.removeprefix(API))
    assert run["status"] == "succeeded", run
    assert run["counters"]["periods"] == [f"{months[-1]:%Y-%m}"]
    assert all(step["seconds"] >= 0 for step in run["steps"])
    # Rebuilding a month with the same inputs changes none of its numbers.
    summary = await get(client, as_user, "/costs/summary", period=f"{months[-1]:%Y-%m}")
    assert summary == before
    audited = await get(
        client, auth_headers("Rosetta_Admin"), "/audit", entityType="batch_run", entityId=triggered.json()["runId"]
    )
    assert [(row["action"], row["actorSubject"]) for row in audited["items"]] == [("batch.run.trigger", "oid-fiona")]
    bad = await client.post(f"{API}/batch/runs", json={"from": "2026-05", "to": "2026-01"}, headers=as_finops)
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")


async def test_a_trigger_while_a_run_is_queued_or_running_is_a_409_naming_it(
    client: Client, as_finops: dict[str, str], months: list[date], world_urls: dict[DatabaseRole, URL]
) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(world_urls["finops"]))
    period = {"period": f"{months[-1]:%Y-%m}"}
    try:
        # A launched run whose pod has not started yet: the new one would only queue behind it and fail.
        queued = await connection.fetchval(
            "INSERT INTO batch_run (run_id, job, status, parameters, queued_at) VALUES"
            " (gen_random_uuid(), 'finops', 'queued', '{}', now()) RETURNING run_id"
        )
        refused = await client.post(f"{API}/batch/runs", json=period, headers=as_finops)
        assert refused.status_code == 409, refused.text
        assert refused.json()["runId"] == str(queued)
        assert refused.json()["detail"].startswith(f"run {queued} of finops is queued since ")
        await connection.execute(
            "UPDATE batch_run SET status = 'running', started_at = now() WHERE run_id = $1", queued
        )
        # Running, and alive: it holds the job's lock.
        await connection.execute("SELECT pg_advisory_lock($1)", advisory_lock_key("finops"))
        refused = await client.post(f"{API}/batch/runs", json=period, headers=as_finops)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"].startswith(f"run {queued} of finops is running since ")
        # Running, but its process died (the lock is free): it blocks nothing, the new run records it abandoned.
        await connection.execute("SELECT pg_advisory_unlock($1)", advisory_lock_key("finops"))
        accepted = await client.post(f"{API}/batch/runs", json=period, headers=as_finops)
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 180
        status = "queued"
        while status in ("queued", "running") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            status = await connection.fetchval(
                "SELECT status FROM batch_run WHERE run_id = $1", uuid.UUID(accepted.json()["runId"])
            )
        assert status == "succeeded"
        assert (await connection.fetchval("SELECT error FROM batch_run WHERE run_id = $1", queued)).startswith(
            "abandoned:"
        )
    finally:
        await connection.execute("UPDATE batch_run SET status = 'failed' WHERE status IN ('queued', 'running')")
        await connection.close()


def test_a_ratio_wider_than_the_decimal_context_is_computed_not_a_500() -> None:
    # A cent against a tiny older total needs more than 28 digits; quantize would raise InvalidOperation.
    assert ratio(D("99999999999999.99"), D("0.000000000001")) == D("99999999999999990000000000.0000")
    assert ratio(D("-7"), D("1E-40"), D("0.01")) == D("-7E+40")
    assert ratio(D(1), D(3)) == D("0.3333")
    assert ratio(D(1), D(0)) is None

"""The budget comparison on a small hand-built mart whose every figure is known in advance.

Five applications under two domains, costs and quantities in 2025-10 and 2025-11 only:

    DA ── FA ── PA1 ── A1, A2          DC ── FC ── PC1 ── C1
       │     └─ PA2 ── A3
       └─ FB ── PB1 ── B1

Budget amounts are powers of two, so each total says exactly which lines it holds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from api_support import API, assert_problem, finops_client, finops_settings, migrated_databases
from batch_support import Mart, application, close_mart, cost, open_mart
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import URL

from rosetta.core.db import asyncpg_dsn
from rosetta.core.settings import DatabaseRole

Client = AsyncTestClient[Litestar]
D = Decimal

HIERARCHY = {
    "A1": ("PA1", "FA", "DA"),
    "A2": ("PA1", "FA", "DA"),
    "A3": ("PA2", "FA", "DA"),
    "B1": ("PB1", "FB", "DA"),
    "C1": ("PC1", "FC", "DC"),
}
BUILT = ("2025-10", "2025-11")

# Every amount of a comparison, at the top and in a row; each must be a decimal string (or null) on the wire.
TOP_AMOUNTS = ("totalLeft", "totalRight", "totalVariance", "totalVariancePct", "unmatchedLeft", "unmatchedRight")
ROW_AMOUNTS = ("left", "right", "variance", "variancePct", "leftYearToDate", "projectedYearEnd", "rightYearEnd")


def month_costs(month: str) -> list[dict[str, Any]]:
    """One month of direct costs. Quantities are chosen so that valuing them per node rather than per
    application, category and unit gives other cents (see the pricing-view test)."""
    day = f"{month}-05"
    storage = {"service_category": "Storage", "unit": "GB-months", "service_name": "Block storage"}
    return [
        cost(day, "A1", "100.00", quantity="1"),
        cost(day, "A1", "50.00", environment="dev", quantity="2"),
        cost(day, "A1", "10.00", quantity="1", **storage),
        cost(day, "A2", "200.00", quantity="1"),
        cost(day, "A3", "300.00", quantity="1"),
        cost(day, "B1", "400.00", quantity="1"),
        cost(day, "B1", "30.00", quantity="3", **storage),
        cost(day, "C1", "500.00", quantity="1"),
    ]


async def build_world(mart: Mart) -> None:
    """The CMDB above and the two months of costs, built by one finops-batch run."""
    await mart.land(
        "cmdb",
        "application",
        [
            application(code, product, family=family, domain=domain)
            for code, (product, family, domain) in HIERARCHY.items()
        ],
    )
    await mart.land("cmdb", "cost", [line for month in BUILT for line in month_costs(month)])
    await mart.run()


@pytest.fixture(scope="module")
def world_urls(server_url: URL) -> Iterator[dict[DatabaseRole, URL]]:
    yield from migrated_databases(server_url, "fcmp")


@pytest.fixture(scope="module")
async def client(world_urls: dict[DatabaseRole, URL], identity_server: Any) -> AsyncIterator[Client]:
    mart = await open_mart(lambda: world_urls)
    try:
        await build_world(mart)
    finally:
        await close_mart(mart)
    async for api, _ in finops_client(finops_settings(world_urls, identity_server.entra)):
        yield api


@pytest.fixture(scope="module")
def finops_dsn(world_urls: dict[DatabaseRole, URL]) -> str:
    return asyncpg_dsn(world_urls["finops"])


@pytest.fixture(scope="module")
def as_user(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers("Rosetta_User", subject="uma")


@pytest.fixture(scope="module")
def as_finops(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers("Rosetta_FinOps_Admin", subject="fiona")


async def compare(client: Client, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get(f"{API}/budgets/comparison", params={"limit": 500, **params}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["next"] is None
    return body


async def create_budget(client: Client, headers: dict[str, str], name: str, lines: list[dict[str, str]]) -> str:
    created = await client.post(f"{API}/budgets", json={"name": name, "lines": lines}, headers=headers)
    assert created.status_code == 201, created.text
    budget_id: str = created.json()["id"]
    return budget_id


def line(level: str, code: str, period: str, amount: str, currency: str = "EUR") -> dict[str, str]:
    return {"scopeLevel": level, "scopeCode": code, "period": period, "amount": amount, "currency": currency}


def rows(body: dict[str, Any], side: str) -> dict[str, Decimal]:
    return {row["code"]: D(row[side]) for row in body["items"]}


def assert_amounts_are_strings(body: dict[str, Any]) -> None:
    for key in TOP_AMOUNTS:
        assert body[key] is None or isinstance(body[key], str), (key, body[key])
    for key in ("totalLeft", "totalRight", "totalVariance", "unmatchedLeft", "unmatchedRight"):
        assert isinstance(body[key], str), (key, body[key])
    for row in body["items"]:
        for key in ROW_AMOUNTS:
            assert row[key] is None or isinstance(row[key], str), (key, row)
        assert all(isinstance(row[key], str) for key in ("left", "right", "variance", "leftYearToDate")), row


# ----------------------------------------------------------------------------------------------- hierarchy months


async def test_building_an_older_month_leaves_the_comparison_as_it_was(
    fresh_database_urls: Callable[[], dict[DatabaseRole, URL]],
    identity_server: Any,
    as_user: dict[str, str],
    as_finops: dict[str, str],
) -> None:
    mart = await open_mart(fresh_database_urls)
    try:
        await build_world(mart)
        async for api, _ in finops_client(finops_settings(mart.urls, identity_server.entra)):
            # Months the mart has not built (2025-02..09, 2025-12) map through the nearest built month's
            # hierarchy: 2025-10 before the first built month, 2025-11 after the last.
            budget_id = await create_budget(
                api,
                as_finops,
                "Gap budget",
                [
                    line("application", "C1", "2025-02", "1"),
                    line("application", "A1", "2025-03", "2"),
                    line("product", "PA2", "2025-06", "4"),
                    line("application", "A1", "2025-10", "8"),
                    line("application", "B1", "2025-12", "16"),
                ],
            )
            year = {"right": f"budget:{budget_id}", "from": "2025-01", "to": "2025-12"}
            before = {level: await compare(api, as_user, level=level, **year) for level in ("domain", "product")}
            assert D(before["domain"]["totalRight"]) == D(31)
            assert D(before["domain"]["unmatchedRight"]) == 0
            assert rows(before["domain"], "right") == {"DA": D(30), "DC": D(1)}
            assert rows(before["product"], "right") == {"PA1": D(10), "PA2": D(4), "PB1": D(16), "PC1": D(1)}

            # An older month is built (as `rosetta batch finops --period 2024-09` does): only C1 had costs in
            # it, so its hierarchy knows C1 alone. The lines of 2025 must map exactly as they did.
            await mart.land("cmdb", "cost", [cost("2024-09-05", "C1", "7.00")])
            await mart.run(period="2024-09")
            built = await mart.fetch("SELECT DISTINCT period FROM mv_finops_period_control ORDER BY period")
            assert [f"{row['period']:%Y-%m}" for row in built] == ["2024-09", *BUILT]
            for level, expected in before.items():
                assert await compare(api, as_user, level=level, **year) == expected, level
    finally:
        await close_mart(mart)


# ----------------------------------------------------------------------------------------------- unmatched


async def test_unmatched_budget_money_is_what_the_parent_cannot_split(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str], finops_dsn: str
) -> None:
    october = "2025-10"
    budget_id = await create_budget(
        client,
        as_finops,
        "Parent budget",
        [
            line("application", "A1", october, "1"),  # a row under PA1
            line("application", "A3", october, "2"),  # a row under PA2
            line("product", "PA1", october, "4"),  # the parent itself: no application to split it to
            line("family", "FA", october, "8"),  # an ancestor of PA1 (and of PA2)
            line("domain", "DA", october, "16"),  # an ancestor of PA1, PA2 and PB1
            line("product", "PB1", october, "32"),  # another product: outside PA1's subtree
            line("family", "FB", october, "64"),
            line("domain", "DC", october, "128"),
        ],
    )
    # A scope code no hierarchy knows: the API refuses it now, but older versions or imports could store it.
    connection = await asyncpg.connect(finops_dsn)
    try:
        await connection.execute(
            "INSERT INTO budget_revision_line VALUES ($1, 1, 'application', 'NO-SUCH-APP', '2025-10-01', 256, 'EUR')",
            uuid.UUID(budget_id),
        )
    finally:
        await connection.close()
    window = {"right": f"budget:{budget_id}", "from": october, "to": october}

    async def figures(level: str, parent: str | None = None) -> tuple[Decimal, Decimal, dict[str, Decimal]]:
        body = await compare(client, as_user, level=level, **({"parent": parent} if parent else {}), **window)
        assert D(body["unmatchedLeft"]) == 0  # actual costs always land on a row
        budgeted = {code: amount for code, amount in rows(body, "right").items() if amount}
        return D(body["totalRight"]), D(body["unmatchedRight"]), budgeted

    # The whole budget: every line coarser than the level, and the unknown code.
    assert await figures("application") == (D(1 + 2), D(4 + 8 + 16 + 32 + 64 + 128 + 256), {"A1": D(1), "A3": D(2)})
    assert await figures("domain") == (D(255), D(256), {"DA": D(1 + 2 + 4 + 8 + 16 + 32 + 64), "DC": D(128)})
    # Under a parent: the parent's own lines and its ancestors' cannot be split into its children; lines
    # elsewhere in the tree, and codes no hierarchy places anywhere, are outside its scope.
    assert await figures("application", "PA1") == (D(1), D(4 + 8 + 16), {"A1": D(1)})
    assert await figures("application", "PB1") == (D(0), D(16 + 32 + 64), {})
    assert await figures("product", "FA") == (D(1 + 2 + 4), D(8 + 16), {"PA1": D(1 + 4), "PA2": D(2)})
    assert await figures("family", "DA") == (D(1 + 2 + 4 + 8 + 32 + 64), D(16), {"FA": D(15), "FB": D(96)})
    assert await figures("family", "DC") == (D(0), D(128), {})

    swapped = await compare(
        client, as_user, left=f"budget:{budget_id}", right="actual", level="application", parent="PA1",
        **{"from": october, "to": october},
    )  # fmt: skip
    assert (D(swapped["unmatchedLeft"]), D(swapped["unmatchedRight"])) == (D(4 + 8 + 16), 0)


# ----------------------------------------------------------------------------------------------- the wire


async def test_every_amount_of_a_comparison_is_a_decimal_string(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str]
) -> None:
    budget_id = await create_budget(client, as_finops, "String budget", [line("product", "PA1", "2025-10", "100")])
    view = await client.post(
        f"{API}/pricing-views",
        json={"name": "String card", "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "1"}]},
        headers=as_finops,
    )
    assert view.status_code == 201, view.text
    view_id = view.json()["id"]
    window = {"from": "2025-10", "to": "2025-11"}
    for left, right in (
        ("actual", f"budget:{budget_id}"),
        (f"budget:{budget_id}", "actual"),
        ("actual", f"pricing-view:{view_id}"),
        (f"pricing-view:{view_id}", f"budget:{budget_id}"),
        ("actual", "actual"),
    ):
        for level in ("domain", "application"):
            body = await compare(client, as_user, left=left, right=right, level=level, **window)
            assert body["items"], (left, right, level)
            assert_amounts_are_strings(body)
            # Zero is a decimal string too, never the JSON number 0.
            assert body["unmatchedLeft"] == "0" or D(body["unmatchedLeft"]) != 0


# ----------------------------------------------------------------------------------------------- currency


async def test_a_budget_is_in_the_currency_of_its_lines(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str]
) -> None:
    october = {"from": "2025-10", "to": "2025-10", "level": "domain"}
    euros = await create_budget(client, as_finops, "Euro budget", [line("application", "A1", "2025-10", "10")])
    rates = [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "1"}]
    dollars = await client.post(
        f"{API}/pricing-views", json={"name": "Dollar card", "currency": "USD", "rates": rates}, headers=as_finops
    )
    assert dollars.status_code == 201, dollars.text
    dollar_view = f"pricing-view:{dollars.json()['id']}"

    async def refused(**params: str) -> str:
        response = await client.get(f"{API}/budgets/comparison", params={**october, **params}, headers=as_user)
        detail: str = assert_problem(response, 400, "currency")["detail"]
        return detail

    assert await refused(right=f"budget:{euros}", currency="USD") == (
        "currency: amounts in different currencies cannot be compared:"
        " currency is in USD, budget:Euro budget r1 is in EUR"
    )
    assert await refused(left=f"budget:{euros}", right=dollar_view) == (
        "currency: amounts in different currencies cannot be compared:"
        " budget:Euro budget r1 is in EUR, pricing-view:Dollar card v1 r1 is in USD"
    )
    # Its own currency, named or not, compares.
    for params in ({}, {"currency": "EUR"}):
        body = await compare(client, as_user, right=f"budget:{euros}", **october, **params)
        assert (body["currency"], D(body["totalRight"])) == ("EUR", D(10))

    # A budget in two currencies: currency= picks one (or the other side does), and must be one of them.
    mixed = await create_budget(
        client,
        as_finops,
        "Mixed budget",
        [line("application", "A1", "2025-10", "10"), line("application", "A2", "2025-10", "20", currency="USD")],
    )
    assert await refused(right=f"budget:{mixed}") == (
        "currency: budget:Mixed budget r1 has lines in EUR and USD: name one with currency="
    )
    assert await refused(right=f"budget:{mixed}", currency="GBP") == (
        "currency: budget:Mixed budget r1 has no line in GBP (its lines are in EUR and USD)"
    )
    for currency, total in (("EUR", D(10)), ("USD", D(20))):
        body = await compare(client, as_user, right=f"budget:{mixed}", currency=currency, **october)
        assert (body["currency"], D(body["totalRight"])) == (currency, total)
    valued = await compare(client, as_user, left=dollar_view, right=f"budget:{mixed}", **october)
    assert (valued["currency"], D(valued["totalRight"])) == ("USD", D(20))

    # The currency is that of the compared revision's lines.
    created = await client.post(
        f"{API}/budgets",
        json={"name": "Switching budget", "lines": [line("application", "A1", "2025-10", "10")]},
        headers=as_finops,
    )
    assert created.status_code == 201, created.text
    switching = created.json()["id"]
    replaced = await client.put(
        f"{API}/budgets/{switching}",
        json={"name": "Switching budget", "lines": [line("application", "A1", "2025-10", "30", currency="USD")]},
        headers={**as_finops, "If-Match": created.headers["etag"]},
    )
    assert replaced.status_code == 200, replaced.text
    first = await compare(client, as_user, right=f"budget:{switching}@1", currency="EUR", **october)
    assert D(first["totalRight"]) == D(10)
    assert await refused(right=f"budget:{switching}", currency="EUR") == (
        "currency: amounts in different currencies cannot be compared:"
        " currency is in EUR, budget:Switching budget r2 is in USD"
    )


# ----------------------------------------------------------------------------------------------- pricing views


async def test_a_pricing_view_adds_up_to_the_cent_at_every_level(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str]
) -> None:
    # Half-cent prices: valued per node, each level would round its own raw sum to other cents.
    rates = [
        {"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.005"},
        {"serviceCategory": "Storage", "unit": "GB-months", "unitPrice": "0.0125"},
    ]
    view = await client.post(f"{API}/pricing-views", json={"name": "Odd cents", "rates": rates}, headers=as_finops)
    assert view.status_code == 201, view.text
    side = {"left": f"pricing-view:{view.json()['id']}", "right": "actual"}
    october = {"from": "2025-10", "to": "2025-10"}

    async def valued(level: str, parent: str | None = None, **window: str) -> tuple[Decimal, dict[str, Decimal]]:
        body = await compare(
            client, as_user, level=level, **({"parent": parent} if parent else {}), **side, **(window or october)
        )
        return D(body["totalLeft"]), rows(body, "left")

    # Per application, month, service category and unit, to the cent: A1 = round(3 x 0.005) + round(0.0125)
    # = 0.02 + 0.01; B1 = round(0.005) + round(3 x 0.0125) = 0.01 + 0.04.
    applications = {"A1": D("0.03"), "A2": D("0.01"), "A3": D("0.01"), "B1": D("0.05"), "C1": D("0.01")}
    assert await valued("application") == (D("0.11"), applications)
    products = {"PA1": D("0.04"), "PA2": D("0.01"), "PB1": D("0.05"), "PC1": D("0.01")}
    assert await valued("product") == (D("0.11"), products)
    assert await valued("family") == (D("0.11"), {"FA": D("0.05"), "FB": D("0.05"), "FC": D("0.01")})
    assert await valued("domain") == (D("0.11"), {"DA": D("0.10"), "DC": D("0.01")})
    # Each parent's row is the sum of its children's rows.
    assert (await valued("family", "DA"))[0] == D("0.10")
    assert (await valued("product", "FA"))[0] == D("0.05")
    assert (await valued("application", "PA1"))[0] == D("0.04")

    # Over both months, and year to date, every level still adds up.
    both = {"from": "2025-10", "to": "2025-11"}
    totals = set()
    for level in ("domain", "family", "product", "application"):
        body = await compare(client, as_user, level=level, **side, **both)
        assert sum(rows(body, "left").values()) == D(body["totalLeft"])
        assert sum(D(row["leftYearToDate"]) for row in body["items"]) == D(body["totalLeft"])
        totals.add(D(body["totalLeft"]))
    assert totals == {D("0.22")}


# ----------------------------------------------------------------------------------------------- months not built


async def test_actual_costs_of_months_never_built_are_unknown_not_zero(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str]
) -> None:
    budget_id = await create_budget(
        client,
        as_finops,
        "Next year budget",
        [line("application", "A1", "2025-12", "50"), line("application", "A1", "2027-01", "100")],
    )
    budget = f"budget:{budget_id}"
    view = await client.post(
        f"{API}/pricing-views",
        json={"name": "Window card", "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "1"}]},
        headers=as_finops,
    )
    valued = f"pricing-view:{view.json()['id']}"

    async def refused(*fields: str, **params: str) -> str:
        response = await client.get(f"{API}/budgets/comparison", params=params, headers=as_user)
        body = assert_problem(response, 404, fields[0])
        assert [error["field"] for error in body["errors"]] == list(fields), body
        detail: str = body["detail"]
        return detail

    # Nothing of the window is built: the actual (and a valuation of its quantities) is unknown. The 404 names
    # the window parameters sent, as the drill-down's does.
    assert await refused("from", "to", right=budget, **{"from": "2027-01", "to": "2027-01"}) == (
        "from, to: month 2027-01 is not built by finops-batch (the mart holds 2025-10 to 2025-11)"
    )
    assert await refused("to", right=budget, to="2027-01") == (
        "to: month 2027-01 is not built by finops-batch (the mart holds 2025-10 to 2025-11)"
    )
    assert await refused("from", "to", left=valued, right=budget, **{"from": "2027-01", "to": "2027-03"}) == (
        "from, to: no month from 2027-01 to 2027-03 is built by finops-batch (the mart holds 2025-10 to 2025-11)"
    )
    await refused("from", "to", left="actual", right="actual", **{"from": "2025-12", "to": "2025-12"})
    await refused("from", "to", right=budget, **{"from": "2025-01", "to": "2025-09"})
    # Two budgets need no built month.
    budgets = await compare(client, as_user, left=budget, right=budget, **{"from": "2027-01", "to": "2027-01"})
    assert (D(budgets["totalLeft"]), D(budgets["totalRight"]), budgets["builtMonths"]) == (D(100), D(100), [])
    # A window partly built says which months the actual covers.
    partly = await compare(client, as_user, right=budget, **{"from": "2025-09", "to": "2025-12"})
    assert partly["builtMonths"] == list(BUILT)
    assert D(partly["totalRight"]) == D(50)
    whole = await compare(client, as_user, right=budget, **{"from": "2025-10", "to": "2025-11"})
    assert D(partly["totalLeft"]) == D(whole["totalLeft"]) > 0

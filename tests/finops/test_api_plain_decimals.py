"""Amounts the read routes sum or compute are sent in plain notation however small, in JSON and in CSV.

FOCUS bills carry sub-micro costs at 11 decimals; summed and subtracted, they give values whose ``str()`` is in
exponent notation (``1E-10``, ``1.2E-7``, ``0E-11``), which is what msgspec alone would send. A mart with such
costs is built the real way (raw zone, then finops-batch) and read through the API.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from api_support import API, finops_client, finops_settings, migrated_databases
from batch_support import Mart, application, close_mart, cost, open_mart
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import URL

from rosetta.core.settings import DatabaseRole

Client = AsyncTestClient[Litestar]

# A number in exponent notation as a whole JSON string or CSV cell (not the "3e-9" inside a UUID).
EXPONENT = re.compile(r'(?:^|[",:\[{])-?[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+(?:$|[",\]}])', re.MULTILINE)
MONTH = {"from": "2026-01", "to": "2026-01"}


@pytest.fixture(scope="module")
def tiny_urls(server_url: URL) -> Iterator[dict[DatabaseRole, URL]]:
    yield from migrated_databases(server_url, "ftiny")


@pytest.fixture(scope="module")
async def tiny_mart(tiny_urls: dict[DatabaseRole, URL]) -> AsyncIterator[Mart]:
    """In January 2026 TINY-A costs 1E-10, TINY-B 1.2E-7, TINY-C two lines cancelling out at 11 decimals (0E-11);
    TINY-A also costs 3E-10 in December 2025 (so the summary has a previous month to compare with)."""
    mart = await open_mart(lambda: tiny_urls)
    try:
        await mart.land("cmdb", "application", [application(code) for code in ("TINY-A", "TINY-B", "TINY-C")])
        await mart.land(
            "cmdb",
            "cost",
            [
                cost("2025-12-05", "TINY-A", "0.0000000003"),
                cost("2026-01-05", "TINY-A", "0.0000000001"),
                cost("2026-01-05", "TINY-B", "0.00000012"),
                cost("2026-01-05", "TINY-C", "0.00000000001"),
                cost("2026-01-06", "TINY-C", "-0.00000000001"),
            ],
        )
        context = await mart.run()
        assert context.rejected == 0
        yield mart
    finally:
        await close_mart(mart)


@pytest.fixture(scope="module")
async def client(tiny_urls: dict[DatabaseRole, URL], tiny_mart: Mart, identity_server: Any) -> AsyncIterator[Client]:
    async for api, _ in finops_client(finops_settings(tiny_urls, identity_server.entra)):
        yield api


@pytest.fixture(scope="module")
def as_user(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers("Rosetta_User", subject="uma")


async def read(client: Client, headers: dict[str, str], path: str, **params: str) -> tuple[str, dict[str, Any]]:
    """The JSON text of a read (checked free of exponents) and its body."""
    response = await client.get(f"{API}{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert not EXPONENT.search(response.text), response.text
    return response.text, response.json()


async def export(client: Client, headers: dict[str, str], path: str, **params: str) -> dict[str, dict[str, str]]:
    """The CSV export of a list (checked free of exponents), rows by code."""
    response = await client.get(f"{API}{path}", params=params, headers={**headers, "Accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert not EXPONENT.search(response.text), response.text
    return {row["code"]: row for row in csv.DictReader(io.StringIO(response.text))}


async def test_drilldown_sums_are_plain_in_json_and_csv(client: Client, as_user: dict[str, str]) -> None:
    _, body = await read(client, as_user, "/costs/drilldown", level="application", **MONTH)
    totals = {row["code"]: row["total"] for row in body["items"]}
    assert totals == {"TINY-A": "0.0000000001", "TINY-B": "0.00000012", "TINY-C": "0.00000000000"}
    assert body["total"] == body["direct"] == "0.00000012010"
    assert body["indirect"] == "0"
    rows = await export(client, as_user, "/costs/drilldown", level="application", **MONTH)
    assert {code: row["total"] for code, row in rows.items()} == totals


async def test_summary_and_application_page_are_plain(client: Client, as_user: dict[str, str]) -> None:
    _, summary = await read(client, as_user, "/costs/summary", period="2026-01")
    assert summary["total"] == "0.00000012010"
    # Computed by the API: this month minus the previous one.
    assert summary["previousMonth"]["changeAmount"] == "0.00000011980"
    changes = {mover["code"]: mover["changeAmount"] for mover in summary["topMovers"]}
    assert changes == {"TINY-A": "-0.0000000002", "TINY-B": "0.00000012", "TINY-C": "0.00000000000"}
    _, page = await read(client, as_user, "/applications/TINY-C/costs", to="2026-01")
    assert page["total"] == "0.00000000000"
    assert page["months"][-1] == {
        "period": "2026-01",
        "total": "0.00000000000",
        "direct": "0.00000000000",
        "indirect": "0",
    }


async def test_comparison_variances_are_plain_in_json_and_csv(client: Client, as_user: dict[str, str]) -> None:
    params = {"left": "actual", "right": "actual", "level": "application", **MONTH}
    _, body = await read(client, as_user, "/budgets/comparison", **params)
    # left - right of equal amounts at 10, 8 and 11 decimals: str() of each difference is 0E-10, 0E-8, 0E-11.
    assert body["totalVariance"] == "0.00000000000"
    variances = {row["code"]: row["variance"] for row in body["items"]}
    assert variances == {"TINY-A": "0.0000000000", "TINY-B": "0.00000000", "TINY-C": "0.00000000000"}
    rows = await export(client, as_user, "/budgets/comparison", **params)
    assert {code: row["variance"] for code, row in rows.items()} == variances
    assert rows["TINY-A"]["left"] == "0.0000000001"

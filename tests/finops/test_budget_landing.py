"""Budgets landed in the raw zone and edited through finops-api: a landed line is applied once.

Finance lands its budget file; a FinOps admin then corrects a line through the API. The nightly run must not
undo the correction: a landed document is applied by the first run that reads it, and only a newly landed
document for the same line replaces the admin's amount. Every change, by either, is a revision and an audit row
with the lines before and after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from api_support import ADMIN, API, FINOPS_ADMIN, audit_rows, finops_client, finops_settings
from batch_support import Mart, application
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
LINE = {"version": "Budget 2026 initial", "year": 2026, "scope_level": "product", "currency": "EUR"}


@pytest.fixture
async def client(mart: Mart, identity_server: Any) -> AsyncIterator[Client]:
    async for api, _ in finops_client(finops_settings(mart.urls, identity_server.entra)):
        yield api


async def current_lines(client: Client, headers: dict[str, str], budget_id: str) -> dict[str, str]:
    page = (await client.get(f"{API}/budgets/{budget_id}/lines?limit=500", headers=headers)).json()
    return {line["period"]: line["amount"] for line in page["items"]}


async def test_an_admin_edit_of_a_landed_line_stands_until_a_new_document_lands_for_it(
    mart: Mart, client: Client, auth_headers: Callable[..., dict[str, str]]
) -> None:
    finops, admin = auth_headers(FINOPS_ADMIN, subject="fiona"), auth_headers(ADMIN, subject="root")
    await mart.land("cmdb", "application", [application("PAY-CHECKOUT", "PAY-ONLINE")])
    await mart.land(
        "finance",
        "budget",
        [
            {**LINE, "month": 1, "scope_code": "PAY-ONLINE", "amount": "100.00"},
            {**LINE, "month": 2, "scope_code": "PAY-ONLINE", "amount": "200.00"},
        ],
    )
    await mart.run()
    [budget] = (await client.get(f"{API}/budgets", headers=finops)).json()["items"]
    path = f"{API}/budgets/{budget['id']}"
    assert await current_lines(client, finops, budget["id"]) == {"2026-01": "100.00", "2026-02": "200.00"}

    etag = (await client.get(path, headers=finops)).headers["etag"]
    patch = {"lines": [{"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-01", "amount": "999.00"}]}
    patched = await client.patch(path, json=patch, headers={**finops, "If-Match": etag})
    assert patched.status_code == 200, patched.text

    # The nightly run reads the same documents again: the admin's amount stands, no revision, no audit row.
    rerun = await mart.run()
    assert rerun.counters["budget_lines_changed"] == 0
    assert await current_lines(client, finops, budget["id"]) == {"2026-01": "999.00", "2026-02": "200.00"}
    assert (await client.get(path, headers=finops)).json()["revision"] == 2

    # Finance lands a new amount for January: it wins over the edit, as the budget's next revision.
    await mart.land("finance", "budget", [{**LINE, "month": 1, "scope_code": "PAY-ONLINE", "amount": "150.00"}])
    landed = await mart.run()
    assert landed.counters["budget_lines_changed"] == 1
    assert await current_lines(client, finops, budget["id"]) == {"2026-01": "150.00", "2026-02": "200.00"}
    assert (await client.get(path, headers=finops)).json()["revision"] == 3
    # Revision 2 keeps the admin's amount: a comparison against budget:<id>@2 still shows it.
    kept = await client.get(f"{path}/revisions/2/lines", headers=finops)
    assert {line["period"]: line["amount"] for line in kept.json()["items"]} == {
        "2026-01": "999.00",
        "2026-02": "200.00",
    }

    # The trail says what the run replaced, not only how many lines: the edit's amount before, the landed one after.
    rows = await audit_rows(client, admin, "budget_version", budget["id"])
    imports = [row for row in rows if row["action"] == "budget.import.raw"]
    assert [row["actorSubject"] for row in imports] == ["batch:finops", "batch:finops"]
    first, last = sorted(imports, key=lambda row: row["after"]["revision"])
    assert first["before"] is None
    assert first["after"]["lines"] == [
        ["product", "PAY-ONLINE", "2026-01", "100.00", "EUR"],
        ["product", "PAY-ONLINE", "2026-02", "200.00", "EUR"],
    ]
    assert last["before"] == {"revision": 2, "lines": [["product", "PAY-ONLINE", "2026-01", "999.00", "EUR"]]}
    assert last["after"]["lines"] == [["product", "PAY-ONLINE", "2026-01", "150.00", "EUR"]]
    assert last["after"]["revision"] == 3

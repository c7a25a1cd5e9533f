"""finops-api management routes on a real PostgreSQL, with real tokens from the test issuer.

Budgets, pricing views and allocation rules: RBAC (a user reads, only FinOps admins change), the audit
trail of every change, ETag / If-Match (412 on a stale ETag), CSV and Excel imports, CSV export, cursor
pagination, problem+json on bad input, amounts as decimal strings.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from api_support import (
    ADMIN,
    API,
    FINOPS_ADMIN,
    USER,
    all_pages,
    assert_problem,
    audit_rows,
    finops_client,
    finops_settings,
    migrated_databases,
)
from litestar import Litestar
from litestar.testing import AsyncTestClient
from openpyxl import Workbook
from sqlalchemy.engine import URL

from rosetta.core.db import asyncpg_dsn
from rosetta.core.settings import DatabaseRole

Client = AsyncTestClient[Litestar]


@pytest.fixture(scope="module")
def api_urls(server_url: URL) -> Iterator[dict[DatabaseRole, URL]]:
    yield from migrated_databases(server_url, "fapi")


# (application, product, family, domain): the codes the tests name, as finops-batch would load them from the CMDB.
HIERARCHY = [
    ("PAY-CHECKOUT", "PAY-ONLINE", "PAY", "COMMERCE"),
    ("CRM-PORTAL", "CRM-CORE", "CRM", "COMMERCE"),
    ("DWH-ETL", "DWH-CORE", "DATA", "PLATFORM"),
]
POOLS = ["network", "security"]


async def load_reference_data(urls: dict[DatabaseRole, URL]) -> None:
    """Write the hierarchy and pools finops-batch would load (the API checks codes against them)."""
    connection = await asyncpg.connect(asyncpg_dsn(urls["finops"]))
    try:
        for application, product, family, domain in HIERARCHY:
            await connection.execute(
                "INSERT INTO dim_application (application_code, valid_from, name, product_code, product_name,"
                " family_code, family_name, domain_code, domain_name)"
                " VALUES ($1, DATE '2020-01-01', $1, $2, $2, $3, $3, $4, $4)",
                application, product, family, domain,
            )  # fmt: skip
            await connection.execute(
                "INSERT INTO dim_product VALUES ($1, DATE '2020-01-01', NULL, $1, $2) ON CONFLICT DO NOTHING",
                product, family,
            )  # fmt: skip
            await connection.execute(
                "INSERT INTO dim_family VALUES ($1, DATE '2020-01-01', NULL, $1, $2) ON CONFLICT DO NOTHING",
                family, domain,
            )  # fmt: skip
            await connection.execute(
                "INSERT INTO dim_domain VALUES ($1, DATE '2020-01-01', NULL, $1) ON CONFLICT DO NOTHING", domain
            )
        for pool in POOLS:
            await connection.execute("INSERT INTO dim_cost_pool (pool_code, name) VALUES ($1, $1)", pool)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def client(api_urls: dict[DatabaseRole, URL], identity_server: Any) -> AsyncIterator[Client]:
    await load_reference_data(api_urls)
    async for api, _ in finops_client(finops_settings(api_urls, identity_server.entra)):
        yield api


@pytest.fixture(scope="module")
def as_user(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers(USER, subject="uma")


@pytest.fixture(scope="module")
def as_finops(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers(FINOPS_ADMIN, subject="fiona")


@pytest.fixture(scope="module")
def as_admin(auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers(ADMIN, subject="root")


def budget_body(name: str, amount: str = "1000.00") -> dict[str, Any]:
    return {
        "name": name,
        "description": "test budget",
        "lines": [
            {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-01", "amount": amount},
            {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-02", "amount": "250.10"},
            {"scopeLevel": "domain", "scopeCode": "COMMERCE", "period": "2026-01", "amount": "5000", "currency": "EUR"},
        ],
    }


# ----------------------------------------------------------------------------------------------- RBAC


async def test_every_finops_route_needs_a_token(client: Client) -> None:
    for path in (
        "/budgets",
        "/pricing-views",
        "/allocation-rules",
        "/mapping-aliases",
        "/batch/runs",
        "/costs/summary?period=2026-01",
    ):
        response = await client.get(f"{API}{path}")
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_user_reads_but_every_mutation_is_forbidden(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str]
) -> None:
    created = await client.post(f"{API}/budgets", json=budget_body("RBAC budget"), headers=as_finops)
    assert created.status_code == 201, created.text
    budget = created.json()
    view = await client.post(f"{API}/pricing-views", json={"name": "RBAC view"}, headers=as_finops)
    assert view.status_code == 201, view.text
    view_id = view.json()["id"]

    for path in (
        "/budgets",
        f"/budgets/{budget['id']}",
        f"/budgets/{budget['id']}/lines",
        f"/budgets/{budget['id']}/revisions",
        f"/budgets/{budget['id']}/revisions/1",
        f"/budgets/{budget['id']}/revisions/1/lines",
        # Two budgets: against actual, a window no batch has built would be a 404 (see below).
        f"/budgets/comparison?left=budget:{budget['id']}&right=budget:{budget['id']}@1&from=2026-01&to=2026-01",
        "/pricing-views",
        f"/pricing-views/{view_id}",
        "/allocation-rules",
        "/allocation-rules/default",
        "/mapping-aliases",
        "/batch/runs",
        "/cost-insights/last-complete-billing-date",
        "/me",
    ):
        response = await client.get(f"{API}{path}", headers=as_user)
        assert response.status_code == 200, (path, response.text)
    # No batch has run on this database: the summary of a month, or a drill-down over one, is "not built"
    # (past the role check), never a month of zeros.
    unbuilt = assert_problem(await client.get(f"{API}/costs/summary?period=2026-01", headers=as_user), 404, "period")
    assert unbuilt["detail"] == "period: month 2026-01 is not built by finops-batch (none is built yet)"
    unbuilt = assert_problem(
        await client.get(f"{API}/costs/drilldown?level=domain&to=2026-01", headers=as_user), 404, "to"
    )
    assert unbuilt["detail"] == "to: month 2026-01 is not built by finops-batch (none is built yet)"
    # With no window sent, the default (the current month) is not the client's doing: no field to name.
    unbuilt = assert_problem(await client.get(f"{API}/costs/drilldown?level=domain", headers=as_user), 404)
    assert unbuilt["detail"].endswith("is not built by finops-batch (none is built yet)")
    # ...and so is a comparison of actual costs over it.
    compared = await client.get(
        f"{API}/budgets/comparison?right=budget:{budget['id']}&from=2026-01&to=2026-01", headers=as_user
    )
    assert assert_problem(compared, 404, "from")["detail"] == (
        "from, to: month 2026-01 is not built by finops-batch (none is built yet)"
    )

    etag = {"If-Match": created.headers["etag"]}
    mutations: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/budgets", {"json": budget_body("Forbidden")}),
        ("PUT", f"/budgets/{budget['id']}", {"json": {"name": "x"}, "headers": etag}),
        ("PATCH", f"/budgets/{budget['id']}", {"json": {"name": "x"}, "headers": etag}),
        (
            "POST",
            f"/budgets/{budget['id']}/import",
            {"content": b"scope_level\n", "headers": {"Content-Type": "text/csv"}},
        ),
        ("POST", "/pricing-views", {"json": {"name": "Forbidden"}}),
        ("PUT", f"/pricing-views/{view_id}", {"json": {}}),
        ("PATCH", f"/pricing-views/{view_id}", {"json": {}}),
        ("POST", f"/pricing-views/{view_id}/import", {"content": b"unit\n", "headers": {"Content-Type": "text/csv"}}),
        ("POST", "/allocation-rules", {"json": {"ruleId": "r", "method": "even", "validFrom": "2026-01"}}),
        ("POST", "/mapping-aliases", {"json": {"kind": "environment", "alias": "live", "canonical": "prod"}}),
        ("DELETE", "/mapping-aliases/1", {}),
        ("POST", "/batch/runs", {"json": {"period": "2026-01"}}),
    ]
    for method, path, options in mutations:
        headers = {**as_user, **options.pop("headers", {})}
        response = await client.request(method, f"{API}{path}", headers=headers, **options)
        assert_problem(response, 403)
    # Nothing changed: the budget is as created and its audit trail holds only the creation.
    again = await client.get(f"{API}/budgets/{budget['id']}", headers=as_user)
    assert again.headers["etag"] == created.headers["etag"]
    listing = await client.get(f"{API}/budgets?limit=500", headers=as_user)
    assert listing.status_code == 200, (listing.status_code, listing.headers, listing.text)
    names = [item["name"] for item in listing.json()["items"]]
    assert "Forbidden" not in names


async def test_the_audit_log_is_for_admins_only(
    client: Client, as_user: dict[str, str], as_finops: dict[str, str]
) -> None:
    assert_problem(await client.get(f"{API}/audit", headers=as_user), 403)
    assert_problem(await client.get(f"{API}/audit", headers=as_finops), 403)


# ----------------------------------------------------------------------------------------------- budgets


async def test_budget_lifecycle_with_etags_and_audit(
    client: Client, as_finops: dict[str, str], as_admin: dict[str, str]
) -> None:
    created = await client.post(f"{API}/budgets", json=budget_body("Budget 2026 initial"), headers=as_finops)
    assert created.status_code == 201, created.text
    budget = created.json()
    assert created.headers["location"] == f"{API}/budgets/{budget['id']}"
    # Amounts travel as decimal strings, exactly as sent.
    assert budget["totals"] == {"EUR": "6250.10"}
    assert budget["lineCount"] == 3
    assert (budget["firstPeriod"], budget["lastPeriod"]) == ("2026-01", "2026-02")
    assert budget["createdBy"] == "oid-fiona"
    first_etag = created.headers["etag"]

    # The same name twice is a conflict, not a second version.
    assert_problem(await client.post(f"{API}/budgets", json=budget_body("Budget 2026 initial"), headers=as_finops), 409)

    # PUT without If-Match: 428; with a made-up ETag: 412; with the current one: 200 and a new ETag.
    replacement = {"name": "Budget 2026 revised Q2", "lines": [budget_body("x")["lines"][0]]}
    path = f"{API}/budgets/{budget['id']}"
    assert_problem(await client.put(path, json=replacement, headers=as_finops), 428)
    stale = await client.put(path, json=replacement, headers={**as_finops, "If-Match": '"0123"'})
    assert_problem(stale, 412)
    replaced = await client.put(path, json=replacement, headers={**as_finops, "If-Match": first_etag})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Budget 2026 revised Q2"
    assert replaced.json()["lineCount"] == 1
    assert replaced.json()["revision"] == 2
    second_etag = replaced.headers["etag"]
    assert second_etag != first_etag

    # The first ETag is now stale: a writer who read before the PUT gets 412 and changes nothing.
    lost_update = await client.patch(path, json={"description": "lost"}, headers={**as_finops, "If-Match": first_etag})
    assert_problem(lost_update, 412)
    patched = await client.patch(
        path,
        json={
            "description": "after Q2 review",
            "lines": [{"scopeLevel": "family", "scopeCode": "PAY", "period": "2026-03", "amount": "-12.5"}],
        },
        headers={**as_finops, "If-Match": second_etag},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "after Q2 review"
    assert patched.json()["totals"] == {"EUR": "987.50"}
    assert (await client.get(path, headers=as_finops)).headers["etag"] == patched.headers["etag"]

    actions = [row["action"] for row in await audit_rows(client, as_admin, "budget_version", budget["id"])]
    assert sorted(actions) == ["budget.create", "budget.patch", "budget.replace"]
    replace_row = next(
        row
        for row in await audit_rows(client, as_admin, "budget_version", budget["id"])
        if row["action"] == "budget.replace"
    )
    assert replace_row["actorSubject"] == "oid-fiona"
    assert replace_row["before"]["name"] == "Budget 2026 initial"
    assert replace_row["after"]["name"] == "Budget 2026 revised Q2"
    # The replaced lines exist nowhere else any more: the audit row keeps them, and the new ones.
    assert replace_row["before"]["lines"] == [
        ["domain", "COMMERCE", "2026-01", "5000.00", "EUR"],
        ["product", "PAY-ONLINE", "2026-01", "1000.00", "EUR"],
        ["product", "PAY-ONLINE", "2026-02", "250.10", "EUR"],
    ]
    assert replace_row["after"]["lines"] == [["product", "PAY-ONLINE", "2026-01", "1000.00", "EUR"]]


async def test_budget_lines_import_from_csv_and_excel(client: Client, as_finops: dict[str, str]) -> None:
    created = await client.post(f"{API}/budgets", json={"name": "Imported budget"}, headers=as_finops)
    path = f"{API}/budgets/{created.json()['id']}"
    # A decimal-comma file: "1 234,56" shows the convention, so "1.000" is a thousand.
    csv_body = (
        b"Scope level;Scope code;Period;Amount;Currency\n"
        b"product;PAY-ONLINE;2026-01;1 234,56;EUR\n"
        b"application;PAY-CHECKOUT;2026-02;1.000;EUR\n"
    )
    imported = await client.post(f"{path}/import", content=csv_body, headers={**as_finops, "Content-Type": "text/csv"})
    assert imported.status_code == 200, imported.text
    assert imported.json()["totals"] == {"EUR": "2234.56"}

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["scope_level", "scope_code", "period", "amount"])
    sheet.append(["domain", "COMMERCE", "2026-04", 1500.25])
    sheet.append(["family", "PAY", "2026-05", 10])
    buffer = io.BytesIO()
    workbook.save(buffer)
    excel = await client.post(
        f"{path}/import",
        content=buffer.getvalue(),
        headers={**as_finops, "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
    )
    assert excel.status_code == 200, excel.text
    # An import replaces the version's lines.
    assert excel.json()["totals"] == {"EUR": "1510.25"}
    lines = (await client.get(f"{path}/lines", headers=as_finops)).json()["items"]
    assert lines == [
        {"scopeLevel": "domain", "scopeCode": "COMMERCE", "period": "2026-04", "amount": "1500.25", "currency": "EUR"},
        {"scopeLevel": "family", "scopeCode": "PAY", "period": "2026-05", "amount": "10.00", "currency": "EUR"},
    ]

    bad = await client.post(
        f"{path}/import",
        content=b"scope_level,scope_code,period,amount\nproduct,P,2026-13,1\n",
        headers={**as_finops, "Content-Type": "text/csv"},
    )
    assert_problem(bad, 400, "row 2.period")
    # The rejected file changed nothing.
    assert (await client.get(path, headers=as_finops)).json()["totals"] == {"EUR": "1510.25"}


async def test_budget_validation_is_problem_json_naming_the_field(client: Client, as_finops: dict[str, str]) -> None:
    bad_period = budget_body("Bad period")
    bad_period["lines"][1]["period"] = "2026-2"
    assert_problem(await client.post(f"{API}/budgets", json=bad_period, headers=as_finops), 400, "lines[1].period")
    bad_level = budget_body("Bad level")
    bad_level["lines"][0]["scopeLevel"] = "team"
    assert_problem(await client.post(f"{API}/budgets", json=bad_level, headers=as_finops), 400)
    duplicate = budget_body("Duplicate line")
    duplicate["lines"].append(duplicate["lines"][0])
    assert_problem(await client.post(f"{API}/budgets", json=duplicate, headers=as_finops), 400, "lines[3]")
    too_long = budget_body("Long code")
    too_long["lines"][0]["scopeCode"] = "X" * 65
    assert_problem(await client.post(f"{API}/budgets", json=too_long, headers=as_finops), 400, "lines[0].scopeCode")
    huge = budget_body("Huge amount")
    huge["lines"][0]["amount"] = "1E+20"
    assert_problem(await client.post(f"{API}/budgets", json=huge, headers=as_finops), 400, "lines[0].amount")
    not_a_number = budget_body("NaN amount")
    not_a_number["lines"][0]["amount"] = "NaN"
    assert_problem(await client.post(f"{API}/budgets", json=not_a_number, headers=as_finops), 400, "lines[0].amount")
    year_zero = budget_body("Year zero")
    year_zero["lines"][0]["period"] = "0000-01"
    assert_problem(await client.post(f"{API}/budgets", json=year_zero, headers=as_finops), 400, "lines[0].period")
    assert_problem(await client.get(f"{API}/budgets/{uuid.uuid4()}", headers=as_finops), 404)
    assert_problem(await client.get(f"{API}/budgets?limit=0", headers=as_finops), 400)
    assert_problem(await client.get(f"{API}/budgets?cursor=not-a-cursor", headers=as_finops), 400, "cursor")


async def test_budget_list_pagination_and_csv_export(client: Client, as_finops: dict[str, str]) -> None:
    for index in range(3):
        response = await client.post(
            f"{API}/budgets", json=budget_body(f"Paged {index}", f"{index}.50"), headers=as_finops
        )
        assert response.status_code == 201
    seen: list[str] = []
    url: str | None = f"{API}/budgets?name=Paged&limit=2"
    while url is not None:
        page = (await client.get(url, headers=as_finops)).json()
        assert len(page["items"]) <= 2
        seen.extend(item["name"] for item in page["items"])
        url = page["next"]
    # Newest first, each exactly once.
    assert seen == ["Paged 2", "Paged 1", "Paged 0"]

    exported = await client.get(f"{API}/budgets?name=Paged&limit=1", headers={**as_finops, "Accept": "text/csv"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    # The export walks every page, whatever the page size.
    assert [row["name"] for row in rows] == ["Paged 2", "Paged 1", "Paged 0"]
    # A map keyed by data (totals per currency) is one column of JSON text: new currencies add no column.
    assert [json.loads(row["totals"]) for row in rows] == [{"EUR": "5252.60"}, {"EUR": "5251.60"}, {"EUR": "5250.60"}]


async def test_every_list_pages_through_each_item_once_in_the_order_of_one_full_page(
    client: Client, as_finops: dict[str, str], api_urls: dict[DatabaseRole, URL]
) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(api_urls["finops"]))
    try:
        await connection.execute("INSERT INTO dim_cost_pool (pool_code, name) VALUES ('paging', 'Paging pool')")
    finally:
        await connection.close()
    for version in range(3):
        rule = {"ruleId": "paging-split", "poolCode": "paging", "method": "even", "validFrom": f"2026-0{version + 1}"}
        assert (await client.post(f"{API}/allocation-rules", json=rule, headers=as_finops)).status_code == 201
    for name in ("Paging B", "Paging A", "Paging B"):
        view = {
            "name": name,
            "currency": "EUR",
            "rates": [{"serviceCategory": "Compute", "unit": "h", "unitPrice": "1"}],
        }
        assert (await client.post(f"{API}/pricing-views", json=view, headers=as_finops)).status_code == 201
    budget = await client.post(f"{API}/budgets", json=budget_body("Paging lines"), headers=as_finops)
    assert budget.status_code == 201, budget.text
    # A second revision, so that the revision list has more than one page of one.
    renamed = await client.patch(
        f"{API}/budgets/{budget.json()['id']}",
        json={"name": "Paging lines, renamed"},
        headers={**as_finops, "If-Match": budget.headers["etag"]},
    )
    assert renamed.status_code == 200, renamed.text

    lists = [
        f"{API}/allocation-rules?allVersions=true",
        f"{API}/allocation-rules",
        f"{API}/pricing-views",
        f"{API}/budgets",
        f"{API}/budgets/{budget.json()['id']}/lines",
        f"{API}/budgets/{budget.json()['id']}/revisions",
        f"{API}/budgets/{budget.json()['id']}/revisions/1/lines",
    ]
    for url in lists:
        separator = "&" if "?" in url else "?"
        whole = (await client.get(f"{url}{separator}limit=500", headers=as_finops)).json()
        assert whole["next"] is None
        assert len(whole["items"]) >= 2, url
        assert await all_pages(client, f"{url}{separator}limit=1", as_finops) == whole["items"], url
    rules = (await client.get(f"{API}/allocation-rules?allVersions=true&pool=paging", headers=as_finops)).json()
    assert [(rule["ruleId"], rule["version"]) for rule in rules["items"]] == [("paging-split", v) for v in (1, 2, 3)]
    views = [
        (view["name"], view["version"])
        for view in (await client.get(f"{API}/pricing-views?limit=500", headers=as_finops)).json()["items"]
    ]
    assert [item for item in views if item[0].startswith("Paging")] == [
        ("Paging A", 1),
        ("Paging B", 1),
        ("Paging B", 2),
    ]


async def test_csv_exports_have_the_item_schema_columns_one_charset_and_no_formulas(
    client: Client, as_finops: dict[str, str]
) -> None:
    csv_accept = {**as_finops, "Accept": "text/csv"}
    budget_columns = [
        "id", "name", "description", "revision", "lineCount", "totals", "firstPeriod", "lastPeriod", "createdBy",
        "createdAt", "updatedBy", "updatedAt",
    ]  # fmt: skip
    # No budget matches: the export is still the header row, so a spreadsheet or BI import finds its columns.
    empty = await client.get(f"{API}/budgets?name=no-such-budget-anywhere", headers=csv_accept)
    assert empty.status_code == 200, empty.text
    assert empty.headers["content-type"] == "text/csv; charset=utf-8"
    assert empty.text == ",".join(budget_columns) + "\n"

    # A budget without lines comes first (newest first): the columns do not depend on the first row's data.
    hostile = {
        "name": '=HYPERLINK("http://evil.example","csvcheck")',
        "description": "@SUM(1+1)",
        "lines": [{"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-03", "amount": "-3.33"}],
    }
    created = await client.post(f"{API}/budgets", json=hostile, headers=as_finops)
    assert created.status_code == 201, created.text
    empty_budget = await client.post(f"{API}/budgets", json={"name": "-csvcheck, dashed"}, headers=as_finops)
    assert empty_budget.status_code == 201, empty_budget.text

    exported = await client.get(f"{API}/budgets?name=csvcheck", headers=csv_accept)
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    reader = csv.reader(io.StringIO(exported.text))
    assert next(reader) == budget_columns
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(exported.text))}
    first, second = rows[empty_budget.json()["id"]], rows[created.json()["id"]]
    assert (first["totals"], first["lineCount"], first["description"]) == ("{}", "0", "")
    # Text a spreadsheet would run as a formula gets a leading quote; numbers stay numbers.
    assert first["name"] == "'-csvcheck, dashed"
    assert second["name"] == "'" + hostile["name"]
    assert second["description"] == "'@SUM(1+1)"
    lines = await client.get(f"{API}/budgets/{created.json()['id']}/lines", headers=csv_accept)
    assert list(csv.DictReader(io.StringIO(lines.text))) == [
        {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-03", "amount": "-3.33", "currency": "EUR"}
    ]


async def test_a_single_document_answers_406_to_a_client_accepting_only_csv(
    client: Client, as_user: dict[str, str]
) -> None:
    for path in (
        "/costs/summary?period=2026-01",
        "/allocation-rules/default",
        "/cost-insights/last-complete-billing-date",
    ):
        refused = await client.get(f"{API}{path}", headers={**as_user, "Accept": "text/csv"})
        body = assert_problem(refused, 406)
        assert body["availableMediaTypes"] == ["application/json"]
        # JSON is fine as a second choice: then the client gets it (a problem, here, for the summary of a
        # month no batch has built on this database).
        second_choice = await client.get(
            f"{API}{path}", headers={**as_user, "Accept": "text/csv, application/json;q=0.5"}
        )
        assert second_choice.status_code == (404 if path.startswith("/costs/summary") else 200), second_choice.text
        assert second_choice.headers["content-type"].startswith(
            "application/problem+json" if path.startswith("/costs/summary") else "application/json"
        )


async def test_every_budget_change_is_a_new_revision_and_earlier_ones_stay_as_they_were(
    client: Client,
    as_finops: dict[str, str],
    as_user: dict[str, str],
    as_admin: dict[str, str],
    api_urls: dict[DatabaseRole, URL],
) -> None:
    created = await client.post(f"{API}/budgets", json=budget_body("Revisions budget"), headers=as_finops)
    assert created.status_code == 201, created.text
    budget = created.json()
    author = budget["createdBy"]
    # Creation is revision 1: its author and time are the version's.
    assert (budget["revision"], budget["updatedBy"], budget["updatedAt"]) == (1, author, budget["createdAt"])
    path = f"{API}/budgets/{budget['id']}"

    async def change(method: str, etag: str, **options: Any) -> Any:
        headers = {**as_finops, "If-Match": etag, **options.pop("headers", {})}
        response = await client.request(method, f"{path}{options.pop('suffix', '')}", headers=headers, **options)
        assert response.status_code == 200, response.text
        return response

    january = {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-01"}
    patched = await change("PATCH", created.headers["etag"], json={"lines": [{**january, "amount": "1100.00"}]})
    assert (patched.json()["revision"], patched.json()["totals"]) == (2, {"EUR": "6350.10"})
    # A PATCH that changes nothing (the same description, an amount equal as a number) makes no empty revision:
    # the version, its ETag and its stored amounts stay as they were.
    unchanged = await change(
        "PATCH", patched.headers["etag"], json={"description": "test budget", "lines": [{**january, "amount": "1100"}]}
    )
    assert unchanged.json() == patched.json()
    assert unchanged.headers["etag"] == patched.headers["etag"]
    # A new name is a change of the version: its own revision.
    renamed = await change("PATCH", patched.headers["etag"], json={"name": "Revisions budget, renamed"})
    assert (renamed.json()["revision"], renamed.json()["totals"]) == (3, {"EUR": "6350.10"})
    # A PUT of what is there already (amounts with other decimals, lines in another order) makes none either.
    same = {
        "name": "Revisions budget, renamed",
        "description": "test budget",
        "lines": [
            {"scopeLevel": "domain", "scopeCode": "COMMERCE", "period": "2026-01", "amount": "5000.00"},
            {**january, "amount": "1100"},
            {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-02", "amount": "250.1"},
        ],
    }
    put_unchanged = await change("PUT", renamed.headers["etag"], json=same)
    assert (put_unchanged.json(), put_unchanged.headers["etag"]) == (renamed.json(), renamed.headers["etag"])
    replaced = await change(
        "PUT",
        renamed.headers["etag"],
        json={**same, "description": "after review", "lines": [{**january, "amount": "900.00"}]},
    )
    assert (replaced.json()["revision"], replaced.json()["lineCount"]) == (4, 1)
    upload = b"scope_level,scope_code,period,amount\nfamily,PAY,2026-03,42.50\n"
    imported = await change(
        "POST", replaced.headers["etag"], suffix="/import", content=upload, headers={"Content-Type": "text/csv"}
    )
    current = imported.json()
    assert (current["revision"], current["description"], current["updatedBy"]) == (5, "after review", author)
    assert current["createdAt"] == budget["createdAt"]
    reimported = await change(
        "POST", imported.headers["etag"], suffix="/import", content=upload, headers={"Content-Type": "text/csv"}
    )
    assert (reimported.json(), reimported.headers["etag"]) == (current, imported.headers["etag"])

    # Every revision keeps its header and lines exactly as they were; a user reads them.
    lines = {
        1: [("domain", "COMMERCE", "2026-01", "5000.00"), ("product", "PAY-ONLINE", "2026-01", "1000.00"),
            ("product", "PAY-ONLINE", "2026-02", "250.10")],
        2: [("domain", "COMMERCE", "2026-01", "5000.00"), ("product", "PAY-ONLINE", "2026-01", "1100.00"),
            ("product", "PAY-ONLINE", "2026-02", "250.10")],
        4: [("product", "PAY-ONLINE", "2026-01", "900.00")],
        5: [("family", "PAY", "2026-03", "42.50")],
    }  # fmt: skip
    lines[3] = lines[2]
    headers = {
        1: ("Revisions budget", "test budget", {"EUR": "6250.10"}),
        2: ("Revisions budget", "test budget", {"EUR": "6350.10"}),
        3: ("Revisions budget, renamed", "test budget", {"EUR": "6350.10"}),
        4: ("Revisions budget, renamed", "after review", {"EUR": "900.00"}),
        5: ("Revisions budget, renamed", "after review", {"EUR": "42.50"}),
    }
    etags = set()
    for number, (name, description, totals) in headers.items():
        response = await client.get(f"{path}/revisions/{number}", headers=as_user)
        assert response.status_code == 200, response.text
        etags.add(response.headers["etag"])
        kept = response.json()
        assert (kept["id"], kept["revision"], kept["name"], kept["description"]) == (
            budget["id"],
            number,
            name,
            description,
        )
        assert (kept["totals"], kept["lineCount"], kept["createdBy"]) == (totals, len(lines[number]), author)
        kept_lines = await all_pages(client, f"{path}/revisions/{number}/lines?limit=2", as_user)
        assert sorted(
            (line["scopeLevel"], line["scopeCode"], line["period"], line["amount"]) for line in kept_lines
        ) == sorted(lines[number])
    assert len(etags) == len(headers)
    revision_one = await client.get(f"{path}/revisions/1", headers=as_user)
    assert revision_one.json()["createdAt"] == budget["createdAt"]
    assert (await client.get(f"{path}/revisions/1", headers=as_user)).headers["etag"] == revision_one.headers["etag"]
    # The current lines are those of the current revision.
    assert await all_pages(client, f"{path}/lines", as_user) == await all_pages(
        client, f"{path}/revisions/5/lines", as_user
    )

    # The list, oldest first, page by page, and as CSV.
    seen = await all_pages(client, f"{path}/revisions?limit=2", as_user)
    assert [(item["revision"], item["name"], item["lineCount"], item["totals"]) for item in seen] == [
        (number, name, len(lines[number]), totals) for number, (name, _, totals) in headers.items()
    ]
    exported = await client.get(f"{path}/revisions?limit=1", headers={**as_user, "Accept": "text/csv"})
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert next(csv.reader(io.StringIO(exported.text))) == [
        "id", "revision", "name", "description", "lineCount", "totals", "firstPeriod", "lastPeriod", "createdBy",
        "createdAt",
    ]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["revision"], row["lineCount"], json.loads(row["totals"])) for row in rows] == [
        (str(number), str(len(lines[number])), totals) for number, (_, _, totals) in headers.items()
    ]
    lines_csv = await client.get(f"{path}/revisions/1/lines", headers={**as_user, "Accept": "text/csv"})
    assert [row["amount"] for row in csv.DictReader(io.StringIO(lines_csv.text))] == ["5000.00", "1000.00", "250.10"]

    # Unknown revisions and versions are 404; a number no revision can have is a 400 naming it.
    missing = assert_problem(await client.get(f"{path}/revisions/6", headers=as_user), 404)
    assert missing["detail"] == "budget version Revisions budget, renamed has no revision 6 (it has 1 to 5)"
    assert_problem(await client.get(f"{path}/revisions/6/lines", headers=as_user), 404)
    for unknown in ("revisions", "revisions/1", "revisions/1/lines"):
        assert_problem(await client.get(f"{API}/budgets/{uuid.uuid4()}/{unknown}", headers=as_user), 404)
    for number in ("0", "2147483648"):
        assert_problem(await client.get(f"{path}/revisions/{number}", headers=as_user), 400, "revision")
        assert_problem(await client.get(f"{path}/revisions/{number}/lines", headers=as_user), 400, "revision")

    # A user reads revisions but changes nothing, and no route changes a kept revision.
    assert_problem(await client.put(path, json=same, headers={**as_user, "If-Match": imported.headers["etag"]}), 403)
    assert (await client.put(f"{path}/revisions/1", json=same, headers=as_finops)).status_code == 405
    # ...nor can anything below the API: the database refuses to change or delete a kept revision.
    connection = await asyncpg.connect(asyncpg_dsn(api_urls["finops"]))
    try:
        for statement in (
            "UPDATE budget_revision_line SET amount = 1 WHERE budget_version_id = $1",
            "DELETE FROM budget_revision_line WHERE budget_version_id = $1",
            "UPDATE budget_revision SET name = 'rewritten' WHERE budget_version_id = $1",
            "DELETE FROM budget_revision WHERE budget_version_id = $1",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
                await connection.execute(statement, uuid.UUID(budget["id"]))
    finally:
        await connection.close()

    # Every change is audited, with the revision before and after; the unchanged ones name the same one twice.
    audited = await audit_rows(client, as_admin, "budget_version", budget["id"])
    assert sorted(
        (row["action"], (row["before"] or {}).get("revision"), row["after"]["revision"]) for row in audited
    ) == sorted(
        [
            ("budget.create", None, 1),
            ("budget.patch", 1, 2),
            ("budget.patch", 2, 2),
            ("budget.patch", 2, 3),
            ("budget.replace", 3, 3),
            ("budget.replace", 3, 4),
            ("budget.import", 4, 5),
            ("budget.import", 5, 5),
        ],
    )


# ----------------------------------------------------------------------------------------------- pricing views


async def test_pricing_views_are_versioned_by_name_and_updated_with_if_match(
    client: Client, as_finops: dict[str, str], as_admin: dict[str, str]
) -> None:
    body = {
        "name": "Catalogue 2027",
        "currency": "EUR",
        "rates": [
            {"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.0412"},
            {"serviceCategory": "Storage", "unit": "GB-months", "unitPrice": "0.021"},
        ],
    }
    first = await client.post(f"{API}/pricing-views", json=body, headers=as_finops)
    assert first.status_code == 201, first.text
    second = await client.post(f"{API}/pricing-views", json=body, headers=as_finops)
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    view = second.json()
    assert view["rates"][0] == {"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.0412"}

    path = f"{API}/pricing-views/{view['id']}"
    etag = (await client.get(path, headers=as_finops)).headers["etag"]
    patched = await client.patch(
        path,
        json={"rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.05"}]},
        headers={**as_finops, "If-Match": etag},
    )
    assert patched.status_code == 200, patched.text
    assert [rate["unitPrice"] for rate in patched.json()["rates"]] == ["0.05", "0.021"]
    assert_problem(await client.put(path, json={"rates": []}, headers={**as_finops, "If-Match": etag}), 412)

    imported = await client.post(
        f"{path}/import",
        content=b"service_category,unit,unit_price\nNetworking,GB,0.09\n",
        headers={**as_finops, "Content-Type": "text/csv", "If-Match": patched.headers["etag"]},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["rates"] == [{"serviceCategory": "Networking", "unit": "GB", "unitPrice": "0.09"}]
    unknown_category = {"name": "Bad", "rates": [{"serviceCategory": "Kubernetes", "unit": "h", "unitPrice": "1"}]}
    assert_problem(
        await client.post(f"{API}/pricing-views", json=unknown_category, headers=as_finops),
        400,
        "rates[0].serviceCategory",
    )

    actions = [row["action"] for row in await audit_rows(client, as_admin, "pricing_view", view["id"])]
    assert sorted(actions) == ["pricing_view.create", "pricing_view.import", "pricing_view.patch"]


async def test_every_change_of_a_pricing_view_is_kept_as_a_revision(
    client: Client,
    as_finops: dict[str, str],
    as_user: dict[str, str],
    as_admin: dict[str, str],
    api_urls: dict[DatabaseRole, URL],
) -> None:
    body = {
        "name": "Catalogue 2026",
        "description": "initial",
        "rates": [
            {"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.0412"},
            {"serviceCategory": "Storage", "unit": "GB-months", "unitPrice": "0.021"},
        ],
    }
    created = await client.post(f"{API}/pricing-views", json=body, headers=as_finops)
    assert created.status_code == 201, created.text
    view = created.json()
    author = view["createdBy"]
    assert author.endswith("fiona")
    # Creation is revision 1: its author and time are the view's.
    assert (view["revision"], view["updatedBy"], view["updatedAt"]) == (1, author, view["createdAt"])
    path = f"{API}/pricing-views/{view['id']}"

    async def change(method: str, etag: str, **options: Any) -> Any:
        headers = {**as_finops, "If-Match": etag, **options.pop("headers", {})}
        response = await client.request(method, f"{path}{options.pop('suffix', '')}", headers=headers, **options)
        assert response.status_code == 200, response.text
        return response

    patched = await change(
        "PATCH",
        created.headers["etag"],
        json={"rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.05"}]},
    )
    assert patched.json()["revision"] == 2
    # A PATCH that changes nothing (the same description, a price equal as a number) makes no empty revision:
    # the view, its ETag and its stored prices stay as they were.
    unchanged = await change(
        "PATCH",
        patched.headers["etag"],
        json={
            "description": "initial",
            "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.050"}],
        },
    )
    assert unchanged.json() == patched.json()
    assert unchanged.headers["etag"] == patched.headers["etag"]
    replaced = await change(
        "PUT",
        patched.headers["etag"],
        json={
            "description": "revised",
            "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.06"}],
        },
    )
    assert replaced.json()["revision"] == 3
    imported = await change(
        "POST",
        replaced.headers["etag"],
        suffix="/import",
        content=b"service_category,unit,unit_price\nNetworking,GB,0.09\n",
        headers={"Content-Type": "text/csv"},
    )
    current = imported.json()
    assert (current["revision"], current["description"], current["updatedBy"]) == (4, "revised", author)
    assert current["createdAt"] == view["createdAt"]

    # Every revision keeps its rate card exactly as it was; a user reads them.
    cards = {
        1: ("initial", [("Compute", "vCPU-hours", "0.0412"), ("Storage", "GB-months", "0.021")]),
        2: ("initial", [("Compute", "vCPU-hours", "0.05"), ("Storage", "GB-months", "0.021")]),
        3: ("revised", [("Compute", "vCPU-hours", "0.06")]),
        4: ("revised", [("Networking", "GB", "0.09")]),
    }
    for number, (description, rates) in cards.items():
        response = await client.get(f"{path}/revisions/{number}", headers=as_user)
        assert response.status_code == 200, response.text
        kept = response.json()
        assert (kept["id"], kept["name"], kept["version"], kept["revision"]) == (
            view["id"],
            "Catalogue 2026",
            1,
            number,
        )
        assert (kept["description"], kept["currency"], kept["createdBy"]) == (description, "EUR", author)
        assert [(rate["serviceCategory"], rate["unit"], rate["unitPrice"]) for rate in kept["rates"]] == rates
    assert (await client.get(f"{path}/revisions/4", headers=as_user)).json()["rates"] == current["rates"]

    # The list, oldest first, page by page.
    seen = await all_pages(client, f"{path}/revisions?limit=3", as_user)
    assert [(item["revision"], item["description"], item["rateCount"]) for item in seen] == [
        (1, "initial", 2),
        (2, "initial", 2),
        (3, "revised", 1),
        (4, "revised", 1),
    ]
    assert {item["createdBy"] for item in seen} == {author}
    exported = await client.get(f"{path}/revisions?limit=1", headers={**as_user, "Accept": "text/csv"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["revision"], row["rateCount"]) for row in rows] == [("1", "2"), ("2", "2"), ("3", "1"), ("4", "1")]

    # Unknown revisions and views are 404; a number no revision can have is a 400 naming it.
    missing = assert_problem(await client.get(f"{path}/revisions/5", headers=as_user), 404)
    assert missing["detail"] == "pricing view Catalogue 2026 v1 has no revision 5 (it has 1 to 4)"
    assert_problem(await client.get(f"{API}/pricing-views/{uuid.uuid4()}/revisions", headers=as_user), 404)
    assert_problem(await client.get(f"{API}/pricing-views/{uuid.uuid4()}/revisions/1", headers=as_user), 404)
    for number in ("0", "2147483648"):
        assert_problem(await client.get(f"{path}/revisions/{number}", headers=as_user), 400, "revision")

    # A user reads revisions but changes nothing, and no route changes a kept revision.
    assert_problem(
        await client.put(path, json={"rates": []}, headers={**as_user, "If-Match": imported.headers["etag"]}), 403
    )
    assert (await client.put(f"{path}/revisions/1", json={"rates": []}, headers=as_finops)).status_code == 405
    # ...nor can anything below the API: the database refuses to change or delete a kept revision.
    connection = await asyncpg.connect(asyncpg_dsn(api_urls["finops"]))
    try:
        for statement in (
            "UPDATE pricing_view_revision_rate SET unit_price = 1 WHERE pricing_view_id = $1",
            "DELETE FROM pricing_view_revision_rate WHERE pricing_view_id = $1",
            "UPDATE pricing_view_revision SET description = 'rewritten' WHERE pricing_view_id = $1",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
                await connection.execute(statement, uuid.UUID(view["id"]))
    finally:
        await connection.close()

    # The audit trail names the revision before and after each change; the empty PATCH names the same one twice.
    audited = await audit_rows(client, as_admin, "pricing_view", view["id"])
    assert sorted(
        (row["action"], (row["before"] or {}).get("revision"), row["after"]["revision"]) for row in audited
    ) == sorted(
        [
            ("pricing_view.create", None, 1),
            ("pricing_view.patch", 1, 2),
            ("pricing_view.patch", 2, 2),
            ("pricing_view.replace", 2, 3),
            ("pricing_view.import", 3, 4),
        ],
    )


# ----------------------------------------------------------------------------------------------- allocation rules


async def test_allocation_rules_get_new_immutable_versions(
    client: Client, as_finops: dict[str, str], as_user: dict[str, str], as_admin: dict[str, str]
) -> None:
    rule = {
        "ruleId": "network-split",
        "poolCode": "network",
        "method": "fixed",
        "validFrom": "2026-01",
        "targets": [
            {"applicationCode": "PAY-CHECKOUT", "percentage": "50"},
            {"applicationCode": "CRM-PORTAL", "percentage": "30"},
            {"applicationCode": "DWH-ETL", "percentage": "20"},
        ],
    }
    first = await client.post(f"{API}/allocation-rules", json=rule, headers=as_finops)
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"{API}/allocation-rules/network-split/versions/1"
    second = await client.post(
        f"{API}/allocation-rules",
        json={
            "ruleId": "network-split",
            "poolCode": "network",
            "method": "usage",
            "driver": "requests",
            "validFrom": "2026-06",
        },
        headers=as_finops,
    )
    assert second.json()["version"] == 2

    latest = (await client.get(f"{API}/allocation-rules/network-split", headers=as_user)).json()
    assert (latest["version"], latest["method"], latest["driver"]) == (2, "usage", "requests")
    original = (await client.get(f"{API}/allocation-rules/network-split/versions/1", headers=as_user)).json()
    assert [target["percentage"] for target in original["targets"]] == ["30.0000", "20.0000", "50.0000"]
    every = (await client.get(f"{API}/allocation-rules?allVersions=true&pool=network", headers=as_user)).json()
    assert [(item["ruleId"], item["version"]) for item in every["items"]] == [
        ("network-split", 1),
        ("network-split", 2),
    ]
    latest_only = (await client.get(f"{API}/allocation-rules", headers=as_user)).json()["items"]
    assert {(item["ruleId"], item["version"]) for item in latest_only} >= {("default", 1), ("network-split", 2)}

    # Versions are immutable: there is no route to change one.
    changed = await client.put(f"{API}/allocation-rules/network-split", json=rule, headers=as_finops)
    assert changed.status_code == 405
    not_100 = {**rule, "ruleId": "bad-fixed", "targets": rule["targets"][:2]}
    assert_problem(await client.post(f"{API}/allocation-rules", json=not_100, headers=as_finops), 400, "targets")
    no_driver = {"ruleId": "bad-usage", "method": "usage", "validFrom": "2026-01"}
    assert_problem(await client.post(f"{API}/allocation-rules", json=no_driver, headers=as_finops), 400, "driver")
    assert_problem(await client.get(f"{API}/allocation-rules/nope/versions/3", headers=as_user), 404)
    # Beyond a PostgreSQL integer, or below 1: no version can have that number (was a 500, found by schemathesis).
    for version in ("19526516102115424", "0"):
        url = f"{API}/allocation-rules/network-split/versions/{version}"
        assert_problem(await client.get(url, headers=as_user), 400, "version")

    audited = await audit_rows(client, as_admin, "allocation_rule", "network-split@2")
    assert [row["action"] for row in audited] == ["allocation_rule.create_version"]
    assert audited[0]["after"]["driver"] == "requests"


# ----------------------------------------------------------------------------------------------- inputs


async def test_bad_query_parameters_are_problem_json(client: Client, as_user: dict[str, str]) -> None:
    assert_problem(await client.get(f"{API}/costs/summary?period=2026-13", headers=as_user), 400, "period")
    assert_problem(await client.get(f"{API}/costs/summary", headers=as_user), 400)
    assert_problem(await client.get(f"{API}/costs/drilldown?level=team", headers=as_user), 400, "level")
    assert_problem(
        await client.get(f"{API}/costs/drilldown?level=family&from=2026-05&to=2026-02", headers=as_user), 400, "from"
    )
    assert_problem(await client.get(f"{API}/costs/drilldown?level=domain&parent=X", headers=as_user), 400, "parent")
    assert_problem(await client.get(f"{API}/costs/drilldown?level=domain&basis=list", headers=as_user), 400, "basis")
    assert_problem(await client.get(f"{API}/budgets/comparison?right=budget:{uuid.uuid4()}", headers=as_user), 404)
    assert_problem(await client.get(f"{API}/budgets/comparison?right=forecast", headers=as_user), 400, "right")
    assert_problem(
        await client.get(f"{API}/cost-insights/entities/X/daily?intervals=P30D", headers=as_user), 400, "intervals"
    )
    assert_problem(await client.get(f"{API}/applications/NOPE/costs", headers=as_user), 404)
    assert_problem(await client.get(f"{API}/costs/summary?period=0000-01", headers=as_user), 400, "period")
    # Named as the client wrote it (allVersions), not as the handler's Python parameter (all_versions).
    body = assert_problem(
        await client.get(f"{API}/allocation-rules?allVersions=maybe", headers=as_user), 400, "allVersions"
    )
    assert "all_versions" not in body["detail"]
    assert body["errors"][0]["source"] == "query"
    assert_problem(await client.get(f"{API}/costs/drilldown?level=domain&from=26-01", headers=as_user), 400, "from")
    # A from alone is compared with the default to, and the message says so (no batch has run here).
    after = assert_problem(
        await client.get(f"{API}/costs/drilldown?level=domain&from=2999-01", headers=as_user), 400, "from"
    )
    assert re.fullmatch(
        r"from: 2999-01 is after the default to, \d{4}-\d\d \(the current month: nothing is built yet\)",
        after["detail"],
    ), after["detail"]
    for intervals in ("R1/P12M/0001-01-01", "R0/P30D/2026-10-01", "R2/P0D/2026-10-01", "R2/P30D/2026-02-30"):
        response = await client.get(
            f"{API}/cost-insights/entities/X/daily", params={"intervals": intervals}, headers=as_user
        )
        assert_problem(response, 400, "intervals")
    # A parameter given twice is refused, not answered for its last value; after the token and role checks.
    repeated = f"{API}/costs/drilldown?level=domain&environment=prod&environment=dev&basis=billed&basis=billed"
    body = assert_problem(await client.get(repeated, headers=as_user), 400, "environment")
    assert [error["field"] for error in body["errors"]] == ["basis", "environment"]
    assert_problem(await client.get(repeated), 401)


async def test_a_nul_character_anywhere_is_a_400_and_nothing_is_written(
    client: Client, as_finops: dict[str, str]
) -> None:
    # PostgreSQL text cannot hold U+0000: the database refuses it, and that refusal is the client's problem.
    for path in (
        "/applications/%00/costs",
        "/costs/drilldown?level=application&parent=%00",
        "/budgets?name=%00",
        "/allocation-rules/a%00",
    ):
        body = assert_problem(await client.get(f"{API}{path}", headers=as_finops), 400)
        assert body["detail"].startswith("text values may not contain the NUL character (U+0000)"), path
    refused = await client.post(f"{API}/budgets", json=budget_body("nul\u0000name"), headers=as_finops)
    assert_problem(refused, 400)
    listed = await client.get(f"{API}/budgets", params={"limit": 500}, headers=as_finops)
    assert not [budget for budget in listed.json()["items"] if budget["name"].startswith("nul")]


# ----------------------------------------------------------------------------------------------- OpenAPI


def _component(document: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    assert reference.get("$ref", "").startswith(prefix), reference
    schema: dict[str, Any] = document["components"]["schemas"][reference["$ref"].removeprefix(prefix)]
    return schema


async def test_openapi_describes_what_the_list_routes_and_imports_really_take_and_return(client: Client) -> None:
    """A Backstage plugin author generates a client from this document: lists must not be ``{}``."""
    response = await client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    # Route -> (the 200 component, the component of its items).
    lists = {
        "/costs/drilldown": ("Drilldown", "DrilldownRow"),
        "/budgets/comparison": ("BudgetComparison", "ComparisonRow"),
        "/budgets": ("BudgetPage", "Budget"),
        "/budgets/{budget_id}/lines": ("BudgetLinePage", "BudgetLine"),
        "/budgets/{budget_id}/revisions": ("BudgetRevisionPage", "BudgetRevision"),
        "/budgets/{budget_id}/revisions/{revision}/lines": ("BudgetLinePage", "BudgetLine"),
        "/pricing-views": ("PricingViewPage", "PricingView"),
        "/allocation-rules": ("AllocationRulePage", "AllocationRule"),
        "/mapping-aliases": ("MappingAliasPage", "MappingAlias"),
        "/batch/runs": ("BatchRunPage", "BatchRun"),
    }
    for path, (component, item) in lists.items():
        ok = paths[f"{API}{path}"]["get"]["responses"]["200"]
        assert set(ok["content"]) == {"application/json", "text/csv"}, path
        assert "406" not in paths[f"{API}{path}"]["get"]["responses"], path
        json_schema = ok["content"]["application/json"]["schema"]
        assert json_schema == {"$ref": f"#/components/schemas/{component}"}, path
        body = _component(document, json_schema)
        assert {"items", "limit", "next"} <= set(body["properties"]), path
        assert body["properties"]["items"]["items"] == {"$ref": f"#/components/schemas/{item}"}, path
        assert _component(document, body["properties"]["items"]["items"])["properties"], path
    for path in (
        "/costs/summary",
        "/applications/{code}/costs",
        "/budgets/{budget_id}",
        "/budgets/{budget_id}/revisions/{revision}",
    ):
        operation = paths[f"{API}{path}"]["get"]
        assert set(operation["responses"]["200"]["content"]) == {"application/json"}, path
        assert _component(document, operation["responses"]["200"]["content"]["application/json"]["schema"])
        assert "406" in operation["responses"], path

    for path, columns in (("/budgets/{budget_id}/import", "scope_level"), ("/pricing-views/{view_id}/import", "unit")):
        operation = paths[f"{API}{path}"]["post"]
        content = operation["requestBody"]["content"]
        assert set(content) == {"text/csv", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
        assert all(media["schema"]["format"] == "binary" for media in content.values())
        assert columns in content["text/csv"]["schema"]["description"]
        assert {"400", "413", "415"} <= set(operation["responses"]), path
    # A JSON body sent as another media type is a 415, and documented as one.
    assert "415" in paths[f"{API}/budgets"]["post"]["responses"]
    deletion = paths[f"{API}/mapping-aliases/{{alias_id}}"]["delete"]
    assert "204" in deletion["responses"]
    assert {"403", "404", "412"} <= set(deletion["responses"])
    # An unknown budget version or pricing view in the query is a 404 too; so is, for the summary and the
    # drill-down, a month not built or an unknown parent or environment.
    for path in ("/budgets/comparison", "/costs/summary", "/costs/drilldown", "/applications/{code}/costs"):
        responses = paths[f"{API}{path}"]["get"]["responses"]
        assert "404" in responses, path
        assert responses["404"]["content"] == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }, path
    # The drill-down and the application page say which months of their window are built.
    for component in ("Drilldown", "ApplicationCosts"):
        assert document["components"]["schemas"][component]["properties"]["builtMonths"] == {
            "type": "array",
            "items": {"type": "string"},
        }, component

    # The plugin asks for quarters (P3M): the documented pattern must not refuse what the API accepts.
    intervals = next(
        parameter
        for parameter in paths[f"{API}/cost-insights/entities/daily"]["get"]["parameters"]
        if parameter["name"] == "intervals"
    )
    pattern = re.compile(intervals["schema"]["pattern"])
    assert all(pattern.match(value) for value in ("R2/P30D/2026-10-01", "R2/P3M/2026-10-01", "R1/P7D/2026-11-01"))
    assert "404" in paths[f"{API}/cost-insights/groups/daily"]["get"]["responses"]


# ----------------------------------------------------------------------------------------------- write-side checks

CSV = {"Content-Type": "text/csv"}
XLSX = {"Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
LINES_HEADER = b"scope_level,scope_code,period,amount\n"


async def new_budget(client: Client, headers: dict[str, str], name: str) -> tuple[str, dict[str, Any]]:
    """A budget with budget_body's lines: its path and its current state (ETag and lines)."""
    created = await client.post(f"{API}/budgets", json=budget_body(name), headers=headers)
    assert created.status_code == 201, created.text
    path = f"{API}/budgets/{created.json()['id']}"
    return path, await budget_state(client, headers, path)


async def budget_state(client: Client, headers: dict[str, str], path: str) -> dict[str, Any]:
    """What a rejected write must leave as it was: the ETag and every line."""
    response = await client.get(path, headers=headers)
    lines = (await client.get(f"{path}/lines?limit=500", headers=headers)).json()["items"]
    return {"etag": response.headers["etag"], "lines": lines}


async def budget_names(client: Client, headers: dict[str, str]) -> list[str]:
    return [item["name"] for item in (await client.get(f"{API}/budgets?limit=500", headers=headers)).json()["items"]]


def workbook_bytes(*rows: list[Any]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


async def test_an_unreadable_workbook_is_a_400_not_a_500(client: Client, as_finops: dict[str, str]) -> None:
    path, before = await new_budget(client, as_finops, "Unreadable workbook")
    view = await client.post(f"{API}/pricing-views", json={"name": "Unreadable workbook view"}, headers=as_finops)
    view_path = f"{API}/pricing-views/{view.json()['id']}"
    view_before = (await client.get(view_path, headers=as_finops)).headers["etag"]
    # A zip that is no workbook, a truncated one, and a CSV file sent with the workbook's content type.
    valid = workbook_bytes(["scope_level", "scope_code", "period", "amount"], ["product", "PAY-ONLINE", "2026-01", 1])
    for body in (b"PK\x03\x04garbage", valid[: len(valid) // 2], LINES_HEADER + b"product,PAY-ONLINE,2026-01,1\n"):
        for target in (path, view_path):
            response = await client.post(f"{target}/import", content=body, headers={**as_finops, **XLSX})
            problem = assert_problem(response, 400, "body")
            assert "not a readable .xlsx workbook" in problem["detail"]
    assert await budget_state(client, as_finops, path) == before
    assert (await client.get(view_path, headers=as_finops)).headers["etag"] == view_before


async def test_an_amount_whose_decimal_mark_the_file_does_not_settle_is_refused(
    client: Client, as_finops: dict[str, str]
) -> None:
    path, before = await new_budget(client, as_finops, "Ambiguous amounts")
    for body in (
        LINES_HEADER + b'product,PAY-ONLINE,2026-01,12\nproduct,PAY-ONLINE,2026-02,"1,234"\n',
        b"scope_level;scope_code;period;amount\nproduct;PAY-ONLINE;2026-01;12\nproduct;PAY-ONLINE;2026-02;1,234\n",
        LINES_HEADER + b"product,PAY-ONLINE,2026-01,12\nproduct,PAY-ONLINE,2026-02,1.234\n",
    ):
        response = await client.post(f"{path}/import", content=body, headers={**as_finops, **CSV})
        problem = assert_problem(response, 400, "row 3.amount")
        assert "ambiguous: 1234 or 1.234?" in problem["detail"]
        assert "without thousands separators (1234)" in problem["detail"]
    assert await budget_state(client, as_finops, path) == before

    # Unambiguous forms keep working, in either convention; an established mark settles the 3-digit shape.
    accepted = {
        b"scope_level;scope_code;period;amount\nproduct;PAY-ONLINE;2026-01;1234,56\nproduct;PAY-ONLINE;2026-02;"
        b"1 234,56\nproduct;PAY-ONLINE;2026-03;1.234,50\nproduct;PAY-ONLINE;2026-04;2.000\n": [
            "1234.56",
            "1234.56",
            "1234.50",
            "2000.00",
        ],
        LINES_HEADER + b'product,PAY-ONLINE,2026-01,"1,234.50"\nproduct,PAY-ONLINE,2026-02,1234.5\n'
        b'product,PAY-ONLINE,2026-03,"2,000"\n': ["1234.50", "1234.50", "2000.00"],
    }
    for body, amounts in accepted.items():
        response = await client.post(f"{path}/import", content=body, headers={**as_finops, **CSV})
        assert response.status_code == 200, response.text
        lines = (await client.get(f"{path}/lines", headers=as_finops)).json()["items"]
        assert [line["amount"] for line in lines] == amounts


async def test_budget_lines_with_scope_codes_unknown_at_their_level_are_refused(
    client: Client, as_finops: dict[str, str]
) -> None:
    path, before = await new_budget(client, as_finops, "Unknown codes")
    lines = [
        {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-01", "amount": "1"},
        {"scopeLevel": "product", "scopeCode": "NO-SUCH-PRODUCT", "period": "2026-01", "amount": "1"},
        # Known, but as a product: a family of that code does not exist.
        {"scopeLevel": "family", "scopeCode": "PAY-ONLINE", "period": "2026-01", "amount": "1"},
        {"scopeLevel": "product", "scopeCode": "NO-SUCH-PRODUCT", "period": "2026-02", "amount": "1"},
    ]

    def check(response: Any, fields: list[str]) -> None:
        problem = assert_problem(response, 400)
        assert "unknown scope codes" in problem["detail"]
        first, second = fields[:2]
        assert f"product 'NO-SUCH-PRODUCT' ({first} and 1 more), family 'PAY-ONLINE' ({second})" in problem["detail"]
        assert [error["field"] for error in problem["errors"]] == fields

    json_fields = ["lines[1].scopeCode", "lines[2].scopeCode", "lines[3].scopeCode"]
    check(
        await client.post(f"{API}/budgets", json={"name": "Typo budget", "lines": lines}, headers=as_finops),
        json_fields,
    )
    assert "Typo budget" not in await budget_names(client, as_finops)
    if_match = {**as_finops, "If-Match": before["etag"]}
    check(await client.put(path, json={"name": "Unknown codes", "lines": lines}, headers=if_match), json_fields)
    check(await client.patch(path, json={"lines": lines}, headers=if_match), json_fields)
    body = LINES_HEADER + b"".join(
        f"{line['scopeLevel']},{line['scopeCode']},{line['period']},{line['amount']}\n".encode() for line in lines
    )
    check(
        await client.post(f"{path}/import", content=body, headers={**if_match, **CSV}),
        ["row 3.scope_code", "row 4.scope_code", "row 5.scope_code"],
    )
    workbook = workbook_bytes(
        ["scope_level", "scope_code", "period", "amount"],
        *([line["scopeLevel"], line["scopeCode"], line["period"], 1] for line in lines),
    )
    check(
        await client.post(f"{path}/import", content=workbook, headers={**if_match, **XLSX}),
        ["row 3.scope_code", "row 4.scope_code", "row 5.scope_code"],
    )
    assert await budget_state(client, as_finops, path) == before


async def test_codes_cannot_be_checked_before_finops_batch_has_loaded_them(
    fresh_database_urls: Callable[[], dict[DatabaseRole, URL]], identity_server: Any, as_finops: dict[str, str]
) -> None:
    urls = await asyncio.to_thread(fresh_database_urls)
    async for empty, _ in finops_client(finops_settings(urls, identity_server.entra)):
        response = await empty.post(f"{API}/budgets", json=budget_body("Too early"), headers=as_finops)
        problem = assert_problem(response, 400)
        assert (
            "product 'PAY-ONLINE' (lines[0].scopeCode and 1 more), domain 'COMMERCE' (lines[2].scopeCode)"
            in (problem["detail"])
        )
        assert (
            "the hierarchy is still empty: finops-batch loads it from the CMDB and has not run yet" in problem["detail"]
        )
        rule = {"ruleId": "too-early", "method": "even", "validFrom": "2026-01", "poolCode": "network"}
        problem = assert_problem(
            await empty.post(f"{API}/allocation-rules", json=rule, headers=as_finops), 400, "poolCode"
        )
        assert "no pool is known yet" in problem["detail"]
        assert (await empty.get(f"{API}/budgets", headers=as_finops)).json()["items"] == []
        assert_problem(await empty.get(f"{API}/allocation-rules/too-early", headers=as_finops), 404)


async def test_imports_refuse_files_without_data_missing_columns_and_ragged_rows(
    client: Client, as_finops: dict[str, str]
) -> None:
    path, before = await new_budget(client, as_finops, "Malformed files")
    cases = {
        # A header alone would replace every line with nothing.
        LINES_HEADER: ("body", "the file has a header row but no data rows"),
        LINES_HEADER + b"\n \n": ("body", "the file has a header row but no data rows"),
        b"scope_level,scope_code,amount\nproduct,PAY-ONLINE,1\n": ("header", "missing column period"),
        LINES_HEADER + b"product,PAY-ONLINE,2026-01,1\nproduct,PAY-ONLINE,2026-02,1,oops\n": (
            "row 3",
            "has a value in column 5, which has no header",
        ),
        b"scope_level,scope_code,period,amount,Amount\nproduct,PAY-ONLINE,2026-01,1,2\n": (
            "header",
            "column amount appears more than once",
        ),
    }
    for body, (field, message) in cases.items():
        response = await client.post(f"{path}/import", content=body, headers={**as_finops, **CSV})
        problem = assert_problem(response, 400, field)
        assert problem["detail"] == f"{field}: {message}" or message in problem["detail"], problem
    header_only = workbook_bytes(["scope_level", "scope_code", "period", "amount"])
    response = await client.post(f"{path}/import", content=header_only, headers={**as_finops, **XLSX})
    assert_problem(response, 400, "body")
    assert await budget_state(client, as_finops, path) == before

    view = await client.post(
        f"{API}/pricing-views",
        json={"name": "Malformed rates", "rates": [{"serviceCategory": "Compute", "unit": "h", "unitPrice": "1"}]},
        headers=as_finops,
    )
    view_path = f"{API}/pricing-views/{view.json()['id']}"
    for body, field in ((b"service_category,unit,unit_price\n", "body"), (b"unit,unit_price\nh,1\n", "header")):
        response = await client.post(f"{view_path}/import", content=body, headers={**as_finops, **CSV})
        assert_problem(response, 400, field)
    assert (await client.get(view_path, headers=as_finops)).json()["rates"] == view.json()["rates"]


async def test_import_errors_name_the_row_the_file_shows(client: Client, as_finops: dict[str, str]) -> None:
    path, before = await new_budget(client, as_finops, "Row numbers")
    # A blank line 3 still counts: the bad period is on line 4 of the file.
    body = LINES_HEADER + b"product,PAY-ONLINE,2026-01,1\n\nproduct,PAY-ONLINE,2026-1,1\n"
    assert_problem(await client.post(f"{path}/import", content=body, headers={**as_finops, **CSV}), 400, "row 4.period")
    duplicate = (
        LINES_HEADER + b"product,PAY-ONLINE,2026-01,1\ndomain,COMMERCE,2026-01,1\nproduct,PAY-ONLINE,2026-01,2\n"
    )
    problem = assert_problem(
        await client.post(f"{path}/import", content=duplicate, headers={**as_finops, **CSV}), 400, "row 4"
    )
    assert "first at row 2" in problem["detail"]
    missing = LINES_HEADER + b"product,,2026-01,1\n"
    response = await client.post(f"{path}/import", content=missing, headers={**as_finops, **CSV})
    assert_problem(response, 400, "row 2.scope_code")
    assert await budget_state(client, as_finops, path) == before

    view = await client.post(f"{API}/pricing-views", json={"name": "Rate rows"}, headers=as_finops)
    view_path = f"{API}/pricing-views/{view.json()['id']}"
    rates = b"service_category,unit,unit_price\nCompute,h,1\nKubernetes,h,2\n"
    response = await client.post(f"{view_path}/import", content=rates, headers={**as_finops, **CSV})
    assert_problem(response, 400, "row 3.service_category")
    rates = b"service_category,unit,unit_price\nCompute,h,1\nStorage,GB,-1\n"
    response = await client.post(f"{view_path}/import", content=rates, headers={**as_finops, **CSV})
    assert_problem(response, 400, "row 3.unit_price")
    assert (await client.get(view_path, headers=as_finops)).json()["rates"] == []


async def test_unit_prices_are_decimal_strings_never_json_numbers(client: Client, as_finops: dict[str, str]) -> None:
    for price in (0.0412, 1):
        body = {
            "name": "Float card",
            "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": price}],
        }
        problem = assert_problem(await client.post(f"{API}/pricing-views", json=body, headers=as_finops), 400)
        assert "unitPrice" in problem["detail"]
        assert "Expected `str`" in problem["detail"]
    for text in ("0,0412", "1e", " "):
        body = {"name": "Text card", "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": text}]}
        response = await client.post(f"{API}/pricing-views", json=body, headers=as_finops)
        assert_problem(response, 400, "rates[0].unitPrice")
    listing = await client.get(f"{API}/pricing-views?limit=500", headers=as_finops)
    assert not {"Float card", "Text card"} & {view["name"] for view in listing.json()["items"]}
    # Sub-cent prices are normal for unit prices (unlike budget amounts), kept exactly as sent.
    exact = {
        "name": "Exact card",
        "rates": [{"serviceCategory": "Compute", "unit": "vCPU-hours", "unitPrice": "0.00041"}],
    }
    created = await client.post(f"{API}/pricing-views", json=exact, headers=as_finops)
    assert created.status_code == 201, created.text
    assert created.json()["rates"][0]["unitPrice"] == "0.00041"


async def test_budget_amounts_are_decimal_strings_in_whole_cents(client: Client, as_finops: dict[str, str]) -> None:
    path, before = await new_budget(client, as_finops, "Cents only")
    if_match = {**as_finops, "If-Match": before["etag"]}
    line = {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-03"}
    sub_cent = {"lines": [{**line, "amount": "1.123456789"}]}
    problem = assert_problem(await client.patch(path, json=sub_cent, headers=if_match), 400, "lines[0].amount")
    assert "at most 2 decimals" in problem["detail"]
    for number in (0.1, 1000):
        problem = assert_problem(
            await client.patch(path, json={"lines": [{**line, "amount": number}]}, headers=if_match), 400
        )
        assert "amount" in problem["detail"]
        assert "Expected `str`" in problem["detail"]
    for text in ("1,5", "1_000", " ", "0x10"):
        response = await client.patch(path, json={"lines": [{**line, "amount": text}]}, headers=if_match)
        assert_problem(response, 400, "lines[0].amount")
    response = await client.post(
        f"{API}/budgets", json={"name": "Float budget", "lines": [{**line, "amount": 0.1}]}, headers=as_finops
    )
    assert_problem(response, 400)
    assert "Float budget" not in await budget_names(client, as_finops)
    # A file: a text amount with three decimals, and a workbook number with three.
    body = b"scope_level;scope_code;period;amount\nproduct;PAY-ONLINE;2026-01;0,125\n"
    problem = assert_problem(
        await client.post(f"{path}/import", content=body, headers={**as_finops, **CSV}), 400, "row 2.amount"
    )
    workbook = workbook_bytes(
        ["scope_level", "scope_code", "period", "amount"], ["product", "PAY-ONLINE", "2026-01", 1.125]
    )
    problem = assert_problem(
        await client.post(f"{path}/import", content=workbook, headers={**as_finops, **XLSX}), 400, "row 2.amount"
    )
    assert "got 1.125" in problem["detail"]
    assert await budget_state(client, as_finops, path) == before
    # Trailing zeros within the cent are whole cents.
    response = await client.patch(path, json={"lines": [{**line, "amount": "12.500"}]}, headers=if_match)
    assert response.status_code == 200, response.text


async def test_an_import_of_another_content_type_is_415(client: Client, as_finops: dict[str, str]) -> None:
    path, before = await new_budget(client, as_finops, "Content types")
    view = await client.post(f"{API}/pricing-views", json={"name": "Content types view"}, headers=as_finops)
    view_path = f"{API}/pricing-views/{view.json()['id']}"
    body = LINES_HEADER + b"product,PAY-ONLINE,2026-01,1\n"
    for content_type in ("application/json", "application/pdf", "multipart/form-data; boundary=x", "text/plain", None):
        headers = {**as_finops} if content_type is None else {**as_finops, "Content-Type": content_type}
        for target in (path, view_path):
            response = await client.post(f"{target}/import", content=body, headers=headers)
            problem = assert_problem(response, 415, "content-type")
            assert "upload text/csv or application/vnd.openxmlformats" in problem["detail"]
            assert response.headers["accept-post"] == (
                "text/csv, application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            )
    assert await budget_state(client, as_finops, path) == before
    assert (await client.get(view_path, headers=as_finops)).json()["rates"] == []


async def test_allocation_rules_name_known_pools_and_applications_and_one_rule_per_pool(
    client: Client, as_finops: dict[str, str], as_user: dict[str, str], api_urls: dict[DatabaseRole, URL]
) -> None:
    base = {"method": "even", "validFrom": "2026-01"}
    unknown_pool = {**base, "ruleId": "r-unkpool", "poolCode": "NO-SUCH-POOL"}
    problem = assert_problem(
        await client.post(f"{API}/allocation-rules", json=unknown_pool, headers=as_finops), 400, "poolCode"
    )
    assert problem["detail"] == "poolCode: unknown pool 'NO-SUCH-POOL'"
    unknown_target = {
        **base,
        "ruleId": "r-unkapp",
        "poolCode": "security",
        "targets": [{"applicationCode": "PAY-CHECKOUT"}, {"applicationCode": "NO-SUCH-APP"}],
    }
    problem = assert_problem(
        await client.post(f"{API}/allocation-rules", json=unknown_target, headers=as_finops),
        400,
        "targets[1].applicationCode",
    )
    assert problem["detail"] == (
        "unknown target applications (checked against the CMDB): application 'NO-SUCH-APP' (targets[1].applicationCode)"
    )

    first = await client.post(
        f"{API}/allocation-rules", json={**base, "ruleId": "sec-split", "poolCode": "security"}, headers=as_finops
    )
    assert first.status_code == 201, first.text
    # Another rule for the same pool, whatever its start: which one splits the pool would not be readable.
    for valid_from in ("2026-01", "2027-01", "2020-01"):
        rival = {
            **base,
            "ruleId": "sec-other",
            "poolCode": "security",
            "validFrom": valid_from,
            "method": "direct_cost",
        }
        response = await client.post(f"{API}/allocation-rules", json=rival, headers=as_finops)
        problem = assert_problem(response, 409, "poolCode")
        assert "rule 'sec-split' (version 1, from 2026-01) already splits pool 'security'" in problem["detail"]
        assert problem["ruleId"] == "sec-split"
    # A second fallback rule (no pool) competes with the seeded "default" in the same way.
    fallback = assert_problem(
        await client.post(f"{API}/allocation-rules", json={**base, "ruleId": "fallback-2"}, headers=as_finops), 409
    )
    assert "rule 'default'" in fallback["detail"]
    # A new version of the rule that owns the pool is how its method changes.
    second = await client.post(
        f"{API}/allocation-rules",
        json={**base, "ruleId": "sec-split", "poolCode": "security", "method": "direct_cost", "validFrom": "2026-07"},
        headers=as_finops,
    )
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2
    for rule_id in ("r-unkpool", "r-unkapp", "sec-other", "fallback-2"):
        assert_problem(await client.get(f"{API}/allocation-rules/{rule_id}", headers=as_user), 404)

    # Rivals stored before this check existed do not lock each other out: each may still get new versions.
    connection = await asyncpg.connect(asyncpg_dsn(api_urls["finops"]))
    try:
        await connection.execute(
            "INSERT INTO allocation_rule (rule_id, version, pool_code, method, valid_from, created_by)"
            " VALUES ('sec-legacy', 1, 'security', 'even', DATE '2026-01-01', 'legacy')"
        )
    finally:
        await connection.close()
    for rule_id in ("sec-split", "sec-legacy"):
        response = await client.post(
            f"{API}/allocation-rules",
            json={**base, "ruleId": rule_id, "poolCode": "security", "validFrom": "2026-09"},
            headers=as_finops,
        )
        assert response.status_code == 201, response.text


async def test_names_are_unique_whatever_their_case_and_spaces(client: Client, as_finops: dict[str, str]) -> None:
    first = await client.post(f"{API}/budgets", json=budget_body("Review Budget A"), headers=as_finops)
    assert first.status_code == 201, first.text
    problem = assert_problem(
        await client.post(f"{API}/budgets", json=budget_body("  review budget a "), headers=as_finops), 409, "name"
    )
    assert "'Review Budget A' already exists" in problem["detail"]
    names = await budget_names(client, as_finops)
    assert [name for name in names if name.lower() == "review budget a"] == ["Review Budget A"]
    other_path, before = await new_budget(client, as_finops, "Review Budget B")
    rename = await client.patch(
        other_path, json={"name": "REVIEW BUDGET A"}, headers={**as_finops, "If-Match": before["etag"]}
    )
    assert_problem(rename, 409, "name")
    assert await budget_state(client, as_finops, other_path) == before
    # Its own name in another case is no conflict.
    recase = await client.patch(
        other_path, json={"name": "review budget b"}, headers={**as_finops, "If-Match": before["etag"]}
    )
    assert recase.status_code == 200, recase.text

    view = await client.post(f"{API}/pricing-views", json={"name": "Catalogue Review"}, headers=as_finops)
    assert view.status_code == 201
    response = await client.post(f"{API}/pricing-views", json={"name": " catalogue review"}, headers=as_finops)
    problem = assert_problem(response, 409, "name")
    assert "use exactly that name" in problem["detail"]
    views = (await client.get(f"{API}/pricing-views?limit=500", headers=as_finops)).json()["items"]
    assert [item["name"] for item in views if item["name"].lower() == "catalogue review"] == ["Catalogue Review"]
    again = await client.post(f"{API}/pricing-views", json={"name": "Catalogue Review "}, headers=as_finops)
    assert again.json()["version"] == 2


# ----------------------------------------------------------------------------------------------- decimals on the wire

# A number in exponent notation as a whole JSON string or CSV cell (not the "3e-9" inside a UUID).
EXPONENT = re.compile(r'(?:^|[",:\[{])-?[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+(?:$|[",\]}])', re.MULTILINE)


async def test_numbers_in_exponent_notation_are_refused_naming_the_field(
    client: Client, as_finops: dict[str, str]
) -> None:
    path, before = await new_budget(client, as_finops, "No exponents")
    if_match = {**as_finops, "If-Match": before["etag"]}
    line = {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-03"}
    for text in ("1E+3", "0E-7", "1e3", "5E-7", "1.5E2"):
        response = await client.patch(path, json={"lines": [{**line, "amount": text}]}, headers=if_match)
        problem = assert_problem(response, 400, "lines[0].amount")
        assert "exponent notation" in problem["detail"]
        rate = {"serviceCategory": "Compute", "unit": "requests", "unitPrice": text}
        response = await client.post(
            f"{API}/pricing-views", json={"name": "Exp card", "rates": [rate]}, headers=as_finops
        )
        assert "exponent notation" in assert_problem(response, 400, "rates[0].unitPrice")["detail"]
        rule = {
            "ruleId": "exp-split",
            "method": "fixed",
            "validFrom": "2026-01",
            "poolCode": "network",
            "targets": [{"applicationCode": "PAY-CHECKOUT", "percentage": text}],
        }
        response = await client.post(f"{API}/allocation-rules", json=rule, headers=as_finops)
        assert "exponent notation" in assert_problem(response, 400, "targets[0].percentage")["detail"]
    assert await budget_state(client, as_finops, path) == before


async def test_budget_amounts_are_stored_and_read_back_at_two_decimals(
    client: Client, as_finops: dict[str, str]
) -> None:
    line = {"scopeLevel": "product", "scopeCode": "PAY-ONLINE", "period": "2026-04"}
    body = {
        "name": "Two decimals",
        "lines": [{**line, "amount": "100.00000"}, {**line, "period": "2026-05", "amount": "7"}],
    }
    created = await client.post(f"{API}/budgets", json=body, headers=as_finops)
    assert created.status_code == 201, created.text
    assert created.json()["totals"] == {"EUR": "107.00"}
    path = f"{API}/budgets/{created.json()['id']}"
    lines = (await client.get(f"{path}/lines", headers=as_finops)).json()["items"]
    assert [item["amount"] for item in lines] == ["100.00", "7.00"]
    exported = await client.get(f"{path}/lines", headers={**as_finops, "Accept": "text/csv"})
    assert [row["amount"] for row in csv.DictReader(io.StringIO(exported.text))] == ["100.00", "7.00"]
    # A workbook number is exact, however Excel stores it: 2.5 is 2.50.
    workbook = workbook_bytes(
        ["scope_level", "scope_code", "period", "amount"], ["product", "PAY-ONLINE", "2026-06", 2.5]
    )
    imported = await client.post(f"{path}/import", content=workbook, headers={**as_finops, **XLSX})
    assert imported.status_code == 200, imported.text
    assert imported.json()["totals"] == {"EUR": "2.50"}


async def test_rule_percentages_are_decimal_strings_never_json_numbers(
    client: Client, as_finops: dict[str, str]
) -> None:
    rule = {"ruleId": "number-split", "method": "fixed", "validFrom": "2026-01", "poolCode": "network"}
    for number in (50, 33.3333):
        targets = [{"applicationCode": "PAY-CHECKOUT", "percentage": number}]
        problem = assert_problem(
            await client.post(f"{API}/allocation-rules", json={**rule, "targets": targets}, headers=as_finops), 400
        )
        assert "percentage" in problem["detail"]
        assert "Expected `str | null`" in problem["detail"]
    # Sent as strings, they are read as exact decimals (here refused for their total, which names them).
    targets = [
        {"applicationCode": "PAY-CHECKOUT", "percentage": "33.3333"},
        {"applicationCode": "CRM-PORTAL", "percentage": "33.3333"},
    ]
    problem = assert_problem(
        await client.post(f"{API}/allocation-rules", json={**rule, "targets": targets}, headers=as_finops), 400
    )
    assert problem["detail"] == "targets: fixed percentages must total exactly 100, not 66.6666"
    for text in ("50,5", "", "half"):
        targets = [{"applicationCode": "PAY-CHECKOUT", "percentage": text}]
        response = await client.post(f"{API}/allocation-rules", json={**rule, "targets": targets}, headers=as_finops)
        assert_problem(response, 400, "targets[0].percentage")
    document = (await client.get(f"{API}/openapi.json")).json()
    schemas = document["components"]["schemas"]
    create = schemas["AllocationRuleCreate"]["properties"]["targets"]["items"]
    percentage = json.dumps(_component(document, create)["properties"]["percentage"])
    assert '"string"' in percentage
    assert "number" not in percentage


async def test_tiny_unit_prices_are_served_in_plain_notation_in_json_csv_and_the_audit_log(
    client: Client, as_finops: dict[str, str], as_user: dict[str, str], as_admin: dict[str, str]
) -> None:
    # A per-request price, a zero written at 11 decimals, a sub-micro price: str() of each is "1E-10", "0E-11",
    # "1.2E-7", which is what msgspec alone would send.
    prices = {"requests": "0.0000000001", "calls": "0.00000000000", "tokens": "0.00000012"}
    rates = [{"serviceCategory": "Compute", "unit": unit, "unitPrice": price} for unit, price in prices.items()]
    created = await client.post(f"{API}/pricing-views", json={"name": "Per request", "rates": rates}, headers=as_finops)
    assert created.status_code == 201, created.text
    path = f"{API}/pricing-views/{created.json()['id']}"

    def served(view: dict[str, Any]) -> dict[str, str]:
        return {rate["unit"]: rate["unitPrice"] for rate in view["rates"]}

    assert served(created.json()) == prices
    read = await client.get(path, headers=as_user)
    assert served(read.json()) == prices
    assert not EXPONENT.search(read.text)
    listed = await client.get(f"{API}/pricing-views?limit=500", headers=as_user)
    assert not EXPONENT.search(listed.text)
    assert served((await client.get(f"{path}/revisions/1", headers=as_user)).json()) == prices
    exported = await client.get(f"{API}/pricing-views?limit=500", headers={**as_user, "Accept": "text/csv"})
    [row] = [row for row in csv.DictReader(io.StringIO(exported.text)) if row["name"] == "Per request"]
    assert {rate["unit"]: rate["unitPrice"] for rate in json.loads(row["rates"])} == prices
    assert not EXPONENT.search(exported.text)
    [audited] = await audit_rows(client, as_admin, "pricing_view", created.json()["id"])
    assert served(audited["after"]) == prices

    # Imported: from a text cell (the file's own decimal mark) and from a workbook number (5e-07 in Excel).
    body = b"service_category;unit;unit_price\nCompute;requests;0,0000000001\n"
    etag = read.headers["etag"]
    imported = await client.post(f"{path}/import", content=body, headers={**as_finops, **CSV, "If-Match": etag})
    assert imported.status_code == 200, imported.text
    assert served(imported.json()) == {"requests": "0.0000000001"}
    workbook = workbook_bytes(["service_category", "unit", "unit_price"], ["Compute", "requests", 5e-07])
    imported = await client.post(f"{path}/import", content=workbook, headers={**as_finops, **XLSX})
    assert imported.status_code == 200, imported.text
    assert served(imported.json()) == {"requests": "0.0000005"}


# Accept header -> (what a list answers, what one document answers): q-values, wildcards, specificity.
NEGOTIATION = {
    None: ("json", "json"),
    "*/*": ("json", "json"),
    "application/json": ("json", "json"),
    "text/csv": ("csv", 406),
    "TEXT/CSV; charset=utf-8": ("csv", 406),
    "text/*": ("csv", 406),
    "text/csv;q=0": ("json", "json"),
    "text/csv;q=0, */*": ("json", "json"),
    "*/*, text/csv;q=0": ("json", "json"),
    "text/csv, */*": ("csv", "json"),
    "text/csv, */*;q=0.8": ("csv", "json"),
    "text/csv, application/json": ("json", "json"),
    "text/csv;q=0.5, application/json": ("json", "json"),
    "application/json;q=0.5, text/csv": ("csv", "json"),
    "text/*, application/json;q=0.1": ("csv", "json"),
    "application/json;q=0, */*": ("csv", 406),
    "application/*;q=0, text/csv;q=0.2": ("csv", 406),
    "text/html": ("json", "json"),
    "text/csv;q=abc": ("json", "json"),
}


async def test_accept_q_values_negotiate_csv_against_json(client: Client, as_user: dict[str, str]) -> None:
    for accept, (list_answer, document_answer) in NEGOTIATION.items():
        headers = as_user if accept is None else {**as_user, "Accept": accept}
        listed = await client.get(f"{API}/budgets?limit=1", headers=headers)
        assert listed.status_code == 200, (accept, listed.text)
        expected = "text/csv; charset=utf-8" if list_answer == "csv" else "application/json"
        assert listed.headers["content-type"] == expected, accept
        document = await client.get(f"{API}/cost-insights/last-complete-billing-date", headers=headers)
        if document_answer == 406:
            assert assert_problem(document, 406)["availableMediaTypes"] == ["application/json"], accept
        else:
            assert document.status_code == 200, (accept, document.text)
            assert document.headers["content-type"] == "application/json", accept

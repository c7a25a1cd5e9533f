"""Mapping aliases through finops-api, on fresh databases, with the batch run before and after.

A FinOps admin names what source spellings mean (an old application code, ``Prd-EU`` for ``prod``); the next
finops-batch run maps the lines with them. Everyone reads them; only FinOps admins add or delete them, and the
audit log keeps who did, with the alias before and after.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

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
)
from batch_support import Mart, application, cost
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
ALIASES = f"{API}/mapping-aliases"
# The aliases finops_0003 seeds: three tag keys, seven environment spellings.
SEEDED = 10


@pytest.fixture
async def client(mart: Mart, identity_server: Any) -> AsyncIterator[Client]:
    async for api, _ in finops_client(finops_settings(mart.urls, identity_server.entra)):
        yield api


@pytest.fixture
def roles(auth_headers: Callable[..., dict[str, str]]) -> dict[str, dict[str, str]]:
    return {
        "user": auth_headers(USER, subject="uma"),
        "finops": auth_headers(FINOPS_ADMIN, subject="fiona"),
        "admin": auth_headers(ADMIN, subject="root"),
    }


async def mapped_lines(mart: Mart) -> list[tuple[str, str, str]]:
    """(application, environment, amount) of the direct facts, in amount order."""
    rows = await mart.fetch(
        "SELECT application_code, environment_code, billed_cost::text AS amount FROM fact_consumption"
        " WHERE cost_type = 'direct' ORDER BY billed_cost"
    )
    return [(row["application_code"], row["environment_code"], row["amount"]) for row in rows]


async def create(client: Client, headers: dict[str, str], kind: str, alias: str, canonical: str) -> Any:
    return await client.post(ALIASES, json={"kind": kind, "alias": alias, "canonical": canonical}, headers=headers)


async def test_an_alias_added_through_the_api_maps_the_next_run_and_its_deletion_unmaps_it(
    mart: Mart, client: Client, roles: dict[str, dict[str, str]]
) -> None:
    await mart.land("cmdb", "application", [application("PAY-CHECKOUT")])
    await mart.land(
        "cmdb",
        "cost",
        [
            cost("2026-03-01", "PAY-CHECKOUT", "10.00"),
            cost("2026-03-02", "checkout", "1.00", environment="Prd-EU"),  # an old code, a site's own spelling
        ],
    )
    await mart.run(period="2026-03")
    assert await mapped_lines(mart) == [("UNALLOCATED", "prd-eu", "1.00"), ("PAY-CHECKOUT", "prod", "10.00")]

    finops = roles["finops"]
    created = await create(client, finops, "application", "  Checkout ", "pay-checkout")
    assert created.status_code == 201, created.text
    alias = created.json()
    # Trimmed, spelled as the CMDB spells the code, attributed to the admin.
    assert (alias["kind"], alias["alias"], alias["canonical"]) == ("application", "Checkout", "PAY-CHECKOUT")
    assert alias["createdBy"] == "oid-fiona"
    assert created.headers["location"] == f"{ALIASES}/{alias['id']}"
    environment = await create(client, finops, "environment", "prd-eu", "PROD")
    assert environment.status_code == 201, environment.text
    assert environment.json()["canonical"] == "prod"

    await mart.run(period="2026-03")
    assert await mapped_lines(mart) == [("PAY-CHECKOUT", "prod", "1.00"), ("PAY-CHECKOUT", "prod", "10.00")]

    # Deleting: a stale If-Match changes nothing; the current one (or none) deletes.
    path = f"{ALIASES}/{alias['id']}"
    assert_problem(await client.delete(path, headers={**finops, "If-Match": '"stale"'}), 412)
    current = await client.get(path, headers=roles["user"])
    assert current.status_code == 200, current.text
    deleted = await client.delete(path, headers={**finops, "If-Match": current.headers["etag"]})
    assert deleted.status_code == 204, deleted.text
    assert_problem(await client.get(path, headers=roles["user"]), 404)
    assert_problem(await client.delete(path, headers=finops), 404)

    await mart.run(period="2026-03")
    assert await mapped_lines(mart) == [("UNALLOCATED", "prod", "1.00"), ("PAY-CHECKOUT", "prod", "10.00")]

    # The audit trail: who added it and who deleted it, with the alias as it was.
    rows = await audit_rows(client, roles["admin"], "mapping_alias", "application:checkout")
    assert sorted((row["action"], row["actorSubject"]) for row in rows) == [
        ("mapping_alias.create", "oid-fiona"),
        ("mapping_alias.delete", "oid-fiona"),
    ]
    deletion = next(row for row in rows if row["action"] == "mapping_alias.delete")
    assert deletion["before"]["canonical"] == "PAY-CHECKOUT"
    assert deletion["after"] is None


async def test_aliases_that_would_collide_chain_or_never_apply_are_refused_naming_the_field(
    mart: Mart, client: Client, roles: dict[str, dict[str, str]]
) -> None:
    await mart.land("cmdb", "application", [application("PAY-CHECKOUT")])
    await mart.land("cmdb", "cost", [cost("2026-03-01", "PAY-CHECKOUT", "10.00")])
    await mart.run(period="2026-03")
    finops = roles["finops"]

    # The seeded env -> environment, in another case: the same alias for finops-batch, so a conflict.
    taken = assert_problem(await create(client, finops, "tag_key", "ENV", "environment"), 409, "alias")
    assert "already means 'environment'" in taken["detail"]
    # 'production' is itself an alias of 'prod': batch aliases resolve in one step, so name 'prod'.
    chained = assert_problem(await create(client, finops, "environment", "prod-eu", "production"), 400, "canonical")
    assert "itself an alias of 'prod'" in chained["detail"]
    # 'prod' is what 'production', 'prd'... stand for: aliasing it away would leave them half-translated.
    feeding = assert_problem(await create(client, finops, "environment", "prod", "live"), 400, "alias")
    assert "'production'" in feeding["detail"]
    assert_problem(await create(client, finops, "environment", "Live", "live"), 400, "canonical")
    assert_problem(await create(client, finops, "environment", "pool", "shared"), 400, "canonical")
    assert_problem(await create(client, finops, "tag_key", "team", "owner"), 400, "canonical")
    assert_problem(await create(client, finops, "tag_key", "Environment", "application"), 400, "alias")
    assert_problem(await create(client, finops, "service_category", "vm", "Virtual machines"), 400, "canonical")
    unknown = assert_problem(await create(client, finops, "application", "old", "NOT-IN-CMDB"), 400, "canonical")
    assert "NOT-IN-CMDB" in unknown["detail"]
    assert_problem(await create(client, finops, "environment", " ", "prod"), 400, "alias")
    assert_problem(await create(client, finops, "environment", "pr\td", "prod"), 400, "alias")
    assert_problem(await create(client, finops, "environment", "x" * 256, "prod"), 400, "alias")
    assert_problem(await create(client, finops, "colour", "red", "prod"), 400)
    assert_problem(await client.post(ALIASES, json={"kind": "provider", "alias": "aws"}, headers=finops), 400)

    # JSON sent as another media type is refused before it is read (a form, text/plain).
    body = json.dumps({"kind": "provider", "alias": "gcp", "canonical": "google"})
    for media_type in ("text/plain", "application/x-www-form-urlencoded"):
        refused = await client.post(ALIASES, content=body, headers={**finops, "Content-Type": media_type})
        assert_problem(refused, 415)
    sent_as_json = {**finops, "Content-Type": "application/json; charset=utf-8"}
    assert (await client.post(ALIASES, content=body, headers=sent_as_json)).status_code == 201

    category = await create(client, finops, "service_category", "VMs", " compute ")
    assert category.status_code == 201, category.text
    assert category.json()["canonical"] == "Compute"
    provider = await create(client, finops, "provider", "Amazon Web Services", "AWS")
    assert provider.status_code == 201, provider.text
    assert provider.json()["canonical"] == "aws"

    # Nothing refused was written: the seeded aliases and the three accepted ones, nothing else.
    listing = await client.get(ALIASES, params={"limit": 500}, headers=roles["user"])
    assert listing.status_code == 200, listing.text
    assert len(listing.json()["items"]) == SEEDED + 3
    assert len(await mart.fetch("SELECT 1 FROM mapping_alias")) == SEEDED + 3
    audited = await audit_rows(client, roles["admin"], "mapping_alias", "service_category:vms")
    assert [row["after"]["canonical"] for row in audited] == ["Compute"]


async def test_a_user_reads_aliases_page_by_page_and_as_csv_but_cannot_change_them(
    mart: Mart, client: Client, roles: dict[str, dict[str, str]]
) -> None:
    user = roles["user"]
    pages = await all_pages(client, f"{ALIASES}?limit=3", user)
    keys = [(item["kind"], item["alias"]) for item in pages]
    assert len(keys) == SEEDED
    assert keys == sorted(keys)
    assert keys[:3] == [("environment", "development"), ("environment", "prd"), ("environment", "pre-prod")]

    tag_keys = await client.get(ALIASES, params={"kind": "tag_key"}, headers=user)
    assert [(item["alias"], item["canonical"]) for item in tag_keys.json()["items"]] == [
        ("app", "application"),
        ("app_code", "application"),
        ("env", "environment"),
    ]
    assert_problem(await client.get(ALIASES, params={"kind": "colour"}, headers=user), 400, "kind")

    exported = await client.get(ALIASES, headers={**user, "Accept": "text/csv"})
    assert exported.status_code == 200, exported.text
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert list(table[0]) == ["id", "kind", "alias", "canonical", "createdBy", "createdAt"]
    assert len(table) == SEEDED

    assert_problem(await create(client, user, "environment", "live", "prod"), 403)
    assert_problem(await client.delete(f"{ALIASES}/{pages[0]['id']}", headers=user), 403)
    assert len(await mart.fetch("SELECT 1 FROM mapping_alias")) == SEEDED

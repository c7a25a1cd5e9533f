"""The audit log: same transaction as the change, append-only in SQL, hash-chained, verifiable, readable by admins."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from litestar import Litestar, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from realdb import REPO_ROOT, settings_for
from rosetta.core.audit import Auditor, record_audit, to_json_value, verify_chain
from rosetta.core.db import Databases
from rosetta.core.errors import ConflictError
from rosetta.core.http import create_app
from rosetta.core.schemas import CamelStruct
from rosetta.core.security.permissions import Permission, requires
from rosetta.core.settings import DatabaseRole
from security.identity import IdentityServer, all_context_apis

AUDITED: tuple[DatabaseRole, ...] = ("ref", "finops", "monitoring")


class Budget(CamelStruct):
    """A stand-in for a context's struct, to check what audit payloads look like."""

    budget_id: uuid.UUID
    amount: Decimal
    valid_from: datetime


@pytest.fixture
async def fresh(
    fresh_database_urls: Callable[[], dict[DatabaseRole, URL]],
) -> AsyncIterator[tuple[dict[DatabaseRole, URL], Databases]]:
    """A brand-new migrated database set (these tests tamper with the chain) and engines on it."""
    urls = await asyncio.to_thread(fresh_database_urls)
    databases = Databases.open(settings_for(urls), AUDITED, process="test", urls=urls)
    try:
        yield urls, databases
    finally:
        await databases.dispose()


async def write(databases: Databases, role: DatabaseRole, count: int, *, actor: str = "alice") -> None:
    for index in range(count):
        async with databases.unit_of_work(role) as session:
            await record_audit(
                session,
                actor_subject=actor,
                actor_roles=["finops_admin"],
                action="budget.update",
                entity_type="budget",
                entity_id=f"b-{index}",
                before={"amount": Decimal("10.00")},
                after={"amount": Decimal("12.50")},
                request_id=f"req-{index}",
            )


def run_cli(urls: dict[DatabaseRole, URL], *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    for role, url in urls.items():
        env[f"ROSETTA_{role.upper()}_DATABASE_URL"] = url.render_as_string(hide_password=False)
    return subprocess.run(
        [sys.executable, "-m", "rosetta", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )


def test_payloads_accept_structs_decimals_datetimes_and_uuids() -> None:
    budget_id = uuid.uuid4()
    value = Budget(budget_id=budget_id, amount=Decimal("1234.50"), valid_from=datetime(2026, 1, 1, tzinfo=UTC))
    assert to_json_value(value) == {
        "budgetId": str(budget_id),
        "amount": "1234.50",
        "validFrom": "2026-01-01T00:00:00Z",
    }
    assert to_json_value({"n": Decimal("0.1"), "ids": [budget_id]}) == {"n": "0.1", "ids": [str(budget_id)]}
    assert to_json_value(None) is None
    # Stored as the API writes decimals (the audit route serves them again): plain notation, never "1E-10".
    assert to_json_value({"price": Decimal("1E-10"), "zero": Decimal("0E-11")}) == {
        "price": "0.0000000001",
        "zero": "0.00000000000",
    }


@pytest.mark.parametrize("role", AUDITED)
async def test_update_delete_and_truncate_are_refused_even_for_the_owner(
    fresh: tuple[dict[DatabaseRole, URL], Databases], role: DatabaseRole
) -> None:
    _, databases = fresh
    await write(databases, role, 2)
    for statement in (
        "UPDATE audit_log SET action = 'nothing.happened' WHERE seq = 1",
        "UPDATE audit_log SET after = NULL",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(DBAPIError) as refused:
            async with databases.unit_of_work(role) as session:
                await session.execute(text(statement))
        assert "append-only" in str(refused.value.orig)
    async with databases.unit_of_work(role) as session:
        assert (await session.execute(text("SELECT count(*) FROM audit_log"))).scalar_one() == 2
        # The owner of the table is the role the application connects with: the trigger binds it too.
        owner = (
            await session.execute(text("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_log'"))
        ).scalar_one()
        assert owner == (await session.execute(text("SELECT current_user"))).scalar_one()


async def test_a_rolled_back_change_leaves_no_audit_row_and_a_committed_one_always_has_one(
    fresh: tuple[dict[DatabaseRole, URL], Databases],
) -> None:
    _, databases = fresh

    async def audit_then_fail() -> None:
        async with databases.unit_of_work("finops") as session:
            await Auditor(session=session, principal=None, request_id="r-1").record(
                action="budget.create", entity_type="budget", entity_id="b-1", after={"amount": "1"}
            )
            raise ConflictError("the change failed after the audit row was written")

    with pytest.raises(ConflictError):
        await audit_then_fail()
    await write(databases, "finops", 1)
    async with databases.engines["finops"].connect() as connection:
        rows = (await connection.execute(text("SELECT seq, request_id FROM audit_log"))).all()
        report = await verify_chain(connection)
    assert [tuple(row) for row in rows] == [(1, "req-0")]
    assert report.intact
    assert report.rows == 1


async def test_concurrent_writers_build_one_linear_chain(fresh: tuple[dict[DatabaseRole, URL], Databases]) -> None:
    _, databases = fresh
    await asyncio.gather(*(write(databases, "ref", 5, actor=f"writer-{index}") for index in range(8)))
    async with databases.engines["ref"].connect() as connection:
        report = await verify_chain(connection)
        seqs = (await connection.execute(text("SELECT seq FROM audit_log ORDER BY seq"))).scalars().all()
        links = (await connection.execute(text("SELECT count(DISTINCT prev_hash) FROM audit_log"))).scalar_one()
    assert report.intact, report
    assert report.rows == 40
    assert seqs == list(range(1, 41))
    # Every row links to a different predecessor: no fork.
    assert links == 40


async def test_audit_verify_names_the_altered_row_and_exits_non_zero(
    fresh: tuple[dict[DatabaseRole, URL], Databases],
) -> None:
    urls, databases = fresh
    await write(databases, "finops", 5)
    intact = await asyncio.to_thread(run_cli, urls, "audit", "verify", "--db", "finops")
    assert intact.returncode == 0, intact.stderr
    assert "finops: audit chain intact: 5 row(s)" in intact.stdout

    # An administrator with table-owner rights switches the guard off and edits a row's content.
    async with databases.unit_of_work("finops") as session:
        await session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        await session.execute(text("""UPDATE audit_log SET after = '{"amount": "99999.00"}' WHERE seq = 3"""))
        await session.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    broken = await asyncio.to_thread(run_cli, urls, "audit", "verify", "--db", "finops")
    assert broken.returncode != 0
    assert broken.stdout == ""
    assert "audit chain broken at row seq=3: its content does not match its hash" in broken.stderr
    assert broken.stderr.count("\n") == 1
    # The other databases' chains are untouched.
    assert (await asyncio.to_thread(run_cli, urls, "audit", "verify", "--db", "ref")).returncode == 0


async def test_audit_verify_detects_a_deleted_row_and_a_recomputed_hash(
    fresh: tuple[dict[DatabaseRole, URL], Databases],
) -> None:
    _, databases = fresh
    await write(databases, "monitoring", 4)
    async with databases.unit_of_work("monitoring") as session:
        await session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        await session.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    async with databases.engines["monitoring"].connect() as connection:
        report = await verify_chain(connection)
    assert (report.broken_seq, report.problem) == (3, "row(s) missing before it (expected seq 2)")

    async with databases.unit_of_work("monitoring") as session:
        # Close the gap and re-hash the moved row: the row after it still links to the deleted one.
        await session.execute(
            text(
                "UPDATE audit_log SET seq = 2, prev_hash = (SELECT row_hash FROM audit_log WHERE seq = 1),"
                " actor_subject = 'mallory' WHERE seq = 3"
            )
        )
        await session.execute(text("UPDATE audit_log SET seq = 3 WHERE seq = 4"))
        await session.execute(
            text(
                "UPDATE audit_log SET row_hash = encode(sha256(convert_to(jsonb_build_array(seq,"
                """ to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), actor_subject,"""
                " actor_roles, action, entity_type, entity_id, before, after, request_id, outcome, prev_hash)::text,"
                " 'UTF8')), 'hex') WHERE seq = 2"
            )
        )
    async with databases.engines["monitoring"].connect() as connection:
        report = await verify_chain(connection)
    assert (report.broken_seq, report.problem) == (3, "its link to the previous row is wrong")


# ---------------------------------------------------------------------------------------------- through HTTP


class Rename(CamelStruct):
    name: str
    fail: bool = False


@post("/test-renames/{item_id:str}", guards=[requires(Permission.FINOPS_ADMIN)], status_code=200)
async def rename(item_id: FromPath[str], data: JSONBody[Rename], auditor: NamedDependency[Auditor]) -> dict[str, str]:
    """A stand-in mutation: audits, then fails if asked to (so the whole transaction rolls back)."""
    await auditor.record(
        action="thing.rename", entity_type="thing", entity_id=item_id, before={"name": "old"}, after=data
    )
    if data.fail:
        raise ConflictError("rename refused after auditing")
    return {"name": data.name}


@pytest.fixture
async def audited_client(
    fresh: tuple[dict[DatabaseRole, URL], Databases], identity_server: IdentityServer
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    urls, _ = fresh
    settings = settings_for(urls, oidc_issuers=[identity_server.entra.settings()])
    # The stand-in mutation joins the finops router, so it gets that context's session and auditor.
    contexts = [
        dataclasses.replace(context, route_handlers=[*context.route_handlers, rename])
        if context.name == "finops"
        else context
        for context in all_context_apis()
    ]
    app = create_app(contexts, process="test", settings=settings)
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_the_auditor_dependency_records_actor_roles_request_id_in_the_request_transaction(
    audited_client: AsyncTestClient[Litestar], auth_headers: Callable[..., dict[str, str]]
) -> None:
    finops_admin = auth_headers("Rosetta_FinOps_Admin", subject="fiona")
    ok = await audited_client.post("/api/finops/v1/test-renames/t-1", json={"name": "new"}, headers=finops_admin)
    assert ok.status_code == 200, ok.text
    failed = await audited_client.post(
        "/api/finops/v1/test-renames/t-2", json={"name": "x", "fail": True}, headers=finops_admin
    )
    assert failed.status_code == 409

    admin = auth_headers("Rosetta_Admin", subject="root")
    page = (await audited_client.get("/api/finops/v1/audit", headers=admin)).json()
    assert [item["entityId"] for item in page["items"]] == ["t-1"]
    entry = page["items"][0]
    assert entry["actorSubject"] == "oid-fiona"
    assert entry["actorRoles"] == ["finops_admin"]
    assert entry["requestId"] == ok.headers["x-request-id"]
    assert entry["before"] == {"name": "old"}
    assert entry["after"] == {"name": "new", "fail": False}
    assert entry["outcome"] == "succeeded"
    assert entry["seq"] == 1
    assert entry["prevHash"] == "0" * 64


async def test_audit_read_api_filters_and_paginates_for_admins_only(
    audited_client: AsyncTestClient[Litestar],
    fresh: tuple[dict[DatabaseRole, URL], Databases],
    auth_headers: Callable[..., dict[str, str]],
) -> None:
    _, databases = fresh
    await write(databases, "ref", 7, actor="alice")
    await write(databases, "ref", 3, actor="bob")
    admin = auth_headers("Rosetta_Admin")
    base = "/api/ref/v1/audit"

    assert (await audited_client.get(base, headers=auth_headers("Rosetta_Referentiel_Admin"))).status_code == 403
    assert (await audited_client.get(base)).status_code == 401

    seen: list[int] = []
    url: str | None = f"{base}?actor=alice&limit=3"
    while url:
        page = (await audited_client.get(url, headers=admin)).json()
        assert page["limit"] == 3
        seen.extend(item["seq"] for item in page["items"])
        assert all(item["actorSubject"] == "alice" for item in page["items"])
        url = page["next"]
    assert seen == [7, 6, 5, 4, 3, 2, 1]

    by_entity = (await audited_client.get(f"{base}?entityType=budget&entityId=b-1", headers=admin)).json()
    assert [(item["actorSubject"], item["entityId"]) for item in by_entity["items"]] == [
        ("bob", "b-1"),
        ("alice", "b-1"),
    ]
    assert (await audited_client.get(f"{base}?action=nothing", headers=admin)).json()["items"] == []
    everything = (
        await audited_client.get(f"{base}?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z", headers=admin)
    ).json()
    assert len(everything["items"]) == 10
    future = (await audited_client.get(f"{base}?from=2999-01-01T00:00:00Z", headers=admin)).json()
    assert future["items"] == []
    naive = await audited_client.get(f"{base}?from=2026-01-01T00:00:00", headers=admin)
    assert naive.status_code == 400
    assert naive.headers["content-type"].startswith("application/problem+json")
    # Decimals travel as strings in the stored JSON.
    assert everything["items"][0]["after"] == {"amount": "12.50"}
    assert msgspec.json.decode(msgspec.json.encode(everything["items"][0]["before"])) == {"amount": "10.00"}


async def test_the_audit_log_exports_as_csv_and_me_answers_json_only(
    audited_client: AsyncTestClient[Litestar],
    fresh: tuple[dict[DatabaseRole, URL], Databases],
    auth_headers: Callable[..., dict[str, str]],
) -> None:
    _, databases = fresh
    await write(databases, "ref", 5, actor="alice")
    async with databases.unit_of_work("ref") as session:
        await record_audit(
            session,
            actor_subject="=cmd|' /C calc'!A0",
            actor_roles=["admin"],
            action="price.update",
            entity_type="price",
            entity_id="p-1",
            before={"unitPrice": Decimal("1E-10")},
            after={"unitPrice": Decimal("1.2E-7"), "change": Decimal("0E-11")},
        )
    admin = auth_headers("Rosetta_Admin")
    csv_only = {**admin, "Accept": "text/csv"}

    # A list like the contexts' own: every row from the cursor on, columns fixed by the item schema.
    first_page = (await audited_client.get("/api/ref/v1/audit?limit=2", headers=admin)).json()
    exported = await audited_client.get(first_page["next"], headers=csv_only)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert exported.headers["content-disposition"] == 'attachment; filename="audit.csv"'
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert list(rows[0]) == [
        "seq", "occurredAt", "actorSubject", "actorRoles", "action", "entityType", "entityId", "before", "after",
        "requestId", "outcome", "prevHash", "rowHash",
    ]  # fmt: skip
    assert [int(row["seq"]) for row in rows] == [4, 3, 2, 1]
    assert rows[0]["after"] == '{"amount":"12.50"}'
    price = (await audited_client.get("/api/ref/v1/audit?entityType=price", headers=csv_only)).text
    [row] = csv.DictReader(io.StringIO(price))
    assert row["actorSubject"] == "'=cmd|' /C calc'!A0"
    assert row["before"] == '{"unitPrice":"0.0000000001"}'
    assert row["after"] == '{"change":"0.00000000000","unitPrice":"0.00000012"}'
    assert "E-" not in price
    empty = await audited_client.get("/api/ref/v1/audit?action=nothing", headers=csv_only)
    assert empty.text.startswith("seq,occurredAt,")
    assert empty.text.count("\n") == 1
    not_csv = await audited_client.get("/api/ref/v1/audit", headers={**admin, "Accept": "text/csv;q=0"})
    assert not_csv.json()["limit"] == 50

    # /me is one document: a client accepting only CSV gets 406 from every context, JSON as a second choice.
    for context in ("ref", "finops", "monitoring"):
        refused = await audited_client.get(f"/api/{context}/v1/me", headers=csv_only)
        assert refused.status_code == 406, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["availableMediaTypes"] == ["application/json"]
        second_choice = await audited_client.get(
            f"/api/{context}/v1/me", headers={**admin, "Accept": "text/csv, application/json;q=0.5"}
        )
        assert second_choice.status_code == 200
        assert second_choice.json()["roles"] == ["admin"]
    document = (await audited_client.get("/api/ref/v1/openapi.json")).json()
    assert "text/csv" in document["paths"]["/api/ref/v1/audit"]["get"]["responses"]["200"]["content"]
    assert "406" in document["paths"]["/api/ref/v1/me"]["get"]["responses"]


async def test_record_audit_refuses_an_unknown_outcome(fresh: tuple[dict[DatabaseRole, URL], Databases]) -> None:
    _, databases = fresh
    with pytest.raises(ValueError, match="outcome"):
        async with databases.unit_of_work("ref") as session:
            await record_audit(
                session,
                actor_subject="a",
                actor_roles=[],
                action="x",
                entity_type="y",
                entity_id="z",
                outcome="maybe",  # type: ignore[arg-type]
            )


async def test_a_refused_change_is_audited_as_denied_and_a_refused_read_is_not(
    audited_client: AsyncTestClient[Litestar],
    fresh: tuple[dict[DatabaseRole, URL], Databases],
    auth_headers: Callable[..., dict[str, str]],
) -> None:
    user = auth_headers("Rosetta_User", subject="mallory")
    refused = await audited_client.post("/api/finops/v1/test-renames/t-9", json={"name": "mine"}, headers=user)
    assert refused.status_code == 403
    # A read the caller may not make, and an anonymous change: no identity or no change to record.
    assert (await audited_client.get("/api/finops/v1/audit", headers=user)).status_code == 403
    assert (await audited_client.post("/api/finops/v1/test-renames/t-9", json={"name": "x"})).status_code == 401

    admin = auth_headers("Rosetta_Admin", subject="root")
    page = (await audited_client.get("/api/finops/v1/audit", headers=admin)).json()
    assert len(page["items"]) == 1
    entry = page["items"][0]
    assert entry["outcome"] == "denied"
    assert (entry["actorSubject"], entry["actorRoles"]) == ("oid-mallory", ["user"])
    assert entry["action"] == "POST /api/finops/v1/test-renames/{item_id}"
    assert (entry["entityType"], entry["entityId"]) == ("route", "/api/finops/v1/test-renames/t-9")
    assert entry["after"] == {"reason": "this action needs the finops:admin permission"}
    assert entry["requestId"] == refused.headers["x-request-id"]
    # It went to the finops context's log only, and the chain holds.
    assert (await audited_client.get("/api/ref/v1/audit", headers=admin)).json()["items"] == []
    _, databases = fresh
    async with databases.engines["finops"].connect() as connection:
        assert (await verify_chain(connection)).intact

"""What the finops-batch tests share: a fresh migrated database set with its raw store, and run helpers.

Every test gets brand-new databases (``fresh_database_urls``), so months rebuilt by one test never leak
into another. Runs go through the real batch runner (``rosetta.batch.runner.execute``) with the real
PostgreSQL raw store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from realdb import settings_for
from rosetta.batch.finops import FINOPS_JOB
from rosetta.batch.runner import RunContext, execute
from rosetta.core.db import Databases, asyncpg_dsn
from rosetta.core.settings import DatabaseRole, Settings
from rosetta.raw.postgres import PostgresRawStore

D = Decimal


@dataclass
class Mart:
    """A finops database and a raw store on fresh databases, with helpers to land documents and run the batch."""

    urls: dict[DatabaseRole, URL]
    settings: Settings
    databases: Databases
    store: PostgresRawStore

    async def land(self, source: str, kind: str, payloads: Iterable[Mapping[str, Any]]) -> int:
        """Land payloads as one completed import; return how many were new."""
        import_id = await self.store.begin_import(source=source, kind=kind, origin="test")
        items = list(payloads)
        result = await self.store.put_many(import_id, source=source, kind=kind, payloads=items)
        await self.store.finish_import(
            import_id, status="completed", read=len(items), landed=result.landed, duplicates=result.duplicates,
            rejected=0,
        )  # fmt: skip
        return result.landed

    async def run(self, **parameters: str) -> RunContext:
        """One finops-batch run through the runner (job lock, run record, counters)."""
        return await execute(FINOPS_JOB, parameters, databases=self.databases, settings=self.settings)

    async def connect(self) -> asyncpg.Connection:
        """A direct connection to the finops database (close it)."""
        return await asyncpg.connect(asyncpg_dsn(self.urls["finops"]))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one query on the finops database."""
        connection = await self.connect()
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    async def execute(self, statement: str, *args: Any) -> None:
        """Run one statement on the finops database (autocommit)."""
        connection = await self.connect()
        try:
            await connection.execute(statement, *args)
        finally:
            await connection.close()

    async def facts(self) -> list[tuple[Any, ...]]:
        """Every fact row without its run_id, in key order (what "identical apart from run_id" compares)."""
        rows = await self.fetch("SELECT * FROM fact_consumption ORDER BY period_month, line_no")
        return [tuple(value for key, value in row.items() if key != "run_id") for row in rows]


async def open_mart(make: Callable[[], dict[DatabaseRole, URL]]) -> Mart:
    """A :class:`Mart` on a brand-new migrated database set."""
    urls = await asyncio.to_thread(make)
    settings = settings_for(urls)
    databases = Databases.open(settings, ("finops",), process="test", urls=urls)
    return Mart(urls, settings, databases, PostgresRawStore.from_settings(settings, process="test"))


async def close_mart(mart: Mart) -> None:
    """Release the mart's connections."""
    await mart.store.close()
    await mart.databases.dispose()


def application(code: str, product: str = "PRD-1", *, valid_from: str = "2020-01-01", **extra: Any) -> dict[str, Any]:
    """A ``cmdb/application`` payload under product/family/domain codes derived from ``product``."""
    family = extra.pop("family", f"FAM-{product}")
    domain = extra.pop("domain", f"DOM-{family}")
    return {
        "app_code": code, "app_name": f"App {code}", "product_code": product, "product_name": f"Product {product}",
        "family_code": family, "family_name": f"Family {family}", "domain_code": domain,
        "domain_name": f"Domain {domain}", "owner_group": f"team-{code.lower()}", "status": "active",
        "valid_from": valid_from, "valid_to": extra.pop("valid_to", None), **extra,
    }  # fmt: skip


def cost(day: str, app: str | None, amount: str, *, environment: str | None = "prod", **extra: Any) -> dict[str, Any]:
    """A ``cmdb/cost`` payload."""
    return {
        "date": day, "app_code": app, "environment": environment, "service_category": "Compute",
        "service_name": "Virtual machines", "provider": "onprem", "quantity": "1", "unit": "vCPU-hours",
        "billed_cost": amount, "effective_cost": amount, "currency": "EUR", **extra,
    }  # fmt: skip


def pool(period: str, code: str, amount: str, currency: str = "EUR") -> dict[str, Any]:
    """A ``finance/shared_cost`` payload."""
    return {"period": period, "pool": code, "pool_name": code.title(), "amount": amount, "currency": currency}


def driver(period: str, app: str, name: str, quantity: str) -> dict[str, Any]:
    """A ``finance/usage_driver`` payload."""
    return {"period": period, "app_code": app, "driver": name, "quantity": quantity}


async def add_rule(
    mart: Mart,
    rule_id: str,
    pool_code: str | None,
    method: str,
    *,
    version: int = 1,
    driver_name: str | None = None,
    valid_from: str = "2020-01-01",
    targets: Mapping[str, str | None] | None = None,
) -> None:
    """Insert an allocation-rule version (as finops-api would) with its targets."""
    connection = await mart.connect()
    try:
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO allocation_rule (rule_id, version, pool_code, method, driver, valid_from, created_by)"
                " VALUES ($1, $2, $3, $4, $5, $6::text::date, 'test')",
                rule_id, version, pool_code, method, driver_name, valid_from,
            )  # fmt: skip
            for code, percentage in (targets or {}).items():
                await connection.execute(
                    "INSERT INTO allocation_rule_target VALUES ($1, $2, $3, $4::text::numeric)",
                    rule_id, version, code, percentage,
                )  # fmt: skip
    finally:
        await connection.close()

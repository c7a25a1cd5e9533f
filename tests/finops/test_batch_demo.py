"""finops-batch on the small demo world: every euro landed is in the mart, and every level adds up."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import date
from decimal import Decimal

import pytest
from batch_support import D, Mart, close_mart, open_mart
from sqlalchemy.engine import URL

from rosetta.core.settings import DatabaseRole
from rosetta.demo.landing import land_world
from rosetta.demo.world import WorldSize, build_world

LEVELS = ("domain", "family", "product", "application")


@pytest.fixture
async def mart(fresh_database_urls: Callable[[], dict[DatabaseRole, URL]]) -> AsyncIterator[Mart]:
    opened = await open_mart(fresh_database_urls)
    try:
        await land_world(opened.store, build_world(WorldSize.SMALL, 1))
        yield opened
    finally:
        await close_mart(opened)


async def landed_totals(mart: Mart) -> dict[date, Decimal]:
    """The landed source costs per month, summed straight from the raw zone (independently of the batch)."""
    totals: dict[date, Decimal] = defaultdict(Decimal)
    async for document in mart.store.stream(source="cmdb", kind="cost"):
        totals[date.fromisoformat(document.payload["date"]).replace(day=1)] += D(document.payload["billed_cost"])
    async for document in mart.store.stream(kind="focus"):
        totals[date.fromisoformat(document.payload["ChargePeriodStart"][:10]).replace(day=1)] += D(
            document.payload["BilledCost"]
        )
    async for document in mart.store.stream(source="finance", kind="shared_cost"):
        totals[date.fromisoformat(document.payload["period"] + "-01")] += D(document.payload["amount"])
    return dict(totals)


async def test_small_world_direct_indirect_unallocated_equal_landed_costs_and_levels_add_up(mart: Mart) -> None:
    context = await mart.run()
    assert context.rejected == 0
    assert context.counters["unallocated"] > 0  # the world has untagged cloud resources: shown, not dropped

    # direct + indirect + unallocated = the landed source costs, month by month, to the cent.
    rows = await mart.fetch(
        "SELECT period,"
        " sum(billed_cost) FILTER (WHERE cost_type = 'direct' AND application_code <> 'UNALLOCATED') AS direct,"
        " sum(billed_cost) FILTER (WHERE cost_type = 'indirect' AND application_code <> 'UNALLOCATED') AS indirect,"
        " coalesce(sum(billed_cost) FILTER (WHERE application_code = 'UNALLOCATED'), 0) AS unallocated"
        " FROM mv_finops_cost_monthly GROUP BY period ORDER BY period"
    )
    landed = await landed_totals(mart)
    assert len(rows) == 13
    assert {row["period"]: row["direct"] + row["indirect"] + row["unallocated"] for row in rows} == landed
    assert all(row["indirect"] > 0 for row in rows)

    # Drill-down: every level sums exactly to the level above, for every month, environment and cost type.
    rollup = await mart.fetch("SELECT * FROM mv_finops_cost_rollup_monthly")
    for parent_level, child_level in itertools.pairwise(LEVELS):
        parents: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
        children: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
        for row in rollup:
            key = (row["period"], row["environment_code"], row["cost_type"], row["currency"])
            if row["level"] == parent_level:
                parents[(row["code"], *key)] += row["billed_cost"]
            elif row["level"] == child_level:
                children[(row["parent_code"], *key)] += row["billed_cost"]
        assert parents == children, f"{child_level} does not add up to {parent_level}"
    domains: dict[date, Decimal] = defaultdict(Decimal)
    for row in rollup:
        if row["level"] == "domain":
            domains[row["period"]] += row["billed_cost"]
    assert domains == landed

    # The daily view carries every direct euro; the allocation view explains every indirect one.
    [daily] = await mart.fetch("SELECT sum(billed_cost) AS total FROM mv_finops_cost_daily")
    [direct] = await mart.fetch(
        "SELECT sum(billed_cost) AS total FROM mv_finops_cost_monthly WHERE cost_type = 'direct'"
    )
    assert daily["total"] == direct["total"]
    [explained] = await mart.fetch("SELECT sum(allocated_amount) AS total FROM mv_finops_cost_allocation_monthly")
    [indirect] = await mart.fetch(
        "SELECT sum(billed_cost) AS total FROM mv_finops_cost_monthly WHERE cost_type = 'indirect'"
    )
    assert explained["total"] == indirect["total"]

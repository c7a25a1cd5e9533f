"""The official FOCUS 1.0 sample through the raw-zone importer and finops-batch: totals at full precision."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from batch_support import D, Mart, application, close_mart, open_mart
from sqlalchemy.engine import URL

from realdb import SHARED_DATA
from rosetta.core.settings import DatabaseRole
from rosetta.raw.importers import import_file

SAMPLE = SHARED_DATA / "focus" / "focus_1.0_sample_1000.csv"

# README of the sample, "By the `environment` key of the Tags JSON" (BilledCost, EffectiveCost).
README_BY_ENVIRONMENT = {
    "dev": (D("18.20324140013"), D("16.00000000000")),
    "prod": (D("2.04282084220"), D("0")),
    "unknown": (D("0.27416448666"), D("-1.02348581414")),  # the README's "untagged"
}
README_TOTAL = (D("20.52022672899"), D("14.97651418586"))
README_BY_PROVIDER = {"aws": D("18.00663861840"), "microsoft": D("1.97651418586"), "oracle": D("0.53707392473")}


def sample_rows() -> list[dict[str, str]]:
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def tags_of(row: dict[str, str]) -> dict[str, str]:
    return json.loads(row["Tags"]) if row["Tags"] not in ("", "NULL") else {}


@pytest.fixture
async def mart(fresh_database_urls: Callable[[], dict[DatabaseRole, URL]]) -> AsyncIterator[Mart]:
    opened = await open_mart(fresh_database_urls)
    try:
        result = await import_file(opened.store, SAMPLE, source="focus-sample")
        assert result.counts.landed == 1000, result
        # A CMDB knowing every tagged application (business unit as domain), as the real CMDB would.
        apps = sorted(
            {
                (tags["application"], tags["business_unit"])
                for tags in map(tags_of, sample_rows())
                if "application" in tags
            }
        )
        await opened.land("cmdb", "application", [application(code, f"P-{unit}", domain=unit) for code, unit in apps])
        yield opened
    finally:
        await close_mart(opened)


async def totals_by_environment(mart: Mart) -> dict[str, tuple[Decimal, Decimal]]:
    rows = await mart.fetch(
        "SELECT environment_code, sum(billed_cost) AS billed, sum(effective_cost) AS effective"
        " FROM mv_finops_cost_monthly WHERE currency = 'USD' GROUP BY environment_code"
    )
    return {row["environment_code"]: (row["billed"], row["effective"]) for row in rows}


async def test_focus_sample_totals_per_environment_tag_match_the_readme(mart: Mart) -> None:
    # The README sums the literal `environment` key: without the `env` alias the mart must give exactly that.
    await mart.execute("DELETE FROM mapping_alias WHERE kind = 'tag_key' AND alias = 'env'")
    context = await mart.run()

    assert context.read == 1000
    assert context.rejected == 0
    assert await totals_by_environment(mart) == README_BY_ENVIRONMENT
    providers = await mart.fetch(
        "SELECT provider, sum(billed_cost) AS billed FROM mv_finops_cost_monthly GROUP BY provider"
    )
    assert {row["provider"]: row["billed"] for row in providers} == README_BY_PROVIDER
    [control] = await mart.fetch("SELECT * FROM mv_finops_period_control")
    assert (control["currency"], control["source_billed"], control["source_effective"]) == ("USD", *README_TOTAL)


async def test_focus_rows_without_an_application_tag_are_unallocated_not_lost(mart: Mart) -> None:
    rows = sample_rows()
    untagged = [row for row in rows if "application" not in tags_of(row)]
    context = await mart.run()

    assert len(untagged) == 340
    assert context.counters["unallocated"] == 340
    assert context.counters["unallocated_missing_application"] == 340
    assert context.counters["mapped"] == 660
    [unallocated] = await mart.fetch(
        "SELECT sum(billed_cost) AS billed, sum(effective_cost) AS effective, sum(line_count) AS lines"
        " FROM mv_finops_cost_monthly WHERE application_code = 'UNALLOCATED'"
    )
    assert unallocated["billed"] == sum((D(row["BilledCost"]) for row in untagged), D(0))
    assert unallocated["effective"] == sum((D(row["EffectiveCost"]) for row in untagged), D(0))
    [total] = await mart.fetch(
        "SELECT sum(billed_cost) AS billed, sum(effective_cost) AS effective FROM mv_finops_cost_monthly"
    )
    assert (total["billed"], total["effective"]) == README_TOTAL

    # With the default `env` -> `environment` alias, the 42 rows tagged only `env: prod` move from unknown to
    # prod; dev is untouched and nothing is created or lost.
    aliased = [row for row in rows if "environment" not in tags_of(row) and "env" in tags_of(row)]
    assert {tags_of(row)["env"] for row in aliased} == {"prod"}
    moved = (
        sum((D(row["BilledCost"]) for row in aliased), D(0)),
        sum((D(row["EffectiveCost"]) for row in aliased), D(0)),
    )
    by_environment = await totals_by_environment(mart)
    assert by_environment["dev"] == README_BY_ENVIRONMENT["dev"]
    assert by_environment["prod"] == tuple(a + b for a, b in zip(README_BY_ENVIRONMENT["prod"], moved, strict=True))
    assert by_environment["unknown"] == tuple(
        a - b for a, b in zip(README_BY_ENVIRONMENT["unknown"], moved, strict=True)
    )

"""The demo world without a database: determinism, hierarchy, FinOps documents and their totals."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from rosetta.core.errors import BadRequestError
from rosetta.demo import finops
from rosetta.demo.landing import FINOPS_DOCUMENTS
from rosetta.demo.world import (
    DEFAULT_END_MONTH,
    SIZES,
    Granularity,
    World,
    WorldSize,
    build_world,
    parse_end_month,
)

_encoder = msgspec.json.Encoder(order="sorted")


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(WorldSize.SMALL, seed=1)


def _documents(world: World, granularity: Granularity = Granularity.DAY) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for source, kind, documents in FINOPS_DOCUMENTS:
        for payload in documents(world, granularity):
            yield source, kind, payload


def _digest(world: World) -> str:
    digest = hashlib.sha256()
    for source, kind, payload in _documents(world):
        digest.update(f"{source}/{kind}:".encode() + _encoder.encode(payload) + b"\n")
    return digest.hexdigest()


def test_same_seed_same_documents_byte_for_byte() -> None:
    assert _digest(build_world(WorldSize.SMALL, seed=1)) == _digest(build_world(WorldSize.SMALL, seed=1))


def test_another_seed_gives_another_world(world: World) -> None:
    other = build_world(WorldSize.SMALL, seed=2)
    assert [app.code for app in other.applications] != [app.code for app in world.applications]
    assert _digest(other) != _digest(world)


def test_default_end_is_a_constant_not_today() -> None:
    assert DEFAULT_END_MONTH == "2026-10"
    default = build_world(WorldSize.SMALL, seed=1)
    assert (default.window.start, default.window.end) == (date(2025, 10, 1), date(2026, 10, 31))
    moved = build_world(WorldSize.SMALL, seed=1, end_month="2025-03")
    assert (moved.window.start, moved.window.end) == (date(2024, 3, 1), date(2025, 3, 31))
    assert len(moved.window.months()) == 13


@pytest.mark.parametrize("text", ["2026-13", "26-10", "2026/10", "last month"])
def test_a_bad_end_month_is_refused(text: str) -> None:
    with pytest.raises(BadRequestError, match="YYYY-MM"):
        parse_end_month(text)


@pytest.mark.parametrize("size", [WorldSize.SMALL, WorldSize.MEDIUM])
def test_hierarchy_sizes_and_unique_codes(size: WorldSize) -> None:
    built = build_world(size, seed=7)
    profile = SIZES[size]
    assert len(built.applications) == profile.applications
    assert len(built.products) == profile.domains * profile.families_per_domain * profile.products_per_family
    codes = [app.code for app in built.applications]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"[A-Z]+(-[A-Z0-9]+)+", code) for code in codes)
    # Every product has applications, and dependencies point at existing applications, never at themselves.
    assert {app.history[0].product.code for app in built.applications} == {p.code for p in built.products}
    for app in built.applications:
        assert app.code not in app.dependencies
        assert set(app.dependencies) <= set(codes)
        assert "prod" in app.environments
        assert app.current.owner_group.startswith("team-")


def test_application_documents_follow_the_contract_and_carry_history(world: World) -> None:
    documents = list(finops.application_documents(world))
    keys = {
        "app_code", "app_name", "product_code", "product_name", "family_code", "family_name", "domain_code",
        "domain_name", "owner_group", "status", "valid_from", "valid_to",
    }  # fmt: skip
    assert all(set(document) == keys for document in documents)
    versions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for document in documents:
        versions[document["app_code"]].append(document)
    assert set(versions) == {app.code for app in world.applications}
    moved = [code for code, rows in versions.items() if len({row["product_code"] for row in rows}) > 1]
    assert moved, "at least one application changes product mid-period"
    for rows in versions.values():
        # Versions are contiguous: each closed version ends the day before the next one starts.
        for before, after in itertools.pairwise(rows):
            assert before["valid_to"] is not None
            assert (
                date.fromisoformat(before["valid_to"]).toordinal() + 1
                == date.fromisoformat(after["valid_from"]).toordinal()
            )
        assert rows[-1]["valid_to"] is None


def test_cost_lines_reference_existing_applications_and_are_exact_cents(world: World) -> None:
    apps = world.by_code()
    seen: set[tuple[str, str, str, str]] = set()
    for document in finops.cmdb_cost_documents(world):
        app = apps[document["app_code"]]
        assert app.provider == "onprem"
        assert document["environment"] in app.environments
        assert document["service_category"] in app.services[document["environment"]]
        assert app.first_day.isoformat() <= document["date"] <= app.last_day.isoformat()
        assert re.fullmatch(r"\d+\.\d{2}", document["billed_cost"])
        assert document["billed_cost"] == document["effective_cost"]
        key = (document["date"], document["app_code"], document["environment"], document["service_category"])
        assert key not in seen, "one line per day, application, environment and service"
        seen.add(key)
    assert len(seen) > 10_000


def test_focus_rows_tag_existing_applications_except_the_deliberate_cases(world: World) -> None:
    apps = world.by_code()
    kinds: Counter[str] = Counter()
    for provider in ("aws", "azure"):
        for row in finops.focus_documents(world, provider):
            assert len(row) == 43
            assert row["BilledCost"] == row["EffectiveCost"] == row["ContractedCost"]
            assert Decimal(row["ListCost"]) >= Decimal(row["BilledCost"])
            tags = row["Tags"]
            if tags is None:
                kinds["untagged"] += 1
                continue
            app = apps[tags["application"]]
            assert app.provider == provider
            if "env" in tags:
                kinds["alias"] += 1
                assert app.tagging == "alias"
                assert tags["env"] in app.environments
            else:
                kinds["tagged"] += 1
                assert tags["environment"] in app.environments
    assert kinds["untagged"] > 0
    assert kinds["alias"] > 0
    assert kinds["tagged"] > 2 * (kinds["untagged"] + kinds["alias"])


def test_onprem_and_cloud_costs_are_disjoint(world: World) -> None:
    onprem = {doc["app_code"] for doc in finops.cmdb_cost_documents(world)}
    cloud = {app.code for app in world.applications if app.provider != "onprem"}
    assert onprem
    assert not onprem & cloud


def _month_totals(lines: Iterator[finops.CostLine]) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    totals: dict[tuple[str, str, str, str], tuple[int, int]] = {}
    for line in lines:
        key = (f"{line.day:%Y-%m}", line.app.code, line.environment, line.category)
        quantity, cents = totals.get(key, (0, 0))
        totals[key] = (quantity + line.quantity, cents + line.cents)
    return totals


@pytest.mark.parametrize("provider", ["onprem", "aws", "azure"])
def test_monthly_granularity_keeps_every_total(world: World, provider: str) -> None:
    daily = _month_totals(finops.cost_lines(world, provider, Granularity.DAY))
    monthly_lines = list(finops.cost_lines(world, provider, Granularity.MONTH))
    assert len(monthly_lines) == len(daily)
    assert all(line.day.day == 1 for line in monthly_lines)
    assert _month_totals(iter(monthly_lines)) == daily


def test_usage_drivers_match_the_consumption(world: World) -> None:
    compute: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for provider in ("onprem", "aws", "azure"):
        for line in finops.cost_lines(world, provider):
            if line.category == "Compute":
                compute[(f"{line.day:%Y-%m}", line.app.code)] += Decimal(line.quantity) / 100
    drivers = list(finops.usage_driver_documents(world))
    compute_drivers = {
        (d["period"], d["app_code"]): Decimal(d["quantity"]) for d in drivers if d["driver"] == "compute_hours"
    }
    assert {key: value for key, value in compute_drivers.items() if value} == dict(compute)
    assert {d["driver"] for d in drivers} == set(finops.USAGE_DRIVERS)
    assert all(int(d["quantity"]) > 0 for d in drivers if d["driver"] == "requests")


def test_shared_pools_and_budgets(world: World) -> None:
    pools = list(finops.shared_cost_documents(world))
    assert len(pools) == 13 * len(finops.SHARED_POOLS)
    assert all(Decimal(pool["amount"]) > 0 and pool["currency"] == "EUR" for pool in pools)
    budgets = list(finops.budget_documents(world))
    assert {b["version"] for b in budgets} == {"Budget 2025 initial", "Budget 2026 initial"}
    per_product = Counter((b["version"], b["scope_code"]) for b in budgets)
    assert set(per_product.values()) == {12}
    assert {code for _, code in per_product} == {p.code for p in world.products}
    assert all(b["scope_level"] == "product" and Decimal(b["amount"]) % 100 == 0 for b in budgets)
    # A plan is not the actuals, but it is in their range: the 2026 budget over the window's 2026 months.
    actual = sum(
        Decimal(doc["billed_cost"]) for doc in finops.cmdb_cost_documents(world) if doc["date"].startswith("2026")
    ) + sum(
        Decimal(row["BilledCost"])
        for provider in ("aws", "azure")
        for row in finops.focus_documents(world, provider)
        if row["ChargePeriodStart"].startswith("2026")
    )
    planned = sum(Decimal(b["amount"]) for b in budgets if b["year"] == 2026 and b["month"] <= 10)
    assert actual * Decimal("0.8") < planned < actual * Decimal("2")

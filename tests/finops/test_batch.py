"""finops-batch end to end on a real PostgreSQL: known answers, mapping, rejections, reruns, locking, kills."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from decimal import Decimal, localcontext
from typing import Any

import asyncpg
import pytest
from api_support import API, finops_client, finops_settings
from batch_support import D, Mart, add_rule, application, cost, driver, pool

from rosetta.batch.progress import SilentProgress
from rosetta.batch.runner import INTERRUPTED, JobLockedError, RunFailedError
from rosetta.cli import command_line_requester
from rosetta.core import runs
from rosetta.core.db import asyncpg_dsn
from rosetta.core.errors import ConflictError
from rosetta.finops import pipeline, service
from rosetta.finops.allocation import RATIO_DIGITS, allocate
from rosetta.finops.pipeline import ConservationError, F, RawLine, RawPage, check_month

MARCH = "2026-03"
MARCH_FIRST = date(2026, 3, 1)


async def land_known_answer_world(mart: Mart) -> None:
    """Three applications with direct costs 333.33 / 333.33 / 333.34 and one pool per known answer."""
    await mart.land("cmdb", "application", [application(code) for code in ("APP-A", "APP-B", "APP-C")])
    await mart.land(
        "cmdb",
        "cost",
        [
            cost("2026-03-02", "APP-A", "333.33"),
            cost("2026-03-02", "APP-B", "333.33"),
            cost("2026-03-03", "APP-C", "333.34"),
        ],
    )
    await mart.land(
        "finance",
        "shared_cost",
        [
            pool(MARCH, "even", "100.00"),
            pool(MARCH, "direct", "1000.00"),
            pool(MARCH, "vcpu", "250.00"),
            pool(MARCH, "fixed", "999.99"),
            pool(MARCH, "credit", "-10.00"),
            pool(MARCH, "zero", "55.55"),
        ],
    )
    await mart.land(
        "finance",
        "usage_driver",
        [
            driver(MARCH, "APP-A", "vcpu_hours", "7"),
            driver(MARCH, "APP-B", "vcpu_hours", "11"),
            driver(MARCH, "APP-C", "vcpu_hours", "13"),
            driver(MARCH, "APP-A", "users", "1"),
            driver(MARCH, "APP-B", "users", "2"),
            driver(MARCH, "APP-A", "gpu_hours", "0"),
            driver(MARCH, "APP-B", "gpu_hours", "0"),
        ],
    )
    await add_rule(mart, "even-split", "even", "even")
    await add_rule(mart, "by-direct", "direct", "direct_cost")
    await add_rule(mart, "by-vcpu", "vcpu", "usage", driver_name="vcpu_hours")
    await add_rule(mart, "fixed-pct", "fixed", "fixed", targets={"APP-A": "50", "APP-B": "30", "APP-C": "20"})
    await add_rule(mart, "credit-users", "credit", "usage", driver_name="users", targets={"APP-A": None, "APP-B": None})
    await add_rule(mart, "by-gpu", "zero", "usage", driver_name="gpu_hours")


async def allocations(mart: Mart) -> dict[str, dict[str, Decimal]]:
    rows = await mart.fetch(
        "SELECT pool_code, application_code, allocated_amount FROM mv_finops_cost_allocation_monthly"
        " WHERE period = DATE '2026-03-01'"
    )
    result: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        result.setdefault(row["pool_code"], {})[row["application_code"]] = row["allocated_amount"]
    return result


async def test_known_answers_through_the_batch(mart: Mart) -> None:
    await land_known_answer_world(mart)
    context = await mart.run()

    assert await allocations(mart) == {
        "even": {"APP-A": D("33.34"), "APP-B": D("33.33"), "APP-C": D("33.33")},
        "direct": {"APP-A": D("333.33"), "APP-B": D("333.33"), "APP-C": D("333.34")},
        "vcpu": {"APP-A": D("56.45"), "APP-B": D("88.71"), "APP-C": D("104.84")},
        "fixed": {"APP-A": D("499.99"), "APP-B": D("300.00"), "APP-C": D("200.00")},
        "credit": {"APP-A": D("-3.33"), "APP-B": D("-6.67")},
        "zero": {"UNALLOCATED": D("55.55")},
    }
    # The indirect fact rows carry the same amounts, the rule id@version and the source pool.
    indirect = await mart.fetch(
        "SELECT source_pool, application_code, billed_cost, allocation_rule_id, allocation_rule_version, run_id"
        " FROM fact_consumption WHERE cost_type = 'indirect' AND source_pool = 'vcpu' ORDER BY application_code"
    )
    assert [(row["application_code"], row["billed_cost"]) for row in indirect] == [
        ("APP-A", D("56.45")),
        ("APP-B", D("88.71")),
        ("APP-C", D("104.84")),
    ]
    assert {(row["allocation_rule_id"], row["allocation_rule_version"], row["run_id"]) for row in indirect} == {
        ("by-vcpu", 1, context.run_id)
    }
    coefficient = await mart.fetch(
        "SELECT key_type, weight, ratio, rounding_adjustment FROM fact_coefficient"
        " WHERE pool_code = 'even' ORDER BY target_application_code"
    )
    assert [(row["key_type"], row["weight"], row["rounding_adjustment"]) for row in coefficient] == [
        ("even", D(1), D("0.01")),
        ("even", D(1), D(0)),
        ("even", D(1), D(0)),
    ]
    unallocated = await mart.fetch("SELECT key_type FROM fact_coefficient WHERE pool_code = 'zero'")
    assert [row["key_type"] for row in unallocated] == ["unallocated"]
    # Direct 1000.00 + pools 2395.54 = everything the month holds, split into direct / indirect / unallocated.
    [totals] = await mart.fetch(
        "SELECT sum(billed_cost) FILTER (WHERE cost_type = 'direct') AS direct,"
        " sum(billed_cost) FILTER (WHERE cost_type = 'indirect' AND application_code <> 'UNALLOCATED') AS indirect,"
        " sum(billed_cost) FILTER (WHERE application_code = 'UNALLOCATED') AS unallocated"
        " FROM mv_finops_cost_monthly WHERE period = DATE '2026-03-01'"
    )
    assert (totals["direct"], totals["indirect"], totals["unallocated"]) == (D("1000.00"), D("2339.99"), D("55.55"))
    record = context.counters
    assert record["pools"] == 6
    assert record["pools_unallocated"] == 1
    assert context.read == 3
    assert context.rejected == 0


async def test_unmapped_lines_go_to_unallocated_and_bad_lines_are_rejected_with_a_reason(mart: Mart) -> None:
    await mart.land("cmdb", "application", [application("PAY-CHECKOUT")])
    await mart.execute(
        "INSERT INTO mapping_alias (kind, alias, canonical) VALUES ('application', 'checkout', 'PAY-CHECKOUT')"
    )
    await mart.land(
        "cmdb",
        "cost",
        [
            cost("2026-03-01", "PAY-CHECKOUT", "10.00"),
            cost("2026-03-01", "checkout", "1.00", environment="Production"),  # app alias, environment alias
            cost("2026-03-01", "pay-checkout", "2.00", environment=None),  # case-insensitive code, no environment
            cost("2026-03-02", "NOT-IN-CMDB", "3.00"),  # unknown application
            cost("2026-03-02", None, "4.00"),  # no application at all
            cost("2026-03-02", "PAY-CHECKOUT", "12,50"),  # unparsable amount
            cost("2026-03-02", "PAY-CHECKOUT", "5.00", currency="euro"),  # invalid currency
            cost("2026-02-30", "PAY-CHECKOUT", "6.00"),  # no such day
        ],
    )
    await mart.land("finance", "usage_driver", [driver(MARCH, "PAY-CHECKOUT", "requests", "-5")])
    context = await mart.run()

    assert context.read == 8
    assert context.rejected == 4
    assert context.counters["mapped"] == 3
    assert context.counters["unallocated"] == 2
    assert context.counters["unallocated_unknown_application"] == 1
    assert context.counters["unallocated_missing_application"] == 1
    rows = await mart.fetch(
        "SELECT application_code, environment_code, sum(billed_cost) AS billed FROM fact_consumption"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert [(row["application_code"], row["environment_code"], row["billed"]) for row in rows] == [
        ("PAY-CHECKOUT", "prod", D("11.00")),
        ("PAY-CHECKOUT", "unknown", D("2.00")),
        ("UNALLOCATED", "prod", D("7.00")),
    ]
    rejected = await mart.fetch("SELECT kind, period_month, reason, payload FROM batch_rejection ORDER BY reason")
    assert [(row["kind"], row["reason"]) for row in rejected] == [
        ("cost", "invalid currency 'euro'"),
        ("usage_driver", "negative usage quantity -5"),
        ("cost", "unparsable billed_cost '12,50'"),
        ("cost", "unparsable date '2026-02-30'"),
    ]
    [control] = await mart.fetch("SELECT * FROM mv_finops_period_control WHERE currency = 'EUR'")
    assert (control["lines_read"], control["lines_mapped"], control["lines_unallocated"]) == (5, 3, 2)
    assert control["lines_rejected"] == 1  # the bad amount; the bad currency is counted under XXX
    assert control["source_billed"] == D("20.00")
    [run] = await mart.fetch("SELECT status, read_count, rejected_count, counters, steps FROM batch_run")
    assert (run["status"], run["read_count"], run["rejected_count"]) == ("succeeded", 8, 4)
    assert {step["name"] for step in json.loads(run["steps"])} >= {"reference", "read", "refresh views"}


async def test_hierarchy_of_the_month_and_drilldown_totals(mart: Mart) -> None:
    # APP-M moves from product OLD to product NEW on 2026-03-15: February stays with OLD, March goes to NEW.
    await mart.land(
        "cmdb",
        "application",
        [
            application("APP-M", "OLD", family="FAM-1", domain="DOM-1", valid_to="2026-03-14"),
            application("APP-M", "NEW", family="FAM-2", domain="DOM-1", valid_from="2026-03-15"),
            application("APP-S", "OLD", family="FAM-1", domain="DOM-1"),
        ],
    )
    await mart.land(
        "cmdb",
        "cost",
        [
            cost("2026-02-10", "APP-M", "100.00"),
            cost("2026-03-10", "APP-M", "200.00"),
            cost("2026-02-10", "APP-S", "50.00", environment="dev"),
            cost("2026-03-10", "APP-S", "60.00", environment="dev"),
            cost("2026-03-11", "GHOST", "7.00"),
        ],
    )
    await mart.land("finance", "shared_cost", [pool("2026-02", "network", "30.00"), pool(MARCH, "network", "45.01")])
    await mart.run()

    months = await mart.fetch("SELECT period, application_code, product_code FROM dim_application_month ORDER BY 1, 2")
    assert {(str(row["period"]), row["application_code"]): row["product_code"] for row in months} == {
        ("2026-02-01", "APP-M"): "OLD",
        ("2026-02-01", "APP-S"): "OLD",
        ("2026-02-01", "UNALLOCATED"): "UNALLOCATED",
        ("2026-03-01", "APP-M"): "NEW",
        ("2026-03-01", "APP-S"): "OLD",
        ("2026-03-01", "UNALLOCATED"): "UNALLOCATED",
    }
    rollup = await mart.fetch("SELECT * FROM mv_finops_cost_rollup_monthly")
    levels = ("domain", "family", "product", "application")
    for parent_level, child_level in itertools.pairwise(levels):
        parents: dict[tuple[object, ...], Decimal] = {}
        children: dict[tuple[object, ...], Decimal] = {}
        for row in rollup:
            key = (row["period"], row["environment_code"], row["cost_type"], row["currency"])
            if row["level"] == parent_level:
                parents[(row["code"], *key)] = parents.get((row["code"], *key), D(0)) + row["billed_cost"]
            if row["level"] == child_level:
                children[(row["parent_code"], *key)] = (
                    children.get((row["parent_code"], *key), D(0)) + row["billed_cost"]
                )
        assert parents == children, (parent_level, child_level)
    domain_total = {
        str(row["period"]): row["billed_cost"] for row in rollup if row["level"] == "domain" and row["code"] == "DOM-1"
    }
    # Pools are allocated by direct cost (the seeded fallback rule): 30.00 over 100/50, 45.01 over 200/60.
    assert sum(row["billed_cost"] for row in rollup if row["level"] == "domain") == D("492.01")
    assert sorted(domain_total) == ["2026-02-01", "2026-03-01"]
    march: dict[str, Decimal] = {}
    for row in rollup:
        if row["level"] == "product" and str(row["period"]) == "2026-03-01":
            march[row["code"]] = march.get(row["code"], D(0)) + row["billed_cost"]
    assert march["NEW"] == D("200.00") + D("34.62")  # 45.01 * 200 / 260 = 34.623 -> 34.62
    assert march["UNALLOCATED"] == D("7.00")


async def test_rerun_gives_identical_rows_and_a_period_rebuilds_only_that_month(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.land("cmdb", "cost", [cost("2026-04-01", "APP-A", "1.00")])
    first = await mart.run()
    before = await mart.facts()
    second = await mart.run()
    assert first.run_id != second.run_id
    assert await mart.facts() == before
    assert {row["run_id"] for row in await mart.fetch("SELECT DISTINCT run_id FROM fact_consumption")} == {
        second.run_id
    }

    await mart.land("cmdb", "cost", [cost("2026-04-02", "APP-B", "2.00"), cost("2026-03-04", "APP-B", "99.00")])
    third = await mart.run(period="2026-04")
    assert third.counters["periods"] == ["2026-04"]
    run_ids = await mart.fetch(
        "SELECT period_month, array_agg(DISTINCT run_id) AS ids FROM fact_consumption GROUP BY 1"
    )
    assert {str(row["period_month"]): row["ids"] for row in run_ids} == {
        "2026-03-01": [second.run_id],
        "2026-04-01": [third.run_id],
    }
    totals = await mart.fetch(
        "SELECT period_month, sum(billed_cost) AS total FROM fact_consumption GROUP BY 1 ORDER BY 1"
    )
    # March still has the second run's figures (the new 99.00 line waits for March's next rebuild).
    assert [row["total"] for row in totals] == [D("3395.54"), D("3.00")]


async def test_two_runs_of_the_same_month_cannot_overlap(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.run()
    before = await mart.facts()
    connection = await mart.connect()
    try:
        # Another finops-batch run holds the job lock: the runner refuses to start.
        assert await connection.fetchval("SELECT pg_try_advisory_lock($1)", runs.advisory_lock_key("finops"))
        with pytest.raises(JobLockedError):
            await mart.run()
        await connection.execute("SELECT pg_advisory_unlock($1)", runs.advisory_lock_key("finops"))

        # Someone rebuilding March outside the runner holds the month: the rebuild is refused, nothing changes.
        assert await connection.fetchval(
            "SELECT pg_try_advisory_lock($1)", runs.advisory_lock_key("finops.month.2026-03")
        )
        with pytest.raises(RunFailedError) as failure:
            await mart.run()
        assert isinstance(failure.value.__cause__, ConflictError)
        assert "2026-03 is being rebuilt by another run" in failure.value.detail
    finally:
        await connection.close()
    assert await mart.facts() == before
    [failed] = await mart.fetch("SELECT status, error FROM batch_run WHERE status = 'failed'")
    assert "being rebuilt by another run" in failed["error"]


async def test_conservation_check_fails_a_month_that_does_not_add_up(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.run()
    connection = await mart.connect()
    try:
        await check_month(connection, MARCH_FIRST)  # the built month is conserved
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(
                "UPDATE fact_consumption SET billed_cost = billed_cost + 0.01 WHERE line_no = ("
                " SELECT min(line_no) FROM fact_consumption WHERE cost_type = 'indirect' AND source_pool = 'even')"
            )
            with pytest.raises(ConservationError, match=r"pool even: pooled 100.00, coefficients 100.00, facts 100.01"):
                await check_month(connection, MARCH_FIRST)
            await connection.execute("UPDATE fact_period_control SET source_billed = source_billed - 1")
            with pytest.raises(ConservationError, match=r"EUR: source 999\.00 vs direct 1000\.00"):
                await check_month(connection, MARCH_FIRST)
        finally:
            await transaction.rollback()
    finally:
        await connection.close()


async def test_killing_the_batch_during_the_swap_leaves_the_previous_month_intact(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.run()
    before = await mart.facts()
    views_before = await mart.fetch("SELECT * FROM mv_finops_cost_monthly ORDER BY 1, 2, 3, 4, 5, 6")
    await mart.land("cmdb", "cost", [cost("2026-03-05", "APP-A", "500.00")])  # the next run would change March

    reader = await mart.connect()
    environment = _batch_environment(mart)
    try:
        # A long reader of March holds its lock: the batch builds its staging tables, then waits inside the swap.
        transaction = reader.transaction()
        await transaction.start()
        assert await reader.fetchval("SELECT count(*) FROM fact_consumption") == len(before)
        batch = subprocess.Popen(  # noqa: ASYNC220 - the batch must be a separate process to be killed
            [sys.executable, "-m", "rosetta", "batch", "finops"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            waiting = await _wait_for_swap_waiting_on_lock(mart)
            assert waiting, "the batch never reached the swap"
            staging = await mart.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'finops_stage_%'")
            assert staging, "the staging tables are built before the swap"
            batch.send_signal(signal.SIGKILL)
            batch.wait(timeout=30)
        finally:
            if batch.poll() is None:
                batch.kill()
        await transaction.rollback()
    finally:
        await reader.close()

    assert batch.returncode == -signal.SIGKILL
    assert await mart.facts() == before
    assert await mart.fetch("SELECT * FROM mv_finops_cost_monthly ORDER BY 1, 2, 3, 4, 5, 6") == views_before
    [killed] = await mart.fetch("SELECT status, requested_by FROM batch_run ORDER BY queued_at DESC LIMIT 1")
    assert killed["status"] == "running"  # a killed process cannot record its end; its lock died with it
    assert killed["requested_by"] == command_line_requester()  # who ran it, and on which host (or pod)

    # The next run drops the leftovers, takes the locks the killed run lost, and swaps March in; holding the job's
    # lock, it knows the killed run is dead and records it so.
    await mart.run()
    [abandoned] = await mart.fetch(
        "SELECT status, error, finished_at FROM batch_run ORDER BY queued_at LIMIT 1 OFFSET 1"
    )
    assert abandoned["status"] == "failed"
    assert abandoned["error"].startswith("abandoned: its process ended without recording an outcome")
    assert abandoned["finished_at"] is not None
    assert await mart.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'finops_stage_%'") == []
    [total] = await mart.fetch("SELECT sum(billed_cost) AS direct FROM fact_consumption WHERE cost_type = 'direct'")
    assert total["direct"] == D("1500.00")


async def test_two_months_built_at_once_drop_a_killed_runs_line_tables(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.land("cmdb", "cost", [cost("2026-04-01", "APP-A", "1.00"), cost("2026-05-01", "APP-B", "2.00")])
    # What a run killed while reading March leaves: its line table (not temporary: another connection builds it).
    killed = uuid.uuid4().hex[:12]
    await mart.execute(f"CREATE UNLOGGED TABLE finops_stage_lines_202603_{killed} (day date)")
    await mart.execute(f"CREATE TABLE finops_stage_fc_202603_{killed} (LIKE fact_consumption)")

    context = await mart.run()

    assert context.counters["periods"] == ["2026-03", "2026-04", "2026-05"]
    assert await mart.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'finops_stage_%'") == []
    steps = [step["name"] for step in context.steps if step["name"].startswith(("build", "swap"))]
    assert sorted(steps) == [f"{step} 2026-{month:02d}" for step in ("build", "swap") for month in (3, 4, 5)]
    for month in ("2026-03", "2026-04", "2026-05"):
        assert steps.index(f"build {month}") < steps.index(f"swap {month}")
    totals = await mart.fetch(
        "SELECT period_month, sum(billed_cost) FILTER (WHERE cost_type = 'direct') AS direct FROM fact_consumption"
        " GROUP BY 1 ORDER BY 1"
    )
    assert [row["direct"] for row in totals] == [D("1000.00"), D("1.00"), D("2.00")]
    connection = await mart.connect()
    try:
        for month in (3, 4, 5):
            await check_month(connection, date(2026, month, 1))
    finally:
        await connection.close()


def _batch_environment(mart: Mart) -> dict[str, str]:
    """The environment of a ``rosetta batch finops`` process on this test's databases."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    environment.update(
        {
            f"ROSETTA_{role.upper()}_DATABASE_URL": url.render_as_string(hide_password=False)
            for role, url in mart.urls.items()
        }
    )
    environment["ROSETTA_LOG_FORMAT"] = "json"
    return environment


async def test_ctrl_c_during_the_swap_records_the_run_interrupted_and_changes_nothing(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.run()
    before = await mart.facts()
    await mart.land("cmdb", "cost", [cost("2026-03-05", "APP-A", "500.00")])

    reader = await mart.connect()
    try:
        transaction = reader.transaction()
        await transaction.start()
        await reader.fetchval("SELECT count(*) FROM fact_consumption")  # holds March: the swap will wait
        batch = subprocess.Popen(  # noqa: ASYNC220 - a separate process, to be interrupted like a terminal's
            [sys.executable, "-m", "rosetta", "batch", "finops"],
            env=_batch_environment(mart),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert await _wait_for_swap_waiting_on_lock(mart), "the batch never reached the swap"
            batch.send_signal(signal.SIGINT)
            _, stderr = await asyncio.to_thread(batch.communicate, timeout=60)
        finally:
            if batch.poll() is None:
                batch.kill()
        await transaction.rollback()
    finally:
        await reader.close()

    assert batch.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "rosetta: interrupted", stderr
    assert await mart.facts() == before
    [run] = await mart.fetch("SELECT status, error, finished_at FROM batch_run ORDER BY queued_at DESC LIMIT 1")
    # Unlike a killed process, an interrupted one records its end: nobody would take it over.
    assert run["status"] == "failed"
    assert run["error"] == INTERRUPTED
    assert run["finished_at"] is not None
    # And it let go of the job's lock: the next run starts at once.
    await mart.run()


async def _wait_for_swap_waiting_on_lock(mart: Mart, seconds: float = 90.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = await mart.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'rosetta.batch.finops'"
            " AND wait_event_type = 'Lock' AND datname = current_database()"
        )
        if any("PARTITION" in row["query"] for row in rows):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_service_refuses_a_month_locked_by_another_caller(mart: Mart) -> None:
    await land_known_answer_world(mart)
    connection = await mart.connect()
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", runs.advisory_lock_key("finops.month.2026-03"))

        class Hooks:
            progress = SilentProgress()

            def step(self, name: str, total: int | None = None) -> contextlib.AbstractAsyncContextManager[None]:
                return contextlib.nullcontext()

        class Nothing:
            """A raw zone with nothing in it (the month's lock is refused before any read)."""

            async def __call__(self, *, source: str | None, kind: str) -> AsyncIterator[RawLine]:
                return
                yield

            async def pages(self, *, source: str | None, kind: str, shape: type[F]) -> AsyncIterator[RawPage[F]]:
                return
                yield

        with pytest.raises(ConflictError):
            await service.rebuild_periods(
                mart.databases.engines["finops"], Nothing(), run_id=uuid.uuid4(), hooks=Hooks(),
                periods=[MARCH_FIRST],
            )  # fmt: skip
    finally:
        await connection.close()


async def test_budget_lines_are_imported_into_versions_audited_once(mart: Mart) -> None:
    await mart.land("cmdb", "application", [application("PAY-CHECKOUT", "PAY-ONLINE")])
    line = {"version": "Budget 2026 initial", "year": 2026, "scope_level": "product", "currency": "EUR"}
    await mart.land(
        "finance",
        "budget",
        [
            {**line, "month": 1, "scope_code": "PAY-ONLINE", "amount": "42000.00"},
            {**line, "month": 2, "scope_code": "PAY-ONLINE", "amount": "43000.00"},
            {**line, "version": "Revised Q2", "month": 4, "scope_code": "PAY-ONLINE", "amount": "40000.00"},
            {**line, "month": 13, "scope_code": "PAY-ONLINE", "amount": "1.00"},
            {**line, "month": 3, "scope_code": "PAY-ONLINE", "amount": "lots"},
            # Refused as the API refuses them: float noise below the cent, a code the CMDB has at another level.
            {**line, "month": 5, "scope_code": "PAY-ONLINE", "amount": "0.30000000000000004"},
            {**line, "month": 6, "scope_code": "PAY-CHECKOUT", "amount": "10.00"},
        ],
    )
    first = await mart.run()
    assert first.counters["budget_versions_created"] == 2
    assert first.counters["budget_lines_changed"] == 3
    assert first.counters["budget_lines_rejected"] == 4
    reasons = await mart.fetch("SELECT reason_code, reason FROM batch_rejection WHERE kind = 'budget' ORDER BY id")
    assert {row["reason_code"] for row in reasons} == {"invalid_budget_line"}
    assert [row["reason"] for row in reasons][-2:] == [
        "amount: at most 2 decimals (whole cents), got 0.30000000000000004",
        "scope_code: unknown product 'PAY-CHECKOUT' (checked against the CMDB hierarchy, at its level)",
    ]
    lines = await mart.fetch(
        "SELECT v.name, v.created_by, l.month, l.amount FROM budget_revision_line l JOIN budget_version v"
        " ON v.id = l.budget_version_id AND v.revision = l.revision ORDER BY v.name, l.month"
    )
    assert [(row["name"], str(row["month"]), row["amount"]) for row in lines] == [
        ("Budget 2026 initial", "2026-01-01", D("42000.00")),
        ("Budget 2026 initial", "2026-02-01", D("43000.00")),
        ("Revised Q2", "2026-04-01", D("40000.00")),
    ]
    assert {row["created_by"] for row in lines} == {"batch:finops"}
    audit = await mart.fetch("SELECT actor_subject, action, entity_type, after FROM audit_log ORDER BY seq")
    assert [(row["actor_subject"], row["action"]) for row in audit] == [("batch:finops", "budget.import.raw")] * 2
    assert {row["entity_type"] for row in audit} == {"budget_version"}  # as the API's changes of budgets

    # A rerun changes nothing and audits nothing; a changed amount updates that line only, audited.
    await mart.run()
    assert len(await mart.fetch("SELECT seq FROM audit_log")) == 2
    await mart.land("finance", "budget", [{**line, "month": 2, "scope_code": "PAY-ONLINE", "amount": "43500.00"}])
    third = await mart.run()
    assert third.counters["budget_lines_changed"] == 1
    [changed] = await mart.fetch("SELECT after FROM audit_log ORDER BY seq DESC LIMIT 1")
    assert json.loads(changed["after"])["changedLines"] == 1
    # The change is the version's next revision, made and signed by the batch as an API change would be; revision 1
    # keeps the amount it replaced, so a comparison against budget:<id>@1 gives what it gave before this run.
    assert json.loads(changed["after"])["revision"] == 2
    revisions = await mart.fetch(
        "SELECT r.revision, r.name, r.description, r.created_by, v.revision AS current,"
        " array_agg(l.amount::text ORDER BY l.month) AS amounts"
        " FROM budget_revision r JOIN budget_version v ON v.id = r.budget_version_id"
        " JOIN budget_revision_line l ON l.budget_version_id = r.budget_version_id AND l.revision = r.revision"
        " WHERE v.name = 'Budget 2026 initial' GROUP BY r.revision, r.name, r.description, r.created_by, v.revision"
        " ORDER BY r.revision"
    )
    assert [tuple(row.values()) for row in revisions] == [
        (1, "Budget 2026 initial", "Imported from the raw zone (finance/budget)", "batch:finops", 2,
         ["42000.00", "43000.00"]),
        (2, "Budget 2026 initial", "Imported from the raw zone (finance/budget)", "batch:finops", 2,
         ["42000.00", "43500.00"]),
    ]  # fmt: skip
    # A rerun over the same documents makes no revision.
    await mart.run()
    assert len(await mart.fetch("SELECT revision FROM budget_revision")) == 3


async def test_a_failed_run_leaves_the_previous_month_and_no_staging_behind(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.run()
    before = await mart.facts()
    views_before = await mart.fetch("SELECT * FROM mv_finops_cost_allocation_monthly ORDER BY 1, 2, 4, 5")
    # A new version of the fixed rule whose percentages do not total 100: March cannot be allocated.
    await add_rule(
        mart, "fixed-pct", "fixed", "fixed", version=2, valid_from="2026-03-01", targets={"APP-A": "50", "APP-B": "30"}
    )
    await mart.land("cmdb", "cost", [cost("2026-03-09", "APP-C", "1.00")])
    with pytest.raises(RunFailedError, match=r"pool fixed 2026-03 with rule fixed-pct@2: .*total exactly 100"):
        await mart.run()

    assert await mart.facts() == before
    assert await mart.fetch("SELECT * FROM mv_finops_cost_allocation_monthly ORDER BY 1, 2, 4, 5") == views_before
    assert await mart.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'finops_stage_%'") == []
    [failed] = await mart.fetch("SELECT status, steps FROM batch_run WHERE status = 'failed'")
    assert json.loads(failed["steps"])[-1] == {
        "name": "build 2026-03",
        "seconds": pytest.approx(0, abs=60),
        "outcome": "failed",
    }


async def test_a_requested_month_without_raw_data_is_rebuilt_empty(mart: Mart) -> None:
    await land_known_answer_world(mart)
    context = await mart.run(period="2026-05")
    assert context.counters["periods"] == ["2026-05"]
    assert await mart.fetch("SELECT * FROM fact_consumption") == []
    [control] = await mart.fetch(
        "SELECT count(*) AS months FROM pg_tables WHERE tablename = 'fact_consumption_p202605'"
    )
    assert control["months"] == 1


async def test_a_month_whose_sources_are_gone_is_not_emptied_unless_asked(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.run()
    before = await mart.facts()
    # March's sources vanish from the raw zone (purged, or a re-landing that has not happened yet).
    raw = await asyncpg.connect(asyncpg_dsn(mart.urls["raw"]))
    try:
        await raw.execute("DELETE FROM raw_document WHERE kind IN ('cost', 'shared_cost', 'usage_driver')")
    finally:
        await raw.close()

    with pytest.raises(RunFailedError) as failed:
        await mart.run(period=MARCH)
    assert f"{MARCH}: the raw zone holds no cost line, pool or driver for this month, but the mart holds" in str(
        failed.value
    )
    assert await mart.facts() == before  # nothing swapped
    [run] = await mart.fetch("SELECT status, error FROM batch_run ORDER BY queued_at DESC LIMIT 1")
    assert run["status"] == "failed"
    assert "--allow-empty / allowEmpty" in run["error"]

    # Asked for, the month is emptied.
    await mart.run(period=MARCH, allowEmpty="true")
    assert await mart.fetch("SELECT * FROM fact_consumption") == []


async def test_text_and_amounts_reach_the_facts_exactly_and_rejections_keep_the_whole_document(mart: Mart) -> None:
    """Mapped lines travel as COPY text: escapes and numeric scales must survive; a rejection keeps every key."""
    await mart.land("cmdb", "application", [application("APP-T")])
    awkward = "tab\there, new\nline, cr\rhere, back\\slash, \\N, é 日本"
    await mart.land(
        "cmdb",
        "cost",
        [
            cost("2026-03-02", "APP-T", "1E+2", service_name=awkward, unit="\\N", quantity="0.0000001"),
            cost("2026-03-03", "APP-T", "-0.50", service_name=None, unit=None, quantity=None, effective_cost="-0.5"),
        ],
    )
    bad = cost("2026-03-04", "APP-T", "12,50", note="not read by the batch", nested={"a": [1, 2.5, None]})
    await mart.land(
        "aws", "focus", [{"BilledCost": "x", "BillingCurrency": "EUR", "ChargePeriodStart": "2026-03-05", "Tags": {}}]
    )
    await mart.land("cmdb", "cost", [bad])
    await mart.run()

    rows = await mart.fetch(
        "SELECT period, service_name, unit, quantity::text, billed_cost::text, effective_cost::text"
        " FROM fact_consumption WHERE cost_type = 'direct' ORDER BY period"
    )
    assert [tuple(row.values()) for row in rows] == [
        (date(2026, 3, 2), awkward, "\\N", "0.0000001", "100", "100"),
        (date(2026, 3, 3), None, None, None, "-0.50", "-0.5"),
    ]
    rejected = await mart.fetch("SELECT kind, reason, content_hash, payload FROM batch_rejection ORDER BY kind")
    landed = {
        document.content_hash: document.payload
        async for document in mart.store.stream()
        if document.kind in ("cost", "focus")
    }
    assert [(row["kind"], row["reason"]) for row in rejected] == [
        ("cost", "unparsable billed_cost '12,50'"),
        ("focus", "unparsable BilledCost 'x'"),
    ]
    assert [json.loads(row["payload"]) for row in rejected] == [landed[row["content_hash"]] for row in rejected]
    assert json.loads(rejected[0]["payload"]) == bad


async def test_allocated_rows_keep_awkward_text_and_every_scale(mart: Mart) -> None:
    """Indirect and coefficient rows travel as COPY text too: codes, names and driver escaped, numerics unscaled."""
    codes = ["APP-\tTAB", "APP-\\N", "APP-\\back\r\nline"]
    await mart.land("cmdb", "application", [application(code) for code in codes])
    await mart.land("cmdb", "cost", [cost("2026-03-02", codes[0], "10.00")])
    awkward_pool = "net\\work\tpool"
    awkward_driver = "cpu\\N\thours"
    await mart.land(
        "finance",
        "shared_cost",
        [{"period": MARCH, "pool": awkward_pool, "pool_name": "Net\twork\\N,\r\n é 日本", "amount": "-100.00",
          "currency": "EUR"}],
    )  # fmt: skip
    quantities = ["1E+3", "0.5000", "2.25E-3"]
    await mart.land(
        "finance",
        "usage_driver",
        [driver(MARCH, code, awkward_driver, quantity) for code, quantity in zip(codes, quantities, strict=True)],
    )
    await add_rule(mart, "by-awkward", awkward_pool, "usage", driver_name=awkward_driver)
    context = await mart.run()

    weights = [D(quantity) for quantity in quantities]
    with localcontext() as exact:
        exact.prec = RATIO_DIGITS
        ratios = [weight / sum(weights) for weight in weights]
    shares = {share.target: share for share in allocate(D("-100.00"), dict(zip(codes, weights, strict=True))).shares}
    coefficients = await mart.fetch(
        "SELECT target_application_code, pool_code, driver, key_type, weight::text, ratio::text, pool_amount::text,"
        " allocated_amount::text, rounding_adjustment::text FROM fact_coefficient ORDER BY target_application_code"
    )
    assert [tuple(row.values()) for row in coefficients] == [
        (code, awkward_pool, awkward_driver, "usage", text, format(ratio, "f"), "-100.00",
         format(shares[code].amount, "f"), format(shares[code].rounding_adjustment, "f"))
        for code, text, ratio in sorted(zip(codes, ["1000", "0.5000", "0.00225"], ratios, strict=True))
    ]  # fmt: skip
    assert sum(shares[code].amount for code in codes) == D("-100.00")
    indirect = await mart.fetch(
        "SELECT application_code, source_pool, service_name, billed_cost::text, effective_cost::text,"
        " allocated_ratio::text, line_no FROM fact_consumption WHERE cost_type = 'indirect' ORDER BY line_no"
    )
    assert [tuple(row.values()) for row in indirect] == [
        (code, awkward_pool, "Net\twork\\N,\r\n é 日本", format(shares[code].amount, "f"),
         format(shares[code].amount, "f"), format(ratio, "f"), line_no)
        for line_no, (code, ratio) in enumerate(sorted(zip(codes, ratios, strict=True)), start=2)
    ]  # fmt: skip
    hierarchy = await mart.fetch("SELECT application_code FROM dim_application_month ORDER BY application_code")
    assert [row["application_code"] for row in hierarchy] == sorted([*codes, "UNALLOCATED"])
    assert context.counters["pools"] == 1


async def test_amounts_wider_than_the_decimal_context_are_summed_exactly(mart: Mart) -> None:
    # 38 significant digits (below 10^15, the largest amount accepted): a running total in Python's default
    # 28-digit context would round, disagree with PostgreSQL's exact sum, and fail the conservation check.
    wide = "123456789012345.67890123456789012345678"
    await mart.land("cmdb", "application", [application("APP-A")])
    await mart.land("cmdb", "cost", [cost("2026-03-02", "APP-A", wide), cost("2026-03-03", "APP-A", "0.000000001")])
    await mart.land("finance", "shared_cost", [pool(MARCH, "wide", "98765432109876.54")])
    await add_rule(mart, "even-split", "wide", "even")

    context = await mart.run()

    assert context.counters["rejected"] == 0, await mart.fetch("SELECT reason FROM batch_rejection")
    [control] = await mart.fetch("SELECT source_billed, pool_amount FROM fact_period_control")
    assert control["source_billed"] == D("123456789012345.67890123556789012345678")  # wide + 0.000000001
    assert control["pool_amount"] == D("98765432109876.54")
    [indirect] = await mart.fetch("SELECT sum(billed_cost) AS total FROM fact_consumption WHERE cost_type = 'indirect'")
    assert indirect["total"] == D("98765432109876.54")


async def test_a_provider_that_is_not_text_keeps_its_own_code(mart: Mart) -> None:
    await mart.land("cmdb", "application", [application("APP-A")])
    # A missing provider falls back to the source; a number is a provider code of its own, whichever comes first.
    await mart.land(
        "cmdb",
        "cost",
        [cost("2026-03-02", "APP-A", "1.00", provider=None), cost("2026-03-03", "APP-A", "2.00", provider=42)],
    )

    await mart.run()

    rows = await mart.fetch("SELECT period, provider FROM fact_consumption WHERE cost_type = 'direct' ORDER BY period")
    assert [(f"{row['period']:%d}", row["provider"]) for row in rows] == [("02", "cmdb"), ("03", "42")]


async def land_two_months_with_bad_lines(mart: Mart) -> None:
    """January and March, each with mapped, unallocated and rejected lines, and one line of no month."""
    await mart.land("cmdb", "application", [application("APP-A")])
    await mart.land(
        "cmdb",
        "cost",
        [
            cost("2026-01-05", "APP-A", "10.00"),
            cost("2026-01-06", "APP-A", "20.00", service_category="Mainframe"),  # defaulted to Other
            cost("2026-01-06", "GHOST", "1.00"),
            cost("2026-01-07", None, "2.00"),
            cost("2026-01-07", "APP-A", "12,50"),
            cost("2026-01-08", "APP-A", "5.00", currency="euro"),
            cost("2026-03-02", "APP-A", "30.00"),
            cost("2026-03-02", "GHOST", "3.00"),
            cost("2026-03-03", "PHANTOM", "4.00"),
            cost("2026-03-03", "APP-A", "NaN"),
            cost("2026-03-04", "APP-A", "1,5"),
            cost("2026-03-04", "APP-A", 1.5),  # a JSON float: money travels as decimal strings
            cost("2026-02-30", "APP-A", "6.00"),  # no such day: the line has no month
        ],
    )
    await mart.land("finance", "shared_cost", [pool(MARCH, "network", "10.005")])
    await mart.land("finance", "usage_driver", [driver(MARCH, "NOBODY", "requests", "3")])


async def rejections(mart: Mart) -> list[tuple[object, ...]]:
    """The stored rejections as (month, kind, reason code, reason, run id), in a stable order."""
    rows = await mart.fetch(
        "SELECT period_month, kind, reason_code, reason, run_id FROM batch_rejection"
        " ORDER BY period_month NULLS FIRST, kind, reason_code, reason"
    )
    return [tuple(row.values()) for row in rows]


async def test_a_one_month_run_counts_and_stores_only_that_month(mart: Mart) -> None:
    await land_two_months_with_bad_lines(mart)

    january = await mart.run(period="2026-01")

    counters = january.counters
    assert (january.read, counters["mapped"], counters["unallocated"], january.rejected) == (6, 2, 2, 2)
    assert counters["unallocated_missing_application"] == counters["unallocated_unknown_application"] == 1
    assert counters["service_category_defaulted"] == 1
    assert counters["rejected_by_reason"] == {"invalid_amount": 1, "invalid_currency": 1}
    assert counters["environments"] == ["prod"]
    # March's six lines, its pool and its driver; the line of no month is left to a run of every month.
    assert (counters["skipped_other_periods"], counters["skipped_undated"]) == (8, 1)
    # The run record agrees with the month's own control totals.
    controls = await mart.fetch("SELECT * FROM fact_period_control WHERE period_month = '2026-01-01'")
    assert sum(row["lines_read"] for row in controls) == counters["mapped"] + counters["unallocated"]
    assert sum(row["lines_rejected"] for row in controls) == january.rejected
    first_rejections = [
        (date(2026, 1, 1), "cost", "invalid_amount", "unparsable billed_cost '12,50'", january.run_id),
        (date(2026, 1, 1), "cost", "invalid_currency", "invalid currency 'euro'", january.run_id),
    ]
    assert await rejections(mart) == first_rejections

    # A run of every month also counts (once) the line of no month; it stores each rejection once.
    everything = await mart.run()
    assert (everything.read, everything.rejected) == (13, 8)
    assert everything.counters["rejected_by_reason"] == {
        "invalid_amount": 4, "invalid_currency": 1, "invalid_date": 1, "fractional_cents": 1, "unknown_application": 1,
    }  # fmt: skip
    assert everything.counters["unallocated_unknown_application"] == 3
    assert (everything.counters["skipped_other_periods"], everything.counters["skipped_undated"]) == (0, 0)
    stored = await rejections(mart)
    assert len(stored) == 8
    assert {row[4] for row in stored} == {everything.run_id}

    # Reruns replace what they rebuild: a month's rejections with the month, and never store one twice.
    again = await mart.run(period="2026-01")
    assert again.counters["rejected_by_reason"] == january.counters["rejected_by_reason"]
    after = await rejections(mart)
    assert [row[:4] for row in after] == [row[:4] for row in stored]
    assert {row[4] for row in after if row[0] == date(2026, 1, 1)} == {again.run_id}
    assert {row[4] for row in after if row[0] != date(2026, 1, 1)} == {everything.run_id}
    last = await mart.run()
    assert [row[:4] for row in await rejections(mart)] == [row[:4] for row in stored]
    assert {row[4] for row in await rejections(mart)} == {last.run_id}


async def test_rejections_of_the_hierarchy_and_budgets_are_replaced_by_every_run(mart: Mart) -> None:
    await mart.land("cmdb", "application", [application("APP-A"), {**application("APP-B"), "product_code": None}])
    budget = {"version": "B", "year": 2026, "month": 13, "scope_level": "product", "scope_code": "P", "amount": "1"}
    await mart.land("finance", "budget", [budget])
    await mart.land("cmdb", "cost", [cost("2026-03-02", "APP-A", "1.00")])

    first = await mart.run(period=MARCH)
    second = await mart.run(period=MARCH)

    # Both runs rebuilt the whole hierarchy and read every budget: both count their rejections...
    for context in (first, second):
        assert context.counters["rejected_by_reason"] == {"incomplete_application": 1, "invalid_budget_line": 1}
        assert context.rejected == 2
    # ...and the second replaced the first's.
    assert [row[1:] for row in await rejections(mart)] == [
        ("application", "incomplete_application", "product_code is missing", second.run_id),
        ("budget", "invalid_budget_line", "month: expected integer year and month, got 2026-13", second.run_id),
    ]


async def test_many_rejections_wait_for_their_swap_in_unlogged_tables(
    mart: Mart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past COPY_CHUNK rejections a month's wait in a table (not memory); the swap moves them, a rerun too."""
    monkeypatch.setattr(pipeline, "COPY_CHUNK", 2)
    await land_two_months_with_bad_lines(mart)
    await mart.land("cmdb", "cost", [cost("2026-13-01", "APP-A", "1.00"), cost("someday", "APP-A", "1.00")])
    killed = uuid.uuid4().hex[:12]
    await mart.execute(f"CREATE UNLOGGED TABLE finops_stage_rej_202603_{killed} (run_id uuid)")
    await mart.execute(f"CREATE UNLOGGED TABLE finops_stage_rej_undated_{killed} (run_id uuid)")

    first = await mart.run()
    stored = await rejections(mart)
    assert first.rejected == len(stored) == 10
    assert sum(1 for row in stored if row[0] is None) == 3
    assert await mart.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'finops_stage_%'") == []

    second = await mart.run()
    assert [row[:4] for row in await rejections(mart)] == [row[:4] for row in stored]
    assert {row[4] for row in await rejections(mart)} == {second.run_id}


async def test_a_failed_run_records_its_counts_and_keeps_the_previous_rejections(mart: Mart) -> None:
    await land_known_answer_world(mart)
    await mart.land("cmdb", "cost", [cost("2026-03-05", "APP-A", "bad")])
    first = await mart.run()
    stored = await rejections(mart)
    assert [row[2:] for row in stored] == [("invalid_amount", "unparsable billed_cost 'bad'", first.run_id)]
    # March cannot be allocated any more (the fixed rule's new version does not total 100), and has a new bad line.
    await add_rule(
        mart, "fixed-pct", "fixed", "fixed", version=2, valid_from="2026-03-01", targets={"APP-A": "50", "APP-B": "30"}
    )
    await mart.land("cmdb", "cost", [cost("2026-03-06", "GHOST", "1.00"), cost("2026-03-06", "APP-B", "1.0.0")])

    with pytest.raises(RunFailedError) as failure:
        await mart.run()

    [record] = await mart.fetch(
        "SELECT read_count, written_count, rejected_count, counters FROM batch_run WHERE run_id = $1",
        failure.value.run_id,
    )
    counters = json.loads(record["counters"])
    assert (record["read_count"], record["written_count"], record["rejected_count"]) == (6, 0, 2)
    assert (counters["read"], counters["mapped"], counters["unallocated"], counters["rejected"]) == (6, 3, 1, 2)
    assert counters["unallocated_unknown_application"] == 1
    assert counters["rejected_by_reason"] == {"invalid_amount": 2}
    assert counters["periods"] == []  # no month was swapped in
    # March was not swapped: its rejections are still those of the run that built the March the mart holds.
    assert await rejections(mart) == stored


async def test_a_runs_rejections_are_read_by_finops_admins_page_by_page_or_as_csv(
    mart: Mart, identity_server: Any, auth_headers: Callable[..., dict[str, str]]
) -> None:
    await land_two_months_with_bad_lines(mart)
    march = await mart.run(period=MARCH)
    landed = {document.content_hash: document.payload async for document in mart.store.stream()}
    path = f"{API}/batch/runs/{march.run_id}/rejections"
    admin = auth_headers("Rosetta_FinOps_Admin", subject="fiona")

    async for client, _ in finops_client(finops_settings(mart.urls, identity_server.entra)):
        # Payloads are raw documents: not for every reader of the mart.
        forbidden = await client.get(path, headers=auth_headers("Rosetta_User", subject="uma"))
        assert forbidden.status_code == 403, forbidden.text
        items: list[dict[str, Any]] = []
        next_page: str | None = f"{path}?limit=2"
        while next_page is not None:
            response = await client.get(next_page, headers=admin)
            assert response.status_code == 200, response.text
            assert len(response.json()["items"]) <= 2
            items.extend(response.json()["items"])
            next_page = response.json()["next"]
        assert sorted((item["kind"], item["reasonCode"], item["reason"]) for item in items) == [
            ("cost", "invalid_amount", "billed_cost 'NaN' is not a finite amount"),
            ("cost", "invalid_amount", "billed_cost 1.5 is not a decimal string"),
            ("cost", "invalid_amount", "unparsable billed_cost '1,5'"),
            ("shared_cost", "fractional_cents", "pool amount 10.005 is not a whole number of cents"),
            ("usage_driver", "unknown_application", "unknown application 'NOBODY'"),
        ]
        assert len({item["id"] for item in items}) == 5
        for item in items:
            assert (item["runId"], item["period"]) == (str(march.run_id), MARCH)
            assert item["source"] == ("cmdb" if item["kind"] == "cost" else "finance")
            assert item["payload"] == landed[item["contentHash"]]

        exported = await client.get(path, headers={**admin, "Accept": "text/csv"})
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert sorted(row["id"] for row in rows) == sorted(str(item["id"]) for item in items)
        # Columns are fixed by the schema: the payload, a map of whatever the source sent, is one JSON cell.
        assert list(rows[0]) == [
            "id", "runId", "reasonCode", "reason", "period", "source", "kind", "contentHash", "payload", "rejectedAt"
        ]  # fmt: skip
        by_id = {str(item["id"]): item for item in items}
        assert all(json.loads(row["payload"]) == by_id[row["id"]]["payload"] for row in rows)

        unknown = await client.get(f"{API}/batch/runs/{uuid.uuid4()}/rejections", headers=admin)
        assert unknown.status_code == 404, unknown.text


async def test_an_amount_of_ten_to_the_fifteen_or_more_is_rejected_not_allocated(mart: Mart) -> None:
    await mart.land("cmdb", "application", [application("APP-A"), application("APP-B")])
    await mart.land(
        "cmdb",
        "cost",
        [
            cost("2026-03-02", "APP-A", "1e400"),  # finite, but no currency has that much money
            cost("2026-03-02", "APP-A", "-1000000000000000"),
            cost("2026-03-02", "APP-A", "999999999999999.99"),  # the largest accepted order of magnitude
            cost("2026-03-02", "APP-B", "1.00"),
        ],
    )
    await mart.land("finance", "shared_cost", [pool(MARCH, "network", "100.00")])
    await add_rule(mart, "by-direct", "network", "direct_cost")

    context = await mart.run()

    rejected = await mart.fetch("SELECT reason_code, reason FROM batch_rejection ORDER BY reason")
    assert [(row["reason_code"], row["reason"]) for row in rejected] == [
        ("invalid_amount", "billed_cost '-1000000000000000' is out of range (at least 10^15)"),
        ("invalid_amount", "billed_cost '1e400' is out of range (at least 10^15)"),
    ]
    assert context.rejected == 2
    # The pool is split over what was accepted, not swallowed by an absurd line.
    shares = await mart.fetch(
        "SELECT application_code, billed_cost FROM fact_consumption WHERE cost_type = 'indirect' ORDER BY 1"
    )
    assert [(row["application_code"], row["billed_cost"]) for row in shares] == [
        ("APP-A", D("100.00")),
        ("APP-B", D("0.00")),
    ]

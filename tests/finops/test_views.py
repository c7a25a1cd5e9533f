"""The dashboard views rebuilt beside the live ones and swapped in (rosetta.finops.views, ADR 0007)."""

from __future__ import annotations

import uuid

from batch_support import Mart, application, cost

from rosetta.finops.pipeline import MATERIALIZED_VIEWS
from rosetta.finops.views import rebuild_views

INDEXES = (
    "SELECT tablename, indexname, indexdef FROM pg_indexes"
    " WHERE tablename LIKE 'mv\\_finops\\_%' ORDER BY tablename, indexname"
)
MONTHLY = "SELECT * FROM mv_finops_cost_monthly ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14"


async def land_two_applications(mart: Mart) -> None:
    await mart.land("cmdb", "application", [application("APP-A"), application("APP-B")])
    await mart.land("cmdb", "cost", [cost("2026-03-02", "APP-A", "10.00"), cost("2026-04-02", "APP-B", "20.00")])


async def test_a_run_swaps_in_new_views_keeping_their_indexes_grants_and_comment(mart: Mart) -> None:
    await land_two_applications(mart)
    await mart.run()
    indexes = await mart.fetch(INDEXES)
    assert {"uq_mv_finops_cost_monthly", "uq_mv_finops_cost_daily"} <= {row["indexname"] for row in indexes}
    role = f"finops_reader_{uuid.uuid4().hex[:8]}"
    await mart.execute(f"CREATE ROLE {role}")
    try:
        await mart.execute(f"GRANT SELECT ON mv_finops_cost_monthly TO {role}")
        await mart.execute("COMMENT ON MATERIALIZED VIEW mv_finops_cost_monthly IS 'what the dashboards read'")
        await mart.land("cmdb", "cost", [cost("2026-03-09", "APP-B", "5.00")])

        context = await mart.run()

        assert context.counters["views"] == "swapped"
        rows = await mart.fetch(
            "SELECT application_code, sum(billed_cost) AS billed FROM mv_finops_cost_monthly"
            " WHERE period = DATE '2026-03-01' GROUP BY 1 ORDER BY 1"
        )
        assert [(row["application_code"], str(row["billed"])) for row in rows] == [
            ("APP-A", "10.00"),
            ("APP-B", "5.00"),
        ]
        assert await mart.fetch(INDEXES) == indexes  # same names, same definitions, on the live names
        [privileges] = await mart.fetch(
            "SELECT has_table_privilege($1, 'mv_finops_cost_monthly', 'SELECT') AS can_read,"
            " obj_description('mv_finops_cost_monthly'::regclass, 'pg_class') AS comment",
            role,
        )
        assert privileges["can_read"] is True
        assert privileges["comment"] == "what the dashboards read"
        # Built analyzed and vacuumed, with autovacuum off (never modified, only replaced by the next run).
        [stats] = await mart.fetch(
            "SELECT reltuples, relallvisible, reloptions, (SELECT count(*) FROM mv_finops_cost_monthly) AS rows"
            " FROM pg_class WHERE relname = 'mv_finops_cost_monthly'"
        )
        assert stats["reltuples"] == stats["rows"] == 3
        assert stats["relallvisible"] == 1
        assert stats["reloptions"] == ["autovacuum_enabled=false"]
        assert await mart.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'finops\\_next\\_%'") == []
    finally:
        await mart.execute(f"REVOKE ALL ON mv_finops_cost_monthly FROM {role}")
        await mart.execute(f"DROP ROLE {role}")


async def test_views_can_be_read_while_they_are_rebuilt_and_a_busy_view_falls_back_to_refresh(mart: Mart) -> None:
    await land_two_applications(mart)
    await mart.run()
    await mart.execute("UPDATE dim_application_month SET name = 'Renamed' WHERE application_code = 'APP-A'")
    before = await mart.fetch(MONTHLY)
    reader, work, builder = await mart.connect(), await mart.connect(), await mart.connect()
    try:
        # A reader inside a transaction on the view holds its lock for as long as it likes.
        transaction = reader.transaction()
        await transaction.start()
        assert await reader.fetch(MONTHLY) == before
        outcome = await rebuild_views(
            work, [work, builder], MATERIALIZED_VIEWS, tag="test", lock_timeout="100ms", attempts=2
        )
        # The swap gave up rather than block the reader (and everyone queued behind it); the views are
        # refreshed concurrently instead, which readers never wait for.
        assert outcome == "refreshed concurrently"
        # Still in its transaction, the reader's next statement answers at once, with the refreshed rows.
        after = await reader.fetch(MONTHLY)
        await transaction.rollback()
    finally:
        for connection in (reader, work, builder):
            await connection.close()
    assert {row["application_name"] for row in before if row["application_code"] == "APP-A"} == {"App APP-A"}
    assert {row["application_name"] for row in after if row["application_code"] == "APP-A"} == {"Renamed"}
    assert [row["billed_cost"] for row in after] == [row["billed_cost"] for row in before]
    assert await mart.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'finops\\_next\\_%'") == []


async def test_the_twins_of_a_killed_rebuild_are_dropped_by_the_next_one(mart: Mart) -> None:
    await land_two_applications(mart)
    await mart.run()
    # What a run killed between building its twins and swapping them leaves behind.
    await mart.execute("CREATE MATERIALIZED VIEW finops_next_0123456789ab_0 AS SELECT 1 AS one")
    await mart.execute("UPDATE dim_application_month SET name = 'Renamed' WHERE application_code = 'APP-B'")
    work, builder = await mart.connect(), await mart.connect()
    try:
        assert await rebuild_views(work, [work, builder], MATERIALIZED_VIEWS, tag="next") == "swapped"
    finally:
        await work.close()
        await builder.close()
    assert await mart.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'finops\\_next\\_%'") == []
    [row] = await mart.fetch(
        "SELECT DISTINCT application_name FROM mv_finops_cost_monthly WHERE application_code = 'APP-B'"
    )
    assert row["application_name"] == "Renamed"

"""The batch run framework: run records, counters, step durations, the per-job lock, the launcher."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import pytest
from sqlalchemy import text

from rosetta.batch.launcher import InProcessLauncher
from rosetta.batch.progress import JsonLinesProgress
from rosetta.batch.runner import JobLockedError, JobSpec, RunContext, RunFailedError, execute
from rosetta.core import runs
from rosetta.core.db import Databases
from rosetta.core.errors import ConflictError
from rosetta.core.settings import Settings


def _job(name: str, body: object) -> JobSpec:
    return JobSpec(name=name, database="finops", body=body)  # type: ignore[arg-type]


async def test_a_second_concurrent_run_is_refused(databases: Databases, settings: Settings) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(context: RunContext) -> None:
        async with context.step("wait"):
            started.set()
            await release.wait()
        context.read, context.written = 3, 2

    job = _job(f"lock-probe-{uuid.uuid4().hex[:8]}", slow)
    first = asyncio.create_task(execute(job, {"period": "2026-01"}, databases=databases, settings=settings))
    await started.wait()
    with pytest.raises(JobLockedError, match="in progress"):
        await execute(job, {}, databases=databases, settings=settings)
    release.set()
    context = await first
    # Once the first run is over, the lock is free again.
    again = await execute(_job(job.name, lambda _ctx: asyncio.sleep(0)), {}, databases=databases, settings=settings)

    async with databases.unit_of_work("finops") as session:
        record = await runs.get_run(session, context.run_id)
        later = await runs.get_run(session, again.run_id)
    assert record is not None
    assert later is not None
    assert record["status"] == "succeeded"
    assert (record["read_count"], record["written_count"]) == (3, 2)
    assert record["parameters"] == {"period": "2026-01"}
    assert [step["name"] for step in record["steps"]] == ["wait"]
    assert record["started_at"] <= record["finished_at"]
    assert record["finished_at"].tzinfo is not None
    assert later["status"] == "succeeded"


async def test_a_failing_job_is_recorded_with_its_error(databases: Databases, settings: Settings) -> None:
    async def broken(context: RunContext) -> None:
        async with context.step("load"):
            context.read = 10
            raise ValueError("amount 'abc' is not a number")

    with pytest.raises(RunFailedError) as caught:
        await execute(_job(f"fail-probe-{uuid.uuid4().hex[:8]}", broken), {}, databases=databases, settings=settings)
    async with databases.unit_of_work("finops") as session:
        record = await runs.get_run(session, caught.value.run_id)
    assert record is not None
    assert record["status"] == "failed"
    assert "amount 'abc' is not a number" in record["error"]
    assert record["read_count"] == 10
    assert record["steps"][0]["outcome"] == "failed"


async def test_launcher_queues_then_runs_in_the_background(databases: Databases, settings: Settings) -> None:
    ran: list[uuid.UUID] = []

    async def body(context: RunContext) -> None:
        ran.append(context.run_id)
        context.written = 1

    name = f"launch-probe-{uuid.uuid4().hex[:8]}"
    launcher = InProcessLauncher({name: _job(name, body)}, settings)
    run_id = await launcher.launch(name, {"period": "2026-02"}, requested_by="alice")
    await launcher.wait()
    async with databases.unit_of_work("finops") as session:
        record = await runs.get_run(session, run_id)
        listed = await runs.list_runs(session, job=name)
    assert ran == [run_id]
    assert record is not None
    assert record["status"] == "succeeded"
    assert record["requested_by"] == "alice"
    assert [row["run_id"] for row in listed] == [run_id]


async def _queued(databases: Databases, job: str, *, minutes_ago: int) -> uuid.UUID:
    """A run queued ``minutes_ago`` by a launcher (its pod or task not started)."""
    async with databases.unit_of_work("finops") as session:
        run_id = await runs.create_run(session, job=job, parameters={}, requested_by="alice")
        await session.execute(
            text("UPDATE batch_run SET queued_at = now() - make_interval(mins => :minutes) WHERE run_id = :run_id"),
            {"minutes": minutes_ago, "run_id": run_id},
        )
    return run_id


async def test_queued_runs_that_never_started_expire_at_the_next_run_or_launch(
    databases: Databases, settings: Settings
) -> None:
    name = f"expiry-probe-{uuid.uuid4().hex[:8]}"
    other = f"other-probe-{uuid.uuid4().hex[:8]}"
    expiring = settings.model_copy(update={"batch_queue_expiry_seconds": 1800})
    stale = await _queued(databases, name, minutes_ago=31)
    recent = await _queued(databases, name, minutes_ago=29)
    late = await _queued(databases, name, minutes_ago=45)  # its pod starts now, late: it runs
    elsewhere = await _queued(databases, other, minutes_ago=600)

    context = await execute(
        _job(name, lambda _ctx: asyncio.sleep(0)), {}, databases=databases, settings=expiring, run_id=late
    )

    async with databases.unit_of_work("finops") as session:
        records = {run_id: await runs.get_run(session, run_id) for run_id in (stale, recent, late, elsewhere)}
    assert context.run_id == late
    assert {run_id: record["status"] for run_id, record in records.items() if record} == {
        stale: "failed",
        recent: "queued",
        late: "succeeded",
        elsewhere: "queued",  # another job's queue is that job's to judge
    }
    assert records[stale] is not None
    assert records[stale]["error"].startswith("expired: not started within 1800 s of being queued")
    assert records[stale]["finished_at"] is not None
    assert records[stale]["started_at"] is None

    # A launch judges the queue too: the run queued 29 minutes ago has waited too long by now (for this test,
    # the expiry is shortened below its age rather than the test waiting).
    launcher = InProcessLauncher(
        {name: _job(name, lambda _ctx: asyncio.sleep(0))},
        settings.model_copy(update={"batch_queue_expiry_seconds": 1200}),
    )
    launched = await launcher.launch(name, {}, requested_by="bob")
    await launcher.wait()
    async with databases.unit_of_work("finops") as session:
        expired, new = await runs.get_run(session, recent), await runs.get_run(session, launched)
    assert expired is not None
    assert new is not None
    assert (expired["status"], new["status"]) == ("failed", "succeeded")
    assert expired["error"].startswith("expired: not started within 1200 s")


async def test_a_launched_run_whose_pod_died_is_taken_over_by_the_retry(
    databases: Databases, settings: Settings
) -> None:
    name = f"retry-probe-{uuid.uuid4().hex[:8]}"
    async with databases.unit_of_work("finops") as session:
        launched = await runs.create_run(session, job=name, parameters={"period": "2026-02"}, requested_by="alice")
        other_dead = await runs.create_run(session, job=name, parameters={}, status="running")
    async with databases.unit_of_work("finops") as session:
        # The first pod started it, then was evicted by a node drain: the record says running, no lock is held.
        assert await runs.start_launched(session, launched) == 1

    seen: list[object] = []

    async def body(context: RunContext) -> None:
        seen.append(context.parameters)
        context.read = 7

    context = await execute(
        _job(name, body), {"period": "2026-02"}, databases=databases, settings=settings, run_id=launched
    )

    async with databases.unit_of_work("finops") as session:
        record, other = await runs.get_run(session, launched), await runs.get_run(session, other_dead)
    assert context.run_id == launched
    assert seen == [{"period": "2026-02"}]
    assert record is not None
    assert other is not None
    assert (record["status"], record["read_count"], record["counters"]) == ("succeeded", 7, {"attempts": 2})
    # The retry holds the job's lock: every other run still "running" is dead, and only this one is its to resume.
    assert other["status"] == "failed"
    assert other["error"].startswith("abandoned:")

    # Ended, it is never run again, even by a pod that gets past the first check just before it ends.
    with pytest.raises(ConflictError, match=f"{name} run {launched} is succeeded, not queued"):
        await execute(_job(name, body), {}, databases=databases, settings=settings, run_id=launched)
    assert len(seen) == 1


async def test_a_second_pod_of_a_running_launched_run_leaves_it_running(
    databases: Databases, settings: Settings
) -> None:
    name = f"twin-pod-probe-{uuid.uuid4().hex[:8]}"
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(context: RunContext) -> None:
        started.set()
        await release.wait()

    async with databases.unit_of_work("finops") as session:
        launched = await runs.create_run(session, job=name, parameters={}, requested_by="alice")
    first = asyncio.create_task(execute(_job(name, slow), {}, databases=databases, settings=settings, run_id=launched))
    await started.wait()
    with pytest.raises(JobLockedError):
        await execute(_job(name, slow), {}, databases=databases, settings=settings, run_id=launched)
    async with databases.unit_of_work("finops") as session:
        during = await runs.get_run(session, launched)
    release.set()
    await first
    async with databases.unit_of_work("finops") as session:
        after = await runs.get_run(session, launched)
    assert during is not None
    assert after is not None
    assert during["status"] == "running"  # not failed by the pod that could not take the lock
    assert (after["status"], after["counters"]) == ("succeeded", {})


async def test_the_lock_connection_has_the_server_probe_a_lost_client(databases: Databases) -> None:
    async with databases.engines["finops"].connect() as connection:
        assert await runs.try_lock_job(connection, f"keepalive-probe-{uuid.uuid4().hex[:8]}")
        over_tcp = (await connection.execute(text("SELECT inet_client_addr() IS NOT NULL"))).scalar_one()
        settings = {
            row.name: (row.setting, row.source)
            for row in await connection.execute(
                text("SELECT name, setting, source FROM pg_settings WHERE name LIKE 'tcp\\_keepalives\\_%'")
            )
        }
        await connection.rollback()
    # Set for the session; over a Unix socket PostgreSQL ignores them and reads 0, over TCP they apply.
    expected = {"tcp_keepalives_idle": "60", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "6"}
    assert settings == {name: (value if over_tcp else "0", "session") for name, value in expected.items()}


def test_json_progress_lines_are_parseable() -> None:
    stream = io.StringIO()
    progress = JsonLinesProgress(stream, run_id="r1")
    progress.start_step("load", total=3)
    progress.advance(3)
    progress.end_step("load")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [event["event"] for event in events] == ["step_started", "step_finished"]
    assert events[-1]["done"] == 3
    assert all(event["run_id"] == "r1" for event in events)


def test_overlapping_steps_finish_under_their_own_names() -> None:
    stream = io.StringIO()
    progress = JsonLinesProgress(stream)
    progress.start_step("build 2026-01")
    progress.start_step("build 2026-02", total=5)
    progress.advance(5)  # counts for the most recently started open step
    progress.end_step("build 2026-01")
    progress.end_step("build 2026-02")
    finished = [json.loads(line) for line in stream.getvalue().splitlines()][-2:]
    assert [(event["step"], event["done"], event["total"]) for event in finished] == [
        ("build 2026-01", 0, None),
        ("build 2026-02", 5, 5),
    ]


async def test_a_run_left_running_by_a_dead_process_is_recorded_abandoned_by_the_next(
    databases: Databases, settings: Settings
) -> None:
    name = f"abandon-probe-{uuid.uuid4().hex[:8]}"
    other = f"other-probe-{uuid.uuid4().hex[:8]}"
    async with databases.unit_of_work("finops") as session:
        # What a killed process leaves: a record that says running, and no lock (it died with the connection).
        dead = await runs.create_run(session, job=name, parameters={}, status="running")
        elsewhere = await runs.create_run(session, job=other, parameters={}, status="running")
        waiting = await runs.create_run(session, job=name, parameters={})

    context = await execute(_job(name, lambda _ctx: asyncio.sleep(0)), {}, databases=databases, settings=settings)

    async with databases.unit_of_work("finops") as session:
        records = {run_id: await runs.get_run(session, run_id) for run_id in (dead, elsewhere, waiting, context.run_id)}
    assert records[dead] is not None
    assert records[dead]["status"] == "failed"
    assert records[dead]["error"].startswith("abandoned:")
    assert records[dead]["finished_at"] is not None
    # Another job's run, and a run still queued for a launcher's pod, are not this run's to judge.
    assert records[elsewhere]["status"] == "running"
    assert records[waiting]["status"] == "queued"
    assert records[context.run_id]["status"] == "succeeded"

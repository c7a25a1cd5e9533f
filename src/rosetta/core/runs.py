"""Batch-run records, shared by every context database, and the launcher seam an API uses to start a run.

Each context that runs batches declares the table in its own metadata with :func:`batch_run_table`, so the
run record lives in the database the job writes to (one transaction can never span two databases). The
functions here generate SQL from an identical private definition, so they work against any of them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from rosetta.core.db import new_metadata
from rosetta.core.errors import ConflictError, NotFoundError

RunStatus = Literal["queued", "running", "succeeded", "failed"]
RUN_STATUSES: tuple[RunStatus, ...] = ("queued", "running", "succeeded", "failed")


def batch_run_table(metadata: MetaData) -> Table:
    """Declare the ``batch_run`` table in a context's metadata (and so in its alembic tree)."""
    return Table(
        "batch_run",
        metadata,
        Column("run_id", Uuid, primary_key=True),
        Column("job", String(64), nullable=False),
        Column("parameters", JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="{}"),
        Column("status", String(16), nullable=False),
        Column("requested_by", String(255), nullable=True),
        Column("queued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("started_at", DateTime(timezone=True), nullable=True),
        Column("finished_at", DateTime(timezone=True), nullable=True),
        Column("read_count", BigInteger, nullable=False, server_default="0"),
        Column("written_count", BigInteger, nullable=False, server_default="0"),
        Column("rejected_count", BigInteger, nullable=False, server_default="0"),
        # Job-specific counters (mapped, unallocated...) and per-step durations in seconds.
        Column("counters", JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="{}"),
        Column("steps", JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="[]"),
        Column("error", Text, nullable=True),
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="status"),
        Index(None, "job", "queued_at"),
    )


_runs = batch_run_table(new_metadata())


def advisory_lock_key(job: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` derived from the job name."""
    digest = hashlib.sha256(f"rosetta.batch.{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def try_lock_job(connection: AsyncConnection, job: str) -> bool:
    """Take the session-level advisory lock of ``job`` on this connection; False if another run holds it.

    The lock lives as long as the connection: a crashed run releases it when its connection drops.
    """
    # A process that dies closes its socket and PostgreSQL frees the lock at once; a lost node never closes it,
    # and the server would keep the lock until the kernel's TCP keepalive gives up (over two hours by default),
    # refusing the run Kubernetes starts elsewhere (exit 3). Probing this idle connection after 60 s of silence,
    # every 10 s, 6 times, frees it within about two minutes, before a lost node's pods are replaced (five
    # minutes by default). PostgreSQL ignores these on a Unix socket, whose peer cannot vanish that way.
    await connection.execute(
        text(
            "SELECT set_config('tcp_keepalives_idle', '60', false), set_config('tcp_keepalives_interval', '10', false),"
            " set_config('tcp_keepalives_count', '6', false)"
        )
    )
    result = await connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_lock_key(job)})
    return bool(result.scalar_one())


async def unlock_job(connection: AsyncConnection, job: str) -> None:
    """Release the advisory lock taken by :func:`try_lock_job`."""
    await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_lock_key(job)})


async def refuse_if_active(session: AsyncSession, job: str) -> None:
    """A ``ConflictError`` naming the run of ``job`` that is queued, or running under the job's lock.

    For launchers, before they queue a run: a second run would only wait for the first one's lock and fail, so
    the caller hears it now (409) rather than from a run record later. Two launches at once are serialised by a
    transaction-level advisory lock, so they cannot both pass. A run recorded ``running`` whose job lock is
    free died without recording its end: it does not block (the next run records it abandoned).
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_lock_key(f"launch:{job}")})
    active = (
        await session.execute(
            select(_runs.c.run_id, _runs.c.status, _runs.c.queued_at, _runs.c.started_at)
            .where(_runs.c.job == job, _runs.c.status.in_(("queued", "running")))
            .order_by(_runs.c.queued_at)
        )
    ).all()
    queued = next((row for row in active if row.status == "queued"), None)
    if queued is not None:
        raise ConflictError(
            f"run {queued.run_id} of {job} is queued since {queued.queued_at:%Y-%m-%dT%H:%M:%SZ} and runs next;"
            " follow it, or trigger again once it has ended",
            extra={"runId": str(queued.run_id)},
        )
    running = next((row for row in active if row.status == "running"), None)
    if running is None:
        return
    key = {"key": advisory_lock_key(job)}
    if (await session.execute(text("SELECT pg_try_advisory_lock(:key)"), key)).scalar_one():
        await session.execute(text("SELECT pg_advisory_unlock(:key)"), key)
        return
    started = running.started_at or running.queued_at
    raise ConflictError(
        f"run {running.run_id} of {job} is running since {started:%Y-%m-%dT%H:%M:%SZ}; trigger again once it has ended",
        extra={"runId": str(running.run_id)},
    )


async def create_run(
    session: AsyncSession,
    *,
    job: str,
    parameters: Mapping[str, Any],
    status: RunStatus = "queued",
    requested_by: str | None = None,
    run_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert a run record and return its ``run_id``."""
    run_id = run_id or uuid.uuid4()
    now = datetime.now(UTC)
    await session.execute(
        insert(_runs).values(
            run_id=run_id,
            job=job,
            parameters=dict(parameters),
            status=status,
            requested_by=requested_by,
            queued_at=now,
            started_at=now if status == "running" else None,
        )
    )
    return run_id


async def abandon_running(session: AsyncSession, job: str, *, keep: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Record as failed every run of ``job`` still marked running, but ``keep``; return their ids.

    Call it holding the job's lock: no run of the job can then be alive, so a ``running`` record is one whose
    process died before it could record its end (killed, out of memory, its node lost). Left alone, such a
    record would say "running" forever. ``keep`` is a launched run whose Job retries it in a new pod.
    """
    query = update(_runs).where(_runs.c.job == job, _runs.c.status == "running")
    if keep is not None:
        query = query.where(_runs.c.run_id != keep)
    result = await session.execute(
        query.values(
            status="failed",
            finished_at=datetime.now(UTC),
            error="abandoned: its process ended without recording an outcome (killed, out of memory or node lost)",
        ).returning(_runs.c.run_id)
    )
    return [row[0] for row in result]


async def expire_queued(
    session: AsyncSession, job: str, *, older_than: timedelta, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Record as failed every run of ``job`` queued more than ``older_than`` ago and never started.

    A launched run that never began (its Kubernetes Job's pod never scheduled or pulled, its in-process task lost
    with a restarted API process) would otherwise say "queued" forever. ``keep`` is the run about to start: late,
    but starting. A run expired here whose pod starts after all is refused (``batch --run-id`` never takes a run
    that ended), so it can never run under a record that says it failed.
    """
    now = datetime.now(UTC)
    query = (
        update(_runs)
        .where(_runs.c.job == job, _runs.c.status == "queued", _runs.c.queued_at < now - older_than)
        .values(
            status="failed",
            finished_at=now,
            error=(
                f"expired: not started within {int(older_than.total_seconds())} s of being queued (no pod of its"
                " Kubernetes Job started the batch, or the API process that was to run it restarted; see the"
                " Job's events and the launcher's logs)"
            ),
        )
        .returning(_runs.c.run_id)
    )
    if keep is not None:
        query = query.where(_runs.c.run_id != keep)
    return [row[0] for row in await session.execute(query)]


async def start_launched(session: AsyncSession, run_id: uuid.UUID) -> int:
    """Start the launched run ``run_id`` in this process; return its attempt number (1, then 2, ...).

    Call it holding the job's lock. A queued run becomes ``running``. A run already ``running`` was started by a
    process that died without recording its end (its pod evicted by a node drain, killed for memory): its Job
    runs it again in a new pod, and this attempt takes it over, counted in ``counters.attempts``. Any other
    status (ended, or expired while this pod waited) raises ``ConflictError``: a run that ended never runs again.
    """
    query = select(_runs.c.status, _runs.c.counters).where(_runs.c.run_id == run_id).with_for_update()
    record = (await session.execute(query)).mappings().first()
    if record is None:
        raise NotFoundError(f"no run {run_id}")
    if record["status"] == "queued":
        await session.execute(
            update(_runs).where(_runs.c.run_id == run_id).values(status="running", started_at=datetime.now(UTC))
        )
        return 1
    if record["status"] != "running":
        raise ConflictError(f"run {run_id} is {record['status']}, not queued: it is not run again")
    attempt = int((record["counters"] or {}).get("attempts", 1)) + 1
    # Recorded at once, so an attempt that dies too is counted by the next one.
    await session.execute(
        update(_runs)
        .where(_runs.c.run_id == run_id)
        .values(counters={**(record["counters"] or {}), "attempts": attempt}, steps=[])
    )
    return attempt


async def fail_if_queued(session: AsyncSession, run_id: uuid.UUID, *, error: str) -> None:
    """Record a launched run failed if it has not started (a run another process is running is left alone)."""
    await session.execute(
        update(_runs)
        .where(_runs.c.run_id == run_id, _runs.c.status == "queued")
        .values(status="failed", finished_at=datetime.now(UTC), error=error)
    )


async def finish_run(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    status: Literal["succeeded", "failed"],
    read: int = 0,
    written: int = 0,
    rejected: int = 0,
    counters: Mapping[str, Any] | None = None,
    steps: list[dict[str, Any]] | None = None,
    error: str | None = None,
) -> None:
    """Record the outcome, counters and step durations of a run."""
    await session.execute(
        update(_runs)
        .where(_runs.c.run_id == run_id)
        .values(
            status=status,
            finished_at=datetime.now(UTC),
            read_count=read,
            written_count=written,
            rejected_count=rejected,
            counters=dict(counters or {}),
            steps=list(steps or []),
            error=error,
        )
    )


async def get_run(session: AsyncSession, run_id: uuid.UUID) -> dict[str, Any] | None:
    """One run record as a mapping, or ``None``."""
    row = (await session.execute(select(_runs).where(_runs.c.run_id == run_id))).mappings().first()
    return dict(row) if row else None


async def list_runs(
    session: AsyncSession,
    *,
    job: str | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[dict[str, Any]]:
    """Runs newest first, keyset-paginated on ``(queued_at, run_id)``."""
    query = select(_runs).order_by(_runs.c.queued_at.desc(), _runs.c.run_id.desc()).limit(limit)
    if job is not None:
        query = query.where(_runs.c.job == job)
    if before is not None:
        query = query.where(tuple_(_runs.c.queued_at, _runs.c.run_id) < tuple_(*before))
    return [dict(row) for row in (await session.execute(query)).mappings()]


class RunLauncher(Protocol):
    """Starts a batch run on behalf of an API call and returns its ``run_id`` at once.

    The in-process launcher (``rosetta.batch.launcher``) serves development; in Kubernetes a launcher
    creates a Job from the job's CronJob. An app receives its launcher at composition time.
    """

    async def launch(self, job: str, parameters: Mapping[str, Any], *, requested_by: str) -> uuid.UUID:
        """Queue ``job`` with ``parameters`` and start it; return the queued run's id."""
        ...

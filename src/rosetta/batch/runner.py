"""Runs a batch job: one run record, one advisory lock, counters and step durations, clear exit codes.

A job is a coroutine taking a :class:`RunContext`. The runner
1. takes the job's PostgreSQL advisory lock on a dedicated connection (a second run exits at once);
2. records the run as ``running`` in the job's database (committed, so the API can follow it);
3. runs the job, which commits its own transactions (and so decides what is atomic);
4. records ``succeeded`` or ``failed`` with counters, per-step durations and the error text.

Exit codes of ``rosetta batch ...``: 0 succeeded, 1 the run failed, 2 bad arguments or configuration,
3 another run of the same job is in progress, 4 a database or external service is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rosetta.batch.progress import Progress, SilentProgress
from rosetta.core import runs
from rosetta.core.db import Databases
from rosetta.core.errors import ConflictError, NotFoundError, RosettaError
from rosetta.core.settings import DatabaseRole, Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_UNAVAILABLE = 4
# The error of a run stopped by Ctrl-C or by its serving process stopping.
INTERRUPTED = (
    "interrupted: stopped before it finished (Ctrl-C, or the process running it stopped); the months it had not"
    " swapped in are unchanged, and its counters are those gathered until then"
)


class JobLockedError(ConflictError):
    """Another run of the same job holds the lock."""

    title = "Job already running"


class RunFailedError(RosettaError):
    """The job raised; the run is recorded as failed."""

    title = "Batch run failed"

    def __init__(self, detail: str, *, run_id: uuid.UUID) -> None:
        super().__init__(detail, extra={"runId": str(run_id)})
        self.run_id = run_id


@dataclass
class RunContext:
    """What a job receives: its run id, parameters, databases, progress and counters."""

    run_id: uuid.UUID
    job: str
    parameters: Mapping[str, Any]
    databases: Databases
    settings: Settings
    progress: Progress
    read: int = 0
    written: int = 0
    rejected: int = 0
    counters: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def step(self, name: str, total: int | None = None) -> AsyncIterator[None]:
        """Time a named step; its duration lands in the run record whatever the outcome."""
        started = time.perf_counter()
        self.progress.start_step(name, total)
        outcome = "failed"
        try:
            yield
            outcome = "succeeded"
        finally:
            self.progress.end_step(name)
            self.steps.append({"name": name, "seconds": round(time.perf_counter() - started, 3), "outcome": outcome})


JobBody = Callable[[RunContext], Awaitable[None]]


@dataclass(frozen=True)
class JobSpec:
    """A batch job: its name, the database holding its run records and lock, and its body."""

    name: str
    database: DatabaseRole
    body: JobBody
    databases: tuple[DatabaseRole, ...] = ()

    @property
    def all_databases(self) -> tuple[DatabaseRole, ...]:
        """Every database the job opens (its own first)."""
        return (self.database, *(role for role in self.databases if role != self.database))


async def expire_stale_runs(
    session: AsyncSession, job: str, settings: Settings, *, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Record as expired the runs of ``job`` queued longer than the queue expiry and never started (logged).

    Every run and every launch of a job does it, so a launched run that never began is reported failed by the
    job's next run at the latest (the nightly one, for finops) instead of "queued" forever.
    """
    expired = await runs.expire_queued(
        session, job, older_than=timedelta(seconds=settings.batch_queue_expiry_seconds), keep=keep
    )
    if expired:
        logger.warning(
            "queued runs that never started recorded as expired",
            extra={"job": job, "expired": [str(item) for item in expired]},
        )
    return expired


async def launched_parameters(databases: Databases, job: JobSpec, run_id: uuid.UUID) -> dict[str, Any]:
    """The parameters of ``job``'s launched run ``run_id``, which a pod of its Kubernetes Job now executes.

    A queued run is taken, and a running one too: its Job retries it in a new pod when the last one died
    (``execute`` then checks, holding the job's lock, that no process still runs it). A run that ended is never
    run a second time under the same id.
    """
    async with databases.unit_of_work(job.database) as session:
        run = await runs.get_run(session, run_id)
    if run is None or run["job"] != job.name:
        raise NotFoundError(f"no {job.name} run {run_id}")
    if run["status"] not in ("queued", "running"):
        raise ConflictError(f"{job.name} run {run_id} is {run['status']}, not queued: it is not run again")
    return dict(run["parameters"] or {})


async def execute(
    job: JobSpec,
    parameters: Mapping[str, Any],
    *,
    databases: Databases,
    settings: Settings,
    progress: Progress | None = None,
    requested_by: str | None = None,
    run_id: uuid.UUID | None = None,
) -> RunContext:
    """Run ``job`` under its lock and record the run; raise ``JobLockedError`` or ``RunFailedError``.

    ``run_id`` names a run already queued (by an API launcher); otherwise a new run record is created.
    """
    progress = progress or SilentProgress()
    engine = databases.engines[job.database]
    async with engine.connect() as lock_connection:
        locked = await runs.try_lock_job(lock_connection, job.name)
        await lock_connection.commit()
        if not locked:
            if run_id is not None:
                async with databases.unit_of_work(job.database) as session:
                    # Not a run another process is running (a duplicate pod of its own Job): only a queued one.
                    await runs.fail_if_queued(session, run_id, error="another run of this job was in progress")
            raise JobLockedError(f"another {job.name} run is in progress; this one was not started")
        try:
            async with databases.unit_of_work(job.database) as session:
                abandoned = await runs.abandon_running(session, job.name, keep=run_id)
                await expire_stale_runs(session, job.name, settings, keep=run_id)
                attempt = 1
                if run_id is None:
                    run_id = await runs.create_run(
                        session, job=job.name, parameters=parameters, status="running", requested_by=requested_by
                    )
                else:
                    try:
                        attempt = await runs.start_launched(session, run_id)
                    except ConflictError as error:
                        raise ConflictError(f"{job.name} {error.detail}") from None
            context = RunContext(
                run_id=run_id,
                job=job.name,
                parameters=parameters,
                databases=databases,
                settings=settings,
                progress=progress,
            )
            if attempt > 1:
                # A batch is idempotent (months are rebuilt whole and swapped): the new attempt starts over.
                context.counters["attempts"] = attempt
                logger.warning(
                    "launched run taken over from an attempt that died",
                    extra={"job": job.name, "run_id": str(run_id), "attempt": attempt},
                )
            if abandoned:
                logger.warning(
                    "earlier runs recorded as abandoned",
                    extra={"job": job.name, "run_id": str(run_id), "abandoned": [str(item) for item in abandoned]},
                )
            logger.info("batch run started", extra={"job": job.name, "run_id": str(run_id)})
            try:
                await job.body(context)
            except asyncio.CancelledError:
                # Ctrl-C on the command line (asyncio.run cancels the main task) or the serving process stopping
                # with the run in its hands: no retry will take it over, so it ends here, recorded. (A SIGTERM
                # to a batch pod kills the process outright; its run stays running for the Job's retry.)
                logger.warning("batch run interrupted", extra={"job": job.name, "run_id": str(run_id)})
                await _record(databases, job, context, status="failed", error=INTERRUPTED)
                raise
            except Exception as error:
                message = error.detail if isinstance(error, RosettaError) else f"{type(error).__name__}: {error}"
                logger.exception("batch run failed", extra={"job": job.name, "run_id": str(run_id)})
                await _record(databases, job, context, status="failed", error=message)
                raise RunFailedError(f"{job.name} run {run_id} failed: {message}", run_id=run_id) from error
            await _record(databases, job, context, status="succeeded")
            logger.info("batch run succeeded", extra={"job": job.name, "run_id": str(run_id)})
            return context
        finally:
            await runs.unlock_job(lock_connection, job.name)
            await lock_connection.commit()
            progress.close()


async def _record(
    databases: Databases, job: JobSpec, context: RunContext, *, status: Any, error: str | None = None
) -> None:
    async with databases.unit_of_work(job.database) as session:
        await runs.finish_run(
            session,
            context.run_id,
            status=status,
            read=context.read,
            written=context.written,
            rejected=context.rejected,
            counters=context.counters,
            steps=context.steps,
            error=error,
        )

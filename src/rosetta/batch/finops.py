"""finops-batch: rebuild the FinOps data mart from the raw zone (``rosetta batch finops``, nightly CronJob).

The job reads the raw zone through the configured RawStore and hands its documents to
``rosetta.finops.service.rebuild_periods``; everything else (mapping, allocation, the atomic month swap, the
SQL conservation checks, the view refresh) happens in the finops context. Parameters: ``period`` (YYYY-MM),
or ``from`` and ``to``; none means every month found in the raw zone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from rosetta.batch.runner import JobSpec, RunContext
from rosetta.finops import service
from rosetta.raw.store import RawDocument, opened_raw_store

JOB_NAME = "finops"
READ_PAGE = 5_000


async def run_finops(context: RunContext) -> None:
    """The job body: rebuild the requested months and record the counts on the run."""
    periods = service.periods_from_parameters(context.parameters)
    async with opened_raw_store(context.settings, process=f"batch.{JOB_NAME}") as store:

        def reader(*, source: str | None, kind: str) -> AsyncIterator[RawDocument]:
            return store.stream(source=source, kind=kind, batch_size=READ_PAGE)

        report = await service.rebuild_periods(
            context.databases.engines["finops"], reader, run_id=context.run_id, hooks=context, periods=periods
        )
    context.read = report.read
    context.written = report.written
    context.rejected = report.rejected
    context.counters.update(report.counters)
    context.counters.update(
        read=report.read,
        mapped=report.mapped,
        unallocated=report.unallocated,
        rejected=report.rejected,
        skipped_other_periods=report.skipped,
        periods=[f"{period:%Y-%m}" for period in report.periods],
    )


FINOPS_JOB = JobSpec(name=JOB_NAME, database="finops", body=run_finops)

"""finops-batch: rebuild the FinOps data mart from the raw zone (``rosetta batch finops``, nightly CronJob).

The job reads the raw zone through the configured RawStore and hands its documents to
``rosetta.finops.service.rebuild_periods``; everything else (mapping, allocation, the atomic month swap, the
SQL conservation checks, the view refresh) happens in the finops context. Parameters: ``period`` (YYYY-MM),
or ``from`` and ``to``; none means every month found in the raw zone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from rosetta.batch.runner import JobSpec, RunContext
from rosetta.finops import service
from rosetta.raw.store import DocumentPage, RawDocument, RawStore, S, opened_raw_store

JOB_NAME = "finops"
READ_PAGE = 5_000
PREFETCH_PAGES = 4

T = TypeVar("T")


class RawZoneReader:
    """The batch's view of the raw zone: one stream per (source, kind); bulk pages are read ahead."""

    def __init__(self, store: RawStore) -> None:
        self._store = store

    async def _sources(self, source: str | None, kind: str) -> list[str]:
        if source is not None:
            return [source]
        # One stream per source follows the (source, kind, id) index; a kind-only filter would not.
        imports = await self._store.list_imports(kind=kind, limit=10_000)
        return sorted({summary.source for summary in imports})

    async def __call__(self, *, source: str | None, kind: str) -> AsyncIterator[RawDocument]:
        """Whole documents of ``kind`` from ``source``, or from every source that landed that kind."""
        for name in await self._sources(source, kind):
            async for document in self._store.stream(source=name, kind=kind, batch_size=READ_PAGE):
                yield document

    async def pages(self, *, source: str | None, kind: str, shape: type[S]) -> AsyncIterator[DocumentPage[S]]:
        """Pages of ``kind`` projected onto ``shape`` (see ``RawStore.stream_pages``), fetched ahead."""
        for name in await self._sources(source, kind):
            pages = self._store.stream_pages(source=name, kind=kind, shape=shape, page_size=READ_PAGE)
            async for page in _read_ahead(pages):
                yield page


async def _read_ahead(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """Fetch the next items in a background task, so the raw store's queries overlap the batch's CPU work."""
    queue: asyncio.Queue[tuple[T] | BaseException | None] = asyncio.Queue(maxsize=PREFETCH_PAGES)

    async def produce() -> None:
        try:
            async for item in items:
                await queue.put((item,))
        except Exception as error:
            await queue.put(error)
            return
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while (entry := await queue.get()) is not None:
            if isinstance(entry, BaseException):
                raise entry
            yield entry[0]
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


async def run_finops(context: RunContext) -> None:
    """The job body: rebuild the requested months and record the counts on the run.

    The counts go on the run whatever the outcome: a failed run records what it had read, mapped and rejected
    up to the failure (and ``periods``, the months it swapped in before it), not zeros.
    """
    periods = service.periods_from_parameters(context.parameters)
    report = service.RebuildReport()
    budgets = service.BudgetImportReport()
    try:
        async with opened_raw_store(context.settings, process=f"batch.{JOB_NAME}") as store:
            reader = RawZoneReader(store)
            await service.rebuild_periods(
                context.databases.engines["finops"],
                reader,
                run_id=context.run_id,
                hooks=context,
                periods=periods,
                report=report,
                allow_empty=service.allow_empty_from_parameters(context.parameters),
            )
            async with context.step("budgets"), context.databases.unit_of_work("finops") as session:
                budgets = await service.import_budgets(session, reader, run_id=context.run_id)
    finally:
        _record_counts(context, report, budgets)


def _record_counts(context: RunContext, report: service.RebuildReport, budgets: service.BudgetImportReport) -> None:
    """Copy a rebuild's and a budget import's counts onto the run (the runner records them)."""
    context.read = report.read
    context.written = report.written
    context.rejected = report.rejected + budgets.rejected
    context.counters.update(report.counters)
    if budgets.rejected:
        reasons = dict(report.counters.get("rejected_by_reason", {}))
        reasons["invalid_budget_line"] = reasons.get("invalid_budget_line", 0) + budgets.rejected
        context.counters["rejected_by_reason"] = reasons
    context.counters.update(
        read=report.read,
        mapped=report.mapped,
        unallocated=report.unallocated,
        rejected=report.rejected + budgets.rejected,
        skipped_other_periods=report.skipped,
        skipped_undated=report.skipped_undated,
        periods=[f"{period:%Y-%m}" for period in sorted(report.periods)],
        budget_versions_created=budgets.versions_created,
        budget_lines_changed=budgets.lines_changed,
        budget_lines_rejected=budgets.rejected,
    )


FINOPS_JOB = JobSpec(name=JOB_NAME, database="finops", body=run_finops)

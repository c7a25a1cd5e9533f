"""The in-process launcher: an API call queues a run and this process executes it in the background.

Used by ``rosetta dev`` and ``rosetta serve`` when no Kubernetes launcher is configured. The run's record
is committed as ``queued`` before ``launch`` returns, so the caller can follow it at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from rosetta.batch.runner import JobSpec, execute, expire_stale_runs
from rosetta.core import runs
from rosetta.core.db import Databases
from rosetta.core.errors import NotFoundError, RosettaError
from rosetta.core.settings import Settings

logger = logging.getLogger(__name__)


class InProcessLauncher:
    """Runs jobs as asyncio tasks of the serving process, on databases it opens per run."""

    def __init__(self, jobs: Mapping[str, JobSpec], settings: Settings) -> None:
        self._jobs = dict(jobs)
        self._settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    async def launch(self, job: str, parameters: Mapping[str, Any], *, requested_by: str) -> uuid.UUID:
        """Queue the run (committed), start it in the background and return its id."""
        spec = self._jobs.get(job)
        if spec is None:
            raise NotFoundError(f"unknown batch job {job!r}")
        databases = Databases.open(self._settings, spec.all_databases, process=f"batch.{job}")
        try:
            async with databases.unit_of_work(spec.database) as session:
                await expire_stale_runs(session, job, self._settings)
                await runs.refuse_if_active(session, job)
                run_id = await runs.create_run(session, job=job, parameters=parameters, requested_by=requested_by)
        except BaseException:
            await databases.dispose()
            raise
        task = asyncio.create_task(self._run(spec, parameters, databases, requested_by, run_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run_id

    async def _run(
        self,
        spec: JobSpec,
        parameters: Mapping[str, Any],
        databases: Databases,
        requested_by: str,
        run_id: uuid.UUID,
    ) -> None:
        try:
            await execute(
                spec,
                parameters,
                databases=databases,
                settings=self._settings,
                requested_by=requested_by,
                run_id=run_id,
            )
        except RosettaError as error:
            # Already recorded on the run; the API reports it through GET batch/runs/{run_id}.
            logger.warning("launched run ended: %s", error.detail)
        finally:
            await databases.dispose()

    async def wait(self) -> None:
        """Wait for every run this launcher started (tests, graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

"""The registry of batch jobs, by name: what ``rosetta batch NAME`` and the API launchers can run."""

from __future__ import annotations

from rosetta.batch.runner import JobSpec


def registered_jobs() -> dict[str, JobSpec]:
    """Every job this build knows, imported lazily so ``rosetta serve`` does not load batch code."""
    jobs: dict[str, JobSpec] = {}
    from rosetta.batch.finops import FINOPS_JOB  # noqa: PLC0415 - lazy, see the docstring

    jobs[FINOPS_JOB.name] = FINOPS_JOB
    return jobs

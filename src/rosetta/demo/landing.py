"""Generating a demo world: landing its FinOps documents in the raw zone and writing the simulator dataset.

FinOps sources land directly (a CMDB export, cloud bills and finance files are files in real life); the
ServiceNow, Dynatrace and Argo CD data goes to the simulators, from which ``rosetta raw pull`` lands it,
exactly as it would from the real systems. Each (source, kind) is one import whose ``origin`` names the
world (``demo-world size=small seed=1 end=2026-10``); landing is idempotent (content hashes), so a
re-run lands nothing new.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosetta.demo import finops
from rosetta.demo.dataset import write_dataset
from rosetta.demo.operations import world_operations
from rosetta.demo.world import Granularity, World
from rosetta.raw.store import RawStore

ORIGIN_PREFIX = "demo-world"
BATCH_SIZE = 5000
# Imports landing at the same time: two keeps both the database and the generator busy on two cores.
LANDING_CONCURRENCY = 2

DocumentSource = Callable[[World, Granularity], Iterator[dict[str, Any]]]

# (source, kind, payloads): one import each.
FINOPS_DOCUMENTS: tuple[tuple[str, str, DocumentSource], ...] = (
    ("cmdb", "application", lambda world, _: finops.application_documents(world)),
    ("cmdb", "cost", finops.cmdb_cost_documents),
    ("aws", "focus", lambda world, granularity: finops.focus_documents(world, "aws", granularity)),
    ("azure", "focus", lambda world, granularity: finops.focus_documents(world, "azure", granularity)),
    ("finance", "shared_cost", lambda world, _: finops.shared_cost_documents(world)),
    ("finance", "usage_driver", lambda world, _: finops.usage_driver_documents(world)),
    ("finance", "budget", lambda world, _: finops.budget_documents(world)),
)


@dataclass(frozen=True, slots=True)
class LandedKind:
    """What landing one (source, kind) did."""

    source: str
    kind: str
    read: int
    landed: int
    duplicates: int
    seconds: float


def _take(iterator: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return list(itertools.islice(iterator, count))


async def land_documents(
    store: RawStore, world: World, source: str, kind: str, payloads: Iterator[dict[str, Any]]
) -> LandedKind:
    """Land one stream of payloads as one import, generating the next batch while the store writes one."""
    started = time.perf_counter()
    import_id = await store.begin_import(source=source, kind=kind, origin=world.origin)
    read = landed = duplicates = 0
    try:
        batch = _take(payloads, BATCH_SIZE)
        while batch:
            upcoming = asyncio.create_task(asyncio.to_thread(_take, payloads, BATCH_SIZE))
            try:
                result = await store.put_many(import_id, source=source, kind=kind, payloads=batch)
            except BaseException:
                await asyncio.gather(upcoming, return_exceptions=True)
                raise
            read += len(batch)
            landed += result.landed
            duplicates += result.duplicates
            batch = await upcoming
    except BaseException:
        await store.finish_import(
            import_id, status="failed", read=read, landed=landed, duplicates=duplicates, rejected=0
        )
        raise
    await store.finish_import(
        import_id, status="completed", read=read, landed=landed, duplicates=duplicates, rejected=0
    )
    return LandedKind(source, kind, read, landed, duplicates, time.perf_counter() - started)


async def land_world(
    store: RawStore,
    world: World,
    granularity: Granularity = Granularity.DAY,
    on_landed: Callable[[LandedKind], None] | None = None,
    concurrency: int = LANDING_CONCURRENCY,
) -> list[LandedKind]:
    """Land every FinOps document of the world, one import per (source, kind).

    Up to ``concurrency`` imports run at once (the database works on one while Python generates another);
    the results come back in :data:`FINOPS_DOCUMENTS` order whatever order they finished in.
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def land(source: str, kind: str, documents: DocumentSource) -> LandedKind:
        async with gate:
            result = await land_documents(store, world, source, kind, documents(world, granularity))
        if on_landed is not None:
            on_landed(result)
        return result

    return list(await asyncio.gather(*(land(*entry) for entry in FINOPS_DOCUMENTS)))


async def demo_world_landed(store: RawStore) -> str | None:
    """The origin of a demo world whose every FinOps import completed in the store, or None."""
    origins: set[str] | None = None
    for source, kind, _ in FINOPS_DOCUMENTS:
        summaries = await store.list_imports(source=source, kind=kind, limit=1000)
        complete = {
            summary.origin
            for summary in summaries
            if summary.status == "completed" and summary.origin and summary.origin.startswith(ORIGIN_PREFIX)
        }
        origins = complete if origins is None else origins & complete
    return min(origins) if origins else None


@dataclass(frozen=True, slots=True)
class DatasetResult:
    """What writing the simulator dataset did."""

    directory: Path
    files: dict[str, dict[str, Any]]
    seconds: float


def write_simulator_dataset(world: World, directory: Path) -> DatasetResult:
    """Write the ServiceNow, Dynatrace and Argo CD files of the world into ``directory``."""
    started = time.perf_counter()
    files = write_dataset(world, world_operations(world), directory)
    return DatasetResult(directory, files, time.perf_counter() - started)


def dataset_present(directory: Path) -> bool:
    """True when a complete dataset (its manifest, written last) is in ``directory``."""
    return (directory / "manifest.json").is_file()


async def generate_demo(
    store: RawStore | None,
    world: World,
    directory: Path | None,
    *,
    granularity: Granularity = Granularity.DAY,
    echo: Callable[[str], None] = lambda _: None,
) -> list[LandedKind]:
    """Land the world's FinOps documents in ``store`` (unless None) and write its simulator dataset into
    ``directory`` (unless None), saying what was done through ``echo``, one line per step."""
    landed: list[LandedKind] = []
    if store is not None:

        def report(result: LandedKind) -> None:
            echo(
                f"{result.source}/{result.kind}: read {result.read}, landed {result.landed}, "
                f"duplicates {result.duplicates} in {result.seconds:.1f}s"
            )

        landed = await land_world(store, world, granularity, on_landed=report)
    if directory is not None:
        dataset = await asyncio.to_thread(write_simulator_dataset, world, directory)
        records = sum(entry["records"] for entry in dataset.files.values())
        echo(
            f"simulator dataset: {len(dataset.files)} files, {records} records in {directory} in {dataset.seconds:.1f}s"
        )
    return landed


async def load_on_first_start(store: RawStore, directory: Path, echo: Callable[[str], None]) -> None:
    """What ``rosetta dev`` does at start: land the small world (seed 1) and write its simulator dataset,
    each only if it is not there yet."""
    from rosetta.demo.world import WorldSize, build_world  # noqa: PLC0415 - built only when needed

    origin = await demo_world_landed(store)
    need_dataset = not dataset_present(directory)
    if origin is not None and not need_dataset:
        echo(f"demo world already loaded ({origin})")
        return
    world = build_world(WorldSize.SMALL, seed=1)
    if origin is None:
        echo(f"first start: loading the demo world ({world.origin}) into the raw zone")
    await generate_demo(store if origin is None else None, world, directory if need_dataset else None, echo=echo)

"""finops-batch throughput, next to a plain PostgreSQL COPY of the same number of fact rows.

    .venv/bin/python bench/finops_batch.py                                   # large world, monthly lines
    .venv/bin/python bench/finops_batch.py --size small --granularity day    # small world, daily lines
    .venv/bin/python bench/finops_batch.py --data-dir /tmp/fb-large          # keep the landed world for reruns

1. Starts an embedded PostgreSQL in ``--data-dir`` (a temporary directory unless given), creates and
   migrates a raw and a finops database, and lands the demo world of ``--size`` in the raw zone (skipped when
   the data directory already holds it). ``--granularity month`` lands one cost line per application,
   environment, service and month instead of one per day: the same money and the same 13 months for the
   large world's 5,000 applications, but 30x fewer source lines, which keeps landing in minutes here.
2. Runs finops-batch through the real runner (all months, run record, views refreshed) ``--runs`` times;
   prints the best and median wall time, source lines read per second, the run's per-step durations and the
   CPU each run used: the batch process's and every process of the PostgreSQL server's.
3. Streams the same source lines through the RawStore alone, with no mapping (the floor of the batch).
4. Exports the fact rows the batch wrote (``COPY ... TO STDOUT``, binary) and times a plain
   ``COPY ... FROM STDIN`` of exactly those rows into an empty table shaped like ``fact_consumption``
   (its primary key included), best of 3.
5. Prints the ratio batch time / COPY time (goal: at most 3), the RawStore read's own ratio, and the run's
   CPU divided by the machine's cores: the least wall time any scheduling of that work could take here.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy.engine import URL

if TYPE_CHECKING:
    from rosetta.core.settings import DatabaseRole


def configure(data_dir: Path) -> URL:
    """Start (or join) the embedded server in ``data_dir``; return its URL on the ``postgres`` database."""
    for key in [key for key in os.environ if key.startswith("ROSETTA_")]:
        del os.environ[key]
    os.environ["ROSETTA_LOG_LEVEL"] = "WARNING"
    from rosetta.core.embedded import embedded_server_url  # noqa: PLC0415

    return embedded_server_url(data_dir)


async def prepare(server: URL, size: str, granularity: str, seed: int) -> tuple[dict[DatabaseRole, URL], int]:
    """Migrated raw and finops databases with the world landed; return their URLs and the source line count."""
    from rosetta.core import migrations  # noqa: PLC0415
    from rosetta.core.db import create_missing_databases  # noqa: PLC0415
    from rosetta.core.settings import Settings  # noqa: PLC0415
    from rosetta.demo.landing import demo_world_landed, land_world  # noqa: PLC0415
    from rosetta.demo.world import Granularity, WorldSize, build_world  # noqa: PLC0415
    from rosetta.raw.postgres import PostgresRawStore  # noqa: PLC0415

    roles: tuple[DatabaseRole, ...] = ("raw", "finops")
    urls = {role: server.set(database=f"bench_finops_{size}_{granularity}_{role}") for role in roles}
    await create_missing_databases(urls)
    for role, url in urls.items():
        await asyncio.to_thread(migrations.upgrade, role, url)
    store = PostgresRawStore.from_settings(settings_for(urls, Settings))
    try:
        if await demo_world_landed(store) is None:
            started = time.perf_counter()
            world = build_world(WorldSize(size), seed)
            landed = await land_world(store, world, Granularity(granularity))
            documents = sum(result.read for result in landed)
            seconds = time.perf_counter() - started
            print(f"landed {documents:,} raw documents in {seconds:.1f} s ({documents / seconds:,.0f} docs/s)")
        lines = 0
        for kind in ("cost", "focus"):
            for summary in await store.list_imports(kind=kind, limit=1000):
                if summary.status == "completed":
                    lines += summary.landed
    finally:
        await store.close()
    return urls, lines


def settings_for(urls: dict[DatabaseRole, URL], settings_class: Any) -> Any:
    """Settings on the bench's databases."""
    return settings_class(
        **{f"{role}_database_url": url.render_as_string(hide_password=False) for role, url in urls.items()}
    )


def _stat_fields(pid: int) -> list[str]:
    # The fields after the command name, which may itself hold spaces or parentheses: index 0 is field 3.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu(data_dir: Path) -> float:
    """CPU seconds (user + system) the embedded PostgreSQL of ``data_dir`` has used so far, all processes.

    The postmaster's own time, the time of its exited children (added to its ``cutime``/``cstime`` when it
    reaps them: the batch's connections come and go) and the time of the children still alive (backends,
    checkpointer, WAL writer, autovacuum).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    fields = _stat_fields(postmaster)
    total = sum(int(fields[index]) for index in (11, 12, 13, 14))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat_fields(int(entry.name))
        except OSError:  # gone since the listing
            continue
        if int(child[1]) == postmaster:
            total += int(child[11]) + int(child[12])
    return total / ticks


def own_cpu() -> float:
    """CPU seconds this process (the batch runs in it) has used so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_of(step: str) -> str:
    """The bench's name for the phase a run step belongs to (the months' builds and swaps overlap: one phase)."""
    return "build+swap months" if step.startswith(("build ", "swap ")) else step


class PhaseCpu:
    """A batch ``Progress`` that reads the CPU used (batch process, PostgreSQL) at each phase's first start
    and last end, so a run's CPU can be split by phase; the phases follow one another."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._open: dict[str, int] = {}  # phase -> steps of it still open
        self.marks: dict[str, list[tuple[float, float]]] = {}  # phase -> [(batch, server) at start, at end]

    def _now(self) -> tuple[float, float]:
        return own_cpu(), server_cpu(self._data_dir)

    def start_step(self, name: str, total: int | None = None) -> None:
        """Mark the phase's start on its first step."""
        phase = phase_of(name)
        if phase not in self.marks:
            self.marks[phase] = [self._now()]
        self._open[phase] = self._open.get(phase, 0) + 1

    def advance(self, amount: int = 1) -> None:
        """Not needed."""

    def end_step(self, name: str) -> None:
        """Mark the phase's end when its last open step ends (a later mark replaces an earlier one)."""
        phase = phase_of(name)
        self._open[phase] -= 1
        if not self._open[phase]:
            self.marks[phase][1:] = [self._now()]

    def close(self) -> None:
        """Nothing to release."""

    def by_phase(self) -> dict[str, tuple[float, float]]:
        """CPU seconds (batch process, PostgreSQL) used during each phase."""
        return {
            phase: (marks[1][0] - marks[0][0], marks[1][1] - marks[0][1])
            for phase, marks in self.marks.items()
            if len(marks) == 2
        }


async def run_batch(urls: dict[DatabaseRole, URL], progress: Any = None) -> tuple[float, Any]:
    """One finops-batch run through the runner; its wall time and run context."""
    from rosetta.batch.finops import FINOPS_JOB  # noqa: PLC0415
    from rosetta.batch.runner import execute  # noqa: PLC0415
    from rosetta.core.db import Databases  # noqa: PLC0415
    from rosetta.core.settings import Settings  # noqa: PLC0415

    settings = settings_for(urls, Settings)
    databases = Databases.open(settings, ("finops",), process="bench", urls=urls)
    try:
        started = time.perf_counter()
        context = await execute(FINOPS_JOB, {}, databases=databases, settings=settings, progress=progress)
        return time.perf_counter() - started, context
    finally:
        await databases.dispose()


async def time_raw_read(urls: dict[DatabaseRole, URL]) -> tuple[int, float]:
    """Source lines and the time to only stream them through the RawStore as the batch does (no mapping).

    The same reader, pages and projections as the batch: every payload is fetched and decoded into the
    fields the batch reads, nothing more is done with them.
    """
    from rosetta.batch.finops import RawZoneReader  # noqa: PLC0415
    from rosetta.core.settings import Settings  # noqa: PLC0415
    from rosetta.finops.pipeline import CmdbCostFields, FocusFields  # noqa: PLC0415
    from rosetta.raw.postgres import PostgresRawStore  # noqa: PLC0415

    store = PostgresRawStore.from_settings(settings_for(urls, Settings))
    try:
        reader = RawZoneReader(store)
        started = time.perf_counter()
        count = 0
        async for page in reader.pages(source="cmdb", kind="cost", shape=CmdbCostFields):
            count += len(page)
        async for focus_page in reader.pages(source=None, kind="focus", shape=FocusFields):
            count += len(focus_page)
        return count, time.perf_counter() - started
    finally:
        await store.close()


async def time_copy(finops: URL) -> tuple[int, float]:
    """Rows in fact_consumption and the best time of a plain binary COPY of them into an empty twin table."""
    from rosetta.core.db import asyncpg_dsn  # noqa: PLC0415

    connection = await asyncpg.connect(asyncpg_dsn(finops))
    try:
        exported = io.BytesIO()
        await connection.copy_from_query("SELECT * FROM fact_consumption", output=exported, format="binary")
        rows = await connection.fetchval("SELECT count(*) FROM fact_consumption")
        timings = []
        for _ in range(3):
            await connection.execute("DROP TABLE IF EXISTS bench_copy")
            await connection.execute("CREATE TABLE bench_copy (LIKE fact_consumption INCLUDING ALL)")
            exported.seek(0)
            started = time.perf_counter()
            await connection.copy_to_table("bench_copy", source=exported, format="binary")
            timings.append(time.perf_counter() - started)
        await connection.execute("DROP TABLE bench_copy")
        return rows, min(timings)
    finally:
        await connection.close()


async def main(arguments: argparse.Namespace) -> None:
    """Prepare, run the batch, time COPY, print the figures."""
    data_dir = Path(arguments.data_dir) if arguments.data_dir else Path(tempfile.mkdtemp(prefix="rosetta-bench-"))
    server = configure(data_dir)
    try:
        urls, source_lines = await prepare(server, arguments.size, arguments.granularity, arguments.seed)
        print(f"world: size={arguments.size} granularity={arguments.granularity} seed={arguments.seed}, "
              f"{source_lines:,} source cost lines (cmdb/cost + focus)")  # fmt: skip
        timings = []
        context = None
        cpu: list[tuple[float, float]] = []
        for number in range(1, arguments.runs + 1):
            batch_before, server_before = own_cpu(), server_cpu(data_dir)
            phases = PhaseCpu(data_dir)
            seconds, context = await run_batch(urls, phases)
            cpu.append((own_cpu() - batch_before, server_cpu(data_dir) - server_before))
            timings.append(seconds)
            print(f"run {number}: {seconds:.2f} s, read {context.read:,}, written {context.written:,} fact rows, "
                  f"{context.read / seconds:,.0f} source lines/s; CPU: batch process {cpu[-1][0]:.2f} s, "
                  f"PostgreSQL {cpu[-1][1]:.2f} s")  # fmt: skip
        assert context is not None
        steps: dict[str, float] = {}
        for step in context.steps:
            name = phase_of(step["name"])
            steps[name] = steps.get(name, 0.0) + step["seconds"]
        print("last run's steps: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in steps.items()))
        print("last run's CPU by phase (batch process + PostgreSQL): " + ", ".join(
            f"{name} {batch:.2f} + {server:.2f} s" for name, (batch, server) in phases.by_phase().items()
        ))  # fmt: skip
        # Two months are built at once, so their steps overlap: their sum is work, not elapsed time.
        others = sum(seconds for name, seconds in steps.items() if name != "build+swap months")
        print(f"build+swap months elapsed (last run minus its other steps): {timings[-1] - others:.2f} s")
        read_lines, read_seconds = await time_raw_read(urls)
        print(f"reading the same {read_lines:,} lines through the RawStore alone: {read_seconds:.2f} s")
        rows, copy_seconds = await time_copy(urls["finops"])
        best, median = min(timings), statistics.median(timings)
        print(f"plain COPY of the same {rows:,} fact rows: {copy_seconds:.2f} s ({rows / copy_seconds:,.0f} rows/s)")
        print(f"batch: best {best:.2f} s, median {median:.2f} s = {context.read / best:,.0f} source lines/s (best)")
        print(f"ratio batch / COPY: {best / copy_seconds:.1f}x (goal: at most 3x); "
              f"RawStore read alone / COPY: {read_seconds / copy_seconds:.1f}x")  # fmt: skip
        # The run's CPU spread perfectly over every core is a wall time no scheduling can beat on this machine.
        work = min(sum(pair) for pair in cpu)
        cores = os.cpu_count() or 1
        print(f"CPU of a run (least of the runs): {work:.2f} core-seconds = {work / copy_seconds:.1f}x COPY's wall; "
              f"on {cores} cores no run can take less than {work / cores:.2f} s = "
              f"{work / cores / copy_seconds:.1f}x COPY")  # fmt: skip
    finally:
        from rosetta.core.embedded import stop_embedded_servers  # noqa: PLC0415

        stop_embedded_servers()
        if not arguments.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("small", "medium", "large"), default="large")
    parser.add_argument("--granularity", choices=("day", "month"), default="month")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--data-dir", help="Keep the server and the landed world here (default: a temporary one).")
    asyncio.run(main(parser.parse_args()))

"""Benchmark: land generated raw documents in the PostgreSQL raw store, then stream them back.

    .venv/bin/python bench/raw_landing.py                      # 100,000 then 1,000,000 documents
    .venv/bin/python bench/raw_landing.py --sizes 20000 200000 --batch 2000
    .venv/bin/python bench/raw_landing.py --csv     # the same, through `rosetta raw import` of a CSV file

Each size runs in its OWN child process, on a freshly created and migrated raw database, so the peak
memory of one run (``ru_maxrss`` of that child: everything the process ever held, the interpreter
included) is not inflated by another. Documents come from a generator, never a list: landing is
streamed, and the peak at 1,000,000 documents should stay within 1.5x of the peak at 100,000.

The server is ``ROSETTA_TEST_DATABASE_URL`` (``postgresql://user:pw@host:port/postgres``) when set,
otherwise an embedded PostgreSQL (pgserver) started in a temporary directory and deleted afterwards.
Prints one line per size and the ratio of the peaks.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from rosetta.core import migrations
from rosetta.core.db import asyncpg_dsn, create_missing_databases
from rosetta.raw.importers import import_file
from rosetta.raw.postgres import PostgresRawStore

ENVIRONMENTS = ("prod", "preprod", "dev", "test")
SERVICES = (("Compute", "Virtual machines"), ("Storage", "Object storage"), ("Databases", "PostgreSQL"))


def documents(count: int) -> Iterator[dict[str, Any]]:
    """``count`` distinct cmdb/cost-shaped payloads, generated one at a time."""
    for n in range(count):
        category, service = SERVICES[n % len(SERVICES)]
        cents = (n * 7919) % 1_000_000
        yield {
            "date": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}",
            "app_code": f"APP-{n % 5000:04d}",
            "environment": ENVIRONMENTS[n % len(ENVIRONMENTS)],
            "service_category": category,
            "service_name": service,
            "provider": "onprem",
            "quantity": str(1 + n % 48),
            "unit": "vCPU-hours",
            "billed_cost": f"{cents // 100}.{cents % 100:02d}",
            "effective_cost": f"{cents // 100}.{cents % 100:02d}",
            "currency": "EUR",
            "line": n,
        }


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _stream_back(store: PostgresRawStore) -> tuple[int, float]:
    """Stream every benchmark document back, 1,000 per page: how many and how long."""
    started = time.perf_counter()
    streamed = 0
    async for _ in store.stream(source="bench", kind="cost", batch_size=1000):
        streamed += 1
    return streamed, time.perf_counter() - started


async def _land_batches(store: PostgresRawStore, count: int, batch: int) -> tuple[int, int]:
    """The store path: one ``put_many`` per batch of a generator, as connectors and the demo world land."""
    import_id = await store.begin_import(source="bench", kind="cost", origin="bench/raw_landing.py")
    generated = documents(count)
    landed = duplicates = 0
    while True:
        result = await store.put_many(
            import_id, source="bench", kind="cost", payloads=itertools.islice(generated, batch)
        )
        if result.landed + result.duplicates == 0:
            break
        landed += result.landed
        duplicates += result.duplicates
    await store.finish_import(
        import_id, status="completed", read=landed + duplicates, landed=landed, duplicates=duplicates, rejected=0
    )
    return landed, duplicates


def write_csv(path: Path, count: int) -> None:
    """A decimal-comma, semicolon CSV export of the generated documents (amounts like ``1 234,56 €``)."""
    columns = list(next(documents(1)))
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, delimiter=";")
        writer.writerow(columns)
        for document in documents(count):
            for amount in ("billed_cost", "effective_cost"):
                document[amount] = _decimal_comma(document[amount])
            writer.writerow([document[column] for column in columns])


def _decimal_comma(amount: str) -> str:
    """``"1234.56"`` as a French export writes it: ``"1 234,56 €"`` (narrow no-break space grouping)."""
    units, cents = amount.split(".")
    return f"{int(units):,}".replace(",", "\u202f") + f",{cents} €"


async def child(dsn: str, count: int, batch: int, csv_file: Path | None) -> dict[str, Any]:
    """Land ``count`` documents (by batches, or by importing ``csv_file``), then stream them all back."""
    store = PostgresRawStore(dsn, application_name="rosetta.bench")
    try:
        baseline = peak_rss_mib()
        started = time.perf_counter()
        if csv_file is None:
            landed, duplicates = await _land_batches(store, count, batch)
        else:
            result = await import_file(store, csv_file, source="bench", kind="cost")
            landed, duplicates = result.counts.landed, result.counts.duplicates
        land_seconds = time.perf_counter() - started
        streamed, read_seconds = await _stream_back(store)
    finally:
        await store.close()
    return {
        "count": count,
        "landed": landed,
        "duplicates": duplicates,
        "streamed": streamed,
        "land_seconds": round(land_seconds, 2),
        "land_per_second": round(landed / land_seconds),
        "read_seconds": round(read_seconds, 2),
        "read_per_second": round(streamed / read_seconds),
        "baseline_mib": round(baseline, 1),
        "peak_mib": round(peak_rss_mib(), 1),
    }


async def _drop(server: URL, name: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def run_size(server: URL, count: int, batch: int, csv_dir: Path | None) -> dict[str, Any]:
    """One size, in a child process, on a brand-new migrated raw database (dropped afterwards).

    With ``csv_dir``, the CSV file is written here first, so the child measures the import alone.
    """
    name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    url = server.set(database=name)
    asyncio.run(create_missing_databases({"raw": url}))
    try:
        migrations.upgrade("raw", url)
        command = [sys.executable, __file__, "--child", "--dsn", asyncpg_dsn(url), "--count", str(count)]
        command += ["--batch", str(batch)]
        if csv_dir is not None:
            csv_file = csv_dir / f"costs-{count}.csv"
            write_csv(csv_file, count)
            command += ["--csv-file", str(csv_file)]
        output = subprocess.run(command, check=True, capture_output=True, text=True)
        if csv_dir is not None:
            csv_file.unlink()
        return json.loads(output.stdout.strip().splitlines()[-1])
    finally:
        asyncio.run(_drop(server, name))


def server_url() -> tuple[URL, Any, Path | None]:
    """The configured server, or an embedded one in a temporary directory (with its handle and directory)."""
    configured = os.environ.get("ROSETTA_TEST_DATABASE_URL")
    if configured:
        return make_url(configured).set(drivername="postgresql+asyncpg", database="postgres"), None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415 - only when no server is configured

        tmp = Path(tempfile.mkdtemp(prefix="rosetta-bench-"))
        server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    url = URL.create("postgresql+asyncpg", username="postgres", database="postgres", query={"host": str(tmp / "pg")})
    return url, server, tmp


def main() -> None:
    """Parse arguments; as the parent, run each size in a child and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=5_000, help="documents per put_many call")
    parser.add_argument(
        "--csv", action="store_true", help="land by importing a generated decimal-comma CSV file (one import)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--csv-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(asyncio.run(child(arguments.dsn, arguments.count, arguments.batch, arguments.csv_file))))
        return

    url, server, tmp = server_url()
    where = "ROSETTA_TEST_DATABASE_URL" if server is None else "embedded pgserver (temporary directory)"
    how = "by importing a CSV file" if arguments.csv else f"in batches of {arguments.batch}"
    print(f"raw landing benchmark: PostgreSQL JSONB store on {where}, {how}")
    results = []
    csv_dir = Path(tempfile.mkdtemp(prefix="rosetta-bench-csv-")) if arguments.csv else None
    try:
        for count in arguments.sizes:
            result = run_size(url, count, arguments.batch, csv_dir)
            results.append(result)
            print(
                f"{count:>10,} documents: landed {result['landed']:,} in {result['land_seconds']} s "
                f"= {result['land_per_second']:,} docs/s; streamed back {result['streamed']:,} in "
                f"{result['read_seconds']} s = {result['read_per_second']:,} docs/s; "
                f"peak RSS {result['peak_mib']} MiB (at start {result['baseline_mib']} MiB)",
                flush=True,
            )
    finally:
        if csv_dir is not None:
            shutil.rmtree(csv_dir, ignore_errors=True)
        if server is not None:
            server.cleanup()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if len(results) >= 2:
        smallest, largest = results[0], results[-1]
        ratio = largest["peak_mib"] / smallest["peak_mib"]
        verdict = "within" if ratio <= 1.5 else "ABOVE"
        print(
            f"peak memory ratio {largest['count']:,} / {smallest['count']:,} documents: "
            f"{largest['peak_mib']} / {smallest['peak_mib']} MiB = {ratio:.2f} ({verdict} the 1.5x target)"
        )


if __name__ == "__main__":
    main()

"""Benchmark: land generated raw documents in the PostgreSQL raw store, then stream them back.

    .venv/bin/python bench/raw_landing.py                      # 100,000 then 1,000,000 documents
    .venv/bin/python bench/raw_landing.py --sizes 20000 200000 --batch 2000

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


async def child(dsn: str, count: int, batch: int) -> dict[str, Any]:
    """Land ``count`` documents in batches of ``batch`` (one ``put_many`` each), then stream them all back."""
    store = PostgresRawStore(dsn, application_name="rosetta.bench")
    try:
        import_id = await store.begin_import(source="bench", kind="cost", origin="bench/raw_landing.py")
        baseline = peak_rss_mib()
        generated = documents(count)
        landed = duplicates = 0
        started = time.perf_counter()
        while True:
            chunk = itertools.islice(generated, batch)
            result = await store.put_many(import_id, source="bench", kind="cost", payloads=chunk)
            if result.landed + result.duplicates == 0:
                break
            landed += result.landed
            duplicates += result.duplicates
        land_seconds = time.perf_counter() - started
        await store.finish_import(
            import_id, status="completed", read=landed + duplicates, landed=landed, duplicates=duplicates, rejected=0
        )
        after_landing = peak_rss_mib()

        started = time.perf_counter()
        streamed = 0
        async for _ in store.stream(source="bench", kind="cost", batch_size=1000):
            streamed += 1
        read_seconds = time.perf_counter() - started
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
        "peak_after_landing_mib": round(after_landing, 1),
        "peak_mib": round(peak_rss_mib(), 1),
    }


async def _drop(server: URL, name: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def run_size(server: URL, count: int, batch: int) -> dict[str, Any]:
    """One size, in a child process, on a brand-new migrated raw database (dropped afterwards)."""
    name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    url = server.set(database=name)
    asyncio.run(create_missing_databases({"raw": url}))
    try:
        migrations.upgrade("raw", url)
        command = [sys.executable, __file__, "--child", "--dsn", asyncpg_dsn(url), "--count", str(count)]
        output = subprocess.run([*command, "--batch", str(batch)], check=True, capture_output=True, text=True)
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
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(asyncio.run(child(arguments.dsn, arguments.count, arguments.batch))))
        return

    url, server, tmp = server_url()
    where = "ROSETTA_TEST_DATABASE_URL" if server is None else "embedded pgserver (temporary directory)"
    print(f"raw landing benchmark: PostgreSQL JSONB store on {where}, batches of {arguments.batch}")
    results = []
    try:
        for count in arguments.sizes:
            result = run_size(url, count, arguments.batch)
            results.append(result)
            print(
                f"{count:>10,} documents: landed {result['landed']:,} in {result['land_seconds']} s "
                f"= {result['land_per_second']:,} docs/s; streamed back {result['streamed']:,} in "
                f"{result['read_seconds']} s = {result['read_per_second']:,} docs/s; "
                f"peak RSS {result['peak_mib']} MiB (before landing {result['baseline_mib']} MiB)",
                flush=True,
            )
    finally:
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

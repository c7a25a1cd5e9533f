"""Benchmark: pull ServiceNow incidents from the simulator over loopback HTTP into the PostgreSQL raw store.

    .venv/bin/python bench/pull_servicenow.py                       # 20,000 incidents, no faults
    .venv/bin/python bench/pull_servicenow.py --records 100000 --page-size 1000
    .venv/bin/python bench/pull_servicenow.py --fault-rate 0.05     # 5% of pages answer 503 or 429

The simulator (uvicorn in a thread of this process) serves generated incidents, 4 per second of
``sys_updated_on``; the pull is the one ``rosetta raw pull servicenow`` runs (keyset paging, retries,
landing page by page). Prints records, pages, injected faults, seconds, records per second, peak memory
(``ru_maxrss``, simulator included), then pulls again to time an incremental run with nothing new.
The raw database is created on ``ROSETTA_TEST_DATABASE_URL`` (a server URL) when set, otherwise on an
embedded PostgreSQL in a temporary directory; both are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

from rosetta.connectors.servicenow import ServiceNowClient
from rosetta.core import migrations
from rosetta.core.db import asyncpg_dsn, create_missing_databases
from rosetta.core.settings import ExternalSystem
from rosetta.raw.postgres import PostgresRawStore
from rosetta.raw.pull import pull_servicenow_tables
from rosetta.simulators.faults import FaultInjector, FaultRule
from rosetta.simulators.server import BackgroundServer
from rosetta.simulators.servicenow import ServiceNowSimulator

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def incidents(count: int) -> list[dict[str, str]]:
    """``count`` incident rows, all values strings, 4 per ``sys_updated_on`` second."""
    return [
        {
            "sys_id": f"{index:032x}",
            "number": f"INC{index:07d}",
            "state": str(1 + index % 7),
            "priority": str(1 + index % 5),
            "short_description": f"Generated incident {index}",
            "cmdb_ci": f"{index % 997:032x}",
            "sys_updated_on": (BASE + timedelta(seconds=index // 4)).strftime("%Y-%m-%d %H:%M:%S"),
        }
        for index in range(count)
    ]


async def _prepare(server: URL, name: str) -> URL:
    url = server.set(database=name)
    await create_missing_databases({"raw": url})
    await asyncio.to_thread(migrations.upgrade, "raw", url)
    return url


async def _drop(server: URL, name: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def run(server: URL, arguments: argparse.Namespace) -> None:
    """Serve, pull twice, print the figures."""
    name = f"bench_pull_{int(time.time())}"
    url = await _prepare(server, name)
    rules = []
    if arguments.fault_rate:
        rules = [
            FaultRule(
                action="error", status=503, path="incident", probability=arguments.fault_rate / 2, retry_after=None
            ),
            FaultRule(action="rate_limit", path="incident", probability=arguments.fault_rate / 2, retry_after=1),
        ]
    faults = FaultInjector(rules, seed=1)
    simulator = ServiceNowSimulator({"incident": incidents(arguments.records)}, faults=faults)
    store = PostgresRawStore(asyncpg_dsn(url))
    try:
        with BackgroundServer(simulator.app.asgi) as http:
            config = ExternalSystem(url=http.url, username="rosetta", password="rosetta", page_size=arguments.page_size)  # type: ignore[arg-type]
            for label in ("first pull", "incremental pull"):
                client = ServiceNowClient.from_settings(config)
                faults.clear_requests()
                started = time.perf_counter()
                try:
                    summary = await pull_servicenow_tables(store, client, ["incident"], target="bench")
                finally:
                    await client.aclose()
                seconds = time.perf_counter() - started
                log = faults.requests()
                injected = sum(1 for entry in log if entry.fault)
                print(
                    f"{label}: {summary.read:,} records read, {summary.landed:,} landed in {len(log)} requests "
                    f"({injected} faults injected), {seconds:.2f}s, {summary.read / seconds:,.0f} records/s"
                )
    finally:
        await store.close()
        await _drop(server, name)
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    """Parse arguments, find or start a PostgreSQL server, run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    arguments = parser.parse_args()
    import os  # noqa: PLC0415

    configured = os.environ.get("ROSETTA_TEST_DATABASE_URL")
    if configured:
        asyncio.run(run(make_url(configured).set(drivername="postgresql+asyncpg", database="postgres"), arguments))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415

        directory = Path(tempfile.mkdtemp(prefix="rosetta-bench-pull-"))
        server = pgserver.get_server(directory / "pg", cleanup_mode="delete")
    try:
        url = URL.create(
            "postgresql+asyncpg", username="postgres", database="postgres", query={"host": str(directory / "pg")}
        )
        asyncio.run(run(url, arguments))
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

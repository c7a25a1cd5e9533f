"""finops-api under load: drill-down and application endpoints vs the same SQL straight through asyncpg.

    .venv/bin/python bench/finops_api.py [--size large] [--granularity month] [--duration 15] [--clients 32]
        [--http-client raw|httpx] [--server-workers 1] [--token-cache-seconds 60]

1. Prepares a data mart the real way, once per data directory: embedded PostgreSQL in ``--data-dir``,
   migrated databases, the demo world of ``--size`` landed in the raw zone, then finops-batch
   (``--rebuild`` forces it again). ``--granularity month`` lands one cost line per month instead of per
   day (same money, 30x fewer source lines: what keeps the large world's preparation in minutes on a
   laptop; the dashboards' monthly views hold the same number of rows either way).
2. Serves ``rosetta serve finops``'s app with uvicorn in a child process on 127.0.0.1 (``--server-workers``
   processes sharing the port, default one), trusting the development issuer; the load generator mints a
   ``Rosetta_User`` token (the server caches verified tokens for ``--token-cache-seconds``, default 60).
3. For each endpoint, ``--clients`` concurrent workers, each on its own keep-alive connection, send requests
   for ``--duration`` seconds (random but seeded parameters from the real hierarchy), then the same number
   of asyncpg workers run, for the same duration, exactly the statements the endpoint runs (the SQL text
   comes from ``rosetta.finops.queries``) with the same parameters. ``--http-client raw`` (default) is a
   bare HTTP/1.1 client on asyncio streams, as lean as asyncpg is on the SQL side; ``httpx`` is the
   earlier method (httpx costs about 0.5 ms of CPU per request on the same two cores as the server).
4. Prints p50 / p99 latency and requests per second for each, and the API / SQL throughput ratio
   (goal: at least 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
PREFIX = "/api/finops/v1"
CURRENCY = "EUR"


# ---------------------------------------------------------------------------------------------- setup


def configure(data_dir: Path, token_cache_seconds: int) -> None:
    """Point every setting at the bench's own data directory (embedded PostgreSQL), before any import."""
    for key in [key for key in os.environ if key.startswith("ROSETTA_")]:
        del os.environ[key]
    os.environ["ROSETTA_DATA_DIR"] = str(data_dir)
    os.environ["ROSETTA_OIDC_TOKEN_CACHE_SECONDS"] = str(token_cache_seconds)
    os.environ["ROSETTA_ENV"] = "dev"
    os.environ["ROSETTA_LOG_LEVEL"] = "WARNING"


def size_pools(connections: int) -> None:
    """Give the API server as many pooled connections as the raw-SQL side gets (one per client).

    No overflow: an overflow connection is closed when returned, so under steady load every checkout
    beyond the pool size would pay a new connection and re-prepare its statements.
    """
    os.environ["ROSETTA_DB_POOL_SIZE"] = str(connections)
    os.environ["ROSETTA_DB_MAX_OVERFLOW"] = "0"


async def prepare(size: str, granularity: str, seed: int, rebuild: bool) -> None:
    """Migrate the databases, then land the world and run finops-batch unless the mart is already built."""
    from rosetta.batch.jobs import registered_jobs  # noqa: PLC0415
    from rosetta.batch.runner import execute  # noqa: PLC0415
    from rosetta.core import migrations  # noqa: PLC0415
    from rosetta.core.db import Databases, asyncpg_dsn, create_missing_databases, database_urls  # noqa: PLC0415
    from rosetta.core.settings import get_settings  # noqa: PLC0415
    from rosetta.demo.landing import land_world  # noqa: PLC0415
    from rosetta.demo.world import Granularity, WorldSize, build_world  # noqa: PLC0415
    from rosetta.raw.store import opened_raw_store  # noqa: PLC0415

    settings = get_settings()
    urls = await asyncio.to_thread(database_urls, settings, migrations.MIGRATION_ORDER)
    await create_missing_databases(urls)
    for role in migrations.MIGRATION_ORDER:
        await asyncio.to_thread(migrations.upgrade, role, urls[role])
    connection = await asyncpg.connect(asyncpg_dsn(urls["finops"]))
    try:
        built = await connection.fetchval("SELECT count(*) FROM mv_finops_period_control")
    finally:
        await connection.close()
    if built and not rebuild:
        print(f"data mart already built ({built} month-currency rows); --rebuild to start over")
        return
    started = time.perf_counter()
    world = build_world(WorldSize(size), seed=seed)
    async with opened_raw_store(settings, process="bench") as store:
        landed = await land_world(store, world, Granularity(granularity))
    lines = sum(kind.read for kind in landed)
    print(f"landed {world.origin}: {lines} documents in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    spec = registered_jobs()["finops"]
    databases = Databases.open(settings, spec.all_databases, process="bench.batch", urls=urls)
    try:
        context = await execute(spec, {}, databases=databases, settings=settings)
    finally:
        await databases.dispose()
    print(f"finops-batch: read {context.read}, written {context.written} in {time.perf_counter() - started:.1f}s")


# ---------------------------------------------------------------------------------------------- server


def serve(port: int, ready_file: Path) -> None:
    """Child process: the finops app (plus the development issuer) under uvicorn, one worker.

    The listening socket is bound with ``SO_REUSEPORT``, so ``--server-workers N`` starts N of these on
    the same port and the kernel spreads the load generator's connections over them.
    """
    import uvicorn  # noqa: PLC0415

    from rosetta.batch.jobs import registered_jobs  # noqa: PLC0415
    from rosetta.batch.launcher import InProcessLauncher  # noqa: PLC0415
    from rosetta.core.http import create_app  # noqa: PLC0415
    from rosetta.core.security.dev_idp import dev_idp_router, dev_issuer_settings  # noqa: PLC0415
    from rosetta.core.settings import data_dir, get_settings  # noqa: PLC0415
    from rosetta.finops.api import context_api  # noqa: PLC0415

    base = f"http://127.0.0.1:{port}"
    settings = get_settings()
    settings = settings.model_copy(update={"oidc_issuers": [dev_issuer_settings(base)]})
    app = create_app(
        [context_api()],
        process="bench",
        settings=settings,
        launcher=InProcessLauncher(registered_jobs(), settings),
        extra_route_handlers=[dev_idp_router(data_dir(), base)],
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            # The lifespan (pools, validator) is up and the socket is listening.
            await asyncio.to_thread(ready_file.touch)

    Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[listener])


@contextlib.contextmanager
def server_processes(args: argparse.Namespace) -> Iterator[tuple[str, list[int]]]:
    """Start ``--server-workers`` :func:`serve` child processes on one port and wait until each is ready."""
    port, workers = args.port, args.server_workers
    base = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="finops-api-bench-") as flags:
        try:
            for index in range(workers):
                # One at a time: the first may start the embedded PostgreSQL, the others then attach to it.
                ready = Path(flags) / f"worker-{index}.ready"
                command = [sys.executable, str(Path(__file__).resolve()), "--data-dir", str(args.data_dir)]
                command += ["--clients", str(args.clients), "--token-cache-seconds", str(args.token_cache_seconds)]
                command += ["serve", "--port", str(port), "--ready-file", str(ready)]
                child = subprocess.Popen(command, cwd=REPO)
                children.append(child)
                deadline = time.monotonic() + 120
                while not ready.exists():
                    if child.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the API server did not start")
                    time.sleep(0.3)
            if httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
                raise SystemExit("the API server is not ready")
            yield base, [child.pid for child in children]
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(timeout=30)


def user_token() -> str:
    """A development token of a plain user (reading is all the bench does)."""
    from rosetta.core.security.dev_idp import load_or_create_key, mint_token  # noqa: PLC0415
    from rosetta.core.settings import data_dir  # noqa: PLC0415

    return mint_token(load_or_create_key(data_dir()), user="bench", groups=["Rosetta_User"], ttl_seconds=3600)


# ---------------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """Real parameters to draw requests from."""

    months: list[date]
    parents: dict[str, list[str]]  # level -> codes that have children at the next level down
    applications: list[str]


_CHILD = {"domain": None, "family": "domain", "product": "family", "application": "product"}


async def workload(dsn: str) -> Workload:
    """Months, parent codes per level and application codes, from the views."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT DISTINCT period FROM mv_finops_period_control ORDER BY 1")
        months = [row["period"] for row in rows]
        parents: dict[str, list[str]] = {}
        for level in ("domain", "family", "product"):
            rows = await connection.fetch(
                "SELECT DISTINCT parent_code FROM mv_finops_cost_rollup_monthly WHERE parent_level = $1 ORDER BY 1",
                level,
            )
            parents[level] = [row["parent_code"] for row in rows]
        applications = [
            row["code"]
            for row in await connection.fetch(
                "SELECT DISTINCT code FROM mv_finops_cost_rollup_monthly WHERE level = 'application' ORDER BY 1"
            )
        ]
    finally:
        await connection.close()
    return Workload(months=months, parents=parents, applications=applications)


@dataclass(frozen=True)
class Call:
    """One request: its URL for the API, and the statements (SQL, parameters) it runs in PostgreSQL."""

    url: str
    statements: list[tuple[str, dict[str, Any]]]


def drilldown_call(rng: random.Random, load: Workload) -> Call:
    """A drill-down: a random level under a random parent, one month or a quarter."""
    from rosetta.finops import queries  # noqa: PLC0415

    level = rng.choice(["domain", "family", "product", "application"])
    parent_level = _CHILD[level]
    parent = rng.choice(load.parents[parent_level]) if parent_level else None
    end_index = rng.randrange(len(load.months))
    start = load.months[max(0, end_index - rng.choice([0, 2]))]
    end = load.months[end_index]
    query = f"level={level}&from={start:%Y-%m}&to={end:%Y-%m}&currency={CURRENCY}&limit=50"
    if parent:
        query += f"&parent={parent}"
    parameters = {
        "level": level,
        "currency": CURRENCY,
        "start": start,
        "end": end,
        "parent": parent,
        "environment": None,
        "after_total": None,
        "after_code": None,
        "limit": 51,
    }
    return Call(
        url=f"{PREFIX}/costs/drilldown?{query}",
        statements=[(queries.DRILLDOWN_SQL.format(amount="effective_cost"), parameters)],
    )


def application_call(rng: random.Random, load: Workload) -> Call:
    """An application page: 13 months ending at the last month."""
    from rosetta.finops import queries  # noqa: PLC0415

    code = rng.choice(load.applications)
    end = load.months[-1]
    parameters = {"code": code, "currency": CURRENCY, "start": queries.add_months(end, -12), "end": end}
    return Call(
        url=f"{PREFIX}/applications/{code}/costs?to={end:%Y-%m}&currency={CURRENCY}",
        statements=[
            (queries.APPLICATION_SQL.format(amount="effective_cost"), parameters),
            (queries.ALLOCATIONS_SQL, parameters),
        ],
    )


def positional(sql: str, parameters: dict[str, Any]) -> tuple[str, list[Any]]:
    """``:name`` SQL in asyncpg's ``$n`` form with its arguments, exactly as the API's reader sends it."""
    from rosetta.finops import queries  # noqa: PLC0415

    query, names = queries.positional(sql)
    return query, [parameters[name] for name in names]


# ---------------------------------------------------------------------------------------------- CPU accounting


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds this (load-generating) process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def backends(dsn: str, application_name: str) -> list[int]:
    """PostgreSQL backend pids of the connections named ``application_name``."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name)
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


@dataclass
class CpuMeter:
    """CPU used during a run by the server process, the database backends and the load generator."""

    dsn: str
    application_name: str
    server_pids: list[int] = field(default_factory=list)
    started: dict[str, Any] | None = None

    def _server_cpu(self) -> float:
        return sum(process_cpu(pid) for pid in self.server_pids)

    async def start(self) -> None:
        pids = await backends(self.dsn, self.application_name)
        self.started = {
            "server": self._server_cpu(),
            "backends": {pid: process_cpu(pid) for pid in pids},
            "client": own_cpu(),
        }

    async def stop(self, result: Result) -> None:
        assert self.started is not None
        pids = await backends(self.dsn, self.application_name)
        before: dict[int, float] = self.started["backends"]
        result.cpu = {
            "server": self._server_cpu() - self.started["server"],
            "postgres": sum(process_cpu(pid) - before.get(pid, 0.0) for pid in pids),
            "client": own_cpu() - self.started["client"],
        }


# ---------------------------------------------------------------------------------------------- load


@dataclass
class Result:
    """Latencies (seconds) of the requests completed within the duration."""

    latencies: list[float]
    elapsed: float
    errors: int
    cpu: dict[str, float] = field(default_factory=dict)

    def line(self, label: str) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000 if ordered else float("nan")
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000 if ordered else float("nan")
        per_request = "  ".join(
            f"{name} {seconds * 1000 / max(1, len(ordered)):.2f}" for name, seconds in self.cpu.items() if seconds
        )
        return (
            f"{label:<30} {len(ordered):>6} req {self.rps:>7.1f} req/s  p50 {p50:>7.2f} ms  p99 {p99:>7.2f} ms"
            f"  errors {self.errors}  CPU ms/req: {per_request}"
        )

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed


async def hammer(clients: int, duration: float, one: Callable[[int], Awaitable[bool]]) -> Result:
    """``clients`` workers calling ``one(worker)`` back to back until ``duration`` has passed."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration

    async def worker(index: int) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            if await one(index):
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(clients)))
    return Result(latencies=latencies, elapsed=time.perf_counter() - started, errors=errors)


class KeepAliveConnection:
    """A bare HTTP/1.1 keep-alive connection on asyncio streams: GET, read the status and the whole body.

    What a load generator needs and no more (no pool, no header objects, no decoding), so that on a
    machine shared with the server the client costs about what asyncpg costs the raw-SQL side.
    """

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self._host, _, port = base.removeprefix("http://").partition(":")
        self._port = int(port or 80)
        lines = "".join(f"{name}: {value}\r\n" for name, value in {"Host": self._host, **headers}.items())
        self._headers = lines.encode("latin-1") + b"\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, url: str) -> tuple[int, bytes]:
        """The status and body of ``GET url`` (the connection is opened on first use and kept)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        self._writer.write(b"GET " + url.encode("ascii") + b" HTTP/1.1\r\n" + self._headers)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            return status, await self._chunked_body()
        if length is None:
            raise RuntimeError("response without Content-Length or chunked encoding")
        return status, await self._reader.readexactly(length)

    async def _chunked_body(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def aclose(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HttpxConnection:
    """The same through one httpx.AsyncClient (the earlier method: about 0.5 ms of client CPU per request)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self._client = httpx.AsyncClient(base_url=base, headers=headers, timeout=60)

    async def get(self, url: str) -> tuple[int, bytes]:
        """The status and body of ``GET url``."""
        response = await self._client.get(url)
        return response.status_code, response.content

    async def aclose(self) -> None:
        """Close the client."""
        await self._client.aclose()


CLIENTS: dict[str, type[KeepAliveConnection | HttpxConnection]] = {
    "raw": KeepAliveConnection,
    "httpx": HttpxConnection,
}


async def run_api(
    base: str, token: str, calls: list[Call], clients: int, duration: float, *, meter: CpuMeter, client: str
) -> Result:
    """The endpoint over HTTP: one keep-alive connection per worker (``client``: raw asyncio or httpx).

    One httpx client shared by 32 tasks spends its time in its own connection-pool bookkeeping (a trivial
    Litestar route tops out near 160 req/s that way on this machine, 600 with a client per worker).
    """
    headers = {"Authorization": f"Bearer {token}"}
    sessions = [CLIENTS[client](base, headers) for _ in range(clients)]
    try:
        for session, call in zip(sessions, calls, strict=False):  # warm up: JWKS, statements, pools
            status, body = await session.get(call.url)
            if status != 200:
                raise SystemExit(f"warm-up GET {call.url}: {status} {body[:300]!r}")
        counter = iter(range(10**9))

        async def one(worker: int) -> bool:
            status, _ = await sessions[worker].get(calls[next(counter) % len(calls)].url)
            return status == 200

        await meter.start()
        result = await hammer(clients, duration, one)
        await meter.stop(result)
        return result
    finally:
        for session in sessions:
            await session.aclose()


async def run_sql(dsn: str, calls: list[Call], clients: int, duration: float, *, meter: CpuMeter) -> Result:
    """The same statements through asyncpg, one pooled connection per worker, rows decoded as the API does.

    The pool is configured like the API's read pool (no ``RESET ALL`` round trip on each release), so
    both sides pay the same database work per request.
    """
    from rosetta.finops.api import keep_session_state  # noqa: PLC0415

    prepared = [[positional(sql, parameters) for sql, parameters in call.statements] for call in calls]
    async with asyncpg.create_pool(
        dsn,
        min_size=clients,
        max_size=clients,
        reset=keep_session_state,
        server_settings={"application_name": "bench.sql"},
    ) as pool:
        counter = iter(range(10**9))

        async def one(_: int) -> bool:
            statements = prepared[next(counter) % len(prepared)]
            async with pool.acquire() as connection:
                for sql, arguments in statements:
                    await connection.fetch(sql, *arguments)
            return True

        for statements in prepared[:clients]:
            async with pool.acquire() as connection:
                for sql, arguments in statements:
                    await connection.fetch(sql, *arguments)
        await meter.start()
        result = await hammer(clients, duration, one)
        await meter.stop(result)
        return result


async def measure(args: argparse.Namespace) -> None:
    """Prepare, serve, and compare each endpoint with its SQL."""
    from rosetta.core.db import asyncpg_dsn, database_urls  # noqa: PLC0415
    from rosetta.core.settings import get_settings  # noqa: PLC0415

    await prepare(args.size, args.granularity, args.seed, args.rebuild)
    if args.prepare_only:
        return
    dsn = asyncpg_dsn((await asyncio.to_thread(database_urls, get_settings(), ("finops",)))["finops"])
    load = await workload(dsn)
    rng = random.Random(args.seed)
    suites = {
        "drilldown": [drilldown_call(rng, load) for _ in range(2000)],
        "application": [application_call(rng, load) for _ in range(2000)],
    }
    print(
        f"world {args.size} ({args.granularity} source lines): {len(load.months)} months, "
        f"{len(load.applications)} applications; {args.clients} clients, {args.duration:.0f}s per run; "
        f"{args.server_workers} server process(es), {args.http_client} HTTP client, "
        f"token cache {args.token_cache_seconds}s"
    )
    token = user_token()
    with server_processes(args) as (base, server_pids):
        for name, calls in suites.items():
            api_meter = CpuMeter(dsn, "rosetta.bench.read", server_pids=server_pids)
            api = await run_api(
                base, token, calls, args.clients, args.duration, meter=api_meter, client=args.http_client
            )
            sql = await run_sql(dsn, calls, args.clients, args.duration, meter=CpuMeter(dsn, "bench.sql"))
            print(api.line(f"API  GET {name}"))
            print(sql.line(f"SQL  {name} (asyncpg)"))
            print(f"{'':<30} API/SQL throughput ratio {api.rps / sql.rps:.2f} (goal >= 0.5)")


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: <tmp>/rosetta-bench/finops-api-<size>-<granularity>"
    )
    parser.add_argument("--size", choices=["small", "medium", "large"], default="large")
    parser.add_argument("--granularity", choices=["day", "month"], default="month")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rebuild", action="store_true", help="land the world and run finops-batch again")
    parser.add_argument("--prepare-only", action="store_true", help="build the data mart, measure nothing")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--token-cache-seconds",
        type=int,
        default=60,
        help="the server's ROSETTA_OIDC_TOKEN_CACHE_SECONDS (0: verify the token's signature on every request)",
    )
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn processes sharing the port")
    parser.add_argument(
        "--http-client",
        choices=sorted(CLIENTS),
        default="raw",
        help="load generator: bare keep-alive connections on asyncio streams (default) or httpx (earlier runs)",
    )
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) the API server process")
    serve_parser.add_argument("--port", type=int, dest="serve_port", default=8765)
    serve_parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    if args.data_dir is None:
        args.data_dir = Path(tempfile.gettempdir()) / "rosetta-bench" / f"finops-api-{args.size}-{args.granularity}"
    args.data_dir = args.data_dir.resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    configure(args.data_dir, args.token_cache_seconds)
    size_pools(args.clients)
    from rosetta.core.embedded import stop_embedded_servers  # noqa: PLC0415

    try:
        if args.command == "serve":
            serve(args.serve_port, args.ready_file)
            return
        asyncio.run(measure(args))
    finally:
        # The embedded PostgreSQL stops with its last holder; the data directory stays for the next run.
        stop_embedded_servers()


if __name__ == "__main__":
    main()

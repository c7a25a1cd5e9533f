"""The ``rosetta`` command: the composition root of every process role.

``rosetta serve ref|finops|monitoring|all`` (a Deployment), ``rosetta batch ...`` (a CronJob),
``rosetta dev`` (everything in one process on an embedded database), ``rosetta db ...`` (migrations).
Context code is imported lazily inside commands, so ``rosetta serve finops`` never loads ``ref``.
Every failure is one line on stderr and a non-zero exit code (see ``rosetta.batch.runner`` for the codes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer

from rosetta.core.errors import (
    BadRequestError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    RosettaError,
    ServiceUnavailableError,
    UnprocessableError,
)

if TYPE_CHECKING:
    from litestar import Litestar

    from rosetta.core.settings import DatabaseRole, Settings

T = TypeVar("T")

app = typer.Typer(
    name="rosetta",
    help="Rosetta V2: referential, FinOps and monitoring backend for Backstage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Create and migrate the databases (one alembic tree per database).", no_args_is_help=True)
batch_app = typer.Typer(help="Run batch jobs (each run has a run_id and a run record).", no_args_is_help=True)
raw_app = typer.Typer(
    help="The landing zone: import files, pull external systems, list imports and rejected records.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(batch_app, name="batch")
app.add_typer(raw_app, name="raw")
demo_app = typer.Typer(
    help="The coherent demo enterprise: land it in the raw zone and write the simulators' dataset.",
    no_args_is_help=True,
)
app.add_typer(demo_app, name="demo")
audit_app = typer.Typer(help="Check the tamper-evident audit logs.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


class ServeTarget(StrEnum):
    """What ``rosetta serve`` serves."""

    REF = "ref"
    FINOPS = "finops"
    MONITORING = "monitoring"
    ALL = "all"


class DatabaseName(StrEnum):
    """The four databases."""

    REF = "ref"
    FINOPS = "finops"
    MONITORING = "monitoring"
    RAW = "raw"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _settings() -> Settings:
    from rosetta.core.settings import get_settings  # noqa: PLC0415

    return get_settings()


def _configure_logging(settings: Settings) -> None:
    from rosetta.core.logging import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_level, settings.effective_log_format)


def _set_data_dir(data_dir: Path | None) -> None:
    if data_dir is not None:
        os.environ["ROSETTA_DATA_DIR"] = str(data_dir)
        from rosetta.core.settings import get_settings  # noqa: PLC0415

        get_settings.cache_clear()


# ---------------------------------------------------------------------------------------------- databases


async def _prepare_databases(settings: Settings, roles: tuple[DatabaseRole, ...], *, migrate: bool) -> list[str]:
    """Create missing databases and (optionally) migrate them; return one line per action."""
    from rosetta.core import migrations  # noqa: PLC0415
    from rosetta.core.db import create_missing_databases, database_urls  # noqa: PLC0415

    urls = await asyncio.to_thread(database_urls, settings, roles)
    lines = [f"created database {name}" for name in await create_missing_databases(urls)]
    if migrate:
        for role in roles:
            before = await migrations.current_revisions(urls[role])
            await asyncio.to_thread(migrations.upgrade, role, urls[role])
            after = await migrations.current_revisions(urls[role])
            state = (
                "already at head" if before == after else f"upgraded {sorted(before) or ['<empty>']} -> {sorted(after)}"
            )
            lines.append(f"{role}: {state}")
    return lines


def _roles(db: DatabaseName | None) -> tuple[DatabaseRole, ...]:
    from rosetta.core.migrations import MIGRATION_ORDER  # noqa: PLC0415

    return (db.value,) if db is not None else MIGRATION_ORDER


@db_app.command("create")
def db_create(
    db: Annotated[DatabaseName | None, typer.Option("--db", help="Only this database.")] = None,
) -> None:
    """Create the databases that do not exist yet."""
    for line in _run(_prepare_databases(_settings(), _roles(db), migrate=False)) or ["nothing to create"]:
        typer.echo(line)


@db_app.command("upgrade")
def db_upgrade(
    db: Annotated[DatabaseName | None, typer.Option("--db", help="Only this database.")] = None,
) -> None:
    """Create missing databases and migrate them to the latest revision (idempotent)."""
    for line in _run(_prepare_databases(_settings(), _roles(db), migrate=True)):
        typer.echo(line)


@db_app.command("current")
def db_current(
    db: Annotated[DatabaseName | None, typer.Option("--db", help="Only this database.")] = None,
) -> None:
    """Show each database's revision next to its tree's head."""
    from rosetta.core import migrations  # noqa: PLC0415
    from rosetta.core.db import database_error, database_urls  # noqa: PLC0415

    settings = _settings()
    roles = _roles(db)
    urls = database_urls(settings, roles)

    async def show() -> list[str]:
        lines = []
        for role in roles:
            try:
                current = await migrations.current_revisions(urls[role])
            except Exception as error:
                described = database_error(error)
                reason = described[1] if described is not None else f"{type(error).__name__}: {error}"
                lines.append(f"{role}: unavailable ({' '.join(reason.split())})")
                unavailable.append(role)
                continue
            head = migrations.heads(role)
            marker = "up to date" if current == head else f"behind (head {', '.join(sorted(head))})"
            lines.append(f"{role}: {', '.join(sorted(current)) or '<empty>'} - {marker}")
        return lines

    unavailable: list[DatabaseRole] = []
    for line in _run(show()):
        typer.echo(line)
    if unavailable:
        # A deploy script checking `db current` must not read "unavailable" as success.
        raise typer.Exit(4)


@db_app.command("revision")
def db_revision(
    db: Annotated[DatabaseName, typer.Option("--db", help="The database whose tree gets the revision.")],
    message: Annotated[str, typer.Option("-m", "--message", help="What the revision does.")],
    rev_id: Annotated[str | None, typer.Option("--rev-id", help="Revision id, e.g. finops_0004.")] = None,
) -> None:
    """Autogenerate a revision from the difference between the models and the (migrated) database."""
    from alembic import command  # noqa: PLC0415

    from rosetta.core.db import database_urls  # noqa: PLC0415
    from rosetta.core.migrations import alembic_config  # noqa: PLC0415

    role: DatabaseRole = db.value
    url = database_urls(_settings(), (role,))[role]
    command.revision(alembic_config(role, url), message=message, autogenerate=True, rev_id=rev_id)


# ---------------------------------------------------------------------------------------------- serving


def _context_apps(target: ServeTarget) -> list[Any]:
    """The ContextApi of each context served, imported lazily."""
    contexts = []
    if target in (ServeTarget.REF, ServeTarget.ALL):
        from rosetta.ref.api import context_api as ref_api  # noqa: PLC0415

        contexts.append(ref_api())
    if target in (ServeTarget.FINOPS, ServeTarget.ALL):
        from rosetta.finops.api import context_api as finops_api  # noqa: PLC0415

        contexts.append(finops_api())
    if target in (ServeTarget.MONITORING, ServeTarget.ALL):
        from rosetta.monitoring.api import context_api as monitoring_api  # noqa: PLC0415

        contexts.append(monitoring_api())
    return contexts


def build_app(target: str, *, dev: bool = False, dev_url: str = "http://127.0.0.1:8000") -> Litestar:
    """The app of one process role (also the ``--factory`` target of multi-worker serving).

    With ``dev``, the app also serves the development identity provider under ``/_dev/idp`` and trusts
    it; ``dev_url`` is where this very process is reachable (its JWKS is fetched from there over HTTP).
    """
    from rosetta.batch.jobs import registered_jobs  # noqa: PLC0415
    from rosetta.batch.kubernetes import KubernetesJobLauncher  # noqa: PLC0415
    from rosetta.batch.launcher import InProcessLauncher  # noqa: PLC0415
    from rosetta.core.http import create_app  # noqa: PLC0415
    from rosetta.core.runs import RunLauncher  # noqa: PLC0415

    settings = _settings()
    serve_target = ServeTarget(target)
    extra_handlers: list[Any] = []
    if dev:
        from rosetta.core.security.dev_idp import dev_idp_router, dev_issuer_settings  # noqa: PLC0415
        from rosetta.core.settings import data_dir  # noqa: PLC0415

        extra_handlers.append(dev_idp_router(data_dir(), dev_url))
        settings = settings.model_copy(update={"oidc_issuers": [*settings.oidc_issuers, dev_issuer_settings(dev_url)]})
        settings = _with_dev_simulators(settings, extra_handlers, dev_url)
    launcher: RunLauncher = InProcessLauncher(registered_jobs(), settings)
    if settings.batch_launcher == "kubernetes" and not dev:
        launcher = KubernetesJobLauncher(registered_jobs(), settings)
    return create_app(
        _context_apps(serve_target),
        process="dev" if dev else serve_target.value,
        settings=settings,
        launcher=launcher,
        extra_route_handlers=extra_handlers,
    )


def _app_factory_all() -> Litestar:
    """The app of one worker process of ``rosetta serve --workers N`` (a fresh interpreter per worker)."""
    _exit_cleanly_on_sigterm()
    return build_app(os.environ.get("ROSETTA_SERVE_TARGET", "all"))


def _exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM (Kubernetes, ``kill``) unwind like Ctrl-C.

    uvicorn re-raises the signal it caught once it has shut down; with the default SIGTERM action the
    process would die on the spot, skipping ``finally`` blocks and ``atexit`` (the embedded PostgreSQL
    would be left running).
    """

    def raise_system_exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_system_exit)


def _refuse_a_taken_port(host: str, port: int) -> None:
    """Fail as one line (OSError: exit 4) when ``host:port`` is taken or cannot be listened on.

    Left to uvicorn, a taken port is a log line and exit 3, the code of "another run in progress".
    """
    socket.create_server((host, port)).close()


def _serve(app_or_factory: Any, *, host: str, port: int, workers: int = 1) -> None:
    """Serve an app with uvicorn until SIGINT/SIGTERM, then release the embedded database if one was used."""
    import uvicorn  # noqa: PLC0415

    from rosetta.core.embedded import stop_embedded_servers  # noqa: PLC0415

    _refuse_a_taken_port(host, port)
    _exit_cleanly_on_sigterm()
    try:
        if workers > 1:
            uvicorn.run(
                "rosetta.cli:_app_factory_all",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_config=None,
                proxy_headers=True,
            )
        else:
            uvicorn.run(app_or_factory, host=host, port=port, log_config=None, proxy_headers=True)
    finally:
        stop_embedded_servers()


@app.command()
def serve(
    target: Annotated[ServeTarget, typer.Argument(help="The context to serve, or all three.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve one context's API (a Kubernetes Deployment), or all three in one process."""
    settings = _settings()
    _configure_logging(settings)
    os.environ["ROSETTA_SERVE_TARGET"] = target.value
    _serve(build_app(target.value), host=host, port=port, workers=workers)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="TCP port of the whole platform.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (default ROSETTA_DATA_DIR or ./.rosetta).")
    ] = None,
) -> None:
    """Start the whole platform in one process: embedded PostgreSQL, all three APIs, demo data."""
    _refuse_a_taken_port(host, port)  # before minutes of database set-up and demo data, not after
    _set_data_dir(data_dir)
    settings = _settings()
    _configure_logging(settings)
    from rosetta.core.embedded import stop_embedded_servers  # noqa: PLC0415
    from rosetta.core.migrations import MIGRATION_ORDER  # noqa: PLC0415

    _exit_cleanly_on_sigterm()
    try:
        for line in _run(_prepare_databases(settings, MIGRATION_ORDER, migrate=True)):
            typer.echo(f"rosetta dev: {line}", err=True)
        _load_demo_world(settings)
        _build_finops_mart(settings)
        base = f"http://{host}:{port}"
        typer.echo(f"rosetta dev: serving {base}  (docs: {base}/api/finops/v1/docs, health: {base}/readyz)", err=True)
        # The dev issuer's JWKS is fetched from this process itself, on loopback when listening everywhere.
        local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
        typer.echo("rosetta dev: get a token with: rosetta token --group Rosetta_Admin --user alice", err=True)
        typer.echo(f"rosetta dev: simulators at {local}/_sim/{{dynatrace,servicenow,argocd}}", err=True)
        _serve(build_app("all", dev=True, dev_url=local), host=host, port=port)
    finally:
        stop_embedded_servers()


def _load_demo_world(settings: Settings) -> None:
    """First start of ``rosetta dev``: the small demo world in the raw zone and in ``<data_dir>/simulators``."""
    from rosetta.core.settings import data_dir as resolved_data_dir  # noqa: PLC0415
    from rosetta.demo.landing import load_on_first_start  # noqa: PLC0415
    from rosetta.raw.store import open_raw_store  # noqa: PLC0415

    store = open_raw_store(settings, process="demo")

    async def load() -> None:
        try:
            await load_on_first_start(
                store, resolved_data_dir() / "simulators", lambda line: typer.echo(f"rosetta dev: {line}", err=True)
            )
        finally:
            await store.close()

    _run(load())


def _build_finops_mart(settings: Settings) -> None:
    """First start of ``rosetta dev``: run finops-batch once over the demo world, so the dashboards have data."""
    from rosetta.batch.finops import FINOPS_JOB  # noqa: PLC0415
    from rosetta.batch.runner import execute  # noqa: PLC0415
    from rosetta.core.db import Databases, database_urls  # noqa: PLC0415
    from rosetta.finops import service  # noqa: PLC0415

    async def build() -> None:
        urls = await asyncio.to_thread(database_urls, settings, FINOPS_JOB.all_databases)
        databases = Databases.open(settings, FINOPS_JOB.all_databases, process="dev", urls=urls)
        try:
            async with databases.unit_of_work("finops") as session:
                built = await service.mart_built(session)
            if built:
                typer.echo("rosetta dev: FinOps data mart already built", err=True)
                return
            typer.echo("rosetta dev: first start: building the FinOps data mart (finops-batch)", err=True)
            context = await execute(FINOPS_JOB, {}, databases=databases, settings=settings, requested_by="rosetta dev")
            typer.echo(
                f"rosetta dev: finops run {context.run_id}: read {context.read}, written {context.written}", err=True
            )
        finally:
            await databases.dispose()

    _run(build())


class DemoSize(StrEnum):
    """Sizes of the demo world (about 40, 500 and 5,000 applications)."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class DemoGranularity(StrEnum):
    """Period of one cost line of the demo world."""

    DAY = "day"
    MONTH = "month"


@demo_app.command("generate")
def demo_generate(  # noqa: PLR0917 - typer maps every option to a parameter
    size: Annotated[DemoSize, typer.Option("--size", help="small ~40, medium ~500, large ~5,000 applications.")] = (
        DemoSize.SMALL
    ),
    seed: Annotated[int, typer.Option("--seed", help="Same seed (and --end), same world, byte for byte.")] = 1,
    out: Annotated[
        Path | None, typer.Option("--out", help="Simulator dataset directory (default <data dir>/simulators).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="Last month of the 13, YYYY-MM (default 2026-10, not today).")
    ] = None,
    no_land: Annotated[bool, typer.Option("--no-land", help="Only write the dataset; land nothing.")] = False,
    granularity: Annotated[
        DemoGranularity, typer.Option("--granularity", help="One cost line per day (default) or per month.")
    ] = DemoGranularity.DAY,
) -> None:
    """Generate the demo world: FinOps documents into the raw zone, ServiceNow/Dynatrace/Argo CD simulator files."""
    import time  # noqa: PLC0415

    from rosetta.core.settings import data_dir as resolved_data_dir  # noqa: PLC0415
    from rosetta.demo.landing import generate_demo  # noqa: PLC0415
    from rosetta.demo.world import Granularity, WorldSize, build_world  # noqa: PLC0415

    started = time.perf_counter()
    world = build_world(WorldSize(size.value), seed, end)
    typer.echo(f"{world.origin}: {len(world.applications)} applications, {len(world.products)} products")
    settings = _settings()
    store = None
    if not no_land:
        from rosetta.raw.store import open_raw_store  # noqa: PLC0415

        store = open_raw_store(settings, process="demo")

    async def go() -> None:
        try:
            await generate_demo(
                store,
                world,
                out or resolved_data_dir() / "simulators",
                granularity=Granularity(granularity.value),
                echo=typer.echo,
            )
        finally:
            if store is not None:
                await store.close()

    _run(go())
    typer.echo(f"done in {time.perf_counter() - started:.1f}s")


@app.command()
def token(
    group: Annotated[list[str], typer.Option("--group", "-g", help="AD group of the token (repeat for several).")],
    user: Annotated[str, typer.Option("--user", "-u", help="Subject of the token.")] = "alice",
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 30m, 1h, 2d (at most 7d).")] = "1h",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (default ROSETTA_DATA_DIR or ./.rosetta).")
    ] = None,
) -> None:
    """Print a token signed by the development identity provider (trusted by `rosetta dev` only)."""
    _set_data_dir(data_dir)
    from rosetta.core.security.dev_idp import load_or_create_key, mint_token, parse_ttl  # noqa: PLC0415
    from rosetta.core.settings import data_dir as resolved_data_dir  # noqa: PLC0415

    seconds = parse_ttl(ttl)
    typer.echo(mint_token(load_or_create_key(resolved_data_dir()), user=user, groups=group, ttl_seconds=seconds))


class AuditedDatabase(StrEnum):
    """The databases that hold an audit log."""

    REF = "ref"
    FINOPS = "finops"
    MONITORING = "monitoring"


@audit_app.command("verify")
def audit_verify(
    db: Annotated[AuditedDatabase, typer.Option("--db", help="The database whose audit chain is checked.")],
) -> None:
    """Recompute the audit log's hash chain; name the first broken row and exit non-zero if any."""
    from rosetta.core.audit import AuditChainBrokenError, verify_chain  # noqa: PLC0415
    from rosetta.core.db import Databases, database_urls  # noqa: PLC0415

    settings = _settings()
    role: DatabaseRole = db.value

    async def check() -> Any:
        urls = await asyncio.to_thread(database_urls, settings, (role,))
        databases = Databases.open(settings, (role,), process="audit-verify", urls=urls)
        try:
            async with databases.engines[role].connect() as connection:
                return await verify_chain(connection)
        finally:
            await databases.dispose()

    report = _run(check())
    if not report.intact:
        raise AuditChainBrokenError(
            f"{role}: audit chain broken at row seq={report.broken_seq}: {report.problem} "
            f"({report.rows} row(s) before it are intact)"
        )
    typer.echo(f"{role}: audit chain intact: {report.rows} row(s), head hash {report.head_hash}")


# ---------------------------------------------------------------------------------------------- batches


def command_line_requester() -> str:
    """``cli:<user>@<host>`` for a run started from a shell or a CronJob pod (the pod's name is its host)."""
    import getpass  # noqa: PLC0415

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a passwd entry
        user = f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"


def run_batch_job(name: str, parameters: dict[str, Any], *, run_id: uuid.UUID | None = None) -> None:
    """Run one registered job from the command line, with progress and the documented exit codes.

    With ``run_id``, execute that queued run (a Job made by the Kubernetes launcher) with its own parameters.
    """
    from rosetta.batch.jobs import registered_jobs  # noqa: PLC0415
    from rosetta.batch.progress import progress_for  # noqa: PLC0415
    from rosetta.batch.runner import execute, launched_parameters  # noqa: PLC0415
    from rosetta.core.db import Databases, database_urls  # noqa: PLC0415

    settings = _settings()
    _configure_logging(settings)
    spec = registered_jobs()[name]

    async def go() -> Any:
        urls = await asyncio.to_thread(database_urls, settings, spec.all_databases)
        databases = Databases.open(settings, spec.all_databases, process=f"batch.{name}", urls=urls)
        try:
            arguments = parameters if run_id is None else await launched_parameters(databases, spec, run_id)
            return await execute(
                spec,
                arguments,
                databases=databases,
                settings=settings,
                progress=progress_for(),
                run_id=run_id,
                # A launched run keeps who asked for it through the API; a command-line run says who ran it where.
                requested_by=None if run_id is not None else command_line_requester(),
            )
        finally:
            await databases.dispose()

    context = _run(go())
    typer.echo(
        f"{name} run {context.run_id} succeeded: read {context.read}, written {context.written}, "
        f"rejected {context.rejected}"
    )


@batch_app.command("finops")
def batch_finops(
    period: Annotated[str | None, typer.Option("--period", help="Rebuild one month (YYYY-MM).")] = None,
    period_from: Annotated[str | None, typer.Option("--from", help="First month to rebuild (YYYY-MM).")] = None,
    period_to: Annotated[str | None, typer.Option("--to", help="Last month to rebuild (YYYY-MM).")] = None,
    run_id: Annotated[
        uuid.UUID | None,
        typer.Option("--run-id", help="Execute this queued run (started through the API) with its parameters."),
    ] = None,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Empty a requested month the raw zone has no source for (refused by default if the mart has data).",
        ),
    ] = False,
) -> None:
    """Rebuild the FinOps data mart from the raw zone (default: every month found there)."""
    from rosetta.core.errors import BadRequestError  # noqa: PLC0415
    from rosetta.finops import service  # noqa: PLC0415
    from rosetta.finops.schemas import BatchRunRequest  # noqa: PLC0415

    if run_id is not None:
        if period or period_from or period_to or allow_empty:
            raise ConfigurationError(
                "invalid option: --run-id takes the queued run's own parameters, not --period/--from/--to/--allow-empty"
            )
        run_batch_job("finops", {}, run_id=run_id)
        return
    request = BatchRunRequest(period=period, period_from=period_from, period_to=period_to, allow_empty=allow_empty)
    try:
        parameters = service.batch_parameters(request)
    except BadRequestError as error:
        # Exit code 2 (bad arguments), like any other usage error of a batch command.
        raise ConfigurationError(f"invalid option: {error.detail}") from None
    run_batch_job("finops", parameters)


# ---------------------------------------------------------------------------------------------- raw zone
# `rosetta raw import|imports|rejected` (file importers, rosetta.raw) are defined just below;
# `rosetta raw pull ...` (connectors) goes after them, in its own block, on the same `raw_app` group.

_JSON_OPTION = typer.Option("--json", help="Print JSON (for scripts) instead of text.")


@raw_app.command("import")
def raw_import(
    file: Annotated[Path, typer.Argument(help="A .csv, .xlsx, .json or .ndjson file (FOCUS CSVs are recognised).")],
    source: Annotated[str, typer.Option("--source", help="Where the data comes from, e.g. cmdb, aws, finance.")],
    kind: Annotated[
        str | None, typer.Option("--kind", help="What a record is (default: focus for FOCUS CSVs, else the file name).")
    ] = None,
    sheet: Annotated[str | None, typer.Option("--sheet", help="Excel sheet name or 1-based position.")] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Land one file in the raw zone; bad rows are kept as rejected records with their line and reason."""
    from rosetta.raw.importers import import_file  # noqa: PLC0415
    from rosetta.raw.reporting import import_json, import_lines  # noqa: PLC0415
    from rosetta.raw.store import opened_raw_store  # noqa: PLC0415

    async def go() -> Any:
        async with opened_raw_store(_settings(), process="raw.import") as store:
            return await import_file(store, file, source=source, kind=kind, sheet=sheet)

    result = _run(go())
    for line in [import_json(result)] if as_json else import_lines(result):
        typer.echo(line)


@raw_app.command("imports")
def raw_imports(
    source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 20,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """List imports and pulls, newest first, with their counts."""
    from rosetta.raw.reporting import imports_lines, to_json  # noqa: PLC0415
    from rosetta.raw.store import opened_raw_store  # noqa: PLC0415

    async def go() -> Any:
        async with opened_raw_store(_settings(), process="raw.imports") as store:
            return await store.list_imports(source=source, kind=kind, limit=limit)

    imports = _run(go())
    for line in [to_json(imports)] if as_json else imports_lines(imports):
        typer.echo(line)


@raw_app.command("rejected")
def raw_rejected(
    import_id: Annotated[str | None, typer.Option("--import", help="Only this import (its id).")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Show rejected records with their line and reason."""
    import uuid  # noqa: PLC0415

    from rosetta.core.errors import BadRequestError  # noqa: PLC0415
    from rosetta.raw.reporting import first_rejected, rejected_line, to_json  # noqa: PLC0415
    from rosetta.raw.store import opened_raw_store  # noqa: PLC0415

    try:
        wanted = uuid.UUID(import_id) if import_id is not None else None
    except ValueError:
        raise BadRequestError(f"--import: {import_id!r} is not an import id") from None

    async def go() -> Any:
        async with opened_raw_store(_settings(), process="raw.rejected") as store:
            return await first_rejected(store, source=source, import_id=wanted, limit=limit)

    records = _run(go())
    if as_json:
        typer.echo(to_json(records))
        return
    for record in records or []:
        typer.echo(f"{record.source}/{record.kind} {record.import_id} {rejected_line(record)}")
    if not records:
        typer.echo("no rejected records")


# ---------------------------------------------------------------------------------------------- pulls, simulators
# `rosetta raw pull ...` (rosetta.raw.pull over rosetta.connectors) and `rosetta simulate ...` (rosetta.simulators).


class PullTarget(StrEnum):
    """What ``rosetta raw pull`` reads."""

    SERVICENOW = "servicenow"
    CMDB = "cmdb"
    DYNATRACE = "dynatrace"
    ARGOCD = "argocd"


@raw_app.command("pull")
def raw_pull(
    target: Annotated[
        PullTarget,
        typer.Argument(
            help="servicenow (incident, change_request), cmdb (the three CMDB tables), dynatrace or argocd."
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Read from this time, not from the stored high-water mark: 2026-01-31, ISO 8601 (UTC unless an "
            "offset is given) or now-7d.",
        ),
    ] = None,
    as_json: Annotated[bool, _JSON_OPTION] = False,
) -> None:
    """Pull an external system into the raw zone; each stream's high-water mark advances once it completed."""
    import json  # noqa: PLC0415

    from rosetta.raw.pull import parse_since, run_pull  # noqa: PLC0415
    from rosetta.raw.store import opened_raw_store  # noqa: PLC0415

    settings = _settings()
    try:
        start = parse_since(since) if since else None
    except RosettaError as error:
        raise ConfigurationError(error.detail) from None  # a bad argument: exit code 2, like a usage error

    async def go() -> Any:
        async with opened_raw_store(settings, process="raw.pull") as store:
            return await run_pull(settings, store, target.value, since=start)

    try:
        summary = _run(go())
    except RosettaError as error:
        if as_json and "pull" in error.extra:
            typer.echo(json.dumps(error.extra["pull"]))
        raise
    for line in [json.dumps(summary.as_json())] if as_json else summary.lines():
        typer.echo(line)


class SimulateTarget(StrEnum):
    """What ``rosetta simulate`` serves."""

    DYNATRACE = "dynatrace"
    SERVICENOW = "servicenow"
    ARGOCD = "argocd"
    ALL = "all"


@app.command()
def simulate(
    target: Annotated[SimulateTarget, typer.Argument(help="One system at the root, or all under /_sim/<system>.")] = (
        SimulateTarget.ALL
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8100,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset directory (default <data dir>/simulators, written by rosetta demo)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fault injectors (PUT /_admin/faults sets rules).")] = 0,
) -> None:
    """Serve the Dynatrace, ServiceNow and Argo CD simulators (faults injectable through /_admin/faults)."""
    import uvicorn  # noqa: PLC0415

    from rosetta.core.settings import data_dir  # noqa: PLC0415
    from rosetta.simulators.compose import SYSTEMS, base_urls, build_simulators, composed_app  # noqa: PLC0415
    from rosetta.simulators.dataset import load_dataset  # noqa: PLC0415

    if data is not None and not data.is_dir():
        raise ConfigurationError(f"--data {data}: not a directory")
    systems = SYSTEMS if target is SimulateTarget.ALL else (target.value,)
    simulators = build_simulators(load_dataset(data or data_dir() / "simulators"), systems, seed=seed)  # type: ignore[arg-type]
    served = composed_app(simulators) if target is SimulateTarget.ALL else simulators.apps()[target.value].asgi  # type: ignore[index]
    listener = socket.create_server((host, port))  # fails here, as one line, when the port is taken
    for name, url in base_urls(f"http://{host}:{port}", systems, mounted=target is SimulateTarget.ALL).items():  # type: ignore[arg-type]
        typer.echo(f"rosetta simulate: {name} at {url}", err=True)
    uvicorn.Server(uvicorn.Config(served, log_config=None)).run(sockets=[listener])


def _with_dev_simulators(settings: Settings, handlers: list[Any], dev_url: str) -> Settings:
    """``rosetta dev``: mount the simulators under /_sim and point every connector without a URL at them."""
    from rosetta.core.settings import data_dir  # noqa: PLC0415
    from rosetta.simulators.compose import development_wiring  # noqa: PLC0415

    configured = {"dynatrace": settings.dynatrace, "servicenow": settings.servicenow, "argocd": settings.argocd}
    mounts, connectors = development_wiring(data_dir() / "simulators", dev_url, configured)  # type: ignore[arg-type]
    handlers.extend(mounts)
    return settings.model_copy(update={str(name): system for name, system in connectors.items()})


# ---------------------------------------------------------------------------------------------- entry point


def exit_code_for(error: BaseException) -> int:
    """The documented exit code of an error (see ``rosetta.batch.runner``)."""
    from rosetta.batch.runner import EXIT_FAILED, EXIT_LOCKED, EXIT_UNAVAILABLE, EXIT_USAGE  # noqa: PLC0415

    if isinstance(error, ConflictError):
        return EXIT_LOCKED
    if isinstance(error, ServiceUnavailableError | OSError):
        return EXIT_UNAVAILABLE
    # A bad value, a file or run id that does not exist: the command line is wrong, whichever command it is.
    # (Errors inside a run are RunFailedError, exit 1.)
    if isinstance(error, ConfigurationError | BadRequestError | NotFoundError | UnprocessableError):
        return EXIT_USAGE
    return EXIT_FAILED


_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
# Exit codes of rosetta.batch.runner: usage/configuration 2, unavailable 4, failed 1.
_DATABASE_ERROR_EXITS: dict[str, int] = {"configuration": 2, "unavailable": 4, "failed": 1}


def _one_line(text: str) -> str:
    return " ".join(text.split())


# Typer 0.2x parses with its own copy of click (typer._click): its usage errors and Exit/Abort are not click's
# classes. Both are caught, so a bad argument is one line and exit code 2 whichever typer is installed.
_EXITS: tuple[type[BaseException], ...] = (click.exceptions.Exit, typer.Exit)
_ABORTS: tuple[type[BaseException], ...] = (click.exceptions.Abort, typer.Abort)
_USAGE_ERRORS: tuple[type[Exception], ...] = (
    click.ClickException,
    getattr(typer, "TyperException", click.ClickException),
)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command; turn every failure into one stderr line and an exit code."""
    try:
        result = app(args=argv, prog_name="rosetta", standalone_mode=False)
    except _EXITS as done:
        sys.exit(getattr(done, "exit_code", 0))
    except _ABORTS:
        print("rosetta: interrupted", file=sys.stderr)
        sys.exit(_INTERRUPTED)
    except _USAGE_ERRORS as error:
        format_message = getattr(error, "format_message", None)
        message = format_message() if callable(format_message) else str(error)
        print(f"rosetta: error: {_one_line(message)}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    except RosettaError as error:
        print(f"rosetta: error: {_one_line(error.detail)}", file=sys.stderr)
        sys.exit(exit_code_for(error))
    except KeyboardInterrupt:
        print("rosetta: interrupted", file=sys.stderr)
        sys.exit(_INTERRUPTED)
    except OSError as error:
        print(f"rosetta: error: {_one_line(str(error))}", file=sys.stderr)
        sys.exit(exit_code_for(error))
    except Exception as error:
        from rosetta.core.db import database_error  # noqa: PLC0415

        # A database that refuses us (wrong name or role, not started) is an operator's problem, said in one
        # line; any other exception is a bug and keeps its traceback.
        described = database_error(error)
        if described is None:
            raise
        kind, detail = described
        print(f"rosetta: error: {_one_line(detail)}", file=sys.stderr)
        sys.exit(_DATABASE_ERROR_EXITS[kind])
    if result == _INTERRUPTED:
        # Recent click returns Ctrl-C's exit code instead of raising Abort when not in standalone mode.
        print("rosetta: interrupted", file=sys.stderr)
    sys.exit(result if isinstance(result, int) else 0)

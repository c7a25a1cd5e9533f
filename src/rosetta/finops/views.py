"""The dashboard materialized views: rebuilt beside the live ones, several at once, then swapped in (ADR 0007).

``REFRESH MATERIALIZED VIEW CONCURRENTLY`` computes a view, then diffs the result against the old contents
(a full join on every column) and applies the difference row by row. On the large world, where the views
are nearly as large as the facts, that diff made the refresh cost three times a plain refresh and left every
replaced row behind as a dead tuple. Instead, for each view:

1. its query is read from the catalogue (the migrations stay the only definition), materialized under a
   temporary name in one transaction per view, with the view's indexes, grants and comment, then analyzed
   (so the API's first query after the swap is planned on real statistics) and vacuumed (so its index-only
   scans skip the heap), with autovacuum off (it is never modified, only replaced); the views are spread over
   several connections, largest first, so PostgreSQL builds them on several cores;
2. ONE short transaction drops the old views and renames the new ones into place: a reader sees all the old
   views or all the new ones. The swap needs a moment of ``ACCESS EXCLUSIVE`` on each view; it waits at most
   ``SWAP_LOCK_TIMEOUT`` for the readers in flight and retries, and if readers keep a view busy through every
   attempt it falls back to ``REFRESH ... CONCURRENTLY``, which never waits for readers.

A session advisory lock (``finops.views``) serialises rebuilds, so two runs never build the same temporary
names; the temporary views of a killed run are dropped by the next rebuild.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from rosetta.core.db import sql_literal
from rosetta.core.runs import advisory_lock_key

logger = logging.getLogger(__name__)

VIEWS_LOCK = "finops.views"
# Room for the views' hash aggregates, so a build never falls back to sorting on text keys.
BUILD_WORK_MEM = "256MB"
SWAP_LOCK_TIMEOUT = "2s"
SWAP_ATTEMPTS = 5
SWAP_RETRY_SECONDS = 0.5
_TEMPORARY_PREFIX = "finops_next_"
_INDEX_DEFINITION = re.compile(r"^(CREATE (?:UNIQUE )?INDEX) \S+ ON (?:ONLY )?\S+ (USING .*)$", re.DOTALL)


@dataclass(frozen=True)
class LiveView:
    """What it takes to build a twin of one materialized view, read from the catalogue."""

    name: str
    query: str
    indexes: tuple[tuple[str, str], ...]  # (index name, its CREATE INDEX statement)
    grants: tuple[str, ...]  # "SELECT TO reader" clauses, applied to the twin
    comment: str | None
    estimated_rows: float


@dataclass(frozen=True)
class Twin:
    """A live view and the names of its freshly built twin and the twin's indexes."""

    view: LiveView
    name: str
    index_names: tuple[str, ...]


async def live_views(connection: asyncpg.Connection, names: Sequence[str]) -> list[LiveView]:
    """The definitions of the named materialized views of the current schema, in the order given."""
    rows = await connection.fetch(
        """
        SELECT c.oid, c.relname, pg_get_viewdef(c.oid) AS query, c.reltuples,
               obj_description(c.oid, 'pg_class') AS comment,
               ARRAY(SELECT format('%s ON %%s TO %s%s', a.privilege_type,
                                   CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                        ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                                   CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
                     FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) AS grants,
               ARRAY(SELECT ARRAY[i.relname::text, pg_get_indexdef(i.oid)]
                     FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                     WHERE x.indrelid = c.oid ORDER BY i.relname) AS indexes
        FROM pg_class c
        WHERE c.relkind = 'm' AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1::text[])
        """,
        list(names),
    )
    found = {row["relname"]: row for row in rows}
    missing = [name for name in names if name not in found]
    if missing:
        raise LookupError(f"materialized views not found (migrations not applied?): {', '.join(missing)}")
    return [
        LiveView(
            name=name,
            query=found[name]["query"].strip().rstrip(";"),
            indexes=tuple((index_name, definition) for index_name, definition in found[name]["indexes"]),
            grants=tuple(found[name]["grants"]),
            comment=found[name]["comment"],
            estimated_rows=max(float(found[name]["reltuples"]), 0.0),
        )
        for name in names
    ]


async def rebuild_views(
    work: asyncpg.Connection,
    builders: Sequence[asyncpg.Connection],
    names: Sequence[str],
    *,
    tag: str,
    lock_timeout: str = SWAP_LOCK_TIMEOUT,
    attempts: int = SWAP_ATTEMPTS,
) -> str:
    """Rebuild the named views beside the live ones on ``builders`` and swap them in on ``work``.

    ``tag`` (hex, unique per run) names the twins. Returns how the views were replaced: ``"swapped"``, or
    ``"refreshed concurrently"`` when readers held a view through every one of ``attempts`` swaps, each
    waiting at most ``lock_timeout``.
    """
    key = advisory_lock_key(VIEWS_LOCK)
    await work.execute("SELECT pg_advisory_lock($1)", key)
    twins: list[Twin] = []
    try:
        await drop_leftover_twins(work)
        views = await live_views(work, names)
        twins = [_twin(view, number, tag) for number, view in enumerate(views)]
        await _build_all(builders, twins)
        if await _swap(work, twins, lock_timeout=lock_timeout, attempts=attempts):
            return "swapped"
        logger.warning("readers kept the finops views busy; falling back to REFRESH CONCURRENTLY")
        await _drop_twins(work, twins)
        async with work.transaction():
            await work.execute(f"SET LOCAL work_mem = '{BUILD_WORK_MEM}'")
            for view in views:
                await work.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view.name}")
        return "refreshed concurrently"
    except BaseException:
        # Best effort: a broken connection leaves the twins to the next rebuild's clean-up.
        if twins and not work.is_closed():
            try:
                await _drop_twins(work, twins)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                logger.warning("could not drop this run's view twins; the next rebuild will")
        raise
    finally:
        if not work.is_closed():
            await work.execute("SELECT pg_advisory_unlock($1)", key)


async def drop_leftover_twins(connection: asyncpg.Connection) -> None:
    """Drop the twins a killed run left behind (call with the views lock held: none of them is live)."""
    for row in await connection.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'm' AND relnamespace = current_schema()::regnamespace"
        " AND relname LIKE $1",
        _TEMPORARY_PREFIX.replace("_", "\\_") + "%",
    ):
        await connection.execute(f'DROP MATERIALIZED VIEW IF EXISTS "{row["relname"]}"')


def _twin(view: LiveView, number: int, tag: str) -> Twin:
    # Short generated names: the live names plus a suffix could pass PostgreSQL's 63-byte limit.
    name = f"{_TEMPORARY_PREFIX}{tag}_{number}"
    return Twin(view, name, tuple(f"{name}_{position}" for position in range(len(view.indexes))))


async def _build_all(builders: Sequence[asyncpg.Connection], twins: Sequence[Twin]) -> None:
    """Build every twin, the largest first, each connection taking the next view as soon as it is free."""
    queue = sorted(twins, key=lambda twin: -twin.view.estimated_rows)

    async def worker(connection: asyncpg.Connection) -> None:
        while queue:
            await _build(connection, queue.pop(0))

    await asyncio.gather(*(worker(connection) for connection in builders))
    # Sets the visibility map (VACUUM cannot run inside a transaction), so the API's index-only scans of a
    # fresh view do not visit the heap: 60 ms on the largest view of the large world. Only once every twin is
    # built: a twin vacuumed while another builder's transaction (begun before its commit) is open keeps its
    # rows not all-visible. Concurrent VACUUMs do not hold each other back.
    unvacuumed = list(twins)

    async def vacuum(connection: asyncpg.Connection) -> None:
        while unvacuumed:
            await connection.execute(f"VACUUM {unvacuumed.pop(0).name}")

    await asyncio.gather(*(vacuum(connection) for connection in builders))


async def _build(connection: asyncpg.Connection, twin: Twin) -> None:
    """Materialize one twin with its indexes, grants, comment and statistics, in one transaction."""
    view = twin.view
    async with connection.transaction():
        await connection.execute(f"SET LOCAL work_mem = '{BUILD_WORK_MEM}'")
        # Never modified, only replaced by the next run: autovacuum has nothing to do on it, and a worker
        # busy on a view would hold up the swap's DROP until it is cancelled (a second each time).
        await connection.execute(
            f"CREATE MATERIALIZED VIEW {twin.name} WITH (autovacuum_enabled = false) AS {view.query} WITH DATA"
        )
        for (_, definition), index_name in zip(view.indexes, twin.index_names, strict=True):
            match = _INDEX_DEFINITION.match(definition)
            if match is None:
                raise ValueError(f"unexpected index definition on {view.name}: {definition}")
            await connection.execute(f"{match[1]} {index_name} ON {twin.name} {match[2]}")
        for grant in view.grants:
            await connection.execute("GRANT " + grant.replace("%s", twin.name, 1))
        if view.comment is not None:
            await connection.execute(f"COMMENT ON MATERIALIZED VIEW {twin.name} IS {sql_literal(view.comment)}")
        await connection.execute(f"ANALYZE {twin.name}")


async def _swap(work: asyncpg.Connection, twins: Sequence[Twin], *, lock_timeout: str, attempts: int) -> bool:
    """Replace every live view by its twin in ONE transaction; False if readers held a view every time."""
    for attempt in range(1, attempts + 1):
        try:
            async with work.transaction():
                await work.execute(f"SET LOCAL lock_timeout = '{lock_timeout}'")
                for twin in twins:
                    await work.execute(f"DROP MATERIALIZED VIEW {twin.view.name}")
                    await work.execute(f"ALTER MATERIALIZED VIEW {twin.name} RENAME TO {twin.view.name}")
                    for (index_name, _), temporary in zip(twin.view.indexes, twin.index_names, strict=True):
                        await work.execute(f"ALTER INDEX {temporary} RENAME TO {index_name}")
            return True
        except asyncpg.LockNotAvailableError:
            logger.info("finops views busy, swap retried", extra={"attempt": attempt})
            await asyncio.sleep(SWAP_RETRY_SECONDS * attempt)
    return False


async def _drop_twins(connection: asyncpg.Connection, twins: Sequence[Twin]) -> None:
    for twin in twins:
        await connection.execute(f"DROP MATERIALIZED VIEW IF EXISTS {twin.name}")

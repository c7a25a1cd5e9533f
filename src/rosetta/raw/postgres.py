"""The raw store on PostgreSQL JSONB, in the ``raw`` database (the embedded default).

Why asyncpg directly rather than the SQLAlchemy ``Databases`` engine: the raw zone is an append-mostly bulk
store, not a bounded context with units of work. Its two hot paths are landing (hundreds of thousands of
rows per import) and streaming them back; both are one hand-written statement each, where SQLAlchemy would
only add per-row Python overhead and hide asyncpg's binary array encoding. The table definitions stay in
``rosetta.raw.models`` for alembic; the column names used here are those.

Landing: each ``put_many`` call runs in ONE transaction (all or nothing) and sends its payloads in chunks of
``chunk_size`` as one ``INSERT ... SELECT FROM unnest($arrays) ... ON CONFLICT DO NOTHING`` per chunk. The
arrays travel in asyncpg's binary format, so a chunk costs one round trip and one statement. ``COPY`` into
a temporary staging table followed by the same ``INSERT ... SELECT`` was measured too (200,000 documents,
chunks of 5,000): the two were within the noise of each other, the cost being the JSONB parsing and the
unique index, not the transfer; the single statement needs no temporary table per connection.

The statement's row count is exactly the number of documents landed, so ``duplicates = sent - landed`` is
exact, also under concurrent imports (the unique index serialises two transactions landing the same
content). Memory is bounded by the chunk size: a caller may pass a generator of any length.

Reading: streams are keyset-paged on ``id`` (landing order), one short query per page of ``batch_size``
rows on a connection borrowed only for that query, so a slow consumer never holds a connection or a
snapshot open, and memory is bounded by two pages: the next page's query is sent before the current page is
handed over (``keyset_pages``), so the server produces it while the caller works; taking turns left each
side idle about half of the time (medium demo world, 1.78M cost lines: 16.5 s -> 10.2 s to stream them).

``stream_pages`` (the bulk readers' path) has the server extract only the projected keys into one small JSON
array per row (see ``_projection``): a FOCUS row is ~1.6 KB with ~50 keys, of which finops-batch reads 12,
and rendering it whole as text was most of the server's time, decoding it into a dict the largest client
cost of the batch's read (medium world: 10.2 s -> 9.0 s to stream, read step 20.7 s -> 15.9 s). Whole
documents (with their content hash) are fetched by id only for the lines a reader asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from rosetta.core.db import asyncpg_dsn, database_urls, sql_literal
from rosetta.core.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
)
from rosetta.core.settings import Settings
from rosetta.raw.canonical import canonical_payload, decode_payload
from rosetta.raw.store import (
    DocumentPage,
    ImportStatus,
    ImportSummary,
    PagedDocument,
    PutResult,
    RawDocument,
    RejectedRecord,
    S,
    check_finish,
    check_page_size,
    check_projection,
    check_window,
    keyset_pages,
    utc_or_now,
)

_NOT_MIGRATED = "the raw database is not migrated: run `rosetta db upgrade --db raw`"

_INSERT_DOCUMENTS = """
INSERT INTO raw_document (source, kind, import_id, received_at, payload, content_hash)
SELECT $1, $2, $3, $4, chunk.payload::jsonb, chunk.content_hash
FROM unnest($5::text[], $6::text[]) WITH ORDINALITY AS chunk(payload, content_hash, position)
ORDER BY chunk.position
ON CONFLICT (source, kind, content_hash) DO NOTHING
"""

_DOCUMENT_COLUMNS = "id, source, kind, import_id, received_at, payload::text AS payload, content_hash"
_IMPORT_COLUMNS = (
    "import_id, source, kind, origin, status, started_at, finished_at, "
    "read_count, landed_count, duplicate_count, rejected_count"
)


def _row_count(status: str) -> int:
    """The row count of a command status such as ``INSERT 0 42``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresRawStore:
    """The :class:`~rosetta.raw.store.RawStore` on PostgreSQL JSONB (asyncpg pool, opened on first use)."""

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str = "rosetta.raw",
        statement_timeout_ms: int = 60_000,
        max_connections: int = 4,
        chunk_size: int = 5_000,
    ) -> None:
        """Prepare a store on ``dsn`` (an asyncpg DSN); no connection is made until the first call."""
        if chunk_size < 1:
            raise ConfigurationError("chunk_size must be at least 1")
        self._dsn = dsn
        self._application_name = application_name
        self._statement_timeout_ms = statement_timeout_ms
        self._max_connections = max_connections
        self._chunk_size = chunk_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, process: str = "raw") -> PostgresRawStore:
        """The store on the configured ``raw`` database (starting the embedded server if none is configured)."""
        url = database_urls(settings, ("raw",))["raw"]
        return cls(
            asyncpg_dsn(url),
            application_name=f"rosetta.{process}",
            statement_timeout_ms=settings.db_statement_timeout_ms,
            max_connections=max(2, settings.db_pool_sizes.get("raw", settings.db_pool_size)),
        )

    # ------------------------------------------------------------------------------------------ plumbing

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # Two first calls running side by side must not open two pools.
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await self._create_pool()
        return self._pool

    async def _create_pool(self) -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._max_connections,
                timeout=10,
                server_settings={
                    "application_name": self._application_name,
                    "statement_timeout": str(self._statement_timeout_ms),
                    "timezone": "UTC",
                },
            )
        except asyncpg.InvalidCatalogNameError:
            raise ConfigurationError("the raw database does not exist: run `rosetta db upgrade --db raw`") from None
        except (OSError, asyncpg.PostgresConnectionError, TimeoutError) as error:
            raise ServiceUnavailableError(f"the raw database is unavailable: {error}") from error

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver errors that mean "not set up" or "down" become clear Rosetta errors."""
        pool = await self._get_pool()
        try:
            async with pool.acquire() as connection:
                yield connection
        except asyncpg.UndefinedTableError:
            raise ConfigurationError(_NOT_MIGRATED) from None
        except (OSError, asyncpg.PostgresConnectionError) as error:
            raise ServiceUnavailableError(f"the raw database is unavailable: {error}") from error

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> PostgresRawStore:
        """``async with`` support: the store closes on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the store."""
        await self.close()

    # ------------------------------------------------------------------------------------------ imports

    async def begin_import(self, *, source: str, kind: str, origin: str | None = None) -> uuid.UUID:
        """Record a new running import and return its id."""
        import_id = uuid.uuid4()
        async with self._connection() as connection:
            await connection.execute(
                "INSERT INTO raw_import (import_id, source, kind, origin, status, started_at) "
                "VALUES ($1, $2, $3, $4, 'running', $5)",
                import_id,
                source,
                kind,
                origin,
                datetime.now(UTC),
            )
        return import_id

    async def finish_import(
        self,
        import_id: uuid.UUID,
        *,
        status: ImportStatus,
        read: int,
        landed: int,
        duplicates: int,
        rejected: int,
    ) -> None:
        """Close a running import with its counts (only a running import can be finished)."""
        check_finish(status=status, read=read, landed=landed, duplicates=duplicates, rejected=rejected)
        async with self._connection() as connection, connection.transaction():
            current = await connection.fetchval(
                "SELECT status FROM raw_import WHERE import_id = $1 FOR UPDATE", import_id
            )
            if current is None:
                raise NotFoundError(f"import {import_id} does not exist")
            if current != "running":
                raise ConflictError(f"import {import_id} is already {current}")
            await connection.execute(
                "UPDATE raw_import SET status = $2, finished_at = $3, read_count = $4, landed_count = $5, "
                "duplicate_count = $6, rejected_count = $7 WHERE import_id = $1",
                import_id,
                status,
                datetime.now(UTC),
                read,
                landed,
                duplicates,
                rejected,
            )

    async def list_imports(
        self, *, source: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[ImportSummary]:
        """Imports newest first, optionally of one source and kind."""
        where, arguments = _filters({"source": source, "kind": kind})
        arguments.append(max(0, limit))
        async with self._connection() as connection:
            rows = await connection.fetch(
                f"SELECT {_IMPORT_COLUMNS} FROM raw_import {where} "
                f"ORDER BY started_at DESC, import_id LIMIT ${len(arguments)}",
                *arguments,
            )
        return [
            ImportSummary(
                import_id=row["import_id"],
                source=row["source"],
                kind=row["kind"],
                origin=row["origin"],
                status=row["status"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                read=row["read_count"],
                landed=row["landed_count"],
                duplicates=row["duplicate_count"],
                rejected=row["rejected_count"],
            )
            for row in rows
        ]

    # ------------------------------------------------------------------------------------------ landing

    async def put_many(
        self,
        import_id: uuid.UUID,
        *,
        source: str,
        kind: str,
        payloads: Iterable[Mapping[str, Any]],
        received_at: datetime | None = None,
    ) -> PutResult:
        """Land payloads in one transaction; one already stored (same source, kind, content hash) is a duplicate.

        Every payload is encoded before its chunk is sent, so an unstorable payload
        (:class:`~rosetta.raw.canonical.UnstorablePayloadError`) rolls the whole call back.
        """
        received = utc_or_now(received_at, "received_at")
        landed = sent = 0
        iterator = iter(payloads)
        async with self._connection() as connection, connection.transaction():
            await self._check_running(connection, import_id)
            while chunk := list(itertools.islice(iterator, self._chunk_size)):
                texts: list[str] = []
                hashes: list[str] = []
                for payload in chunk:
                    encoded, digest = canonical_payload(payload)
                    texts.append(encoded.decode())
                    hashes.append(digest)
                status = await connection.execute(_INSERT_DOCUMENTS, source, kind, import_id, received, texts, hashes)
                landed += _row_count(status)
                sent += len(chunk)
        return PutResult(landed=landed, duplicates=sent - landed)

    @staticmethod
    async def _check_running(connection: asyncpg.Connection, import_id: uuid.UUID) -> None:
        # FOR SHARE: landing calls run side by side, but finish_import (FOR UPDATE) waits for them to commit.
        status = await connection.fetchval("SELECT status FROM raw_import WHERE import_id = $1 FOR SHARE", import_id)
        if status is None:
            raise NotFoundError(f"import {import_id} does not exist: call begin_import first")
        if status != "running":
            raise ConflictError(f"import {import_id} is {status}: nothing more can land in it")

    async def reject(self, records: Iterable[RejectedRecord]) -> int:
        """Keep rejected records with their reason (one transaction); return how many were kept."""
        rows = [(r.import_id, r.source, r.kind, r.line, r.reason, r.raw) for r in records]
        if not rows:
            return 0
        async with self._connection() as connection, connection.transaction():
            await connection.executemany(
                "INSERT INTO raw_rejected (import_id, source, kind, line, reason, raw) VALUES ($1, $2, $3, $4, $5, $6)",
                rows,
            )
        return len(rows)

    # ------------------------------------------------------------------------------------------ reading

    async def stream(
        self,
        *,
        source: str | None = None,
        kind: str | None = None,
        import_id: uuid.UUID | None = None,
        received_from: datetime | None = None,
        received_to: datetime | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[RawDocument]:
        """Documents in landing order, ``received_from <= received_at < received_to``, one page at a time."""
        check_window(received_from, received_to, batch_size)
        where, arguments = _filters(
            {"source": source, "kind": kind, "import_id": import_id},
            received_from=received_from,
            received_to=received_to,
        )
        async for row in self._pages("raw_document", _DOCUMENT_COLUMNS, where, arguments, batch_size):
            yield RawDocument(
                source=row["source"],
                kind=row["kind"],
                import_id=row["import_id"],
                received_at=row["received_at"],
                payload=decode_payload(row["payload"]),
                content_hash=row["content_hash"],
            )

    async def stream_pages(
        self, *, source: str, kind: str, shape: type[S], page_size: int = 5000
    ) -> AsyncIterator[DocumentPage[S]]:
        """Documents of one source and kind in landing order, a page at a time, projected onto ``shape``."""
        check_page_size(page_size)
        query, decode = _projection(shape)

        async def fetch(last_id: int | None) -> _Aggregated:
            async with self._connection() as connection:
                row = await connection.fetchrow(query, source, kind, last_id or 0, page_size)
            return _Aggregated(row[0] or [], row[1])

        async for page in keyset_pages(fetch, lambda page: page.ids[-1], page_size):
            ids = page.ids

            async def documents(indexes: Sequence[int], ids: list[int] = ids) -> list[PagedDocument]:
                return await self._documents(source, kind, [ids[index] for index in indexes])

            yield DocumentPage(source=source, kind=kind, fields=decode(page.fields), documents=documents)

    async def _documents(self, source: str, kind: str, ids: list[int]) -> list[PagedDocument]:
        """Whole documents by id, in the order of ``ids``."""
        async with self._connection() as connection:
            rows = await connection.fetch(
                "SELECT id, content_hash, payload::text FROM raw_document WHERE id = ANY($1::bigint[])", ids
            )
        found = {row[0]: row for row in rows}
        return [
            PagedDocument(source=source, kind=kind, content_hash=found[id_][1], payload=decode_payload(found[id_][2]))
            for id_ in ids
        ]

    async def stream_rejected(
        self, *, source: str | None = None, import_id: uuid.UUID | None = None
    ) -> AsyncIterator[RejectedRecord]:
        """Rejected records in the order they were kept."""
        where, arguments = _filters({"source": source, "import_id": import_id})
        columns = "id, import_id, source, kind, line, reason, raw"
        async for row in self._pages("raw_rejected", columns, where, arguments, 1000):
            yield RejectedRecord(
                source=row["source"],
                kind=row["kind"],
                import_id=row["import_id"],
                reason=row["reason"],
                line=row["line"],
                raw=row["raw"],
            )

    async def _pages(
        self, table: str, columns: str, where: str, arguments: list[Any], page_size: int
    ) -> AsyncIterator[asyncpg.Record]:
        """The rows of :meth:`_page_rows`, one by one."""
        async for rows in self._page_rows(table, columns, where, arguments, page_size):
            for row in rows:
                yield row

    async def _page_rows(
        self, table: str, columns: str, where: str, arguments: list[Any], page_size: int
    ) -> AsyncIterator[list[asyncpg.Record]]:
        """Keyset pagination on ``id``: each page is one short query on a briefly borrowed connection."""
        position = len(arguments) + 1
        keyset = f"{where} AND id > ${position}" if where else f"WHERE id > ${position}"
        query = f"SELECT {columns} FROM {table} {keyset} ORDER BY id LIMIT ${position + 1}"

        async def fetch(last_id: int | None) -> list[asyncpg.Record]:
            async with self._connection() as connection:
                return await connection.fetch(query, *arguments, last_id or 0, page_size)

        async for rows in keyset_pages(fetch, lambda rows: rows[-1]["id"], page_size):
            yield rows

    # ------------------------------------------------------------------------------------------ watermarks

    async def get_watermark(self, source: str, stream: str) -> dict[str, Any] | None:
        """The stored high-water mark of one stream, or None before its first completed pull."""
        async with self._connection() as connection:
            value = await connection.fetchval(
                "SELECT value::text FROM raw_watermark WHERE source = $1 AND stream = $2", source, stream
            )
        return None if value is None else decode_payload(value)

    async def set_watermark(self, source: str, stream: str, value: Mapping[str, Any]) -> None:
        """Store (or advance) one stream's high-water mark."""
        encoded, _ = canonical_payload(value)
        async with self._connection() as connection:
            await connection.execute(
                "INSERT INTO raw_watermark (source, stream, value, updated_at) VALUES ($1, $2, $3::jsonb, $4) "
                "ON CONFLICT (source, stream) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                source,
                stream,
                encoded.decode(),
                datetime.now(UTC),
            )


@functools.cache
def _projection(shape: type[S]) -> tuple[str, Callable[[str | None], list[S]]]:
    """The query of one projected page, and the decoder of its projections into ``shape``.

    The server extracts the keys (``payload->'BilledCost'``; NULL when absent) into one small JSON array
    per document, rather than rendering the whole document as text: for a FOCUS row (~1.6 KB, ~50 keys)
    that is less work for the server and ~10x fewer bytes to send and parse. The page comes back as ONE row
    (the ids, and the arrays aggregated into one JSON text), so neither asyncpg nor Python does anything per
    document: msgspec decodes the whole page in one call, each array positionally into an ``array_like``
    subclass of ``shape`` (what the caller gets is still a ``shape``). Medium demo world, 1.78M cost lines:
    client CPU 3.4 s -> 1.9 s against one row per document, server CPU +0.2-0.6 s.
    """
    check_projection(shape)
    keys = ", ".join(f"payload->{sql_literal(field.encode_name)}" for field in msgspec.structs.fields(shape))
    positional = type(shape.__name__, (shape,), {}, array_like=True)
    query = (
        "SELECT array_agg(id ORDER BY id), json_agg(fields ORDER BY id)::text"
        f" FROM (SELECT id, jsonb_build_array({keys}) AS fields FROM raw_document"
        " WHERE source = $1 AND kind = $2 AND id > $3 ORDER BY id LIMIT $4) AS page"
    )
    decode = msgspec.json.Decoder(list[positional]).decode  # type: ignore[valid-type]
    return query, lambda text: decode(text) if text is not None else []


@dataclasses.dataclass(frozen=True, slots=True)
class _Aggregated:
    """One projected page as the server sends it: the documents' ids and their projections as JSON text."""

    ids: list[int]
    fields: str | None

    def __len__(self) -> int:
        """How many documents the page holds."""
        return len(self.ids)


def _filters(
    equals: Mapping[str, Any],
    *,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
) -> tuple[str, list[Any]]:
    """A ``WHERE`` clause holding only the filters given (so the planner sees a plain, index-friendly query)."""
    clauses: list[str] = []
    arguments: list[Any] = []
    for column, value in equals.items():
        if value is not None:
            arguments.append(value)
            clauses.append(f"{column} = ${len(arguments)}")
    if received_from is not None:
        arguments.append(received_from)
        clauses.append(f"received_at >= ${len(arguments)}")
    if received_to is not None:
        arguments.append(received_to)
        clauses.append(f"received_at < ${len(arguments)}")
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), arguments

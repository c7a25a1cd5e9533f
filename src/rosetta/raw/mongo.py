"""The raw store on MongoDB, with PyMongo's async client (``pymongo.AsyncMongoClient``; Motor is end-of-life).

Collections and the indexes the store's queries need (created once per store, idempotently, on first use):

- ``raw_documents``: ``{_id: ObjectId, source, kind, import_id: UUID, received_at, payload, content_hash}``;
  unique ``(source, kind, content_hash)`` is the de-duplication key; ``(source, kind, _id)`` and
  ``(import_id, _id)`` serve the keyset-paged streams in landing order; ``(source, kind, received_at)``
  serves time windows.
- ``raw_imports``: ``_id`` is the import id; ``(source, kind, started_at)`` for "newest first".
- ``raw_rejected``: ``(import_id, _id)`` and ``(source, _id)``.
- ``raw_watermarks``: unique ``(source, stream)``.

Differences from the PostgreSQL store, inherent to MongoDB and documented in ``docs/raw-zone.md``:
``received_at`` is stored with millisecond precision (BSON dates); landing order is ``_id`` order, which
PyMongo generates increasing within one process; and ``put_many`` is atomic per chunk of ``chunk_size``
payloads rather than per call (multi-document transactions need a replica set, which a standalone
development server is not). Re-running a partly landed call is safe either way: the unique index turns
what already landed into duplicates. Duplicates are counted exactly from the bulk write's ``11000``
errors (``ordered=False``, so one duplicate never stops the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import msgspec
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument
from bson.objectid import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError, ServerSelectionTimeoutError

from rosetta.core.errors import ConfigurationError, ConflictError, NotFoundError, ServiceUnavailableError
from rosetta.core.settings import Settings
from rosetta.raw.canonical import UnstorablePayloadError, canonical_payload, decode_payload
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

_DUPLICATE_KEY = 11000

P = ParamSpec("P")
R = TypeVar("R")

Document = dict[str, Any]

_INDEXES: dict[str, list[IndexModel]] = {
    "raw_documents": [
        IndexModel(
            [("source", ASCENDING), ("kind", ASCENDING), ("content_hash", ASCENDING)],
            unique=True,
            name="uq_source_kind_content_hash",
        ),
        IndexModel([("source", ASCENDING), ("kind", ASCENDING), ("_id", ASCENDING)], name="ix_source_kind_id"),
        IndexModel(
            [("source", ASCENDING), ("kind", ASCENDING), ("received_at", ASCENDING)],
            name="ix_source_kind_received_at",
        ),
        IndexModel([("import_id", ASCENDING), ("_id", ASCENDING)], name="ix_import_id_id"),
    ],
    "raw_imports": [
        IndexModel(
            [("source", ASCENDING), ("kind", ASCENDING), ("started_at", DESCENDING)],
            name="ix_source_kind_started_at",
        ),
        IndexModel([("started_at", DESCENDING)], name="ix_started_at"),
    ],
    "raw_rejected": [
        IndexModel([("import_id", ASCENDING), ("_id", ASCENDING)], name="ix_import_id_id"),
        IndexModel([("source", ASCENDING), ("_id", ASCENDING)], name="ix_source_id"),
    ],
    "raw_watermarks": [
        IndexModel([("source", ASCENDING), ("stream", ASCENDING)], unique=True, name="uq_source_stream"),
    ],
}


@contextlib.contextmanager
def _mongo_errors() -> Iterator[None]:
    """Driver errors that mean "MongoDB is down or refused" become ``ServiceUnavailableError`` (exit code 4)."""
    try:
        yield
    except (ServerSelectionTimeoutError, ConnectionFailure) as error:
        raise ServiceUnavailableError(f"MongoDB is unavailable: {error}") from error
    except (InvalidDocument, OverflowError) as error:
        raise UnstorablePayloadError(f"payload cannot be stored in MongoDB: {error}") from error
    except PyMongoError as error:
        raise ServiceUnavailableError(f"MongoDB error: {error}") from error


def _service_errors(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run a store method under :func:`_mongo_errors`."""

    @functools.wraps(method)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        with _mongo_errors():
            return await method(*args, **kwargs)

    return translated


class MongoRawStore:
    """The :class:`~rosetta.raw.store.RawStore` on MongoDB (one ``AsyncMongoClient``, connected lazily)."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        app_name: str = "rosetta.raw",
        chunk_size: int = 5_000,
        server_selection_timeout_ms: int | None = None,
    ) -> None:
        """Prepare a store on database ``database`` of the server at ``url``; nothing connects yet.

        The server-selection timeout (how long a call waits for an unreachable server) is, in order:
        ``server_selection_timeout_ms``, the URL's ``serverSelectionTimeoutMS``, 10 seconds.
        """
        if chunk_size < 1:
            raise ConfigurationError("chunk_size must be at least 1")
        options: dict[str, Any] = {}
        if server_selection_timeout_ms is not None:
            options["serverSelectionTimeoutMS"] = server_selection_timeout_ms
        elif "serverselectiontimeoutms=" not in url.lower():
            options["serverSelectionTimeoutMS"] = 10_000
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(
            url, appname=app_name, uuidRepresentation="standard", tz_aware=True, tzinfo=UTC, **options
        )
        codec: CodecOptions[Document] = CodecOptions(
            document_class=dict, tz_aware=True, tzinfo=UTC, uuid_representation=UuidRepresentation.STANDARD
        )
        self._db: AsyncDatabase[Document] = self._client.get_database(database, codec_options=codec)
        self._chunk_size = chunk_size
        self._indexes_ready = False
        self._index_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, process: str = "raw") -> MongoRawStore:
        """The store on ``ROSETTA_MONGODB_URL`` / ``ROSETTA_MONGODB_DATABASE``."""
        if settings.mongodb_url is None:
            raise ConfigurationError("ROSETTA_RAW_STORE=mongodb needs ROSETTA_MONGODB_URL")
        return cls(
            settings.mongodb_url.get_secret_value(),
            settings.mongodb_database,
            app_name=f"rosetta.{process}",
        )

    # ------------------------------------------------------------------------------------------ plumbing

    async def _collection(self, name: str) -> AsyncCollection[Document]:
        """A collection, after making sure every index exists (once per store)."""
        if not self._indexes_ready:
            async with self._index_lock:
                if not self._indexes_ready:
                    with _mongo_errors():
                        for collection, indexes in _INDEXES.items():
                            await self._db[collection].create_indexes(indexes)
                    self._indexes_ready = True
        return self._db[name]

    async def close(self) -> None:
        """Close the client (idempotent)."""
        await self._client.close()

    async def __aenter__(self) -> MongoRawStore:
        """``async with`` support: the store closes on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the store."""
        await self.close()

    # ------------------------------------------------------------------------------------------ imports

    @_service_errors
    async def begin_import(self, *, source: str, kind: str, origin: str | None = None) -> uuid.UUID:
        """Record a new running import and return its id."""
        import_id = uuid.uuid4()
        imports = await self._collection("raw_imports")
        await imports.insert_one(
            {
                "_id": import_id,
                "source": source,
                "kind": kind,
                "origin": origin,
                "status": "running",
                "started_at": datetime.now(UTC),
                "finished_at": None,
                "read": 0,
                "landed": 0,
                "duplicates": 0,
                "rejected": 0,
            }
        )
        return import_id

    @_service_errors
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
        imports = await self._collection("raw_imports")
        updated = await imports.find_one_and_update(
            {"_id": import_id, "status": "running"},
            {
                "$set": {
                    "status": status,
                    "finished_at": datetime.now(UTC),
                    "read": read,
                    "landed": landed,
                    "duplicates": duplicates,
                    "rejected": rejected,
                }
            },
        )
        if updated is None:
            current = await imports.find_one({"_id": import_id}, {"status": 1})
            if current is None:
                raise NotFoundError(f"import {import_id} does not exist")
            raise ConflictError(f"import {import_id} is already {current['status']}")

    @_service_errors
    async def list_imports(
        self, *, source: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[ImportSummary]:
        """Imports newest first, optionally of one source and kind."""
        if limit <= 0:
            return []
        imports = await self._collection("raw_imports")
        query = _equals({"source": source, "kind": kind})
        cursor = imports.find(query).sort([("started_at", DESCENDING), ("_id", ASCENDING)]).limit(limit)
        return [
            ImportSummary(
                import_id=row["_id"],
                source=row["source"],
                kind=row["kind"],
                origin=row.get("origin"),
                status=row["status"],
                started_at=row["started_at"],
                finished_at=row.get("finished_at"),
                read=row["read"],
                landed=row["landed"],
                duplicates=row["duplicates"],
                rejected=row["rejected"],
            )
            async for row in cursor
        ]

    # ------------------------------------------------------------------------------------------ landing

    @_service_errors
    async def put_many(
        self,
        import_id: uuid.UUID,
        *,
        source: str,
        kind: str,
        payloads: Iterable[Mapping[str, Any]],
        received_at: datetime | None = None,
    ) -> PutResult:
        """Land payloads chunk by chunk; one already stored (same source, kind, content hash) is a duplicate."""
        received = utc_or_now(received_at, "received_at")
        await self._check_running(import_id)
        documents_collection = await self._collection("raw_documents")
        landed = sent = 0
        iterator = iter(payloads)
        while chunk := list(itertools.islice(iterator, self._chunk_size)):
            documents = []
            for payload in chunk:
                encoded, digest = canonical_payload(payload)
                documents.append(
                    {
                        # Explicit ids, generated in order, so landing order is the order of the payloads.
                        "_id": ObjectId(),
                        "source": source,
                        "kind": kind,
                        "import_id": import_id,
                        "received_at": received,
                        "payload": decode_payload(encoded),
                        "content_hash": digest,
                    }
                )
            landed += await _insert_counting_duplicates(documents_collection, documents)
            sent += len(chunk)
        return PutResult(landed=landed, duplicates=sent - landed)

    async def _check_running(self, import_id: uuid.UUID) -> None:
        imports = await self._collection("raw_imports")
        current = await imports.find_one({"_id": import_id}, {"status": 1})
        if current is None:
            raise NotFoundError(f"import {import_id} does not exist: call begin_import first")
        if current["status"] != "running":
            raise ConflictError(f"import {import_id} is {current['status']}: nothing more can land in it")

    @_service_errors
    async def reject(self, records: Iterable[RejectedRecord]) -> int:
        """Keep rejected records with their reason; return how many were kept."""
        now = datetime.now(UTC)
        documents = [
            {
                "_id": ObjectId(),
                "import_id": record.import_id,
                "source": record.source,
                "kind": record.kind,
                "line": record.line,
                "reason": record.reason,
                "raw": record.raw,
                "rejected_at": now,
            }
            for record in records
        ]
        if not documents:
            return 0
        rejected = await self._collection("raw_rejected")
        await rejected.insert_many(documents, ordered=True)
        return len(documents)

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
        query = _equals({"source": source, "kind": kind, "import_id": import_id})
        window: dict[str, datetime] = {}
        if received_from is not None:
            window["$gte"] = received_from
        if received_to is not None:
            window["$lt"] = received_to
        if window:
            query["received_at"] = window
        async for row in self._pages("raw_documents", query, batch_size):
            yield RawDocument(
                source=row["source"],
                kind=row["kind"],
                import_id=row["import_id"],
                received_at=row["received_at"],
                payload=row["payload"],
                content_hash=row["content_hash"],
            )

    async def stream_pages(
        self, *, source: str, kind: str, shape: type[S], page_size: int = 5000
    ) -> AsyncIterator[DocumentPage[S]]:
        """Documents of one source and kind in landing order, a page at a time, projected onto ``shape``.

        The projection is applied here, on whole payloads (``msgspec.convert`` reads the same encoded key names
        the PostgreSQL store extracts in SQL; an absent key takes the field's default, None), which keeps
        the whole documents at hand for ``documents()``; the server only leaves out what no page needs.
        """
        check_page_size(page_size)
        check_projection(shape)
        query = {"source": source, "kind": kind}
        async for rows in self._page_rows("raw_documents", query, page_size, _PAGE_PROJECTION):
            fields = [msgspec.convert(row["payload"], shape) for row in rows]

            async def documents(indexes: Sequence[int], rows: list[Document] = rows) -> list[PagedDocument]:
                return [
                    PagedDocument(
                        source=source, kind=kind, content_hash=rows[i]["content_hash"], payload=rows[i]["payload"]
                    )
                    for i in indexes
                ]

            yield DocumentPage(source=source, kind=kind, fields=fields, documents=documents)

    async def stream_rejected(
        self, *, source: str | None = None, import_id: uuid.UUID | None = None
    ) -> AsyncIterator[RejectedRecord]:
        """Rejected records in the order they were kept."""
        query = _equals({"source": source, "import_id": import_id})
        async for row in self._pages("raw_rejected", query, 1000):
            yield RejectedRecord(
                source=row["source"],
                kind=row["kind"],
                import_id=row["import_id"],
                reason=row["reason"],
                line=row.get("line"),
                raw=row.get("raw"),
            )

    async def _pages(self, name: str, query: Document, page_size: int) -> AsyncIterator[Document]:
        """The documents of :meth:`_page_rows`, one by one."""
        async for rows in self._page_rows(name, query, page_size):
            for row in rows:
                yield row

    async def _page_rows(
        self, name: str, query: Document, page_size: int, projection: Document | None = None
    ) -> AsyncIterator[list[Document]]:
        """Keyset pagination on ``_id``: no server cursor stays open while the consumer works."""
        collection = await self._collection(name)

        async def fetch(last_id: ObjectId | None) -> list[Document]:
            page_query = query if last_id is None else {**query, "_id": {"$gt": last_id}}
            with _mongo_errors():
                return await collection.find(page_query, projection).sort("_id", ASCENDING).limit(page_size).to_list()

        async for rows in keyset_pages(fetch, lambda rows: rows[-1]["_id"], page_size):
            yield rows

    # ------------------------------------------------------------------------------------------ watermarks

    @_service_errors
    async def get_watermark(self, source: str, stream: str) -> dict[str, Any] | None:
        """The stored high-water mark of one stream, or None before its first completed pull."""
        watermarks = await self._collection("raw_watermarks")
        row = await watermarks.find_one({"source": source, "stream": stream})
        return None if row is None else dict(row["value"])

    @_service_errors
    async def set_watermark(self, source: str, stream: str, value: Mapping[str, Any]) -> None:
        """Store (or advance) one stream's high-water mark."""
        encoded, _ = canonical_payload(value)
        watermarks = await self._collection("raw_watermarks")
        await watermarks.update_one(
            {"source": source, "stream": stream},
            {"$set": {"value": decode_payload(encoded), "updated_at": datetime.now(UTC)}},
            upsert=True,
        )


# What a projected page reads of each document (``_id``, the keyset, is always returned).
_PAGE_PROJECTION: Document = {"content_hash": 1, "payload": 1}


def _equals(filters: Mapping[str, Any]) -> Document:
    """A query document holding only the filters given."""
    return {field: value for field, value in filters.items() if value is not None}


async def _insert_counting_duplicates(collection: AsyncCollection[Document], documents: list[Document]) -> int:
    """Insert documents unordered; return how many landed (duplicate-key errors are duplicates, others raise)."""
    try:
        result = await collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        details = error.details
        others = [e for e in details.get("writeErrors", []) if e.get("code") != _DUPLICATE_KEY]
        if others or details.get("writeConcernErrors"):
            raise ServiceUnavailableError(f"MongoDB refused documents: {others[:1] or details}") from error
        return int(details.get("nInserted", 0))
    return len(result.inserted_ids)

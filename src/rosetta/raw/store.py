"""The raw store interface: one async contract, two implementations (PostgreSQL JSONB, MongoDB).

Everything that lands in the raw zone goes through this interface: file imports, connector pulls and the
demo world. Only batches read it back. Writing the same payload twice (same source, kind and content hash)
stores it once, so any import or pull can be re-run safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import msgspec

from rosetta.core.errors import BadRequestError

if TYPE_CHECKING:
    from rosetta.core.settings import Settings

ImportStatus = Literal["running", "completed", "failed"]


class RawDocument(msgspec.Struct, kw_only=True):
    """One landed document, as received (``payload`` is the source record, untouched apart from parsing)."""

    source: str
    kind: str
    import_id: uuid.UUID
    received_at: datetime
    payload: dict[str, Any]
    content_hash: str


class RejectedRecord(msgspec.Struct, kw_only=True):
    """A record that could not be landed, kept with why (``line`` is 1-based in the source file, if any)."""

    source: str
    kind: str
    import_id: uuid.UUID
    reason: str
    line: int | None = None
    raw: str | None = None


class ImportSummary(msgspec.Struct, kw_only=True):
    """One import or pull and its counts: read = landed + duplicates + rejected."""

    import_id: uuid.UUID
    source: str
    kind: str
    origin: str | None
    status: ImportStatus
    started_at: datetime
    finished_at: datetime | None
    read: int
    landed: int
    duplicates: int
    rejected: int


class PutResult(msgspec.Struct, kw_only=True):
    """What a ``put_many`` call did."""

    landed: int
    duplicates: int


S = TypeVar("S", bound=msgspec.Struct)


class PagedDocument(msgspec.Struct, kw_only=True):
    """One whole document of a :class:`DocumentPage`, rebuilt on demand (e.g. to keep it with a rejection)."""

    source: str
    kind: str
    content_hash: str
    payload: dict[str, Any]


class DocumentPage(Generic[S]):
    """One page of :meth:`RawStore.stream_pages`: each document's projection, whole documents on demand.

    ``fields[i]`` holds the payload keys named by the projection struct, as received (None when absent); no
    other key of the payload was decoded, nor (on PostgreSQL) even sent. ``await documents(indexes)`` fetches
    whole documents, which a reader needs only for the few it keeps (rejected lines), not for every line.
    """

    __slots__ = ("_documents", "fields", "kind", "source")

    def __init__(
        self,
        *,
        source: str,
        kind: str,
        fields: list[S],
        documents: Callable[[Sequence[int]], Awaitable[list[PagedDocument]]],
    ) -> None:
        self.source = source
        self.kind = kind
        self.fields = fields
        self._documents = documents

    def __len__(self) -> int:
        """How many documents the page holds."""
        return len(self.fields)

    async def documents(self, indexes: Sequence[int]) -> list[PagedDocument]:
        """The whole documents at ``indexes`` of the page, in that order (one query at most)."""
        return await self._documents(indexes) if indexes else []


def check_projection(shape: type[msgspec.Struct]) -> None:
    """Refuse a projection struct with a field not defaulting to None.

    A key absent from a payload and a key holding ``null`` read alike (None) in every store: PostgreSQL
    projects in SQL, where an absent key is NULL, so a non-None default could not be honoured there.
    """
    for field in msgspec.structs.fields(shape):
        if field.default is not None or field.default_factory is not msgspec.NODEFAULT:
            raise TypeError(f"projection field {shape.__name__}.{field.name} must default to None")


class RawStore(Protocol):
    """The landing zone.

    Implementations: ``rosetta.raw.postgres.PostgresRawStore``, ``rosetta.raw.mongo.MongoRawStore``; get the
    configured one with :func:`open_raw_store`.
    """

    async def begin_import(self, *, source: str, kind: str, origin: str | None = None) -> uuid.UUID:
        """Open an import (a file, a pull, a demo load) and return its id."""
        ...

    async def put_many(
        self,
        import_id: uuid.UUID,
        *,
        source: str,
        kind: str,
        payloads: Iterable[Mapping[str, Any]],
        received_at: datetime | None = None,
    ) -> PutResult:
        """Land a batch of payloads; one already stored (same source, kind, content hash) is a duplicate."""
        ...

    async def reject(self, records: Iterable[RejectedRecord]) -> int:
        """Keep rejected records with their reason; return how many were kept."""
        ...

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
        """Close an import with its counts."""
        ...

    def stream(
        self,
        *,
        source: str | None = None,
        kind: str | None = None,
        import_id: uuid.UUID | None = None,
        received_from: datetime | None = None,
        received_to: datetime | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[RawDocument]:
        """Stream documents in landing order, with bounded memory (``batch_size`` at a time)."""
        ...

    def stream_pages(
        self, *, source: str, kind: str, shape: type[S], page_size: int = 5000
    ) -> AsyncIterator[DocumentPage[S]]:
        """Documents of one source and kind in landing order, a page at a time, projected onto ``shape``.

        ``shape`` is a ``msgspec.Struct`` whose fields are payload keys (encoded names, so ``rename`` applies),
        each defaulting to None (an absent key reads as None, like ``null``) and typed loosely enough for any
        value a payload may hold (``Any`` keeps each value exactly as :meth:`stream` would return it). A bulk
        reader that needs a dozen of a payload's fifty keys then never receives nor builds the others. Same
        order, pages and memory bounds as :meth:`stream`; a struct breaking those rules raises TypeError.
        """
        ...

    def stream_rejected(
        self, *, source: str | None = None, import_id: uuid.UUID | None = None
    ) -> AsyncIterator[RejectedRecord]:
        """Stream rejected records."""
        ...

    async def list_imports(
        self, *, source: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[ImportSummary]:
        """Imports newest first."""
        ...

    async def get_watermark(self, source: str, stream: str) -> dict[str, Any] | None:
        """The high-water mark of an incremental pull (e.g. ``{"sys_updated_on": ..., "sys_id": ...}``)."""
        ...

    async def set_watermark(self, source: str, stream: str, value: Mapping[str, Any]) -> None:
        """Advance a high-water mark; call only once a pull has completed."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def open_raw_store(settings: Settings, *, process: str = "raw") -> RawStore:
    """The raw store chosen by ``settings.raw_store`` (``postgres``, the default, or ``mongodb``).

    No connection is made until the first call on the store; call ``await store.close()`` when done, or use
    :func:`opened_raw_store`. ``process`` names the connections (``rosetta.<process>``) where the backend
    supports it.
    """
    if settings.raw_store == "mongodb":
        from rosetta.raw.mongo import MongoRawStore  # noqa: PLC0415 - pymongo only when MongoDB is chosen

        return MongoRawStore.from_settings(settings, process=process)
    from rosetta.raw.postgres import PostgresRawStore  # noqa: PLC0415 - avoids an import cycle

    return PostgresRawStore.from_settings(settings, process=process)


@contextlib.asynccontextmanager
async def opened_raw_store(settings: Settings, *, process: str = "raw") -> AsyncIterator[RawStore]:
    """``async with opened_raw_store(settings) as store:`` - the configured store, closed on exit."""
    store = open_raw_store(settings, process=process)
    try:
        yield store
    finally:
        await store.close()


# ------------------------------------------------------------------------------------------------
# Argument checks shared by every implementation, so they all refuse the same calls the same way.


def utc_or_now(value: datetime | None, name: str) -> datetime:
    """``value`` in UTC (now if None); a naive datetime is refused, since its zone would be a guess."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None or value.utcoffset() is None:
        raise BadRequestError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def check_window(received_from: datetime | None, received_to: datetime | None, batch_size: int) -> None:
    """Refuse naive window bounds and a batch size below 1 (streams read ``from <= received_at < to``)."""
    for name, value in (("received_from", received_from), ("received_to", received_to)):
        if value is not None:
            utc_or_now(value, name)
    if batch_size < 1:
        raise BadRequestError("batch_size must be at least 1")


K = TypeVar("K")
P = TypeVar("P", bound=Sized)


async def keyset_pages(
    fetch: Callable[[K | None], Awaitable[P]], last_key: Callable[[P], K], page_size: int
) -> AsyncIterator[P]:
    """Keyset pages (``fetch(None)`` first, then ``fetch(last_key(page))``) until a page comes back short.

    The next page's query is sent before the current page is handed over, so the database produces it while
    the caller decodes and uses this one (they would otherwise take turns, each idle half the time). Each
    query still borrows its connection only while it runs; memory is bounded by two pages.
    """
    pending: asyncio.Future[P] | None = asyncio.ensure_future(fetch(None))
    try:
        while pending is not None:
            page = await pending
            pending = asyncio.ensure_future(fetch(last_key(page))) if len(page) >= page_size else None
            if len(page):
                yield page
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending


def check_page_size(page_size: int) -> None:
    """Refuse a page size below 1."""
    if page_size < 1:
        raise BadRequestError("page_size must be at least 1")


def check_finish(*, status: ImportStatus, read: int, landed: int, duplicates: int, rejected: int) -> None:
    """An import ends ``completed`` or ``failed``, with non-negative counts; a completed one adds up."""
    if status == "running":
        raise BadRequestError("an import is finished as 'completed' or 'failed', not 'running'")
    if min(read, landed, duplicates, rejected) < 0:
        raise BadRequestError("import counts cannot be negative")
    if status == "completed" and read != landed + duplicates + rejected:
        raise BadRequestError(
            f"a completed import must satisfy read = landed + duplicates + rejected "
            f"({read} != {landed} + {duplicates} + {rejected})"
        )

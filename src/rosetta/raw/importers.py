"""File imports into the raw zone: ``rosetta raw import FILE --source NAME [--kind K] [--sheet S]``.

One file is one import. The file is checked before anything is recorded (an unreadable file leaves no
trace: :class:`~rosetta.raw.files.UnreadableFileError`). Its records then land through ONE
``put_many`` call, so on PostgreSQL the whole file lands in one transaction (all of it or, if reading
breaks half-way, none of it; the import is then recorded as ``failed``), while memory stays bounded by
the store's chunk size. A bad row never stops the import: it is kept as a rejected record with its line
and reason (spooled to a temporary file while the rows land, so a file full of bad rows cannot exhaust
memory either), and counted: ``read = landed + duplicates + rejected``. Re-importing the same file lands
nothing new: every row is a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from rosetta.core.errors import BadRequestError, RosettaError
from rosetta.raw.canonical import UnstorablePayloadError, canonical_json
from rosetta.raw.files import BadRecord, Record, UnreadableFileError, clip, open_file
from rosetta.raw.store import RawStore, RejectedRecord

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_REJECT_BATCH = 1_000
_SHOWN_REJECTIONS = 20
_SPOOL_IN_MEMORY = 4 << 20


class ImportCounts(msgspec.Struct, kw_only=True):
    """The four counts of an import, exactly what ``rosetta raw import --json`` prints."""

    read: int
    landed: int
    duplicates: int
    rejected: int


class FileImportResult(msgspec.Struct, kw_only=True):
    """What importing one file did."""

    import_id: uuid.UUID
    source: str
    kind: str
    path: str
    description: str
    counts: ImportCounts
    # The first rejected records, for the command's summary; all of them are in the store.
    first_rejections: list[RejectedRecord]


def check_name(what: str, value: str) -> str:
    """A source or kind name: letters, digits, ``_``, ``.``, ``-``, at most 100 characters."""
    if not _NAME.match(value):
        raise BadRequestError(
            f"invalid {what} {value!r}: use letters, digits, '_', '.' or '-' (at most 100, not starting with a symbol)"
        )
    return value


class _Rejections:
    """Rejected records of one import, spooled (memory first, then a temporary file) until they are kept."""

    def __init__(self, import_id: uuid.UUID, source: str, kind: str) -> None:
        self._import_id, self._source, self._kind = import_id, source, kind
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        self.count = 0
        self.first: list[RejectedRecord] = []

    def add(self, line: int | None, reason: str, raw: str | None) -> None:
        self.count += 1
        if len(self.first) < _SHOWN_REJECTIONS:
            self.first.append(self._record(line, reason, raw))
        self._spool.write(msgspec.json.encode([line, reason, raw]) + b"\n")

    def _record(self, line: int | None, reason: str, raw: str | None) -> RejectedRecord:
        return RejectedRecord(
            source=self._source, kind=self._kind, import_id=self._import_id, line=line, reason=reason, raw=raw
        )

    def _spooled(self) -> Iterator[RejectedRecord]:
        self._spool.seek(0)
        for entry in self._spool:
            line, reason, raw = msgspec.json.decode(entry)
            yield self._record(line, reason, raw)

    async def keep(self, store: RawStore) -> None:
        """Hand every spooled record to the store, in batches."""
        records = self._spooled()
        while batch := [record for _, record in zip(range(_REJECT_BATCH), records, strict=False)]:
            await store.reject(batch)

    def close(self) -> None:
        self._spool.close()


class _Landing:
    """Turns a file's records into the payloads ``put_many`` lands, counting and setting aside bad ones."""

    def __init__(self, path: Path, rejections: _Rejections) -> None:
        self._path = path
        self._rejections = rejections
        self.read = 0
        self._line: int | None = None

    def payloads(self, records: Iterable[Record | BadRecord]) -> Iterator[dict[str, Any]]:
        try:
            for record in records:
                self.read += 1
                self._line = record.line
                if isinstance(record, BadRecord):
                    self._rejections.add(record.line, record.reason, record.raw)
                    continue
                try:
                    # Refuse here what the store would refuse, so one such row is rejected, not the file.
                    canonical_json(record.payload)
                except UnstorablePayloadError as error:
                    raw = clip(msgspec.json.encode(record.payload).decode())
                    self._rejections.add(record.line, error.detail, raw)
                    continue
                yield record.payload
        except RosettaError:
            raise
        except Exception as error:
            where = f" after line {self._line}" if self._line is not None else ""
            raise UnreadableFileError(
                f"{self._path}: reading failed{where} ({type(error).__name__}: {error}); "
                "the import is recorded as failed"
            ) from error


async def import_file(
    store: RawStore,
    path: Path,
    *,
    source: str,
    kind: str | None = None,
    sheet: str | None = None,
    received_at: datetime | None = None,
) -> FileImportResult:
    """Import one file (CSV, .xlsx, JSON, NDJSON, FOCUS CSV) into the raw zone and return its counts."""
    check_name("source", source)
    if kind is not None:
        check_name("kind", kind)
    opened = await asyncio.to_thread(open_file, path, kind=kind, sheet=sheet)
    import_id = await store.begin_import(source=source, kind=opened.kind, origin=opened.origin)
    rejections = _Rejections(import_id, source, opened.kind)
    landing = _Landing(path, rejections)
    try:
        try:
            put = await store.put_many(
                import_id,
                source=source,
                kind=opened.kind,
                payloads=landing.payloads(opened.records),
                received_at=received_at,
            )
            await rejections.keep(store)
        except BaseException:
            # Whatever stopped the import (a broken file, the database, Ctrl-C), it must not stay "running".
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    store.finish_import(
                        import_id, status="failed", read=landing.read, landed=0, duplicates=0, rejected=0
                    )
                )
            raise
        counts = ImportCounts(
            read=landing.read, landed=put.landed, duplicates=put.duplicates, rejected=rejections.count
        )
        await store.finish_import(
            import_id,
            status="completed",
            read=counts.read,
            landed=counts.landed,
            duplicates=counts.duplicates,
            rejected=counts.rejected,
        )
    finally:
        rejections.close()
    return FileImportResult(
        import_id=import_id,
        source=source,
        kind=opened.kind,
        path=str(path),
        description=opened.description,
        counts=counts,
        first_rejections=rejections.first,
    )

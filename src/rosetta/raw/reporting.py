"""What the ``rosetta raw`` commands print: readable lines for people, JSON for scripts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from rosetta.raw.importers import FileImportResult
from rosetta.raw.store import ImportSummary, RawStore, RejectedRecord

_RAW_SHOWN = 120


def import_lines(result: FileImportResult) -> list[str]:
    """The summary of one file import, then the first rejected lines with their reasons."""
    counts = result.counts
    lines = [
        f"{result.path} -> {result.source}/{result.kind} ({result.description})",
        f"read {counts.read}, landed {counts.landed}, duplicates {counts.duplicates}, rejected {counts.rejected}"
        f"  (import {result.import_id})",
    ]
    lines += ["  " + rejected_line(record) for record in result.first_rejections]
    if counts.rejected > len(result.first_rejections):
        lines.append(f"  ... see them all with: rosetta raw rejected --import {result.import_id}")
    return lines


def import_json(result: FileImportResult) -> str:
    """Exactly ``{"read", "landed", "duplicates", "rejected"}``, one JSON object on one line."""
    return msgspec.json.encode(result.counts).decode()


def rejected_line(record: RejectedRecord) -> str:
    """``line 7: expected 3 fields, found 2 | a;b`` (raw text shortened)."""
    where = f"line {record.line}" if record.line is not None else "record"
    raw = "" if not record.raw else " | " + _shorten(record.raw)
    return f"{where}: {record.reason}{raw}"


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _RAW_SHOWN else flat[: _RAW_SHOWN - 1] + "…"


def imports_lines(imports: Sequence[ImportSummary]) -> list[str]:
    """One line per import, newest first."""
    if not imports:
        return ["no imports"]
    return [
        f"{i.started_at:%Y-%m-%d %H:%M:%S}Z  {i.import_id}  {i.source}/{i.kind}  {i.status:<9}  "
        f"read {i.read}, landed {i.landed}, duplicates {i.duplicates}, rejected {i.rejected}"
        + (f"  {i.origin}" if i.origin else "")
        for i in imports
    ]


def to_json(value: Any) -> str:
    """Any of the raw zone's structs (or lists of them) as JSON."""
    return msgspec.json.encode(value).decode()


async def first_rejected(
    store: RawStore, *, source: str | None, import_id: uuid.UUID | None, limit: int
) -> list[RejectedRecord]:
    """The first ``limit`` rejected records of an import or a source (all of them if both are None)."""
    found: list[RejectedRecord] = []
    if limit <= 0:
        return found
    async for record in store.stream_rejected(source=source, import_id=import_id):
        found.append(record)
        if len(found) >= limit:
            break
    return found

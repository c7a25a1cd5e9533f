"""Tables of the raw zone's PostgreSQL JSONB store (the embedded default).

These declarations drive the ``raw`` alembic tree; the queries themselves live in
``rosetta.raw.postgres`` (asyncpg, see its docstring for why). Indexes are chosen for the store's queries:

- ``raw_document``: unique ``(source, kind, content_hash)`` is the de-duplication key;
  ``(source, kind, id)`` and ``(import_id, id)`` serve the keyset-paged streams in landing order;
  a BRIN index on ``received_at`` narrows time windows at almost no write cost (documents are appended
  in time order, which is exactly what BRIN summarises).
- ``raw_import``: ``(source, kind, started_at)`` for "imports newest first".
- ``raw_rejected``: ``(import_id, id)`` and ``(source, id)`` for the rejected-records streams.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Integer, String, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rosetta.core.db import new_metadata


class Base(DeclarativeBase):
    """Declarative base of the `raw` database."""

    metadata = new_metadata()


class RawImport(Base):
    """One import, pull or demo load, with its counts (read = landed + duplicates + rejected)."""

    __tablename__ = "raw_import"

    import_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    origin: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    read_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    landed_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    duplicate_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    rejected_count: Mapped[int] = mapped_column(BigInteger, server_default="0")

    __table_args__ = (
        CheckConstraint("status IN ('running', 'completed', 'failed')", name="status"),
        Index("ix_raw_import_source_kind_started_at", "source", "kind", "started_at"),
        Index("ix_raw_import_started_at", "started_at"),
    )


class RawDocumentRow(Base):
    """One landed document; ``id`` gives the landing order that streams follow."""

    __tablename__ = "raw_document"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    import_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # sha256 (hex) of the payload's canonical JSON, see rosetta.raw.canonical.
    content_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("uq_raw_document_source_kind_content_hash", "source", "kind", "content_hash", unique=True),
        Index("ix_raw_document_source_kind_id", "source", "kind", "id"),
        Index("ix_raw_document_import_id_id", "import_id", "id"),
        Index("ix_raw_document_received_at_brin", "received_at", postgresql_using="brin"),
    )


class RawRejected(Base):
    """A record that could not be landed, with why and where (1-based line in the source file)."""

    __tablename__ = "raw_rejected"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    import_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    source: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    line: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text)
    rejected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_raw_rejected_import_id_id", "import_id", "id"),
        Index("ix_raw_rejected_source_id", "source", "id"),
    )


class RawWatermark(Base):
    """The high-water mark of one incremental stream of one source (advanced when a pull completes)."""

    __tablename__ = "raw_watermark"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

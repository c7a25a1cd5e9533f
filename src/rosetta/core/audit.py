"""The audit log: one append-only, hash-chained table per context database.

Each context declares the table in its own metadata with :func:`audit_log_table` (so it is created by
that context's alembic tree, next to the data it audits: the audit row is written in the same transaction
as the change). The database does the chaining in a ``BEFORE INSERT`` trigger (see the ``*_0002``
migrations): under a transaction-level advisory lock it assigns ``seq`` (previous + 1), copies the previous
row's ``row_hash`` into ``prev_hash`` and computes ``row_hash`` over the row's canonical text. Other triggers
refuse ``UPDATE``, ``DELETE`` and ``TRUNCATE``. :func:`verify_chain` recomputes every hash independently.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

AUDIT_OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "denied")


def audit_log_table(metadata: MetaData) -> Table:
    """Declare the ``audit_log`` table in a context's metadata (and so in its alembic tree)."""
    return Table(
        "audit_log",
        metadata,
        # Position in the hash chain, assigned by the insert trigger under a lock (never by the client).
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("actor_subject", String(255), nullable=False),
        Column("actor_roles", JSON().with_variant(JSONB(), "postgresql"), nullable=False, server_default="[]"),
        Column("action", String(100), nullable=False),
        Column("entity_type", String(100), nullable=False),
        Column("entity_id", String(255), nullable=False),
        Column("before", JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"), nullable=True),
        Column("after", JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"), nullable=True),
        Column("request_id", String(100), nullable=True),
        Column("outcome", String(16), nullable=False, server_default="succeeded"),
        Column("prev_hash", String(64), nullable=False),
        Column("row_hash", String(64), nullable=False),
        CheckConstraint("outcome IN ('succeeded', 'failed', 'denied')", name="outcome"),
        Index(None, "entity_type", "entity_id", "seq"),
        Index(None, "actor_subject", "seq"),
        Index(None, "action", "seq"),
        Index(None, "occurred_at"),
    )

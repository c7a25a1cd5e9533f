"""The audit log: one append-only, hash-chained table per context database.

Each context declares the table in its own metadata with :func:`audit_log_table` (so it is created by
that context's alembic tree, next to the data it audits: the audit row is written in the same transaction
as the change). The database does the chaining in a ``BEFORE INSERT`` trigger (see the ``*_0002``
migrations): under a transaction-level advisory lock it assigns ``seq`` (previous + 1), copies the previous
row's ``row_hash`` into ``prev_hash`` and computes ``row_hash`` over the row's canonical text. Other triggers
refuse ``UPDATE``, ``DELETE`` and ``TRUNCATE``. :func:`verify_chain` recomputes every hash independently.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from litestar import Request
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.types import Scope
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    FetchedValue,
    Index,
    MetaData,
    Select,
    String,
    Table,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from rosetta.core.db import new_metadata
from rosetta.core.errors import RosettaError
from rosetta.core.problems import request_id_of
from rosetta.core.schemas import CamelStruct
from rosetta.core.security.permissions import Principal
from rosetta.core.wire import to_builtins

logger = logging.getLogger(__name__)

AuditOutcome = Literal["succeeded", "failed", "denied"]
AUDIT_OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "denied")
GENESIS_HASH = "0" * 64


def audit_log_table(metadata: MetaData) -> Table:
    """Declare the ``audit_log`` table in a context's metadata (and so in its alembic tree)."""
    return Table(
        "audit_log",
        metadata,
        # Position in the hash chain, assigned by the insert trigger under a lock (never by the client).
        # FetchedValue: the client never provides it, the trigger does (it emits no DDL).
        Column("seq", BigInteger, primary_key=True, autoincrement=False, server_default=FetchedValue()),
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


_audit = audit_log_table(new_metadata())

# The canonical text a row's hash is computed over. The insert trigger (``*_0002`` migrations) builds the
# very same expression from NEW.*; verification rebuilds it from the stored columns and hashes it in Python,
# so a replaced trigger function cannot vouch for itself.
CANONICAL_ROW_SQL = """jsonb_build_array(
    seq,
    to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    actor_subject,
    actor_roles,
    action,
    entity_type,
    entity_id,
    before,
    after,
    request_id,
    outcome,
    prev_hash
)::text"""


class AuditChainBrokenError(RosettaError):
    """``rosetta audit verify`` found a row whose content or link does not match its hash."""

    status_code = 500
    title = "Audit chain broken"


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data: msgspec structs, dataclasses, Decimals (as plain-notation strings, as the
    API sends them: the audit read route serves these snapshots again), datetimes, UUIDs..."""
    return to_builtins(value)


async def record_audit(
    session: AsyncSession,
    *,
    actor_subject: str,
    actor_roles: Iterable[str],
    action: str,
    entity_type: str,
    entity_id: str,
    before: Any = None,
    after: Any = None,
    request_id: str | None = None,
    outcome: AuditOutcome = "succeeded",
) -> None:
    """Append one audit row in ``session``'s transaction (so it commits or rolls back with the change).

    Usable from services and batches (actor e.g. ``batch:finops``). The row's position, link and hash are
    set by the database; concurrent writers queue on the chain's advisory lock until their commit, so keep
    the audit write close to the end of the transaction.
    """
    if outcome not in AUDIT_OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(AUDIT_OUTCOMES)}")
    await session.execute(
        insert(_audit).values(
            actor_subject=actor_subject,
            actor_roles=sorted(str(role) for role in actor_roles),
            action=action,
            entity_type=entity_type,
            entity_id=str(entity_id),
            before=to_json_value(before),
            after=to_json_value(after),
            request_id=request_id,
            outcome=outcome,
        )
    )


# Route handler ``opt`` key naming the database whose audit log records the route's refused changes.
AUDIT_DATABASE_OPT = "audit_database"
_MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def record_denied_change(exception: Exception, scope: Scope) -> None:
    """``after_exception`` hook: a change an authenticated caller may not make leaves a ``denied`` audit row.

    Auditors ask who tried to change what they were not allowed to, not only who changed what. The row goes
    to the audit log of the context the route belongs to (``AUDIT_DATABASE_OPT``), in a transaction of its
    own: the refused request has nothing to commit. Reads that are refused and anonymous callers (401, no
    identity to record) are left to the access logs. A failure to write the row is logged and never changes
    the 403 the caller gets.
    """
    if not isinstance(exception, PermissionDeniedException) or scope.get("method") not in _MUTATING_METHODS:
        return
    handler = scope.get("route_handler")
    role = handler.opt.get(AUDIT_DATABASE_OPT) if handler is not None else None
    principal = scope.get("user")
    if role is None or not isinstance(principal, Principal):
        return
    method, path = str(scope.get("method")), str(scope["path"])
    template = str(scope.get("path_template") or path)
    try:
        async with scope["app"].state.databases.unit_of_work(role) as session:
            await record_audit(
                session,
                actor_subject=principal.subject,
                actor_roles=principal.roles,
                action=f"{method} {template}"[:100],
                entity_type="route",
                entity_id=path[:255],
                after={"reason": exception.detail},
                request_id=scope.get("state", {}).get("request_id"),
                outcome="denied",
            )
    except Exception:
        logger.warning("could not audit a refused change", extra={"path": path}, exc_info=True)


@dataclass(frozen=True)
class Auditor:
    """The ``auditor`` dependency: writes audit rows for the request's principal, in the request's transaction."""

    session: AsyncSession
    principal: Principal | None
    request_id: str | None

    async def record(
        self,
        *,
        action: str,
        entity_type: str,
        entity_id: str,
        before: Any = None,
        after: Any = None,
        outcome: AuditOutcome = "succeeded",
    ) -> None:
        """Append one audit row describing a change this request made."""
        await record_audit(
            self.session,
            actor_subject=self.principal.subject if self.principal else "anonymous",
            actor_roles=self.principal.roles if self.principal else (),
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            before=before,
            after=after,
            request_id=self.request_id,
            outcome=outcome,
        )


def provide_auditor(session: NamedDependency[AsyncSession], request: Request[Any, Any, Any]) -> Auditor:
    """Dependency: an :class:`Auditor` bound to the request's session, principal and request id."""
    principal = request.scope.get("user")
    return Auditor(
        session=session,
        principal=principal if isinstance(principal, Principal) else None,
        request_id=request_id_of(request),
    )


class AuditEntry(CamelStruct):
    """One audit row as the read API returns it."""

    seq: int
    occurred_at: datetime
    actor_subject: str
    actor_roles: list[str]
    action: str
    entity_type: str
    entity_id: str
    before: Any
    after: Any
    request_id: str | None
    outcome: str
    prev_hash: str
    row_hash: str


@dataclass(frozen=True)
class AuditFilter:
    """Filters of the audit read API; ``None`` means "any"."""

    entity_type: str | None = None
    entity_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def audit_query(filters: AuditFilter) -> Select[Any]:
    """The filtered audit rows (unordered; the caller pages by ``seq``)."""
    query = select(_audit)
    if filters.entity_type is not None:
        query = query.where(_audit.c.entity_type == filters.entity_type)
    if filters.entity_id is not None:
        query = query.where(_audit.c.entity_id == filters.entity_id)
    if filters.actor is not None:
        query = query.where(_audit.c.actor_subject == filters.actor)
    if filters.action is not None:
        query = query.where(_audit.c.action == filters.action)
    if filters.since is not None:
        query = query.where(_audit.c.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(_audit.c.occurred_at < filters.until)
    return query


def audit_sort_key() -> Sequence[Any]:
    """The keyset of audit pages (newest first)."""
    return (_audit.c.seq,)


def entry_from_row(row: Any) -> AuditEntry:
    """An :class:`AuditEntry` from a selected ``audit_log`` row."""
    mapping = row._mapping
    return AuditEntry(**{name: mapping[name] for name in AuditEntry.__struct_fields__})


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found: rows checked, the head hash, and the first broken row if any."""

    rows: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        """True when every row's link and content match its hash."""
        return self.broken_seq is None


async def verify_chain(connection: AsyncConnection, *, batch_size: int = 5000) -> ChainReport:
    """Recompute every row's hash in ``seq`` order and stop at the first mismatch.

    Detects altered content, a removed or inserted row (a gap in ``seq`` or a wrong ``prev_hash``) and a
    re-linked row. Deleting the newest rows with the triggers disabled is only visible against an anchor:
    keep the printed head hash and row count somewhere the database administrators cannot write.
    """
    expected_prev = GENESIS_HASH
    expected_seq = 1
    rows = 0
    last_seq = 0
    while True:
        result = await connection.execute(
            text(
                f"SELECT seq, prev_hash, row_hash, {CANONICAL_ROW_SQL} AS canonical FROM audit_log "
                "WHERE seq > :after ORDER BY seq LIMIT :limit"
            ),
            {"after": last_seq, "limit": batch_size},
        )
        batch = result.all()
        if not batch:
            return ChainReport(rows=rows, head_hash=expected_prev)
        for seq, prev_hash, row_hash, canonical in batch:
            if seq != expected_seq:
                return ChainReport(
                    rows,
                    expected_prev,
                    broken_seq=seq,
                    problem=f"row(s) missing before it (expected seq {expected_seq})",
                )
            if prev_hash != expected_prev:
                return ChainReport(rows, expected_prev, broken_seq=seq, problem="its link to the previous row is wrong")
            if hashlib.sha256(canonical.encode("utf-8")).hexdigest() != row_hash:
                return ChainReport(rows, expected_prev, broken_seq=seq, problem="its content does not match its hash")
            rows += 1
            expected_prev = row_hash
            expected_seq = seq + 1
            last_seq = seq

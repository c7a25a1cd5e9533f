"""audit log: append-only, hash-chained

Revision ID: finops_0002
Revises: finops_0001
Create Date: 2026-11-26 15:00:00.000000

The table is written only through INSERT. A BEFORE INSERT trigger chains each row to the previous one
under a transaction-level advisory lock (so the chain stays linear under concurrent writers; the primary
key on ``seq`` makes a fork impossible to commit even under REPEATABLE READ). Other triggers refuse
UPDATE, DELETE and TRUNCATE, for every role including the table owner. ``rosetta audit verify`` recomputes
the hashes with the same canonical text (see ``rosetta.core.audit.CANONICAL_ROW_SQL``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'finops_0002'
down_revision: str | Sequence[str] | None = 'finops_0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# sha256("rosetta.audit_log")[:8] as a signed bigint; advisory locks are scoped to one database.
_CHAIN_LOCK_KEY = -478964898379258175

_CHAIN_FUNCTION = f"""
CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous_seq bigint;
    previous_hash text;
BEGIN
    -- One writer at a time appends to the chain; the lock is released at commit or rollback.
    PERFORM pg_advisory_xact_lock({_CHAIN_LOCK_KEY});
    SELECT seq, row_hash INTO previous_seq, previous_hash FROM audit_log ORDER BY seq DESC LIMIT 1;
    NEW.seq := COALESCE(previous_seq, 0) + 1;
    NEW.prev_hash := COALESCE(previous_hash, repeat('0', 64));
    NEW.occurred_at := COALESCE(NEW.occurred_at, now());
    NEW.actor_roles := COALESCE(NEW.actor_roles, '[]'::jsonb);
    NEW.row_hash := encode(sha256(convert_to(jsonb_build_array(
        NEW.seq,
        to_char(NEW.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        NEW.actor_subject,
        NEW.actor_roles,
        NEW.action,
        NEW.entity_type,
        NEW.entity_id,
        NEW.before,
        NEW.after,
        NEW.request_id,
        NEW.outcome,
        NEW.prev_hash
    )::text, 'UTF8')), 'hex');
    RETURN NEW;
END
$$
"""

_REFUSE_FUNCTION = """
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    # Never wait long for a lock on a live table: fail fast and retry the deploy instead.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor_subject', sa.String(length=255), nullable=False),
    sa.Column('actor_roles', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), server_default='[]', nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('entity_type', sa.String(length=100), nullable=False),
    sa.Column('entity_id', sa.String(length=255), nullable=False),
    sa.Column('before', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('after', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('request_id', sa.String(length=100), nullable=True),
    sa.Column('outcome', sa.String(length=16), server_default='succeeded', nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('row_hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint("outcome IN ('succeeded', 'failed', 'denied')", name=op.f('ck_audit_log_outcome')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_log'))
    )
    op.create_index(op.f('ix_audit_log_action'), 'audit_log', ['action', 'seq'], unique=False)
    op.create_index(op.f('ix_audit_log_actor_subject'), 'audit_log', ['actor_subject', 'seq'], unique=False)
    op.create_index(op.f('ix_audit_log_entity_type'), 'audit_log', ['entity_type', 'entity_id', 'seq'], unique=False)
    op.create_index(op.f('ix_audit_log_occurred_at'), 'audit_log', ['occurred_at'], unique=False)
    op.execute(_CHAIN_FUNCTION)
    op.execute(_REFUSE_FUNCTION)
    op.execute(
        "CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_chain()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_table('audit_log')
    op.execute("DROP FUNCTION audit_log_chain()")
    op.execute("DROP FUNCTION audit_log_refuse_change()")

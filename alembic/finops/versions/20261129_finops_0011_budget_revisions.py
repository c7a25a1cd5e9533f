"""budgets: every change makes a revision; earlier revisions keep their lines, immutable

Revision ID: finops_0011
Revises: finops_0010
Create Date: 2026-11-29 12:00:00

PUT, PATCH and import changed a budget version's lines in place, so a comparison made against it last week
could not be reproduced (ADR 0012, after ADR 0011 for pricing views). Each budget now has revisions:
``budget_revision`` (name, description, author, time) and ``budget_revision_line`` (its lines), which a trigger
keeps from UPDATE and DELETE; ``budget_version.revision`` names the current one. The lines and the description
move there: ``budget_line`` and ``budget_version.description`` are dropped, and so are ``row_version`` (the
revision counts changes now) and ``updated_at`` (the current revision's time). ``budget_version.name`` stays, as
the current name, since names are unique across budgets.

Existing budgets become revision 1 with their current name, description and lines, dated when those lines were
last written (``updated_at``) and signed by whoever wrote them: the actor of the version's latest audit row, or
its creator when it has none. Edits made before this upgrade were in place: the audit log is their only record.

The downgrade puts each budget's current revision back in ``budget_line`` and ``budget_version`` (``row_version``
becomes the revision number, ``updated_at`` its time); earlier revisions are lost with their tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "finops_0011"
down_revision: str | Sequence[str] | None = "finops_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IMMUTABLE = ("budget_revision", "budget_revision_line")
_SCOPE_LEVELS = "scope_level IN ('application', 'product', 'family', 'domain')"


def upgrade() -> None:
    # Never wait long for a lock on a live table: fail fast and retry the deploy instead.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "budget_revision",
        sa.Column("budget_version_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_budget_revision_revision_positive")),
        sa.ForeignKeyConstraint(
            ["budget_version_id"],
            ["budget_version.id"],
            name=op.f("fk_budget_revision_budget_version_id_budget_version"),
        ),
        sa.PrimaryKeyConstraint("budget_version_id", "revision", name=op.f("pk_budget_revision")),
    )
    op.create_table(
        "budget_revision_line",
        sa.Column("budget_version_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("scope_level", sa.String(length=16), nullable=False),
        sa.Column("scope_code", sa.String(length=64), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.CheckConstraint(_SCOPE_LEVELS, name=op.f("ck_budget_revision_line_scope_level")),
        sa.CheckConstraint("EXTRACT(DAY FROM month) = 1", name=op.f("ck_budget_revision_line_month_first_day")),
        sa.ForeignKeyConstraint(
            ["budget_version_id", "revision"],
            ["budget_revision.budget_version_id", "budget_revision.revision"],
            name="fk_budget_revision_line_revision",
        ),
        sa.PrimaryKeyConstraint(
            "budget_version_id", "revision", "scope_level", "scope_code", "month", name=op.f("pk_budget_revision_line")
        ),
    )
    op.add_column("budget_version", sa.Column("revision", sa.Integer(), nullable=True))
    # The current state was written at updated_at, by the actor of the version's latest change (the API and the
    # raw-zone import both audit each change as entity budget_version); a version never changed has no such row.
    op.execute(
        """
        INSERT INTO budget_revision (budget_version_id, revision, name, description, created_by, created_at)
        SELECT v.id, 1, v.name, v.description,
               coalesce((SELECT a.actor_subject FROM audit_log a
                         WHERE a.entity_type = 'budget_version' AND a.entity_id = v.id::text
                           AND a.outcome = 'succeeded'
                         ORDER BY a.seq DESC LIMIT 1), v.created_by),
               v.updated_at
        FROM budget_version v
        """
    )
    op.execute(
        "INSERT INTO budget_revision_line"
        " (budget_version_id, revision, scope_level, scope_code, month, amount, currency)"
        " SELECT budget_version_id, 1, scope_level, scope_code, month, amount, currency FROM budget_line"
    )
    op.execute("UPDATE budget_version SET revision = 1")
    op.alter_column("budget_version", "revision", nullable=False)
    op.create_check_constraint(op.f("ck_budget_version_revision_positive"), "budget_version", "revision >= 1")
    op.drop_column("budget_version", "description")
    op.drop_column("budget_version", "row_version")
    op.drop_column("budget_version", "updated_at")
    op.drop_table("budget_line")
    op.execute(
        """
        CREATE FUNCTION budget_revision_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'budget revisions are immutable: change the budget to make a new revision'
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    for table in _IMMUTABLE:
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION budget_revision_refuse_change()"
        )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "budget_line",
        sa.Column("budget_version_id", sa.Uuid(), nullable=False),
        sa.Column("scope_level", sa.String(length=16), nullable=False),
        sa.Column("scope_code", sa.String(length=64), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.CheckConstraint(_SCOPE_LEVELS, name=op.f("ck_budget_line_scope_level")),
        sa.CheckConstraint("EXTRACT(DAY FROM month) = 1", name=op.f("ck_budget_line_month_first_day")),
        sa.ForeignKeyConstraint(
            ["budget_version_id"],
            ["budget_version.id"],
            name=op.f("fk_budget_line_budget_version_id_budget_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("budget_version_id", "scope_level", "scope_code", "month", name=op.f("pk_budget_line")),
    )
    op.add_column("budget_version", sa.Column("description", sa.Text(), nullable=True))
    op.add_column("budget_version", sa.Column("row_version", sa.Integer(), server_default="1", nullable=False))
    op.add_column(
        "budget_version",
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.execute(
        "INSERT INTO budget_line (budget_version_id, scope_level, scope_code, month, amount, currency)"
        " SELECT l.budget_version_id, l.scope_level, l.scope_code, l.month, l.amount, l.currency"
        " FROM budget_revision_line l"
        " JOIN budget_version v ON v.id = l.budget_version_id AND v.revision = l.revision"
    )
    op.execute(
        "UPDATE budget_version v SET description = r.description, row_version = v.revision, updated_at = r.created_at"
        " FROM budget_revision r WHERE r.budget_version_id = v.id AND r.revision = v.revision"
    )
    op.drop_constraint(op.f("ck_budget_version_revision_positive"), "budget_version", type_="check")
    op.drop_column("budget_version", "revision")
    for table in _IMMUTABLE:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
    op.execute("DROP FUNCTION IF EXISTS budget_revision_refuse_change()")
    op.drop_table("budget_revision_line")
    op.drop_table("budget_revision")

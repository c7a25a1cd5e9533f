"""pricing views: every change makes a revision; earlier revisions keep their rates, immutable

Revision ID: finops_0010
Revises: finops_0009
Create Date: 2026-11-28 12:00:00

PUT, PATCH and import changed a pricing view's rates in place, so a comparison made against it last week could
not be reproduced (ADR 0011). Each view now has revisions: ``pricing_view_revision`` (description, author,
time) and ``pricing_view_revision_rate`` (its rate card), which a trigger keeps from UPDATE and DELETE;
``pricing_view.revision`` names the current one. The description and rates move there: ``pricing_view_rate``
and ``pricing_view.description`` are dropped, so the current card has one home. Existing views become revision
1 with their current rates and description, dated at the view's creation (edits made before this upgrade were
in place: the audit log is their only record).

The downgrade puts each view's current revision back in ``pricing_view_rate`` and ``pricing_view.description``;
earlier revisions are lost with their tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "finops_0010"
down_revision: str | Sequence[str] | None = "finops_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IMMUTABLE = ("pricing_view_revision", "pricing_view_revision_rate")


def upgrade() -> None:
    # Never wait long for a lock on a live table: fail fast and retry the deploy instead.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "pricing_view_revision",
        sa.Column("pricing_view_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_pricing_view_revision_revision_positive")),
        sa.ForeignKeyConstraint(
            ["pricing_view_id"],
            ["pricing_view.id"],
            name=op.f("fk_pricing_view_revision_pricing_view_id_pricing_view"),
        ),
        sa.PrimaryKeyConstraint("pricing_view_id", "revision", name=op.f("pk_pricing_view_revision")),
    )
    op.create_table(
        "pricing_view_revision_rate",
        sa.Column("pricing_view_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("service_category", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("unit_price", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pricing_view_id", "revision"],
            ["pricing_view_revision.pricing_view_id", "pricing_view_revision.revision"],
            name="fk_pricing_view_revision_rate_revision",
        ),
        sa.ForeignKeyConstraint(
            ["service_category"],
            ["dim_service_category.name"],
            name=op.f("fk_pricing_view_revision_rate_service_category_dim_service_category"),
        ),
        sa.PrimaryKeyConstraint(
            "pricing_view_id", "revision", "service_category", "unit", name=op.f("pk_pricing_view_revision_rate")
        ),
    )
    op.add_column("pricing_view", sa.Column("revision", sa.Integer(), nullable=True))
    op.execute(
        "INSERT INTO pricing_view_revision (pricing_view_id, revision, description, created_by, created_at)"
        " SELECT id, 1, description, created_by, created_at FROM pricing_view"
    )
    op.execute(
        "INSERT INTO pricing_view_revision_rate (pricing_view_id, revision, service_category, unit, unit_price)"
        " SELECT pricing_view_id, 1, service_category, unit, unit_price FROM pricing_view_rate"
    )
    op.execute("UPDATE pricing_view SET revision = 1")
    op.alter_column("pricing_view", "revision", nullable=False)
    op.create_check_constraint(op.f("ck_pricing_view_revision_positive"), "pricing_view", "revision >= 1")
    op.drop_column("pricing_view", "description")
    op.drop_table("pricing_view_rate")
    op.execute(
        """
        CREATE FUNCTION pricing_view_revision_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'pricing view revisions are immutable: change the view to make a new revision'
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    for table in _IMMUTABLE:
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION pricing_view_revision_refuse_change()"
        )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "pricing_view_rate",
        sa.Column("pricing_view_id", sa.Uuid(), nullable=False),
        sa.Column("service_category", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("unit_price", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pricing_view_id"],
            ["pricing_view.id"],
            name=op.f("fk_pricing_view_rate_pricing_view_id_pricing_view"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["service_category"],
            ["dim_service_category.name"],
            name=op.f("fk_pricing_view_rate_service_category_dim_service_category"),
        ),
        sa.PrimaryKeyConstraint("pricing_view_id", "service_category", "unit", name=op.f("pk_pricing_view_rate")),
    )
    op.add_column("pricing_view", sa.Column("description", sa.Text(), nullable=True))
    op.execute(
        "INSERT INTO pricing_view_rate (pricing_view_id, service_category, unit, unit_price)"
        " SELECT r.pricing_view_id, r.service_category, r.unit, r.unit_price"
        " FROM pricing_view_revision_rate r JOIN pricing_view v ON v.id = r.pricing_view_id AND v.revision = r.revision"
    )
    op.execute(
        "UPDATE pricing_view v SET description = r.description FROM pricing_view_revision r"
        " WHERE r.pricing_view_id = v.id AND r.revision = v.revision"
    )
    op.drop_constraint(op.f("ck_pricing_view_revision_positive"), "pricing_view", type_="check")
    op.drop_column("pricing_view", "revision")
    for table in _IMMUTABLE:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
    op.execute("DROP FUNCTION IF EXISTS pricing_view_revision_refuse_change()")
    op.drop_table("pricing_view_revision_rate")
    op.drop_table("pricing_view_revision")

"""budgets: a landed budget line is applied once, so an admin's later edit of it stands

Revision ID: finops_0012
Revises: finops_0011
Create Date: 2026-11-30 09:00:00

finops-batch read every ``finance/budget`` document of the raw zone on every run and wrote each line whose
amount differed from the budget's: an admin's PATCH of a landed line was undone by the next nightly run.
``budget_landed_line`` keeps the content hash of each document a run has applied; later runs skip those, so a
landed line is applied once and an edit of it stands until a new document lands for the same line.

Existing budgets: the table starts empty, so the first run after this upgrade applies every landed document once
more (what every run did before), then never again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "finops_0012"
down_revision: str | Sequence[str] | None = "finops_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Never wait long for a lock on a live table: fail fast and retry the deploy instead.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "budget_landed_line",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("budget_version_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_version_id"],
            ["budget_version.id"],
            name=op.f("fk_budget_landed_line_budget_version_id_budget_version"),
        ),
        sa.PrimaryKeyConstraint("content_hash", name=op.f("pk_budget_landed_line")),
    )
    op.create_index(
        op.f("ix_budget_landed_line_budget_version_id"), "budget_landed_line", ["budget_version_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_budget_landed_line_budget_version_id"), table_name="budget_landed_line")
    op.drop_table("budget_landed_line")

"""batch_rejection: a reason code beside the reason text, and an index on the month its rows are replaced by

Revision ID: finops_0008
Revises: finops_0007
Create Date: 2026-11-27 10:00:00

``reason_code`` is one of a small fixed vocabulary (``invalid_amount``, ``invalid_date``...: the keys of the run
record's ``rejected_by_reason``); ``reason`` keeps the text naming the offending value. Rows stored before this
revision get ``unclassified``; the next finops-batch run of every month replaces them all. finops-batch now
replaces a month's rejections in the transaction that swaps the month in (``DELETE ... WHERE period_month``),
hence the index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "finops_0008"
down_revision: str | Sequence[str] | None = "finops_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column(
        "batch_rejection",
        sa.Column("reason_code", sa.String(length=32), nullable=False, server_default="unclassified"),
    )
    # The default only fills the rows already there: the batch always names the code.
    op.alter_column("batch_rejection", "reason_code", server_default=None)
    op.create_index(op.f("ix_batch_rejection_period_month"), "batch_rejection", ["period_month"], unique=False)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_index(op.f("ix_batch_rejection_period_month"), table_name="batch_rejection")
    op.drop_column("batch_rejection", "reason_code")

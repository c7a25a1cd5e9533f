"""mv_finops_cost_monthly keeps one index: its unique key, led by the application

Revision ID: finops_0007
Revises: finops_0006
Create Date: 2026-11-26 21:00:00

The only reader of ``mv_finops_cost_monthly`` is the application cost page (``queries.APPLICATION_SQL``:
``application_code = :code AND currency = :currency AND period BETWEEN``); the drill-down reads the rollup view.
Its three indexes were the unique key led by ``period`` (needed by ``REFRESH ... CONCURRENTLY``, the views'
fallback, but read by no query), ``(product_code, period)`` (read by no query) and ``(application_code,
period)``. The unique key now leads with ``application_code, period``, so it serves the application page, and
the other two go: finops-batch builds every view's indexes after every run, and these two took 1.4
CPU-seconds on the large world built one after the other (a whole run is ~28; the runs' own spread hides the
difference). The application page's query is as fast on the new key (0.62-0.96 against 0.64-0.90 ms, 400
applications of the large world, bench/README.md).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "finops_0007"
down_revision: str | Sequence[str] | None = "finops_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "environment_code, cost_type, service_category, provider, currency"


def upgrade() -> None:
    # Never wait long for a lock on a live view: fail fast and retry the deploy instead.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP INDEX ix_mv_finops_cost_monthly_product")
    op.execute("DROP INDEX ix_mv_finops_cost_monthly_application")
    op.execute("DROP INDEX uq_mv_finops_cost_monthly")
    op.execute(
        f"CREATE UNIQUE INDEX uq_mv_finops_cost_monthly ON mv_finops_cost_monthly (application_code, period, {_KEY})"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP INDEX uq_mv_finops_cost_monthly")
    op.execute(
        f"CREATE UNIQUE INDEX uq_mv_finops_cost_monthly ON mv_finops_cost_monthly (period, application_code, {_KEY})"
    )
    op.execute("CREATE INDEX ix_mv_finops_cost_monthly_product ON mv_finops_cost_monthly (product_code, period)")
    op.execute(
        "CREATE INDEX ix_mv_finops_cost_monthly_application ON mv_finops_cost_monthly (application_code, period)"
    )

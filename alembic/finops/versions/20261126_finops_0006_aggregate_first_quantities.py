"""mv_finops_quantity_monthly aggregates the direct quantities first, then attaches the month's hierarchy

Revision ID: finops_0006
Revises: finops_0005
Create Date: 2026-11-26 16:00:00

Same name, columns, rows and unique index as finops_0004, cheaper query (what finops_0005 did for the cost
views): the direct fact rows are grouped on their five short keys first (a hash aggregate), and
``dim_application_month`` - unique on (period, application_code), so joining after grouping yields the same
rows - is joined to the much smaller result, instead of joining every fact row and grouping on twelve text
columns. finops-batch refreshes this view concurrently after every run (22 s on the large world before).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "finops_0006"
down_revision: str | Sequence[str] | None = "finops_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUANTITIES = """
CREATE MATERIALIZED VIEW mv_finops_quantity_monthly AS
SELECT f.period, f.application_code,
       COALESCE(h.name, f.application_code) AS application_name,
       COALESCE(h.product_code, 'UNALLOCATED') AS product_code,
       COALESCE(h.product_name, 'Unallocated') AS product_name,
       COALESCE(h.family_code, 'UNALLOCATED') AS family_code,
       COALESCE(h.family_name, 'Unallocated') AS family_name,
       COALESCE(h.domain_code, 'UNALLOCATED') AS domain_code,
       COALESCE(h.domain_name, 'Unallocated') AS domain_name,
       f.environment_code, f.service_category, f.unit, f.quantity, f.line_count
FROM (
    SELECT period_month AS period, application_code, environment_code, service_category, unit,
           sum(quantity) AS quantity, count(*) AS line_count
    FROM fact_consumption
    WHERE cost_type = 'direct' AND quantity IS NOT NULL AND unit IS NOT NULL
    GROUP BY period_month, application_code, environment_code, service_category, unit
) f
LEFT JOIN dim_application_month h ON h.period = f.period AND h.application_code = f.application_code
"""

_UNIQUE = (
    "CREATE UNIQUE INDEX uq_mv_finops_quantity_monthly ON mv_finops_quantity_monthly"
    " (period, application_code, environment_code, service_category, unit)"
)


def upgrade() -> None:
    # Never wait long for a lock on a live table: fail fast and retry the deploy instead.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP MATERIALIZED VIEW mv_finops_quantity_monthly")
    op.execute(_QUANTITIES)
    op.execute(_UNIQUE)


def downgrade() -> None:
    # Nothing to undo: the finops_0004 definition computes exactly the same rows and columns, only slower, and
    # finops_0004's own downgrade drops this view by name.
    op.execute("SET LOCAL lock_timeout = '5s'")

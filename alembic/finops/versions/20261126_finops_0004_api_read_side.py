"""finops-api read side: quantity view for pricing views, index for the application cost page

Revision ID: finops_0004
Revises: finops_0003
Create Date: 2026-11-26 15:20:00

``mv_finops_quantity_monthly`` holds the direct consumption *quantities* per month, application,
environment, service category and unit, with the hierarchy valid in that month: a pricing view values these
quantities with its rate card (``quantity x unit_price``), which the cost views cannot do (they sum money
across units). Like the other dashboard views it has the UNIQUE index ``REFRESH ... CONCURRENTLY`` needs,
and finops-batch refreshes it with them. The extra index on ``mv_finops_cost_monthly`` serves
``GET applications/{code}/costs`` (one application over 13 months) without scanning every application.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "finops_0004"
down_revision: str | Sequence[str] | None = "finops_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Never wait long for a lock on a live table: fail fast and retry the deploy instead.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        """
        CREATE MATERIALIZED VIEW mv_finops_quantity_monthly AS
        SELECT f.period_month AS period, f.application_code,
               COALESCE(h.name, f.application_code) AS application_name,
               COALESCE(h.product_code, 'UNALLOCATED') AS product_code,
               COALESCE(h.product_name, 'Unallocated') AS product_name,
               COALESCE(h.family_code, 'UNALLOCATED') AS family_code,
               COALESCE(h.family_name, 'Unallocated') AS family_name,
               COALESCE(h.domain_code, 'UNALLOCATED') AS domain_code,
               COALESCE(h.domain_name, 'Unallocated') AS domain_name,
               f.environment_code, f.service_category, f.unit,
               sum(f.quantity) AS quantity, count(*) AS line_count
        FROM fact_consumption f
        LEFT JOIN dim_application_month h ON h.period = f.period_month AND h.application_code = f.application_code
        WHERE f.cost_type = 'direct' AND f.quantity IS NOT NULL AND f.unit IS NOT NULL
        GROUP BY f.period_month, f.application_code, h.name, h.product_code, h.product_name, h.family_code,
                 h.family_name, h.domain_code, h.domain_name, f.environment_code, f.service_category, f.unit
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_mv_finops_quantity_monthly ON mv_finops_quantity_monthly"
        " (period, application_code, environment_code, service_category, unit)"
    )
    op.execute(
        "CREATE INDEX ix_mv_finops_cost_monthly_application ON mv_finops_cost_monthly (application_code, period)"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("DROP INDEX IF EXISTS ix_mv_finops_cost_monthly_application")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS mv_finops_quantity_monthly")

"""SQLAlchemy tables of the `finops` database; private to this context."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rosetta.core.audit import audit_log_table
from rosetta.core.db import new_metadata
from rosetta.core.runs import batch_run_table
from rosetta.finops.allocation import UNALLOCATED  # noqa: F401 - re-exported: one spelling in the mart


class Base(DeclarativeBase):
    """Declarative base of the `finops` database, with the project's naming convention."""

    metadata = new_metadata()


batch_run = batch_run_table(Base.metadata)
audit_log = audit_log_table(Base.metadata)


# ================================================================================================
# FinOps data mart (finops_0003). Owned by finops-batch (facts, dimensions) and finops-api (budgets,
# pricing views, allocation rules, aliases). Amounts are NUMERIC without precision or scale: FOCUS bills
# carry 11+ decimals and the mart must sum them exactly; rounding happens only where money is allocated.
#
# What dashboards and finops-api READ are the materialized views created in the migration (never the
# fact tables). Each has the UNIQUE index REFRESH ... CONCURRENTLY needs; at the end of every run the
# batch rebuilds them beside the live ones and swaps them in (rosetta.finops.views, ADR 0007). Names and
# columns:
#
# ``mv_finops_cost_monthly`` - one row per (period, application_code, environment_code, cost_type,
#     service_category, provider, currency); also product_code, family_code, domain_code and the names
#     of the hierarchy *valid in that month* (``dim_application_month``); billed_cost, effective_cost,
#     quantity is omitted (units differ). ``application_code = 'UNALLOCATED'`` is the unallocated share
#     (cost_type 'direct' for unmapped lines, 'indirect' for pools nobody could carry).
# ``mv_finops_cost_rollup_monthly`` - drill-down: one row per (level, code, period, environment_code,
#     cost_type, currency) with name, parent_level, parent_code, billed_cost, effective_cost, for level in
#     domain|family|product|application (parent of a domain is NULL). Each level sums exactly to its parent.
# ``mv_finops_cost_allocation_monthly`` - "why does my app pay this?": one row per (period, pool_code,
#     application_code, currency): rule_id, rule_version, key_type, weight, ratio, pool_amount,
#     allocated_amount, rounding_adjustment.
# ``mv_finops_cost_daily`` - Cost Insights daily series: one row per (day, application_code,
#     environment_code, currency) with product/family/domain codes, owner_group, billed_cost,
#     effective_cost (direct costs only: shared pools are monthly).
# ``mv_finops_period_control`` - per (period, currency): source totals, line counts (read, mapped,
#     unallocated, rejected) and the run_id that built the month.
# ================================================================================================

UNKNOWN_ENVIRONMENT = "unknown"
"""Environment of a cost line without a recognisable environment tag."""
SHARED_ENVIRONMENT = "shared"
"""Environment of indirect (allocated) rows: a shared pool is charged to an application, not to an env."""

SERVICE_CATEGORIES: tuple[str, ...] = (
    "AI and Machine Learning",
    "Analytics",
    "Business Applications",
    "Compute",
    "Databases",
    "Developer Tools",
    "Multicloud",
    "Identity",
    "Integration",
    "Internet of Things",
    "Management and Governance",
    "Media",
    "Migration",
    "Mobile",
    "Networking",
    "Security",
    "Storage",
    "Web",
    "Other",
)
"""The 19 FOCUS ServiceCategory values (seeded in ``dim_service_category``)."""

ALLOCATION_METHODS: tuple[str, ...] = ("even", "direct_cost", "usage", "fixed")
SCOPE_LEVELS: tuple[str, ...] = ("application", "product", "family", "domain")
ALIAS_KINDS: tuple[str, ...] = ("tag_key", "environment", "application", "service_category", "provider")

_MONEY = Numeric()  # unconstrained NUMERIC: exact at any scale
# NUMERIC itself has no practical limit; an amount of 10^15 or more (adjusted exponent above 14) is a unit or
# typing error, refused on every way in: API writes, imports and the batch's source lines.
MAX_AMOUNT_EXPONENT = 14


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


# ----------------------------------------------------------------------------------------- dimensions


class DimDomain(Base):
    """A business domain, one row per version (SCD type 2: ``valid_to`` is the last valid day, NULL = current)."""

    __tablename__ = "dim_domain"

    domain_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, primary_key=True)
    valid_to: Mapped[date | None] = mapped_column(Date)
    name: Mapped[str] = mapped_column(String(255))


class DimFamily(Base):
    """A family of products under a domain, one row per version (SCD type 2)."""

    __tablename__ = "dim_family"

    family_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, primary_key=True)
    valid_to: Mapped[date | None] = mapped_column(Date)
    name: Mapped[str] = mapped_column(String(255))
    domain_code: Mapped[str] = mapped_column(String(64))


class DimProduct(Base):
    """A product under a family, one row per version (SCD type 2)."""

    __tablename__ = "dim_product"

    product_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, primary_key=True)
    valid_to: Mapped[date | None] = mapped_column(Date)
    name: Mapped[str] = mapped_column(String(255))
    family_code: Mapped[str] = mapped_column(String(64))


class DimApplication(Base):
    """An application and its place in the hierarchy, one row per CMDB version (SCD type 2).

    The hierarchy columns are denormalised so that attributing a month is one lookup.
    ``UNALLOCATED`` is a permanent row (seeded) whose product, family and domain are ``UNALLOCATED`` too.
    """

    __tablename__ = "dim_application"

    application_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, primary_key=True)
    valid_to: Mapped[date | None] = mapped_column(Date)
    name: Mapped[str] = mapped_column(String(255))
    product_code: Mapped[str] = mapped_column(String(64))
    product_name: Mapped[str] = mapped_column(String(255))
    family_code: Mapped[str] = mapped_column(String(64))
    family_name: Mapped[str] = mapped_column(String(255))
    domain_code: Mapped[str] = mapped_column(String(64))
    domain_name: Mapped[str] = mapped_column(String(255))
    owner_group: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))


class DimApplicationMonth(Base):
    """The hierarchy each application belonged to in a given month (rebuilt with the month's facts).

    Rule: the CMDB version overlapping the month with the latest ``valid_from`` (so a move on the 15th
    counts for that whole month). A past month keeps the hierarchy it was built with.
    """

    __tablename__ = "dim_application_month"

    period: Mapped[date] = mapped_column(Date, primary_key=True)
    application_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    product_code: Mapped[str] = mapped_column(String(64))
    product_name: Mapped[str] = mapped_column(String(255))
    family_code: Mapped[str] = mapped_column(String(64))
    family_name: Mapped[str] = mapped_column(String(255))
    domain_code: Mapped[str] = mapped_column(String(64))
    domain_name: Mapped[str] = mapped_column(String(255))
    owner_group: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class DimEnvironment(Base):
    """An environment (prod, preprod, dev...); ``unknown`` and ``shared`` are seeded."""

    __tablename__ = "dim_environment"

    environment_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    is_production: Mapped[bool] = mapped_column(Boolean, server_default="false")


class DimServiceCategory(Base):
    """One of the 19 FOCUS service categories (seeded, fixed list)."""

    __tablename__ = "dim_service_category"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(SmallInteger)


class DimCostPool(Base):
    """A shared-cost pool (network, security...), from ``finance/shared_cost``."""

    __tablename__ = "dim_cost_pool"

    pool_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    service_category: Mapped[str] = mapped_column(
        String(64), ForeignKey("dim_service_category.name"), server_default="Other"
    )


class MappingAlias(Base):
    """Admin-configurable normalisation: ``alias`` means ``canonical`` for one ``kind``.

    Kinds: ``tag_key`` (``env`` -> ``environment``), ``environment`` (``production`` -> ``prod``),
    ``application`` (an old app code or a tag value -> a CMDB app code), ``service_category``,
    ``provider``. Matching is case-insensitive and ignores surrounding spaces, so an alias is unique per kind
    in that folded form (two spellings of one alias would otherwise be applied in no fixed order).
    Managed through ``/api/finops/v1/mapping-aliases`` (FinOps admins, audited).
    """

    __tablename__ = "mapping_alias"
    __table_args__ = (
        Index("uq_mapping_alias_kind_folded_alias", "kind", func.lower(func.btrim(text("alias"))), unique=True),
        CheckConstraint(_in("kind", ALIAS_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    alias: Mapped[str] = mapped_column(String(255))
    canonical: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[str] = mapped_column(String(255), server_default="system")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# ------------------------------------------------------------------------------------------------ facts


class FactConsumption(Base):
    """Cost lines of the mart, PARTITIONED BY RANGE (period_month): one partition per month.

    A month is rebuilt by building a staging table and swapping it in one transaction (see
    ``rosetta.finops.pipeline`` and docs/adr/0005-finops-month-rebuild.md). ``line_no`` numbers the rows
    of a month in the order of their grain, so a rerun on the same inputs gives identical rows apart
    from ``run_id``. Direct rows are daily (``granularity='day'``); allocated rows are monthly.
    """

    __tablename__ = "fact_consumption"
    __table_args__ = (
        CheckConstraint("granularity IN ('day', 'month')", name="granularity"),
        CheckConstraint("cost_type IN ('direct', 'indirect')", name="cost_type"),
        {"postgresql_partition_by": "RANGE (period_month)"},
    )

    period_month: Mapped[date] = mapped_column(Date, primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[date] = mapped_column(Date)
    granularity: Mapped[str] = mapped_column(String(5))
    application_code: Mapped[str] = mapped_column(String(64))
    environment_code: Mapped[str] = mapped_column(String(32))
    service_category: Mapped[str] = mapped_column(String(64))
    service_name: Mapped[str | None] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(64))
    cost_type: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal | None] = mapped_column(_MONEY)
    unit: Mapped[str | None] = mapped_column(String(64))
    billed_cost: Mapped[Decimal] = mapped_column(_MONEY)
    effective_cost: Mapped[Decimal] = mapped_column(_MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    source: Mapped[str] = mapped_column(String(64))
    # Indirect rows: the rule (``AllocatedMethodId`` = rule_id@version), the pool and the ratio applied.
    allocation_rule_id: Mapped[str | None] = mapped_column(String(64))
    allocation_rule_version: Mapped[int | None] = mapped_column(Integer)
    source_pool: Mapped[str | None] = mapped_column(String(64))
    allocated_ratio: Mapped[Decimal | None] = mapped_column(Numeric)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class FactCoefficient(Base):
    """How each pool of a month was split: one row per (pool, target), PARTITIONED BY RANGE (period_month).

    Swapped together with ``fact_consumption`` so it always explains the facts readers see.
    """

    __tablename__ = "fact_coefficient"
    __table_args__ = (
        CheckConstraint("key_type IN ('even', 'direct_cost', 'usage', 'fixed', 'unallocated')", name="key_type"),
        {"postgresql_partition_by": "RANGE (period_month)"},
    )

    period_month: Mapped[date] = mapped_column(Date, primary_key=True)
    pool_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    target_application_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    allocation_rule_id: Mapped[str] = mapped_column(String(64))
    allocation_rule_version: Mapped[int] = mapped_column(Integer)
    key_type: Mapped[str] = mapped_column(String(16))
    driver: Mapped[str | None] = mapped_column(String(64))
    weight: Mapped[Decimal] = mapped_column(Numeric)
    ratio: Mapped[Decimal] = mapped_column(Numeric)
    pool_amount: Mapped[Decimal] = mapped_column(_MONEY)
    allocated_amount: Mapped[Decimal] = mapped_column(_MONEY)
    rounding_adjustment: Mapped[Decimal] = mapped_column(_MONEY)
    inputs_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class FactPool(Base):
    """The shared-cost pools of a month as landed (the "pooled" side of the conservation check)."""

    __tablename__ = "fact_pool"

    period_month: Mapped[date] = mapped_column(Date, primary_key=True)
    pool_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(_MONEY)
    allocation_rule_id: Mapped[str] = mapped_column(String(64))
    allocation_rule_version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)


class FactPeriodControl(Base):
    """Control totals of a month per currency, computed while reading the raw zone (the "source" side)."""

    __tablename__ = "fact_period_control"

    period_month: Mapped[date] = mapped_column(Date, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    source_billed: Mapped[Decimal] = mapped_column(_MONEY)
    source_effective: Mapped[Decimal] = mapped_column(_MONEY)
    pool_amount: Mapped[Decimal] = mapped_column(_MONEY)
    lines_read: Mapped[int] = mapped_column(BigInteger)
    lines_mapped: Mapped[int] = mapped_column(BigInteger)
    lines_unallocated: Mapped[int] = mapped_column(BigInteger)
    lines_rejected: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    built_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BatchRejection(Base):
    """A raw document finops-batch could not use (unparsable amount, unknown period...), with why.

    The table explains the data the mart holds, not a history: the swap of a month replaces that month's rows,
    a run of every month those of no month (no parseable date), and every run those of the CMDB hierarchy and
    the budgets, which it rebuilds whole. ``run_id`` is the run that stored the row.
    """

    __tablename__ = "batch_rejection"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    # finops_0008: the swap of a month deletes its rows by month.
    period_month: Mapped[date | None] = mapped_column(Date, index=True)
    source: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(128))
    # finops_0008: one of ``pipeline.REJECTION_CODES`` (``unclassified`` on rows stored before it).
    reason_code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, object]] = mapped_column(JSONB)
    rejected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# -------------------------------------------------------------------------- budgets and pricing views


class BudgetVersion(Base):
    """A named budget ("Budget 2026 initial", "Revised Q2"); its lines are amounts per scope and month.

    Every change makes a *revision*: its name, description and lines are kept, immutable, in
    ``budget_revision`` and ``budget_revision_line`` (ADR 0012); ``revision`` names the current one. ``name`` is
    the current revision's, kept here too because names are unique across budgets.
    """

    __tablename__ = "budget_version"
    __table_args__ = (CheckConstraint("revision >= 1", name="revision_positive"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    revision: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BudgetRevision(Base):
    """One revision of a budget: its name and description, who made it and when (a trigger refuses changes)."""

    __tablename__ = "budget_revision"
    __table_args__ = (CheckConstraint("revision >= 1", name="revision_positive"),)

    budget_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("budget_version.id"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BudgetRevisionLine(Base):
    """One amount of a budget revision: a scope (application|product|family|domain + code), a month (immutable)."""

    __tablename__ = "budget_revision_line"
    __table_args__ = (
        CheckConstraint(_in("scope_level", SCOPE_LEVELS), name="scope_level"),
        CheckConstraint("EXTRACT(DAY FROM month) = 1", name="month_first_day"),
        ForeignKeyConstraint(
            ["budget_version_id", "revision"],
            ["budget_revision.budget_version_id", "budget_revision.revision"],
            name="fk_budget_revision_line_revision",
        ),
    )

    budget_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope_level: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    amount: Mapped[Decimal] = mapped_column(_MONEY)
    currency: Mapped[str] = mapped_column(String(3))


class BudgetLandedLine(Base):
    """A ``finance/budget`` document of the raw zone that finops-batch has applied to a budget, once.

    A landed line is an input, applied the first time a run reads it: an admin's later edit of the same line
    stands until a new document (another content hash) lands for it, instead of being undone every night.
    """

    __tablename__ = "budget_landed_line"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    budget_version_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("budget_version.id"), index=True)
    # The budget's revision once the run had applied it (the one it made, or the current one if nothing changed).
    revision: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PricingView(Base):
    """A named, versioned rate card ("vision budgétaire"): values consumption under another assumption.

    A *version* is a separate card under the same name (its own id); a *revision* is one edit of a version.
    Every revision's description and rates are kept, immutable, in ``pricing_view_revision`` and
    ``pricing_view_revision_rate`` (ADR 0011); ``revision`` names the current one.
    """

    __tablename__ = "pricing_view"
    __table_args__ = (UniqueConstraint("name", "version"), CheckConstraint("revision >= 1", name="revision_positive"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PricingViewRevision(Base):
    """One revision of a pricing view: its description, who made it and when (a trigger refuses changes)."""

    __tablename__ = "pricing_view_revision"
    __table_args__ = (CheckConstraint("revision >= 1", name="revision_positive"),)

    pricing_view_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("pricing_view.id"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PricingViewRevisionRate(Base):
    """One unit price of a pricing view revision, per service category and unit (immutable too)."""

    __tablename__ = "pricing_view_revision_rate"
    __table_args__ = (
        ForeignKeyConstraint(
            ["pricing_view_id", "revision"],
            ["pricing_view_revision.pricing_view_id", "pricing_view_revision.revision"],
            name="fk_pricing_view_revision_rate_revision",
        ),
    )

    pricing_view_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_category: Mapped[str] = mapped_column(String(64), ForeignKey("dim_service_category.name"), primary_key=True)
    unit: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit_price: Mapped[Decimal] = mapped_column(_MONEY)


# -------------------------------------------------------------------------------- allocation rules


class AllocationRule(Base):
    """One immutable version of an allocation rule (a trigger refuses UPDATE and DELETE).

    A pool is split, for a period, by the version with the latest ``valid_from`` <= period among the rules
    of that pool (ties: highest version); ``pool_code`` NULL is the fallback rule for pools without one.
    ``method``: ``even``, ``direct_cost`` (weight = the target's direct billed cost in the pool's currency),
    ``usage`` (weight = the target's ``driver`` quantity from ``finance/usage_driver``), ``fixed``
    (``allocation_rule_target.percentage``, totalling exactly 100). Targets: the rule's
    ``allocation_rule_target`` rows if any, otherwise every application valid in the period.
    """

    __tablename__ = "allocation_rule"
    __table_args__ = (
        CheckConstraint(_in("method", ALLOCATION_METHODS), name="method"),
        CheckConstraint("method <> 'usage' OR driver IS NOT NULL", name="usage_driver"),
        CheckConstraint("EXTRACT(DAY FROM valid_from) = 1", name="valid_from_first_day"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_code: Mapped[str | None] = mapped_column(String(64), index=True)
    method: Mapped[str] = mapped_column(String(16))
    driver: Mapped[str | None] = mapped_column(String(64))
    valid_from: Mapped[date] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AllocationRuleTarget(Base):
    """A target application of a rule version; ``percentage`` for ``fixed`` rules (immutable too)."""

    __tablename__ = "allocation_rule_target"
    __table_args__ = (
        ForeignKeyConstraint(
            ["rule_id", "version"],
            ["allocation_rule.rule_id", "allocation_rule.version"],
            name="fk_allocation_rule_target_rule",
        ),
        CheckConstraint("percentage IS NULL OR (percentage >= 0 AND percentage <= 100)", name="percentage"),
    )

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    percentage: Mapped[Decimal | None] = mapped_column(Numeric(7, 4))

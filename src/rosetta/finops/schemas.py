"""Request and response bodies of finops-api (msgspec, camelCase on the wire).

Amounts are ``Decimal`` and so travel as decimal **strings** (msgspec encodes ``Decimal`` as a string; the
apps' ``rosetta.core.wire.Response`` writes it in plain notation, ``"0.0000002"`` never ``"2E-7"``), never as
JSON floats; amounts sent are decimal strings too (``str`` members of the ``*In`` structs). The one exception
is the Cost Insights family (``CostInsights*``): the Backstage plugin's TypeScript types declare
``amount: number``, so those bodies carry numbers, rounded to the cent, and are meant for charts only, never
for reconciliation.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from rosetta.core.schemas import CamelStruct

Level = Literal["domain", "family", "product", "application"]
LEVELS: tuple[Level, ...] = ("domain", "family", "product", "application")
CostType = Literal["direct", "indirect"]


# ----------------------------------------------------------------------------------------------- costs


class PeriodChange(CamelStruct):
    """The total of a comparison period and how the current period moved from it."""

    period: str
    # None when finops-batch never built that month (outside the mart: no data, not a zero cost).
    total: Decimal | None
    change_amount: Decimal | None
    # (current - previous) / previous; None when the previous total is zero or unknown (not computable).
    change_ratio: Decimal | None


class Mover(CamelStruct):
    """An application whose cost moved most since the previous month (both months built: ``previous`` is real)."""

    code: str
    name: str | None
    previous: Decimal
    current: Decimal
    change_amount: Decimal
    change_ratio: Decimal | None


class CostSummary(CamelStruct):
    """One month at a glance: ``direct + indirect + unallocated = total``."""

    period: str
    currency: str
    basis: str
    total: Decimal
    direct: Decimal
    indirect: Decimal
    unallocated: Decimal
    environment: str | None
    previous_month: PeriodChange
    same_month_last_year: PeriodChange
    # Empty when the previous month is not built: there is nothing known to have moved from.
    top_movers: list[Mover]


class DrilldownRow(CamelStruct):
    """One node of a hierarchy level under a parent, over a period range."""

    level: Level
    code: str
    name: str | None
    total: Decimal
    direct: Decimal
    indirect: Decimal
    # total / parent total, 4 decimals; None when the parent total is zero.
    share_of_parent: Decimal | None


class Drilldown(CamelStruct):
    """One page of a drill-down, with the parent's own totals (sum of every row, all pages)."""

    level: Level
    parent: str | None
    period_from: str
    period_to: str
    # The months of period_from..period_to finops-batch has built, oldest first: what the totals cover (a
    # month of the window not listed has no data, which is not a zero cost). Never empty: that is a 404.
    built_months: list[str]
    environment: str | None
    currency: str
    basis: str
    total: Decimal
    direct: Decimal
    indirect: Decimal
    items: list[DrilldownRow]
    limit: int
    next: str | None = None


class MonthlyCost(CamelStruct):
    """An application's cost for one month."""

    period: str
    total: Decimal
    direct: Decimal
    indirect: Decimal


class EnvironmentCost(CamelStruct):
    """An application's cost for one environment over the window."""

    environment: str
    total: Decimal
    direct: Decimal
    indirect: Decimal


class ServiceCategoryCost(CamelStruct):
    """An application's cost for one FOCUS service category over the window (pools carry their own category)."""

    service_category: str
    total: Decimal
    direct: Decimal
    indirect: Decimal


class AllocationLine(CamelStruct):
    """One allocated share: which pool, which rule version, which key and ratio produced the amount."""

    period: str
    pool: str
    pool_name: str | None
    rule_id: str
    rule_version: int
    # FOCUS 1.3 AllocatedMethodId: "rule_id@version".
    method: str
    key_type: str
    weight: Decimal
    ratio: Decimal
    amount: Decimal
    rounding_adjustment: Decimal


class ApplicationCosts(CamelStruct):
    """The "why does my app pay this?" page: 13 months, per environment and category, direct vs each pool."""

    code: str
    name: str | None
    product: str | None
    family: str | None
    domain: str | None
    currency: str
    basis: str
    period_from: str
    period_to: str
    # The months of the window finops-batch has built, oldest first: what the amounts cover. A month of
    # ``months`` not listed here is not built: its zeros mean no data, not no cost. Never empty (a 404).
    built_months: list[str]
    total: Decimal
    direct: Decimal
    indirect: Decimal
    months: list[MonthlyCost]
    by_environment: list[EnvironmentCost]
    by_service_category: list[ServiceCategoryCost]
    allocations: list[AllocationLine]


# ----------------------------------------------------------------------------------------------- budgets


class BudgetLineIn(CamelStruct, forbid_unknown_fields=True):
    """One budget amount for a scope (application, product, family or domain) and a month (``YYYY-MM``).

    ``amount`` is a decimal string with at most 2 decimals (``"1234.56"``). It is typed ``str``, not
    ``Decimal``, because msgspec decodes a JSON number into a ``Decimal`` too (whatever its strictness):
    the type is what makes ``0.1`` or ``1000`` a 400, as the wire convention wants.
    """

    scope_level: Level
    scope_code: str
    period: str
    amount: str
    currency: str = "EUR"


class BudgetLine(CamelStruct):
    """A stored budget line."""

    scope_level: str
    scope_code: str
    period: str
    amount: Decimal
    currency: str


class BudgetCreate(CamelStruct, forbid_unknown_fields=True):
    """A new budget version (e.g. "Budget 2026 initial"), with its lines."""

    name: str
    description: str | None = None
    lines: list[BudgetLineIn] = msgspec.field(default_factory=list)


class BudgetReplace(CamelStruct, forbid_unknown_fields=True):
    """PUT: the whole version; ``lines`` replace every stored line."""

    name: str
    description: str | None = None
    lines: list[BudgetLineIn] = msgspec.field(default_factory=list)


class BudgetPatch(CamelStruct, forbid_unknown_fields=True):
    """PATCH: only the members sent change; ``lines`` are upserted by (scope, month)."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType | None = msgspec.UNSET
    lines: list[BudgetLineIn] | msgspec.UnsetType = msgspec.UNSET


class Budget(CamelStruct):
    """A budget version: its header and totals per currency (lines at ``budgets/{id}/lines``), as of its current
    revision; ``revision`` counts its changes (1 at creation).

    ``createdBy``/``createdAt`` are the version's creation; ``updatedBy``/``updatedAt`` its current revision's.
    """

    id: uuid.UUID
    name: str
    description: str | None
    revision: int
    line_count: int
    totals: dict[str, Decimal]
    first_period: str | None
    last_period: str | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class BudgetRevision(CamelStruct):
    """A budget version as it was at one revision (kept unchanged once superseded; its lines at
    ``budgets/{id}/revisions/{revision}/lines``). ``createdBy``/``createdAt`` say who made the revision, when."""

    id: uuid.UUID
    revision: int
    name: str
    description: str | None
    line_count: int
    totals: dict[str, Decimal]
    first_period: str | None
    last_period: str | None
    created_by: str
    created_at: datetime


# ----------------------------------------------------------------------------------------------- pricing views


class Rate(CamelStruct, forbid_unknown_fields=True):
    """One unit price of a rate card, per FOCUS service category and pricing unit."""

    service_category: str
    unit: str
    unit_price: Decimal


class RateIn(CamelStruct, forbid_unknown_fields=True):
    """A unit price as sent: ``unitPrice`` is a decimal string (``"0.0412"``), typed ``str`` for the reason
    :class:`BudgetLineIn`'s ``amount`` is: a JSON number would otherwise be accepted."""

    service_category: str
    unit: str
    unit_price: str


class PricingViewCreate(CamelStruct, forbid_unknown_fields=True):
    """A pricing view ("vision budgétaire"); a name already used gets its next version."""

    name: str
    currency: str = "EUR"
    description: str | None = None
    rates: list[RateIn] = msgspec.field(default_factory=list)


class PricingViewReplace(CamelStruct, forbid_unknown_fields=True):
    """PUT: description and the whole rate card (name, version and currency identify the view)."""

    description: str | None = None
    rates: list[RateIn] = msgspec.field(default_factory=list)


class PricingViewPatch(CamelStruct, forbid_unknown_fields=True):
    """PATCH: only the members sent change; ``rates`` are upserted by (category, unit)."""

    description: str | msgspec.UnsetType | None = msgspec.UNSET
    rates: list[RateIn] | msgspec.UnsetType = msgspec.UNSET


class PricingView(CamelStruct):
    """A pricing view with its current rate card; ``revision`` counts its changes (1 at creation).

    ``createdBy``/``createdAt`` are the view's creation; ``updatedBy``/``updatedAt`` its current revision's.
    """

    id: uuid.UUID
    name: str
    version: int
    revision: int
    currency: str
    description: str | None
    rates: list[Rate]
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class PricingViewRevisionSummary(CamelStruct):
    """One kept revision of a pricing view, as listed (its rate card is at ``revisions/{revision}``)."""

    revision: int
    description: str | None
    rate_count: int
    created_by: str
    created_at: datetime


class PricingViewRevision(CamelStruct):
    """A pricing view's rate card as it was at one revision (kept unchanged once superseded)."""

    id: uuid.UUID
    name: str
    version: int
    revision: int
    currency: str
    description: str | None
    rates: list[Rate]
    created_by: str
    created_at: datetime


# ----------------------------------------------------------------------------------------------- comparison


class ComparisonRow(CamelStruct):
    """One scope compared: ``variance = left - right``; the projection extrapolates ``left``'s run rate."""

    level: Level
    code: str
    name: str | None
    left: Decimal
    right: Decimal
    variance: Decimal
    # variance / right * 100, 2 decimals; None when right is zero.
    variance_pct: Decimal | None
    left_year_to_date: Decimal
    # A budget's year end is its full-year total; actuals and pricing views extrapolate their run rate over
    # the year's built months (``runRateMonths``), rounded to the cent; None when no month of the year is built.
    projected_year_end: Decimal | None
    right_year_end: Decimal | None


class BudgetComparison(CamelStruct):
    """A page of a comparison between two measures (actual, a budget version, a pricing view)."""

    left: str
    right: str
    level: Level
    parent: str | None
    period_from: str
    period_to: str
    currency: str
    basis: str
    total_left: Decimal
    total_right: Decimal
    total_variance: Decimal
    total_variance_pct: Decimal | None
    # The months of the year up to ``periodTo`` that finops-batch has built: the run rate's denominator.
    run_rate_months: int
    # The window's months finops-batch has built ("YYYY-MM", oldest first): actual and pricing-view amounts
    # cover these only (a month never built is unknown, not a zero cost); a budget's cover the whole window.
    built_months: list[str]
    # A budget's amount over the window that no row carries (scope code unknown to the hierarchy, or a line
    # coarser than ``level``; under a parent, only the lines of the parent and of its ancestors); 0 for other
    # measures. Not part of the totals.
    unmatched_left: Decimal
    unmatched_right: Decimal
    items: list[ComparisonRow]
    limit: int
    next: str | None = None


# ----------------------------------------------------------------------------------------------- rules


class RuleTargetIn(CamelStruct, forbid_unknown_fields=True):
    """A target application as sent; ``percentage`` for ``fixed`` rules (total exactly 100), a decimal string
    (``"33.3333"``, at most 4 decimals) typed ``str`` for the reason :class:`BudgetLineIn`'s ``amount`` is."""

    application_code: str
    percentage: str | None = None


class RuleTarget(CamelStruct):
    """A target application of a rule version; ``percentage`` for ``fixed`` rules (total exactly 100)."""

    application_code: str
    percentage: Decimal | None = None


class AllocationRuleCreate(CamelStruct, forbid_unknown_fields=True):
    """A new rule, or (with an existing ``ruleId``) its next version. A version never changes afterwards."""

    rule_id: str
    method: Literal["even", "direct_cost", "usage", "fixed"]
    valid_from: str
    # None: the fallback rule for pools without a rule of their own.
    pool_code: str | None = None
    driver: str | None = None
    description: str | None = None
    # Empty: every application valid in the period.
    targets: list[RuleTargetIn] = msgspec.field(default_factory=list)


class AllocationRule(CamelStruct):
    """One immutable version of an allocation rule."""

    rule_id: str
    version: int
    method: str
    valid_from: str
    pool_code: str | None
    driver: str | None
    description: str | None
    targets: list[RuleTarget]
    created_by: str
    created_at: datetime


# ----------------------------------------------------------------------------------------------- mapping aliases

AliasKind = Literal["tag_key", "environment", "application", "service_category", "provider"]


class MappingAliasCreate(CamelStruct, forbid_unknown_fields=True):
    """A new alias: for ``kind``, source values spelled ``alias`` (any case, spaces trimmed) mean ``canonical``."""

    kind: AliasKind
    alias: str
    canonical: str


class MappingAlias(CamelStruct):
    """One alias finops-batch applies when it maps cost lines (from its next run of a month on)."""

    id: int
    kind: str
    alias: str
    canonical: str
    created_by: str
    created_at: datetime


# ----------------------------------------------------------------------------------------------- batch runs


class BatchRunRequest(CamelStruct, forbid_unknown_fields=True, omit_defaults=True):
    """What to rebuild: one month, or a range of months; nothing means the batch's default."""

    period: str | None = None
    period_from: str | None = msgspec.field(default=None, name="from")
    period_to: str | None = msgspec.field(default=None, name="to")
    # Rebuild a requested month even when the raw zone has nothing for it and the mart holds data (empty it).
    allow_empty: bool = False


class BatchRunAccepted(CamelStruct):
    """202 body of a triggered run; follow ``location``."""

    run_id: uuid.UUID
    status: str
    location: str


class BatchRun(CamelStruct):
    """A run record: counters, step durations and the error, if any."""

    run_id: uuid.UUID
    job: str
    status: str
    parameters: dict[str, Any]
    requested_by: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    read_count: int
    written_count: int
    rejected_count: int
    counters: dict[str, Any]
    steps: list[dict[str, Any]]
    error: str | None


class BatchRejection(CamelStruct):
    """A raw document a run could not use: why (``reasonCode``, one of a fixed vocabulary, and ``reason``, the
    text naming the bad value), its month when known, and the document as landed (its raw-zone key is
    ``source``, ``kind`` and ``contentHash``)."""

    id: int
    run_id: uuid.UUID
    reason_code: str
    reason: str
    period: str | None
    source: str
    kind: str
    content_hash: str | None
    payload: dict[str, Any]
    rejected_at: datetime


# ----------------------------------------------------------------------------------------------- Cost Insights


class DateAggregation(CamelStruct):
    """Cost Insights ``DateAggregation``: a number, as the plugin's type requires (documented exception)."""

    date: date
    amount: float


class ChangeStatistic(CamelStruct, omit_defaults=True):
    """Cost Insights ``ChangeStatistic``: ``ratio`` omitted when the older period is zero."""

    amount: float
    ratio: float | None = None


class Trendline(CamelStruct):
    """Least-squares line over the daily points, x in epoch seconds."""

    slope: float
    intercept: float


class CostInsightsCost(CamelStruct, omit_defaults=True):
    """Cost Insights ``Cost``."""

    id: str
    aggregation: list[DateAggregation]
    change: ChangeStatistic | None = None
    trendline: Trendline | None = None
    grouped_costs: dict[str, list[CostInsightsCost]] | None = None


class LastCompleteBillingDate(CamelStruct):
    """The last day whose costs are complete (``YYYY-MM-DD``)."""

    date: date

"""Read side of finops-api: aggregates over the dashboard materialized views (never the fact tables).

Each query is one SQL statement kept as text beside its function, so ``bench/finops_api.py`` runs the very
same SQL through asyncpg to compare the API with the database alone. The views are rebuilt after every run
by finops-batch (built beside the live ones, then swapped in: ADR 0007), so a reader always sees whole months.

Amounts: ``basis`` chooses FOCUS ``EffectiveCost`` (amortised, the showback default) or ``BilledCost``
(invoiced); the hierarchy is the one valid in each month (a past month stays attributed as it was).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any, Literal

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from rosetta.core.errors import BadRequestError, NotFoundError
from rosetta.core.pagination import decode_cursor, encode_cursor
from rosetta.finops.schemas import (
    LEVELS,
    AllocationLine,
    ApplicationCosts,
    BudgetComparison,
    ChangeStatistic,
    ComparisonRow,
    CostInsightsCost,
    CostSummary,
    DateAggregation,
    Drilldown,
    DrilldownRow,
    EnvironmentCost,
    Level,
    MonthlyCost,
    Mover,
    PeriodChange,
    ServiceCategoryCost,
    Trendline,
)
from rosetta.finops.service import Measure, month_text

Basis = Literal["billed", "effective"]
BASES: tuple[Basis, ...] = ("effective", "billed")
UNALLOCATED = "UNALLOCATED"
DEFAULT_CURRENCY = "EUR"
SERIES_MONTHS = 13
TOP_MOVERS = 10

_ZERO = Decimal(0)
_RATIO = Decimal("0.0001")
_PCT = Decimal("0.01")


class ViewRow(asyncpg.Record):
    """A result row whose columns also read as attributes (``row.total``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@functools.cache
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` SQL as asyncpg's ``$n`` SQL and the parameter names in order, compiled once per text."""
    compiled = text(sql).compile(dialect=asyncpg_dialect.dialect())
    return str(compiled), tuple(compiled.positiontup or ())


class ViewReader:
    """Runs the read-side SQL straight on an asyncpg connection (statements prepared once per connection).

    The read routes run one or two SELECTs on the materialized views; going through SQLAlchemy's result
    layer cost more CPU than the query itself (0.35 ms per application page), so they skip it.
    """

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @classmethod
    async def of_session(cls, session: AsyncSession | AsyncConnection) -> ViewReader:
        """A reader on the connection under a SQLAlchemy session or connection (same transaction, if any)."""
        raw = await session.connection() if isinstance(session, AsyncSession) else session
        pooled = await raw.get_raw_connection()
        return cls(pooled.driver_connection)

    async def rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[ViewRow]:
        """Every row of ``sql`` with named ``parameters``."""
        query, names = positional(sql)
        values = [(parameters or {})[name] for name in names]
        return list(await self._connection.fetch(query, *values, record_class=ViewRow))

    async def value(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row (None when there is no row)."""
        rows = await self.rows(sql, parameters)
        return rows[0][0] if rows else None


def _amount_column(basis: Basis) -> str:
    # Only two literal column names can come out of here, so formatting them into SQL is safe.
    return "effective_cost" if basis == "effective" else "billed_cost"


def add_months(month: date, months: int) -> date:
    """The first day of the month ``months`` after (or before, if negative) ``month``."""
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def ratio(part: Decimal, whole: Decimal, quantum: Decimal = _RATIO) -> Decimal | None:
    """``part / whole`` rounded half-even to ``quantum``; None when ``whole`` is zero."""
    if whole == 0:
        return None
    try:
        return (part / whole).quantize(quantum, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        # The quotient needs more than the default 28 digits (a cent against a tiny older total); retried
        # here rather than always computed at a wider precision, which would slow every ratio down.
        with localcontext() as wide:
            # The quotient's integer digits plus the quantum's decimals, with room for rounding.
            wide.prec = part.adjusted() - whole.adjusted() + 4 - int(quantum.as_tuple().exponent)
            return (part / whole).quantize(quantum, rounding=ROUND_HALF_EVEN)


def _invalid(field: str, message: str) -> BadRequestError:
    return BadRequestError(f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]})


def _not_found(fields: Sequence[str], message: str) -> NotFoundError:
    # Like a 400, each field that led to the 404 is in errors[] (and prefixes the detail).
    if not fields:
        return NotFoundError(message)
    errors = [{"field": field, "message": message} for field in fields]
    return NotFoundError(f"{', '.join(fields)}: {message}", extra={"errors": errors})


# ----------------------------------------------------------------------------------------------- reference points


async def latest_built(session: ViewReader) -> date | None:
    """The latest month built by finops-batch; None when nothing is built yet."""
    latest: date | None = await session.value("SELECT max(period) FROM mv_finops_period_control")
    return latest


async def latest_period(session: ViewReader) -> date:
    """The latest month built by finops-batch (the current month when nothing is built yet)."""
    return await latest_built(session) or current_month()


def current_month() -> date:
    """The first day of the current month (UTC)."""
    return datetime.now(UTC).date().replace(day=1)


# The months of the window [:start, :end] finops-batch has built, as 'YYYY-MM,YYYY-MM' (see built_month_list):
# read in the same statement as each answer's totals, so the months named are those the totals covered.
_BUILT_MONTHS_SQL = """(SELECT string_agg(month, ',' ORDER BY month)
    FROM (SELECT DISTINCT to_char(period, 'YYYY-MM') AS month FROM mv_finops_period_control
          WHERE period BETWEEN :start AND :end) built)"""
BUILT_PERIODS_SQL = "SELECT DISTINCT period FROM mv_finops_period_control ORDER BY period"


def built_month_list(joined: str | None) -> list[str]:
    """The ``built_months`` column of a read query as a list of months (empty for none).

    The drill-down and application statements read the built months of their window themselves, beside the
    amounts (so both come from the same snapshot of the views, with no second round trip; the sub-select
    costs PostgreSQL about 0.04 ms, mostly planning). They send them as one text, ``'2026-01,2026-02'``
    (NULL for none), rather than an array: every row of a drill-down page carries it, and one string per
    row decodes faster than a list of dates.
    """
    return joined.split(",") if joined else []


def held_months(built: Sequence[date]) -> str:
    """What the mart holds, in words, its gaps shown: ``the mart holds 2025-10 to 2026-02 and 2026-04``.

    First..last alone would claim the months of a gap (a month finops-batch skipped or a run emptied).
    """
    if not built:
        return "none is built yet"
    ranges: list[tuple[date, date]] = []
    for month in sorted(built):
        if ranges and add_months(ranges[-1][1], 1) == month:
            ranges[-1] = (ranges[-1][0], month)
        else:
            ranges.append((month, month))
    spans = [
        month_text(first) if first == last else f"{month_text(first)} to {month_text(last)}" for first, last in ranges
    ]
    listed = spans[0] if len(spans) == 1 else f"{', '.join(spans[:-1])} and {spans[-1]}"
    return f"the mart holds {listed}"


def unbuilt_message(start: date, end: date, built: Sequence[date]) -> str:
    """Says that finops-batch built no month of ``start``..``end`` and which months the mart holds."""
    if start == end:
        return f"month {month_text(start)} is not built by finops-batch ({held_months(built)})"
    return f"no month from {month_text(start)} to {month_text(end)} is built by finops-batch ({held_months(built)})"


async def unbuilt_window(session: ViewReader, start: date, end: date, fields: Sequence[str]) -> NotFoundError:
    """The 404 for a window of which finops-batch built no month, naming ``fields`` and the months it holds.

    Asked for only when an answer came back empty, so a normal read never pays for the look-up.
    """
    built = [row.period for row in await session.rows(BUILT_PERIODS_SQL)]
    return _not_found(fields, unbuilt_message(start, end, built))


async def resolve_currency(session: ViewReader, currency: str | None) -> str:
    """The requested currency, or the one carrying most of the mart's cost (amounts never mix currencies)."""
    if currency is not None:
        check_currency(currency)
        return currency
    main = await session.value(
        "SELECT currency FROM mv_finops_period_control GROUP BY currency"
        " ORDER BY sum(abs(source_effective)) DESC, currency LIMIT 1"
    )
    return main or DEFAULT_CURRENCY


def check_currency(currency: str) -> None:
    """A 400 naming ``currency`` unless it is an ISO 4217 code."""
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise _invalid("currency", f"expected an ISO 4217 code such as EUR, got {currency!r}")


_PARENT: dict[Level, Level | None] = {
    "domain": None,
    "family": "domain",
    "product": "family",
    "application": "product",
}


KNOWN_ENVIRONMENT_SQL = "SELECT 1 FROM dim_environment WHERE environment_code = :code"

# One primary-key look-up per level; the batch writes every node it attributes costs to into these.
_KNOWN_NODE_SQL: dict[Level, str] = {
    "domain": "SELECT 1 FROM dim_domain WHERE domain_code = :code LIMIT 1",
    "family": "SELECT 1 FROM dim_family WHERE family_code = :code LIMIT 1",
    "product": "SELECT 1 FROM dim_product WHERE product_code = :code LIMIT 1",
    "application": "SELECT 1 FROM dim_application WHERE application_code = :code LIMIT 1",
}


async def known_node(session: ViewReader, level: Level, code: str) -> bool:
    """Whether finops-batch ever attributed a cost to ``code`` at ``level`` (any validity period)."""
    return bool(await session.rows(_KNOWN_NODE_SQL[level], {"code": code}))


async def check_environment(session: ViewReader, environment: str | None) -> None:
    """A 404 when ``environment`` is given and no cost was ever attributed to it (a typo is not a zero cost)."""
    if environment is not None and not await session.rows(KNOWN_ENVIRONMENT_SQL, {"code": environment}):
        raise _not_found(["environment"], f"no environment {environment!r}")


# With its article, for messages ("the parent of an application").
_A_LEVEL: dict[Level, str] = {
    "domain": "a domain",
    "family": "a family",
    "product": "a product",
    "application": "an application",
}


async def check_parent(session: ViewReader, level: Level, parent: str | None) -> None:
    """A 404 when ``parent`` is given and is not a node of the level above ``level``."""
    if parent is None or parent == UNALLOCATED:
        return
    parent_level = _PARENT[level]
    if parent_level is None:
        raise _invalid("parent", "domains have no parent; omit it")
    if not await known_node(session, parent_level, parent):
        raise _not_found(["parent"], f"no {parent_level} {parent!r} (the parent of {_A_LEVEL[level]})")


def check_basis(value: str) -> Basis:
    """``effective`` or ``billed``; a 400 naming ``basis`` otherwise."""
    if value not in BASES:
        raise _invalid("basis", f"must be effective or billed, got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------- summary


SUMMARY_SQL = """
SELECT period,
       sum({amount}) AS total,
       coalesce(sum({amount}) FILTER (WHERE code <> 'UNALLOCATED' AND cost_type = 'direct'), 0) AS direct,
       coalesce(sum({amount}) FILTER (WHERE code <> 'UNALLOCATED' AND cost_type = 'indirect'), 0) AS indirect,
       coalesce(sum({amount}) FILTER (WHERE code = 'UNALLOCATED'), 0) AS unallocated
FROM mv_finops_cost_rollup_monthly
WHERE level = 'domain' AND currency = :currency AND period = ANY(:periods)
  AND (CAST(:environment AS text) IS NULL OR environment_code = :environment)
GROUP BY period
"""

MOVERS_SQL = """
SELECT code, coalesce(max(name) FILTER (WHERE period = :period), max(name)) AS name,
       coalesce(sum({amount}) FILTER (WHERE period = :previous), 0) AS previous,
       coalesce(sum({amount}) FILTER (WHERE period = :period), 0) AS current
FROM mv_finops_cost_rollup_monthly
WHERE level = 'application' AND currency = :currency AND period IN (:period, :previous)
  AND (CAST(:environment AS text) IS NULL OR environment_code = :environment)
GROUP BY code
ORDER BY abs(coalesce(sum({amount}) FILTER (WHERE period = :period), 0)
           - coalesce(sum({amount}) FILTER (WHERE period = :previous), 0)) DESC, code
LIMIT :limit
"""


def _change(period: date, current: Decimal, previous: Decimal | None) -> PeriodChange:
    if previous is None:
        return PeriodChange(period=month_text(period), total=None, change_amount=None, change_ratio=None)
    return PeriodChange(
        period=month_text(period),
        total=previous,
        change_amount=current - previous,
        change_ratio=ratio(current - previous, previous),
    )


async def cost_summary(
    session: ViewReader,
    *,
    period: date,
    environment: str | None = None,
    currency: str | None = None,
    basis: Basis = "effective",
) -> CostSummary:
    """One month: total = direct + indirect + unallocated; vs the previous month and a year before; top movers.

    A month finops-batch never built is a 404 naming ``period`` (no data is not a zero cost); a comparison
    month outside the mart has a null total. The top movers compare with the previous month, so when that
    month is not built there are none: an unbuilt month is unknown, and counting it as 0 would rank every
    application by its whole cost as if it had just appeared.
    """
    currency = await resolve_currency(session, currency)
    await check_environment(session, environment)
    built = {row.period for row in await session.rows(BUILT_PERIODS_SQL)}
    if period not in built:
        raise _not_found(["period"], unbuilt_message(period, period, sorted(built)))
    amount = _amount_column(basis)
    previous, last_year = add_months(period, -1), add_months(period, -12)
    rows = await session.rows(
        SUMMARY_SQL.format(amount=amount),
        {"currency": currency, "periods": [period, previous, last_year], "environment": environment},
    )
    by_period = {row.period: row for row in rows}
    this = by_period.get(period)
    total = this.total if this else _ZERO
    movers: list[ViewRow] = []
    if previous in built:
        # Within two built months an application absent from one really cost nothing there: a true 0.
        movers = await session.rows(
            MOVERS_SQL.format(amount=amount),
            {
                "currency": currency,
                "period": period,
                "previous": previous,
                "environment": environment,
                "limit": TOP_MOVERS,
            },
        )
    return CostSummary(
        period=month_text(period),
        currency=currency,
        basis=basis,
        environment=environment,
        total=total,
        direct=this.direct if this else _ZERO,
        indirect=this.indirect if this else _ZERO,
        unallocated=this.unallocated if this else _ZERO,
        previous_month=_change(previous, total, _built_total(by_period, built, previous)),
        same_month_last_year=_change(last_year, total, _built_total(by_period, built, last_year)),
        top_movers=[
            Mover(
                code=row.code,
                name=row.name,
                previous=row.previous,
                current=row.current,
                change_amount=row.current - row.previous,
                change_ratio=ratio(row.current - row.previous, row.previous),
            )
            for row in movers
        ],
    )


def _built_total(by_period: Mapping[date, ViewRow], built: set[date], period: date) -> Decimal | None:
    # A built month without a row has no cost in this currency and environment: a real zero.
    if period not in built:
        return None
    return by_period[period].total if period in by_period else _ZERO


# ----------------------------------------------------------------------------------------------- drill-down


DRILLDOWN_SQL = f"""
WITH nodes AS (
    SELECT code, (array_agg(name ORDER BY period DESC))[1] AS name,
           sum({{amount}}) AS total,
           coalesce(sum({{amount}}) FILTER (WHERE cost_type = 'direct'), 0) AS direct,
           coalesce(sum({{amount}}) FILTER (WHERE cost_type = 'indirect'), 0) AS indirect
    FROM mv_finops_cost_rollup_monthly
    WHERE level = :level AND currency = :currency AND period BETWEEN :start AND :end
      AND (CAST(:parent AS text) IS NULL OR parent_code = :parent)
      AND (CAST(:environment AS text) IS NULL OR environment_code = :environment)
    GROUP BY code
),
totals AS (
    SELECT coalesce(sum(total), 0) AS parent_total, coalesce(sum(direct), 0) AS parent_direct,
           coalesce(sum(indirect), 0) AS parent_indirect,
           -- The months of the window the totals cover (see built_month_list).
           {_BUILT_MONTHS_SQL} AS built_months
    FROM nodes
),
page AS (
    SELECT * FROM nodes
    WHERE CAST(:after_total AS numeric) IS NULL OR (total, code) < (CAST(:after_total AS numeric), :after_code)
    ORDER BY total DESC, code DESC
    LIMIT :limit
)
SELECT totals.*, page.* FROM totals LEFT JOIN page ON true
ORDER BY page.total DESC, page.code DESC
"""


async def drilldown(
    session: ViewReader,
    *,
    level: Level,
    parent: str | None,
    start: date,
    end: date,
    environment: str | None = None,
    currency: str | None = None,
    basis: Basis = "effective",
    limit: int,
    cursor: str | None,
    window_fields: Sequence[str] = ("from", "to"),
) -> tuple[Drilldown, str | None]:
    """The nodes of ``level`` under ``parent`` (largest first) with their share of the parent's total.

    The totals cover the months of the window finops-batch built (``builtMonths``); a window of which it
    built none is a 404 naming ``window_fields`` (the parameters the client set it with).
    """
    if level == "domain" and parent is not None:
        raise _invalid("parent", "domains have no parent; omit it")
    currency = await resolve_currency(session, currency)
    after_total, after_code = decode_cursor(cursor, (Decimal, str)) if cursor else (None, None)
    rows = await session.rows(
        DRILLDOWN_SQL.format(amount=_amount_column(basis)),
        {
            "level": level,
            "currency": currency,
            "start": start,
            "end": end,
            "parent": parent,
            "environment": environment,
            "after_total": after_total,
            "after_code": after_code,
            # One more than asked, to know whether a next page exists.
            "limit": limit + 1,
        },
    )
    head = rows[0]
    nodes = [row for row in rows if row.code is not None]
    if not nodes and cursor is None:
        # Only an empty answer pays for these look-ups: it is either a quiet window or a typo.
        await check_parent(session, level, parent)
        await check_environment(session, environment)
    built_months = built_month_list(head.built_months)
    if not built_months:
        raise await unbuilt_window(session, start, end, window_fields)
    next_cursor = None
    if len(nodes) > limit:
        nodes = nodes[:limit]
        next_cursor = encode_cursor([nodes[-1].total, nodes[-1].code])
    result = Drilldown(
        level=level,
        parent=parent,
        period_from=month_text(start),
        period_to=month_text(end),
        built_months=built_months,
        environment=environment,
        currency=currency,
        basis=basis,
        total=head.parent_total,
        direct=head.parent_direct,
        indirect=head.parent_indirect,
        items=[
            DrilldownRow(
                level=level,
                code=row.code,
                name=row.name,
                total=row.total,
                direct=row.direct,
                indirect=row.indirect,
                share_of_parent=ratio(row.total, head.parent_total),
            )
            for row in nodes
        ],
        limit=limit,
    )
    return result, next_cursor


# ----------------------------------------------------------------------------------------------- application page


APPLICATION_SQL = f"""
SELECT GROUPING(period) AS g_period, GROUPING(environment_code) AS g_environment,
       GROUPING(service_category) AS g_category, period, environment_code, service_category,
       (array_agg(application_name ORDER BY period DESC))[1] AS name,
       (array_agg(product_code ORDER BY period DESC))[1] AS product,
       (array_agg(family_code ORDER BY period DESC))[1] AS family,
       (array_agg(domain_code ORDER BY period DESC))[1] AS domain,
       sum({{amount}}) AS total,
       coalesce(sum({{amount}}) FILTER (WHERE cost_type = 'direct'), 0) AS direct,
       coalesce(sum({{amount}}) FILTER (WHERE cost_type = 'indirect'), 0) AS indirect,
       -- The months of the window the page covers (see built_month_list), on the grand-total row only.
       CASE WHEN GROUPING(period, environment_code, service_category) = 7 THEN
           {_BUILT_MONTHS_SQL}
       END AS built_months
FROM mv_finops_cost_monthly
WHERE application_code = :code AND currency = :currency AND period BETWEEN :start AND :end
GROUP BY GROUPING SETS ((period), (environment_code), (service_category), ())
"""

# The name and hierarchy of an application with no cost in the window: from the latest built month up to
# the window's end that knows it, else the latest built month that does (it appeared later), else the CMDB's
# latest version (no built month knows it). No row: the application is unknown. Only empty pages ask.
APPLICATION_HIERARCHY_SQL = """
SELECT name, product_code, family_code, domain_code FROM (
    SELECT 0 AS source, h.period AS since, h.name, h.product_code, h.family_code, h.domain_code
    FROM (SELECT DISTINCT period FROM mv_finops_period_control) built
    JOIN dim_application_month h ON h.period = built.period AND h.application_code = :code
    UNION ALL
    SELECT 1, valid_from, name, product_code, family_code, domain_code
    FROM dim_application WHERE application_code = :code
) known
ORDER BY source, since <= :end DESC, since DESC
LIMIT 1
"""

ALLOCATIONS_SQL = """
SELECT period, pool_code, pool_name, rule_id, rule_version, key_type, weight, ratio, allocated_amount,
       rounding_adjustment
FROM mv_finops_cost_allocation_monthly
WHERE application_code = :code AND currency = :currency AND period BETWEEN :start AND :end
ORDER BY period, pool_code
"""


async def application_costs(
    session: ViewReader,
    *,
    code: str,
    end: date,
    currency: str | None = None,
    basis: Basis = "effective",
    window_fields: Sequence[str] = ("to",),
) -> ApplicationCosts:
    """13 months ending at ``end``: monthly series, per environment and category, and every allocated share.

    The amounts cover the months of the window finops-batch built (``builtMonths``); a window of which it
    built none is a 404 naming ``window_fields``. A known application with no cost in the window still
    carries its name and hierarchy.
    """
    currency = await resolve_currency(session, currency)
    start = add_months(end, -(SERIES_MONTHS - 1))
    parameters = {"code": code, "currency": currency, "start": start, "end": end}
    rows = await session.rows(APPLICATION_SQL.format(amount=_amount_column(basis)), parameters)
    # The empty grouping set yields a row even when nothing matched (with NULL sums): that is "no costs".
    grand = next(row for row in rows if row.g_period and row.g_environment and row.g_category)
    built_months = built_month_list(grand.built_months)
    name, product, family, domain = grand.name, grand.product, grand.family, grand.domain
    if grand.total is None:
        known = await session.rows(APPLICATION_HIERARCHY_SQL, {"code": code, "end": end})
        if not known:
            raise NotFoundError(f"no application {code!r}")
        if not built_months:
            raise await unbuilt_window(session, start, end, window_fields)
        name, product, family, domain = known[0]
    by_month = {row.period: row for row in rows if not row.g_period}
    months = []
    for index in range(SERIES_MONTHS):
        month = add_months(start, index)
        row = by_month.get(month)
        months.append(
            MonthlyCost(
                period=month_text(month),
                total=row.total if row else _ZERO,
                direct=row.direct if row else _ZERO,
                indirect=row.indirect if row else _ZERO,
            )
        )
    allocations = await session.rows(ALLOCATIONS_SQL, parameters)
    return ApplicationCosts(
        code=code,
        name=name,
        product=product,
        family=family,
        domain=domain,
        currency=currency,
        basis=basis,
        period_from=month_text(start),
        period_to=month_text(end),
        built_months=built_months,
        total=grand.total if grand.total is not None else _ZERO,
        direct=grand.direct,
        indirect=grand.indirect,
        months=months,
        by_environment=sorted(
            (
                EnvironmentCost(
                    environment=row.environment_code, total=row.total, direct=row.direct, indirect=row.indirect
                )
                for row in rows
                if not row.g_environment
            ),
            key=lambda item: (-item.total, item.environment),
        ),
        by_service_category=sorted(
            (
                ServiceCategoryCost(
                    service_category=row.service_category, total=row.total, direct=row.direct, indirect=row.indirect
                )
                for row in rows
                if not row.g_category
            ),
            key=lambda item: (-item.total, item.service_category),
        ),
        # Unpacked by position (the SELECT's order): an application page lists ~100 shares, and attribute
        # access per field was a measurable part of the request.
        allocations=[
            AllocationLine(
                period=month_text(period),
                pool=pool_code,
                pool_name=pool_name,
                rule_id=rule_id,
                rule_version=rule_version,
                method=f"{rule_id}@{rule_version}",
                key_type=key_type,
                weight=weight,
                ratio=share,
                amount=amount,
                rounding_adjustment=rounding,
            )
            for period, pool_code, pool_name, rule_id, rule_version, key_type, weight, share, amount, rounding in (
                allocations
            )
        ],
    )


# ----------------------------------------------------------------------------------------------- comparison


# The month a budget line joins ``hierarchy`` on: its own, since ``hierarchy`` already files under each month
# of the year the hierarchy that month maps through (``_HIERARCHY_SQL``).
_LINE_MONTH = "l.month"

# Under each month of the compared year, the hierarchy its budget lines map through: the month's own when
# finops-batch has built it; otherwise the first built month after it, or, when there is none, the last one
# (so next year's budget maps onto today's hierarchy). Preferring the month after means that building an
# older month (a back-fill such as ``--period 2024-09``) never changes how the lines of later months map, and
# a month in a gap of the built months still maps somewhere instead of leaving its lines unmatched.
_HIERARCHY_SQL = """
    built AS (SELECT DISTINCT period FROM mv_finops_period_control),
    hierarchy_month AS (
        SELECT CAST(month AS date) AS month,
               coalesce((SELECT min(period) FROM built WHERE period >= month),
                        (SELECT max(period) FROM built WHERE period < month)) AS built_month
        FROM generate_series(CAST(:year_start AS date), CAST(:year_end AS date), interval '1 month') AS month
    ),
    hierarchy AS (
        SELECT m.month AS period, h.application_code, h.name, h.product_code, h.product_name, h.family_code,
               h.family_name, h.domain_code, h.domain_name
        FROM hierarchy_month m JOIN dim_application_month h ON h.period = m.built_month
    )"""


def _scope_map_sql(level: Level) -> str:
    """(period, scope_level, scope_code) -> (code, name, parent) at ``level``, for scopes at or below it."""
    finer = LEVELS[LEVELS.index(level) :]
    parent_level = _PARENT[level]
    parent_column = f"{parent_level}_code" if parent_level else "NULL::text"
    # dim_application_month calls the application's name plain ``name``.
    name_column = "name" if level == "application" else f"{level}_name"
    return " UNION ".join(
        f"SELECT DISTINCT period, '{scope}' AS scope_level, {scope}_code AS scope_code,"
        f" {level}_code AS code, {name_column} AS name, {parent_column} AS parent"
        f" FROM hierarchy"
        for scope in finer
    )


def _parent_scope_sql(level: Level) -> str:
    """A condition on budget line ``l``: true without ``:parent``, else when the line's scope is the parent
    or one of its ancestors in the hierarchy its month maps through (the lines that cover the parent's subtree
    without naming a node of ``level`` in it)."""
    parent_level = _PARENT[level]
    if parent_level is None:
        return "true"
    covering = ["CAST(:parent AS text) IS NULL", f"(l.scope_level = '{parent_level}' AND l.scope_code = :parent)"]
    ancestors = LEVELS[: LEVELS.index(parent_level)]
    if ancestors:
        is_ancestor = " OR ".join(
            f"(l.scope_level = '{ancestor}' AND l.scope_code = h.{ancestor}_code)" for ancestor in ancestors
        )
        covering.append(
            f"EXISTS (SELECT 1 FROM hierarchy h WHERE h.period = {_LINE_MONTH} AND h.{parent_level}_code = :parent"
            f" AND ({is_ancestor}))"
        )
    return "(" + "\n              OR ".join(covering) + ")"


def _unmatched_sql(measure: Measure, level: Level, side: str) -> str:
    """A scalar: the window's budget amount no node of ``level`` carries (unknown code, or a coarser line).

    Without it such lines would only be missing from every row and total, with nothing to tell. Under a
    parent, only the lines that cover the parent without being split into its children count: its own and its
    ancestors'. A line elsewhere in the tree, or whose code no hierarchy places, is outside the parent's scope.
    """
    if measure.kind != "budget":
        # A numeric zero: asyncpg decodes a bare 0 as an int, which would reach the wire as a JSON number.
        return "CAST(0 AS numeric)"
    return f"""
        SELECT coalesce(sum(l.amount), 0) FROM budget_revision_line l
        WHERE l.budget_version_id = CAST(:{side}_id AS uuid) AND l.revision = CAST(:{side}_revision AS integer)
          AND l.currency = :currency
          AND l.month BETWEEN :start AND :end
          AND NOT EXISTS (
              SELECT 1 FROM ({_scope_map_sql(level)}) m
              WHERE m.scope_level = l.scope_level AND m.scope_code = l.scope_code AND m.period = {_LINE_MONTH})
          AND {_parent_scope_sql(level)}"""


def _measure_sql(measure: Measure, level: Level, amount: str, side: str, *, direct_only: bool = False) -> str:
    """A CTE body giving (code, name, parent, window, ytd, full_year) of one measure at ``level``.

    ``direct_only`` keeps only direct actual costs: what a pricing view revalues is consumption, so allocated
    shares of pools have no counterpart on its side.
    """
    if measure.kind == "actual":
        cost_type = "AND cost_type = 'direct'" if direct_only else ""
        return f"""
            SELECT code, max(name) AS name, max(parent_code) AS parent,
                   coalesce(sum({amount}) FILTER (WHERE period BETWEEN :start AND :end), 0) AS win,
                   coalesce(sum({amount}) FILTER (WHERE period <= :end), 0) AS ytd,
                   coalesce(sum({amount}), 0) AS full_year
            FROM mv_finops_cost_rollup_monthly
            WHERE level = :level AND currency = :currency AND period BETWEEN :year_start AND :year_end
              AND (CAST(:parent AS text) IS NULL OR parent_code = :parent) {cost_type}
            GROUP BY code"""
    if measure.kind == "budget":
        # Lines at the compared level count as they are; finer lines roll up through the hierarchy of their
        # month (or of the built month standing in for it: ``_HIERARCHY_SQL``).
        return f"""
            SELECT m.code, max(m.name) AS name, max(m.parent) AS parent,
                   coalesce(sum(l.amount) FILTER (WHERE l.month BETWEEN :start AND :end), 0) AS win,
                   coalesce(sum(l.amount) FILTER (WHERE l.month <= :end), 0) AS ytd,
                   coalesce(sum(l.amount), 0) AS full_year
            FROM budget_revision_line l
            JOIN ({_scope_map_sql(level)}) m
              ON m.scope_level = l.scope_level AND m.scope_code = l.scope_code
             AND m.period = {_LINE_MONTH}
            WHERE l.budget_version_id = CAST(:{side}_id AS uuid) AND l.revision = CAST(:{side}_revision AS integer)
              AND l.currency = :currency
              AND l.month BETWEEN :year_start AND :year_end
              AND (CAST(:parent AS text) IS NULL OR m.parent = :parent)
            GROUP BY m.code"""
    parent_level = _PARENT[level]
    parent_column = f"q.{parent_level}_code" if parent_level else "NULL::text"
    # A valuation is money, valued and rounded to the cent at ONE grain: an application's month, service
    # category and unit (its environments summed). Every level sums those cents, so each level has the same
    # total and a parent's row is exactly the sum of its children's, which rounding each node's raw sum was not.
    # (0.00 rather than 0: a valuation shows cents even where nothing is valued.)
    return f"""
            SELECT code, max(name) AS name, max(parent) AS parent,
                   coalesce(sum(value) FILTER (WHERE period BETWEEN :start AND :end), 0.00) AS win,
                   coalesce(sum(value) FILTER (WHERE period <= :end), 0.00) AS ytd,
                   coalesce(sum(value), 0.00) AS full_year
            FROM (
                SELECT q.period, q.{level}_code AS code, max(q.{level}_name) AS name, max({parent_column}) AS parent,
                       round(sum(q.quantity * r.unit_price), 2) AS value
                FROM mv_finops_quantity_monthly q
                JOIN pricing_view_revision_rate r
                  ON r.pricing_view_id = CAST(:{side}_id AS uuid) AND r.revision = CAST(:{side}_revision AS integer)
                 AND r.service_category = q.service_category AND r.unit = q.unit
                WHERE q.period BETWEEN :year_start AND :year_end
                  AND (CAST(:parent AS text) IS NULL OR {parent_column} = :parent)
                GROUP BY q.period, q.application_code, q.service_category, q.unit, q.{level}_code
            ) valued
            GROUP BY code"""


def _year_end(measure: Measure, ytd: Decimal, full_year: Decimal, run_rate_months: int) -> Decimal | None:
    """A budget's year end is its full-year total; other measures extrapolate their run rate, to the cent.

    The run rate is the year-to-date over the months of the year finops-batch has built: a month after the
    last built one, or before the mart's first, is unknown, not a month that cost nothing.
    """
    if measure.kind == "budget":
        return full_year
    if run_rate_months == 0:
        return None
    projected = ytd + ytd / run_rate_months * (12 - run_rate_months)
    return projected.quantize(_PCT, rounding=ROUND_HALF_EVEN)


def _side_label(measure: Measure, other: Measure) -> str:
    # Says when the actual side is its direct costs only (compared with a pricing view's valuation).
    return "actual:direct" if measure.kind == "actual" and other.kind == "pricing_view" else measure.label


def _listed(values: Sequence[str]) -> str:
    return " and ".join([", ".join(values[:-1]), values[-1]] if len(values) > 1 else values)


def comparison_currency(left: Measure, right: Measure, currency: str | None) -> str | None:
    """The one currency the two measures and the ``currency`` parameter agree on; a 400 if they disagree.

    A budget is in the currency of its lines. One with lines in several currencies needs ``currency=`` (or the
    other side's currency) to pick one of them: comparing its lines of one currency only, silently, would
    read as the whole budget.
    """
    named = {
        source: value
        for source, value in (("currency", currency), (left.label, left.currency), (right.label, right.currency))
        if value is not None
    }
    if len(set(named.values())) > 1:
        listed = ", ".join(f"{source} is in {value}" for source, value in named.items())
        raise _invalid("currency", f"amounts in different currencies cannot be compared: {listed}")
    agreed = next(iter(named.values()), None)
    for measure in (left, right):
        if len(measure.currencies) < 2:
            continue
        if agreed is None:
            raise _invalid(
                "currency", f"{measure.label} has lines in {_listed(measure.currencies)}: name one with currency="
            )
        if agreed not in measure.currencies:
            raise _invalid(
                "currency",
                f"{measure.label} has no line in {agreed} (its lines are in {_listed(measure.currencies)})",
            )
    return agreed


# The measures read from the mart: over months finops-batch never built, their amounts are unknown.
_MART_KINDS = frozenset({"actual", "pricing_view"})


async def compare(
    session: ViewReader,
    *,
    left: Measure,
    right: Measure,
    level: Level,
    parent: str | None,
    start: date,
    end: date,
    currency: str | None = None,
    basis: Basis = "effective",
    limit: int,
    cursor: str | None,
    window_fields: Sequence[str] = ("from", "to"),
) -> tuple[BudgetComparison, str | None]:
    """Compare two measures node by node at ``level`` over ``start``..``end`` (one year), by code.

    Actual and pricing-view amounts cover the months of the window finops-batch built (``builtMonths``); with
    either on a side, a window of which it built none is a 404 naming ``window_fields``.
    """
    if level == "domain" and parent is not None:
        raise _invalid("parent", "domains have no parent; omit it")
    currency = await resolve_currency(session, comparison_currency(left, right, currency))
    amount = _amount_column(basis)
    year_start, year_end = date(end.year, 1, 1), date(end.year, 12, 1)
    sql = f"""
    WITH {_HIERARCHY_SQL},
    l AS ({_measure_sql(left, level, amount, "left", direct_only=right.kind == "pricing_view")}),
    r AS ({_measure_sql(right, level, amount, "right", direct_only=left.kind == "pricing_view")}),
    joined AS (
        SELECT coalesce(l.code, r.code) AS code, coalesce(l.name, r.name) AS name,
               coalesce(l.win, 0) AS left_win, coalesce(r.win, 0) AS right_win,
               coalesce(l.ytd, 0) AS left_ytd, coalesce(l.full_year, 0) AS left_full,
               coalesce(r.ytd, 0) AS right_ytd, coalesce(r.full_year, 0) AS right_full
        FROM l FULL OUTER JOIN r ON r.code = l.code
    ),
    totals AS (
        SELECT coalesce(sum(left_win), 0) AS total_left, coalesce(sum(right_win), 0) AS total_right,
               (SELECT count(DISTINCT period) FROM mv_finops_period_control
                WHERE period BETWEEN :year_start AND :end) AS run_rate_months,
               -- The months of the window the actual and valued amounts cover (see built_month_list).
               {_BUILT_MONTHS_SQL} AS built_months,
               ({_unmatched_sql(left, level, "left")}) AS unmatched_left,
               ({_unmatched_sql(right, level, "right")}) AS unmatched_right
        FROM joined
    ),
    page AS (
        SELECT * FROM joined WHERE CAST(:after AS text) IS NULL OR code > :after ORDER BY code LIMIT :limit
    )
    SELECT totals.*, page.* FROM totals LEFT JOIN page ON true ORDER BY page.code
    """
    (after,) = decode_cursor(cursor, (str,)) if cursor else (None,)
    rows = await session.rows(
        sql,
        {
            "level": level,
            "parent": parent,
            "currency": currency,
            "start": start,
            "end": end,
            "year_start": year_start,
            "year_end": year_end,
            "left_id": str(left.id) if left.id else None,
            "right_id": str(right.id) if right.id else None,
            # The revision the measure resolved (and its label names), never whatever is current by now.
            "left_revision": left.revision,
            "right_revision": right.revision,
            "after": after,
            "limit": limit + 1,
        },
    )
    head = rows[0]
    built_months = built_month_list(head.built_months)
    if not built_months and {left.kind, right.kind} & _MART_KINDS:
        # As for the drill-down: over months never built the actual (and the quantities a pricing view
        # values) is unknown, and must not read as a zero cost and a -100 % variance. Two budgets need none.
        raise await unbuilt_window(session, start, end, window_fields)
    nodes = [row for row in rows if row.code is not None]
    if not nodes and cursor is None:
        await check_parent(session, level, parent)
    next_cursor = None
    if len(nodes) > limit:
        nodes = nodes[:limit]
        next_cursor = encode_cursor([nodes[-1].code])
    run_rate_months = head.run_rate_months
    items = []
    for row in nodes:
        variance = row.left_win - row.right_win
        items.append(
            ComparisonRow(
                level=level,
                code=row.code,
                name=row.name,
                left=row.left_win,
                right=row.right_win,
                variance=variance,
                variance_pct=ratio(variance * 100, row.right_win, _PCT),
                left_year_to_date=row.left_ytd,
                projected_year_end=_year_end(left, row.left_ytd, row.left_full, run_rate_months),
                right_year_end=_year_end(right, row.right_ytd, row.right_full, run_rate_months),
            )
        )
    total_variance = head.total_left - head.total_right
    result = BudgetComparison(
        left=_side_label(left, right),
        right=_side_label(right, left),
        level=level,
        parent=parent,
        period_from=month_text(start),
        period_to=month_text(end),
        currency=currency,
        basis=basis,
        total_left=head.total_left,
        total_right=head.total_right,
        total_variance=total_variance,
        total_variance_pct=ratio(total_variance * 100, head.total_right, _PCT),
        run_rate_months=run_rate_months,
        built_months=built_months,
        unmatched_left=head.unmatched_left,
        unmatched_right=head.unmatched_right,
        items=items,
        limit=limit,
    )
    return result, next_cursor


# ----------------------------------------------------------------------------------------------- Cost Insights


_INTERVALS = re.compile(r"^R(\d+)/P(\d+)([DM])/(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Window:
    """``repeating`` consecutive periods ending before ``end`` (exclusive); ``periods`` oldest first."""

    repeating: int
    periods: tuple[tuple[date, date], ...]

    @property
    def start(self) -> date:
        """First day of the oldest period."""
        return self.periods[0][0]

    @property
    def end(self) -> date:
        """The exclusive end."""
        return self.periods[-1][1]


def parse_intervals(value: str) -> Window:
    """Parse the Cost Insights ``R<n>/P<k>D|M/<exclusive end>`` form (e.g. ``R2/P30D/2026-10-01``)."""
    match = _INTERVALS.match(value.strip())
    if match is None:
        raise _invalid(
            "intervals",
            f"expected R<n>/P<k>D or R<n>/P<k>M then /<YYYY-MM-DD> (e.g. R2/P30D/2026-10-01), got {value!r}",
        )
    repeating, size, unit = int(match.group(1)), int(match.group(2)), match.group(3)
    try:
        end = date.fromisoformat(match.group(4))
    except ValueError:
        raise _invalid("intervals", f"{match.group(4)!r} is not a date") from None
    if not 1 <= repeating <= 4 or size < 1 or (unit == "D" and size > 366) or (unit == "M" and size > 12):
        raise _invalid("intervals", "at most 4 repetitions of at most 366 days or 12 months")
    if not 1900 <= end.year <= 2999:
        raise _invalid("intervals", f"the end date {end} is out of range")
    periods: list[tuple[date, date]] = []
    upper = end
    for _ in range(repeating):
        if unit == "D":
            lower = upper - timedelta(days=size)
        else:
            index = upper.year * 12 + upper.month - 1 - size
            lower = date(index // 12, index % 12 + 1, min(upper.day, 28))
        periods.append((lower, upper))
        upper = lower
    return Window(repeating=repeating, periods=tuple(reversed(periods)))


def _cents(value: Decimal) -> float:
    # The plugin's types are numbers: convert once, at the edge, after rounding to the cent.
    return float(value.quantize(_PCT, rounding=ROUND_HALF_EVEN))


def cost_insights_cost(identifier: str, daily: dict[date, Decimal], window: Window) -> CostInsightsCost:
    """A Cost Insights ``Cost``: one point per day (zero-filled), the period-over-period change, a trendline."""
    days = [window.start + timedelta(days=offset) for offset in range((window.end - window.start).days)]
    amounts = [daily.get(day, _ZERO) for day in days]
    change = None
    if window.repeating >= 2:
        (old_start, old_end), (new_start, new_end) = window.periods[-2], window.periods[-1]
        old = sum((amount for day, amount in daily.items() if old_start <= day < old_end), _ZERO)
        new = sum((amount for day, amount in daily.items() if new_start <= day < new_end), _ZERO)
        # Unrounded: the plugin formats the ratio itself.
        change = ChangeStatistic(amount=_cents(new - old), ratio=float((new - old) / old) if old else None)
    return CostInsightsCost(
        id=identifier,
        aggregation=[
            DateAggregation(date=day, amount=_cents(amount)) for day, amount in zip(days, amounts, strict=True)
        ],
        change=change,
        trendline=trendline(days, amounts),
    )


def trendline(days: Sequence[date], amounts: Sequence[Decimal]) -> Trendline | None:
    """Least-squares line ``amount = slope * x + intercept`` with x the day's midnight UTC in epoch seconds."""
    if len(days) < 2:
        return None
    xs = [datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() for day in days]
    ys = [float(amount) for amount in amounts]
    mean_x, mean_y = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    spread = math.fsum((x - mean_x) ** 2 for x in xs)
    slope = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    return Trendline(slope=slope, intercept=mean_y - slope * mean_x)


LAST_DAY_SQL = "SELECT max(day) FROM mv_finops_cost_daily"

ENTITY_DAILY_SQL = """
SELECT day, environment_code, sum({amount}) AS amount
FROM mv_finops_cost_daily
WHERE application_code = :code AND currency = :currency AND day >= :start AND day < :end
GROUP BY GROUPING SETS ((day), (day, environment_code))
"""

GROUP_DAILY_SQL = """
SELECT day, product_code, sum({amount}) AS amount
FROM mv_finops_cost_daily
WHERE owner_group = :group AND currency = :currency AND day >= :start AND day < :end
GROUP BY GROUPING SETS ((day), (day, product_code))
"""


async def last_complete_day(session: ViewReader) -> date:
    """The last day with costs in the mart (yesterday when nothing is built yet)."""
    last = await session.value(LAST_DAY_SQL)
    return last or datetime.now(UTC).date() - timedelta(days=1)


async def _daily_cost(
    session: ViewReader,
    *,
    sql: str,
    parameters: dict[str, Any],
    breakdown_column: str,
    breakdown_name: str,
    identifier: str,
    window: Window,
    currency: str | None,
) -> CostInsightsCost:
    currency = await resolve_currency(session, currency)
    rows = await session.rows(
        sql.format(amount="effective_cost"),
        {**parameters, "currency": currency, "start": window.start, "end": window.end},
    )
    overall: dict[date, Decimal] = {}
    grouped: dict[str, dict[date, Decimal]] = {}
    for row in rows:
        key = row[breakdown_column]
        if key is None:
            overall[row.day] = row.amount
        else:
            grouped.setdefault(key, {})[row.day] = row.amount
    cost = cost_insights_cost(identifier, overall, window)
    cost.grouped_costs = {
        breakdown_name: [cost_insights_cost(key, series, window) for key, series in sorted(grouped.items())]
    }
    return cost


# Backstage lower-cases entity refs; the CMDB keeps its own case (APIM-INBOX): match without regard to case,
# preferring the exact spelling should two codes differ only by case.
APPLICATION_CODE_SQL = """
SELECT application_code FROM dim_application
WHERE lower(application_code) = lower(:name)
ORDER BY application_code = :name DESC, application_code
LIMIT 1
"""

OWNER_GROUP_SQL = """
SELECT owner_group FROM dim_application
WHERE lower(owner_group) = lower(:name)
ORDER BY owner_group = :name DESC, owner_group
LIMIT 1
"""


async def application_daily_cost(
    session: ViewReader, *, name: str, window: Window, currency: str | None = None
) -> CostInsightsCost:
    """Daily direct cost of the application called ``name`` (any case), grouped by environment; 404 if none."""
    code = await session.value(APPLICATION_CODE_SQL, {"name": name})
    if code is None:
        raise NotFoundError(f"no application {name!r}")
    return await _daily_cost(
        session,
        sql=ENTITY_DAILY_SQL,
        parameters={"code": code},
        breakdown_column="environment_code",
        breakdown_name="environment",
        identifier=code,
        window=window,
        currency=currency,
    )


async def group_daily_cost(
    session: ViewReader, *, name: str, window: Window, currency: str | None = None
) -> CostInsightsCost:
    """Daily direct cost of the applications the owner group ``name`` (any case) owns, by product; 404 if none."""
    group = await session.value(OWNER_GROUP_SQL, {"name": name})
    if group is None:
        # An all-zero series would read as "this team costs nothing" when the name is simply wrong.
        raise NotFoundError(f"no owner group {name!r} in the CMDB")
    return await _daily_cost(
        session,
        sql=GROUP_DAILY_SQL,
        parameters={"group": group},
        breakdown_column="product_code",
        breakdown_name="product",
        identifier=group,
        window=window,
        currency=currency,
    )

"""HTTP surface of the `finops` context under `/api/finops/v1`: thin controllers over `service` and `queries`.

Reads come from the dashboard materialized views (``queries``); changes go through ``service``, which
audits them in the request's transaction. Every list is cursor-paginated and can be exported as CSV with
``Accept: text/csv`` (the export walks every page; ``rosetta.core.tabular``); the other reads answer 406 to a
client accepting only CSV. Amounts are decimal strings, except in the Cost Insights routes, whose numbers
follow the Backstage plugin's types.

List handlers return a ``Response`` (JSON or CSV), so each declares the JSON body in its return annotation
(``Response[Page[Budget]]``): that is what the OpenAPI document shows as the 200 schema.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

import asyncpg
import msgspec
from litestar import Controller, Litestar, Request, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter, QueryParameter, SkipValidation
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import Guard
from sqlalchemy.ext.asyncio import AsyncSession

from rosetta.core import runs
from rosetta.core.audit import Auditor
from rosetta.core.db import Databases, asyncpg_dsn, decode_numeric_as_printed
from rosetta.core.errors import BadRequestError, NotFoundError
from rosetta.core.etag import check_if_match, compute_etag
from rosetta.core.http import ContextApi
from rosetta.core.http import create_app as create_core_app
from rosetta.core.openapi import CSV_OPT, ERRORS_OPT, IF_MATCH_OPT, UPLOAD_OPT
from rosetta.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, check_limit, decode_cursor, encode_cursor, next_link
from rosetta.core.runs import RunLauncher
from rosetta.core.schemas import Page
from rosetta.core.security.api import security_controller
from rosetta.core.security.permissions import Permission, Principal, requires
from rosetta.core.settings import Settings
from rosetta.core.tabular import list_response, refuse_csv_unless_offered, wants_csv
from rosetta.core.wire import Response
from rosetta.finops import queries, service
from rosetta.finops.schemas import (
    LEVELS,
    AllocationRule,
    AllocationRuleCreate,
    ApplicationCosts,
    BatchRejection,
    BatchRun,
    BatchRunAccepted,
    BatchRunRequest,
    Budget,
    BudgetComparison,
    BudgetCreate,
    BudgetLine,
    BudgetPatch,
    BudgetReplace,
    BudgetRevision,
    ComparisonRow,
    CostInsightsCost,
    CostSummary,
    Drilldown,
    DrilldownRow,
    LastCompleteBillingDate,
    Level,
    MappingAlias,
    MappingAliasCreate,
    PricingView,
    PricingViewCreate,
    PricingViewPatch,
    PricingViewReplace,
    PricingViewRevision,
    PricingViewRevisionSummary,
)

TITLE = "Rosetta FinOps API"
DESCRIPTION = (
    "Costs per application, drill-down, budgets, pricing views, allocation rules and FinOps batch runs (finops_db)."
)
PREFIX = "/api/finops/v1"
FINOPS_JOB = "finops"

# Every read route is GET: one that offers no CSV export answers 406 to a client accepting only CSV.
READ: list[Guard] = [requires(Permission.FINOPS_READ), refuse_csv_unless_offered]
ADMIN = [requires(Permission.FINOPS_ADMIN)]

_CSV = "text/csv"
_EXCEL = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The bodies read_upload accepts, as the OpenAPI document declares them.
_BUDGET_UPLOAD = {
    _CSV: "Columns scope_level, scope_code, period, amount[, currency]; comma or semicolon separated",
    _EXCEL: "The first sheet, with the same columns as the CSV file",
}
_RATES_UPLOAD = {
    _CSV: "Columns service_category, unit, unit_price; comma or semicolon separated",
    _EXCEL: "The first sheet, with the same columns as the CSV file",
}

LimitParam = Annotated[int, QueryParameter(name="limit", ge=1, le=MAX_LIMIT, description="Page size.")]
# Rule versions are PostgreSQL integers: a larger number can name no version (and must not reach the query).
RuleVersionParam = Annotated[int, PathParameter(ge=1, le=2_147_483_647, description="A version of the rule.")]
RevisionParam = Annotated[
    int, PathParameter(ge=1, le=service.MAX_REVISION, description="A revision of the pricing view (1 at creation).")
]
BudgetRevisionParam = Annotated[
    int, PathParameter(ge=1, le=service.MAX_REVISION, description="A revision of the budget version (1 at creation).")
]
AliasIdParam = Annotated[int, PathParameter(ge=1, le=2**63 - 1, description="The id of a mapping alias.")]
CursorParam = Annotated[str | None, QueryParameter(name="cursor", description="Opaque cursor of the next page.")]
EnvironmentParam = Annotated[str | None, QueryParameter(name="environment", description="Only this environment.")]
CurrencyParam = Annotated[
    str | None, QueryParameter(name="currency", description="ISO 4217 code; default: the mart's main currency.")
]
BasisParam = Annotated[
    str,
    QueryParameter(
        name="basis",
        description="effective (amortised, default) or billed (invoiced) cost.",
        schema_extra={"enum": ["effective", "billed"]},
    ),
]
# The formats below are checked by the handlers (their 400 names the parameter and what it expects); the
# schema only documents them, so generated clients and fuzzers send well-formed values.
_MONTH = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
PeriodParam = Annotated[
    str, QueryParameter(name="period", description="A month (YYYY-MM).", schema_extra={"pattern": _MONTH})
]
FromParam = Annotated[
    str | None, QueryParameter(name="from", description="First month (YYYY-MM).", schema_extra={"pattern": _MONTH})
]
ToParam = Annotated[
    str | None, QueryParameter(name="to", description="Last month (YYYY-MM).", schema_extra={"pattern": _MONTH})
]
LevelParam = Annotated[
    str,
    QueryParameter(
        name="level",
        description="Level of the hierarchy to list.",
        schema_extra={"enum": ["domain", "family", "product", "application"]},
    ),
]


# ----------------------------------------------------------------------------------------------- read pool


async def keep_session_state(connection: asyncpg.Connection) -> None:
    """The read pool's ``reset``: nothing beyond asyncpg's own (roll back a transaction left open).

    asyncpg's default reset sends ``RESET ALL``, ``CLOSE ALL``, ``UNLISTEN *`` and an advisory-unlock on
    every release: one more round trip per read, for session state the reads never change (they only run
    SELECTs on a read-only connection).
    """
    del connection


@contextlib.asynccontextmanager
async def read_pool(app: Litestar) -> AsyncIterator[None]:
    """A second pool on finops_db for the dashboard reads: plain asyncpg, autocommit, no pre-ping.

    A read is one SELECT on the materialized views; through the request session it would also pay
    BEGIN/COMMIT and the pool's pre-ping (three more round trips with asyncpg), and a SQLAlchemy pool
    checkout costs more CPU than asyncpg's. A connection that died (database restart) fails one read and
    is replaced on the next checkout; each connection is replaced after 50,000 queries or 30 idle minutes.
    """
    databases: Databases = app.state.databases
    settings: Settings = app.state.settings
    pool = await asyncpg.create_pool(
        asyncpg_dsn(databases.engines["finops"].url),
        min_size=0,
        max_size=settings.db_pool_sizes.get("finops", settings.db_pool_size) + settings.db_max_overflow,
        max_inactive_connection_lifetime=1800,
        reset=keep_session_state,
        init=decode_numeric_as_printed,
        server_settings={
            "application_name": f"rosetta.{app.state.process}.read",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "timezone": "UTC",
            "default_transaction_read_only": "on",
        },
        timeout=10,
    )
    app.state.finops_reader = pool
    try:
        yield
    finally:
        await pool.close()


async def provide_reader(state: State) -> AsyncIterator[queries.ViewReader]:
    """Dependency ``reader``: a read-only autocommit connection of :func:`read_pool`."""
    pool: asyncpg.Pool = state.finops_reader
    async with pool.acquire() as connection:
        yield queries.ViewReader(connection)


READER = {"reader": Provide(provide_reader)}


# ----------------------------------------------------------------------------------------------- parameters


def parse_period(value: str, field: str) -> date:
    """``YYYY-MM`` to the first day of that month; a 400 naming ``field`` otherwise."""
    return service.parse_month(value, field)


def parse_level(value: str) -> Level:
    """A hierarchy level name; a 400 naming ``level`` otherwise."""
    if value not in LEVELS:
        raise BadRequestError(
            f"level: must be one of {', '.join(LEVELS)}, got {value!r}", extra={"errors": [{"field": "level"}]}
        )
    return value


async def period_range(
    session: queries.ViewReader, period_from: str | None, period_to: str | None
) -> tuple[date, date]:
    """The ``from``/``to`` months, ``to`` defaulting to the latest built month and ``from`` to ``to``.

    A 400 naming ``from`` when it is after ``to``, saying which ``to`` when the client did not send one.
    """
    latest = None
    if period_to:
        end = parse_period(period_to, "to")
    else:
        latest = await queries.latest_built(session)
        end = latest or queries.current_month()
    start = parse_period(period_from, "from") if period_from else end
    if start > end:
        if period_to:
            message = f"{start:%Y-%m} is after to {end:%Y-%m}"
        elif latest:
            message = f"{start:%Y-%m} is after the default to, {end:%Y-%m} (the latest month finops-batch built)"
        else:
            message = f"{start:%Y-%m} is after the default to, {end:%Y-%m} (the current month: nothing is built yet)"
        raise BadRequestError(f"from: {message}", extra={"errors": [{"field": "from", "message": message}]})
    return start, end


def window_fields(period_from: str | None, period_to: str | None) -> tuple[str, ...]:
    """The window parameters the client sent: what a 404 for a window with no built month names."""
    return tuple(field for field, value in (("from", period_from), ("to", period_to)) if value)


# ----------------------------------------------------------------------------------------------- lists and CSV


Aggregate = TypeVar("Aggregate", Drilldown, BudgetComparison)


async def aggregate_response(
    request: Request[Any, Any, Any],
    fetch: Callable[[str | None, int], Awaitable[tuple[Aggregate, str | None]]],
    *,
    item_type: type[msgspec.Struct],
    limit: int,
    cursor: str | None,
    filename: str,
) -> Response[Any]:
    """Like :func:`list_response` for an aggregate whose page of ``items`` sits beside parent totals."""
    if wants_csv(request):

        async def items(page_cursor: str | None, page_limit: int) -> tuple[list[Any], str | None]:
            result, next_cursor = await fetch(page_cursor, page_limit)
            return list(result.items), next_cursor

        return await list_response(request, items, item_type=item_type, limit=limit, cursor=cursor, filename=filename)
    check_limit(limit)
    result, next_cursor = await fetch(cursor, limit)
    result.next = next_link(request, next_cursor)
    return Response(result)


def with_etag(representation: Any, *, status_code: int = HTTP_200_OK, location: str | None = None) -> Response[Any]:
    """A single-resource response carrying its ETag (and Location on creation)."""
    headers = {"ETag": compute_etag(representation)}
    if location:
        headers["Location"] = location
    return Response(representation, status_code=status_code, headers=headers)


# ----------------------------------------------------------------------------------------------- costs


class CostsController(Controller):
    """Month summary and hierarchy drill-down, read from the dashboard views."""

    path = "/costs"
    tags = ["costs"]
    dependencies = READER

    # 404: a month finops-batch has not built, or an environment no cost was ever attributed to.
    @get("/summary", guards=READ, opt={ERRORS_OPT: (404,)})
    async def summary(
        self,
        *,
        reader: NamedDependency[queries.ViewReader],
        period: PeriodParam,
        environment: EnvironmentParam = None,
        currency: CurrencyParam = None,
        basis: BasisParam = "effective",
    ) -> CostSummary:
        """Total, direct, indirect and unallocated cost of a month, its changes and the top movers."""
        return await queries.cost_summary(
            reader,
            period=parse_period(period, "period"),
            environment=environment,
            currency=currency,
            basis=queries.check_basis(basis),
        )

    # 404: a window of which finops-batch built no month, an unknown parent or environment.
    @get("/drilldown", guards=READ, opt={CSV_OPT: True, ERRORS_OPT: (404,)})
    async def drilldown(
        self,
        *,
        request: Request[Any, Any, Any],
        reader: NamedDependency[queries.ViewReader],
        level: LevelParam,
        parent: FromQuery[str | None] = None,
        period_from: FromParam = None,
        period_to: ToParam = None,
        environment: EnvironmentParam = None,
        currency: CurrencyParam = None,
        basis: BasisParam = "effective",
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Drilldown]:
        """Cost of each node of ``level`` under ``parent`` over ``from``..``to``, with its share of the parent."""
        checked_level = parse_level(level)
        checked_basis = queries.check_basis(basis)
        start, end = await period_range(reader, period_from, period_to)

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[Drilldown, str | None]:
            return await queries.drilldown(
                reader,
                level=checked_level,
                parent=parent,
                start=start,
                end=end,
                environment=environment,
                currency=currency,
                basis=checked_basis,
                limit=page_limit,
                cursor=page_cursor,
                window_fields=window_fields(period_from, period_to),
            )

        return await aggregate_response(
            request, fetch, limit=limit, cursor=cursor, item_type=DrilldownRow, filename="drilldown"
        )


class ApplicationsController(Controller):
    """One application's cost page."""

    path = "/applications"
    tags = ["costs"]
    dependencies = READER

    @get("/{code:str}/costs", guards=READ)
    async def costs(
        self,
        *,
        reader: NamedDependency[queries.ViewReader],
        code: FromPath[str],
        period_to: ToParam = None,
        currency: CurrencyParam = None,
        basis: BasisParam = "effective",
    ) -> ApplicationCosts:
        """13 months of an application's costs, by environment and category, and each allocated share."""
        checked_basis = queries.check_basis(basis)
        end = parse_period(period_to, "to") if period_to else await queries.latest_period(reader)
        return await queries.application_costs(
            reader,
            code=code,
            end=end,
            currency=currency,
            basis=checked_basis,
            window_fields=window_fields(None, period_to),
        )


# ----------------------------------------------------------------------------------------------- budgets


async def read_upload(request: Request[Any, Any, Any]) -> service.Upload:
    """The table of an uploaded CSV or Excel (first sheet) body; 415 (with ``Accept-Post``) for other types."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in (_CSV, "application/csv"):
        return service.rows_from_csv(await request.body())
    if content_type == _EXCEL:
        return service.rows_from_excel(await request.body())
    raise HTTPException(
        status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail=f"content-type: upload text/csv or {_EXCEL}, not {content_type or 'nothing'}",
        headers={"Accept-Post": f"{_CSV}, {_EXCEL}"},
        extra={"errors": [{"field": "content-type", "message": f"expected {_CSV} or {_EXCEL}"}]},
    )


class BudgetsController(Controller):
    """Budget versions and their lines; comparison against actuals or pricing views."""

    path = "/budgets"
    tags = ["budgets"]

    @get("/", guards=READ, opt={CSV_OPT: True})
    async def list_budgets(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        name: Annotated[str | None, QueryParameter(name="name", description="Names containing this text.")] = None,
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[Budget]]:
        """Budget versions, newest first."""

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[Budget], str | None]:
            return await service.budget_list(session, name=name, limit=page_limit, cursor=page_cursor)

        return await list_response(request, fetch, limit=limit, cursor=cursor, item_type=Budget, filename="budgets")

    @post("/", guards=ADMIN, status_code=HTTP_201_CREATED)
    async def create_budget(
        self,
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        data: JSONBody[BudgetCreate],
    ) -> Response[Budget]:
        """Create a budget version with its lines (FinOps admins)."""
        budget = await service.budget_create(session, auditor=auditor, data=data, actor=principal.subject)
        return with_etag(budget, status_code=HTTP_201_CREATED, location=f"{PREFIX}/budgets/{budget.id}")

    # 404: the query names a budget version, pricing view or revision that does not exist, or (with actual or a
    # pricing view on a side) a window of which finops-batch has built no month.
    @get("/comparison", guards=READ, opt={CSV_OPT: True, ERRORS_OPT: (404,)})
    async def comparison(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        right: Annotated[
            str,
            QueryParameter(
                description="budget:<id> or pricing-view:<id> (the current revision), budget:<id>@<revision>,"
                " pricing-view:<id>@<revision> or actual."
            ),
        ],
        left: Annotated[
            str,
            QueryParameter(
                description="actual (default), budget:<id>, budget:<id>@<revision>, pricing-view:<id> or"
                " pricing-view:<id>@<revision>."
            ),
        ] = "actual",
        level: LevelParam = "domain",
        parent: FromQuery[str | None] = None,
        period_from: FromParam = None,
        period_to: ToParam = None,
        currency: CurrencyParam = None,
        basis: BasisParam = "effective",
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[BudgetComparison]:
        """Compare two measures at a level and period: variance, variance % and a year-end projection.

        Budgets have no environment, so a comparison covers every environment.
        """
        checked_level = parse_level(level)
        checked_basis = queries.check_basis(basis)
        reader = await queries.ViewReader.of_session(session)
        start, end = await period_range(reader, period_from, period_to)
        left_measure = await service.measure(session, left, field="left")
        right_measure = await service.measure(session, right, field="right")
        if start.year != end.year:
            raise BadRequestError(
                "to: a comparison stays within one year (the projection is to that year's end)",
                extra={"errors": [{"field": "to"}]},
            )

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[BudgetComparison, str | None]:
            return await queries.compare(
                reader,
                left=left_measure,
                right=right_measure,
                level=checked_level,
                parent=parent,
                start=start,
                end=end,
                currency=currency,
                basis=checked_basis,
                limit=page_limit,
                cursor=page_cursor,
                window_fields=window_fields(period_from, period_to),
            )

        return await aggregate_response(
            request, fetch, limit=limit, cursor=cursor, item_type=ComparisonRow, filename="budget-comparison"
        )

    @get("/{budget_id:uuid}", guards=READ)
    async def get_budget(
        self, session: NamedDependency[AsyncSession], budget_id: FromPath[uuid.UUID]
    ) -> Response[Budget]:
        """One budget version (with its ETag)."""
        return with_etag(await service.budget_get(session, budget_id))

    @get("/{budget_id:uuid}/lines", guards=READ, opt={CSV_OPT: True})
    async def list_lines(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        budget_id: FromPath[uuid.UUID],
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[BudgetLine]]:
        """The lines of a budget version's current revision, by month, scope level and code."""
        budget = await service.budget_get(session, budget_id)

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[BudgetLine], str | None]:
            return await service.budget_lines(session, budget_id, budget.revision, limit=page_limit, cursor=page_cursor)

        return await list_response(
            request, fetch, limit=limit, cursor=cursor, item_type=BudgetLine, filename=f"budget-{budget_id}-lines"
        )

    @put("/{budget_id:uuid}", guards=ADMIN, opt={IF_MATCH_OPT: "required"})
    async def replace_budget(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        budget_id: FromPath[uuid.UUID],
        data: JSONBody[BudgetReplace],
    ) -> Response[Budget]:
        """Replace a budget version and its lines, as its next revision; needs ``If-Match`` with the current ETag
        (412 if stale)."""
        current = await service.budget_get(session, budget_id, for_update=True)
        check_if_match(request, compute_etag(current), required=True)
        return with_etag(
            await service.budget_replace(session, auditor=auditor, current=current, data=data, actor=principal.subject)
        )

    @patch("/{budget_id:uuid}", guards=ADMIN, opt={IF_MATCH_OPT: "required"})
    async def patch_budget(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        budget_id: FromPath[uuid.UUID],
        data: JSONBody[BudgetPatch],
    ) -> Response[Budget]:
        """Change some members of a budget version (lines are upserted), as its next revision; needs ``If-Match``."""
        current = await service.budget_get(session, budget_id, for_update=True)
        check_if_match(request, compute_etag(current), required=True)
        return with_etag(
            await service.budget_patch(session, auditor=auditor, current=current, data=data, actor=principal.subject)
        )

    @post(
        "/{budget_id:uuid}/import",
        guards=ADMIN,
        status_code=HTTP_200_OK,
        opt={IF_MATCH_OPT: "optional", UPLOAD_OPT: _BUDGET_UPLOAD},
    )
    async def import_lines(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        budget_id: FromPath[uuid.UUID],
    ) -> Response[Budget]:
        """Replace a version's lines from a CSV or Excel file (columns scope_level, scope_code, month, amount), as
        its next revision."""
        current = await service.budget_get(session, budget_id, for_update=True)
        check_if_match(request, compute_etag(current))
        upload = await read_upload(request)
        return with_etag(
            await service.budget_import(
                session, auditor=auditor, current=current, upload=upload, actor=principal.subject
            )
        )

    @get("/{budget_id:uuid}/revisions", guards=READ, opt={CSV_OPT: True})
    async def list_revisions(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        budget_id: FromPath[uuid.UUID],
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[BudgetRevision]]:
        """Every kept revision of a budget version, oldest first: name, description, line count, totals, author,
        time."""

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[BudgetRevision], str | None]:
            return await service.budget_revision_list(session, budget_id, limit=page_limit, cursor=page_cursor)

        return await list_response(
            request,
            fetch,
            limit=limit,
            cursor=cursor,
            item_type=BudgetRevision,
            filename=f"budget-{budget_id}-revisions",
        )

    @get("/{budget_id:uuid}/revisions/{revision:int}", guards=READ)
    async def get_revision(
        self, session: NamedDependency[AsyncSession], budget_id: FromPath[uuid.UUID], revision: BudgetRevisionParam
    ) -> Response[BudgetRevision]:
        """A budget version as it was at one revision (never changes once kept; with its ETag)."""
        return with_etag(await service.budget_revision_get(session, budget_id, revision))

    @get("/{budget_id:uuid}/revisions/{revision:int}/lines", guards=READ, opt={CSV_OPT: True})
    async def list_revision_lines(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        budget_id: FromPath[uuid.UUID],
        revision: BudgetRevisionParam,
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[BudgetLine]]:
        """The lines of one revision of a budget version, as they were, by month, scope level and code."""
        await service.budget_revision_get(session, budget_id, revision)

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[BudgetLine], str | None]:
            return await service.budget_lines(session, budget_id, revision, limit=page_limit, cursor=page_cursor)

        return await list_response(
            request,
            fetch,
            limit=limit,
            cursor=cursor,
            item_type=BudgetLine,
            filename=f"budget-{budget_id}-revision-{revision}-lines",
        )


# ----------------------------------------------------------------------------------------------- pricing views


class PricingViewsController(Controller):
    """Pricing views: named rate cards valuing the same consumption quantities."""

    path = "/pricing-views"
    tags = ["pricing views"]

    @get("/", guards=READ, opt={CSV_OPT: True})
    async def list_views(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[PricingView]]:
        """Pricing views with their rates, by id."""

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[PricingView], str | None]:
            return await service.pricing_view_list(session, limit=page_limit, cursor=page_cursor)

        return await list_response(
            request, fetch, limit=limit, cursor=cursor, item_type=PricingView, filename="pricing-views"
        )

    @post("/", guards=ADMIN, status_code=HTTP_201_CREATED)
    async def create_view(
        self,
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        data: JSONBody[PricingViewCreate],
    ) -> Response[PricingView]:
        """Create a pricing view with its rate card (FinOps admins)."""
        view = await service.pricing_view_create(session, auditor=auditor, data=data, actor=principal.subject)
        return with_etag(view, status_code=HTTP_201_CREATED, location=f"{PREFIX}/pricing-views/{view.id}")

    @get("/{view_id:uuid}", guards=READ)
    async def get_view(
        self, session: NamedDependency[AsyncSession], view_id: FromPath[uuid.UUID]
    ) -> Response[PricingView]:
        """One pricing view (with its ETag)."""
        return with_etag(await service.pricing_view_get(session, view_id))

    @put("/{view_id:uuid}", guards=ADMIN, opt={IF_MATCH_OPT: "required"})
    async def replace_view(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        view_id: FromPath[uuid.UUID],
        data: JSONBody[PricingViewReplace],
    ) -> Response[PricingView]:
        """Replace a pricing view's description and rates, as its next revision; needs ``If-Match`` (412 if stale)."""
        current = await service.pricing_view_get(session, view_id, for_update=True)
        check_if_match(request, compute_etag(current), required=True)
        return with_etag(
            await service.pricing_view_replace(
                session, auditor=auditor, current=current, data=data, actor=principal.subject
            )
        )

    @patch("/{view_id:uuid}", guards=ADMIN, opt={IF_MATCH_OPT: "required"})
    async def patch_view(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        view_id: FromPath[uuid.UUID],
        data: JSONBody[PricingViewPatch],
    ) -> Response[PricingView]:
        """Change some members of a pricing view (rates are upserted), as its next revision; needs ``If-Match``."""
        current = await service.pricing_view_get(session, view_id, for_update=True)
        check_if_match(request, compute_etag(current), required=True)
        return with_etag(
            await service.pricing_view_patch(
                session, auditor=auditor, current=current, data=data, actor=principal.subject
            )
        )

    @post(
        "/{view_id:uuid}/import",
        guards=ADMIN,
        status_code=HTTP_200_OK,
        opt={IF_MATCH_OPT: "optional", UPLOAD_OPT: _RATES_UPLOAD},
    )
    async def import_rates(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        view_id: FromPath[uuid.UUID],
    ) -> Response[PricingView]:
        """Replace a view's rates from a CSV or Excel file (columns service_category, unit, unit_price), as its
        next revision."""
        current = await service.pricing_view_get(session, view_id, for_update=True)
        check_if_match(request, compute_etag(current))
        upload = await read_upload(request)
        return with_etag(
            await service.pricing_view_import(
                session, auditor=auditor, current=current, upload=upload, actor=principal.subject
            )
        )

    @get("/{view_id:uuid}/revisions", guards=READ, opt={CSV_OPT: True})
    async def list_revisions(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        view_id: FromPath[uuid.UUID],
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[PricingViewRevisionSummary]]:
        """Every kept revision of a view, oldest first: description, number of rates, author, time."""

        async def fetch(
            page_cursor: str | None, page_limit: int
        ) -> tuple[list[PricingViewRevisionSummary], str | None]:
            return await service.pricing_view_revision_list(session, view_id, limit=page_limit, cursor=page_cursor)

        return await list_response(
            request,
            fetch,
            limit=limit,
            cursor=cursor,
            item_type=PricingViewRevisionSummary,
            filename="pricing-view-revisions",
        )

    @get("/{view_id:uuid}/revisions/{revision:int}", guards=READ)
    async def get_revision(
        self, session: NamedDependency[AsyncSession], view_id: FromPath[uuid.UUID], revision: RevisionParam
    ) -> Response[PricingViewRevision]:
        """A view's rate card as it was at one revision (never changes once kept; with its ETag)."""
        return with_etag(await service.pricing_view_revision_get(session, view_id, revision))


# ----------------------------------------------------------------------------------------------- rules


class AllocationRulesController(Controller):
    """Versioned allocation rules: everyone reads, FinOps admins add versions; a version never changes."""

    path = "/allocation-rules"
    tags = ["allocation rules"]

    @get("/", guards=READ, opt={CSV_OPT: True})
    async def list_rules(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        pool: FromQuery[str | None] = None,
        all_versions: Annotated[bool, QueryParameter(name="allVersions")] = False,
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[AllocationRule]]:
        """Rules (their latest version, or every version with ``allVersions=true``)."""

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[AllocationRule], str | None]:
            return await service.rule_list(
                session, pool=pool, all_versions=all_versions, limit=page_limit, cursor=page_cursor
            )

        return await list_response(
            request, fetch, limit=limit, cursor=cursor, item_type=AllocationRule, filename="allocation-rules"
        )

    @post("/", guards=ADMIN, status_code=HTTP_201_CREATED)
    async def create_rule(
        self,
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        data: JSONBody[AllocationRuleCreate],
    ) -> Response[AllocationRule]:
        """Add a rule, or the next version of an existing ``ruleId``."""
        rule = await service.rule_create_version(session, auditor=auditor, data=data, actor=principal.subject)
        return with_etag(
            rule,
            status_code=HTTP_201_CREATED,
            location=f"{PREFIX}/allocation-rules/{rule.rule_id}/versions/{rule.version}",
        )

    @get("/{rule_id:str}", guards=READ)
    async def get_rule(
        self, session: NamedDependency[AsyncSession], rule_id: FromPath[str]
    ) -> Response[AllocationRule]:
        """The latest version of a rule."""
        return with_etag(await service.rule_get(session, rule_id))

    @get("/{rule_id:str}/versions/{version:int}", guards=READ)
    async def get_rule_version(
        self, session: NamedDependency[AsyncSession], rule_id: FromPath[str], version: RuleVersionParam
    ) -> Response[AllocationRule]:
        """One version of a rule."""
        return with_etag(await service.rule_get(session, rule_id, version=version))


# ----------------------------------------------------------------------------------------------- mapping aliases


class MappingAliasesController(Controller):
    """The aliases finops-batch maps source values with (``env`` for the ``environment`` tag key, ``production`` for
    ``prod``, an old application code for its CMDB code): everyone reads, FinOps admins add and delete them."""

    path = "/mapping-aliases"
    tags = ["mapping aliases"]

    @get("/", guards=READ, opt={CSV_OPT: True})
    async def list_aliases(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        kind: Annotated[
            str | None, QueryParameter(description="Only this kind: tag_key, environment, application...")
        ] = None,
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[MappingAlias]]:
        """Aliases by kind, then alias."""

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[MappingAlias], str | None]:
            return await service.alias_list(session, kind=kind, limit=page_limit, cursor=page_cursor)

        return await list_response(
            request, fetch, limit=limit, cursor=cursor, item_type=MappingAlias, filename="mapping-aliases"
        )

    @post("/", guards=ADMIN, status_code=HTTP_201_CREATED)
    async def create_alias(
        self,
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        data: JSONBody[MappingAliasCreate],
    ) -> Response[MappingAlias]:
        """Add an alias; it applies from the next finops-batch run of each month (FinOps admins)."""
        alias = await service.alias_create(session, auditor=auditor, data=data, actor=principal.subject)
        return with_etag(alias, status_code=HTTP_201_CREATED, location=f"{PREFIX}/mapping-aliases/{alias.id}")

    @get("/{alias_id:int}", guards=READ)
    async def get_alias(self, session: NamedDependency[AsyncSession], alias_id: AliasIdParam) -> Response[MappingAlias]:
        """One alias (with its ETag)."""
        return with_etag(await service.alias_get(session, alias_id))

    @delete("/{alias_id:int}", guards=ADMIN, opt={IF_MATCH_OPT: "optional"})
    async def delete_alias(
        self,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        alias_id: AliasIdParam,
    ) -> None:
        """Delete an alias; ``If-Match``, when sent, must carry its current ETag (FinOps admins)."""
        current = await service.alias_get(session, alias_id, for_update=True)
        check_if_match(request, compute_etag(current))
        await service.alias_delete(session, auditor=auditor, current=current)


# ----------------------------------------------------------------------------------------------- batch runs


async def _finops_run(session: AsyncSession, run_id: uuid.UUID) -> dict[str, Any]:
    """The record of a finops-batch run; 404 for an unknown run or one of another job."""
    record = await runs.get_run(session, run_id)
    if record is None or record["job"] != FINOPS_JOB:
        raise NotFoundError(f"no FinOps batch run {run_id}")
    return record


def _batch_run(record: dict[str, Any]) -> BatchRun:
    # The record's keys are the table's snake_case columns, the struct's own field names.
    return BatchRun(**{name: record[name] for name in BatchRun.__struct_fields__})


def _run_cursor(run: BatchRun) -> str:
    return encode_cursor([run.queued_at, run.run_id])


class BatchRunsController(Controller):
    """finops-batch runs: FinOps admins trigger them and read their rejected documents; everyone may follow them
    (when was my data rebuilt?)."""

    path = "/batch/runs"
    tags = ["batch"]

    @post("/", guards=ADMIN, status_code=HTTP_202_ACCEPTED)
    async def trigger(
        self,
        *,
        session: NamedDependency[AsyncSession],
        auditor: NamedDependency[Auditor],
        principal: NamedDependency[Principal],
        # A Protocol cannot be isinstance-checked: the launcher is the one the app was composed with.
        launcher: NamedDependency[SkipValidation[RunLauncher]],
        data: JSONBody[BatchRunRequest | None] = None,
    ) -> Response[BatchRunAccepted]:
        """Queue a run and start it; answer 202 with its ``runId`` and ``Location`` at once."""
        parameters = service.batch_parameters(data or BatchRunRequest())
        run_id = await launcher.launch(FINOPS_JOB, parameters, requested_by=principal.subject)
        await auditor.record(
            action="batch.run.trigger", entity_type="batch_run", entity_id=str(run_id), after=parameters
        )
        location = f"{PREFIX}/batch/runs/{run_id}"
        return Response(
            BatchRunAccepted(run_id=run_id, status="queued", location=location),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": location},
        )

    @get("/", guards=READ, opt={CSV_OPT: True})
    async def list_batch_runs(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[BatchRun]]:
        """Runs of the FinOps batch, newest first, with counts, step durations and errors."""

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[BatchRun], str | None]:
            before = None
            if page_cursor is not None:
                queued_at, run_id = decode_cursor(page_cursor, (datetime, uuid.UUID))
                before = (queued_at, run_id)
            records = await runs.list_runs(session, job=FINOPS_JOB, limit=page_limit + 1, before=before)
            items = [_batch_run(record) for record in records[:page_limit]]
            return items, (_run_cursor(items[-1]) if len(records) > page_limit else None)

        return await list_response(
            request, fetch, limit=limit, cursor=cursor, item_type=BatchRun, filename="batch-runs"
        )

    @get("/{run_id:uuid}", guards=READ)
    async def get_batch_run(self, session: NamedDependency[AsyncSession], run_id: FromPath[uuid.UUID]) -> BatchRun:
        """One run with its counts, step durations and error."""
        return _batch_run(await _finops_run(session, run_id))

    @get("/{run_id:uuid}/rejections", guards=ADMIN, opt={CSV_OPT: True})
    async def list_batch_rejections(
        self,
        *,
        request: Request[Any, Any, Any],
        session: NamedDependency[AsyncSession],
        run_id: FromPath[uuid.UUID],
        limit: LimitParam = DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> Response[Page[BatchRejection]]:
        """The raw documents a run rejected, with the reason and the payload (FinOps admins: payloads are raw)."""
        await _finops_run(session, run_id)  # 404 for a run of another job or none

        async def fetch(page_cursor: str | None, page_limit: int) -> tuple[list[BatchRejection], str | None]:
            return await service.batch_rejections(session, run_id, limit=page_limit, cursor=page_cursor)

        return await list_response(
            request,
            fetch,
            limit=limit,
            cursor=cursor,
            item_type=BatchRejection,
            filename=f"batch-run-{run_id}-rejections",
        )


# ----------------------------------------------------------------------------------------------- Cost Insights


IntervalsParam = Annotated[
    str,
    QueryParameter(
        name="intervals",
        description=(
            "ISO 8601 repeating interval R<n>/P<k>D or R<n>/P<k>M then the exclusive end date, as the plugin builds"
            " it: R2/P30D/2026-10-01, R2/P3M/2026-10-01."
        ),
        # The same form as queries.parse_intervals reads (which also checks the bounds and the date).
        schema_extra={"pattern": r"^R[0-9]+/P[0-9]+[DM]/[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    ),
]
EntityRefParam = Annotated[
    str,
    QueryParameter(
        name="entityRef",
        description=(
            "The Backstage entity ref of an application: component:default/apim-inbox (kind and namespace may be"
            " left out; the name matches an application code without regard to case)."
        ),
    ),
]
GroupRefParam = Annotated[
    str,
    QueryParameter(
        name="group",
        description="A Backstage group ref, group:default/team-x, or the bare name (matched without regard to case).",
    ),
]


def entity_name(ref: str, *, kind: str, field: str) -> str:
    """The name in a Backstage entity ref ``[kind:][namespace/]name``; 400 naming ``field`` for another kind.

    Rosetta's CMDB has no namespaces, so the namespace is not checked.
    """
    text = ref.strip()
    ref_kind, colon, rest = text.partition(":")
    if not colon:
        ref_kind, rest = "", text
    name = rest.rpartition("/")[2]
    if ref_kind and ref_kind.lower() != kind:
        # The kind sent is quoted, not given an article: it can be any word ("api", "user").
        message = f"expected a {kind} ref ({kind}:default/<name>), got {ref!r}, of kind {ref_kind!r}"
        raise BadRequestError(f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]})
    if not name:
        message = f"expected [{kind}:][namespace/]name, got {ref!r}"
        raise BadRequestError(f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]})
    return name


class CostInsightsController(Controller):
    """Daily series in the Backstage Cost Insights shape (amounts are numbers there, by the plugin's types).

    Backstage calls with refs (``getCatalogEntityDailyCost(catalogEntityRef)``: ``component:default/x``), whose
    ``/`` a path segment cannot carry: each series is also served with the ref as a query parameter.
    """

    path = "/cost-insights"
    tags = ["cost insights"]
    dependencies = READER

    @get("/last-complete-billing-date", guards=READ)
    async def last_complete_billing_date(self, reader: NamedDependency[queries.ViewReader]) -> LastCompleteBillingDate:
        """The last day with complete costs."""
        return LastCompleteBillingDate(date=await queries.last_complete_day(reader))

    @get("/groups/{group:str}/daily", guards=READ)
    async def group_daily(
        self, reader: NamedDependency[queries.ViewReader], group: FromPath[str], intervals: IntervalsParam
    ) -> CostInsightsCost:
        """Daily cost of every application an owner group owns, grouped by product (``team-x`` or ``group:team-x``)."""
        window = queries.parse_intervals(intervals)
        name = entity_name(group, kind="group", field="group")
        return await queries.group_daily_cost(reader, name=name, window=window)

    # 404: the query names a group the CMDB does not know.
    @get("/groups/daily", guards=READ, opt={ERRORS_OPT: (404,)})
    async def group_daily_by_ref(
        self, reader: NamedDependency[queries.ViewReader], group: GroupRefParam, intervals: IntervalsParam
    ) -> CostInsightsCost:
        """Daily cost of every application an owner group owns, by product; ``group`` may be a full group ref."""
        window = queries.parse_intervals(intervals)
        name = entity_name(group, kind="group", field="group")
        return await queries.group_daily_cost(reader, name=name, window=window)

    @get("/entities/{code:str}/daily", guards=READ)
    async def entity_daily(
        self, reader: NamedDependency[queries.ViewReader], code: FromPath[str], intervals: IntervalsParam
    ) -> CostInsightsCost:
        """Daily cost of one application (``APIM-INBOX``, ``apim-inbox``, ``component:apim-inbox``), by environment."""
        window = queries.parse_intervals(intervals)
        name = entity_name(code, kind="component", field="code")
        return await queries.application_daily_cost(reader, name=name, window=window)

    # 404: the query names an entity that is no application.
    @get("/entities/daily", guards=READ, opt={ERRORS_OPT: (404,)})
    async def entity_daily_by_ref(
        self, reader: NamedDependency[queries.ViewReader], entity_ref: EntityRefParam, intervals: IntervalsParam
    ) -> CostInsightsCost:
        """Daily cost of the application a Backstage entity ref names, grouped by environment."""
        window = queries.parse_intervals(intervals)
        name = entity_name(entity_ref, kind="component", field="entityRef")
        return await queries.application_daily_cost(reader, name=name, window=window)


# ----------------------------------------------------------------------------------------------- app


def context_api() -> ContextApi:
    """The routes and database this context brings to an app."""
    return ContextApi(
        name="finops",
        title=TITLE,
        description=DESCRIPTION,
        database="finops",
        lifespan_hooks=(read_pool,),
        route_handlers=[
            security_controller(),
            CostsController,
            ApplicationsController,
            BudgetsController,
            PricingViewsController,
            AllocationRulesController,
            MappingAliasesController,
            BatchRunsController,
            CostInsightsController,
        ],
    )


def create_app() -> Litestar:
    """The app of `rosetta serve finops`: this context only."""
    return create_core_app([context_api()], process="finops")

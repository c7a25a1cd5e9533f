"""finops-batch: from raw documents to the data mart, each month rebuilt atomically.

The transformation, in the order it runs:

1. **reference** - load the admin-managed mapping aliases and allocation rules, then read every
   ``cmdb/application`` document into the SCD2 hierarchy (``dim_application`` and the product, family and
   domain versions derived from it), replaced in one transaction.
2. **read** - stream ``finance/shared_cost`` and ``finance/usage_driver``, then every cost line
   (``cmdb/cost`` and ``focus`` rows of every provider source), in pages projected onto the few payload keys
   the batch reads (``CmdbCostFields``, ``FocusFields``...). Each line is parsed (amounts as ``Decimal``,
   never float), mapped to an application and an environment (tags with their aliases, CMDB codes, the
   ``mapping_alias`` table) or to ``UNALLOCATED`` - counted, never dropped - or rejected with a reason code
   and text (kept with the whole document until the month's swap). Only the lines of the months the run
   rebuilds are counted (see "reading" in ``MonthRebuild``). Mapped lines go by ``COPY`` (text format) into one
   unlogged table per month (named with the run id, like the staging tables, so another connection can build
   the month) while control totals are summed in Python, independently of SQL.
3. **build** - per month, a staging table ``LIKE fact_consumption`` gets the daily direct rows (grouped in
   SQL, numbered in grain order so a rerun yields identical rows), then the indirect rows: each pool is split
   by the rule version valid for the month with :mod:`rosetta.finops.allocation`, and the coefficients go to
   a second staging table ``LIKE fact_coefficient``. Two months at a time, on two connections: each worker
   takes the next month, builds it and swaps it in (one groups its lines in PostgreSQL while the other's pools
   are split in Python), so months finish in any order.
4. **swap** - per month, ONE transaction replaces the month's small tables (hierarchy attribution, pools,
   control totals, rejections in ``batch_rejection``), swaps both partitions (DETACH + DROP the old one,
   RENAME + ATTACH the staging table), then asserts in SQL that every pool is conserved and that direct +
   indirect = source; a failed assertion rolls the whole month back. Readers see the old month or the new
   one, never a mix (ADR 0005). Two swaps take the same locks in the same order: the second waits for the
   first's commit.
5. **views** - ``dim_application_month`` is analysed once every month is in, then every materialized view is
   rebuilt beside the live one (several at once, on two connections) and the new ones replace the old in one
   short transaction (:mod:`rosetta.finops.views`, ADR 0007).

A run holds a session advisory lock per month it rebuilds, so two runs never rebuild the same month at once
(the batch runner's job lock already serialises finops-batch runs; this also covers any other caller).
The line and staging tables of a killed run are dropped by the next run that locks the same month.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import astuple, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, TypeVar, get_args

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rosetta.core.errors import ConflictError, RosettaError
from rosetta.core.runs import advisory_lock_key
from rosetta.finops.allocation import (
    CENT,
    EXACT,
    UNALLOCATED,
    Allocation,
    AllocationError,
    Share,
    allocate,
    even_weights,
    fixed_weights,
    inputs_hash,
    whole_quanta,
)
from rosetta.finops.models import (
    MAX_AMOUNT_EXPONENT,
    SERVICE_CATEGORIES,
    SHARED_ENVIRONMENT,
    UNKNOWN_ENVIRONMENT,
)
from rosetta.finops.views import rebuild_views

logger = logging.getLogger(__name__)

NO_CURRENCY = "XXX"  # ISO 4217 "no currency": where a rejected line's currency is unknown
INDIRECT_PROVIDER = "internal"
INDIRECT_SOURCE = "finance"
COPY_CHUNK = 10_000
SWAP_LOCK_TIMEOUT = "30s"
BUILD_WORK_MEM = "64MB"

MATERIALIZED_VIEWS: tuple[str, ...] = (
    "mv_finops_cost_monthly",
    "mv_finops_cost_rollup_monthly",
    "mv_finops_cost_allocation_monthly",
    "mv_finops_cost_daily",
    "mv_finops_period_control",
    # finops_0004: direct quantities, valued by pricing views (finops-api budgets/comparison).
    "mv_finops_quantity_monthly",
)


# ----------------------------------------------------------------------------------------------- inputs


class RawLine(Protocol):
    """One raw document as the batch reads it (``rosetta.raw.store.RawDocument`` fits)."""

    @property
    def source(self) -> str:
        """Where it came from (``cmdb``, ``aws``...)."""
        ...

    @property
    def kind(self) -> str:
        """What it is (``cost``, ``focus``...)."""
        ...

    @property
    def content_hash(self) -> str:
        """The raw zone's de-duplication key."""
        ...

    @property
    def payload(self) -> dict[str, Any]:
        """The record as received."""
        ...


F = TypeVar("F", bound=msgspec.Struct)
F_co = TypeVar("F_co", bound=msgspec.Struct, covariant=True)


class RawPage(Protocol[F_co]):
    """A page of raw documents projected onto a struct (``rosetta.raw.store.DocumentPage`` fits)."""

    @property
    def source(self) -> str:
        """Where the page's documents came from."""
        ...

    @property
    def fields(self) -> Sequence[F_co]:
        """Each document's projection, in landing order."""
        ...

    def documents(self, indexes: Sequence[int]) -> Awaitable[Sequence[RawLine]]:
        """The whole documents at ``indexes`` (for the few lines kept with a rejection)."""
        ...


class RawReader(Protocol):
    """Streams raw documents of one kind, from one source or (``source=None``) from every source."""

    def __call__(self, *, source: str | None, kind: str) -> AsyncIterator[RawLine]:
        """Whole documents in landing order."""
        ...

    def pages(self, *, source: str | None, kind: str, shape: type[F]) -> AsyncIterator[RawPage[F]]:
        """Pages in landing order, each document projected onto ``shape`` (the payload keys the batch reads)."""
        ...


class ProgressSink(Protocol):
    """Where a step reports units of work done."""

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units done."""


class RunHooks(Protocol):
    """What the pipeline needs from a batch run: timed steps and progress (``RunContext`` fits)."""

    def step(self, name: str, total: int | None = None) -> AbstractAsyncContextManager[None]:
        """Time a named step."""
        ...

    @property
    def progress(self) -> ProgressSink:
        """The run's progress reporter."""
        ...


class ConservationError(RosettaError):
    """A month failed its SQL invariants (pool conservation or direct + indirect = source); nothing was swapped."""

    status_code = 500
    title = "Conservation check failed"


class EmptyMonthError(RosettaError):
    """A requested month has no source data in the raw zone while the mart holds data for it; nothing swapped."""

    status_code = 409
    title = "Month would be emptied"


RejectionCode = Literal[
    "missing_amount",
    "invalid_amount",
    "invalid_date",
    "invalid_currency",
    "invalid_quantity",
    "negative_quantity",
    "fractional_cents",
    "missing_pool",
    "missing_driver",
    "unknown_application",
    "incomplete_application",
    "invalid_validity",
    "invalid_budget_line",
]
# The keys of ``rejected_by_reason`` and the ``reason_code`` of a ``batch_rejection`` row: a fixed vocabulary, so
# the counters of two runs compare and a dashboard can group on them; the reason text keeps the offending value.
REJECTION_CODES: tuple[RejectionCode, ...] = get_args(RejectionCode)


class LineRejected(Exception):  # noqa: N818 - a control-flow signal carrying the rejection reason
    """A raw line that cannot be used: ``code`` (one of :data:`REJECTION_CODES`) and ``reason``, the text that
    names the offending value, are kept in ``batch_rejection``; ``period`` is the line's month when it is known."""

    def __init__(
        self, code: RejectionCode, reason: str, *, period: date | None = None, currency: str | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.period = period
        self.currency = currency


@dataclass
class RebuildReport:
    """What a rebuild did: the months swapped and the counts the run record keeps."""

    periods: list[date] = field(default_factory=list)
    read: int = 0
    mapped: int = 0
    unallocated: int = 0
    rejected: int = 0
    skipped: int = 0  # lines, pools and drivers of months the run does not rebuild
    skipped_undated: int = 0  # lines of no month, skipped by a run of some months only
    written: int = 0
    counters: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- parsing


def month_of(day: date) -> date:
    """The first day of ``day``'s month (the partition key)."""
    return day.replace(day=1)


def next_month(month: date) -> date:
    """The first day of the following month."""
    return (month + timedelta(days=32)).replace(day=1)


def parse_period(value: object) -> date:
    """``YYYY-MM`` (or an ISO date) as the first day of that month."""
    if not isinstance(value, str):
        raise LineRejected("invalid_date", f"period {value!r} is not a YYYY-MM string")
    try:
        if len(value) == 7:
            return date(int(value[:4]), int(value[5:7]), 1)
        return month_of(parse_day(value, "period"))
    except (ValueError, LineRejected):
        raise LineRejected("invalid_date", f"unparsable period {value!r}") from None


def parse_day(value: object, name: str) -> date:
    """An ISO date or timestamp (RFC 3339 or ``YYYY-MM-DD HH:MM:SS``) as a UTC calendar day."""
    if not isinstance(value, str):
        raise LineRejected("invalid_date", f"{name} {value!r} is not a date string")
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise LineRejected("invalid_date", f"unparsable {name} {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def parse_amount(value: object, name: str) -> Decimal:
    """A money amount from a decimal string (or an integer); floats and non-finite values are refused."""
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise LineRejected("invalid_amount", f"unparsable {name} {value!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif value is None or value == "NULL":
        raise LineRejected("missing_amount", f"{name} is missing")
    else:
        raise LineRejected("invalid_amount", f"{name} {value!r} is not a decimal string")
    if not amount.is_finite():
        raise LineRejected("invalid_amount", f"{name} {value!r} is not a finite amount")
    if amount and amount.adjusted() > MAX_AMOUNT_EXPONENT:
        # 1e400 would otherwise land, take every pool split by direct cost and break the API's ratios.
        raise LineRejected("invalid_amount", f"{name} {value!r} is out of range (at least 10^15)")
    return amount


def parse_quantity(value: object) -> Decimal | None:
    """A usage quantity; anything unparsable is simply unknown (quantities are not money)."""
    if value is None or value == "NULL":
        return None
    try:
        quantity = Decimal(str(value).strip()) if isinstance(value, (str, int)) else None
    except InvalidOperation:
        return None
    return quantity if quantity is not None and quantity.is_finite() else None


def parse_currency(value: object) -> str:
    """An ISO 4217 code (three letters)."""
    if isinstance(value, str):
        code = value.strip().upper()
        if len(code) == 3 and code.isalpha():
            return code
    raise LineRejected("invalid_currency", f"invalid currency {value!r}")


def _text(value: object) -> str | None:
    if value is None or value == "NULL":
        return None
    text = str(value).strip()
    return text or None


# ----------------------------------------------------------------------------------- reference data


@dataclass(frozen=True, slots=True)
class AppVersion:
    """One CMDB version of an application (``valid_to`` is the last day of validity, inclusive)."""

    code: str
    valid_from: date
    valid_to: date | None
    name: str
    product_code: str
    product_name: str
    family_code: str
    family_name: str
    domain_code: str
    domain_name: str
    owner_group: str | None
    status: str | None

    def overlaps(self, month: date) -> bool:
        """True when this version is valid on at least one day of ``month``."""
        last_day = next_month(month) - timedelta(days=1)
        return self.valid_from <= last_day and (self.valid_to is None or self.valid_to >= month)


UNALLOCATED_VERSION = AppVersion(
    UNALLOCATED, date(1900, 1, 1), None, "Unallocated", UNALLOCATED, "Unallocated", UNALLOCATED, "Unallocated",
    UNALLOCATED, "Unallocated", None, None,
)  # fmt: skip


def parse_application(payload: Mapping[str, Any]) -> AppVersion:
    """A ``cmdb/application`` payload as a version; every hierarchy code is required."""
    values = {}
    for key in ("app_code", "product_code", "family_code", "domain_code"):
        text = _text(payload.get(key))
        if text is None:
            raise LineRejected("incomplete_application", f"{key} is missing")
        values[key] = text
    valid_from = payload.get("valid_from")
    valid_to = payload.get("valid_to")
    start = parse_day(valid_from, "valid_from") if valid_from is not None else date(1900, 1, 1)
    end = parse_day(valid_to, "valid_to") if valid_to is not None else None
    if end is not None and end < start:
        raise LineRejected("invalid_validity", f"valid_to {end} is before valid_from {start}")
    return AppVersion(
        code=values["app_code"],
        valid_from=start,
        valid_to=end,
        name=_text(payload.get("app_name")) or values["app_code"],
        product_code=values["product_code"],
        product_name=_text(payload.get("product_name")) or values["product_code"],
        family_code=values["family_code"],
        family_name=_text(payload.get("family_name")) or values["family_code"],
        domain_code=values["domain_code"],
        domain_name=_text(payload.get("domain_name")) or values["domain_code"],
        owner_group=_text(payload.get("owner_group")),
        status=_text(payload.get("status")),
    )


class Catalogue:
    """The CMDB hierarchy with its validity periods: which application codes exist, and where, when."""

    def __init__(self, versions: Iterable[AppVersion]) -> None:
        by_code: dict[str, dict[date, AppVersion]] = defaultdict(dict)
        for version in versions:
            # The same (code, valid_from) landed twice with different content: the later document wins.
            by_code[version.code][version.valid_from] = version
        self.versions: dict[str, list[AppVersion]] = {
            code: sorted(found.values(), key=lambda version: version.valid_from) for code, found in by_code.items()
        }
        self._upper = {code.upper(): code for code in self.versions}

    def code_of(self, value: str) -> str | None:
        """The CMDB code matching ``value`` case-insensitively, or None."""
        return self._upper.get(value.upper())

    def in_month(self, code: str, month: date) -> AppVersion | None:
        """The version a month is attributed to: the overlapping one that starts last, else the nearest one."""
        versions = self.versions.get(code)
        if not versions:
            return UNALLOCATED_VERSION if code == UNALLOCATED else None
        overlapping = [version for version in versions if version.overlaps(month)]
        if overlapping:
            return overlapping[-1]
        # Costs outside every validity window (before creation, after retirement) stay with the nearest version.
        before = [version for version in versions if version.valid_from <= month]
        return before[-1] if before else versions[0]

    def valid_in(self, month: date) -> list[str]:
        """Codes of the applications valid on at least one day of ``month``, sorted."""
        return sorted(
            code for code, versions in self.versions.items() if any(version.overlaps(month) for version in versions)
        )


class Aliases:
    """The ``mapping_alias`` table: per kind, lower-cased alias -> canonical value."""

    def __init__(self, rows: Iterable[tuple[str, str, str]]) -> None:
        self.by_kind: dict[str, dict[str, str]] = defaultdict(dict)
        for kind, alias, canonical in rows:
            self.by_kind[kind][alias.strip().lower()] = canonical.strip()

    def resolve(self, kind: str, value: str) -> str:
        """The canonical form of ``value`` (unchanged when no alias applies)."""
        return self.by_kind.get(kind, {}).get(value.strip().lower(), value)


@dataclass(frozen=True, slots=True)
class Rule:
    """One allocation-rule version with its targets."""

    rule_id: str
    version: int
    pool_code: str | None
    method: str
    driver: str | None
    valid_from: date
    targets: tuple[tuple[str, Decimal | None], ...]


def select_rule(rules: Sequence[Rule], pool_code: str, month: date) -> Rule | None:
    """The rule version splitting ``pool_code`` in ``month``: the pool's own rules first, then the fallback.

    Among the candidates valid by then, the latest ``valid_from`` wins, then the highest version.
    """
    for wanted in (pool_code, None):
        candidates = [rule for rule in rules if rule.pool_code == wanted and rule.valid_from <= month]
        if candidates:
            return max(candidates, key=lambda rule: (rule.valid_from, rule.version, rule.rule_id))
    return None


# ------------------------------------------------------------------------------------------------ mapping

_CATEGORIES_UPPER = {name.upper(): name for name in SERVICE_CATEGORIES}
_TAG_APPLICATION = "application"
_TAG_ENVIRONMENT = "environment"
MAPPED_TAG_KEYS: tuple[str, ...] = (_TAG_APPLICATION, _TAG_ENVIRONMENT)
"""The FOCUS tag keys the mapping reads: the only useful canonical keys of a ``tag_key`` alias."""

# Columns of the per-month temporary tables the mapped lines are copied into.
LINE_COLUMNS: tuple[str, ...] = (
    "day", "application_code", "environment_code", "service_category", "service_name", "provider", "quantity",
    "unit", "billed_cost", "effective_cost", "currency", "source",
)  # fmt: skip
# The "C" collation makes the grain order (and so line_no) byte order: the same on every server, whatever
# its locale, and cheaper to sort than a linguistic collation.
_LINE_DDL = """
    day date NOT NULL, application_code text COLLATE "C" NOT NULL, environment_code text COLLATE "C" NOT NULL,
    service_category text COLLATE "C" NOT NULL, service_name text COLLATE "C", provider text COLLATE "C" NOT NULL,
    quantity numeric, unit text COLLATE "C", billed_cost numeric NOT NULL, effective_cost numeric NOT NULL,
    currency text COLLATE "C" NOT NULL, source text COLLATE "C" NOT NULL
"""

Line = tuple[date, str, str, str, str | None, str, Decimal | None, str | None, Decimal, Decimal, str, str]
_NULL_TEXT = "\\N"


# What the batch reads of each kind of payload: the raw store decodes only these keys (``rename`` gives the
# payload's spelling). Every value is ``Any``, exactly as received, so the parse_* functions below see what a
# whole decoded payload would have held and reject the same lines for the same reasons; an absent key is None,
# as ``payload.get`` gave. ``gc=False``: JSON values hold no reference cycles, and millions of these are made.


class CmdbCostFields(msgspec.Struct, gc=False):
    """The keys of a ``cmdb/cost`` payload the batch reads."""

    date: Any = None
    app_code: Any = None
    environment: Any = None
    service_category: Any = None
    service_name: Any = None
    provider: Any = None
    quantity: Any = None
    unit: Any = None
    billed_cost: Any = None
    effective_cost: Any = None
    currency: Any = None


class FocusFields(msgspec.Struct, rename="pascal", gc=False):
    """The FOCUS columns the batch reads (``billed_cost`` is ``BilledCost`` in the payload)."""

    charge_period_start: Any = None
    billing_currency: Any = None
    billed_cost: Any = None
    effective_cost: Any = None
    tags: Any = None
    consumed_quantity: Any = None
    consumed_unit: Any = None
    pricing_quantity: Any = None
    pricing_unit: Any = None
    service_category: Any = None
    service_name: Any = None
    provider_name: Any = None


class SharedCostFields(msgspec.Struct, gc=False):
    """The keys of a ``finance/shared_cost`` payload the batch reads."""

    period: Any = None
    pool: Any = None
    pool_name: Any = None
    amount: Any = None
    currency: Any = None


class UsageDriverFields(msgspec.Struct, gc=False):
    """The keys of a ``finance/usage_driver`` payload the batch reads."""

    period: Any = None
    app_code: Any = None
    driver: Any = None
    quantity: Any = None


class LineMapper:
    """Turns one raw cost line into a fact line (or raises :class:`LineRejected`), noting what it decided.

    Codes, days and currencies repeat across millions of lines: each distinct raw value is resolved once and
    memoised (the hot path of the batch), and so is each distinct value's COPY text.

    What is worth a counter (an unallocated line's cause, a defaulted service category, unparsable tags) is
    appended to ``notes``, not counted here: only the reader knows, once the line is converted, whether its
    month is one the run rebuilds. It counts the notes of such a line and clears them after every line.
    """

    def __init__(self, catalogue: Catalogue, aliases: Aliases) -> None:
        self.catalogue = catalogue
        self.aliases = aliases
        self.tag_keys = aliases.by_kind.get("tag_key", {})
        self.notes: list[str] = []
        self._applications: dict[object, tuple[str, str | None]] = {}
        self._environments: dict[object, str] = {}
        self._categories: dict[object, tuple[str, bool]] = {}
        self._providers: dict[tuple[object, str], str] = {}
        self._days: dict[object, date] = {}
        self._currencies: dict[object, str] = {}
        self._copy_texts: dict[object, str] = {}

    def application(self, value: object) -> str:
        """The CMDB code a tag or export value designates, or UNALLOCATED (its cause noted)."""
        found = self._applications.get(value) if _memoisable(value) else None
        if found is None:
            found = self._resolve_application(value)
            if _memoisable(value):
                self._applications[value] = found
        code, cause = found
        if cause is not None:
            self.notes.append(cause)
        return code

    def _resolve_application(self, value: object) -> tuple[str, str | None]:
        text = _text(value)
        if text is None:
            return UNALLOCATED, "unallocated_missing_application"
        code = self.catalogue.code_of(self.aliases.resolve("application", text))
        if code is None:
            return UNALLOCATED, "unallocated_unknown_application"
        return code, None

    def environment(self, value: object) -> str:
        """A lower-case environment code (aliases applied), or ``unknown``."""
        code = self._environments.get(value) if _memoisable(value) else None
        if code is None:
            text = _text(value)
            code = UNKNOWN_ENVIRONMENT if text is None else self.aliases.resolve("environment", text.lower()).lower()
            if _memoisable(value):
                self._environments[value] = code
        return code

    def category(self, value: object) -> str:
        """One of the 19 FOCUS service categories; anything else is ``Other`` (noted)."""
        found = self._categories.get(value) if _memoisable(value) else None
        if found is None:
            text = _text(value)
            name = _CATEGORIES_UPPER.get(self.aliases.resolve("service_category", text).upper()) if text else None
            found = (name or "Other", name is None)
            if _memoisable(value):
                self._categories[value] = found
        if found[1]:
            self.notes.append("service_category_defaulted")
        return found[0]

    def provider(self, value: object, fallback: str) -> str:
        """A lower-case provider code (aliases applied)."""
        memoisable = _memoisable(value)
        key = (value, fallback)
        code = self._providers.get(key) if memoisable else None
        if code is None:
            text = _text(value) or fallback
            code = self.aliases.resolve("provider", text.lower()).lower()
            if memoisable:
                self._providers[key] = code
        return code

    def day(self, value: object, name: str) -> date:
        """:func:`parse_day`, memoised."""
        day = self._days.get(value) if isinstance(value, str) else None
        if day is None:
            day = parse_day(value, name)
            self._days[value] = day
        return day

    def currency(self, value: object, day: date) -> str:
        """:func:`parse_currency`, memoised; a rejection carries the line's month."""
        code = self._currencies.get(value) if isinstance(value, str) else None
        if code is None:
            code = self._currencies[value] = _currency_or_reject(value, day)
        return code

    def tags(self, value: object) -> dict[str, Any]:
        """FOCUS ``Tags`` with keys trimmed, lower-cased and de-aliased; a canonical key beats its alias."""
        if isinstance(value, str):
            if value in ("", "NULL"):
                return {}
            try:
                value = json.loads(value)
            except ValueError:
                self.notes.append("unparsable_tags")
                return {}
        if not isinstance(value, dict):
            return {}
        normalised: dict[str, Any] = {}
        for raw_key, tag_value in value.items():
            key = str(raw_key).strip().lower()
            canonical = self.tag_keys.get(key, key)
            if canonical not in normalised or key == canonical:
                normalised[canonical] = tag_value
        return normalised

    def cmdb_cost(self, line: CmdbCostFields, source: str) -> Line:
        """A ``cmdb/cost`` line."""
        day = self.day(line.date, "date")
        currency = self.currency(line.currency, day)
        billed = _amount_or_reject(line.billed_cost, "billed_cost", day, currency)
        effective = (
            billed
            if line.effective_cost is None
            else _amount_or_reject(line.effective_cost, "effective_cost", day, currency)
        )
        return (
            day,
            self.application(line.app_code),
            self.environment(line.environment),
            self.category(line.service_category),
            _text(line.service_name),
            self.provider(line.provider, source),
            parse_quantity(line.quantity),
            _text(line.unit),
            billed,
            effective,
            currency,
            source,
        )

    def focus(self, line: FocusFields, source: str) -> Line:
        """A FOCUS row: charge-period day, BilledCost and EffectiveCost, tags ``application``/``environment``."""
        day = self.day(line.charge_period_start, "ChargePeriodStart")
        currency = self.currency(line.billing_currency, day)
        billed = _amount_or_reject(line.billed_cost, "BilledCost", day, currency)
        effective = _amount_or_reject(line.effective_cost, "EffectiveCost", day, currency)
        tags = self.tags(line.tags)
        quantity = parse_quantity(line.consumed_quantity)
        unit = _text(line.consumed_unit)
        if quantity is None:
            quantity, unit = parse_quantity(line.pricing_quantity), _text(line.pricing_unit)
        return (
            day,
            self.application(tags.get(_TAG_APPLICATION)),
            self.environment(tags.get(_TAG_ENVIRONMENT)),
            self.category(line.service_category),
            _text(line.service_name),
            self.provider(line.provider_name, source),
            quantity,
            unit,
            billed,
            effective,
            currency,
            source,
        )

    def copy_text(self, line: Line) -> str:
        """``line`` as one line of COPY text in ``LINE_COLUMNS`` order (cheaper than binary Decimal encoding).

        Amounts keep their exact digits and scale: ``str`` of a Decimal may use an exponent (``1E-7``,
        ``1.50E+3``), which PostgreSQL's numeric input reads to the same value and scale as the plain
        notation, at a third of the cost of ``format(amount, "f")`` (``!s``: a plain ``{amount}`` would go
        through ``Decimal.__format__``, as slow). Text values are escaped once each.
        """
        texts = self._copy_texts
        day, application, environment, category, name, provider, quantity, unit, billed, effective, currency, source = (
            line
        )
        try:
            return (
                f"{texts[day]}\t{texts[application]}\t{texts[environment]}\t{texts[category]}\t{texts[name]}\t"
                f"{texts[provider]}\t{_NULL_TEXT if quantity is None else quantity!s}\t{texts[unit]}\t"
                f"{billed!s}\t{effective!s}\t{texts[currency]}\t{texts[source]}\n"
            )
        except KeyError:
            for value in (day, application, environment, category, name, provider, unit, currency, source):
                if value not in texts:
                    texts[value] = _copy_value(value)
            return self.copy_text(line)


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect the youngest generation 70x less often while lines are read (restored after).

    Reading allocates a few short-lived containers per line (tuples, FOCUS ``Tags`` dicts); at the default
    threshold (700) the collector ran every few hundred lines: 1-1.5 s of the medium demo world's ~10 s of
    client CPU in the read step. Nothing is kept out of collection, only collected in larger batches.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def _memoisable(value: object) -> bool:
    return value is None or isinstance(value, str)


def _currency_or_reject(value: object, day: date) -> str:
    try:
        return parse_currency(value)
    except LineRejected as error:
        raise LineRejected(error.code, error.reason, period=month_of(day)) from None


def _amount_or_reject(value: object, name: str, day: date, currency: str) -> Decimal:
    try:
        return parse_amount(value, name)
    except LineRejected as error:
        raise LineRejected(error.code, error.reason, period=month_of(day), currency=currency) from None


# ------------------------------------------------------------------------------------------- the month


@dataclass
class MonthControl:
    """Control totals of one month and currency, summed in Python while reading."""

    source_billed: Decimal = Decimal(0)
    source_effective: Decimal = Decimal(0)
    pool_amount: Decimal = Decimal(0)
    lines_read: int = 0
    lines_mapped: int = 0
    lines_unallocated: int = 0
    lines_rejected: int = 0


# The columns of a ``batch_rejection`` row as the batch writes them (and of a month's staged rejections).
REJECTION_COLUMNS: tuple[str, ...] = (
    "run_id", "period_month", "source", "kind", "content_hash", "reason_code", "reason", "payload",
)  # fmt: skip
_REJECTION_DDL = """
    run_id uuid NOT NULL, period_month date, source text NOT NULL, kind text NOT NULL, content_hash text,
    reason_code text NOT NULL, reason text NOT NULL, payload jsonb NOT NULL
"""
# The kinds of raw documents a month's lines come from: their rejections are replaced month by month (and the
# undated ones by a run of every month). ``cmdb/application`` and ``finance/budget`` rejections have no month:
# the hierarchy and the budgets are replaced whole by every run, and their rejections with them.
LINE_KINDS: tuple[str, ...] = ("cost", "focus", "shared_cost", "usage_driver")


@dataclass
class RejectionStage:
    """The rejected documents of one month (or, ``month`` None, of no month) waiting for that month's swap.

    A few stay in ``rows``; past ``COPY_CHUNK`` they go to an unlogged table (``table``), so a raw zone full of
    bad lines does not have to fit in memory. The swap moves both into ``batch_rejection`` in its transaction.
    """

    month: date | None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    table: str = ""


@dataclass
class MonthInputs:
    """Everything read for one month."""

    month: date
    controls: dict[str, MonthControl] = field(default_factory=lambda: defaultdict(MonthControl))
    pools: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    drivers: dict[str, dict[str, Decimal]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Decimal)))
    rules: dict[tuple[str, str], Rule] = field(default_factory=dict)
    buffer: list[str] = field(default_factory=list)  # mapped lines as COPY text, not yet copied
    lines_table: str = ""
    rejections: RejectionStage = field(init=False)
    written: int = 0  # fact rows built, counted in the report once the month is swapped in

    def __post_init__(self) -> None:
        self.rejections = RejectionStage(self.month)


def _tag(month: date | None) -> str:
    """A month as used in table names, ``YYYYMM``; ``undated`` for the lines of no month."""
    return "undated" if month is None else f"{month:%Y%m}"


def _label(month: date | None) -> str:
    """A month as used in lock keys and messages, ``YYYY-MM``; ``undated`` for the lines of no month."""
    return "undated" if month is None else f"{month:%Y-%m}"


def _stage_name(kind: str, month: date | None, run_id: uuid.UUID) -> str:
    return f"finops_stage_{kind}_{_tag(month)}_{run_id.hex[:12]}"


class MonthLocks:
    """Session advisory locks, one per month, on a dedicated connection held for the whole run.

    The lines of no month (no parseable date) have a lock of their own, ``undated``: a run of every month
    replaces their rejections.
    """

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self.held: set[date | None] = set()

    async def take(self, month: date | None) -> None:
        """Lock ``month`` or raise ConflictError when another run is rebuilding it."""
        if month in self.held:
            return
        key = advisory_lock_key(f"finops.month.{_label(month)}")
        if not await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", key):
            raise ConflictError(f"month {_label(month)} is being rebuilt by another run; this run was not applied")
        self.held.add(month)


# --------------------------------------------------------------------------------------------- pipeline


class MonthRebuild:
    """One run of the pipeline over a set of months (see the module docstring for the steps)."""

    def __init__(
        self,
        *,
        run_id: uuid.UUID,
        work: asyncpg.Connection,
        locks: MonthLocks,
        hooks: RunHooks,
        periods: Sequence[date] | None,
        report: RebuildReport | None = None,
        allow_empty: bool = False,
    ) -> None:
        self.run_id = run_id
        self.work = work
        self.locks = locks
        self.hooks = hooks
        self.wanted = {month_of(period) for period in periods} if periods else None
        # A requested month is rebuilt even when the raw zone holds nothing for it any more; it becomes empty
        # only with ``allow_empty`` if the mart holds data for it (see ``refuse_to_empty``).
        self.months: dict[date, MonthInputs] = {month: MonthInputs(month) for month in sorted(self.wanted or ())}
        self.allow_empty = allow_empty
        self.report = report if report is not None else RebuildReport()
        # Rejected cmdb/application versions, replaced with the hierarchy; rejected lines of no month.
        self.hierarchy_rejections: list[tuple[Any, ...]] = []
        self.undated = RejectionStage(None)
        self.environments: set[str] = set()  # of the lines mapped into the months rebuilt
        self._claimed: set[date | None] = set()  # months locked, their killed runs' leftovers dropped
        self.catalogue = Catalogue(())
        self.aliases = Aliases(())
        self.rules: list[Rule] = []
        self.pool_names: dict[str, str] = {}
        self.pool_categories: dict[str, str] = {}
        self._copying: asyncio.Task[None] | None = None  # the COPY of mapped lines in flight (see _flush_later)

    # ---- reference data

    async def load_reference(self, reader: RawReader) -> None:
        """Aliases, rules and the CMDB hierarchy (replaced in one transaction)."""
        rows = await self.work.fetch("SELECT kind, alias, canonical FROM mapping_alias")
        self.aliases = Aliases((row["kind"], row["alias"], row["canonical"]) for row in rows)
        targets: dict[tuple[str, int], list[tuple[str, Decimal | None]]] = defaultdict(list)
        for row in await self.work.fetch(
            "SELECT rule_id, version, application_code, percentage FROM allocation_rule_target"
            " ORDER BY rule_id, version, application_code"
        ):
            targets[(row["rule_id"], row["version"])].append((row["application_code"], row["percentage"]))
        self.rules = [
            Rule(**dict(row.items()), targets=tuple(targets.get((row["rule_id"], row["version"]), ())))
            for row in await self.work.fetch(
                "SELECT rule_id, version, pool_code, method, driver, valid_from FROM allocation_rule"
            )
        ]
        for row in await self.work.fetch("SELECT pool_code, name, service_category FROM dim_cost_pool"):
            self.pool_names[row["pool_code"]] = row["name"]
            self.pool_categories[row["pool_code"]] = row["service_category"]
        versions = []
        async for document in reader(source="cmdb", kind="application"):
            try:
                versions.append(parse_application(document.payload))
            except LineRejected as error:
                self._count_rejection(error)
                self.hierarchy_rejections.append(self._rejection_row(document, error))
        self.catalogue = Catalogue(versions)
        self.report.counters["applications"] = len(self.catalogue.versions)
        await self._write_hierarchy()

    async def _write_hierarchy(self) -> None:
        """Replace the hierarchy, and the rejected CMDB versions with it (every run rebuilds it whole)."""
        versions = [version for found in self.catalogue.versions.values() for version in found]
        async with self.work.transaction():
            await self.work.execute("DELETE FROM batch_rejection WHERE source = 'cmdb' AND kind = 'application'")
            if self.hierarchy_rejections:
                await self.work.copy_records_to_table(
                    "batch_rejection", records=self.hierarchy_rejections, columns=REJECTION_COLUMNS
                )
            await self.work.execute("DELETE FROM dim_application WHERE application_code <> $1", UNALLOCATED)
            await self.work.copy_records_to_table(
                "dim_application",
                records=[astuple(version) for version in versions if version.code != UNALLOCATED],
                columns=_APPLICATION_COLUMNS,
            )
            levels = (
                ("dim_product", "product_code", lambda v: (v.product_code, v.product_name, v.family_code)),
                ("dim_family", "family_code", lambda v: (v.family_code, v.family_name, v.domain_code)),
                ("dim_domain", "domain_code", lambda v: (v.domain_code, v.domain_name)),
            )
            for table, code_column, attributes in levels:
                await self.work.execute(f"DELETE FROM {table} WHERE {code_column} <> $1", UNALLOCATED)
                records = _derived_versions(versions, attributes)
                columns = [code_column, "valid_from", "valid_to", "name"] + (
                    [] if table == "dim_domain" else ["domain_code" if table == "dim_family" else "family_code"]
                )
                await self.work.copy_records_to_table(table, records=records, columns=columns)

    # ---- reading
    #
    # Every counter and every stored rejection of a run concerns the months it rebuilds, as the month's control
    # totals do: a line (or pool, or driver) of another month is only counted as skipped, whether it maps or
    # not, so a one-month run reports that month and reruns store no rejection twice. A line with no parseable
    # date belongs to no month: it is counted, and its rejection stored, only by a run of every month (no
    # ``--period``, as the nightly run); a run of some months counts it in ``skipped_undated``, no more.

    def _month(self, month: date) -> MonthInputs | None:
        if self.wanted is not None and month not in self.wanted:
            return None
        inputs = self.months.get(month)
        if inputs is None:
            inputs = self.months[month] = MonthInputs(month)
        return inputs

    def _rejection_stage(self, error: LineRejected) -> RejectionStage | None:
        """Where a rejected line is kept, or None (counted as skipped) when it concerns no month this run rebuilds."""
        if error.period is None:
            if self.wanted is None:
                return self.undated
            self.report.skipped_undated += 1
            return None
        inputs = self._month(error.period)
        if inputs is None:
            self.report.skipped += 1
            return None
        inputs.controls[error.currency or NO_CURRENCY].lines_rejected += 1
        return inputs.rejections

    def _count_rejection(self, error: LineRejected) -> None:
        self.report.rejected += 1
        reasons = self.report.counters.setdefault("rejected_by_reason", {})
        reasons[error.code] = reasons.get(error.code, 0) + 1

    def _rejection_row(self, document: RawLine, error: LineRejected) -> tuple[Any, ...]:
        """A ``batch_rejection`` row in :data:`REJECTION_COLUMNS` order."""
        return (
            self.run_id,
            error.period,
            document.source,
            document.kind,
            document.content_hash,
            error.code,
            error.reason,
            json.dumps(document.payload, default=str),
        )

    async def read_finance(self, reader: RawReader) -> None:
        """Shared-cost pools and usage drivers (small: kept in memory)."""
        with _fewer_collections():
            await self._apply(reader.pages(source="finance", kind="shared_cost", shape=SharedCostFields), self._pool)
            await self._apply(
                reader.pages(source="finance", kind="usage_driver", shape=UsageDriverFields), self._driver
            )

    async def _apply(self, pages: AsyncIterator[RawPage[F]], apply: Callable[[F], None]) -> None:
        async for page in pages:
            rejected: list[tuple[int, LineRejected, RejectionStage]] = []
            for index, item in enumerate(page.fields):
                try:
                    apply(item)
                except LineRejected as error:
                    stage = self._rejection_stage(error)
                    if stage is not None:
                        self._count_rejection(error)
                        rejected.append((index, error, stage))
            if rejected:
                await self._keep_rejections(page, rejected)

    async def _keep_rejections(
        self, page: RawPage[F], rejected: list[tuple[int, LineRejected, RejectionStage]]
    ) -> None:
        """Keep a page's rejected lines with their whole documents (fetched together, in page order)."""
        documents = await page.documents([index for index, _, _ in rejected])
        full: list[RejectionStage] = []
        for document, (_, error, stage) in zip(documents, rejected, strict=True):
            stage.rows.append(self._rejection_row(document, error))
            if len(stage.rows) == COPY_CHUNK:
                full.append(stage)
        if full:
            await self._copied()  # the work connection runs one statement at a time
            for stage in full:
                await self._stage_rejections(stage)

    async def _claim(self, month: date | None) -> None:
        """Lock the month and drop what a killed run left for it, once, before this run stages anything for it."""
        if month in self._claimed:
            return
        await self.locks.take(month)
        await self._drop_leftovers(month)
        self._claimed.add(month)

    async def _stage_rejections(self, stage: RejectionStage) -> None:
        """Move a month's rejected documents from memory to its unlogged table (created on first use)."""
        if not stage.table:
            await self._claim(stage.month)
            stage.table = _stage_name("rej", stage.month, self.run_id)
            await self.work.execute(f"CREATE UNLOGGED TABLE {stage.table} ({_REJECTION_DDL})")
        await self.work.copy_records_to_table(stage.table, records=stage.rows, columns=REJECTION_COLUMNS)
        stage.rows = []

    def _pool(self, fields: SharedCostFields) -> None:
        month = parse_period(fields.period)
        pool = _text(fields.pool)
        if pool is None:
            raise LineRejected("missing_pool", "pool is missing", period=month)
        currency = _currency_or_reject(fields.currency, month)
        amount = _amount_or_reject(fields.amount, "amount", month, currency)
        try:
            whole_quanta(amount, CENT)
        except AllocationError:
            raise LineRejected(
                "fractional_cents",
                f"pool amount {amount} is not a whole number of cents",
                period=month,
                currency=currency,
            ) from None
        self.pool_names.setdefault(pool, _text(fields.pool_name) or pool)
        inputs = self._month(month)
        if inputs is None:
            self.report.skipped += 1
            return
        inputs.pools[(pool, currency)] = EXACT.add(inputs.pools[(pool, currency)], amount)
        control = inputs.controls[currency]
        control.pool_amount = EXACT.add(control.pool_amount, amount)

    def _driver(self, fields: UsageDriverFields) -> None:
        month = parse_period(fields.period)
        driver = _text(fields.driver)
        if driver is None:
            raise LineRejected("missing_driver", "driver is missing", period=month)
        quantity = parse_quantity(fields.quantity)
        if quantity is None:
            raise LineRejected("invalid_quantity", f"unparsable quantity {fields.quantity!r}", period=month)
        if quantity < 0:
            raise LineRejected("negative_quantity", f"negative usage quantity {quantity}", period=month)
        app = _text(fields.app_code)
        code = self.catalogue.code_of(self.aliases.resolve("application", app)) if app else None
        if code is None:
            raise LineRejected("unknown_application", f"unknown application {app!r}", period=month)
        inputs = self._month(month)
        if inputs is None:
            self.report.skipped += 1
            return
        quantities = inputs.drivers[driver]
        quantities[code] = EXACT.add(quantities[code], quantity)

    async def read_costs(self, reader: RawReader) -> None:
        """Every cost line: the CMDB export and the FOCUS rows of every provider source."""
        mapper = LineMapper(self.catalogue, self.aliases)
        with _fewer_collections():
            try:
                await self._read_lines(
                    reader.pages(source="cmdb", kind="cost", shape=CmdbCostFields), mapper.cmdb_cost, mapper
                )
                await self._read_lines(reader.pages(source=None, kind="focus", shape=FocusFields), mapper.focus, mapper)
                for inputs in self.months.values():
                    await self._flush_later(inputs)
                await self._copied()
            finally:
                if self._copying is not None:  # a failed read: the COPY in flight goes with the run
                    self._copying.cancel()
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await self._copying
                    self._copying = None
        self.report.counters["environments"] = sorted(self.environments)

    async def _read_lines(
        self, pages: AsyncIterator[RawPage[F]], convert: Callable[[F, str], Line], mapper: LineMapper
    ) -> None:
        """Map every line of ``pages``: sum the month's controls, buffer its COPY text, or keep the rejection.

        Only the lines of the months this run rebuilds are counted (see "reading" above); the others cost one
        dictionary look-up each.
        """
        report = self.report
        counters = report.counters
        notes = mapper.notes
        environments = self.environments
        by_day: dict[date, MonthInputs | None] = {}  # the month a day's lines go to (None: not rebuilt)
        async for page in pages:
            source = page.source
            rejected: list[tuple[int, LineRejected, RejectionStage]] = []
            skipped = report.skipped + report.skipped_undated
            for index, item in enumerate(page.fields):
                try:
                    line = convert(item, source)
                except LineRejected as error:
                    notes.clear()
                    stage = self._rejection_stage(error)
                    if stage is not None:
                        self._count_rejection(error)
                        rejected.append((index, error, stage))
                    continue
                day = line[0]
                try:
                    inputs = by_day[day]
                except KeyError:
                    inputs = by_day[day] = self._month(month_of(day))
                if notes:
                    if inputs is not None:
                        for note in notes:
                            counters[note] = counters.get(note, 0) + 1
                    notes.clear()
                if inputs is None:
                    report.skipped += 1
                    continue
                control = inputs.controls[line[10]]
                control.lines_read += 1
                # Exact, as PostgreSQL's sums are: the default context would round a total past 28 digits.
                control.source_billed = EXACT.add(control.source_billed, line[8])
                control.source_effective = EXACT.add(control.source_effective, line[9])
                if line[1] == UNALLOCATED:
                    control.lines_unallocated += 1
                    report.unallocated += 1
                else:
                    control.lines_mapped += 1
                    report.mapped += 1
                environments.add(line[2])
                buffer = inputs.buffer
                buffer.append(mapper.copy_text(line))
                if len(buffer) >= COPY_CHUNK:
                    await self._flush_later(inputs)
            if rejected:
                await self._keep_rejections(page, rejected)
            report.read += len(page.fields) - (report.skipped + report.skipped_undated - skipped)
            self.hooks.progress.advance(len(page.fields))

    async def _flush_later(self, inputs: MonthInputs) -> None:
        """Start copying the month's buffered lines and return: the server ingests them while mapping goes on.

        One COPY at a time (the work connection runs one statement at a time): this waits for the previous
        one first. Nothing else may use the work connection before :meth:`_copied`.
        """
        await self._copied()
        lines, inputs.buffer = inputs.buffer, []
        self._copying = asyncio.create_task(self._copy_lines(inputs, lines))

    async def _copied(self) -> None:
        """Wait for the COPY in flight, if any (raising its error)."""
        if self._copying is not None:
            copying, self._copying = self._copying, None
            await copying

    async def _copy_lines(self, inputs: MonthInputs, lines: list[str]) -> None:
        if not inputs.lines_table:
            await self._claim(inputs.month)
            # Not TEMPORARY: the month may be built on another connection (see _run_steps). UNLOGGED as a
            # temporary table is: a crash loses nothing a rerun would not rebuild.
            inputs.lines_table = _stage_name("lines", inputs.month, self.run_id)
            await self.work.execute(f"CREATE UNLOGGED TABLE {inputs.lines_table} ({_LINE_DDL})")
        if lines:
            await self.work.copy_to_table(
                inputs.lines_table, source=_copy_chunks(lines), columns=LINE_COLUMNS, format="text"
            )

    # ---- building a month

    async def build(
        self, inputs: MonthInputs, connection: asyncpg.Connection
    ) -> tuple[str, str, list[tuple[Any, ...]]]:
        """Fill the month's staging tables on ``connection``; return their names and the month's hierarchy rows.

        The month's lines must all be copied (:meth:`read_costs` copies every month's before it returns).
        """
        if not inputs.lines_table or inputs.buffer:
            raise RuntimeError(f"month {inputs.month:%Y-%m} is built before its lines are copied")
        facts, coefficients = (
            _stage_name("fc", inputs.month, self.run_id),
            _stage_name("coef", inputs.month, self.run_id),
        )
        await connection.execute(
            f"CREATE TABLE {facts} (LIKE fact_consumption INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        await connection.execute(
            f"CREATE TABLE {coefficients} (LIKE fact_coefficient INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        # The allocation keys come from the lines (the sums the direct rows will hold), so the pools can be split
        # in Python while PostgreSQL groups the lines into the direct rows.
        direct_cost: dict[str, dict[str, Decimal]] = defaultdict(dict)
        codes: set[str] = set()
        for row in await connection.fetch(
            f"SELECT currency, application_code, sum(billed_cost) AS cost FROM {inputs.lines_table} GROUP BY 1, 2"
        ):
            codes.add(row["application_code"])
            if row["application_code"] != UNALLOCATED:
                direct_cost[row["currency"]][row["application_code"]] = row["cost"]
        valid = self.catalogue.valid_in(inputs.month)
        grain = (
            "day, application_code, environment_code, service_category, service_name, provider, unit, currency, source"
        )

        def split_pools() -> AllocatedRows:
            # Tens of thousands of short-lived shares: collected in larger batches (~0.8 s of collections in the
            # large world's build otherwise).
            with _fewer_collections():
                return self._allocate(inputs, direct_cost, valid)

        async with connection.transaction():
            # Grouping on the sorted lines leaves them in the order row_number needs (one sort, in memory), where
            # the default plan hashes them in spilled batches, then sorts the groups again.
            await connection.execute(f"SET LOCAL work_mem = '{BUILD_WORK_MEM}'")
            await connection.execute("SET LOCAL enable_hashagg = off")
            status, allocated = await _overlapped(
                connection,
                f"""
                INSERT INTO {facts} (period_month, line_no, period, granularity, application_code, environment_code,
                    service_category, service_name, provider, cost_type, quantity, unit, billed_cost, effective_cost,
                    currency, source, run_id)
                SELECT DATE '{inputs.month}', row_number() OVER (ORDER BY {grain}), day, 'day', application_code,
                    environment_code, service_category, service_name, provider, 'direct', sum(quantity), unit,
                    sum(billed_cost), sum(effective_cost), currency, source, '{self.run_id}'::uuid
                FROM {inputs.lines_table} GROUP BY {grain}
                """,
                split_pools,
            )
        direct_rows = int(status.rsplit(" ", 1)[-1])
        await connection.execute(f"DROP TABLE {inputs.lines_table}")
        # The indirect rows are numbered after the direct ones (line_no is their last COPY column).
        indirect = [f"{line}{number}\n" for number, line in enumerate(allocated.indirect, start=direct_rows + 1)]
        await connection.copy_to_table(facts, source=_copy_chunks(indirect), columns=INDIRECT_COLUMNS, format="text")
        await connection.copy_to_table(
            coefficients, source=_copy_chunks(allocated.coefficients), columns=COEFFICIENT_COLUMNS, format="text"
        )
        # Fresh tables have no statistics: without them the views' refresh plans joins on wild guesses.
        _, hierarchy = await _overlapped(
            connection,
            f"ANALYZE {facts}",
            lambda: self._hierarchy_rows(inputs.month, codes | allocated.targets, valid),
        )
        upper = next_month(inputs.month)
        for table, key in ((facts, "period_month, line_no"), (coefficients, _COEFFICIENT_KEY)):
            # The CHECK lets ATTACH PARTITION skip its validation scan; the key becomes the partition's PK.
            await connection.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_bounds"
                f" CHECK (period_month >= DATE '{inputs.month}' AND period_month < DATE '{upper}'),"
                f" ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})"
            )
        inputs.written = direct_rows + len(indirect)
        return facts, coefficients, hierarchy

    def _allocate(
        self,
        inputs: MonthInputs,
        direct_cost: Mapping[str, Mapping[str, Decimal]],
        valid: Sequence[str],
    ) -> AllocatedRows:
        """Split every pool of the month over the ``valid`` applications (or the rule's targets); return the
        indirect fact rows (without their line number) and the coefficient rows as COPY text."""
        rows = AllocatedRows()
        counters = self.report.counters
        escaped: dict[str, str] = {}  # each target code escaped once, not once per pool
        for (pool_code, currency), amount in sorted(inputs.pools.items()):
            # No rule at all (even the fallback was never created): the whole pool is shown as unallocated.
            rule = select_rule(self.rules, pool_code, inputs.month) or Rule(
                "none", 0, None, "even", None, inputs.month, ()
            )
            try:
                weights = self._weights(rule, inputs, direct_cost.get(currency, {}), valid) if rule.version else {}
                allocation = allocate(amount, weights)
            except AllocationError as error:
                raise AllocationError(
                    f"pool {pool_code} {inputs.month:%Y-%m} with rule {rule.rule_id}@{rule.version}: {error.detail}"
                ) from error
            counters["pools"] = counters.get("pools", 0) + 1
            if allocation.unallocated:
                counters["pools_unallocated"] = counters.get("pools_unallocated", 0) + 1
            digest = inputs_hash(pool_code=pool_code, pool=amount, method=rule.method, weights=weights)
            inputs.rules[(pool_code, currency)] = rule
            # What every share of the pool has in common, in the order of the *_POOL_COLUMNS.
            indirect = _copy_prefix(
                (inputs.month, inputs.month, "month", SHARED_ENVIRONMENT, self.pool_categories.get(pool_code, "Other"),
                 self.pool_names.get(pool_code, pool_code), INDIRECT_PROVIDER, "indirect", currency, INDIRECT_SOURCE,
                 rule.rule_id, rule.version, pool_code, self.run_id)
            )  # fmt: skip
            coefficient = _copy_prefix(
                (inputs.month, pool_code, currency, rule.rule_id, rule.version,
                 "unallocated" if allocation.unallocated else rule.method, rule.driver, amount, digest, self.run_id)
            )  # fmt: skip
            for target, weight, share_ratio, share_amount, adjustment in _kept_shares(allocation):
                # The *_SHARE_COLUMNS; Decimals in plain notation keep their scale, as the binary COPY did.
                code = escaped.get(target)
                if code is None:
                    code = escaped[target] = _copy_value(target)
                allocated = format(share_amount, "f")
                ratio = format(share_ratio, "f")
                rows.indirect.append(f"{indirect}{code}\t{allocated}\t{allocated}\t{ratio}\t")
                rows.coefficients.append(
                    f"{coefficient}{code}\t{format(weight, 'f')}\t{ratio}\t{allocated}\t{format(adjustment, 'f')}\n"
                )
                rows.targets.add(target)
        return rows

    def _weights(
        self, rule: Rule, inputs: MonthInputs, direct_cost: Mapping[str, Decimal], valid: Sequence[str]
    ) -> dict[str, Decimal]:
        """The allocation key of each target under ``rule`` for this month."""
        if rule.method == "fixed":
            return fixed_weights({code: percentage or Decimal(0) for code, percentage in rule.targets})
        if rule.targets:
            targets = [code for code, _ in rule.targets]
        elif rule.method == "direct_cost":
            targets = sorted(set(valid) | set(direct_cost))
        else:
            targets = list(valid)
        targets = [code for code in targets if code != UNALLOCATED]
        if rule.method == "even":
            return even_weights(targets)
        if rule.method == "usage":
            quantities = inputs.drivers.get(rule.driver or "", {})
            return {code: quantities.get(code, Decimal(0)) for code in targets}
        weights = {}
        for code in targets:
            cost = direct_cost.get(code, Decimal(0))
            if cost < 0:
                # A net credit cannot carry a share of a pool: weight 0 rather than a rejected negative key.
                self.report.counters["negative_direct_cost_weights_zeroed"] = (
                    self.report.counters.get("negative_direct_cost_weights_zeroed", 0) + 1
                )
                cost = Decimal(0)
            weights[code] = cost
        return weights

    def _hierarchy_rows(self, month: date, codes: Iterable[str], valid: Iterable[str]) -> list[tuple[Any, ...]]:
        rows = []
        for code in sorted(set(codes) | set(valid) | {UNALLOCATED}):
            version = self.catalogue.in_month(code, month)
            if version is None:  # a rule target unknown to the CMDB: shown under the UNALLOCATED hierarchy
                version = AppVersion(code, month, None, code, *UNALLOCATED_VERSION_HIERARCHY, None, None)
            rows.append(
                (
                    month,
                    code,
                    version.name,
                    version.product_code,
                    version.product_name,
                    version.family_code,
                    version.family_name,
                    version.domain_code,
                    version.domain_name,
                    version.owner_group,
                    self.run_id,
                )
            )
        return rows

    async def drop_staging(self) -> None:
        """Drop the staging tables of this run that were not swapped in."""
        rows = await self.work.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE $1",
            f"finops\\_stage\\_%\\_{self.run_id.hex[:12]}",
        )
        for row in rows:
            await self.work.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}"')

    async def _drop_leftovers(self, month: date | None) -> None:
        """Drop the line, rejection and staging tables a killed run left for this month (we hold the month's lock,
        so none is live; this run creates its own after this)."""
        rows = await self.work.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE ANY($1)",
            [f"finops\\_stage\\_{kind}\\_{_tag(month)}\\_%" for kind in ("fc", "coef", "lines", "rej")],
        )
        for row in rows:
            await self.work.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}"')

    # ---- swapping a month in

    async def swap(
        self,
        inputs: MonthInputs,
        connection: asyncpg.Connection,
        facts: str,
        coefficients: str,
        hierarchy: list[tuple[Any, ...]],
    ) -> None:
        """Replace the month in ONE transaction on ``connection``, then check its invariants in SQL before committing.

        Swaps of two months on two connections take the same locks in the same order (the small tables' rows of
        their own month, then each parent for the DETACH): the second waits for the first's commit.
        """
        month = inputs.month
        rules = inputs.rules
        async with connection.transaction():
            await connection.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
            await connection.execute("DELETE FROM dim_application_month WHERE period = $1", month)
            await connection.copy_records_to_table(
                "dim_application_month", records=hierarchy, columns=_HIERARCHY_COLUMNS
            )
            await connection.execute("DELETE FROM fact_pool WHERE period_month = $1", month)
            await connection.copy_records_to_table(
                "fact_pool",
                records=[
                    (
                        month,
                        pool,
                        currency,
                        amount,
                        rules[(pool, currency)].rule_id,
                        rules[(pool, currency)].version,
                        self.run_id,
                    )
                    for (pool, currency), amount in sorted(inputs.pools.items())
                ],
                columns=[
                    "period_month",
                    "pool_code",
                    "currency",
                    "amount",
                    "allocation_rule_id",
                    "allocation_rule_version",
                    "run_id",
                ],
            )
            await connection.execute("DELETE FROM fact_period_control WHERE period_month = $1", month)
            await connection.copy_records_to_table(
                "fact_period_control",
                records=[
                    (
                        month,
                        currency,
                        c.source_billed,
                        c.source_effective,
                        c.pool_amount,
                        c.lines_read,
                        c.lines_mapped,
                        c.lines_unallocated,
                        c.lines_rejected,
                        self.run_id,
                    )
                    for currency, c in sorted(inputs.controls.items())
                ],
                columns=[
                    "period_month",
                    "currency",
                    "source_billed",
                    "source_effective",
                    "pool_amount",
                    "lines_read",
                    "lines_mapped",
                    "lines_unallocated",
                    "lines_rejected",
                    "run_id",
                ],
            )
            for parent, stage in (("fact_consumption", facts), ("fact_coefficient", coefficients)):
                partition = f"{parent}_p{month:%Y%m}"
                if await connection.fetchval("SELECT to_regclass($1)", partition) is not None:
                    await connection.execute(f"ALTER TABLE {parent} DETACH PARTITION {partition}")
                    await connection.execute(f"DROP TABLE {partition}")
                await connection.execute(f"ALTER TABLE {stage} RENAME TO {partition}")
                await connection.execute(f"ALTER INDEX {stage}_pkey RENAME TO {partition}_pkey")
                await connection.execute(
                    f"ALTER TABLE {partition} RENAME CONSTRAINT {stage}_bounds TO {partition}_bounds"
                )
                await connection.execute(
                    f"ALTER TABLE {parent} ATTACH PARTITION {partition}"
                    f" FOR VALUES FROM ('{month}') TO ('{next_month(month)}')"
                )
            await self._swap_rejections(connection, inputs.rejections)
            await check_month(connection, month)

    async def _swap_rejections(self, connection: asyncpg.Connection, stage: RejectionStage) -> None:
        """Replace the stored rejections of ``stage``'s month (or of no month) with this run's, in the caller's
        transaction: ``batch_rejection`` explains the months the mart holds, each as its last swap left it."""
        if stage.month is None:
            await connection.execute(
                "DELETE FROM batch_rejection WHERE period_month IS NULL AND kind = ANY($1)", list(LINE_KINDS)
            )
        else:
            await connection.execute("DELETE FROM batch_rejection WHERE period_month = $1", stage.month)
        if stage.table:
            columns = ", ".join(REJECTION_COLUMNS)
            await connection.execute(f"INSERT INTO batch_rejection ({columns}) SELECT {columns} FROM {stage.table}")
            await connection.execute(f"DROP TABLE {stage.table}")
        if stage.rows:
            await connection.copy_records_to_table("batch_rejection", records=stage.rows, columns=REJECTION_COLUMNS)

    async def swap_undated(self) -> None:
        """Replace the rejections of the lines of no month (a run of every month, once every month is in)."""
        if self.wanted is not None:
            return
        await self._claim(None)
        async with self.work.transaction():
            await self._swap_rejections(self.work, self.undated)

    async def upsert_dimensions(self) -> None:
        """Environments of the months rebuilt and cost pools seen in this run (never removed: older months may
        use them)."""
        environments = sorted(self.environments)
        async with self.work.transaction():
            await self.work.executemany(
                "INSERT INTO dim_environment (environment_code, name) VALUES ($1, $1) ON CONFLICT DO NOTHING",
                [(code,) for code in environments],
            )
            await self.work.executemany(
                "INSERT INTO dim_cost_pool (pool_code, name) VALUES ($1, $2)"
                " ON CONFLICT (pool_code) DO UPDATE SET name = EXCLUDED.name",
                sorted(self.pool_names.items()),
            )


_APPLICATION_COLUMNS = ("application_code", *(column.name for column in fields(AppVersion)[1:]))
UNALLOCATED_VERSION_HIERARCHY = (UNALLOCATED, "Unallocated", UNALLOCATED, "Unallocated", UNALLOCATED, "Unallocated")


@dataclass
class AllocatedRows:
    """A month's indirect fact rows and coefficient rows, as lines of COPY text, and the targets they name.

    An indirect line stops before its last column, ``line_no``, known once the direct rows are counted.
    """

    indirect: list[str] = field(default_factory=list)
    coefficients: list[str] = field(default_factory=list)
    targets: set[str] = field(default_factory=set)


# The columns of an indirect row of ``fact_consumption`` and of a ``fact_coefficient`` row as the COPY text
# lists them: first what a whole pool shares (written once per pool), then what each share sets.
INDIRECT_POOL_COLUMNS = (
    "period_month", "period", "granularity", "environment_code", "service_category", "service_name", "provider",
    "cost_type", "currency", "source", "allocation_rule_id", "allocation_rule_version", "source_pool", "run_id",
)  # fmt: skip
INDIRECT_SHARE_COLUMNS = ("application_code", "billed_cost", "effective_cost", "allocated_ratio", "line_no")
INDIRECT_COLUMNS = INDIRECT_POOL_COLUMNS + INDIRECT_SHARE_COLUMNS
COEFFICIENT_POOL_COLUMNS = (
    "period_month", "pool_code", "currency", "allocation_rule_id", "allocation_rule_version", "key_type", "driver",
    "pool_amount", "inputs_hash", "run_id",
)  # fmt: skip
COEFFICIENT_SHARE_COLUMNS = ("target_application_code", "weight", "ratio", "allocated_amount", "rounding_adjustment")
COEFFICIENT_COLUMNS = COEFFICIENT_POOL_COLUMNS + COEFFICIENT_SHARE_COLUMNS
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_value(value: object) -> str:
    """One value in COPY's text format: NULL as ``\\N``, a Decimal in plain notation (its scale kept), text escaped.

    Building the text here costs less than asyncpg's binary encoding of Decimal to numeric.
    """
    if value is None:
        return "\\N"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value).translate(_COPY_ESCAPES)


def _copy_prefix(values: Iterable[object]) -> str:
    """The leading fields of a COPY text line, each followed by its tab."""
    return "".join(f"{_copy_value(value)}\t" for value in values)


Computed = TypeVar("Computed")


async def _overlapped(
    connection: asyncpg.Connection, statement: str, compute: Callable[[], Computed]
) -> tuple[str, Computed]:
    """Run ``statement`` on ``connection`` while ``compute()`` runs here; return the status and the computed value.

    Without parameters the statement goes by the simple query protocol: one message, written before the first
    suspension, so PostgreSQL executes it while Python computes. The statement is awaited even when ``compute``
    raises (the connection is never left with a statement in flight); nothing may use the connection meanwhile.
    """
    running = asyncio.ensure_future(connection.execute(statement))
    try:
        await asyncio.sleep(0)  # the task writes the statement
        value = compute()
    finally:
        status = await running
    return status, value


async def _copy_chunks(lines: list[str]) -> AsyncIterator[bytes]:
    """COPY text lines as a few large chunks (no thread hop per chunk, as a file-like source would make)."""
    for start in range(0, len(lines), COPY_CHUNK):
        yield "".join(lines[start : start + COPY_CHUNK]).encode()


_COEFFICIENT_KEY = "period_month, pool_code, currency, target_application_code"
_HIERARCHY_COLUMNS = (
    "period", "application_code", "name", "product_code", "product_name", "family_code", "family_name",
    "domain_code", "domain_name", "owner_group", "run_id",
)  # fmt: skip


def _kept_shares(allocation: Allocation) -> list[Share]:
    """Shares worth a row: every target with a weight (zero-weight targets get nothing and explain nothing)."""
    if allocation.unallocated:
        return list(allocation.shares)
    return [share for share in allocation.shares if share.weight != 0]


def _derived_versions(versions: Sequence[AppVersion], attributes: Any) -> list[tuple[Any, ...]]:
    """SCD2 versions of a product, family or domain, from the application versions that reference it.

    Each distinct set of attributes (name, parent) of a code is one version, valid from the earliest to the
    latest day any application version saw it.
    """
    spans: dict[tuple[Any, ...], tuple[date, date | None]] = {}
    for version in versions:
        key = attributes(version)
        start, end = spans.get(key, (version.valid_from, version.valid_to))
        start = min(start, version.valid_from)
        end = None if end is None or version.valid_to is None else max(end, version.valid_to)
        spans[key] = (start, end)
    records: dict[tuple[str, date], tuple[Any, ...]] = {}
    for key, (start, end) in sorted(spans.items(), key=lambda item: (item[0][0], item[1][0], item[0])):
        code, name, *parent = key
        if code == UNALLOCATED:
            continue
        records[(code, start)] = (code, start, end, name, *parent)
    return list(records.values())


# ----------------------------------------------------------------------------------------------- checks

_POOL_CHECK = """
WITH pools AS (
    SELECT pool_code, currency, allocation_rule_id AS rule_id, allocation_rule_version AS rule_version, amount
    FROM fact_pool WHERE period_month = $1
), coefficients AS (
    SELECT pool_code, currency, allocation_rule_id AS rule_id, allocation_rule_version AS rule_version,
           sum(allocated_amount) AS allocated
    FROM fact_coefficient WHERE period_month = $1 GROUP BY 1, 2, 3, 4
), facts AS (
    SELECT source_pool AS pool_code, currency, allocation_rule_id AS rule_id,
           allocation_rule_version AS rule_version, sum(billed_cost) AS allocated
    FROM fact_consumption WHERE period_month = $1 AND cost_type = 'indirect' GROUP BY 1, 2, 3, 4
)
SELECT coalesce(p.pool_code, c.pool_code, f.pool_code) AS pool_code, coalesce(p.amount, 0) AS pooled,
       coalesce(c.allocated, 0) AS coefficients, coalesce(f.allocated, 0) AS facts
FROM pools p
FULL JOIN coefficients c USING (pool_code, currency, rule_id, rule_version)
FULL JOIN facts f USING (pool_code, currency, rule_id, rule_version)
WHERE coalesce(p.amount, 0) <> coalesce(c.allocated, 0) OR coalesce(p.amount, 0) <> coalesce(f.allocated, 0)
"""

_SOURCE_CHECK = """
WITH control AS (
    SELECT currency, source_billed, source_effective, pool_amount FROM fact_period_control WHERE period_month = $1
), facts AS (
    SELECT currency,
           coalesce(sum(billed_cost) FILTER (WHERE cost_type = 'direct'), 0) AS direct_billed,
           coalesce(sum(effective_cost) FILTER (WHERE cost_type = 'direct'), 0) AS direct_effective,
           coalesce(sum(billed_cost) FILTER (WHERE cost_type = 'indirect'), 0) AS indirect
    FROM fact_consumption WHERE period_month = $1 GROUP BY currency
)
SELECT currency, coalesce(c.source_billed, 0) AS source_billed, coalesce(f.direct_billed, 0) AS direct_billed,
       coalesce(c.pool_amount, 0) AS pooled, coalesce(f.indirect, 0) AS indirect
FROM control c FULL JOIN facts f USING (currency)
WHERE coalesce(f.direct_billed, 0) <> coalesce(c.source_billed, 0)
   OR coalesce(f.direct_effective, 0) <> coalesce(c.source_effective, 0)
   OR coalesce(f.indirect, 0) <> coalesce(c.pool_amount, 0)
   OR coalesce(f.direct_billed, 0) + coalesce(f.indirect, 0)
      <> coalesce(c.source_billed, 0) + coalesce(c.pool_amount, 0)
"""


async def check_month(connection: asyncpg.Connection, month: date) -> None:
    """Assert the month's invariants in SQL; raise :class:`ConservationError` naming what broke.

    Per (pool, currency, rule): Σ coefficients = Σ indirect facts = the pooled amount. Per currency:
    Σ direct = the source total read from the raw zone, Σ indirect = Σ pools, so direct + indirect = source.
    """
    problems = [
        f"pool {row['pool_code']}: pooled {row['pooled']}, coefficients {row['coefficients']}, facts {row['facts']}"
        for row in await connection.fetch(_POOL_CHECK, month)
    ] + [
        f"{row['currency']}: source {row['source_billed']} vs direct {row['direct_billed']},"
        f" pooled {row['pooled']} vs indirect {row['indirect']}"
        for row in await connection.fetch(_SOURCE_CHECK, month)
    ]
    if problems:
        raise ConservationError(f"month {month:%Y-%m} is not conserved: " + "; ".join(problems[:5]))


# ---------------------------------------------------------------------------------------------- driver


@contextlib.asynccontextmanager
async def _dedicated(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection of the engine's pool, closed (never pooled again) after use.

    Closing rather than returning it drops the run's temporary tables and session locks with it.
    """
    async with engine.connect() as connection:
        raw = await _driver_connection(connection)
        try:
            yield raw
        finally:
            await connection.invalidate()


async def _driver_connection(connection: AsyncConnection) -> asyncpg.Connection:
    pooled = await connection.get_raw_connection()
    driver = pooled.driver_connection
    assert isinstance(driver, asyncpg.Connection)
    return driver


async def rebuild(
    engine: AsyncEngine,
    reader: RawReader,
    *,
    run_id: uuid.UUID,
    hooks: RunHooks,
    periods: Sequence[date] | None = None,
    report: RebuildReport | None = None,
    allow_empty: bool = False,
) -> RebuildReport:
    """Rebuild the requested months (default: every month found in the raw zone) and refresh the views.

    The counts go to ``report`` (a new one by default) as the run goes: after a failure, it holds what was
    counted up to it. A requested month with no sources whose mart data would be emptied is refused
    (``EmptyMonthError``) unless ``allow_empty``.
    """
    async with _dedicated(engine) as locks_connection, _dedicated(engine) as work:
        # Building a large month runs longer than an API statement may.
        await work.execute("SET statement_timeout = 0")
        locks = MonthLocks(locks_connection)
        if periods:
            for period in sorted({month_of(period) for period in periods}):
                await locks.take(period)
        run = MonthRebuild(
            run_id=run_id, work=work, locks=locks, hooks=hooks, periods=periods, report=report, allow_empty=allow_empty
        )
        try:
            await _run_steps(run, reader, hooks, engine)
        except Exception:
            # The months already swapped stay; this run's unswapped staging tables go (best effort: a broken
            # connection leaves them to the next run of the same month).
            with contextlib.suppress(Exception):
                await run.drop_staging()
            raise
        return run.report


async def _run_steps(run: MonthRebuild, reader: RawReader, hooks: RunHooks, engine: AsyncEngine) -> None:
    async with hooks.step("reference"):
        await run.load_reference(reader)
    async with hooks.step("read"):
        await run.read_finance(reader)
        await run.read_costs(reader)
        await run.upsert_dimensions()
    await _rebuild_months(run, hooks, engine)
    await run.swap_undated()
    run.report.periods.sort()
    async with hooks.step("refresh views"), _dedicated(engine) as builder:
        await builder.execute("SET statement_timeout = 0")
        # Once, after the last swap (months finish in any order): the views' plans join on it.
        await run.work.execute("ANALYZE dim_application_month")
        run.report.counters["views"] = await rebuild_views(
            run.work, [run.work, builder], MATERIALIZED_VIEWS, tag=run.run_id.hex[:12]
        )


async def refuse_to_empty(connection: asyncpg.Connection, inputs: MonthInputs) -> None:
    """``EmptyMonthError`` when the raw zone has nothing for a month the mart holds data for.

    A month whose sources have not landed yet (a late export, a pull that failed) or were purged would otherwise
    be rebuilt empty and its costs vanish from every dashboard; emptying it has to be asked for.
    """
    has_sources = inputs.controls or inputs.pools or inputs.drivers or inputs.rejections.rows
    if has_sources or inputs.rejections.table:
        return
    held = await connection.fetchval("SELECT count(*) FROM fact_consumption WHERE period_month = $1", inputs.month)
    if held:
        raise EmptyMonthError(
            f"{inputs.month:%Y-%m}: the raw zone holds no cost line, pool or driver for this month, but the mart"
            f" holds {held} fact rows for it; not emptied (land its sources first, or rebuild it with"
            " --allow-empty / allowEmpty to empty it on purpose)"
        )


MONTH_WORKERS = 2  # one per core: while one month's lines are grouped in PostgreSQL, the other's pools are split


async def _rebuild_months(run: MonthRebuild, hooks: RunHooks, engine: AsyncEngine) -> None:
    """Build then swap every month, two at a time on two connections (``run.work`` and a dedicated one).

    Each worker takes the next month of the queue, builds it and swaps it in. After a failure no worker takes
    another month or starts another step (a month being built or swapped finishes: nothing is cancelled
    mid-statement); the first error is raised once both have stopped.
    """
    queue = sorted(run.months)
    errors: list[Exception] = []

    async def worker(connection: asyncpg.Connection) -> None:
        while queue and not errors:
            month = queue.pop(0)
            inputs = run.months[month]
            started = time.perf_counter()
            try:
                if not run.allow_empty:
                    await refuse_to_empty(connection, inputs)
                async with hooks.step(f"build {month:%Y-%m}"):
                    facts, coefficients, hierarchy = await run.build(inputs, connection)
                if errors:
                    return
                async with hooks.step(f"swap {month:%Y-%m}"):
                    await run.swap(inputs, connection, facts, coefficients, hierarchy)
            except Exception as error:
                errors.append(error)
                return
            run.report.periods.append(month)
            run.report.written += inputs.written
            logger.info(
                "finops month rebuilt",
                extra={"period": f"{month:%Y-%m}", "seconds": round(time.perf_counter() - started, 3)},
            )

    if len(queue) < MONTH_WORKERS:
        await worker(run.work)
    else:
        async with _dedicated(engine) as second:
            await second.execute("SET statement_timeout = 0")
            await asyncio.gather(worker(run.work), worker(second))
    if errors:
        raise errors[0]

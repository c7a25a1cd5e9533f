"""Use cases of the `finops` context: the only public surface controllers and batch jobs call.

Budgets, pricing views and allocation rules are managed here; every change is audited through the
request's :class:`~rosetta.core.audit.Auditor`, in the same transaction. Functions take a session and never
commit (the unit of work does).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
from sqlalchemy import ARRAY, String, any_, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from rosetta.core.audit import record_audit
from rosetta.core.errors import BadRequestError, ConflictError, NotFoundError
from rosetta.core.locale_numbers import (
    established_mark,
    is_ambiguous,
    is_decimal_literal,
    is_plain_decimal,
    normalise_number,
)
from rosetta.core.pagination import keyset_page
from rosetta.core.wire import plain_decimal, to_builtins
from rosetta.finops import models, pipeline
from rosetta.finops.allocation import CENT, UNALLOCATED
from rosetta.finops.schemas import (
    LEVELS,
    AllocationRule,
    AllocationRuleCreate,
    BatchRejection,
    BatchRunRequest,
    Budget,
    BudgetCreate,
    BudgetLine,
    BudgetLineIn,
    BudgetPatch,
    BudgetReplace,
    BudgetRevision,
    Level,
    MappingAlias,
    MappingAliasCreate,
    PricingView,
    PricingViewCreate,
    PricingViewPatch,
    PricingViewReplace,
    PricingViewRevision,
    PricingViewRevisionSummary,
    Rate,
    RateIn,
    RuleTarget,
)

if TYPE_CHECKING:
    from rosetta.core.audit import Auditor

# Years 1900-2999: a month outside them is a typo, and it keeps month arithmetic away from date's limits.
_PERIOD = re.compile(r"^((?:19|2\d)\d\d)-(0[1-9]|1[0-2])$")
_CODE_LENGTH = 64
_MAX_ADJUSTED_EXPONENT = models.MAX_AMOUNT_EXPONENT
# Ten years: a full history rebuild after a rule change fits; a typo of a century does not.
MAX_RUN_MONTHS = 120
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_HUNDRED = Decimal(100)


def _invalid(field: str, message: str) -> BadRequestError:
    return BadRequestError(f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]})


def _not_found(field: str, message: str) -> NotFoundError:
    return NotFoundError(f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]})


def parse_month(value: str, field: str) -> date:
    """``YYYY-MM`` to the first day of the month; a 400 naming ``field`` otherwise."""
    match = _PERIOD.match(value.strip())
    if match is None:
        raise _invalid(field, f"expected a month as YYYY-MM, got {value!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


def month_text(value: date) -> str:
    """A month as ``YYYY-MM``."""
    # Not strftime: this runs for every row of the read routes and is 5x cheaper.
    return f"{value.year:04d}-{value.month:02d}"


def _snapshot(value: Any) -> Any:
    """The JSON-able form of a DTO for the audit log (decimals stay strings, in plain notation)."""
    return to_builtins(value)


def _check_amount(value: Decimal, field: str) -> Decimal:
    if not value.is_finite():
        raise _invalid(field, "must be a finite decimal")
    if value and value.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise _invalid(field, "must be below 10^15")
    return value


def _check_code(value: str, field: str) -> str:
    """A business key (application, pool, unit, driver...): stripped, 1 to 64 characters."""
    value = value.strip()
    if not value or len(value) > _CODE_LENGTH:
        raise _invalid(field, f"must be 1 to {_CODE_LENGTH} characters")
    return value


def _check_currency(value: str, field: str) -> str:
    if not _CURRENCY.match(value):
        raise _invalid(field, f"expected an ISO 4217 code such as EUR, got {value!r}")
    return value


def _check_name(value: str, field: str) -> str:
    value = value.strip()
    if not value or len(value) > 200:
        raise _invalid(field, "must be 1 to 200 characters")
    return value


# ----------------------------------------------------------------------------------------------- uploads


Cell = str | Decimal
"""An uploaded cell: text as written, or a number a workbook stored as a number (no decimal mark to guess)."""


@dataclass(frozen=True)
class UploadRow:
    """One data row of an upload: its 1-based row number as the file shows it, and its cells by header."""

    number: int
    cells: Mapping[str, Cell]

    def text(self, column: str) -> str:
        """The cell under ``column`` as stripped text ("" when the row has none)."""
        cell = self.cells.get(column, "")
        return str(cell).strip()


@dataclass(frozen=True)
class Upload:
    """A CSV file or the first sheet of a workbook: its header (normalised names) and its data rows."""

    header: tuple[str, ...]
    rows: tuple[UploadRow, ...]


@dataclass(frozen=True)
class _Column:
    """An import column: its name in messages and the normalised headers that mean it."""

    name: str
    headers: tuple[str, ...]


def _normalise_header(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _filled(cell: Cell | None) -> bool:
    return cell is not None and (isinstance(cell, Decimal) or bool(cell.strip()))


def _table(records: Iterable[tuple[int, Sequence[Cell]]]) -> Upload:
    """The header and data rows of numbered records (blank records skipped but counted)."""
    filled = [(number, cells) for number, cells in records if any(_filled(cell) for cell in cells)]
    if not filled:
        raise _invalid("body", "the file has no header row")
    header = tuple(_normalise_header(str(cell)) for cell in filled[0][1])
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise _invalid("header", f"column {repeated[0]} appears more than once")
    rows = []
    for number, cells in filled[1:]:
        for index, cell in enumerate(cells):
            # A value beyond the header (or under a blank header cell) would be dropped without a word.
            if _filled(cell) and (index >= len(header) or not header[index]):
                raise _invalid(f"row {number}", f"has a value in column {index + 1}, which has no header")
        rows.append(UploadRow(number, {name: cell for name, cell in zip(header, cells, strict=False) if name}))
    if not rows:
        # An import replaces everything: a file without data would silently wipe the version.
        raise _invalid("body", "the file has a header row but no data rows; to remove everything, PUT an empty list")
    return Upload(header, tuple(rows))


def _column(upload: Upload, column: _Column) -> str:
    """The header under which ``column`` is in ``upload``; a 400 naming the column when it is missing."""
    for name in column.headers:
        if name in upload.header:
            return name
    raise _invalid("header", f"missing column {column.name}")


def rows_from_csv(body: bytes) -> Upload:
    """The table of a CSV upload (UTF-8, optional BOM; comma or semicolon); row numbers count every line."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _invalid("body", "the CSV file is not UTF-8") from None
    sample = text[:4096]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        return _table(enumerate(reader, start=1))
    except csv.Error as error:
        raise _invalid("body", f"not a readable CSV file ({error})") from None


def _cell(value: Any) -> Cell:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return f"{value:%Y-%m}"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        # Excel stores numbers as doubles; repr is the shortest text that reads back the same value.
        return Decimal(repr(value))
    if isinstance(value, int | Decimal):
        return Decimal(value)
    return str(value).strip()


def rows_from_excel(body: bytes) -> Upload:
    """The table of the first sheet of an .xlsx upload; row numbers are the sheet's."""
    from openpyxl import load_workbook  # noqa: PLC0415 - only imports need it

    try:
        workbook = load_workbook(io.BytesIO(body), read_only=True, data_only=True)
        try:
            sheet = workbook.worksheets[0]
            records = [
                (number, [_cell(value) for value in row])
                for number, row in enumerate(sheet.iter_rows(values_only=True), start=1)
            ]
        finally:
            workbook.close()
    # The body is whatever the client sent: a zip that is not a workbook, a workbook openpyxl cannot parse
    # (BadZipFile, KeyError, XML errors, ...). Each is a bad upload, never a server error.
    except Exception as error:
        raise _invalid("body", f"not a readable .xlsx workbook ({type(error).__name__})") from None
    return _table(records)


def _required(row: UploadRow, key: str, column: str) -> str:
    value = row.text(key)
    if not value:
        raise _invalid(f"row {row.number}.{column}", "is missing")
    return value


# Digits, signs, grouping spaces and apostrophes, parentheses for negatives, and the two marks: no currency
# symbol, which could contradict the row's currency.
_AMOUNT_TEXT = re.compile(r"^[0-9+\-\u2212,.()' \u00a0\u202f\u2019]+$")


def _file_amounts(upload: Upload, key: str, column: str) -> dict[int, Decimal]:
    """The amounts of a column by row number, read with the decimal mark the file itself establishes.

    A number such as ``1,234`` (one separator, three digits after it) means 1234 or 1.234 depending on the
    locale. Unless the column's unambiguous amounts all show the same mark (``12,50``, ``1.234,50``...), it
    is refused rather than guessed: a budget stored 1000 times too small would go unnoticed.
    """
    mark = established_mark(cell for row in upload.rows if isinstance(cell := row.cells.get(key), str))
    amounts: dict[int, Decimal] = {}
    for row in upload.rows:
        field = f"row {row.number}.{column}"
        cell = row.cells.get(key, "")
        if isinstance(cell, Decimal):
            amounts[row.number] = cell
            continue
        text = _required(row, key, column)
        if mark is None and is_ambiguous(text):
            whole = normalise_number(text, decimal_mark=".")
            fraction = normalise_number(text, decimal_mark=",")
            whole, fraction = (whole, fraction) if "." in (fraction or "") else (fraction, whole)
            raise _invalid(
                field,
                f"{text!r} is ambiguous: {whole} or {fraction}? No other amount in the file shows its decimal mark;"
                f" write whole numbers without thousands separators ({whole}) and decimals with other than"
                f" three decimal places ({fraction}0)",
            )
        plain = normalise_number(text, decimal_mark=mark or ".") if _AMOUNT_TEXT.match(text) else None
        if plain is None:
            raise _invalid(field, f"not a decimal amount: {text!r}")
        amounts[row.number] = Decimal(plain)
    return amounts


# ----------------------------------------------------------------------------------------------- budgets


_BV = models.BudgetVersion
_BR = models.BudgetRevision
_BL = models.BudgetRevisionLine
_LANDED = models.BudgetLandedLine
_LineKey = tuple[str, str, date]
"""A budget line's identity within a revision: scope level, scope code, month."""


@dataclass(frozen=True)
class _Locations:
    """How errors name the members of the i-th item: ``lines[0].scopeCode`` in JSON, ``row 3.scope_code`` in a file.

    One convention per source, so a client can point at the offending member whichever way it sent the data.
    """

    prefixes: Sequence[str]
    camel_case: bool

    @classmethod
    def json(cls, field: str, count: int) -> _Locations:
        """Members of the JSON array ``field`` (0-based index, camelCase names)."""
        return cls([f"{field}[{index}]" for index in range(count)], camel_case=True)

    @classmethod
    def file(cls, upload: Upload) -> _Locations:
        """Rows of an uploaded file (the row numbers it shows, the column names of the import)."""
        return cls([f"row {row.number}" for row in upload.rows], camel_case=False)

    def __call__(self, index: int, member: str | None = None) -> str:
        if member is None:
            return self.prefixes[index]
        if self.camel_case:
            head, *rest = member.split("_")
            member = head + "".join(part.title() for part in rest)
        return f"{self.prefixes[index]}.{member}"


def _parse_amount(text: str, field: str) -> Decimal:
    """A number sent as a decimal string in plain notation (``"1234.56"``): amounts, unit prices, percentages.

    No float ever reaches it (see ``BudgetLineIn``); exponent notation (``"1E+3"``, ``"5E-7"``) is refused, as
    the APIs never write it (ADR 0013) and a person typing an amount does not mean it.
    """
    stripped = text.strip()
    if not is_plain_decimal(stripped):
        if is_decimal_literal(stripped):
            raise _invalid(field, f"{text!r} is in exponent notation; write the digits out (0.0000005, not 5E-7)")
        raise _invalid(field, f'expected a decimal string such as "1234.56", got {text!r}')
    return _check_amount(Decimal(stripped), field)


def _check_cents(value: Decimal, field: str) -> Decimal:
    """``value`` at exactly 2 decimals (``"100.00000"`` is stored, and read back, as ``100.00``).

    Budget money is whole cents, as the shared pools the allocation splits (CENT): a finer amount is a typo
    or float noise from a spreadsheet (0.30000000000000004), and would never reconcile with the mart.
    """
    cents = value.quantize(CENT)
    if value != cents:
        raise _invalid(field, f"at most 2 decimals (whole cents), got {plain_decimal(value)}")
    return cents


def _validated_lines(lines: Sequence[BudgetLineIn], where: _Locations) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str, date], int] = {}
    values: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if line.scope_level not in LEVELS:
            raise _invalid(where(index, "scope_level"), f"must be one of {', '.join(LEVELS)}, got {line.scope_level!r}")
        month = parse_month(line.period, where(index, "period"))
        code = _check_code(line.scope_code, where(index, "scope_code"))
        key = (line.scope_level, code, month)
        if key in seen:
            raise _invalid(
                where(index),
                f"duplicate line for {line.scope_level} {code} {month_text(month)} (first at {where(seen[key])})",
            )
        seen[key] = index
        amount = _parse_amount(line.amount, where(index, "amount"))
        values.append(
            {
                "scope_level": line.scope_level,
                "scope_code": code,
                "month": month,
                "amount": _check_cents(amount, where(index, "amount")),
                "currency": _check_currency(line.currency, where(index, "currency")),
            }
        )
    return values


_SCOPE_CODE_COLUMNS = {
    "application": models.DimApplication.application_code,
    "product": models.DimProduct.product_code,
    "family": models.DimFamily.family_code,
    "domain": models.DimDomain.domain_code,
}
_LISTED_CODES = 20
# Refusing is the safer choice even before the first run: a line accepted then could name anything, and
# would silently match nothing once the hierarchy is loaded.
_POOLS_EMPTY = (
    "no pool is known yet: finops-batch loads them from finance/shared_cost and has not run yet (POST batch/runs)"
)
_HIERARCHY_EMPTY = (
    "the hierarchy is still empty: finops-batch loads it from the CMDB and has not run yet (POST batch/runs)"
)


async def _unknown_codes(session: AsyncSession, column: InstrumentedAttribute[str], codes: Iterable[str]) -> set[str]:
    """The codes ``column`` holds in no row (any validity period)."""
    wanted = sorted(set(codes))
    if not wanted:
        return set()
    # One array parameter rather than an IN list: a large import may name thousands of codes.
    query = select(column).distinct().where(column == any_(bindparam("codes", wanted, type_=ARRAY(String))))
    return set(wanted) - set((await session.scalars(query)).all())


async def _hierarchy_loaded(session: AsyncSession) -> bool:
    """False until finops-batch has loaded the CMDB (only the seeded UNALLOCATED row is there before)."""
    query = select(models.DimApplication.application_code).where(models.DimApplication.application_code != UNALLOCATED)
    return (await session.execute(query.limit(1))).first() is not None


_LISTED_ERRORS = 100


def _unknown_references(what: str, found: Sequence[tuple[str, str]], *, empty: str | None) -> BadRequestError:
    """One 400 naming every unknown reference (``found``: location, description); ``empty`` says why none is known."""
    where: dict[str, list[str]] = {}
    for field, description in found:
        where.setdefault(description, []).append(field)
    distinct = [
        f"{description} ({fields[0]}" + (f" and {len(fields) - 1} more)" if len(fields) > 1 else ")")
        for description, fields in where.items()
    ]
    listed = ", ".join(distinct[:_LISTED_CODES])
    more = f" and {len(distinct) - _LISTED_CODES} more" if len(distinct) > _LISTED_CODES else ""
    detail = f"unknown {what}: {listed}{more}" + (f"; {empty}" if empty else "")
    errors = [{"field": field, "message": f"unknown {description}"} for field, description in found[:_LISTED_ERRORS]]
    return BadRequestError(detail, extra={"errors": errors})


async def _check_scope_codes(session: AsyncSession, values: Sequence[dict[str, Any]], where: _Locations) -> None:
    """Refuse lines whose scope code the hierarchy does not know at their level (400 listing them).

    Such a line would match no node of any comparison and silently vanish from it. Any validity period
    counts: a budget may be kept for a product that has since been retired.
    """
    unknown = {
        level: await _unknown_codes(
            session, column, (value["scope_code"] for value in values if value["scope_level"] == level)
        )
        for level, column in _SCOPE_CODE_COLUMNS.items()
    }
    found = [
        (where(index, "scope_code"), f"{value['scope_level']} {value['scope_code']!r}")
        for index, value in enumerate(values)
        if value["scope_code"] in unknown[value["scope_level"]]
    ]
    if found:
        empty = None if await _hierarchy_loaded(session) else _HIERARCHY_EMPTY
        raise _unknown_references(
            "scope codes (checked against the CMDB hierarchy, at their level)", found, empty=empty
        )


@dataclass
class _LineStats:
    """What a budget's header shows of one revision's lines: their count, totals per currency, first and last month."""

    totals: dict[str, Decimal]
    count: int = 0
    first: date | None = None
    last: date | None = None


async def _line_stats(
    session: AsyncSession, keys: Sequence[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], _LineStats]:
    """The line statistics of (budget id, revision) pairs, in one query."""
    stats = {key: _LineStats(totals={}) for key in keys}
    if keys:
        query = (
            select(
                _BL.budget_version_id,
                _BL.revision,
                _BL.currency,
                func.count(),
                func.sum(_BL.amount),
                func.min(_BL.month),
                func.max(_BL.month),
            )
            .where(tuple_(_BL.budget_version_id, _BL.revision).in_(list(stats)))
            .group_by(_BL.budget_version_id, _BL.revision, _BL.currency)
        )
        for version_id, revision, currency, count, total, first, last in (await session.execute(query)).all():
            entry = stats[(version_id, revision)]
            entry.count += count
            entry.totals[currency] = total
            entry.first = min(first, entry.first or first)
            entry.last = max(last, entry.last or last)
    return stats


async def _revision_rows(
    session: AsyncSession, keys: Sequence[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], models.BudgetRevision]:
    if not keys:
        return {}
    query = select(_BR).where(tuple_(_BR.budget_version_id, _BR.revision).in_(list(keys)))
    return {(row.budget_version_id, row.revision): row for row in (await session.scalars(query)).all()}


async def _budget_dtos(session: AsyncSession, versions: Sequence[models.BudgetVersion]) -> list[Budget]:
    keys = [(version.id, version.revision) for version in versions]
    stats = await _line_stats(session, keys)
    revisions = await _revision_rows(session, keys)
    return [
        Budget(
            id=version.id,
            name=version.name,
            description=revisions[(version.id, version.revision)].description,
            revision=version.revision,
            line_count=stats[(version.id, version.revision)].count,
            totals=dict(sorted(stats[(version.id, version.revision)].totals.items())),
            first_period=_optional_month(stats[(version.id, version.revision)].first),
            last_period=_optional_month(stats[(version.id, version.revision)].last),
            created_by=version.created_by,
            created_at=version.created_at,
            updated_by=revisions[(version.id, version.revision)].created_by,
            updated_at=revisions[(version.id, version.revision)].created_at,
        )
        for version in versions
    ]


def _optional_month(value: date | None) -> str | None:
    return None if value is None else month_text(value)


async def budget_list(
    session: AsyncSession, *, limit: int, cursor: str | None, name: str | None = None
) -> tuple[list[Budget], str | None]:
    """Budget versions, newest first (keyset on creation time and id)."""
    # The key columns are selected on their own too: keyset_page reads the cursor from the row by them.
    query = select(_BV, _BV.created_at, _BV.id)
    if name is not None:
        query = query.where(_BV.name.ilike(f"%{name}%"))
    rows, next_cursor = await keyset_page(
        session,
        query,
        key=[_BV.created_at, _BV.id],
        key_types=[datetime, uuid.UUID],
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    return await _budget_dtos(session, [version for version, *_ in rows]), next_cursor


async def _budget_version(session: AsyncSession, budget_id: uuid.UUID, *, for_update: bool) -> models.BudgetVersion:
    query = select(_BV).where(_BV.id == budget_id)
    if for_update:
        # Serialises concurrent writers, so the If-Match check and the write see the same revision.
        query = query.with_for_update()
    version = (await session.scalars(query)).first()
    if version is None:
        raise NotFoundError(f"no budget version {budget_id}")
    return version


async def budget_get(session: AsyncSession, budget_id: uuid.UUID, *, for_update: bool = False) -> Budget:
    """One budget version; 404 when unknown. ``for_update`` locks it until the transaction ends."""
    version = await _budget_version(session, budget_id, for_update=for_update)
    return (await _budget_dtos(session, [version]))[0]


async def budget_lines(
    session: AsyncSession, budget_id: uuid.UUID, revision: int, *, limit: int, cursor: str | None
) -> tuple[list[BudgetLine], str | None]:
    """The lines of one revision of a version ordered by month, level and code (keyset)."""
    key = (_BL.month, _BL.scope_level, _BL.scope_code)
    query = select(_BL, *key).where(_BL.budget_version_id == budget_id, _BL.revision == revision)
    page, next_cursor = await keyset_page(
        session, query, key=key, key_types=[date, str, str], limit=limit, cursor=cursor
    )
    rows = [line for line, *_ in page]
    return [
        BudgetLine(
            scope_level=row.scope_level,
            scope_code=row.scope_code,
            period=month_text(row.month),
            amount=row.amount,
            currency=row.currency,
        )
        for row in rows
    ], next_cursor


def _revision_dtos(
    version_id: uuid.UUID,
    revisions: Sequence[models.BudgetRevision],
    stats: Mapping[tuple[uuid.UUID, int], _LineStats],
) -> list[BudgetRevision]:
    return [
        BudgetRevision(
            id=version_id,
            revision=kept.revision,
            name=kept.name,
            description=kept.description,
            line_count=stats[(version_id, kept.revision)].count,
            totals=dict(sorted(stats[(version_id, kept.revision)].totals.items())),
            first_period=_optional_month(stats[(version_id, kept.revision)].first),
            last_period=_optional_month(stats[(version_id, kept.revision)].last),
            created_by=kept.created_by,
            created_at=kept.created_at,
        )
        for kept in revisions
    ]


async def budget_revision_list(
    session: AsyncSession, budget_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[BudgetRevision], str | None]:
    """The kept revisions of a budget version, oldest first (keyset on the revision); 404 for an unknown version."""
    await _budget_version(session, budget_id, for_update=False)
    # The key column is selected on its own too: keyset_page reads the cursor from the row by that column.
    query = select(_BR, _BR.revision).where(_BR.budget_version_id == budget_id)
    rows, next_cursor = await keyset_page(
        session, query, key=[_BR.revision], key_types=[int], limit=limit, cursor=cursor
    )
    revisions = [kept for kept, _ in rows]
    stats = await _line_stats(session, [(budget_id, kept.revision) for kept in revisions])
    return _revision_dtos(budget_id, revisions, stats), next_cursor


async def budget_revision_get(session: AsyncSession, budget_id: uuid.UUID, revision: int) -> BudgetRevision:
    """A budget version as it was at ``revision`` (its lines at ``budget_lines``); 404 for an unknown version or
    revision."""
    version = await _budget_version(session, budget_id, for_update=False)
    kept = (await _revision_rows(session, [(budget_id, revision)])).get((budget_id, revision))
    if kept is None:
        raise NotFoundError(_no_such_revision(version, revision))
    stats = await _line_stats(session, [(budget_id, revision)])
    return _revision_dtos(budget_id, [kept], stats)[0]


def _no_such_revision(version: models.BudgetVersion, revision: int) -> str:
    # Revisions run from 1 to the current one without gaps: naming the range says what to ask for instead.
    return f"budget version {version.name} has no revision {revision} (it has 1 to {version.revision})"


async def _lock_name(session: AsyncSession, kind: str, name: str) -> None:
    """Serialise writers of names equal but for case until the transaction ends.

    The unique constraints are case-sensitive, so without this two concurrent requests for "Budget A" and
    "budget a" could both pass the check below.
    """
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"finops.{kind}.name:{name.lower()}"))))


async def _check_budget_name_free(session: AsyncSession, name: str, *, except_id: uuid.UUID | None = None) -> None:
    # Names differing only by case (spaces are stripped before) are the same name to the people choosing one.
    await _lock_name(session, "budget_version", name)
    query = select(_BV.name).where(func.lower(_BV.name) == func.lower(name))
    if except_id is not None:
        query = query.where(_BV.id != except_id)
    taken = (await session.scalars(query)).first()
    if taken is not None:
        raise ConflictError(
            f"a budget version named {taken!r} already exists (names ignore case)",
            extra={"errors": [{"field": "name"}]},
        )


def _line_key(value: Mapping[str, Any]) -> _LineKey:
    return (value["scope_level"], value["scope_code"], value["month"])


async def _line_map(session: AsyncSession, budget_id: uuid.UUID, revision: int) -> dict[_LineKey, tuple[Decimal, str]]:
    """A revision's lines as (scope level, scope code, month) -> (amount, currency)."""
    rows = await session.execute(
        select(_BL.scope_level, _BL.scope_code, _BL.month, _BL.amount, _BL.currency).where(
            _BL.budget_version_id == budget_id, _BL.revision == revision
        )
    )
    return {(level, code, month): (amount, currency) for level, code, month, amount, currency in rows}


def _line_rows(lines: Mapping[_LineKey, tuple[Decimal, str]]) -> list[list[str]]:
    """Lines as ``[scopeLevel, scopeCode, YYYY-MM, amount, currency]`` by scope and month, compact for the audit row."""
    return [
        [level, code, month_text(month), plain_decimal(amount), currency]
        for (level, code, month), (amount, currency) in sorted(lines.items())
    ]


async def _add_budget_revision(
    session: AsyncSession,
    budget_id: uuid.UUID,
    revision: int,
    *,
    name: str,
    description: str | None,
    lines: Mapping[_LineKey, tuple[Decimal, str]],
    actor: str,
) -> None:
    """Keep one more revision of a budget, with every line it holds (rows the immutability trigger then guards),
    and make it current.

    Each revision holds its whole set of lines, not a difference from the one before: a comparison against any
    revision reads its lines by primary key, as it reads the current ones.
    """
    await session.execute(
        insert(_BR).values(
            budget_version_id=budget_id, revision=revision, name=name, description=description, created_by=actor
        )
    )
    if lines:
        await session.execute(
            insert(_BL),
            [
                {
                    "budget_version_id": budget_id,
                    "revision": revision,
                    "scope_level": level,
                    "scope_code": code,
                    "month": month,
                    "amount": amount,
                    "currency": currency,
                }
                for (level, code, month), (amount, currency) in sorted(lines.items())
            ],
        )
    await session.execute(update(_BV).where(_BV.id == budget_id).values(revision=revision, name=name))


async def budget_create(session: AsyncSession, *, auditor: Auditor, data: BudgetCreate, actor: str) -> Budget:
    """Create a budget version at revision 1 with its lines; 409 when the name is taken."""
    name = _check_name(data.name, "name")
    where = _Locations.json("lines", len(data.lines))
    values = _validated_lines(data.lines, where)
    await _check_scope_codes(session, values, where)
    await _check_budget_name_free(session, name)
    budget_id = uuid.uuid4()
    session.add(_BV(id=budget_id, name=name, revision=1, created_by=actor))
    await session.flush()
    lines = {_line_key(value): (value["amount"], value["currency"]) for value in values}
    await _add_budget_revision(session, budget_id, 1, name=name, description=data.description, lines=lines, actor=actor)
    created = await budget_get(session, budget_id)
    await auditor.record(
        action="budget.create",
        entity_type="budget_version",
        entity_id=str(budget_id),
        after={**_snapshot(created), "lines": _snapshot(data.lines)},
    )
    return created


async def _budget_update(
    session: AsyncSession,
    *,
    auditor: Auditor,
    current: Budget,
    action: str,
    header: dict[str, Any],
    values: list[dict[str, Any]] | None,
    replace_lines: bool,
    detail: Any,
    actor: str,
) -> Budget:
    """Make the next revision of ``current`` (locked by the caller) unless the request changes nothing.

    Earlier revisions are never touched, so a comparison against one of them gives the same values forever.
    A request leaving the name, the description and every line as they are (amounts compared as numbers: 1000.00
    is 1000) keeps the current revision: no empty revision. It is still audited, its before and after naming the
    same revision, as every PUT, PATCH and import is.
    """
    if "name" in header:
        await _check_budget_name_free(session, header["name"], except_id=current.id)
    name = header.get("name", current.name)
    description = header.get("description", current.description)
    before = _snapshot(current)
    old_lines = await _line_map(session, current.id, current.revision)
    new_lines = {} if replace_lines else dict(old_lines)
    new_lines.update({_line_key(value): (value["amount"], value["currency"]) for value in values or []})
    if replace_lines:
        # The audit row keeps the lines a replacement removes and those it writes, as it always has: an auditor
        # reads a version's history from its trail alone.
        before["lines"] = _line_rows(old_lines)
    if (name, description, new_lines) == (current.name, current.description, old_lines):
        updated = current
    else:
        await _add_budget_revision(
            session,
            current.id,
            current.revision + 1,
            name=name,
            description=description,
            lines=new_lines,
            actor=actor,
        )
        session.expire_all()
        updated = await budget_get(session, current.id)
    after = {**_snapshot(updated), "change": detail}
    if replace_lines:
        after["lines"] = before["lines"] if updated is current else _line_rows(new_lines)
    await auditor.record(
        action=action, entity_type="budget_version", entity_id=str(current.id), before=before, after=after
    )
    return updated


async def budget_replace(
    session: AsyncSession, *, auditor: Auditor, current: Budget, data: BudgetReplace, actor: str
) -> Budget:
    """PUT: new name/description and a full set of lines, as the version's next revision."""
    header = {"name": _check_name(data.name, "name"), "description": data.description}
    where = _Locations.json("lines", len(data.lines))
    values = _validated_lines(data.lines, where)
    await _check_scope_codes(session, values, where)
    return await _budget_update(
        session,
        auditor=auditor,
        current=current,
        action="budget.replace",
        header=header,
        values=values,
        replace_lines=True,
        detail={"lines": len(values)},
        actor=actor,
    )


async def budget_patch(
    session: AsyncSession, *, auditor: Auditor, current: Budget, data: BudgetPatch, actor: str
) -> Budget:
    """PATCH: change the members sent, as the version's next revision; lines are upserted by (scope, month)."""
    header: dict[str, Any] = {}
    if not isinstance(data.name, msgspec.UnsetType):
        header["name"] = _check_name(data.name, "name")
    if not isinstance(data.description, msgspec.UnsetType):
        header["description"] = data.description
    values = None
    if not isinstance(data.lines, msgspec.UnsetType):
        where = _Locations.json("lines", len(data.lines))
        values = _validated_lines(data.lines, where)
        await _check_scope_codes(session, values, where)
    return await _budget_update(
        session,
        auditor=auditor,
        current=current,
        action="budget.patch",
        header=header,
        values=values,
        replace_lines=False,
        detail={**header, "linesUpserted": _snapshot(data.lines or [])},
        actor=actor,
    )


_SCOPE_LEVEL = _Column("scope_level", ("scopelevel",))
_SCOPE_CODE = _Column("scope_code", ("scopecode",))
_PERIOD_COLUMN = _Column("period", ("period", "month"))
_AMOUNT = _Column("amount", ("amount",))
_CURRENCY_COLUMN = _Column("currency", ("currency",))


def _lines_from_upload(upload: Upload) -> list[BudgetLineIn]:
    level, code, period, amount = (
        _column(upload, column) for column in (_SCOPE_LEVEL, _SCOPE_CODE, _PERIOD_COLUMN, _AMOUNT)
    )
    amounts = _file_amounts(upload, amount, _AMOUNT.name)
    return [
        BudgetLineIn(
            scope_level=cast("Level", _required(row, level, _SCOPE_LEVEL.name).lower()),  # checked next
            scope_code=_required(row, code, _SCOPE_CODE.name),
            period=_required(row, period, _PERIOD_COLUMN.name),
            # A workbook number is exact: written out, so 1e-07 or 1e+16 is judged as a value, not a notation.
            amount=plain_decimal(amounts[row.number]),
            currency=(row.text(_CURRENCY_COLUMN.headers[0]) or "EUR").upper(),
        )
        for row in upload.rows
    ]


async def budget_import(
    session: AsyncSession, *, auditor: Auditor, current: Budget, upload: Upload, actor: str
) -> Budget:
    """Replace a version's lines with an uploaded file's (scope_level, scope_code, period, amount[, currency]), as
    its next revision.

    Errors name the file's rows (``row 3.amount``); a file without data rows is refused (see ``_table``).
    """
    where = _Locations.file(upload)
    values = _validated_lines(_lines_from_upload(upload), where)
    await _check_scope_codes(session, values, where)
    return await _budget_update(
        session,
        auditor=auditor,
        current=current,
        action="budget.import",
        header={},
        values=values,
        replace_lines=True,
        detail={"importedLines": len(values)},
        actor=actor,
    )


# ----------------------------------------------------------------------------------------------- pricing views


_PV = models.PricingView
_PVR = models.PricingViewRevision
_PRR = models.PricingViewRevisionRate
# Revisions are PostgreSQL integers: a larger number names no revision (and must not reach a query).
MAX_REVISION = 2_147_483_647
_REVISION = re.compile(r"^[1-9][0-9]{0,9}$")


def _validated_rates(rates: Sequence[Rate | RateIn], where: _Locations | None = None) -> list[dict[str, Any]]:
    where = where or _Locations.json("rates", len(rates))
    seen: dict[tuple[str, str], int] = {}
    values: list[dict[str, Any]] = []
    for index, rate in enumerate(rates):
        if rate.service_category not in models.SERVICE_CATEGORIES:
            raise _invalid(where(index, "service_category"), f"not a FOCUS service category: {rate.service_category!r}")
        unit = _check_code(rate.unit, where(index, "unit"))
        if (rate.service_category, unit) in seen:
            first = where(seen[(rate.service_category, unit)])
            raise _invalid(where(index), f"duplicate rate for {rate.service_category} / {unit} (first at {first})")
        seen[(rate.service_category, unit)] = index
        field = where(index, "unit_price")
        # JSON sends text (RateIn); a file's prices are already parsed by its own convention (Rate).
        price = (
            _parse_amount(rate.unit_price, field)
            if isinstance(rate.unit_price, str)
            else _check_amount(rate.unit_price, field)
        )
        if price < 0:
            raise _invalid(where(index, "unit_price"), "must not be negative")
        values.append({"service_category": rate.service_category, "unit": unit, "unit_price": price})
    return values


async def _revision_rates(
    session: AsyncSession, keys: Sequence[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], list[Rate]]:
    """The rate cards of (view id, revision) pairs, by category and unit."""
    rates: dict[tuple[uuid.UUID, int], list[Rate]] = {key: [] for key in keys}
    if keys:
        query = (
            select(_PRR)
            .where(tuple_(_PRR.pricing_view_id, _PRR.revision).in_(list(rates)))
            .order_by(_PRR.pricing_view_id, _PRR.revision, _PRR.service_category, _PRR.unit)
        )
        for rate in (await session.scalars(query)).all():
            rates[(rate.pricing_view_id, rate.revision)].append(
                Rate(service_category=rate.service_category, unit=rate.unit, unit_price=rate.unit_price)
            )
    return rates


async def _pricing_dtos(session: AsyncSession, views: Sequence[models.PricingView]) -> list[PricingView]:
    keys = [(view.id, view.revision) for view in views]
    rates = await _revision_rates(session, keys)
    revisions: dict[tuple[uuid.UUID, int], models.PricingViewRevision] = {}
    if keys:
        query = select(_PVR).where(tuple_(_PVR.pricing_view_id, _PVR.revision).in_(keys))
        revisions = {(row.pricing_view_id, row.revision): row for row in (await session.scalars(query)).all()}
    return [
        PricingView(
            id=view.id,
            name=view.name,
            version=view.version,
            revision=view.revision,
            currency=view.currency,
            description=revisions[(view.id, view.revision)].description,
            rates=rates[(view.id, view.revision)],
            created_by=view.created_by,
            created_at=view.created_at,
            updated_by=revisions[(view.id, view.revision)].created_by,
            updated_at=revisions[(view.id, view.revision)].created_at,
        )
        for view in views
    ]


async def pricing_view_list(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> tuple[list[PricingView], str | None]:
    """Pricing views by name and version (keyset), each with its current revision."""
    rows, next_cursor = await keyset_page(
        session,
        select(_PV, _PV.name, _PV.version),
        key=[_PV.name, _PV.version],
        key_types=[str, int],
        limit=limit,
        cursor=cursor,
    )
    return await _pricing_dtos(session, [view for view, *_ in rows]), next_cursor


async def _pricing_view_row(
    session: AsyncSession, view_id: uuid.UUID, *, for_update: bool = False
) -> models.PricingView:
    query = select(_PV).where(_PV.id == view_id)
    if for_update:
        query = query.with_for_update()
    view = (await session.scalars(query)).first()
    if view is None:
        raise NotFoundError(f"no pricing view {view_id}")
    return view


async def pricing_view_get(session: AsyncSession, view_id: uuid.UUID, *, for_update: bool = False) -> PricingView:
    """One pricing view with its current rates; 404 when unknown.

    ``for_update`` locks the view's row: changes of one view queue there, so each gets the next revision.
    """
    view = await _pricing_view_row(session, view_id, for_update=for_update)
    return (await _pricing_dtos(session, [view]))[0]


async def pricing_view_revision_list(
    session: AsyncSession, view_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[PricingViewRevisionSummary], str | None]:
    """The kept revisions of a view, oldest first (keyset on the revision); 404 for an unknown view."""
    await _pricing_view_row(session, view_id)
    rate_count = (
        select(func.count())
        .where(_PRR.pricing_view_id == _PVR.pricing_view_id, _PRR.revision == _PVR.revision)
        .scalar_subquery()
    )
    # The key column is selected on its own too: keyset_page reads the cursor from the row by that column.
    query = select(_PVR, rate_count, _PVR.revision).where(_PVR.pricing_view_id == view_id)
    rows, next_cursor = await keyset_page(
        session, query, key=[_PVR.revision], key_types=[int], limit=limit, cursor=cursor
    )
    return [
        PricingViewRevisionSummary(
            revision=row.revision,
            description=row.description,
            rate_count=count,
            created_by=row.created_by,
            created_at=row.created_at,
        )
        for row, count, _ in rows
    ], next_cursor


async def pricing_view_revision_get(session: AsyncSession, view_id: uuid.UUID, revision: int) -> PricingViewRevision:
    """A view's rate card as it was at ``revision``; 404 for an unknown view or revision."""
    view = await _pricing_view_row(session, view_id)
    kept = (
        await session.scalars(select(_PVR).where(_PVR.pricing_view_id == view_id, _PVR.revision == revision))
    ).first()
    if kept is None:
        raise NotFoundError(
            f"pricing view {view.name} v{view.version} has no revision {revision} (it has 1 to {view.revision})"
        )
    rates = await _revision_rates(session, [(view_id, revision)])
    return PricingViewRevision(
        id=view.id,
        name=view.name,
        version=view.version,
        revision=revision,
        currency=view.currency,
        description=kept.description,
        rates=rates[(view_id, revision)],
        created_by=kept.created_by,
        created_at=kept.created_at,
    )


async def _add_revision(
    session: AsyncSession,
    view_id: uuid.UUID,
    revision: int,
    *,
    description: str | None,
    values: Sequence[Mapping[str, Any]],
    actor: str,
) -> None:
    """Keep one more revision of a view (rows the immutability trigger then guards) and make it current."""
    await session.execute(
        insert(_PVR).values(pricing_view_id=view_id, revision=revision, description=description, created_by=actor)
    )
    if values:
        await session.execute(
            insert(_PRR), [{"pricing_view_id": view_id, "revision": revision, **value} for value in values]
        )
    await session.execute(update(_PV).where(_PV.id == view_id).values(revision=revision))


async def pricing_view_create(
    session: AsyncSession, *, auditor: Auditor, data: PricingViewCreate, actor: str
) -> PricingView:
    """Create a pricing view at revision 1; a name already used gets the next version number."""
    name = _check_name(data.name, "name")
    currency = _check_currency(data.currency, "currency")
    values = _validated_rates(data.rates)
    # The same name makes the next version; the same name in other case is a different spelling of it, which
    # would list as a separate view: refused, so that each view has one spelling.
    await _lock_name(session, "pricing_view", name)
    spellings = (
        await session.scalars(select(_PV.name).distinct().where(func.lower(_PV.name) == func.lower(name)))
    ).all()
    taken = next((spelling for spelling in spellings if spelling != name), None)
    if taken is not None:
        raise ConflictError(
            f"a pricing view named {taken!r} already exists (names ignore case): use exactly that name for its next"
            " version",
            extra={"errors": [{"field": "name"}]},
        )
    latest = (await session.execute(select(func.max(_PV.version)).where(_PV.name == name))).scalar_one()
    view_id = uuid.uuid4()
    session.add(_PV(id=view_id, name=name, version=(latest or 0) + 1, revision=1, currency=currency, created_by=actor))
    await session.flush()
    await _add_revision(session, view_id, 1, description=data.description, values=values, actor=actor)
    created = await pricing_view_get(session, view_id)
    await auditor.record(
        action="pricing_view.create", entity_type="pricing_view", entity_id=str(view_id), after=_snapshot(created)
    )
    return created


async def _pricing_update(
    session: AsyncSession,
    *,
    auditor: Auditor,
    current: PricingView,
    action: str,
    description: str | msgspec.UnsetType | None,
    values: list[dict[str, Any]] | None,
    replace_rates: bool,
    actor: str,
) -> PricingView:
    """Make the next revision of ``current`` (locked by the caller) unless the change changes nothing.

    Earlier revisions are never touched, so a comparison against one of them gives the same values forever.
    A request leaving the description and every unit price as they are (prices compared as numbers: 0.050 is
    0.05) keeps the current revision: no empty revision. It is still audited, its before and after naming the
    same revision, as every PUT, PATCH and import is.
    """
    new_description = current.description if isinstance(description, msgspec.UnsetType) else description
    card = {(rate.service_category, rate.unit): rate.unit_price for rate in current.rates}
    if values is not None:
        if replace_rates:
            card = {}
        card.update({(value["service_category"], value["unit"]): value["unit_price"] for value in values})
    old_card = {(rate.service_category, rate.unit): rate.unit_price for rate in current.rates}
    if new_description == current.description and card == old_card:
        updated = current
    else:
        await _add_revision(
            session,
            current.id,
            current.revision + 1,
            description=new_description,
            values=[
                {"service_category": category, "unit": unit, "unit_price": price}
                for (category, unit), price in sorted(card.items())
            ],
            actor=actor,
        )
        session.expire_all()
        updated = await pricing_view_get(session, current.id)
    await auditor.record(
        action=action,
        entity_type="pricing_view",
        entity_id=str(current.id),
        before=_snapshot(current),
        after=_snapshot(updated),
    )
    return updated


async def pricing_view_replace(
    session: AsyncSession, *, auditor: Auditor, current: PricingView, data: PricingViewReplace, actor: str
) -> PricingView:
    """PUT: description and the whole rate card, as the view's next revision."""
    return await _pricing_update(
        session,
        auditor=auditor,
        current=current,
        action="pricing_view.replace",
        description=data.description,
        values=_validated_rates(data.rates),
        replace_rates=True,
        actor=actor,
    )


async def pricing_view_patch(
    session: AsyncSession, *, auditor: Auditor, current: PricingView, data: PricingViewPatch, actor: str
) -> PricingView:
    """PATCH: description and/or rates upserted by (category, unit), as the view's next revision."""
    values = None if isinstance(data.rates, msgspec.UnsetType) else _validated_rates(data.rates)
    return await _pricing_update(
        session,
        auditor=auditor,
        current=current,
        action="pricing_view.patch",
        description=data.description,
        values=values,
        replace_rates=False,
        actor=actor,
    )


_SERVICE_CATEGORY = _Column("service_category", ("servicecategory",))
_UNIT = _Column("unit", ("unit",))
_UNIT_PRICE = _Column("unit_price", ("unitprice",))


async def pricing_view_import(
    session: AsyncSession, *, auditor: Auditor, current: PricingView, upload: Upload, actor: str
) -> PricingView:
    """Replace a view's rates with an uploaded file's (columns service_category, unit, unit_price), as its next
    revision.

    Errors name the file's rows (``row 3.unit_price``); a file without data rows is refused (see ``_table``).
    """
    category, unit, price = (_column(upload, column) for column in (_SERVICE_CATEGORY, _UNIT, _UNIT_PRICE))
    prices = _file_amounts(upload, price, _UNIT_PRICE.name)
    rates = [
        Rate(
            service_category=_required(row, category, _SERVICE_CATEGORY.name),
            unit=_required(row, unit, _UNIT.name),
            unit_price=prices[row.number],
        )
        for row in upload.rows
    ]
    return await _pricing_update(
        session,
        auditor=auditor,
        current=current,
        action="pricing_view.import",
        description=msgspec.UNSET,
        values=_validated_rates(rates, _Locations.file(upload)),
        replace_rates=True,
        actor=actor,
    )


# ----------------------------------------------------------------------------------------------- allocation rules


_AR = models.AllocationRule
_AT = models.AllocationRuleTarget


async def _rule_dtos(session: AsyncSession, rules: Sequence[models.AllocationRule]) -> list[AllocationRule]:
    targets: dict[tuple[str, int], list[RuleTarget]] = {(rule.rule_id, rule.version): [] for rule in rules}
    if rules:
        query = (
            select(_AT)
            .where(tuple_(_AT.rule_id, _AT.version).in_(list(targets)))
            .order_by(_AT.rule_id, _AT.version, _AT.application_code)
        )
        for target in (await session.scalars(query)).all():
            targets[(target.rule_id, target.version)].append(
                RuleTarget(application_code=target.application_code, percentage=target.percentage)
            )
    return [
        AllocationRule(
            rule_id=rule.rule_id,
            version=rule.version,
            method=rule.method,
            valid_from=month_text(rule.valid_from),
            pool_code=rule.pool_code,
            driver=rule.driver,
            description=rule.description,
            targets=targets[(rule.rule_id, rule.version)],
            created_by=rule.created_by,
            created_at=rule.created_at,
        )
        for rule in rules
    ]


async def rule_list(
    session: AsyncSession, *, pool: str | None, all_versions: bool, limit: int, cursor: str | None
) -> tuple[list[AllocationRule], str | None]:
    """Rules by id (latest version only, or every version), keyset-paginated."""
    query = select(_AR, _AR.rule_id, _AR.version)
    if pool is not None:
        query = query.where(_AR.pool_code == pool)
    if not all_versions:
        latest = select(_AR.rule_id, func.max(_AR.version)).group_by(_AR.rule_id)
        query = query.where(tuple_(_AR.rule_id, _AR.version).in_(latest))
    rows, next_cursor = await keyset_page(
        session, query, key=[_AR.rule_id, _AR.version], key_types=[str, int], limit=limit, cursor=cursor
    )
    return await _rule_dtos(session, [rule for rule, *_ in rows]), next_cursor


async def rule_get(session: AsyncSession, rule_id: str, *, version: int | None = None) -> AllocationRule:
    """One version of a rule (the latest when ``version`` is None); 404 when unknown."""
    query = select(_AR).where(_AR.rule_id == rule_id)
    query = query.where(_AR.version == version) if version is not None else query.order_by(_AR.version.desc())
    rule = (await session.scalars(query.limit(1))).first()
    if rule is None:
        suffix = f" version {version}" if version is not None else ""
        raise NotFoundError(f"no allocation rule {rule_id!r}{suffix}")
    return (await _rule_dtos(session, [rule]))[0]


def _validated_targets(data: AllocationRuleCreate) -> list[dict[str, Any]]:
    seen: set[str] = set()
    values: list[dict[str, Any]] = []
    for index, target in enumerate(data.targets):
        field = f"targets[{index}]"
        code = _check_code(target.application_code, f"{field}.applicationCode")
        if code in seen:
            raise _invalid(f"{field}.applicationCode", f"duplicate application code {code!r}")
        seen.add(code)
        percentage = None
        if data.method == "fixed":
            if target.percentage is None:
                raise _invalid(f"{field}.percentage", "a fixed rule needs a percentage for every target")
            percentage = _parse_amount(target.percentage, f"{field}.percentage")
            if not Decimal(0) <= percentage <= _HUNDRED or percentage != round(percentage, 4):
                raise _invalid(f"{field}.percentage", "must be between 0 and 100 with at most 4 decimals")
        elif target.percentage is not None:
            raise _invalid(f"{field}.percentage", f"only fixed rules take percentages, not {data.method}")
        values.append({"application_code": code, "percentage": percentage})
    if data.method == "fixed":
        total = sum((value["percentage"] for value in values), Decimal(0))
        if total != _HUNDRED:
            raise _invalid("targets", f"fixed percentages must total exactly 100, not {total}")
    return values


async def _check_rule_references(
    session: AsyncSession, pool_code: str | None, targets: Sequence[dict[str, Any]]
) -> None:
    """400 naming an unknown pool (``dim_cost_pool``) or target applications (``dim_application``, any period).

    A rule for a pool that never lands splits nothing, and a target the CMDB does not know would send its
    share to UNALLOCATED: both are typos to report now rather than surprises after the next run.
    """
    if pool_code is not None and await _unknown_codes(session, models.DimCostPool.pool_code, [pool_code]):
        pools_known = (await session.execute(select(models.DimCostPool.pool_code).limit(1))).first() is not None
        raise _invalid("poolCode", f"unknown pool {pool_code!r}" + ("" if pools_known else f"; {_POOLS_EMPTY}"))
    unknown = await _unknown_codes(
        session, models.DimApplication.application_code, (target["application_code"] for target in targets)
    )
    found = [
        (f"targets[{index}].applicationCode", f"application {target['application_code']!r}")
        for index, target in enumerate(targets)
        if target["application_code"] in unknown
    ]
    if found:
        empty = None if await _hierarchy_loaded(session) else _HIERARCHY_EMPTY
        raise _unknown_references("target applications (checked against the CMDB)", found, empty=empty)


async def _check_pool_unclaimed(session: AsyncSession, rule_id: str, pool_code: str | None) -> None:
    """409 when another rule already has a version for this pool (or, for ``pool_code`` None, is a fallback)
    and this rule has none.

    A version has no end: the pipeline splits a pool, each month, with the version of latest ``validFrom`` among
    every version naming that pool (``pipeline.select_rule``). Two rules for one pool therefore always overlap,
    and which one wins would hang on their start months or, for equal ones, on version numbers. One rule per
    pool keeps the answer readable: its versions, by ``validFrom``. A change of method is a new version.
    """
    # Serialises rules for the same pool: the row lock below only covers versions of the same rule.
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtext(f"finops.allocation_rule.pool:{pool_code or ''}")))
    )
    same_pool = _AR.pool_code.is_not_distinct_from(pool_code)
    # A rule that already has a version for this pool may always add one, even where rivals were stored before
    # this check existed: otherwise neither of them could ever change again.
    if (await session.execute(select(_AR.version).where(same_pool, _AR.rule_id == rule_id).limit(1))).first():
        return
    claim = (
        await session.execute(
            select(_AR.rule_id, func.max(_AR.version), func.min(_AR.valid_from))
            .where(same_pool, _AR.rule_id != rule_id)
            .group_by(_AR.rule_id)
            .order_by(_AR.rule_id)
            .limit(1)
        )
    ).first()
    if claim is not None:
        other, version, valid_from = claim
        target = f"pool {pool_code!r}" if pool_code is not None else "pools without a rule of their own (fallback)"
        raise ConflictError(
            f"poolCode: rule {other!r} (version {version}, from {month_text(valid_from)}) already splits {target}:"
            f" add a version of {other!r} instead (POST with ruleId {other!r})",
            extra={"errors": [{"field": "poolCode", "message": f"claimed by rule {other!r}"}], "ruleId": other},
        )


async def rule_create_version(
    session: AsyncSession, *, auditor: Auditor, data: AllocationRuleCreate, actor: str
) -> AllocationRule:
    """Add version 1 of a new rule, or the next version of an existing one (versions never change)."""
    rule_id = data.rule_id.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", rule_id):
        raise _invalid("ruleId", "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    valid_from = parse_month(data.valid_from, "validFrom")
    if data.method == "usage" and not (data.driver or "").strip():
        raise _invalid("driver", "a usage rule names its usage driver (e.g. requests, vcpu_hours)")
    if data.method != "usage" and data.driver:
        raise _invalid("driver", f"only usage rules take a driver, not {data.method}")
    pool_code = _check_code(data.pool_code, "poolCode") if data.pool_code is not None else None
    driver = _check_code(data.driver, "driver") if data.driver else None
    targets = _validated_targets(data)
    await _check_rule_references(session, pool_code, targets)
    await _check_pool_unclaimed(session, rule_id, pool_code)
    # The row lock on the rule's latest version makes concurrent new versions queue instead of colliding.
    latest = (
        await session.execute(
            select(_AR.version).where(_AR.rule_id == rule_id).order_by(_AR.version.desc()).limit(1).with_for_update()
        )
    ).scalar_one_or_none()
    version = (latest or 0) + 1
    session.add(
        _AR(
            rule_id=rule_id,
            version=version,
            pool_code=pool_code,
            method=data.method,
            driver=driver,
            valid_from=valid_from,
            description=data.description,
            created_by=actor,
        )
    )
    await session.flush()
    if targets:
        await session.execute(insert(_AT), [{"rule_id": rule_id, "version": version, **value} for value in targets])
    created = await rule_get(session, rule_id, version=version)
    await auditor.record(
        action="allocation_rule.create_version",
        entity_type="allocation_rule",
        entity_id=f"{rule_id}@{version}",
        after=_snapshot(created),
    )
    return created


# ----------------------------------------------------------------------------------------------- mapping aliases

_MA = models.MappingAlias
_ALIAS_LENGTH = 255
# The folded form finops-batch matches source values on (``pipeline.Aliases``), unique per kind (finops_0009).
_FOLDED_ALIAS = func.lower(func.btrim(_MA.alias))


def _alias_dto(row: models.MappingAlias) -> MappingAlias:
    # The struct's fields are the table's columns, by the same names.
    return MappingAlias(**{name: getattr(row, name) for name in MappingAlias.__struct_fields__})


def _alias_kind(kind: str, field: str) -> str:
    if kind not in models.ALIAS_KINDS:
        raise _invalid(field, f"expected one of {', '.join(models.ALIAS_KINDS)}, got {kind!r}")
    return kind


def _alias_text(value: str, field: str, length: int) -> str:
    value = value.strip()
    if not value or len(value) > length:
        raise _invalid(field, f"must be 1 to {length} characters")
    if any(character < " " for character in value):
        raise _invalid(field, "must not contain control characters (tabs, line breaks)")
    return value


async def _canonical_value(session: AsyncSession, kind: str, value: str) -> str:
    """``value`` as finops-batch writes it for ``kind``: 400 when the batch could never produce or use it.

    Each kind lands in a column of its own width, and three name things the mart already knows: the tag keys the
    mapping reads, the 19 FOCUS service categories, the CMDB's application codes (spelled as the CMDB does).
    """
    if kind == "tag_key":
        key = _alias_text(value, "canonical", _ALIAS_LENGTH).lower()
        if key not in pipeline.MAPPED_TAG_KEYS:
            keys = " or ".join(pipeline.MAPPED_TAG_KEYS)
            raise _invalid("canonical", f"finops-batch reads the tag keys {keys}, not {key!r}")
        return key
    if kind == "service_category":
        text = _alias_text(value, "canonical", _CODE_LENGTH)
        for name in models.SERVICE_CATEGORIES:
            if name.lower() == text.lower():
                return name
        raise _invalid("canonical", f"{text!r} is not one of the 19 FOCUS service categories")
    if kind == "environment":
        code = _alias_text(value, "canonical", 32).lower()
        if code == models.SHARED_ENVIRONMENT:
            raise _invalid("canonical", "'shared' holds the allocated pools only; no cost line is mapped to it")
        return code
    if kind == "provider":
        return _alias_text(value, "canonical", _CODE_LENGTH).lower()
    text = _alias_text(value, "canonical", _CODE_LENGTH)
    application = (
        await session.execute(
            select(models.DimApplication.application_code)
            .where(func.lower(models.DimApplication.application_code) == text.lower())
            .order_by(models.DimApplication.application_code)
            .limit(1)
        )
    ).scalar_one_or_none()
    if application is None:
        empty = "" if await _hierarchy_loaded(session) else f"; {_HIERARCHY_EMPTY}"
        raise _invalid("canonical", f"no application {text!r} in the CMDB hierarchy{empty}")
    return application


async def alias_list(
    session: AsyncSession, *, kind: str | None, limit: int, cursor: str | None
) -> tuple[list[MappingAlias], str | None]:
    """Aliases by kind, then alias (case-folded), keyset-paginated."""
    query = select(_MA, _MA.kind, _FOLDED_ALIAS)
    if kind is not None:
        query = query.where(_MA.kind == _alias_kind(kind, "kind"))
    # The cursor carries PostgreSQL's folding, not Python's: the two differ on a few non-ASCII letters.
    rows, next_cursor = await keyset_page(
        session, query, key=[_MA.kind, _FOLDED_ALIAS], key_types=[str, str], limit=limit, cursor=cursor
    )
    return [_alias_dto(row) for row, _, _ in rows], next_cursor


async def alias_get(session: AsyncSession, alias_id: int, *, for_update: bool = False) -> MappingAlias:
    """One alias; 404 when unknown."""
    query = select(_MA).where(_MA.id == alias_id)
    row = (await session.scalars(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise NotFoundError(f"no mapping alias {alias_id}")
    return _alias_dto(row)


def _alias_audit_id(kind: str, alias: str) -> str:
    # Stable across a delete and a re-creation, so one look-up gives an alias's whole history.
    return f"{kind}:{alias.strip().lower()}"


async def alias_create(
    session: AsyncSession, *, auditor: Auditor, data: MappingAliasCreate, actor: str
) -> MappingAlias:
    """Add an alias; 409 when the kind already has it (any case), 400 when it would chain with another.

    finops-batch resolves an alias in one step, so an alias whose canonical value is itself an alias, or an alias
    of a value other aliases point to, would leave source values half-translated: both are refused, naming the
    alias to change instead.
    """
    kind = _alias_kind(data.kind, "kind")
    alias = _alias_text(data.alias, "alias", _ALIAS_LENGTH)
    folded = alias.lower()
    canonical = await _canonical_value(session, kind, data.canonical)
    if canonical.lower() == folded:
        raise _invalid("canonical", f"{alias!r} would be its own alias")
    if kind == "tag_key" and folded in pipeline.MAPPED_TAG_KEYS:
        raise _invalid("alias", f"{folded!r} is a tag key finops-batch reads; it cannot stand for another")
    # Serialises the aliases of one kind: the checks below read what a concurrent creation would change.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"finops.mapping_alias:{kind}"))))
    same_kind = select(_MA).where(_MA.kind == kind)
    taken = (await session.scalars(same_kind.where(func.lower(alias) == _FOLDED_ALIAS))).first()
    if taken is not None:
        raise ConflictError(
            f"alias: {kind} {taken.alias!r} already means {taken.canonical!r} (alias {taken.id}):"
            " delete it first to change its meaning",
            extra={"errors": [{"field": "alias", "message": "already defined"}], "aliasId": taken.id},
        )
    chained = (await session.scalars(same_kind.where(func.lower(canonical) == _FOLDED_ALIAS))).first()
    if chained is not None:
        raise _invalid(
            "canonical",
            f"{canonical!r} is itself an alias of {chained.canonical!r} (alias {chained.id}):"
            f" name {chained.canonical!r}",
        )
    feeding = (
        await session.scalars(same_kind.where(func.lower(_MA.canonical) == func.lower(alias)).order_by(_FOLDED_ALIAS))
    ).all()
    if feeding:
        names = ", ".join(repr(row.alias) for row in feeding)
        raise _invalid(
            "alias",
            f"{alias!r} is what {names} stand for: delete those first, or alias them to {canonical!r} instead",
        )
    row = _MA(kind=kind, alias=alias, canonical=canonical, created_by=actor)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    created = _alias_dto(row)
    await auditor.record(
        action="mapping_alias.create",
        entity_type="mapping_alias",
        entity_id=_alias_audit_id(kind, alias),
        after=_snapshot(created),
    )
    return created


async def alias_delete(session: AsyncSession, *, auditor: Auditor, current: MappingAlias) -> None:
    """Remove an alias (seeded ones included); months already built keep their mapping until rebuilt."""
    await session.execute(delete(_MA).where(_MA.id == current.id))
    await auditor.record(
        action="mapping_alias.delete",
        entity_type="mapping_alias",
        entity_id=_alias_audit_id(current.kind, current.alias),
        before=_snapshot(current),
    )


# ----------------------------------------------------------------------------------------------- measures


@dataclass(frozen=True)
class Measure:
    """One side of a comparison: actual costs, a budget version or a pricing view's valuation.

    ``revision`` is the budget revision whose lines are compared, or the pricing view revision whose rates value
    the quantities: resolved once, here, so the label names exactly what the numbers come from. ``currencies``
    are those of a budget revision's lines (sorted): ``currency`` is set when there is exactly one, otherwise
    the comparison's ``currency=`` must pick one.
    """

    kind: Literal["actual", "budget", "pricing_view"]
    id: uuid.UUID | None
    label: str
    currency: str | None = None
    revision: int | None = None
    currencies: tuple[str, ...] = ()


_MEASURES = "actual, budget:<id>, budget:<id>@<revision>, pricing-view:<id> or pricing-view:<id>@<revision>"


async def measure(session: AsyncSession, reference: str, *, field: str) -> Measure:
    """Resolve ``actual``, ``budget:<id>`` or ``pricing-view:<id>`` (the current revision), ``budget:<id>@<n>`` or
    ``pricing-view:<id>@<n>`` (revision n); 400 on bad syntax, 404 when unknown."""
    reference = reference.strip()
    if reference == "actual":
        return Measure(kind="actual", id=None, label="actual")
    kind, _, raw_id = reference.partition(":")
    if kind not in ("budget", "pricing-view") or not raw_id:
        raise _invalid(field, f"expected {_MEASURES}, got {reference!r}")
    raw_id, at, raw_revision = raw_id.partition("@")
    try:
        measure_id = uuid.UUID(raw_id)
    except ValueError:
        raise _invalid(field, f"{raw_id!r} is not a valid id") from None
    revision = None
    if at:
        if not _REVISION.match(raw_revision) or int(raw_revision) > MAX_REVISION:
            raise _invalid(field, f"expected {kind}:<id>@<revision>, a revision from 1, got {reference!r}")
        revision = int(raw_revision)
    if kind == "budget":
        return await _budget_measure(session, measure_id, revision, field=field)
    try:
        view = await _pricing_view_row(session, measure_id)
    except NotFoundError as error:
        raise _not_found(field, error.detail) from None
    if revision is None:
        revision = view.revision
    elif revision > view.revision:
        # Revisions run from 1 to the current one without gaps: a higher number was never made.
        raise _not_found(
            field, f"pricing view {view.name} v{view.version} has no revision {revision} (it has 1 to {view.revision})"
        )
    return Measure(
        kind="pricing_view",
        id=measure_id,
        label=f"pricing-view:{view.name} v{view.version} r{revision}",
        currency=view.currency,
        revision=revision,
    )


async def _budget_measure(session: AsyncSession, budget_id: uuid.UUID, revision: int | None, *, field: str) -> Measure:
    """A budget side at ``revision`` (None: the current one), labelled with the name that revision had."""
    try:
        version = await _budget_version(session, budget_id, for_update=False)
    except NotFoundError as error:
        raise _not_found(field, error.detail) from None
    if revision is None:
        revision = version.revision
    kept = (await _revision_rows(session, [(budget_id, revision)])).get((budget_id, revision))
    if kept is None:
        raise _not_found(field, _no_such_revision(version, revision))
    currencies = await _budget_currencies(session, budget_id, revision)
    # The revision's own name: asked for again after a rename, the comparison still reads as it did.
    return Measure(
        kind="budget",
        id=budget_id,
        label=f"budget:{kept.name} r{revision}",
        revision=revision,
        currency=currencies[0] if len(currencies) == 1 else None,
        currencies=currencies,
    )


async def _budget_currencies(session: AsyncSession, budget_id: uuid.UUID, revision: int) -> tuple[str, ...]:
    """The currencies a budget revision's lines are in, sorted (a budget has no currency of its own)."""
    query = (
        select(_BL.currency)
        .where(_BL.budget_version_id == budget_id, _BL.revision == revision)
        .distinct()
        .order_by(_BL.currency)
    )
    return tuple((await session.scalars(query)).all())


# ----------------------------------------------------------------------------------------------- batch


def batch_parameters(request: BatchRunRequest) -> dict[str, str]:
    """Validated parameters of a finops-batch run: ``period``, or ``from``/``to`` (months)."""
    parameters: dict[str, str] = {}
    if request.period is not None:
        if request.period_from is not None or request.period_to is not None:
            raise _invalid("period", "give either period or from/to, not both")
        parameters["period"] = month_text(_not_future(parse_month(request.period, "period"), "period"))
    if request.period_from is not None or request.period_to is not None:
        if request.period_from is None or request.period_to is None:
            raise _invalid("from" if request.period_from is None else "to", "from and to go together")
        start = parse_month(request.period_from, "from")
        end = _not_future(parse_month(request.period_to, "to"), "to")
        if start > end:
            raise _invalid("from", f"{month_text(start)} is after to {month_text(end)}")
        span = (end.year - start.year) * 12 + end.month - start.month + 1
        if span > MAX_RUN_MONTHS:
            # 1990-01..2100-12 is a typo, not a rebuild: 1,332 empty partitions and as many swaps.
            raise _invalid("from", f"a run rebuilds at most {MAX_RUN_MONTHS} months; {span} asked: split the range")
        parameters["from"] = month_text(start)
        parameters["to"] = month_text(end)
    if request.allow_empty:
        if not parameters:
            # A run of every month found only touches months that have sources: nothing could be emptied.
            raise _invalid("allowEmpty", "applies to the months named by period or from/to (--period, --from/--to)")
        parameters["allowEmpty"] = "true"
    return parameters


def allow_empty_from_parameters(parameters: Mapping[str, Any]) -> bool:
    """Whether a run's parameters ask to empty requested months that have no sources (see ``rebuild_periods``)."""
    return parameters.get("allowEmpty") == "true"


def _not_future(month: date, field: str) -> date:
    """``month`` unless it starts after the current month (UTC): nothing can be billed for it yet."""
    current = datetime.now(UTC).date().replace(day=1)
    if month > current:
        raise _invalid(field, f"{month_text(month)} is in the future (the current month is {month_text(current)})")
    return month


# ------------------------------------------------------------------------------------ finops-batch use cases
# Used by ``rosetta.batch.finops``: the batch reads the raw zone (through the RawStore, which this context may
# not import) and hands the documents over as a ``RawReader``. Unlike the CRUD use cases above, a rebuild
# manages its own transactions (one per month swap, see ``rosetta.finops.pipeline``), so it takes the engine.

RawReader = pipeline.RawReader
RunHooks = pipeline.RunHooks
RebuildReport = pipeline.RebuildReport


def periods_from_parameters(parameters: Mapping[str, Any]) -> list[date] | None:
    """The months a run rebuilds from its parameters (``period`` or ``from``/``to``); None = every month found."""
    request = BatchRunRequest(
        period=parameters.get("period"),
        period_from=parameters.get("from"),
        period_to=parameters.get("to"),
        allow_empty=allow_empty_from_parameters(parameters),
    )
    checked = batch_parameters(request)
    if "period" in checked:
        return [parse_month(checked["period"], "period")]
    if "from" in checked:
        month, last = parse_month(checked["from"], "from"), parse_month(checked["to"], "to")
        months = []
        while month <= last:
            months.append(month)
            month = pipeline.next_month(month)
        return months
    return None


async def rebuild_periods(
    engine: AsyncEngine,
    reader: RawReader,
    *,
    run_id: uuid.UUID,
    hooks: RunHooks,
    periods: Sequence[date] | None = None,
    report: RebuildReport | None = None,
    allow_empty: bool = False,
) -> RebuildReport:
    """Rebuild the data mart for ``periods`` (default: every month in the raw zone) and refresh the views.

    A requested month without any source in the raw zone while the mart holds data for it is refused
    (``pipeline.EmptyMonthError``, nothing swapped) unless ``allow_empty``.

    Each month is swapped in its own transaction after its SQL conservation checks pass; a month another run
    is rebuilding raises ``ConflictError``; a failed month leaves its previous data untouched. The counts go
    to ``report`` (a new one by default) as the run goes, so a caller holding it still has them after a failure.
    """
    return await pipeline.rebuild(
        engine, reader, run_id=run_id, hooks=hooks, periods=periods, report=report, allow_empty=allow_empty
    )


BATCH_ACTOR = "batch:finops"
BUDGET_SOURCE = "finance"
BUDGET_KIND = "budget"
_BUDGET_CHUNK = 1_000


@dataclass
class BudgetImportReport:
    """What importing ``finance/budget`` documents did."""

    versions_created: int = 0
    lines_changed: int = 0
    rejected: int = 0


def _raw_budget_line(payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A ``finance/budget`` payload as (version name, line values); BadRequestError when it is not usable."""
    name = _check_name(str(payload.get("version") or ""), "version")
    year, month = payload.get("year"), payload.get("month")
    if not isinstance(year, int) or not isinstance(month, int) or not 1 <= month <= 12:
        raise _invalid("month", f"expected integer year and month, got {year!r}-{month!r}")
    level = payload.get("scope_level")
    if level not in models.SCOPE_LEVELS:
        raise _invalid("scope_level", f"expected one of {', '.join(models.SCOPE_LEVELS)}, got {level!r}")
    code = str(payload.get("scope_code") or "").strip()
    if not code:
        raise _invalid("scope_code", "must not be empty")
    try:
        amount = Decimal(str(payload.get("amount")))
    except InvalidOperation:
        raise _invalid("amount", f"not a decimal amount: {payload.get('amount')!r}") from None
    line = {
        "scope_level": level,
        "scope_code": code,
        "month": date(year, month, 1),
        "amount": _check_cents(_check_amount(amount, "amount"), "amount"),
        "currency": _check_currency(str(payload.get("currency") or ""), "currency"),
    }
    return name, line


async def import_budgets(session: AsyncSession, reader: RawReader, *, run_id: uuid.UUID) -> BudgetImportReport:
    """Load ``finance/budget`` documents into budget versions (created if missing), audited per version.

    Each document is applied once, by the first run that reads it (``budget_landed_line`` keeps its content
    hash): its line is upserted by (scope, month), so a line an admin added stays, and a newly landed line wins
    over an edited one; an admin's edit made after the landing stands until a new document lands for that line.
    A version whose lines change gets its next revision (a new one, revision 1), as an API change would, audited
    with the lines before and after; otherwise nothing is touched (no revision, no audit row), so reruns are
    silent. The rejected documents replace those of the previous run (every run validates every budget
    document again).
    """
    report = BudgetImportReport()
    await session.execute(
        delete(models.BatchRejection).where(
            models.BatchRejection.source == BUDGET_SOURCE, models.BatchRejection.kind == BUDGET_KIND
        )
    )

    def reject(document: pipeline.RawLine, reason: str) -> None:
        report.rejected += 1
        session.add(
            models.BatchRejection(
                run_id=run_id,
                source=document.source,
                kind=document.kind,
                content_hash=document.content_hash,
                reason_code="invalid_budget_line",
                reason=reason,
                payload=document.payload,
            )
        )

    read: list[tuple[str, dict[str, Any], pipeline.RawLine]] = []
    async for document in reader(source=BUDGET_SOURCE, kind=BUDGET_KIND):
        try:
            name, line = _raw_budget_line(document.payload)
        except BadRequestError as error:
            reject(document, error.detail)
            continue
        read.append((name, line, document))
    # As the API refuses them: a line whose scope the hierarchy does not know at its level (any validity period)
    # would match no node of any comparison and only show as "unmatched".
    unknown = {
        level: await _unknown_codes(
            session, column, (line["scope_code"] for _, line, _ in read if line["scope_level"] == level)
        )
        for level, column in _SCOPE_CODE_COLUMNS.items()
    }
    applied = set(
        await session.scalars(
            select(_LANDED.content_hash).where(
                _LANDED.content_hash
                == any_(bindparam("hashes", [document.content_hash for _, _, document in read], type_=ARRAY(String)))
            )
        )
    )
    wanted: dict[str, dict[tuple[str, str, date], dict[str, Any]]] = {}
    landed: dict[str, list[str]] = {}
    for name, line, document in read:
        if document.content_hash in applied:
            continue
        level, code = line["scope_level"], line["scope_code"]
        if code in unknown[level]:
            reject(document, f"scope_code: unknown {level} {code!r} (checked against the CMDB hierarchy, at its level)")
            continue
        wanted.setdefault(name, {})[(level, code, line["month"])] = line
        landed.setdefault(name, []).append(document.content_hash)
    for name, lines in sorted(wanted.items()):
        # Locked as the API locks a version it changes: each change of one version gets the next revision.
        version = (await session.execute(select(_BV).where(_BV.name == name).with_for_update())).scalar_one_or_none()
        created = version is None
        current = {} if version is None else await _line_map(session, version.id, version.revision)
        changed = {
            key: line for key, line in sorted(lines.items()) if current.get(key) != (line["amount"], line["currency"])
        }
        if not changed:
            if version is not None:
                await _record_landed(session, landed[name], version.id, version.revision, run_id)
            continue
        if version is None:
            version = _BV(id=uuid.uuid4(), name=name, revision=1, created_by=BATCH_ACTOR)
            session.add(version)
            await session.flush()
            revision = 1
            description: str | None = "Imported from the raw zone (finance/budget)"
            report.versions_created += 1
        else:
            revision = version.revision + 1
            kept = await _revision_rows(session, [(version.id, version.revision)])
            description = kept[(version.id, version.revision)].description
        await _add_budget_revision(
            session,
            version.id,
            revision,
            name=name,
            description=description,
            lines={**current, **{key: (line["amount"], line["currency"]) for key, line in changed.items()}},
            actor=BATCH_ACTOR,
        )
        await _record_landed(session, landed[name], version.id, revision, run_id)
        report.lines_changed += len(changed)
        # The changed lines before and after, as the API's audit rows keep them: the trail alone says what the run
        # replaced (an admin's edit included), not only how many lines.
        await record_audit(
            session,
            actor_subject=BATCH_ACTOR,
            actor_roles=(),
            action="budget.import.raw",
            # The API's name for the same entity: one filter (entityType=budget_version) finds every change.
            entity_type="budget_version",
            entity_id=str(version.id),
            before=None
            if created
            else {
                "revision": revision - 1,
                "lines": _line_rows({key: current[key] for key in changed if key in current}),
            },
            after={
                "name": name,
                "changedLines": len(changed),
                "created": created,
                "revision": revision,
                "runId": str(run_id),
                "lines": _line_rows({key: (line["amount"], line["currency"]) for key, line in changed.items()}),
            },
        )
    return report


async def _record_landed(
    session: AsyncSession, hashes: Sequence[str], budget_id: uuid.UUID, revision: int, run_id: uuid.UUID
) -> None:
    """Mark documents as applied to a budget, so later runs leave the lines they set to the admins."""
    await session.execute(
        insert(_LANDED),
        [
            {"content_hash": content_hash, "budget_version_id": budget_id, "revision": revision, "run_id": run_id}
            # One document may repeat a line another one landed: each hash is recorded once.
            for content_hash in dict.fromkeys(hashes)
        ],
    )


async def batch_rejections(
    session: AsyncSession, run_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[BatchRejection], str | None]:
    """The rejected documents run ``run_id`` stored and no later run has replaced, in the order stored (keyset).

    A later run that rebuilds the same month (or, for the CMDB hierarchy, budgets and undated lines, any later
    run that reads them again) replaces them: ``batch_rejection`` explains the data the mart holds now.
    """
    table = models.BatchRejection
    page, next_cursor = await keyset_page(
        session,
        select(table, table.id).where(table.run_id == run_id),
        key=[table.id],
        key_types=[int],
        limit=limit,
        cursor=cursor,
    )
    rows = [rejection for rejection, _ in page]
    return [
        BatchRejection(
            id=row.id,
            run_id=row.run_id,
            reason_code=row.reason_code,
            reason=row.reason,
            period=None if row.period_month is None else month_text(row.period_month),
            source=row.source,
            kind=row.kind,
            content_hash=row.content_hash,
            payload=row.payload,
            rejected_at=row.rejected_at,
        )
        for row in rows
    ], next_cursor


async def mart_built(session: AsyncSession) -> bool:
    """True once finops-batch has swapped in at least one month (``rosetta dev`` builds the mart otherwise)."""
    return bool((await session.execute(select(models.FactPeriodControl.period_month).limit(1))).first())

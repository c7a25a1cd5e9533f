"""Lists as CSV: content negotiation, columns fixed by the item schema, cells safe to open in a spreadsheet.

A list route offers ``text/csv`` beside JSON (``opt={CSV_OPT: True}``, answering through
:func:`list_response`); the client asks for it with ``Accept: text/csv``. The ``Accept`` header is read as
RFC 9110 says (q-values, ``text/*`` and ``*/*``, the most specific range winning), JSON first: CSV only when
the client prefers it (:func:`wants_csv`), so ``text/csv;q=0`` is JSON.

The header row comes from the item *type*, never from the data, so two exports of the same route always have
the same columns in the same order, an empty list included:

- one column per struct member, in declared order, named as on the wire (camelCase);
- a nested struct is flattened to ``parent.child`` columns (empty cells when it is null);
- a list or a map (whose keys are data, such as ``totals`` per currency) is one column holding its JSON text,
  keys sorted, so new keys never add or move columns;
- decimals are written fixed-point (``20000``, never ``2E+4``; inside JSON text too), booleans ``true``/``false``,
  null as empty.

Finance users open these files in Excel: a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return would be read as a formula (CSV injection), so it gets a leading ``'``. Numbers are left
alone, so a negative amount such as ``-3.33`` stays a number.

A route that offers JSON only answers 406 when the client accepts CSV and refuses JSON (``text/csv``,
``text/*``: :func:`refuse_csv_unless_offered`), rather than sending JSON the client did not ask for.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from msgspec import inspect as schema

from rosetta.core.errors import NotAcceptableError
from rosetta.core.openapi import CSV_OPT
from rosetta.core.pagination import MAX_LIMIT, check_limit, next_link
from rosetta.core.schemas import Page
from rosetta.core.wire import Response, encode_json, plain_decimal

T = TypeVar("T")

CSV_MEDIA_TYPE = "text/csv"
JSON_MEDIA_TYPE = "application/json"

# What Excel, LibreOffice and Google Sheets read as the start of a formula (OWASP "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# RFC 9110 qvalue: 0 to 1 with at most 3 decimals.
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")


@dataclass(frozen=True)
class _Acceptance:
    """What an ``Accept`` header says of one media type: the q of the most specific range covering it.

    ``specificity`` is 2 when the type is named (``text/csv``), 1 for ``text/*``, 0 for ``*/*`` and -1 when no
    range covers it (``quality`` 0: not acceptable).
    """

    quality: float
    specificity: int


def _ranges(header: str) -> list[tuple[str, str, float]]:
    """The media ranges of an ``Accept`` value as (type, subtype, q); a malformed range or q is left out."""
    ranges = []
    for part in header.split(","):
        media, *parameters = part.split(";")
        main, _, sub = media.strip().lower().partition("/")
        if not main or not sub or (main == "*" and sub != "*"):
            continue
        quality: float | None = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                quality = float(value.strip()) if _QVALUE.match(value.strip()) else None
        if quality is not None:
            ranges.append((main, sub, quality))
    return ranges


def _acceptance(ranges: list[tuple[str, str, float]], media_type: str) -> _Acceptance:
    # RFC 9110 12.5.1: a more specific range overrides a wider one ("text/csv;q=0, */*" refuses CSV).
    main, _, sub = media_type.partition("/")
    best = _Acceptance(0.0, -1)
    for range_main, range_sub, quality in ranges:
        if range_main == "*":
            specificity = 0
        elif range_main != main:
            continue
        elif range_sub == "*":
            specificity = 1
        elif range_sub == sub:
            specificity = 2
        else:
            continue
        if specificity > best.specificity or (specificity == best.specificity and quality > best.quality):
            best = _Acceptance(quality, specificity)
    return best


@lru_cache(maxsize=256)
def _negotiated(header: bytes) -> tuple[_Acceptance, _Acceptance]:
    """How ``header`` accepts JSON and CSV; cached, as clients send the same few values again and again."""
    ranges = _ranges(header.decode("latin-1"))
    return _acceptance(ranges, JSON_MEDIA_TYPE), _acceptance(ranges, CSV_MEDIA_TYPE)


def _accept_header(connection: ASGIConnection[Any, Any, Any, Any]) -> bytes | None:
    """The raw ``Accept`` value, or None when it cannot make CSV acceptable (so JSON it is, unparsed).

    Only a range naming CSV, ``text/*`` or ``*/*`` covers text/csv. Most reads send no such header (or
    exactly ``*/*``, which prefers neither): a look at the raw bytes spares parsing them.
    """
    values = [value for name, value in connection.scope["headers"] if name == b"accept"]
    header = b",".join(values)
    if not header or header == b"*/*" or (b"*" not in header and b"csv" not in header.lower()):
        return None
    return header


def wants_csv(request: Request[Any, Any, Any]) -> bool:
    """True when the client prefers CSV to JSON (``Accept: text/csv``).

    JSON first: CSV when the client gives it a higher q than JSON, or the same q through a more specific range
    (``text/csv, */*``); ``*/*``, nothing, an equal tie (``text/csv, application/json``) or ``text/csv;q=0`` get
    JSON.
    """
    header = _accept_header(request)
    if header is None:
        return False
    for_json, for_csv = _negotiated(header)
    return for_csv.quality > 0 and (
        for_csv.quality > for_json.quality
        or (for_csv.quality == for_json.quality and for_csv.specificity > for_json.specificity)
    )


def accepts_only_csv(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """True when the client accepts CSV and refuses JSON (``Accept: text/csv``, ``text/*``).

    A header that accepts neither (``text/csv;q=0`` alone, ``text/html``) is not honoured: such a client gets
    JSON, as a client sending no ``Accept`` does (RFC 9110 12.5.1 allows either).
    """
    header = _accept_header(connection)
    if header is None:
        return False
    for_json, for_csv = _negotiated(header)
    return for_csv.quality > 0 and for_json.quality == 0


class _RefuseCsvUnlessOffered:
    """Guard of a route family: 406 when the client accepts only CSV and the route offers JSON only."""

    def openapi_errors(self, opt: Mapping[str, Any]) -> tuple[int, ...]:
        """What rosetta.core.openapi documents for a route under this guard: 406 unless it offers CSV."""
        return () if opt.get(CSV_OPT) else (406,)

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not handler.opt.get(CSV_OPT) and accepts_only_csv(connection):
            raise NotAcceptableError(
                f"this route answers {JSON_MEDIA_TYPE} only (it is one document, not a list to export as CSV)",
                extra={"availableMediaTypes": [JSON_MEDIA_TYPE]},
            )


refuse_csv_unless_offered = _RefuseCsvUnlessOffered()


@dataclass(frozen=True)
class Column:
    """A CSV column: its header and the attribute path to its value (``("previous_month", "total")``)."""

    header: str
    path: tuple[str, ...]
    as_json: bool


def _struct_of(info: schema.Type) -> schema.StructType | None:
    # A nested struct, or an optional one (its columns are empty when it is null).
    if isinstance(info, schema.Metadata):
        return _struct_of(info.type)
    if isinstance(info, schema.StructType):
        return info
    if isinstance(info, schema.UnionType):
        structs = [member for member in info.types if isinstance(member, schema.StructType)]
        others = [member for member in info.types if not isinstance(member, (schema.StructType, schema.NoneType))]
        if len(structs) == 1 and not others:
            return structs[0]
    return None


def _is_container(info: schema.Type) -> bool:
    if isinstance(info, schema.Metadata):
        return _is_container(info.type)
    if isinstance(info, schema.UnionType):
        return any(_is_container(member) for member in info.types)
    return isinstance(
        info, (schema.ListType, schema.DictType, schema.SetType, schema.TupleType, schema.VarTupleType, schema.AnyType)
    )


def _columns_of(struct: schema.StructType, header: str, path: tuple[str, ...]) -> list[Column]:
    columns: list[Column] = []
    for field in struct.fields:
        name = f"{header}.{field.encode_name}" if header else field.encode_name
        nested = _struct_of(field.type)
        if nested is not None:
            columns.extend(_columns_of(nested, name, (*path, field.name)))
        else:
            columns.append(Column(name, (*path, field.name), _is_container(field.type)))
    return columns


@cache
def csv_columns(item_type: type[msgspec.Struct]) -> tuple[Column, ...]:
    """The columns of a list of ``item_type``, fixed by its schema (module docstring)."""
    info = schema.type_info(item_type)
    if not isinstance(info, schema.StructType):
        raise TypeError(f"CSV exports lists of structs, not {item_type!r}")
    return tuple(_columns_of(info, "", ()))


def _neutralised(text: str) -> str:
    if text.startswith(_FORMULA_START) and not _NUMBER.match(text):
        return "'" + text
    return text


def cell(value: Any, *, as_json: bool = False) -> str:
    """The text of one CSV cell (module docstring: fixed-point decimals, JSON containers, no formulas)."""
    if value is None:
        return ""
    if as_json:
        return _neutralised(encode_json(value, order="sorted").decode())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (date, datetime)) or not isinstance(value, str):
        return _neutralised(str(msgspec.to_builtins(value)))
    return _neutralised(value)


def _value(item: Any, path: Sequence[str]) -> Any:
    for name in path:
        if item is None:
            return None
        item = getattr(item, name)
    return item


def csv_text(items: Iterable[msgspec.Struct], item_type: type[msgspec.Struct]) -> str:
    """``items`` as CSV text with a header row (written even when there is no item)."""
    columns = csv_columns(item_type)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(column.header for column in columns)
    for item in items:
        writer.writerow(cell(_value(item, column.path), as_json=column.as_json) for column in columns)
    return buffer.getvalue()


def csv_response(items: Iterable[msgspec.Struct], item_type: type[msgspec.Struct], filename: str) -> Response[str]:
    """``items`` as a CSV attachment named ``filename.csv``."""
    return Response(
        content=csv_text(items, item_type),
        # Litestar adds "; charset=utf-8" to text/* types itself (naming it here doubled it).
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


PageFetcher = Callable[[str | None, int], Awaitable[tuple[list[T], str | None]]]
"""Fetches one page of a list: (cursor or None, page size) -> (items, cursor of the next page or None)."""


async def list_response(
    request: Request[Any, Any, Any],
    fetch: PageFetcher[T],
    *,
    item_type: type[msgspec.Struct],
    limit: int,
    cursor: str | None,
    filename: str,
) -> Response[Any]:
    """One page as JSON, or every page from ``cursor`` on as CSV (columns of ``item_type``) when asked for.

    The handler of every list route returns this; it declares ``opt={CSV_OPT: True}`` so the OpenAPI document
    shows the CSV form.
    """
    check_limit(limit)
    if wants_csv(request):
        items: list[Any] = []
        page_cursor = cursor
        while True:
            page, page_cursor = await fetch(page_cursor, MAX_LIMIT)
            items.extend(page)
            if page_cursor is None:
                return csv_response(items, item_type, filename)
    page, next_cursor = await fetch(cursor, limit)
    return Response(Page(items=page, limit=limit, next=next_link(request, next_cursor)))

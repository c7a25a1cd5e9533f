"""Lists as CSV: content negotiation, columns fixed by the item schema, cells safe to open in a spreadsheet.

A list route offers ``text/csv`` beside JSON (``opt={CSV_OPT: True}``); the client asks for it with
``Accept: text/csv``. The header row comes from the item *type*, never from the data, so two exports of the
same route always have the same columns in the same order, an empty list included:

- one column per struct member, in declared order, named as on the wire (camelCase);
- a nested struct is flattened to ``parent.child`` columns (empty cells when it is null);
- a list or a map (whose keys are data, such as ``totals`` per currency) is one column holding its JSON text,
  keys sorted, so new keys never add or move columns;
- decimals are written fixed-point (``20000``, never ``2E+4``; inside JSON text too), booleans ``true``/``false``,
  null as empty.

Finance users open these files in Excel: a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return would be read as a formula (CSV injection), so it gets a leading ``'``. Numbers are left
alone, so a negative amount such as ``-3.33`` stays a number.

A route that offers JSON only answers 406 when the client accepts nothing but CSV
(:func:`refuse_csv_unless_offered`), rather than sending JSON the client did not ask for.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Accept
from litestar.handlers import BaseRouteHandler
from msgspec import inspect as schema

from rosetta.core.errors import NotAcceptableError
from rosetta.core.openapi import CSV_OPT
from rosetta.core.wire import Response, encode_json, plain_decimal

CSV_MEDIA_TYPE = "text/csv"
JSON_MEDIA_TYPE = "application/json"

# What Excel, LibreOffice and Google Sheets read as the start of a formula (OWASP "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _mentions_csv(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    # Most requests name no CSV type at all: a look at the raw header spares parsing it on every read.
    return any(name == b"accept" and b"csv" in value.lower() for name, value in connection.scope["headers"])


def wants_csv(request: Request[Any, Any, Any]) -> bool:
    """True when the client prefers CSV to JSON (``Accept: text/csv``).

    JSON first: a client sending ``*/*`` (or nothing) gets JSON; only an explicit ``text/csv`` gets CSV.
    """
    if not _mentions_csv(request):
        return False
    return request.accept.best_match([JSON_MEDIA_TYPE, CSV_MEDIA_TYPE], default=JSON_MEDIA_TYPE) == CSV_MEDIA_TYPE


class _RefuseCsvUnlessOffered:
    """Guard of a route family: 406 when the client accepts only CSV and the route offers JSON only."""

    def openapi_errors(self, opt: Mapping[str, Any]) -> tuple[int, ...]:
        """What rosetta.core.openapi documents for a route under this guard: 406 unless it offers CSV."""
        return () if opt.get(CSV_OPT) else (406,)

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get(CSV_OPT) or not _mentions_csv(connection):
            return
        if not Accept(connection.headers.get("accept", "")).accepts(JSON_MEDIA_TYPE):
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

"""Cursor (keyset) pagination shared by every list endpoint.

A cursor is the opaque, URL-safe encoding of the sort key of the last row served. Keyset paging stays
fast on deep pages and never skips or repeats rows when rows are inserted between two requests.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

import msgspec
from litestar import Request
from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from rosetta.core.errors import BadRequestError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def encode_cursor(key: Sequence[Any]) -> str:
    """Encode a sort key (str, int, Decimal, datetime, date, UUID...) as an opaque URL-safe cursor."""
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).rstrip(b"=").decode()


def decode_cursor(cursor: str, types: Sequence[type]) -> tuple[Any, ...]:
    """Decode a cursor back to its typed key; a tampered or foreign cursor is a 400 naming ``cursor``."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode())
        # msgspec decodes each position into the declared type (ISO strings into datetime, etc.).
        return tuple(msgspec.json.decode(raw, type=tuple[tuple(types)]))  # type: ignore[misc]
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise BadRequestError("cursor: invalid or expired cursor", extra={"errors": [{"field": "cursor"}]}) from None


def check_limit(limit: int) -> int:
    """Validate a page size (1..MAX_LIMIT)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"limit: must be between 1 and {MAX_LIMIT}", extra={"errors": [{"field": "limit"}]})
    return limit


async def keyset_page(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    *,
    key: Sequence[ColumnElement[Any] | QueryableAttribute[Any]],
    key_types: Sequence[type],
    limit: int,
    cursor: str | None,
    descending: bool = False,
) -> tuple[list[Any], str | None]:
    """Fetch one page of ``query`` ordered by ``key``; return the rows and the next cursor (or None).

    ``key`` must be unique (end it with the primary key) so the order is total, and each of its columns or
    expressions selected by ``query`` in its own right: the next cursor is read from the last row by them.
    """
    check_limit(limit)
    if cursor is not None:
        after = decode_cursor(cursor, key_types)
        comparison = tuple_(*key) < tuple_(*after) if descending else tuple_(*key) > tuple_(*after)
        query = query.where(comparison)
    ordering = [column.desc() for column in key] if descending else list(key)
    rows = list((await session.execute(query.order_by(*ordering).limit(limit + 1))).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    mapping = last._mapping
    values = [mapping[column] for column in key]
    return rows, encode_cursor(values)


def next_link(request: Request[Any, Any, Any], cursor: str | None) -> str | None:
    """The path and query of the next page: the current query with ``cursor`` replaced."""
    if cursor is None:
        return None
    params = [(name, value) for name, value in request.query_params.multi_items() if name != "cursor"]
    params.append(("cursor", cursor))
    return f"{request.url.path}?{urlencode(params)}"

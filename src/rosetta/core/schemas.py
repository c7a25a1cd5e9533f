"""Base msgspec structs shared by every API: camelCase on the wire, because Backstage plugins are TypeScript."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")


class CamelStruct(msgspec.Struct, rename="camel", kw_only=True):
    """Base of every request and response body: snake_case in Python, camelCase in JSON."""


class Page(CamelStruct, Generic[T]):
    """One page of a cursor-paginated list.

    ``next`` is the absolute path (with query) of the next page, or ``None`` on the last page.
    """

    items: list[T]
    limit: int
    next: str | None = None


class HealthStatus(CamelStruct):
    """Body of ``/healthz`` and ``/readyz``."""

    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)

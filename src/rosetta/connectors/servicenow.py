"""ServiceNow Table API client: incremental reads ordered by ``sys_updated_on, sys_id``.

Records are asked for with ``sysparm_display_value=false`` and ``sysparm_exclude_reference_link=true``, so
every value is a string and a reference is a bare sys_id (the raw zone keeps records as strings).

Incremental reading (:meth:`ServiceNowClient.changed_records`) pages by key, not by a growing offset: each
page asks for ``sys_updated_on>={t}^ORDERBYsys_updated_on^ORDERBYsys_id`` where ``t`` is the
``sys_updated_on`` of the last record read, and drops records at or before the last ``(sys_updated_on,
sys_id)`` seen (the tie-break), so rows that change while the pull runs are neither skipped nor repeated:
a record updated meanwhile moves past the cursor and is read again as its new version, which is what the
raw zone should keep. ``sysparm_offset`` is only used inside one second that holds more than a page of
records; ``X-Total-Count`` ends the paging without an extra empty request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import msgspec

from rosetta.connectors.transport import RetryPolicy, Transport
from rosetta.core.settings import ExternalSystem

ITSM_TABLES: tuple[str, ...] = ("incident", "change_request")
CMDB_TABLES: tuple[str, ...] = ("cmdb_ci_business_app", "cmdb_ci_service", "cmdb_rel_ci")

DEFAULT_PAGE_SIZE = 500
_ORDER = "ORDERBYsys_updated_on^ORDERBYsys_id"


class TableMark(msgspec.Struct, frozen=True, kw_only=True):
    """The high-water mark of one table: the last ``(sys_updated_on, sys_id)`` read, in ServiceNow's UTC."""

    sys_updated_on: str
    sys_id: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """The comparable pair."""
        return (self.sys_updated_on, self.sys_id)


class TablePage(msgspec.Struct, kw_only=True):
    """One page of a table read."""

    records: list[dict[str, Any]]
    total: int | None


def describe_servicenow_error(response: httpx.Response) -> str:
    """``message: detail`` from ``{"error": {"message", "detail"}, "status": "failure"}``."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return " ".join(response.text.split())[:200] or response.reason_phrase
    message, detail = error.get("message") or response.reason_phrase, error.get("detail")
    return f"{message}: {detail}" if detail else str(message)


class ServiceNowClient:
    """Reads Table API records through a :class:`Transport`."""

    def __init__(self, transport: Transport, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.transport = transport
        self.page_size = page_size

    @classmethod
    def from_settings(cls, config: ExternalSystem, *, retry: RetryPolicy | None = None) -> ServiceNowClient:
        """Basic authentication with ``username``/``password``, or ``Bearer`` with ``token`` (OAuth)."""
        headers: dict[str, str] = {}
        auth: tuple[str, str] | None = None
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        elif config.username is not None and config.password is not None:
            auth = (config.username, config.password.get_secret_value())
        transport = Transport.for_system(
            "servicenow", config, headers=headers, auth=auth, describe_error=describe_servicenow_error, retry=retry
        )
        return cls(transport, page_size=config.page_size)

    async def aclose(self) -> None:
        """Close the transport."""
        await self.transport.aclose()

    async def get_page(
        self,
        table: str,
        *,
        query: str,
        offset: int,
        limit: int,
        fields: Sequence[str] = (),
    ) -> TablePage:
        """One page of ``table`` (values as strings, references as bare sys_ids)."""
        params: dict[str, str] = {
            "sysparm_query": query,
            "sysparm_offset": str(offset),
            "sysparm_limit": str(limit),
            "sysparm_display_value": "false",
            "sysparm_exclude_reference_link": "true",
        }
        if fields:
            params["sysparm_fields"] = ",".join(fields)
        response = await self.transport.get(f"/api/now/table/{table}", params)
        total = response.headers.get("X-Total-Count")
        records = response.json().get("result") or []
        return TablePage(records=records, total=int(total) if total and total.isdigit() else None)

    async def get_record(self, table: str, sys_id: str) -> dict[str, Any]:
        """One record by sys_id (``{"result": {...}}``: an object, not a list)."""
        params = {"sysparm_display_value": "false", "sysparm_exclude_reference_link": "true"}
        response = await self.transport.get(f"/api/now/table/{table}/{sys_id}", params)
        result: dict[str, Any] = response.json()["result"]
        return result

    async def changed_records(self, table: str, since: TableMark | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """Every record of ``table`` after ``since``, oldest first, one page at a time (see the module)."""
        mark = since.key if since is not None else None
        query_from = since.sys_updated_on if since is not None else None
        skip = 0
        while True:
            query = f"sys_updated_on>={query_from}^{_ORDER}" if query_from else _ORDER
            page = await self.get_page(table, query=query, offset=skip, limit=self.page_size)
            fresh = []
            for record in page.records:
                key = (str(record.get("sys_updated_on", "")), str(record.get("sys_id", "")))
                if mark is None or key > mark:
                    fresh.append(record)
                    mark = key
            if fresh:
                yield fresh
            rows = page.records
            if len(rows) < self.page_size or (page.total is not None and skip + len(rows) >= page.total):
                return
            last_updated = str(rows[-1].get("sys_updated_on", ""))
            if last_updated == query_from:
                # A whole page inside one second: only an offset can move past it.
                skip += len(rows)
            else:
                query_from, skip = last_updated, 0

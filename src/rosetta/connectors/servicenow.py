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

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx
import msgspec

from rosetta.connectors.transport import ExternalAuthError, ExternalUnavailableError, RetryPolicy, Transport
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


class ServiceNowOAuth(httpx.Auth):
    """OAuth bearer tokens from the instance's ``/oauth_token.do``, fetched once, renewed before they expire.

    With ``username``/``password`` it uses the password grant (what every ServiceNow release supports), else
    ``client_credentials`` (Washington DC and later, when the instance allows it). A token is renewed with its
    refresh token a minute before it expires, or at once when the Table API answers 401 (a token revoked or
    expired early); requests running at the same time share one renewal. A refused grant is a configuration
    problem (:class:`ExternalAuthError`, exit code 2), an unavailable token endpoint a transient one
    (:class:`ExternalUnavailableError`, exit code 4).
    """

    _RENEW_MARGIN_SECONDS = 60.0

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._token_url = token_url
        self._credentials = {"client_id": client_id, "client_secret": client_secret}
        self._user = {"username": username, "password": password} if username and password else None
        self._lock = asyncio.Lock()
        self._access: str | None = None
        self._refresh: str | None = None
        self._renew_at = 0.0

    def _token_request(self, *, renew: bool) -> httpx.Request:
        if renew and self._refresh:
            grant: dict[str, str] = {"grant_type": "refresh_token", "refresh_token": self._refresh}
        elif self._user is not None:
            grant = {"grant_type": "password", **{key: str(value) for key, value in self._user.items()}}
        else:
            grant = {"grant_type": "client_credentials"}
        return httpx.Request(
            "POST",
            self._token_url,
            data={**grant, **self._credentials},
            headers={"Accept": "application/json"},
        )

    def _store(self, response: httpx.Response) -> None:
        if response.status_code >= 500 or response.status_code == 429:
            raise ExternalUnavailableError(
                f"servicenow: POST /oauth_token.do answered HTTP {response.status_code}",
                system="servicenow",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not body.get("access_token"):
            reason = body.get("error_description") or body.get("error") or response.reason_phrase
            raise ExternalAuthError(
                f"servicenow: the OAuth token request was refused with HTTP {response.status_code}: {reason}"
                " (check ROSETTA_SERVICENOW__CLIENT_ID, __CLIENT_SECRET and the user)",
                system="servicenow",
                status=response.status_code,
            )
        self._access = str(body["access_token"])
        self._refresh = body.get("refresh_token") or self._refresh
        lifetime = float(body.get("expires_in") or 1800)
        self._renew_at = time.monotonic() + max(lifetime - self._RENEW_MARGIN_SECONDS, lifetime / 2)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send ``request`` with a valid token; renew it and resend once if the request is refused with 401."""
        used: str | None = None
        for attempt in range(2):
            async with self._lock:
                expired = self._access is None or time.monotonic() >= self._renew_at
                # After a 401, renew unless another request already did while this one waited for the lock.
                if expired or (attempt and self._access == used):
                    renewal = yield self._token_request(renew=self._access is not None)
                    if renewal.status_code == 401 and self._refresh:
                        # The refresh token is no good either: start over with the first grant.
                        self._refresh = None
                        renewal = yield self._token_request(renew=False)
                    await renewal.aread()  # this flow is not httpx's default one, which would read it
                    self._store(renewal)
                used = self._access
            request.headers["Authorization"] = f"Bearer {used}"
            response = yield request
            if response.status_code != 401:
                return


class ServiceNowClient:
    """Reads Table API records through a :class:`Transport`."""

    def __init__(self, transport: Transport, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.transport = transport
        self.page_size = page_size

    @classmethod
    def from_settings(cls, config: ExternalSystem, *, retry: RetryPolicy | None = None) -> ServiceNowClient:
        """OAuth with ``client_id``/``client_secret`` (see :class:`ServiceNowOAuth`), else ``Bearer`` with a
        fixed ``token``, else Basic authentication with ``username``/``password``."""
        headers: dict[str, str] = {}
        auth: httpx.Auth | tuple[str, str] | None = None
        if config.client_id is not None and config.client_secret is not None:
            auth = ServiceNowOAuth(
                # The instance's token endpoint sits beside /api/now (also under a proxy's path prefix).
                token_url=f"{(config.url or '').rstrip('/')}/oauth_token.do",
                client_id=config.client_id,
                client_secret=config.client_secret.get_secret_value(),
                username=config.username,
                password=config.password.get_secret_value() if config.password is not None else None,
            )
        elif config.token is not None:
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

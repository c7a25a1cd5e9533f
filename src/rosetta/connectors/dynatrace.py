"""Dynatrace Environment API v2 client: metrics query, problems, entities, SLOs.

What this client gets right (external-apis.md, section 1):

- ``Authorization: Api-Token <token>``; times are sent as epoch milliseconds (UTC);
- cursor paging: the first request carries the filters, every later one ONLY ``nextPageKey`` (plus
  ``fields`` for problems, which must be repeated on every page); paging stops when ``nextPageKey`` is
  absent or null;
- ``/metrics/query`` is not paged (its ``nextPageKey`` is deprecated and always null); a timestamp marks
  the END of its slot, so the last slot may lie in the future and hold partial data (callers land windows
  and only treat those that ended as complete);
- problems: ``endTime`` is ``-1`` while open, status is ``OPEN``/``CLOSED``;
- SLOs are listed with ``evaluate=true`` (otherwise computed values are ``-1``) under the key ``slo``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from rosetta.connectors.transport import RetryPolicy, Transport
from rosetta.core.errors import ConfigurationError
from rosetta.core.settings import ExternalSystem

PROBLEM_FIELDS = "evidenceDetails,impactAnalysis,recentComments"
ENTITY_FIELDS = "+properties,+tags,+managementZones,+fromRelationships,+toRelationships,+firstSeenTms,+lastSeenTms"


def describe_dynatrace_error(response: httpx.Response) -> str:
    """``message`` plus each constraint violation from ``{"error": {"code", "message", "constraintViolations"}}``."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return " ".join(response.text.split())[:200] or response.reason_phrase
    message = str(error.get("message") or response.reason_phrase)
    violations = [
        f"{violation.get('path')}: {violation.get('message')}"
        for violation in error.get("constraintViolations") or []
        if isinstance(violation, dict)
    ]
    return f"{message} ({'; '.join(violations)})" if violations else message


class DynatraceClient:
    """Reads Dynatrace API v2 through a :class:`Transport` whose base URL ends in ``/api/v2``."""

    def __init__(self, transport: Transport, *, page_size: int = 500) -> None:
        self.transport = transport
        self.page_size = page_size

    @classmethod
    def from_settings(cls, config: ExternalSystem, *, retry: RetryPolicy | None = None) -> DynatraceClient:
        """``settings.dynatrace``: ``url`` (…/api/v2) and ``token`` (an API token with the read scopes)."""
        if config.token is None:
            raise ConfigurationError("no API token configured for dynatrace: set ROSETTA_DYNATRACE__TOKEN")
        headers = {"Authorization": f"Api-Token {config.token.get_secret_value()}"}
        return cls(
            Transport.for_system(
                "dynatrace", config, headers=headers, describe_error=describe_dynatrace_error, retry=retry
            ),
            page_size=config.page_size,
        )

    async def aclose(self) -> None:
        """Close the transport."""
        await self.transport.aclose()

    async def paged(
        self, path: str, params: Mapping[str, Any], items_key: str, *, repeat: Mapping[str, str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the items of every page; later pages send only ``nextPageKey`` (and ``repeat``)."""
        current: Mapping[str, Any] = params
        while True:
            body = (await self.transport.get(path, dict(current))).json()
            yield list(body.get(items_key) or [])
            next_key = body.get("nextPageKey")
            if not next_key:
                return
            current = {"nextPageKey": next_key, **(repeat or {})}

    def problems(
        self, *, from_ms: int, to_ms: int, problem_selector: str | None = None, entity_selector: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Problems that started or ended in ``[from_ms, to_ms]``, with evidence, impact and comments."""
        params: dict[str, Any] = {
            "from": str(from_ms),
            "to": str(to_ms),
            "pageSize": str(min(self.page_size, 500)),
            "fields": PROBLEM_FIELDS,
        }
        if problem_selector:
            params["problemSelector"] = problem_selector
        if entity_selector:
            params["entitySelector"] = entity_selector
        return self.paged("/problems", params, "problems", repeat={"fields": PROBLEM_FIELDS})

    def entities(
        self, entity_selector: str, *, from_ms: int, to_ms: int | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Entities matching the selector (which must hold ``type(...)`` or ``entityId(...)``), every field."""
        params: dict[str, Any] = {
            "entitySelector": entity_selector,
            "from": str(from_ms),
            "fields": ENTITY_FIELDS,
            "pageSize": str(self.page_size),
        }
        if to_ms is not None:
            params["to"] = str(to_ms)
        return self.paged("/entities", params, "entities")

    def slos(self, *, slo_selector: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """Every SLO, evaluated over its own timeframe (``evaluate=true``, ``timeFrame=CURRENT``)."""
        params: dict[str, Any] = {
            "evaluate": "true",
            "timeFrame": "CURRENT",
            "pageSize": str(min(self.page_size, 10000)),
        }
        if slo_selector:
            params["sloSelector"] = slo_selector
        return self.paged("/slo", params, "slo")

    async def query_metrics(
        self,
        metric_selector: str,
        *,
        from_ms: int,
        to_ms: int,
        resolution: str = "1h",
        entity_selector: str | None = None,
    ) -> dict[str, Any]:
        """One ``/metrics/query`` call: the body (``resolution`` and ``result[]`` with ``data[]``)."""
        params: dict[str, Any] = {
            "metricSelector": metric_selector,
            "from": str(from_ms),
            "to": str(to_ms),
            "resolution": resolution,
        }
        if entity_selector:
            params["entitySelector"] = entity_selector
        body: dict[str, Any] = (await self.transport.get("/metrics/query", params)).json()
        return body


def metric_series(body: Mapping[str, Any], *, metric_key: str, from_ms: int, to_ms: int) -> Sequence[dict[str, Any]]:
    """Flatten a ``/metrics/query`` body into one document per series, keeping where it came from."""
    documents = []
    for result in body.get("result") or []:
        for data in result.get("data") or []:
            documents.append(
                {
                    "metricKey": metric_key,
                    "metricId": result.get("metricId"),
                    "resolution": body.get("resolution"),
                    "from": from_ms,
                    "to": to_ms,
                    "dimensionMap": data.get("dimensionMap") or {},
                    "timestamps": data.get("timestamps") or [],
                    "values": data.get("values") or [],
                }
            )
    return documents

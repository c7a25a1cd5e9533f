"""Dynatrace Environment API v2 simulator (``/api/v2``): metrics query, problems, entities, SLOs.

Faithful to what clients get wrong (external-apis.md, section 1):

- ``Authorization: Api-Token <token>``; 401 for a missing or unknown token, 403 for a missing scope;
- times in epoch milliseconds; ``from``/``to`` also as ISO 8601 or ``now-2h``, ``now-1d/d``;
- ``/metrics/query``: a timestamp marks the END of its slot, the last slot may end after ``to`` (or after
  now) and then holds partial data; empty slots are ``null``; ``nextPageKey`` is always ``null``; an
  unknown dimension is ``data: []`` plus a warning; an unknown metric is 404; at most 10 metric keys and
  10,080 points per series; the dataset's hourly series are re-aggregated to the requested resolution
  (sum for ``Count`` metrics, avg otherwise, or the aggregation the selector asks for);
- cursor paging (problems, entities, SLOs): a later request must carry ONLY ``nextPageKey`` (plus
  ``fields`` for problems, which is not remembered by the key) - anything else is a 400;
- problems: ``endTime`` is -1 while ``OPEN``; a problem matches a window when its start or its end
  (now, while open) falls inside; optional fields only when asked for with ``fields``;
- entities: ``entitySelector`` needs ``type(...)`` or ``entityId(...)``; only entities seen since ``from``
  (default ``now-3d``); only ``entityId``, ``type``, ``displayName`` unless ``fields=+...``;
- SLOs: the list key is ``slo``; without ``evaluate=true`` computed values are -1; status follows
  ``>= warning`` SUCCESS, ``>= target`` WARNING, else FAILURE;
- 429 carries ``Retry-After`` (2 s by default) when a fault rule injects it.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, get
from litestar.params import FromPath

from rosetta.core.security.permissions import Permission, requires
from rosetta.simulators.app import SimulatedError, SimulatorApp, build_simulator
from rosetta.simulators.dataset import DynatraceData, MetricData, MetricSeries
from rosetta.simulators.faults import FaultInjector
from rosetta.simulators.selectors import (
    Predicate,
    SelectorError,
    parse_duration_ms,
    parse_selector,
    parse_time,
    split_top_level,
)

ALL_SCOPES = frozenset({"metrics.read", "problems.read", "entities.read", "slo.read"})
DEFAULT_TOKEN = "dt0c01.ROSETTASIMULATOR.0000000000000000000000000000000000000000000000000000000000000000"  # noqa: S105

MAX_POINTS = 10_080
MAX_METRIC_KEYS = 10
_DEFAULT_POINTS = 120
_RESOLUTION_LADDER = ("1m", "5m", "10m", "15m", "30m", "1h", "2h", "6h", "12h", "1d", "1w")
_METRIC_TOKEN = re.compile(r"^((?:builtin|ext|func|calc|dsfm|log)?:?[A-Za-z0-9_\-.]+?)((?::[A-Za-z].*)?)$")
_TRANSFORM = re.compile(r"^([A-Za-z]+)(?:\((.*)\))?$", re.DOTALL)
_AGGREGATIONS = frozenset({"avg", "sum", "min", "max", "count", "median", "value", "percentile"})
_PROBLEM_BASE_FIELDS = (
    "problemId", "displayId", "title", "impactLevel", "severityLevel", "status", "affectedEntities",
    "impactedEntities", "rootCauseEntity", "managementZones", "entityTags", "problemFilters", "startTime",
    "endTime",
)  # fmt: skip
_PROBLEM_OPTIONAL_FIELDS = frozenset({"evidenceDetails", "impactAnalysis", "recentComments", "linkedProblemInfo"})
_ENTITY_OPTIONAL_FIELDS = frozenset(
    {"properties", "tags", "managementZones", "fromRelationships", "toRelationships", "firstSeenTms", "lastSeenTms",
     "icon"}
)  # fmt: skip


def dynatrace_error(code: int, message: str, violations: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The API v2 error body (``constraintViolations`` only when there are some)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if violations:
        error["constraintViolations"] = [
            {"path": path, "message": text, "parameterLocation": "QUERY", "location": None} for path, text in violations
        ]
    return {"error": error}


def _bad_request(path: str, message: str) -> SimulatedError:
    return SimulatedError(400, dynatrace_error(400, "Constraints violated.", [(path, message)]))


def _render_fault(status: int, message: str) -> tuple[dict[str, Any], dict[str, str]]:
    return dynatrace_error(status, message), {}


@dataclass
class _MetricQuery:
    token: str
    key: str
    names: bool = False
    split_by: tuple[str, ...] | None = None
    aggregation: str | None = None
    percentile: float = 50.0
    fold: bool = False
    filters: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    limit: int | None = None
    sort_descending: bool | None = None
    rate_ms: int | None = None


class DynatraceSimulator:
    """The API v2 over a :class:`DynatraceData` dataset; ``clock`` gives "now" in epoch ms."""

    def __init__(
        self,
        data: DynatraceData,
        *,
        tokens: Mapping[str, Collection[str]] | None = None,
        faults: FaultInjector | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.data = data
        self.tokens = {token: frozenset(scopes) for token, scopes in (tokens or {DEFAULT_TOKEN: ALL_SCOPES}).items()}
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.faults = faults or FaultInjector()
        self._entities = {entity["entityId"]: entity for entity in data.entities}
        self.app: SimulatorApp = build_simulator(
            "dynatrace", self._handlers(), faults=self.faults, render_error=_render_fault
        )

    # ------------------------------------------------------------------------------------------ common

    def _authenticate(self, request: Request[Any, Any, Any], scope: str) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise SimulatedError(401, dynatrace_error(401, "Missing authorization parameter."))
        if scheme.lower() != "api-token" or token not in self.tokens:
            raise SimulatedError(401, dynatrace_error(401, "Token Authentication failed"))
        if scope not in self.tokens[token]:
            raise SimulatedError(403, dynatrace_error(403, f"Token is missing required scope. Use one of: {scope}"))

    def _times(self, params: Mapping[str, str], default_from: str, default_to: str = "now") -> tuple[int, int]:
        now = self.clock()
        try:
            start = parse_time(params.get("from") or default_from, now)
        except SelectorError as error:
            raise _bad_request("from", str(error)) from None
        try:
            end = parse_time(params.get("to") or default_to, now)
        except SelectorError as error:
            raise _bad_request("to", str(error)) from None
        if start >= end:
            raise _bad_request("from", "the start of the timeframe must be before its end")
        return start, end

    @staticmethod
    def _page_size(params: Mapping[str, str], default: int, maximum: int) -> int:
        try:
            size = int(params.get("pageSize") or default)
        except ValueError:
            raise _bad_request("pageSize", "must be a number") from None
        if not 1 <= size <= maximum:
            raise _bad_request("pageSize", f"must be between 1 and {maximum}")
        return size

    @staticmethod
    def _resume(
        params: Mapping[str, str], endpoint: str, allowed: Collection[str] = ()
    ) -> tuple[dict[str, str], int] | None:
        """The filters and offset remembered by ``nextPageKey``; 400 if other parameters came with it."""
        key = params.get("nextPageKey")
        if not key:
            return None
        extra = [name for name in params if name != "nextPageKey" and name not in allowed]
        if extra:
            message = "must not be set together with nextPageKey"
            raise SimulatedError(
                400, dynatrace_error(400, "Constraints violated.", [(name, message) for name in extra])
            )
        try:
            state = json.loads(base64.urlsafe_b64decode(key.encode() + b"=" * (-len(key) % 4)))
        except (ValueError, UnicodeDecodeError):
            raise _bad_request("nextPageKey", "invalid nextPageKey") from None
        if not isinstance(state, dict) or state.get("e") != endpoint:
            raise _bad_request("nextPageKey", "invalid nextPageKey")
        return dict(state["p"]), int(state["o"])

    @staticmethod
    def _next_key(endpoint: str, filters: Mapping[str, str], offset: int) -> str:
        state = json.dumps({"e": endpoint, "p": dict(filters), "o": offset}, separators=(",", ":"))
        return base64.urlsafe_b64encode(state.encode()).decode().rstrip("=")

    def _page(
        self,
        endpoint: str,
        params: Mapping[str, str],
        *,
        default_size: int,
        maximum: int,
        allowed: Collection[str] = (),
    ) -> tuple[dict[str, str], int, int]:
        """(filters, offset, page size) of a first or a later page."""
        resumed = self._resume(params, endpoint, allowed)
        if resumed is not None:
            filters, offset = resumed
        else:
            filters, offset = {k: v for k, v in params.items() if k not in allowed}, 0
        return filters, offset, self._page_size(filters, default_size, maximum)

    def _paged_body(
        self,
        endpoint: str,
        items_key: str,
        items: list[dict[str, Any]],
        *,
        filters: Mapping[str, str],
        offset: int,
        size: int,
    ) -> dict[str, Any]:
        chunk = items[offset : offset + size]
        more = offset + size < len(items)
        return {
            "totalCount": len(items),
            "pageSize": size,
            "nextPageKey": self._next_key(endpoint, filters, offset + size) if more else None,
            items_key: chunk,
        }

    # ------------------------------------------------------------------------------------------ entities

    def _entity_matches(self, entity: Mapping[str, Any], predicate: Predicate) -> bool:
        holds = self._entity_predicate(entity, predicate)
        return not holds if predicate.negated else holds

    def _entity_predicate(self, entity: Mapping[str, Any], predicate: Predicate) -> bool:
        name, args = predicate.name, predicate.args
        display = str(entity.get("displayName", ""))
        if name == "type":
            return entity.get("type") in args
        if name == "entityId":
            return entity.get("entityId") in args
        if name == "tag":
            tags = entity.get("tags") or []
            return any(
                arg in (tag.get("stringRepresentation"), tag.get("key"), f"{tag.get('key')}:{tag.get('value')}")
                for arg in args
                for tag in tags
            )
        if name == "mzName":
            return any(zone.get("name") in args for zone in entity.get("managementZones") or [])
        if name == "mzId":
            return any(str(zone.get("id")) in args for zone in entity.get("managementZones") or [])
        if name in ("entityName.equals", "entityName.in"):
            return display in args
        if name == "entityName.startsWith":
            return any(display.lower().startswith(arg.lower()) for arg in args)
        if name in ("entityName", "entityName.contains"):
            return any(arg.lower() in display.lower() for arg in args)
        raise SelectorError(f"unknown entity selector predicate {name!r}")

    def select_entities(self, selector: str) -> list[dict[str, Any]]:
        """Entities matching an entity selector (400 on a predicate the simulator does not know)."""
        try:
            predicates = parse_selector(selector)
            return [e for e in self.data.entities if all(self._entity_matches(e, p) for p in predicates)]
        except SelectorError as error:
            raise _bad_request("entitySelector", str(error)) from None

    @staticmethod
    def _entity_fields(entity: Mapping[str, Any], wanted: Collection[str]) -> dict[str, Any]:
        shown = {key: entity[key] for key in ("entityId", "type", "displayName") if key in entity}
        shown.update({key: entity[key] for key in wanted if key in entity})
        return shown

    def list_entities(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /entities``."""
        filters, offset, size = self._page("entities", params, default_size=50, maximum=12_000)
        selector = filters.get("entitySelector", "")
        predicates = parse_selector(selector) if selector else []
        if not any(p.name in ("type", "entityId") and not p.negated for p in predicates):
            raise _bad_request("entitySelector", "must contain type(...) or entityId(...)")
        start, end = self._times(filters, "now-3d")
        wanted = self._requested_fields(filters.get("fields", ""), _ENTITY_OPTIONAL_FIELDS)
        entities = [
            self._entity_fields(entity, wanted)
            for entity in self.select_entities(selector)
            if int(entity.get("lastSeenTms", end)) >= start and int(entity.get("firstSeenTms", start)) <= end
        ]
        return self._paged_body("entities", "entities", entities, filters=filters, offset=offset, size=size)

    @staticmethod
    def _requested_fields(text: str, known: Collection[str]) -> set[str]:
        wanted = {item.strip().lstrip("+") for item in text.split(",") if item.strip()}
        unknown = sorted(wanted - set(known))
        if unknown:
            raise _bad_request("fields", f"unknown field(s) {', '.join(unknown)}")
        return wanted

    # ------------------------------------------------------------------------------------------ problems

    def _problem_matches(self, problem: Mapping[str, Any], predicate: Predicate) -> bool:
        name, args = predicate.name, {arg.upper() for arg in predicate.args}
        if name == "status":
            holds = str(problem.get("status", "")).upper() in args
        elif name == "severityLevel":
            holds = str(problem.get("severityLevel", "")).upper() in args
        elif name == "impactLevel":
            holds = str(problem.get("impactLevel", "")).upper() in args
        elif name == "displayId":
            holds = str(problem.get("displayId", "")).upper() in args
        elif name == "problemId":
            holds = str(problem.get("problemId", "")).upper() in args
        elif name == "rootCauseEntity":
            root = (problem.get("rootCauseEntity") or {}).get("entityId") or {}
            holds = str(root.get("id", "")).upper() in args
        elif name == "managementZones":
            holds = any(str(zone.get("name", "")).upper() in args for zone in problem.get("managementZones") or [])
        else:
            raise SelectorError(f"unknown problem selector predicate {name!r}")
        return not holds if predicate.negated else holds

    def _problem_entities(self, problem: Mapping[str, Any]) -> set[str]:
        stubs = [*(problem.get("affectedEntities") or []), *(problem.get("impactedEntities") or [])]
        return {str((stub.get("entityId") or {}).get("id")) for stub in stubs}

    def list_problems(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /problems``."""
        filters, offset, size = self._page("problems", params, default_size=50, maximum=500, allowed=("fields",))
        wanted = self._requested_fields(params.get("fields", ""), _PROBLEM_OPTIONAL_FIELDS)
        start, end = self._times(filters, "now-2h")
        now = self.clock()
        try:
            predicates = parse_selector(filters["problemSelector"]) if filters.get("problemSelector") else []
            matching = [p for p in self.data.problems if all(self._problem_matches(p, pr) for pr in predicates)]
        except SelectorError as error:
            raise _bad_request("problemSelector", str(error)) from None
        if filters.get("entitySelector"):
            ids = {entity["entityId"] for entity in self.select_entities(filters["entitySelector"])}
            matching = [p for p in matching if self._problem_entities(p) & ids]

        def in_window(problem: Mapping[str, Any]) -> bool:
            started = int(problem.get("startTime", 0))
            ended = int(problem.get("endTime", -1))
            ended = now if ended == -1 else ended
            return start <= started <= end or start <= ended <= end

        selected = [p for p in matching if in_window(p)]
        for item in reversed(split_top_level(filters.get("sort") or "-startTime")):
            descending = item.startswith("-")
            name = item.lstrip("+-")
            if name not in ("startTime", "endTime", "status", "relevance"):
                raise _bad_request("sort", f"cannot sort by {name!r}")
            key = "startTime" if name == "relevance" else name
            selected.sort(key=_problem_sort_key(key), reverse=descending)
        shown = [self._problem_fields(problem, wanted) for problem in selected]
        return self._paged_body("problems", "problems", shown, filters=filters, offset=offset, size=size)

    @staticmethod
    def _problem_fields(problem: Mapping[str, Any], wanted: Collection[str]) -> dict[str, Any]:
        shown = {key: problem[key] for key in _PROBLEM_BASE_FIELDS if key in problem}
        shown.update({key: problem[key] for key in wanted if key in problem})
        return shown

    # ------------------------------------------------------------------------------------------ SLOs

    @staticmethod
    def _evaluated(slo: Mapping[str, Any], evaluate: bool) -> dict[str, Any]:
        shown = dict(slo)
        target, warning = float(slo.get("target", 0)), float(slo.get("warning", 0))
        evaluated = float(slo.get("evaluatedPercentage", -1)) if evaluate else -1.0
        shown["evaluatedPercentage"] = evaluated
        shown["errorBudget"] = round(evaluated - target, 4) if evaluated >= 0 else -1.0
        shown["status"] = "SUCCESS" if evaluated >= warning else ("WARNING" if evaluated >= target else "FAILURE")
        if not evaluate:
            burn = dict(slo.get("errorBudgetBurnRate") or {})
            burn.update({"burnRateValue": -1.0, "sloValue": -1.0, "burnRateType": "NONE"})
            shown["errorBudgetBurnRate"] = burn
            shown["relatedOpenProblems"] = -1
            shown["relatedTotalProblems"] = -1
        return shown

    def _slo_matches(self, slo: Mapping[str, Any], predicate: Predicate) -> bool:
        if predicate.name == "id":
            holds = slo.get("id") in predicate.args
        elif predicate.name == "name":
            holds = slo.get("name") in predicate.args
        elif predicate.name == "text":
            text = f"{slo.get('name', '')} {slo.get('description', '')}".lower()
            holds = any(arg.lower() in text for arg in predicate.args)
        else:
            raise SelectorError(f"unknown SLO selector predicate {predicate.name!r}")
        return not holds if predicate.negated else holds

    def list_slos(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /slo`` (the list key is the singular ``slo``)."""
        filters, offset, size = self._page("slo", params, default_size=10, maximum=10_000)
        if filters.get("timeFrame", "CURRENT") not in ("CURRENT", "GTF"):
            raise _bad_request("timeFrame", "must be CURRENT or GTF")
        self._times(filters, "now-2w")
        try:
            predicates = parse_selector(filters["sloSelector"]) if filters.get("sloSelector") else []
            slos = [s for s in self.data.slos if all(self._slo_matches(s, p) for p in predicates)]
        except SelectorError as error:
            raise _bad_request("sloSelector", str(error)) from None
        evaluate = filters.get("evaluate", "false").lower() == "true"
        return self._paged_body(
            "slo", "slo", [self._evaluated(s, evaluate) for s in slos], filters=filters, offset=offset, size=size
        )

    # ------------------------------------------------------------------------------------------ metrics

    def _parse_metric_selector(self, selector: str) -> list[_MetricQuery]:
        tokens: list[str] = []
        for token in split_top_level(selector):
            shorthand = re.match(r"^(.*)\.\(([^)]*)\)(.*)$", token)
            if shorthand and ":" not in shorthand.group(2):
                tokens += [
                    f"{shorthand.group(1)}.{leaf.strip()}{shorthand.group(3)}" for leaf in shorthand.group(2).split(",")
                ]
            else:
                tokens.append(token)
        if not tokens:
            raise _bad_request("metricSelector", "must not be empty")
        if len(tokens) > MAX_METRIC_KEYS:
            raise _bad_request("metricSelector", f"at most {MAX_METRIC_KEYS} metric keys")
        return [self._parse_metric_token(token) for token in tokens]

    def _parse_metric_token(self, token: str) -> _MetricQuery:
        key = next(
            (known for known in sorted(self.data.metrics, key=len, reverse=True) if token.startswith(known)), None
        )
        if key is None or (len(token) > len(key) and token[len(key)] != ":"):
            match = _METRIC_TOKEN.match(token)
            unknown = match.group(1) if match else token
            raise SimulatedError(404, dynatrace_error(404, f"The metric key '{unknown}' was not found."))
        query = _MetricQuery(token=token, key=key)
        rest = token[len(key) :]
        for transform in split_top_level(rest[1:], ":") if rest else []:
            self._apply_transform(query, transform)
        return query

    @staticmethod
    def _apply_transform(query: _MetricQuery, transform: str) -> None:
        match = _TRANSFORM.match(transform.strip())
        if match is None:
            raise _bad_request("metricSelector", f"invalid transformation {transform!r}")
        name, body = match.group(1), match.group(2)
        args = [arg.strip().strip('"') for arg in split_top_level(body)] if body else []
        if name == "names":
            query.names = True
        elif name == "splitBy":
            query.split_by = tuple(args)
        elif name in _AGGREGATIONS:
            query.aggregation = name
            if name == "percentile":
                query.percentile = float(args[0]) if args else 50.0
        elif name == "fold":
            query.fold = True
            query.aggregation = args[0] if args else query.aggregation
        elif name == "filter":
            for condition in split_top_level(body or ""):
                inner = re.match(r"^(eq|ne|in)\((.*)\)$", condition.strip())
                if inner is None:
                    raise _bad_request("metricSelector", f"unsupported filter {condition!r}")
                values = [v.strip().strip('"') for v in split_top_level(inner.group(2))]
                query.filters.append((inner.group(1), values[0], tuple(values[1:])))
        elif name == "limit":
            query.limit = int(args[0])
        elif name == "sort":
            query.sort_descending = "ascending" not in (body or "")
        elif name == "rate":
            query.rate_ms = parse_duration_ms(args[0] if args else "1m")
        else:
            raise _bad_request("metricSelector", f"unknown transformation {name!r}")

    def _resolution(self, text: str | None, start: int, end: int, interval: int) -> tuple[int, str]:
        if text == "Inf":
            return end - start, "Inf"
        if text:
            try:
                requested = parse_duration_ms(text)
            except SelectorError:
                raise _bad_request("resolution", f"invalid resolution {text!r}") from None
        else:
            requested = next(
                (
                    parse_duration_ms(step)
                    for step in _RESOLUTION_LADDER
                    if (end - start) / parse_duration_ms(step) <= _DEFAULT_POINTS
                ),
                parse_duration_ms("1w"),
            )
        effective = max(interval, math.ceil(requested / interval) * interval)
        return effective, _duration_text(effective)

    def query_metrics(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /metrics/query``."""
        selector = params.get("metricSelector")
        if not selector:
            raise _bad_request("metricSelector", "must not be null")
        queries = self._parse_metric_selector(selector)
        start, end = self._times(params, "now-2h")
        allowed_entities: set[str] | None = None
        if params.get("entitySelector"):
            allowed_entities = {entity["entityId"] for entity in self.select_entities(params["entitySelector"])}
        now = self.clock()
        results, warnings, total = [], [], 0
        resolution_text = "Inf"
        for query in queries:
            metric = self.data.metrics[query.key]
            interval = metric.series[0].interval_ms if metric.series else 3_600_000
            resolution, resolution_text = self._resolution(params.get("resolution"), start, end, interval)
            if query.fold:
                resolution, resolution_text = end - start, "Inf"
            first = start if resolution_text == "Inf" else start - start % resolution
            slots = max(1, math.ceil((end - first) / resolution))
            if slots > MAX_POINTS:
                raise _bad_request("resolution", f"the query exceeds {MAX_POINTS} data points per series")
            data, warning = self._metric_data(
                query,
                metric,
                first=first,
                resolution=resolution,
                slots=slots,
                data_end=min(end, now),
                allowed_entities=allowed_entities,
            )
            if warning:
                warnings.append(warning)
            total += len(data)
            points = sum(len(item["values"]) for item in data)
            results.append(
                {
                    "metricId": query.token,
                    "dataPointCountRatio": round(points / 10_000_000, 7),
                    "dimensionCountRatio": round(len(data) / 100_000, 7),
                    "data": data,
                }
            )
        body: dict[str, Any] = {
            "totalCount": total,
            "nextPageKey": None,
            "resolution": resolution_text,
            "result": results,
        }
        if warnings:
            body["warnings"] = warnings
        return body

    def _metric_data(
        self,
        query: _MetricQuery,
        metric: MetricData,
        *,
        first: int,
        resolution: int,
        slots: int,
        data_end: int,
        allowed_entities: set[str] | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        known_dimensions = {key for series in metric.series for key in series.dimension_map}
        referenced = [*(query.split_by or ()), *(key for _, key, _ in query.filters)]
        missing = [key for key in referenced if key not in known_dimensions]
        if missing:
            return [], f"The dimension key '{missing[0]}' has been referenced, but the metric has no such key."
        aggregation = query.aggregation or ("sum" if metric.unit == "Count" else "avg")
        if aggregation == "value":
            aggregation = "sum" if metric.unit == "Count" else "avg"
        groups: dict[tuple[tuple[str, str], ...], list[list[float | None]]] = {}
        for series in metric.series:
            dims = series.dimension_map
            if allowed_entities is not None and not any(
                key.startswith("dt.entity.") and value in allowed_entities for key, value in dims.items()
            ):
                continue
            if not all(_filter_holds(dims, condition) for condition in query.filters):
                continue
            values = _slot_values(
                series,
                first=first,
                resolution=resolution,
                slots=slots,
                data_end=data_end,
                aggregation=aggregation,
                percentile=query.percentile,
            )
            kept = dims if query.split_by is None else {key: dims.get(key, "") for key in query.split_by}
            groups.setdefault(tuple(sorted(kept.items())), []).append(values)
        data = []
        for dims_items, members in groups.items():
            values = _combine(members, aggregation)
            if query.rate_ms is not None:
                values = [None if v is None else v / (resolution / query.rate_ms) for v in values]
            dimension_map = self._names(dict(dims_items), query.names)
            timestamps = [first + (slot + 1) * resolution for slot in range(slots)]
            data.append(
                {
                    "dimensions": list(dimension_map.values()),
                    "dimensionMap": dimension_map,
                    "timestamps": timestamps,
                    "values": values,
                }
            )
        if query.sort_descending is not None:
            data.sort(key=lambda item: _mean(item["values"]), reverse=query.sort_descending)  # type: ignore[arg-type]
        if query.limit is not None:
            data = data[: query.limit]
        return data, None

    def _names(self, dimension_map: dict[str, str], names: bool) -> dict[str, str]:
        entity_keys = [key for key in dimension_map if key.startswith("dt.entity.") and not key.endswith(".name")]
        shown = {
            key: value
            for key, value in dimension_map.items()
            if not (key.endswith(".name") and key[:-5] in entity_keys)
        }
        if names:
            for key in entity_keys:
                entity = self._entities.get(dimension_map[key])
                stored = dimension_map.get(f"{key}.name")
                shown[f"{key}.name"] = (
                    entity["displayName"] if entity and "displayName" in entity else (stored or dimension_map[key])
                )
        return shown

    # ------------------------------------------------------------------------------------------ HTTP

    def _handlers(self) -> list[Any]:
        simulator = self
        public = [requires(Permission.PUBLIC)]

        def params_of(request: Request[Any, Any, Any]) -> dict[str, str]:
            return {key: request.query_params[key] for key in request.query_params}

        @get("/api/v2/metrics/query", guards=public, sync_to_thread=False)
        def metrics_query(request: Request[Any, Any, Any]) -> dict[str, Any]:
            simulator._authenticate(request, "metrics.read")
            return simulator.query_metrics(params_of(request))

        @get("/api/v2/problems", guards=public, sync_to_thread=False)
        def problems(request: Request[Any, Any, Any]) -> dict[str, Any]:
            simulator._authenticate(request, "problems.read")
            return simulator.list_problems(params_of(request))

        @get("/api/v2/problems/{problem_id:str}", guards=public, sync_to_thread=False)
        def problem(request: Request[Any, Any, Any], problem_id: FromPath[str]) -> dict[str, Any]:
            simulator._authenticate(request, "problems.read")
            found = next((p for p in simulator.data.problems if p.get("problemId") == problem_id), None)
            if found is None:
                raise SimulatedError(404, dynatrace_error(404, f"The problem {problem_id} does not exist."))
            return dict(found)

        @get("/api/v2/entities", guards=public, sync_to_thread=False)
        def entities(request: Request[Any, Any, Any]) -> dict[str, Any]:
            simulator._authenticate(request, "entities.read")
            return simulator.list_entities(params_of(request))

        @get("/api/v2/entities/{entity_id:str}", guards=public, sync_to_thread=False)
        def entity(request: Request[Any, Any, Any], entity_id: FromPath[str]) -> dict[str, Any]:
            simulator._authenticate(request, "entities.read")
            found = simulator._entities.get(entity_id)
            if found is None:
                raise SimulatedError(404, dynatrace_error(404, f"Entity {entity_id} not found"))
            return dict(found)

        @get("/api/v2/slo", guards=public, sync_to_thread=False)
        def slos(request: Request[Any, Any, Any]) -> dict[str, Any]:
            simulator._authenticate(request, "slo.read")
            return simulator.list_slos(params_of(request))

        @get("/api/v2/slo/{slo_id:str}", guards=public, sync_to_thread=False)
        def slo(request: Request[Any, Any, Any], slo_id: FromPath[str]) -> dict[str, Any]:
            simulator._authenticate(request, "slo.read")
            found = next((s for s in simulator.data.slos if s.get("id") == slo_id), None)
            if found is None:
                raise SimulatedError(404, dynatrace_error(404, f"SLO {slo_id} not found"))
            return simulator._evaluated(found, evaluate=True)

        return [metrics_query, problems, problem, entities, entity, slos, slo]


def _problem_sort_key(key: str) -> Callable[[Mapping[str, Any]], tuple[int, str]]:
    if key == "status":
        return lambda problem: (0, str(problem.get(key, "")))
    return lambda problem: (int(problem.get(key, 0)), "")


def _duration_text(milliseconds: int) -> str:
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds // 1000}s"


def _filter_holds(dims: Mapping[str, str], condition: tuple[str, str, tuple[str, ...]]) -> bool:
    operator, key, values = condition
    value = dims.get(key)
    if operator == "eq":
        return value == values[0]
    if operator == "ne":
        return value != values[0]
    return value in values


def _aggregate(values: Sequence[float], aggregation: str, percentile: float) -> float | None:
    if not values:
        return None
    if aggregation == "sum":
        return float(sum(values))
    if aggregation == "min":
        return float(min(values))
    if aggregation == "max":
        return float(max(values))
    if aggregation == "count":
        return float(len(values))
    if aggregation in ("median", "percentile"):
        ordered = sorted(values)
        rank = 50.0 if aggregation == "median" else percentile
        return float(ordered[min(len(ordered) - 1, max(0, math.ceil(rank / 100 * len(ordered)) - 1))])
    return sum(values) / len(values)


def _slot_values(
    series: MetricSeries, *, first: int, resolution: int, slots: int, data_end: int, aggregation: str, percentile: float
) -> list[float | None]:
    """Re-aggregate a stored series into ``slots`` slots of ``resolution`` from ``first``; only points that
    ended by ``data_end`` count, so the last slot may be partial."""
    buckets: list[list[float]] = [[] for _ in range(slots)]
    interval = series.interval_ms
    lowest = max(0, (first - series.start) // interval)
    for index in range(lowest, len(series.values)):
        point_start = series.start + index * interval
        if point_start + interval > data_end or point_start >= first + slots * resolution:
            break
        value = series.values[index]
        if value is None or math.isnan(value) or point_start < first:  # NaN is a null point of a loaded dataset
            continue
        buckets[(point_start - first) // resolution].append(float(value))
    return [_aggregate(bucket, aggregation, percentile) for bucket in buckets]


def _combine(members: list[list[float | None]], aggregation: str) -> list[float | None]:
    if len(members) == 1:
        return members[0]
    combined: list[float | None] = []
    for column in zip(*members, strict=True):
        present = [value for value in column if value is not None]
        combined.append(_aggregate(present, "sum" if aggregation in ("sum", "count") else aggregation, 50.0))
    return combined


def _mean(values: Iterable[float | None]) -> float:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else float("-inf")

"""The data a simulator serves: a directory of JSON files, written by the demo world (or by a test).

Format (every file is optional; a missing file or directory is an empty collection)::

    <dir>/servicenow/<table>.json        JSON array of records as the Table API returns them with
                                         sysparm_display_value=false: every value is a string ("" when
                                         empty); a reference field holds the bare sys_id of its target
                                         (the simulator renders {"link", "value"}). Each record needs
                                         "sys_id" and "sys_updated_on" ("YYYY-MM-DD HH:MM:SS", UTC).
    <dir>/dynatrace/entities.json        array of entities as GET /api/v2/entities returns them with
                                         every field (entityId, type, displayName, properties, tags,
                                         managementZones, fromRelationships, toRelationships,
                                         firstSeenTms, lastSeenTms); times epoch milliseconds.
    <dir>/dynatrace/problems.json        array of problems as GET /api/v2/problems returns them with
                                         fields=evidenceDetails,impactAnalysis,recentComments (endTime -1
                                         while status is OPEN).
    <dir>/dynatrace/slos.json            array of SLOs as GET /api/v2/slo?evaluate=true returns them; the
                                         simulator recomputes status and errorBudget from
                                         evaluatedPercentage, target and warning.
    <dir>/dynatrace/metrics/<key>.json   {"unit": "MicroSecond", "series": [{"dimensionMap": {...},
                                         "start": <epoch ms>, "intervalMs": 3600000,
                                         "values": [number | null, ...]}]}; value i covers
                                         [start + i*intervalMs, start + (i+1)*intervalMs). The file name
                                         is the metric key (e.g. builtin:service.response.time.json).
                                         /metrics/query re-aggregates to the requested resolution: sum
                                         when the unit is "Count", otherwise avg (or the transform asked).
    <dir>/argocd/applications.json       array of Application objects (API shape) with status.history.

Reference fields rendered as links, per table: see ``rosetta.simulators.servicenow.REFERENCE_FIELDS``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from rosetta.core.errors import ConfigurationError


class MetricSeries(msgspec.Struct, kw_only=True, rename="camel"):
    """One stored time series of a metric: regular points from ``start``, ``interval_ms`` apart.

    Once loaded, ``values`` is an ``array('d')`` where NaN stands for null (8 bytes a point instead of a
    Python float object), so a medium or large world's metrics fit in memory.
    """

    dimension_map: dict[str, str]
    start: int
    interval_ms: int
    values: Sequence[float | None]


class MetricData(msgspec.Struct, kw_only=True):
    """Everything stored for one metric key."""

    unit: str = "Unspecified"
    series: list[MetricSeries] = msgspec.field(default_factory=list)


@dataclass
class DynatraceData:
    """What the Dynatrace simulator serves."""

    entities: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    slos: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, MetricData] = field(default_factory=dict)


@dataclass
class Dataset:
    """The whole simulated world: ServiceNow tables, Dynatrace objects, Argo CD applications."""

    servicenow: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    dynatrace: DynatraceData = field(default_factory=DynatraceData)
    argocd_applications: list[dict[str, Any]] = field(default_factory=list)


def _read(path: Path, kind: Any) -> Any:
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ConfigurationError(f"simulator dataset {path}: {error}") from None
    except OSError as error:
        raise ConfigurationError(f"simulator dataset {path}: {error.strerror or error}") from None


def _read_list(path: Path) -> list[dict[str, Any]]:
    return _read(path, list[dict[str, Any]]) if path.is_file() else []


def load_dataset(directory: Path | None) -> Dataset:
    """Read a dataset directory (``None`` or a missing directory: an empty world).

    Raises ``ConfigurationError`` naming the file on malformed content, e.g. a ServiceNow value that is
    not a string.
    """
    dataset = Dataset()
    if directory is None or not directory.is_dir():
        return dataset
    servicenow = directory / "servicenow"
    if servicenow.is_dir():
        for path in sorted(servicenow.glob("*.json")):
            records: list[dict[str, str]] = _read(path, list[dict[str, str]])
            for number, record in enumerate(records, start=1):
                if not record.get("sys_id") or "sys_updated_on" not in record:
                    raise ConfigurationError(
                        f"simulator dataset {path}: record {number} has no sys_id or sys_updated_on"
                    )
            dataset.servicenow[path.stem] = records
    dynatrace = directory / "dynatrace"
    dataset.dynatrace.entities = _read_list(dynatrace / "entities.json")
    dataset.dynatrace.problems = _read_list(dynatrace / "problems.json")
    dataset.dynatrace.slos = _read_list(dynatrace / "slos.json")
    metrics = dynatrace / "metrics"
    if metrics.is_dir():
        for path in sorted(metrics.glob("*.json")):
            metric: MetricData = _read(path, MetricData)
            for series in metric.series:
                series.values = array("d", (math.nan if value is None else value for value in series.values))
            dataset.dynatrace.metrics[path.name.removesuffix(".json")] = metric
    dataset.argocd_applications = _read_list(directory / "argocd" / "applications.json")
    return dataset


def write_dataset(directory: Path, dataset: Dataset) -> None:
    """Write ``dataset`` in the format :func:`load_dataset` reads (used by the demo world and tests)."""
    for table, records in dataset.servicenow.items():
        _write(directory / "servicenow" / f"{table}.json", records)
    data = dataset.dynatrace
    for name, items in (("entities", data.entities), ("problems", data.problems), ("slos", data.slos)):
        if items:
            _write(directory / "dynatrace" / f"{name}.json", items)
    for key, metric in data.metrics.items():
        series = [
            {
                "dimensionMap": item.dimension_map,
                "start": item.start,
                "intervalMs": item.interval_ms,
                "values": [None if value is None or math.isnan(value) else value for value in item.values],
            }
            for item in metric.series
        ]
        _write(directory / "dynatrace" / "metrics" / f"{key}.json", {"unit": metric.unit, "series": series})
    if dataset.argocd_applications:
        _write(directory / "argocd" / "applications.json", dataset.argocd_applications)


def _write(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(content))

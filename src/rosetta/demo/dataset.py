"""Writes the simulator dataset of a world: the files the ServiceNow, Dynatrace and Argo CD simulators serve.

Layout (every file a JSON array unless said otherwise, written one element at a time)::

    servicenow/{incident,change_request,cmdb_ci_business_app,cmdb_ci_service,cmdb_rel_ci}.json
    dynatrace/entities.json, problems.json, slos.json
    dynatrace/metrics/<metric key>.json   {"unit": ..., "series": [{"dimensionMap", "start", "intervalMs", "values"}]}
    argocd/applications.json, argocd/revisions.json
    manifest.json                          {"origin", "files": {path: {"records", "sha256"}}}

Files are first written under a temporary name and renamed, so a reader never sees half a dataset file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import msgspec

from rosetta.demo import argocd, dynatrace, servicenow
from rosetta.demo.operations import Operations
from rosetta.demo.world import World

_encoder = msgspec.json.Encoder()


class JsonArrayFile:
    """A JSON array written element by element to ``path`` (atomically renamed when closed without error)."""

    def __init__(self, path: Path, *, prefix: bytes = b"[", suffix: bytes = b"]\n") -> None:
        self.path = path
        self.records = 0
        self._suffix = suffix
        self._digest = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = path.with_name(f".{path.name}.partial")
        self._file: IO[bytes] = self._temporary.open("wb", buffering=1 << 20)
        self._write(prefix)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)

    def append(self, record: Any) -> None:
        """Add one element."""
        self._write((b",\n" if self.records else b"\n") + _encoder.encode(record))
        self.records += 1

    def extend(self, records: Iterable[Any]) -> None:
        """Add every element of an iterable."""
        for record in records:
            self.append(record)

    @property
    def sha256(self) -> str:
        """Digest of the bytes written so far (the whole file once closed)."""
        return self._digest.hexdigest()

    def __enter__(self) -> JsonArrayFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self._write((b"\n" if self.records else b"") + self._suffix)
        self._file.close()
        if kind is None:
            os.replace(self._temporary, self.path)
        else:
            self._temporary.unlink(missing_ok=True)


SERVICENOW_TABLES = ("cmdb_ci_business_app", "cmdb_ci_service", "cmdb_rel_ci", "change_request", "incident")


def _metric_file_name(key: str) -> str:
    return f"{key}.json"


def write_dataset(world: World, operations: list[Operations], directory: Path) -> dict[str, dict[str, Any]]:
    """Write the whole simulator dataset into ``directory``; return ``{relative path: {records, sha256}}``."""
    files: dict[str, dict[str, Any]] = {}

    def record(handle: JsonArrayFile) -> None:
        files[handle.path.relative_to(directory).as_posix()] = {"records": handle.records, "sha256": handle.sha256}

    tables: dict[str, Iterator[dict[str, str]]] = {
        "cmdb_ci_business_app": servicenow.business_apps(world),
        "cmdb_ci_service": servicenow.services(world),
        "cmdb_rel_ci": servicenow.relationships(world),
        "change_request": servicenow.change_requests(world, operations),
        "incident": servicenow.incidents(world, operations),
    }
    for table in SERVICENOW_TABLES:
        with JsonArrayFile(directory / "servicenow" / f"{table}.json") as handle:
            handle.extend(tables[table])
        record(handle)

    slo_objects = _write_metrics(world, operations, directory, record)
    for name, items in (
        ("entities", dynatrace.entities(world)),
        ("problems", dynatrace.problems(world, operations)),
        ("slos", iter(slo_objects)),
    ):
        with JsonArrayFile(directory / "dynatrace" / f"{name}.json") as handle:
            handle.extend(items)
        record(handle)

    for name, items in (
        ("applications", argocd.applications(world, operations)),
        ("revisions", argocd.revisions(world, operations)),
    ):
        with JsonArrayFile(directory / "argocd" / f"{name}.json") as handle:
            handle.extend(items)
        record(handle)

    files = dict(sorted(files.items()))
    temporary = directory / ".manifest.json.partial"
    manifest = _encoder.encode({"origin": world.origin, "files": files})
    temporary.write_bytes(msgspec.json.format(manifest, indent=2) + b"\n")
    os.replace(temporary, directory / "manifest.json")
    return files


def _write_metrics(
    world: World, operations: list[Operations], directory: Path, record: Callable[[JsonArrayFile], None]
) -> list[dict[str, Any]]:
    """One file per metric key, every service's series in each; returns the SLOs evaluated on the way."""
    slos: list[dict[str, Any]] = []
    with ExitStack() as stack:
        handles = {
            key: stack.enter_context(
                JsonArrayFile(
                    directory / "dynatrace" / "metrics" / _metric_file_name(key),
                    prefix=b'{"unit":' + _encoder.encode(unit) + b',"series":[',
                    suffix=b"]}\n",
                )
            )
            for key, unit in dynatrace.METRIC_UNITS.items()
        }
        for ops in operations:
            series = dynatrace.service_series(world, ops)
            for key, handle in handles.items():
                handle.append(dynatrace.series_object(world, series, key))
            objective = dynatrace.slo(world, series, ops)
            if objective is not None:
                slos.append(objective)
    for handle in handles.values():
        record(handle)
    return slos

"""The simulator dataset of the demo world: byte-for-byte determinism, API shapes, and cross-system coherence."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean
from typing import Any

import pytest

from rosetta.demo import argocd, servicenow
from rosetta.demo.landing import dataset_present, write_simulator_dataset
from rosetta.demo.operations import world_operations
from rosetta.demo.world import WorldSize, build_world
from rosetta.simulators.dataset import load_dataset

SERVICENOW_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
SYS_ID = re.compile(r"[0-9a-f]{32}")
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo-dataset")
    write_simulator_dataset(build_world(WorldSize.SMALL, seed=1), directory)
    return directory


def _load(directory: Path, relative: str) -> Any:
    return json.loads((directory / relative).read_text())


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_same_seed_same_dataset_byte_for_byte(dataset_dir: Path, tmp_path: Path) -> None:
    result = write_simulator_dataset(build_world(WorldSize.SMALL, seed=1), tmp_path)
    hashes = _file_hashes(tmp_path)
    assert hashes == _file_hashes(dataset_dir)
    assert len(hashes) == 16  # 5 ServiceNow tables, 3 Dynatrace lists, 5 metrics, 2 Argo CD files, the manifest
    assert all(hashes[path] == entry["sha256"] for path, entry in result.files.items())
    assert dataset_present(tmp_path)
    assert not list(tmp_path.rglob("*.partial"))


def test_another_seed_gives_other_files(dataset_dir: Path, tmp_path: Path) -> None:
    write_simulator_dataset(build_world(WorldSize.SMALL, seed=2), tmp_path)
    ours, theirs = _file_hashes(dataset_dir), _file_hashes(tmp_path)
    assert all(ours[path] != theirs[path] for path in ours)


def test_the_simulators_load_it(dataset_dir: Path) -> None:
    dataset = load_dataset(dataset_dir)
    assert set(dataset.servicenow) == {
        "incident", "change_request", "cmdb_ci_business_app", "cmdb_ci_service", "cmdb_rel_ci",
    }  # fmt: skip
    assert len(dataset.dynatrace.entities) == 40
    assert len(dataset.dynatrace.metrics["builtin:service.response.time"].series) == 40
    assert dataset.argocd_applications


def test_servicenow_records_are_table_api_shaped(dataset_dir: Path) -> None:
    for table in ("incident", "change_request", "cmdb_ci_business_app", "cmdb_ci_service", "cmdb_rel_ci"):
        records = _load(dataset_dir, f"servicenow/{table}.json")
        assert records, table
        ids = [record["sys_id"] for record in records]
        assert len(set(ids)) == len(ids)
        for record in records:
            assert all(isinstance(value, str) for value in record.values()), table
            assert SYS_ID.fullmatch(record["sys_id"])
            for field in ("sys_created_on", "sys_updated_on", "opened_at", "resolved_at", "closed_at", "work_start"):
                if record.get(field):
                    assert SERVICENOW_DATE.fullmatch(record[field]), (table, field, record[field])
            assert record["sys_updated_on"] <= "2026-11-01 00:00:00"


def test_servicenow_references_resolve(dataset_dir: Path) -> None:
    services = {r["sys_id"]: r for r in _load(dataset_dir, "servicenow/cmdb_ci_service.json")}
    apps = {r["sys_id"]: r for r in _load(dataset_dir, "servicenow/cmdb_ci_business_app.json")}
    changes = {r["sys_id"]: r for r in _load(dataset_dir, "servicenow/change_request.json")}
    incidents = _load(dataset_dir, "servicenow/incident.json")
    for relation in _load(dataset_dir, "servicenow/cmdb_rel_ci.json"):
        assert relation["parent"] in services or relation["parent"] in apps
        assert relation["child"] in services
    for record in [*incidents, *changes.values()]:
        assert services[record["business_service"]]["used_for"] == "Production"
        assert record["cmdb_ci"] == record["business_service"]
    caused = [incident for incident in incidents if incident["caused_by"]]
    assert caused, "some incidents are caused by changes"
    assert len(caused) < len(incidents)
    for incident in caused:
        change = changes[incident["caused_by"]]
        assert change["close_code"] in ("unsuccessful", "")
        assert change["work_end"] <= incident["opened_at"]
        if incident["rfc"]:
            assert changes[incident["rfc"]]["type"] == "emergency"
    numbers = [incident["number"] for incident in incidents]
    assert numbers == sorted(numbers)
    assert [incident["opened_at"] for incident in incidents] == sorted(incident["opened_at"] for incident in incidents)


def test_argo_cd_applications_and_history(dataset_dir: Path) -> None:
    applications = _load(dataset_dir, "argocd/applications.json")
    names = [application["metadata"]["name"] for application in applications]
    assert names == sorted(names)
    world = build_world(WorldSize.SMALL, seed=1)
    expected = sorted(
        f"{app.slug}-{env}" for app in world.applications if app.current.status != "retired" for env in app.environments
    )
    assert names == expected
    changes = _load(dataset_dir, "servicenow/change_request.json")
    by_correlation = {change["correlation_id"]: change for change in changes}
    rollbacks = failed = 0
    for application in applications:
        history = application["status"]["history"]
        assert [entry["id"] for entry in history] == sorted({entry["id"] for entry in history})
        for entry in history:
            assert RFC3339.fullmatch(entry["deployedAt"])
            assert entry["deployStartedAt"] <= entry["deployedAt"]
            assert re.fullmatch(r"[0-9a-f]{40}", entry["revision"])
            if "username" in entry["initiatedBy"]:
                rollbacks += 1
        if application["status"]["operationState"]["phase"] == "Failed":
            failed += 1
            assert application["status"]["sync"]["status"] == "OutOfSync"
        if application["metadata"]["name"].endswith("-prod"):
            # Every production deployment after the baseline has its change request.
            for entry in history[1:]:
                assert f"{application['metadata']['name']}@{entry['revision']}" in by_correlation
    assert rollbacks > 0
    assert failed > 0
    revisions = {(r["application"], r["revision"]) for r in _load(dataset_dir, "argocd/revisions.json")}
    for application in applications:
        code = application["metadata"]["labels"]["app.kubernetes.io/part-of"]
        assert all((code, entry["revision"]) in revisions for entry in application["status"]["history"])


def test_dynatrace_objects_and_seasonal_series(dataset_dir: Path) -> None:
    entities = _load(dataset_dir, "dynatrace/entities.json")
    ids = {entity["entityId"] for entity in entities}
    assert all(re.fullmatch(r"SERVICE-[0-9A-F]{16}", entity_id) for entity_id in ids)
    for entity in entities:
        assert {call["id"] for call in entity["fromRelationships"]["calls"]} <= ids
    problems = _load(dataset_dir, "dynatrace/problems.json")
    assert problems
    for problem in problems:
        assert problem["status"] in ("OPEN", "CLOSED")
        assert (problem["endTime"] == -1) == (problem["status"] == "OPEN")
        assert problem["affectedEntities"][0]["entityId"]["id"] in ids
    assert len({problem["displayId"] for problem in problems}) == len(problems)
    for objective in _load(dataset_dir, "dynatrace/slos.json"):
        value, target, warning = objective["evaluatedPercentage"], objective["target"], objective["warning"]
        expected = "SUCCESS" if value >= warning else ("WARNING" if value >= target else "FAILURE")
        assert objective["status"] == expected
    requests = _load(dataset_dir, "dynatrace/metrics/builtin:service.requestCount.total.json")
    assert requests["unit"] == "Count"
    assert {series["dimensionMap"]["dt.entity.service"] for series in requests["series"]} == ids
    # Daily and weekly seasonality, summed over every service: afternoons beat nights, weekdays beat weekends.
    by_hour: dict[int, list[float]] = {}
    by_weekday: dict[bool, list[float]] = {}
    for series in requests["series"]:
        assert series["intervalMs"] == 3_600_000
        assert len(series["values"]) == 28 * 24
        for slot, value in enumerate(series["values"]):
            if value is None:
                continue
            moment = datetime.fromtimestamp((series["start"] + slot * series["intervalMs"]) / 1000, tz=UTC)
            by_hour.setdefault(moment.hour, []).append(value)
            by_weekday.setdefault(moment.weekday() >= 5, []).append(value)
    assert mean(by_hour[14]) > 3 * mean(by_hour[3])
    assert mean(by_weekday[False]) > 1.4 * mean(by_weekday[True])


def test_problems_show_in_the_error_series(dataset_dir: Path) -> None:
    errors = _load(dataset_dir, "dynatrace/metrics/builtin:service.errors.server.rate.json")
    series_by_entity = {series["dimensionMap"]["dt.entity.service"]: series for series in errors["series"]}
    inside, outside = [], []
    windows: dict[str, list[tuple[int, int]]] = {}
    for problem in _load(dataset_dir, "dynatrace/problems.json"):
        if problem["severityLevel"] in ("ERROR", "AVAILABILITY"):
            entity = problem["affectedEntities"][0]["entityId"]["id"]
            end = problem["endTime"] if problem["endTime"] != -1 else 2**62
            windows.setdefault(entity, []).append((problem["startTime"], end))
    for entity, series in series_by_entity.items():
        for slot, value in enumerate(series["values"]):
            if value is None:
                continue
            start = series["start"] + slot * series["intervalMs"]
            hit = any(begin < start + series["intervalMs"] and end > start for begin, end in windows.get(entity, []))
            (inside if hit else outside).append(value)
    assert inside, "some error problems fall in the metric window"
    assert mean(inside) > 5 * mean(outside)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_other_seeds_keep_the_invariants(seed: int) -> None:
    world = build_world(WorldSize.SMALL, seed=seed)
    operations = world_operations(world)
    services = {record["sys_id"] for record in servicenow.services(world)}
    changes = {record["sys_id"]: record for record in servicenow.change_requests(world, operations)}
    incidents = list(servicenow.incidents(world, operations))
    end = "2026-11-01 00:00:00"
    assert any(incident["caused_by"] for incident in incidents)
    for record in [*incidents, *changes.values()]:
        assert record["sys_updated_on"] <= end
        assert record["business_service"] in services
    for incident in incidents:
        assert not incident["caused_by"] or incident["caused_by"] in changes
        assert not incident["rfc"] or incident["rfc"] in changes
    histories = [application["status"]["history"] for application in argocd.applications(world, operations)]
    assert all(history for history in histories)

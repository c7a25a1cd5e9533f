"""The Kubernetes API simulator answers like the API server: Status objects, RBAC refusals, name rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rosetta.simulators.kubernetes import ServiceAccount, build_kubernetes_simulator
from simulators.world import serving

NAMESPACE = "platform"
CRONJOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "rosetta-batch-finops", "namespace": NAMESPACE, "uid": "0b9d7c1e-cron"},
    "spec": {"schedule": "30 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {}}}}},
}
LAUNCHER = ServiceAccount(NAMESPACE, "rosetta", {("get", "cronjobs"), ("create", "jobs"), ("get", "jobs")})
READER = ServiceAccount(NAMESPACE, "viewer", {("get", "cronjobs")})


def _job(name: str, **pod: Any) -> dict[str, Any]:
    spec = {"restartPolicy": "Never", "containers": [{"name": "rosetta", "image": "rosetta:2"}], **pod}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"template": {"spec": spec}}}


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    simulator = build_kubernetes_simulator(tokens={"launch": LAUNCHER, "read": READER}, cronjobs=[CRONJOB])
    assert simulator.app is not None
    with serving(simulator.app.asgi) as server:
        yield server.url


def test_reads_a_cronjob_with_a_token_and_refuses_without(api: str) -> None:
    path = f"{api}/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/rosetta-batch-finops"
    found = httpx.get(path, headers={"Authorization": "Bearer read"})
    assert found.status_code == 200
    assert found.json()["metadata"]["uid"] == "0b9d7c1e-cron"
    anonymous = httpx.get(path)
    assert anonymous.status_code == 401
    assert anonymous.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    missing = httpx.get(path.replace("finops", "nope"), headers={"Authorization": "Bearer read"})
    assert (missing.status_code, missing.json()["reason"]) == (404, "NotFound")
    assert missing.json()["message"] == 'cronjobs.batch "rosetta-batch-nope" not found'


def test_creates_a_job_once_and_refuses_what_rbac_or_validation_refuses(api: str) -> None:
    jobs = f"{api}/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    launch = {"Authorization": "Bearer launch"}
    created = httpx.post(jobs, json=_job("finops-manual-1"), headers=launch)
    assert created.status_code == 201, created.text
    assert created.json()["metadata"]["namespace"] == NAMESPACE
    assert created.json()["metadata"]["uid"]
    assert httpx.get(f"{jobs}/finops-manual-1", headers=launch).json()["status"] == {}

    again = httpx.post(jobs, json=_job("finops-manual-1"), headers=launch)
    assert (again.status_code, again.json()["reason"]) == (409, "AlreadyExists")

    forbidden = httpx.post(jobs, json=_job("finops-manual-2"), headers={"Authorization": "Bearer read"})
    assert (forbidden.status_code, forbidden.json()["reason"]) == (403, "Forbidden")
    assert forbidden.json()["message"] == (
        'jobs.batch is forbidden: User "system:serviceaccount:platform:viewer" cannot create resource "jobs"'
        ' in API group "batch" in the namespace "platform"'
    )

    too_long = httpx.post(jobs, json=_job("x" * 64), headers=launch)
    assert (too_long.status_code, too_long.json()["reason"]) == (422, "Invalid")
    restarting = httpx.post(jobs, json=_job("finops-manual-3", restartPolicy="Always"), headers=launch)
    assert restarting.status_code == 422
    assert "restartPolicy" in restarting.json()["message"]
    elsewhere = {**_job("finops-manual-4"), "metadata": {"name": "finops-manual-4", "namespace": "other"}}
    assert httpx.post(jobs, json=elsewhere, headers=launch).status_code == 400

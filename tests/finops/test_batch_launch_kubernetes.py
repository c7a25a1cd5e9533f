"""POST batch/runs with the Kubernetes launcher: the run is queued, a Job is made from the chart's CronJob on
the Kubernetes API simulator (real HTTP), and ``rosetta batch finops --run-id`` (the Job's command, run here as
a real process) executes that very run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import kubernetes_validate
import pytest
from api_support import API, migrated_databases
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import URL

from chart_support import manifest
from realdb import settings_for
from rosetta.batch.jobs import registered_jobs
from rosetta.batch.kubernetes import RUN_ID_LABEL, KubernetesJobLauncher
from rosetta.core.db import asyncpg_dsn
from rosetta.core.http import create_app
from rosetta.core.settings import DatabaseRole, Settings
from rosetta.finops.api import context_api
from rosetta.simulators.kubernetes import KubernetesSimulator, ServiceAccount, build_kubernetes_simulator
from simulators.world import serving

NAMESPACE = "platform"
CRONJOB = "rosetta-batch-finops"
CRONJOB_UID = "5c1f0e7a-0000-4000-8000-00000000c0de"
LAUNCHER_TOKEN = "launcher-token"
VIEWER_TOKEN = "viewer-token"
Client = AsyncTestClient[Litestar]


@pytest.fixture(scope="module")
def urls(server_url: URL) -> Iterator[dict[DatabaseRole, URL]]:
    yield from migrated_databases(server_url, "fk8s")


@pytest.fixture(scope="module")
def kubernetes() -> Iterator[tuple[KubernetesSimulator, str]]:
    """The API server holding the chart's own finops-batch CronJob, as the chart renders it."""
    cronjob = manifest({"secrets": {"databases": "rosetta-databases"}}, "CronJob", CRONJOB)
    cronjob["metadata"].update(namespace=NAMESPACE, uid=CRONJOB_UID)
    simulator = build_kubernetes_simulator(
        tokens={
            LAUNCHER_TOKEN: ServiceAccount(NAMESPACE, "rosetta", {("get", "cronjobs"), ("create", "jobs")}),
            VIEWER_TOKEN: ServiceAccount(NAMESPACE, "viewer", {("get", "cronjobs")}),
        },
        cronjobs=[cronjob],
    )
    assert simulator.app is not None
    with serving(simulator.app.asgi) as server:
        yield simulator, server.url


@pytest.fixture(scope="module")
def service_account(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pod's service-account files: token and namespace (no CA: the simulator speaks plain HTTP)."""
    directory = tmp_path_factory.mktemp("serviceaccount")
    (directory / "token").write_text(LAUNCHER_TOKEN)
    (directory / "namespace").write_text(NAMESPACE)
    return directory


def launcher_settings(urls: dict[DatabaseRole, URL], issuer: Any, api_url: str, service_account: Path) -> Settings:
    return settings_for(
        urls,
        oidc_issuers=[issuer.settings()],
        batch_launcher="kubernetes",
        kubernetes={
            "api_url": api_url,
            "token_file": str(service_account / "token"),
            "ca_file": str(service_account / "ca.crt"),
            "cronjobs": {"finops": CRONJOB},
        },
    )


async def client_for(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(
        [context_api()], process="test", settings=settings, launcher=KubernetesJobLauncher(registered_jobs(), settings)
    )
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture(scope="module")
async def client(
    urls: dict[DatabaseRole, URL],
    identity_server: Any,
    kubernetes: tuple[KubernetesSimulator, str],
    service_account: Path,
) -> AsyncIterator[Client]:
    async for api in client_for(launcher_settings(urls, identity_server.entra, kubernetes[1], service_account)):
        yield api


def batch_cli(urls: dict[DatabaseRole, URL], *arguments: str) -> subprocess.CompletedProcess[str]:
    """``rosetta batch finops ...`` in its own process, as the launched Job's pod runs it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    env["ROSETTA_ENV"] = "test"
    for role, url in urls.items():
        env[f"ROSETTA_{role.upper()}_DATABASE_URL"] = url.render_as_string(hide_password=False)
    return subprocess.run(
        [sys.executable, "-m", "rosetta", "batch", "finops", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def launched(client: Client, headers: Any, period: str) -> str:
    """``POST batch/runs`` for ``period``; the queued run's id."""
    accepted = await client.post(f"{API}/batch/runs", json={"period": period}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    run_id: str = accepted.json()["runId"]
    return run_id


async def rewrite_run(urls: dict[DatabaseRole, URL], run_id: str, assignments: str) -> None:
    """Put a run record in the state a pod or a clock left it in (``UPDATE batch_run SET <assignments>``)."""
    finops = await asyncpg.connect(asyncpg_dsn(urls["finops"]))
    try:
        await finops.execute(f"UPDATE batch_run SET {assignments} WHERE run_id = $1", uuid.UUID(run_id))
    finally:
        await finops.close()


async def test_a_triggered_run_becomes_a_job_from_the_cronjob_and_the_job_runs_it(
    client: Client,
    urls: dict[DatabaseRole, URL],
    kubernetes: tuple[KubernetesSimulator, str],
    auth_headers: Any,
) -> None:
    simulator, _ = kubernetes
    as_finops = auth_headers("Rosetta_FinOps_Admin", subject="fiona")
    run_id = await launched(client, as_finops, "2026-01")
    queued = (await client.get(f"{API}/batch/runs/{run_id}", headers=as_finops)).json()
    assert (queued["status"], queued["requestedBy"]) == ("queued", "oid-fiona")

    created = [job for (namespace, _), job in simulator.jobs.items() if namespace == NAMESPACE]
    job = next(job for job in created if job["metadata"]["labels"][RUN_ID_LABEL] == run_id)
    assert job["metadata"]["name"] == f"{CRONJOB}-{uuid.UUID(run_id).hex[:8]}"
    assert job["metadata"]["ownerReferences"][0]["uid"] == CRONJOB_UID
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["annotations"]["rosetta.io/requested-by"] == "oid-fiona"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["batch", "finops", "--run-id", run_id]
    # Everything else is the CronJob's: image, Secrets, resources, security, failure policy.
    template = manifest({"secrets": {"databases": "rosetta-databases"}}, "CronJob", CRONJOB)["spec"]["jobTemplate"]
    assert container["image"] == template["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["envFrom"] == [{"secretRef": {"name": "rosetta-databases"}}]
    assert job["spec"]["podFailurePolicy"] == template["spec"]["podFailurePolicy"]
    assert pod["restartPolicy"] == "Never"
    server_fields = {"namespace", "uid", "creationTimestamp"}
    kubernetes_validate.validate(
        {
            **{key: value for key, value in job.items() if key != "status"},
            "metadata": {k: v for k, v in job["metadata"].items() if k not in server_fields},
        },
        "1.30.0",
        strict=True,
    )

    ran = await asyncio.to_thread(batch_cli, urls, "--run-id", run_id)
    assert ran.returncode == 0, ran.stderr
    assert f"finops run {run_id} succeeded" in ran.stdout
    finished = (await client.get(f"{API}/batch/runs/{run_id}", headers=as_finops)).json()
    assert finished["status"] == "succeeded"
    assert finished["parameters"] == {"period": "2026-01"}

    # A run that ended is never run again under the same id (a retried pod, a copy-pasted command).
    again = await asyncio.to_thread(batch_cli, urls, "--run-id", run_id)
    assert again.returncode == 3
    assert again.stderr.strip() == f"rosetta: error: finops run {run_id} is succeeded, not queued: it is not run again"
    unknown = await asyncio.to_thread(batch_cli, urls, "--run-id", str(uuid.uuid4()))
    assert unknown.returncode == 2  # a bad argument
    assert unknown.stderr.strip().startswith("rosetta: error: no finops run ")


async def test_a_job_the_api_server_refuses_fails_the_run_with_its_reason(
    client: Client,
    kubernetes: tuple[KubernetesSimulator, str],
    service_account: Path,
    auth_headers: Any,
) -> None:
    simulator, _ = kubernetes
    as_finops = auth_headers("Rosetta_FinOps_Admin", subject="fiona")
    before = len(simulator.jobs)
    # The kubelet rotated the token to an account without `create jobs`: read again at this call, refused.
    (service_account / "token").write_text(VIEWER_TOKEN)
    try:
        refused = await client.post(f"{API}/batch/runs", json={"period": "2026-02"}, headers=as_finops)
    finally:
        (service_account / "token").write_text(LAUNCHER_TOKEN)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "403 Forbidden" in refused.json()["detail"]
    assert len(simulator.jobs) == before
    runs = (await client.get(f"{API}/batch/runs", headers=as_finops)).json()["items"]
    failed = next(run for run in runs if run["parameters"] == {"period": "2026-02"})
    assert failed["status"] == "failed"
    assert 'cannot create resource "jobs"' in failed["error"]


async def test_an_unreachable_api_server_fails_the_run_not_the_api(
    urls: dict[DatabaseRole, URL], identity_server: Any, service_account: Path, auth_headers: Any
) -> None:
    settings = launcher_settings(urls, identity_server.entra, "http://127.0.0.1:9", service_account)
    as_finops = auth_headers("Rosetta_FinOps_Admin", subject="fiona")
    async for api in client_for(settings):
        refused = await api.post(f"{API}/batch/runs", json={"period": "2026-03"}, headers=as_finops)
        assert refused.status_code == 503, refused.text
        assert "did not answer" in refused.json()["detail"]
        runs = (await api.get(f"{API}/batch/runs", headers=as_finops)).json()["items"]
        failed = next(run for run in runs if run["parameters"] == {"period": "2026-03"})
        assert failed["status"] == "failed"


async def test_a_run_whose_job_never_started_expires_and_is_never_run_late(
    client: Client,
    urls: dict[DatabaseRole, URL],
    kubernetes: tuple[KubernetesSimulator, str],
    auth_headers: Any,
) -> None:
    simulator, _ = kubernetes
    as_finops = auth_headers("Rosetta_FinOps_Admin", subject="fiona")
    run_id = await launched(client, as_finops, "2026-04")
    assert any(job["metadata"]["labels"][RUN_ID_LABEL] == run_id for job in simulator.jobs.values())
    # Its Job's pod never ran (image never pulled, never scheduled) and Kubernetes gave up on it long ago.
    await rewrite_run(urls, run_id, "queued_at = now() - interval '4 hours'")
    assert (await client.get(f"{API}/batch/runs/{run_id}", headers=as_finops)).json()["status"] == "queued"

    # The next launch records it failed, with a reason an operator can act on.
    following = await launched(client, as_finops, "2026-05")
    expired = (await client.get(f"{API}/batch/runs/{run_id}", headers=as_finops)).json()
    assert expired["status"] == "failed"
    assert expired["error"].startswith("expired: not started within 10800 s of being queued")
    assert "Job's events" in expired["error"]
    assert (await client.get(f"{API}/batch/runs/{following}", headers=as_finops)).json()["status"] == "queued"

    # Should its pod start after all, it is refused (exit 3, never retried): a failed run stays failed.
    late = await asyncio.to_thread(batch_cli, urls, "--run-id", run_id)
    assert late.returncode == 3
    assert late.stderr.strip() == f"rosetta: error: finops run {run_id} is failed, not queued: it is not run again"

    # While the following run is queued, another trigger is refused: it would only queue behind it.
    refused = await client.post(f"{API}/batch/runs", json={"period": "2026-06"}, headers=as_finops)
    assert refused.status_code == 409, refused.text
    assert refused.json()["runId"] == following
    # No pod runs in the simulator: end the following run here, as its expiry would, for the next tests.
    await rewrite_run(urls, following, "status = 'failed', finished_at = now(), error = 'expired (test)'")


async def test_a_retried_pod_takes_over_the_run_its_evicted_pod_had_started(
    client: Client, urls: dict[DatabaseRole, URL], auth_headers: Any
) -> None:
    as_finops = auth_headers("Rosetta_FinOps_Admin", subject="fiona")
    run_id = await launched(client, as_finops, "2026-01")
    # What the first pod leaves when a node drain evicts it mid-run (podFailurePolicy ignores the disruption and
    # the Job starts another pod): the record says running, and its lock went with its connection.
    await rewrite_run(urls, run_id, "status = 'running', started_at = now()")

    retried = await asyncio.to_thread(batch_cli, urls, "--run-id", run_id)
    assert retried.returncode == 0, retried.stderr
    assert f"finops run {run_id} succeeded" in retried.stdout
    finished = (await client.get(f"{API}/batch/runs/{run_id}", headers=as_finops)).json()
    assert finished["status"] == "succeeded"
    assert finished["counters"]["attempts"] == 2
    assert finished["parameters"] == {"period": "2026-01"}

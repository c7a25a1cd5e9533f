"""The Kubernetes launcher: a run started through an API executes as a Job made from the job's CronJob.

``InProcessLauncher`` runs the batch inside the API process that took the request, within that pod's CPU
and memory: fine on a laptop, a risk in production, where a full finops-batch needs more memory than an API
pod is given. This launcher does what ``kubectl create job --from=cronjob/<name>`` does: it reads the
CronJob, copies its Job template (image, resources, Secrets, security, failure policy), points the
``rosetta`` container at the queued run (``rosetta batch <job> --run-id <id>``) and creates the Job, owned by
the CronJob (its history limits clean it up, deleting the CronJob deletes it). The CronJob controller does not
count a Job it did not schedule for ``concurrencyPolicy``: the job's database lock is what keeps a launched run
and a scheduled one from overlapping (the later one exits 3, its run recorded failed). The run record is
committed as ``queued`` first, so the caller can follow it at once; the pod's ``rosetta batch`` takes it
from there. If the Job cannot be created the run is recorded ``failed`` with the API server's reason and the
caller gets a 503.

Credentials are the pod's service account (token re-read at every call: the kubelet rotates it; the cluster
CA). The chart grants it exactly ``get`` on the CronJobs it names and ``create`` on Jobs.
"""

from __future__ import annotations

import copy
import logging
import os
import ssl
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from rosetta.batch.runner import JobSpec, expire_stale_runs
from rosetta.core import runs
from rosetta.core.db import Databases
from rosetta.core.errors import ConfigurationError, NotFoundError, ServiceUnavailableError
from rosetta.core.settings import KubernetesSettings, Settings

logger = logging.getLogger(__name__)

CONTAINER = "rosetta"
RUN_ID_LABEL = "rosetta.io/run-id"
JOB_LABEL = "rosetta.io/job"
REQUESTED_BY_ANNOTATION = "rosetta.io/requested-by"


class KubernetesApiError(Exception):
    """A refusal of the API server (its ``Status``), or no answer at all (``status`` 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason


class KubernetesApi:
    """The two calls the launcher needs, with the pod's service-account credentials."""

    def __init__(self, settings: KubernetesSettings, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._settings = settings
        if settings.api_url:
            self.base_url = settings.api_url.rstrip("/")
        elif environ.get("KUBERNETES_SERVICE_HOST"):
            host, port = environ["KUBERNETES_SERVICE_HOST"], environ.get("KUBERNETES_SERVICE_PORT", "443")
            self.base_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        else:
            raise ConfigurationError(
                "the Kubernetes launcher runs in a pod (KUBERNETES_SERVICE_HOST is not set): "
                "set ROSETTA_KUBERNETES__API_URL to use it elsewhere"
            )
        self.namespace = settings.namespace or _read(settings.token_file.parent / "namespace", "namespace")

    def _client(self) -> httpx.AsyncClient:
        token = _read(self._settings.token_file, "service-account token")
        verify: ssl.SSLContext | bool = True
        if self.base_url.startswith("https://") and self._settings.ca_file.exists():
            verify = ssl.create_default_context(cafile=str(self._settings.ca_file))
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=self._settings.timeout_seconds,
            verify=verify,
        )

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise KubernetesApiError(
                0, "Unreachable", f"the Kubernetes API at {self.base_url} did not answer: {type(error).__name__}"
            ) from error
        if response.is_success:
            result: dict[str, Any] = response.json()
            return result
        try:
            status = response.json()
        except ValueError:
            status = {}
        raise KubernetesApiError(
            response.status_code, str(status.get("reason") or response.reason_phrase), str(status.get("message") or "")
        )

    async def read_cronjob(self, name: str) -> dict[str, Any]:
        """The CronJob ``name`` of the namespace."""
        return await self._call("GET", f"/apis/batch/v1/namespaces/{self.namespace}/cronjobs/{name}")

    async def create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create ``job`` in the namespace; the API server's copy of it."""
        return await self._call("POST", f"/apis/batch/v1/namespaces/{self.namespace}/jobs", job)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        raise ConfigurationError(
            f"no {what} at {path}: the Kubernetes launcher needs the pod's service account mounted"
        ) from None


def job_from_cronjob(cronjob: Mapping[str, Any], *, job: str, run_id: uuid.UUID, requested_by: str) -> dict[str, Any]:
    """The Job that runs the queued run ``run_id``: the CronJob's template, its ``rosetta`` container pointed at it."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    cronjob_meta = cronjob["metadata"]
    metadata = template.get("metadata") or {}
    # Kubernetes names are at most 63 characters; the chart keeps CronJob names to 52.
    name = f"{cronjob_meta['name'][:54].rstrip('-')}-{run_id.hex[:8]}"
    spec = template["spec"]
    pod = spec["template"]
    pod_labels = {**(pod.get("metadata") or {}).get("labels", {}), RUN_ID_LABEL: str(run_id), JOB_LABEL: job}
    pod.setdefault("metadata", {})["labels"] = pod_labels
    containers = [container for container in pod["spec"]["containers"] if container.get("name") == CONTAINER]
    if not containers:
        raise ConfigurationError(f"CronJob {cronjob_meta['name']} has no container named {CONTAINER!r} to run the job")
    containers[0]["args"] = ["batch", job, "--run-id", str(run_id)]
    owner: list[dict[str, Any]] = []
    if cronjob_meta.get("uid"):
        owner = [
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": cronjob_meta["name"],
                "uid": cronjob_meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": {**metadata.get("labels", {}), RUN_ID_LABEL: str(run_id), JOB_LABEL: job},
            "annotations": {
                **metadata.get("annotations", {}),
                # What kubectl create job --from=cronjob sets: the Job was not made by the schedule.
                "cronjob.kubernetes.io/instantiate": "manual",
                REQUESTED_BY_ANNOTATION: requested_by,
            },
            "ownerReferences": owner,
        },
        "spec": spec,
    }


class KubernetesJobLauncher:
    """Queues the run, then creates its Job from the job's CronJob (see the module docstring)."""

    def __init__(self, jobs: Mapping[str, JobSpec], settings: Settings, *, api: KubernetesApi | None = None) -> None:
        self._jobs = dict(jobs)
        self._settings = settings
        self._api = api

    def _kubernetes(self) -> KubernetesApi:
        # Built on first use: a misconfigured launcher fails the request that needs it, not the API's start.
        if self._api is None:
            self._api = KubernetesApi(self._settings.kubernetes)
        return self._api

    async def launch(self, job: str, parameters: Mapping[str, Any], *, requested_by: str) -> uuid.UUID:
        """Queue the run (committed), create its Job and return the run's id; 503 if the Job cannot be created."""
        spec = self._jobs.get(job)
        if spec is None:
            raise NotFoundError(f"unknown batch job {job!r}")
        cronjob_name = self._settings.kubernetes.cronjobs.get(job)
        if cronjob_name is None:
            raise ConfigurationError(f"no CronJob configured for batch job {job!r} (ROSETTA_KUBERNETES__CRONJOBS)")
        kubernetes = self._kubernetes()
        databases = Databases.open(self._settings, (spec.database,), process=f"launch.{job}")
        try:
            async with databases.unit_of_work(spec.database) as session:
                await expire_stale_runs(session, job, self._settings)
                await runs.refuse_if_active(session, job)
                run_id = await runs.create_run(session, job=job, parameters=parameters, requested_by=requested_by)
            try:
                cronjob = await kubernetes.read_cronjob(cronjob_name)
                created = await kubernetes.create_job(
                    job_from_cronjob(cronjob, job=job, run_id=run_id, requested_by=requested_by)
                )
            except (KubernetesApiError, ConfigurationError) as error:
                reason = f"the Kubernetes Job for this run could not be created: {error}"
                async with databases.unit_of_work(spec.database) as session:
                    await runs.finish_run(session, run_id, status="failed", error=reason)
                logger.warning("batch job not launched", extra={"job": job, "run_id": str(run_id)})
                raise ServiceUnavailableError(f"{job} run {run_id} not started: {reason}") from error
        finally:
            await databases.dispose()
        logger.info(
            "batch job launched",
            extra={"job": job, "run_id": str(run_id), "kubernetes_job": created["metadata"]["name"]},
        )
        return run_id

"""Kubernetes API simulator: the few calls the Job launcher makes (read a CronJob, create and read Jobs).

Faithful to what a client gets wrong:

- ``Authorization: Bearer <token>``; anything else is **401** ``Unauthorized``;
- RBAC: each token is a service account with a set of allowed ``(verb, resource)``; anything else is
  **403** ``Forbidden`` with the API server's message (``jobs.batch is forbidden: User
  "system:serviceaccount:<ns>:<name>" cannot create resource "jobs" in API group "batch" in the namespace ...``);
- errors are ``Status`` objects (``kind: Status``, ``reason``, ``code``, ``details``), never bare strings;
- a missing CronJob or Job is **404** ``NotFound``; a Job name already taken is **409** ``AlreadyExists``;
- a Job whose name is not a DNS-1123 label of at most 63 characters, without containers, with a
  ``restartPolicy`` other than ``Never``/``OnFailure``, or whose ``metadata.namespace`` differs from the path's
  is refused (**422** ``Invalid``, **400** ``BadRequest`` for the namespace) as the API server refuses it;
- a created Job comes back **201** with ``uid``, ``creationTimestamp``, ``namespace`` and an empty ``status``.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath

from rosetta.core.security.permissions import Permission, requires
from rosetta.simulators.app import SimulatedError, SimulatorApp, build_simulator
from rosetta.simulators.faults import FaultInjector

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class ServiceAccount:
    """Who a token is, and what RBAC lets it do: ``(verb, resource)`` pairs such as ``("create", "jobs")``."""

    namespace: str
    name: str
    allowed: Collection[tuple[str, str]]


@dataclass
class KubernetesSimulator:
    """The simulator's state: CronJobs to read, the Jobs created (by namespace and name), the app serving them."""

    tokens: Mapping[str, ServiceAccount]
    cronjobs: dict[tuple[str, str], dict[str, Any]]
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    app: SimulatorApp | None = None


def status_body(code: int, message: str, *, name: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """The API server's ``Status`` error object."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if name is not None or kind is not None:
        body["details"] = {"name": name, "group": "batch", "kind": kind}
    return body


def _render_fault(status: int, message: str) -> tuple[dict[str, Any], dict[str, str]]:
    return status_body(status, message), {}


def _caller(request: Request[Any, Any, Any], tokens: Mapping[str, ServiceAccount]) -> ServiceAccount:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    account = tokens.get(token) if scheme.lower() == "bearer" else None
    if account is None:
        raise SimulatedError(401, status_body(401, "Unauthorized"))
    return account


def _authorise(account: ServiceAccount, verb: str, resource: str, namespace: str) -> None:
    if (verb, resource) not in account.allowed:
        user = f"system:serviceaccount:{account.namespace}:{account.name}"
        message = (
            f'{resource}.batch is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "batch"'
            f' in the namespace "{namespace}"'
        )
        raise SimulatedError(403, status_body(403, message, kind=resource))


def _read_object(
    request: Request[Any, Any, Any],
    tokens: Mapping[str, ServiceAccount],
    objects: Mapping[tuple[str, str], dict[str, Any]],
    *,
    resource: str,
    namespace: str,
    name: str,
) -> dict[str, Any]:
    """``GET`` of one namespaced object: authorised, else 403; found, else 404."""
    _authorise(_caller(request, tokens), "get", resource, namespace)
    found = objects.get((namespace, name))
    if found is None:
        raise SimulatedError(404, status_body(404, f'{resource}.batch "{name}" not found', name=name, kind=resource))
    return found


def _check_job(job: Any, namespace: str) -> str:
    """The Job's name, once it is a Job the API server would accept."""
    if not isinstance(job, dict) or job.get("kind", "Job") != "Job":
        raise SimulatedError(400, status_body(400, "the body is not a batch/v1 Job"))
    metadata = job.get("metadata") or {}
    name = metadata.get("name")
    problems: list[str] = []
    if not isinstance(name, str) or len(name) > 63 or not _DNS1123_LABEL.match(name):
        problems.append(
            f'metadata.name: Invalid value: "{name}": must be no more than 63 characters and a lowercase RFC 1123 label'
        )
    if metadata.get("namespace") not in (None, namespace):
        raise SimulatedError(
            400,
            status_body(400, "the namespace of the provided object does not match the namespace sent on the request"),
        )
    pod = (((job.get("spec") or {}).get("template") or {}).get("spec")) or {}
    if not pod.get("containers"):
        problems.append("spec.template.spec.containers: Required value")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append('spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"')
    if problems:
        raise SimulatedError(
            422, status_body(422, f'Job.batch "{name}" is invalid: ' + "; ".join(problems), name=name, kind="Job")
        )
    return str(name)


def build_kubernetes_simulator(
    *,
    tokens: Mapping[str, ServiceAccount],
    cronjobs: Collection[dict[str, Any]] = (),
    faults: FaultInjector | None = None,
) -> KubernetesSimulator:
    """A Kubernetes API serving ``cronjobs`` (manifests with ``metadata.namespace``) to the given tokens."""
    state = KubernetesSimulator(
        tokens=tokens,
        cronjobs={(c["metadata"]["namespace"], c["metadata"]["name"]): copy.deepcopy(c) for c in cronjobs},
    )

    @get(
        "/apis/batch/v1/namespaces/{namespace:str}/cronjobs/{name:str}",
        guards=[requires(Permission.PUBLIC)],
        sync_to_thread=False,
    )
    def read_cronjob(request: Request[Any, Any, Any], namespace: FromPath[str], name: FromPath[str]) -> dict[str, Any]:
        return _read_object(request, state.tokens, state.cronjobs, resource="cronjobs", namespace=namespace, name=name)

    @post(
        "/apis/batch/v1/namespaces/{namespace:str}/jobs",
        guards=[requires(Permission.PUBLIC)],
        status_code=201,
    )
    async def create_job(request: Request[Any, Any, Any], namespace: FromPath[str]) -> dict[str, Any]:
        _authorise(_caller(request, state.tokens), "create", "jobs", namespace)
        job = copy.deepcopy(await request.json())
        name = _check_job(job, namespace)
        if (namespace, name) in state.jobs:
            raise SimulatedError(409, status_body(409, f'jobs.batch "{name}" already exists', name=name, kind="jobs"))
        job.setdefault("apiVersion", "batch/v1")
        job.setdefault("kind", "Job")
        job["metadata"].update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        job["status"] = {}
        state.jobs[(namespace, name)] = job
        return job

    @get(
        "/apis/batch/v1/namespaces/{namespace:str}/jobs/{name:str}",
        guards=[requires(Permission.PUBLIC)],
        sync_to_thread=False,
    )
    def read_job(request: Request[Any, Any, Any], namespace: FromPath[str], name: FromPath[str]) -> dict[str, Any]:
        return _read_object(request, state.tokens, state.jobs, resource="jobs", namespace=namespace, name=name)

    state.app = build_simulator(
        "kubernetes",
        [read_cronjob, create_job, read_job],
        faults=faults or FaultInjector(),
        render_error=_render_fault,
    )
    return state

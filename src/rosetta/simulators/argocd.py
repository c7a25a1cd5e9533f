"""Argo CD REST API simulator (``/api/v1``): applications, one application, resource tree, session.

Faithful to what clients get wrong (external-apis.md, section 3):

- ``Authorization: Bearer <token>`` or cookie ``argocd.token``; 401 ``code`` 16 otherwise;
- the list is not paged, sorted by name, filtered by ``projects`` (or legacy ``project``), ``selector``,
  ``repo``, ``name``, ``appNamespace``, trimmed by ``fields`` (a leading ``-`` excludes); applications the
  token may not see are silently omitted, and an empty list is ``"items": null``;
- an unknown application, or one the token may not see, is **403 permission denied** (``code`` 7); 404
  (``code`` 5) only when ``project`` is given and the token can see that project;
- Argo CD 3.x: per-resource health is not in ``status.resources`` (``resourceHealthSource: appTree``); it
  is served by the resource tree.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, JSONBody

from rosetta.core.security.permissions import Permission, requires
from rosetta.simulators.app import SimulatedError, SimulatorApp, build_simulator
from rosetta.simulators.faults import FaultInjector

DEFAULT_TOKEN = "argocd-simulator-token"  # noqa: S105 - a simulator's well-known development token
DEFAULT_USERS: Mapping[str, str] = {"admin": "rosetta"}

# Which projects a token may see; None means every project.
TokenProjects = Mapping[str, Collection[str] | None]


class SessionRequest(msgspec.Struct, kw_only=True):
    """Body of ``POST /api/v1/session``."""

    username: str
    password: str


def argocd_error(code: int, message: str) -> dict[str, Any]:
    """The grpc-gateway error body."""
    return {"error": message, "code": code, "message": message, "details": []}


_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 500: 13, 502: 14, 503: 14, 504: 4}


def _render_fault(status: int, message: str) -> tuple[dict[str, Any], dict[str, str]]:
    return argocd_error(_GRPC_CODES.get(status, 2), message), {}


def _denied() -> SimulatedError:
    return SimulatedError(403, argocd_error(7, "permission denied"))


def _trim(value: Any, paths: list[list[str]], *, exclude: bool) -> Any:
    """Apply ``fields``: keep only (or, with ``exclude``, drop) the dotted paths; lists apply per element."""
    if isinstance(value, list):
        return [_trim(item, paths, exclude=exclude) for item in value]
    if not isinstance(value, dict):
        return value
    heads: dict[str, list[list[str]]] = {}
    for path in paths:
        if path:
            heads.setdefault(path[0], []).append(path[1:])
    if exclude:
        result = {}
        for key, item in value.items():
            rests = heads.get(key)
            if rests is None:
                result[key] = item
            elif not any(not rest for rest in rests):
                result[key] = _trim(item, rests, exclude=True)
        return result
    kept = {}
    for key, rests in heads.items():
        if key in value:
            kept[key] = value[key] if any(not rest for rest in rests) else _trim(value[key], rests, exclude=False)
    return kept


class ArgoCdSimulator:
    """The applications API over a list of Application objects."""

    def __init__(
        self,
        applications: Iterable[Mapping[str, Any]],
        *,
        tokens: TokenProjects | None = None,
        users: Mapping[str, str] = DEFAULT_USERS,
        faults: FaultInjector | None = None,
    ) -> None:
        self.applications = sorted((dict(app) for app in applications), key=lambda app: app["metadata"]["name"])
        self.tokens: dict[str, Collection[str] | None] = dict(tokens or {DEFAULT_TOKEN: None})
        self.users = dict(users)
        self.faults = faults or FaultInjector()
        self.app: SimulatorApp = build_simulator(
            "argocd", self._handlers(), faults=self.faults, render_error=_render_fault
        )

    def _caller_projects(self, request: Request[Any, Any, Any]) -> Collection[str] | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token if scheme.lower() == "bearer" else request.cookies.get("argocd.token", "")
        if not token:
            raise SimulatedError(401, argocd_error(16, "no session information"))
        if token not in self.tokens:
            raise SimulatedError(401, argocd_error(16, "invalid session: token signature is invalid"))
        return self.tokens[token]

    @staticmethod
    def _visible(app: Mapping[str, Any], projects: Collection[str] | None) -> bool:
        return projects is None or app.get("spec", {}).get("project") in projects

    @staticmethod
    def _shown(app: Mapping[str, Any]) -> dict[str, Any]:
        """The API view of an application: resource health lives in the tree (Argo CD 3.x)."""
        shown = dict(app)
        status = dict(shown.get("status") or {})
        if status.get("resources"):
            status["resources"] = [{k: v for k, v in r.items() if k != "health"} for r in status["resources"]]
            status["resourceHealthSource"] = "appTree"
        shown["status"] = status
        return shown

    def _find(self, request: Request[Any, Any, Any], name: str) -> dict[str, Any]:
        projects = self._caller_projects(request)
        project = request.query_params.get("project")
        for app in self.applications:
            if app["metadata"]["name"] == name and self._visible(app, projects):
                if project and app.get("spec", {}).get("project") != project:
                    break
                return app
        if project and (projects is None or project in projects):
            raise SimulatedError(404, argocd_error(5, f'applications.argoproj.io "{name}" not found'))
        raise _denied()

    def list_applications(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """``GET /api/v1/applications``."""
        projects = self._caller_projects(request)
        params = request.query_params
        wanted_projects = set(params.getall("projects", [])) | set(params.getall("project", []))
        selector = [part.split("=", 1) for part in params.get("selector", "").split(",") if "=" in part]
        checks: list[Callable[[Mapping[str, Any]], bool]] = [lambda app: self._visible(app, projects)]
        if wanted_projects:
            checks.append(lambda app: app.get("spec", {}).get("project") in wanted_projects)
        if selector:
            checks.append(
                lambda app: all((app["metadata"].get("labels") or {}).get(k.strip()) == v.strip() for k, v in selector)
            )
        if params.get("name"):
            checks.append(lambda app: app["metadata"]["name"] == params["name"])
        if params.get("repo"):
            checks.append(lambda app: (app.get("spec", {}).get("source") or {}).get("repoURL") == params["repo"])
        if params.get("appNamespace"):
            checks.append(lambda app: app["metadata"].get("namespace") == params["appNamespace"])
        items = [self._shown(app) for app in self.applications if all(check(app) for check in checks)]
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": str(1000 + len(self.applications))},
            "items": items or None,
        }
        fields = params.get("fields", "")
        if fields:
            exclude = fields.startswith("-")
            paths = [path.strip().split(".") for path in fields.lstrip("-").split(",") if path.strip()]
            body = _trim(body, paths, exclude=exclude)
        return body

    def resource_tree(self, app: Mapping[str, Any]) -> dict[str, Any]:
        """The resource tree, built from ``status.resources`` (which keep their health here)."""
        nodes = []
        for resource in (app.get("status") or {}).get("resources") or []:
            node = {
                key: resource.get(key) for key in ("group", "version", "kind", "namespace", "name") if key in resource
            }
            node["uid"] = (
                resource.get("uid") or f"{app['metadata']['name']}-{resource.get('kind')}-{resource.get('name')}"
            )
            node["health"] = resource.get("health") or {"status": "Healthy"}
            nodes.append(node)
        return {"nodes": nodes, "orphanedNodes": [], "hosts": []}

    def _handlers(self) -> list[Any]:
        simulator = self
        public = [requires(Permission.PUBLIC)]

        @post("/api/v1/session", guards=public, status_code=200, sync_to_thread=False)
        def session(data: JSONBody[SessionRequest]) -> dict[str, str]:
            expected = simulator.users.get(data.username)
            if expected is None or not secrets.compare_digest(expected, data.password):
                raise SimulatedError(401, argocd_error(16, "Invalid username or password"))
            token = secrets.token_urlsafe(24)
            simulator.tokens[token] = None
            return {"token": token}

        @get("/api/v1/applications", guards=public, sync_to_thread=False)
        def applications(request: Request[Any, Any, Any]) -> dict[str, Any]:
            return simulator.list_applications(request)

        @get("/api/v1/applications/{name:str}", guards=public, sync_to_thread=False)
        def application(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
            return simulator._shown(simulator._find(request, name))

        @get("/api/v1/applications/{name:str}/resource-tree", guards=public, sync_to_thread=False)
        def resource_tree(request: Request[Any, Any, Any], name: FromPath[str]) -> dict[str, Any]:
            return simulator.resource_tree(simulator._find(request, name))

        return [session, applications, application, resource_tree]

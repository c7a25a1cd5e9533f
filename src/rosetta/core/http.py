"""The app factory every API is built from: one Litestar app serving one or several bounded contexts.

Each context contributes a :class:`ContextApi` (its route handlers under ``/api/<name>/v1`` and the
database it owns). ``rosetta serve finops`` builds an app from one of them, ``rosetta serve all`` and
``rosetta dev`` from all three, with identical paths. Every app gets the same root endpoints
(``/healthz``, ``/readyz``, ``/metrics``), per-context OpenAPI documents, problem+json errors,
request ids, access logs and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, MediaType, Request, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncSession

from rosetta import __version__
from rosetta.core.audit import AUDIT_DATABASE_OPT, provide_auditor, record_denied_change
from rosetta.core.db import Databases, database_urls
from rosetta.core.errors import BadRequestError
from rosetta.core.observability import HttpMetrics, metrics_text, request_context_middleware
from rosetta.core.openapi import complete_document, handler_options
from rosetta.core.problems import EXCEPTION_HANDLERS, problem_response
from rosetta.core.runs import RunLauncher
from rosetta.core.schemas import HealthStatus
from rosetta.core.security.authentication import (
    authentication_middleware,
    provide_principal,
    token_validator_lifespan,
)
from rosetta.core.security.permissions import Permission, enforce_declared_permission, requires
from rosetta.core.settings import DatabaseRole, Settings, get_settings
from rosetta.core.wire import Response

# A hook run inside the lifespan once databases are open (e.g. the security core's JWKS cache).
LifespanHook = Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class ContextApi:
    """What a bounded context brings to an app."""

    name: str
    title: str
    description: str
    database: DatabaseRole
    route_handlers: Sequence[ControllerRouterHandler]
    extra_databases: tuple[DatabaseRole, ...] = ()
    lifespan_hooks: tuple[LifespanHook, ...] = field(default_factory=tuple)

    @property
    def prefix(self) -> str:
        """The path prefix of every route of this context."""
        return f"/api/{self.name}/v1"


def session_provider(role: DatabaseRole) -> Callable[[State], AsyncGenerator[AsyncSession, None]]:
    """A dependency yielding one session per request: commit on success, roll back on any error.

    Services never commit; this is the unit of work of a request (it commits before the response is sent,
    so a failed commit is still reported to the client).
    """

    async def provide_session(state: State) -> AsyncGenerator[AsyncSession, None]:
        databases: Databases = state.databases
        async with databases.unit_of_work(role) as session:
            yield session

    return provide_session


def provide_launcher(state: State) -> RunLauncher:
    """The batch-run launcher the process was composed with."""
    launcher: RunLauncher | None = state.launcher
    if launcher is None:
        from rosetta.core.errors import ServiceUnavailableError  # noqa: PLC0415

        raise ServiceUnavailableError("this process cannot start batch runs (no launcher configured)")
    return launcher


def provide_settings(state: State) -> Settings:
    """The settings the app was built with."""
    settings: Settings = state.settings
    return settings


def _context_router(context: ContextApi) -> Router:
    return Router(
        path=context.prefix,
        route_handlers=list(context.route_handlers),
        dependencies={
            "session": Provide(session_provider(context.database)),
            # Audit rows go through the request's own session: same transaction as the change.
            "auditor": Provide(provide_auditor, sync_to_thread=False),
        },
        tags=[context.name],
        # Where the context's refused changes are audited (rosetta.core.audit.record_denied_change).
        opt={AUDIT_DATABASE_OPT: context.database},
    )


def _filtered_openapi(app: Litestar, context: ContextApi) -> dict[str, Any]:
    document = app.openapi_schema.to_schema()
    document["info"] = {
        "title": context.title,
        "version": __version__,
        "description": context.description,
    }
    document["paths"] = {
        path: item for path, item in document.get("paths", {}).items() if path.startswith(context.prefix)
    }
    document["servers"] = [{"url": "/"}]
    return complete_document(document, handler_options(app))


_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><script id="api-reference" data-url="{spec}"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
<noscript>The OpenAPI document is at <a href="{spec}">{spec}</a>.</noscript></body></html>"""


def _context_docs_router(context: ContextApi) -> Router:
    @get("/openapi.json", guards=[requires(Permission.PUBLIC)], include_in_schema=False, sync_to_thread=False)
    def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
        cache: dict[str, dict[str, Any]] = request.app.state.openapi_documents
        if context.name not in cache:
            cache[context.name] = _filtered_openapi(request.app, context)
        return cache[context.name]

    @get("/docs", guards=[requires(Permission.PUBLIC)], include_in_schema=False, sync_to_thread=False)
    def docs_page() -> Response[str]:
        page = _DOCS_PAGE.format(title=context.title, spec=f"{context.prefix}/openapi.json")
        return Response(content=page, media_type=MediaType.HTML)

    return Router(path=context.prefix, route_handlers=[openapi_document, docs_page])


@get("/healthz", guards=[requires(Permission.PUBLIC)], include_in_schema=False, sync_to_thread=False)
def healthz() -> HealthStatus:
    """The process is alive (no dependency is checked)."""
    return HealthStatus(status="ok")


@get("/readyz", guards=[requires(Permission.PUBLIC)], include_in_schema=False)
async def readyz(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Every database this process uses answers ``SELECT 1``; 503 problem otherwise."""
    databases: Databases = state.databases
    checks = {str(role): result for role, result in (await databases.ping()).items()}
    if all(result == "ok" for result in checks.values()):
        return Response(HealthStatus(status="ok", checks=checks))
    failing = ", ".join(role for role, result in checks.items() if result != "ok")
    return problem_response(request, 503, detail=f"database(s) not answering: {failing}", extra={"checks": checks})


@get("/metrics", guards=[requires(Permission.PUBLIC)], include_in_schema=False)
async def metrics(state: State) -> Response[bytes]:
    """Prometheus text exposition: request counts and latency histograms per route."""
    return Response(content=metrics_text(state.metrics), media_type="text/plain; version=0.0.4")


@contextlib.contextmanager
def _startup_objects_frozen() -> Iterator[None]:
    """While the app serves, keep what start-up built (modules, app, pools) out of the garbage collector's scans.

    Those objects live as long as the process, yet every full collection walked all of them: under load, a
    full collection every ~1,500 requests took ~80 ms, about 10% of a drill-down's server CPU. Unfrozen at
    shutdown, so a process that builds many apps (the tests) still reclaims the ones it has finished with.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def refuse_repeated_query_parameters(request: Request[Any, Any, Any]) -> None:
    """A query parameter given twice is a 400, not "the last one wins".

    No route takes a list in its query string, so ``?environment=prod&environment=dev`` can only be a mistake,
    and answering for ``dev`` alone would show numbers the caller did not ask for.
    """
    counts = Counter(key for key, _ in request.query_params.multi_items())
    repeated = sorted(key for key, count in counts.items() if count > 1)
    if repeated:
        message = "given more than once; give it once"
        raise BadRequestError(
            "; ".join(f"{key}: {message}" for key in repeated),
            extra={"errors": [{"field": key, "message": message, "source": "query"} for key in repeated]},
        )


def refuse_bodies_not_sent_as_json(request: Request[Any, Any, Any]) -> None:
    """A body sent to a route that reads JSON (its ``data`` parameter) must say it is JSON: 415 otherwise.

    Litestar decodes such a body whatever its ``Content-Type``; a client posting ``text/plain`` or a form has
    sent something else by mistake, and a proxy or a log may have treated it as what it claimed to be. Uploads
    read their own media types (``read_upload``) and take no ``data`` parameter.
    """
    if "data" not in request.route_handler.parsed_fn_signature.parameters:
        return
    if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return
    media_type = request.content_type[0]
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"this route reads a JSON body (Content-Type: application/json), not {media_type or 'no type'}",
        )


async def check_request(request: Request[Any, Any, Any]) -> None:
    """The app's ``before_request`` hook: checks every route shares, after authentication and the permission
    guards (so 401 and 403 come first), before parameters and bodies are parsed."""
    refuse_repeated_query_parameters(request)
    refuse_bodies_not_sent_as_json(request)


def create_app(
    contexts: Sequence[ContextApi],
    *,
    process: str,
    settings: Settings | None = None,
    launcher: RunLauncher | None = None,
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
    middleware: Sequence[Any] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
) -> Litestar:
    """Build the ASGI app serving ``contexts``; engines are opened in the lifespan, not here."""
    settings = settings or get_settings()
    roles: list[DatabaseRole] = []
    for context in contexts:
        for role in (context.database, *context.extra_databases):
            if role not in roles:
                roles.append(role)
    http_metrics = HttpMetrics()
    hooks = [
        token_validator_lifespan(settings),
        *lifespan_hooks,
        *(hook for context in contexts for hook in context.lifespan_hooks),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Resolving URLs may start the embedded server, which blocks: keep it off the event loop.
        urls = await asyncio.to_thread(database_urls, settings, roles)
        databases = Databases.open(settings, roles, process=process, urls=urls, numeric_as_printed=True)
        app.state.databases = databases
        try:
            async with contextlib.AsyncExitStack() as stack:
                for hook in hooks:
                    await stack.enter_async_context(hook(app))
                with _startup_objects_frozen():
                    yield
        finally:
            await databases.dispose()

    handlers: list[ControllerRouterHandler] = [healthz, readyz, metrics, *extra_route_handlers]
    for context in contexts:
        handlers.append(_context_router(context))
        handlers.append(_context_docs_router(context))

    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        # Decimals in plain notation in every JSON body (rosetta.core.wire, ADR 0013).
        response_class=Response,
        after_exception=[record_denied_change],
        # A route without a declared permission is refused (the role-matrix test also fails on it).
        guards=[enforce_declared_permission],
        before_request=check_request,
        # Authentication first: every later layer sees scope["user"] (a Principal) or the rejection reason.
        middleware=[authentication_middleware, *middleware],
        dependencies={
            "principal": Provide(provide_principal, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "launcher": Provide(provide_launcher, sync_to_thread=False),
        },
        state=State(
            {
                "settings": settings,
                "launcher": launcher,
                "metrics": http_metrics,
                "openapi_documents": {},
                "process": process,
            }
        ),
        openapi_config=OpenAPIConfig(
            title="Rosetta",
            version=__version__,
            path="/openapi",
            render_plugins=[JsonRenderPlugin()],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                }
            ),
            security=[{"bearer": []}],
        ),
        logging_config=None,
        debug=False,
    )
    # Outermost layer, so unmatched paths (404) and framework errors get a request id and are measured too.
    app.asgi_handler = request_context_middleware(app.asgi_handler, http_metrics)
    return app

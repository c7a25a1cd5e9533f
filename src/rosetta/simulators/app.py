"""What every simulator app shares: its own error format, fault injection, the request log, admin endpoints.

A simulator is a small Litestar app answering the way the real system does, wrapped by
:func:`rosetta.simulators.faults.fault_middleware`. It is never part of the Rosetta APIs: no OpenAPI
document, no problem+json (each system has its own error body), no Rosetta authentication (each checks
the real system's credentials itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, ControllerRouterHandler

from rosetta.simulators.faults import ErrorRenderer, FaultInjector, admin_handlers, fault_middleware


class SimulatedError(Exception):
    """An error answer of the simulated system, with its exact body and headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}")
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class SimulatorApp:
    """A runnable simulator: ``asgi`` is what a server (or a mount) serves."""

    name: str
    asgi: ASGIApp
    faults: FaultInjector
    litestar: Litestar


def build_simulator(
    name: str,
    handlers: Sequence[ControllerRouterHandler],
    *,
    faults: FaultInjector,
    render_error: ErrorRenderer,
) -> SimulatorApp:
    """Compose a simulator from its route handlers and its error format."""

    def simulated(_: Request[Any, Any, Any], error: SimulatedError) -> Response[dict[str, Any]]:
        return Response(error.body, status_code=error.status, headers=error.headers)

    def framework(_: Request[Any, Any, Any], error: HTTPException) -> Response[dict[str, Any]]:
        body, headers = render_error(error.status_code, str(error.detail))
        return Response(body, status_code=error.status_code, headers=headers)

    app = Litestar(
        route_handlers=[*handlers, *admin_handlers(faults)],
        exception_handlers={SimulatedError: simulated, HTTPException: framework},
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    return SimulatorApp(name=name, asgi=fault_middleware(app, faults, render_error), faults=faults, litestar=app)

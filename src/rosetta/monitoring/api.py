"""HTTP surface of the `monitoring` context under `/api/monitoring/v1`: thin controllers over `service`."""

from __future__ import annotations

from litestar import Litestar

from rosetta.core.http import ContextApi
from rosetta.core.http import create_app as create_core_app
from rosetta.core.security.api import security_controller

TITLE = "Rosetta monitoring API"
DESCRIPTION = "Application health, incidents and changes, SLOs, DORA metrics and deployments (monitoring_db)."


def context_api() -> ContextApi:
    """The routes and database this context brings to an app."""
    return ContextApi(
        name="monitoring",
        title=TITLE,
        description=DESCRIPTION,
        database="monitoring",
        route_handlers=[security_controller()],
    )


def create_app() -> Litestar:
    """The app of `rosetta serve monitoring`: this context only."""
    return create_core_app([context_api()], process="monitoring")

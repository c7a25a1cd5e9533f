"""HTTP surface of the `ref` context under `/api/ref/v1`: thin controllers over `service`."""

from __future__ import annotations

from litestar import Litestar

from rosetta.core.http import ContextApi
from rosetta.core.http import create_app as create_core_app
from rosetta.core.security.api import security_controller

TITLE = "Rosetta referential API"
DESCRIPTION = "Applications, components, groups, relations and the approval workflow (platform_ref_db)."


def context_api() -> ContextApi:
    """The routes and database this context brings to an app."""
    return ContextApi(
        name="ref", title=TITLE, description=DESCRIPTION, database="ref", route_handlers=[security_controller()]
    )


def create_app() -> Litestar:
    """The app of `rosetta serve ref`: this context only."""
    return create_core_app([context_api()], process="ref")

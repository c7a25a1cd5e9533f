"""HTTP surface of the `finops` context under `/api/finops/v1`: thin controllers over `service`."""

from __future__ import annotations

from litestar import Litestar

from rosetta.core.http import ContextApi
from rosetta.core.http import create_app as create_core_app
from rosetta.core.security.api import security_controller

TITLE = "Rosetta FinOps API"
DESCRIPTION = "Costs per application, drill-down, budgets, pricing views, allocation rules and FinOps batch runs (finops_db)."


def context_api() -> ContextApi:
    """The routes and database this context brings to an app."""
    return ContextApi(
        name="finops", title=TITLE, description=DESCRIPTION, database="finops", route_handlers=[security_controller()]
    )


def create_app() -> Litestar:
    """The app of `rosetta serve finops`: this context only."""
    return create_core_app([context_api()], process="finops")

"""Every route of every API, called with each role and with no token, answers as its declared permission says.

Expectations come from each route's ``requires(...)`` guard, so the matrix keeps up as routes are added:
no token -> 401; a role without the permission -> 403; a role with it -> anything but 401/403 (a route that
needs path parameters or a body may well answer 400, 404, 422 or 503 to the dummy request: that is fine).
A route that declares no permission fails the test; a planted one proves it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from litestar import Litestar, get
from litestar.handlers.base import BaseRouteHandler
from litestar.testing import AsyncTestClient

from realdb import settings_for
from rosetta.core.http import create_app
from rosetta.core.security.dev_idp import dev_idp_router
from rosetta.core.security.permissions import ROLE_PERMISSIONS, Permission, Role, route_permission
from rosetta.core.settings import DEFAULT_GROUP_ROLES, DatabaseRole
from security.identity import IdentityServer, all_context_apis

GROUP_OF_ROLE = {Role(role): group for group, role in DEFAULT_GROUP_ROLES.items()}
_PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}")
_SAMPLES = {
    "uuid": "00000000-0000-4000-8000-000000000000",
    "int": "1",
    "float": "1.5",
    "decimal": "1.5",
    "date": "2026-01-01",
    "datetime": "2026-01-01T00:00:00Z",
}


def concrete_path(path: str) -> str:
    """A path template with a plausible value in each parameter."""
    return _PARAMETER.sub(lambda match: _SAMPLES.get(match.group(2) or "str", "sample"), path)


def route_table(app: Litestar) -> list[tuple[str, str, BaseRouteHandler]]:
    """(method, path, handler) for every handler of every registered route."""
    table = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(getattr(handler, "http_methods", {"GET"})):
                table.append((method, route.path, handler))
    return table


def undeclared(app: Litestar) -> list[str]:
    """``METHOD path`` of every route that declares no permission."""
    return [f"{method} {path}" for method, path, handler in route_table(app) if route_permission(handler) is None]


def build(settings: Any, extra: Iterable[Any] = ()) -> Litestar:
    """All three context APIs, plus the dev identity provider's routes, as ``rosetta dev`` serves them."""
    return create_app(all_context_apis(), process="test", settings=settings, extra_route_handlers=list(extra))


async def test_every_route_answers_each_role_as_its_permission_declares(
    fresh_database_urls: Callable[[], dict[DatabaseRole, Any]], identity_server: IdentityServer, tmp_path: Path
) -> None:
    # A brand-new database set: the allowed calls below may write.
    urls = await asyncio.to_thread(fresh_database_urls)
    settings = settings_for(urls, oidc_issuers=[identity_server.entra.settings()])
    app = build(settings, [dev_idp_router(tmp_path, "http://127.0.0.1:9")])
    assert undeclared(app) == []

    tokens: dict[Role | None, dict[str, str]] = {None: {}}
    for role in Role:
        token = identity_server.entra.make_token(groups=[GROUP_OF_ROLE[role]], subject=f"matrix-{role.value}")
        tokens[role] = {"Authorization": f"Bearer {token}"}

    table = route_table(app)
    failures: list[str] = []
    checked_permissions: set[Permission] = set()
    async with AsyncTestClient(app=app) as client:
        for method, path, handler in table:
            permission = route_permission(handler)
            assert permission is not None
            checked_permissions.add(permission)
            for role, headers in tokens.items():
                body = {} if method in {"POST", "PUT", "PATCH"} else None
                response = await client.request(method, concrete_path(path), headers=headers, json=body)
                if permission is Permission.PUBLIC:
                    expected = "open"
                elif role is None:
                    expected = "401"
                elif permission in ROLE_PERMISSIONS[role]:
                    expected = "allowed"
                else:
                    expected = "403"
                status = response.status_code
                ok = {
                    "open": status not in (401, 403),
                    "401": status == 401 and response.headers.get("www-authenticate", "").startswith("Bearer "),
                    "403": status == 403,
                    "allowed": status not in (401, 403),
                }[expected]
                if not ok:
                    failures.append(f"{method} {path} as {role or 'anonymous'}: {status}, expected {expected}")
    assert failures == []
    # The walk covered real routes, not just the health checks.
    assert len(table) > 20
    assert {Permission.PUBLIC, Permission.AUTHENTICATED, Permission.AUDIT_READ} <= checked_permissions


async def test_a_route_without_a_declared_permission_is_caught_and_closed(
    settings: Any, identity_server: IdentityServer
) -> None:
    @get("/api/ref/v1/planted", sync_to_thread=False)
    def planted() -> str:
        return "open by accident"

    secured = settings.model_copy(update={"oidc_issuers": [identity_server.entra.settings()]})
    app = build(secured, [planted])
    # The matrix test's own check names the planted route.
    assert undeclared(app) == ["GET /api/ref/v1/planted"]
    # And at run time the route is closed, even to an admin.
    admin = identity_server.entra.make_token(groups=["Rosetta_Admin"])
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/api/ref/v1/planted", headers={"Authorization": f"Bearer {admin}"})
        anonymous = await client.get("/api/ref/v1/planted")
    assert response.status_code == 403
    assert "declares no permission" in response.json()["detail"]
    assert anonymous.status_code == 403


async def test_admin_implies_every_other_role() -> None:
    for role in Role:
        assert ROLE_PERMISSIONS[role] <= ROLE_PERMISSIONS[Role.ADMIN]
    assert Permission.PUBLIC not in ROLE_PERMISSIONS[Role.ADMIN]
    assert Permission.AUDIT_READ in ROLE_PERMISSIONS[Role.ADMIN]

"""Authentication of every request: the bearer token becomes ``scope["user"]`` (a :class:`Principal`).

The middleware never answers by itself: it records either the principal or why the token was refused,
and the route's guard (``requires(...)``) turns that into 401/403. Public routes (health, metrics, OpenAPI)
skip validation entirely, so an identity-provider outage never fails a liveness probe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from litestar import Litestar, Request
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from rosetta.core.security.permissions import (
    AUTH_FAILURE_SCOPE_KEY,
    AuthenticationFailure,
    Permission,
    Principal,
    principal_of,
    route_permission,
)
from rosetta.core.security.tokens import TokenRejectedError, TokenValidator
from rosetta.core.settings import Settings

logger = logging.getLogger(__name__)

_HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def _bearer_token(scope: Scope) -> str | AuthenticationFailure | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                return AuthenticationFailure(reason="the Authorization header must be 'Bearer <token>'")
            return credentials.strip()
    return None


def _is_public(handler: BaseRouteHandler | None) -> bool:
    return handler is not None and route_permission(handler) is Permission.PUBLIC


def authentication_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware (Litestar applies it after routing): validate the bearer token of non-public routes."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and not _is_public(scope.get("route_handler")):
            token = _bearer_token(scope)
            if isinstance(token, AuthenticationFailure):
                logger.warning("bearer token rejected: %s", token.reason)
                scope[AUTH_FAILURE_SCOPE_KEY] = token  # type: ignore[literal-required]
            elif token is not None:
                validator: TokenValidator = scope["app"].state.token_validator
                try:
                    scope["user"] = await validator.authenticate(token)
                except TokenRejectedError as error:
                    # The reason, never the token: tokens are credentials.
                    logger.warning("bearer token rejected: %s", error.reason)
                    failure = AuthenticationFailure(reason=error.reason, status=error.status)
                    scope[AUTH_FAILURE_SCOPE_KEY] = failure  # type: ignore[literal-required]
        await app(scope, receive, send)

    return middleware


def token_validator_lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """A lifespan hook owning the HTTP client the validator fetches keys and groups with."""

    @contextlib.asynccontextmanager
    async def hook(app: Litestar) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False) as client:
            app.state.token_validator = TokenValidator.from_settings(settings, client)
            yield

    return hook


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The ``principal`` dependency: the authenticated caller (401 when there is none)."""
    return principal_of(request)

"""Argo CD REST API client: applications with their deployment history and last operation.

What this client gets right (external-apis.md, section 3): ``Authorization: Bearer <jwt>`` (a token from
settings, or one obtained from ``POST /api/v1/session`` with username and password); the application list
is not paged and ``items`` may be ``[]`` or ``null``; an unknown application (or one the token may not see)
answers 403 ``permission denied`` (code 7), not 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from rosetta.connectors.transport import ExternalAuthError, RetryPolicy, Transport
from rosetta.core.errors import ConfigurationError, NotFoundError
from rosetta.core.settings import ExternalSystem

PERMISSION_DENIED = 7


class ApplicationNotVisibleError(NotFoundError):
    """Argo CD answered 403 "permission denied": the application does not exist or the token may not see it."""


def describe_argocd_error(response: httpx.Response) -> str:
    """``message`` (code N) from ``{"error", "code", "message", "details"}``."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return response.reason_phrase
    message = body.get("message") or body.get("error") or response.reason_phrase
    return f"{message} (code {body['code']})" if "code" in body else str(message)


class ArgoCdClient:
    """Reads Argo CD applications through a :class:`Transport` on the server URL."""

    def __init__(self, transport: Transport, *, username: str | None = None, password: str | None = None) -> None:
        self.transport = transport
        self._login = (username, password) if username and password else None

    @classmethod
    def from_settings(cls, config: ExternalSystem, *, retry: RetryPolicy | None = None) -> ArgoCdClient:
        """``settings.argocd``: ``url`` and ``token``, or ``username``/``password`` for a session token."""
        headers: dict[str, str] = {}
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        elif config.username is None or config.password is None:
            raise ConfigurationError("no credentials configured for argocd: set ROSETTA_ARGOCD__TOKEN")
        transport = Transport.for_system(
            "argocd", config, headers=headers, describe_error=describe_argocd_error, retry=retry
        )
        password = config.password.get_secret_value() if config.password is not None and config.token is None else None
        return cls(transport, username=config.username, password=password)

    async def aclose(self) -> None:
        """Close the transport."""
        await self.transport.aclose()

    async def _authenticate(self) -> None:
        if self._login is None:
            return
        username, password = self._login
        response = await self.transport.request(
            "POST", "/api/v1/session", json={"username": username, "password": password}
        )
        self.transport.set_header("Authorization", f"Bearer {response.json()['token']}")
        self._login = None

    async def applications(self, *, projects: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every application the token may see (sorted by name); ``items: null`` is an empty list."""
        await self._authenticate()
        params = [("projects", project) for project in projects]
        body = (await self.transport.get("/api/v1/applications", params or None)).json()
        return list(body.get("items") or [])

    async def application(self, name: str) -> dict[str, Any]:
        """One application; ``ApplicationNotVisibleError`` when Argo CD answers 403 permission denied."""
        await self._authenticate()
        try:
            response = await self.transport.get(f"/api/v1/applications/{name}")
        except ExternalAuthError as error:
            if error.status == 403 and isinstance(error.body, dict) and error.body.get("code") == PERMISSION_DENIED:
                raise ApplicationNotVisibleError(
                    f"argocd: application {name!r} does not exist or the token may not see it (403 permission denied)"
                ) from None
            raise
        result: dict[str, Any] = response.json()
        return result

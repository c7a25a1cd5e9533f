"""Where a caller's groups come from, per issuer: the token itself, Microsoft Graph, or Backstage.

A :class:`GroupResolver` turns validated claims (and the raw token, for sources that call back on the
user's behalf) into group names or ids, which ``roles_for`` maps to roles. Remote sources are wrapped in
:class:`CachedGroupResolver` so a user's groups are fetched once per ``group_cache_seconds``, not per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from rosetta.core.errors import ConfigurationError
from rosetta.core.settings import IssuerSettings

logger = logging.getLogger(__name__)


class GroupResolutionError(Exception):
    """The groups cannot be determined; ``status`` says how to answer (403 deny, 503 source unreachable)."""

    def __init__(self, reason: str, *, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class GroupResolver(Protocol):
    """Resolves the groups of the caller a validated token identifies."""

    async def groups(self, claims: Mapping[str, Any], token: str) -> tuple[str, ...]:
        """Group names or ids of the caller; raise :class:`GroupResolutionError` when unknowable."""
        ...


def _string_list(value: Any, claim: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        # ADFS emits a single-valued claim as a string.
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise GroupResolutionError(f"the {claim!r} claim is not a list of strings", status=401)


def has_group_overage(claims: Mapping[str, Any], groups_claim: str) -> bool:
    """Entra ID left the groups out because there are too many (``_claim_names`` points elsewhere)."""
    names = claims.get("_claim_names")
    return groups_claim not in claims and isinstance(names, dict) and groups_claim in names


class TokenGroupResolver:
    """Groups read from the token's own claim; on Entra overage, delegate to Graph or deny."""

    def __init__(self, groups_claim: str, *, overage: GroupResolver | None) -> None:
        self._claim = groups_claim
        self._overage = overage

    async def groups(self, claims: Mapping[str, Any], token: str) -> tuple[str, ...]:
        """The claim's values, or the overage resolver's answer."""
        if has_group_overage(claims, self._claim):
            if self._overage is None:
                raise GroupResolutionError(
                    "group overage: the token does not carry your groups (too many) and this API is "
                    "configured to deny rather than query Microsoft Graph",
                    status=403,
                )
            return await self._overage.groups(claims, token)
        return _string_list(claims.get(self._claim), self._claim)


class GraphGroupResolver:
    """Transitive group memberships from Microsoft Graph, with an app-only (client credentials) token.

    Returns both each group's object id and its display name, so ``group_roles`` may use either.
    The Graph URL is built from configuration, never from the token's ``_claim_sources`` (which may point
    at the legacy graph.windows.net, or anywhere an attacker likes).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        graph_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._graph_url = graph_url.rstrip("/")
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._access_token: str | None = None
        self._token_expires_at = 0.0
        self._lock = asyncio.Lock()

    async def _graph_token(self) -> str:
        async with self._lock:
            if self._access_token is None or self._clock() >= self._token_expires_at:
                response = await self._client.post(
                    self._token_url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self._client_id,
                        "client_secret": self._client_secret,
                        "scope": f"{self._graph_url}/.default",
                    },
                )
                response.raise_for_status()
                body = response.json()
                self._access_token = str(body["access_token"])
                # Renew a minute early so a token never expires between check and use.
                self._token_expires_at = self._clock() + float(body.get("expires_in", 3600)) - 60
            return self._access_token

    async def groups(self, claims: Mapping[str, Any], token: str) -> tuple[str, ...]:
        """Every group the user (``oid``) belongs to, directly or through nested groups."""
        oid = claims.get("oid")
        if not isinstance(oid, str) or not oid:
            raise GroupResolutionError("group overage: the token has no 'oid' to look the groups up with", status=403)
        url: str | None = (
            f"{self._graph_url}/v1.0/users/{quote(oid, safe='')}/transitiveMemberOf/microsoft.graph.group"
            "?$select=id,displayName&$top=999"
        )
        found: list[str] = []
        try:
            access_token = await self._graph_token()
            while url:
                response = await self._client.get(url, headers={"Authorization": f"Bearer {access_token}"})
                response.raise_for_status()
                page = response.json()
                for group in page.get("value", []):
                    found.extend(str(group[field]) for field in ("id", "displayName") if group.get(field))
                url = page.get("@odata.nextLink")
        except (httpx.HTTPError, ValueError, KeyError) as error:
            logger.warning("Microsoft Graph group lookup failed: %s", type(error).__name__)
            raise GroupResolutionError("Microsoft Graph cannot be reached to resolve your groups", status=503) from None
        return tuple(found)


def _group_names_from_refs(refs: list[Any]) -> tuple[str, ...]:
    """``group:default/rosetta_admin`` -> ``rosetta_admin`` (the lookup in ``group_roles`` ignores case)."""
    names = []
    for ref in refs:
        if isinstance(ref, str) and ref.lower().startswith("group:"):
            names.append(ref.split("/", 1)[-1] if "/" in ref else ref.split(":", 1)[1])
    return tuple(names)


class BackstageUserinfoGroupResolver:
    """Groups from Backstage's ``/api/auth/v1/userinfo`` (the ``ent`` ownership refs), called with the user's token."""

    def __init__(self, client: httpx.AsyncClient, *, backstage_base_url: str) -> None:
        self._client = client
        self._url = backstage_base_url.rstrip("/") + "/api/auth/v1/userinfo"

    async def groups(self, claims: Mapping[str, Any], token: str) -> tuple[str, ...]:
        """The group refs among the user's ``ent`` claims."""
        try:
            response = await self._client.get(self._url, headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            ent = response.json()["claims"].get("ent", [])
        except (httpx.HTTPError, ValueError, KeyError, AttributeError) as error:
            logger.warning("Backstage userinfo lookup failed: %s", type(error).__name__)
            raise GroupResolutionError("Backstage cannot be reached to resolve your groups", status=503) from None
        return _group_names_from_refs(ent if isinstance(ent, list) else [])


class BackstageCatalogGroupResolver:
    """Groups from the user entity's ``memberOf`` relations in the Backstage catalog."""

    def __init__(self, client: httpx.AsyncClient, *, backstage_base_url: str) -> None:
        self._client = client
        self._base = backstage_base_url.rstrip("/") + "/api/catalog/entities/by-name/user"

    async def groups(self, claims: Mapping[str, Any], token: str) -> tuple[str, ...]:
        """The ``memberOf`` targets of ``user:<namespace>/<name>`` (the token's ``sub``)."""
        subject = str(claims.get("sub", ""))
        ref = subject.split(":", 1)[1] if subject.lower().startswith("user:") else subject
        namespace, _, name = ref.rpartition("/")
        url = f"{self._base}/{quote(namespace or 'default', safe='')}/{quote(name, safe='')}"
        try:
            response = await self._client.get(url, headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 404:
                return ()
            response.raise_for_status()
            relations = response.json().get("relations", [])
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            logger.warning("Backstage catalog lookup failed: %s", type(error).__name__)
            raise GroupResolutionError(
                "the Backstage catalog cannot be reached to resolve your groups", status=503
            ) from None
        refs = [
            relation.get("targetRef")
            for relation in relations
            if isinstance(relation, dict) and relation.get("type") == "memberOf"
        ]
        return _group_names_from_refs(refs)


class CachedGroupResolver:
    """Caches another resolver's answer per (issuer, subject) for ``ttl_seconds``; failures are not cached."""

    def __init__(
        self, inner: GroupResolver, *, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}

    async def groups(self, claims: Mapping[str, Any], token: str) -> tuple[str, ...]:
        """The cached groups of this caller, or a fresh lookup."""
        key = (str(claims.get("iss", "")), str(claims.get("oid") or claims.get("sub", "")))
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        found = await self._inner.groups(claims, token)
        if self._ttl > 0:
            if len(self._entries) > 10_000:
                # Bounded memory: drop everything rather than track recency for a rare case.
                self._entries.clear()
            self._entries[key] = (now, found)
        return found


def group_resolver_for(issuer: IssuerSettings, client: httpx.AsyncClient, *, cache_seconds: float) -> GroupResolver:
    """The resolver an issuer's settings ask for (``group_source`` and ``overage``)."""

    def graph() -> GroupResolver:
        if not (issuer.graph_token_url and issuer.graph_client_id and issuer.graph_client_secret):
            raise ConfigurationError(
                f"ROSETTA_OIDC_ISSUERS: issuer {issuer.name!r}: Graph group resolution needs graph_token_url, "
                "graph_client_id and graph_client_secret"
            )
        return CachedGroupResolver(
            GraphGroupResolver(
                client,
                graph_url=issuer.graph_url,
                token_url=issuer.graph_token_url,
                client_id=issuer.graph_client_id,
                client_secret=issuer.graph_client_secret.get_secret_value(),
            ),
            ttl_seconds=cache_seconds,
        )

    def backstage_url() -> str:
        if not issuer.backstage_base_url:
            raise ConfigurationError(
                f"ROSETTA_OIDC_ISSUERS: issuer {issuer.name!r}: "
                f"group_source {issuer.group_source} needs backstage_base_url"
            )
        return issuer.backstage_base_url

    if issuer.group_source == "graph":
        return graph()
    if issuer.group_source == "backstage_userinfo":
        return CachedGroupResolver(
            BackstageUserinfoGroupResolver(client, backstage_base_url=backstage_url()), ttl_seconds=cache_seconds
        )
    if issuer.group_source == "backstage_catalog":
        return CachedGroupResolver(
            BackstageCatalogGroupResolver(client, backstage_base_url=backstage_url()), ttl_seconds=cache_seconds
        )
    return TokenGroupResolver(issuer.groups_claim, overage=graph() if issuer.overage == "graph" else None)

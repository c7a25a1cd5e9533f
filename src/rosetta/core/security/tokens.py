"""Resource-server validation of bearer tokens (JWS compact, asymmetric signatures only).

One :class:`TokenValidator` serves every API of a process. For each token it:

1. parses the header and refuses ``alg: none``, every HMAC algorithm, and any algorithm the token's issuer
   does not list (so an HS256 token "signed" with our RSA public key as the secret never reaches a verifier);
2. selects the trusted issuer by the exact ``iss`` (untrusted issuers are refused before any network call);
3. verifies the signature with the issuer's key for the token's ``kid`` (JWKS cache: see ``jwks``);
4. checks ``exp``, ``nbf`` and ``iat`` with a bounded clock skew, the exact audience, ``typ`` and tenant;
5. resolves the caller's groups (token, Graph on overage, or Backstage) and maps groups to roles.

The resulting principal is kept in a :class:`VerifiedTokenCache` (keyed by the token's SHA-256, until the
token's ``exp`` or a short lifetime, whichever comes first), so a client's repeated requests skip steps 1-5.

Failures raise :class:`TokenRejectedError` carrying the reason (logged and returned in ``WWW-Authenticate``);
the token itself is never logged. The signature check is authlib's JOSE implementation, ``joserfc``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import JoseError

from rosetta.core.errors import ConfigurationError
from rosetta.core.security.groups import GroupResolutionError, GroupResolver, group_resolver_for
from rosetta.core.security.jwks import JwksCache, KeyUnavailableError
from rosetta.core.security.permissions import Principal, roles_for
from rosetta.core.security.token_cache import VerifiedTokenCache
from rosetta.core.settings import IssuerSettings, Settings

# The audience of Microsoft Graph tokens: never accepted, whatever the configuration says.
MICROSOFT_GRAPH_AUDIENCES = frozenset({"00000003-0000-0000-c000-000000000000", "https://graph.microsoft.com"})
_MAX_TOKEN_LENGTH = 16_384


class TokenRejectedError(Exception):
    """The token is not accepted; ``reason`` is safe to log and to return to the caller."""

    def __init__(self, reason: str, *, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class TrustedIssuer:
    """One configured issuer with its key cache and group resolver."""

    settings: IssuerSettings
    keys: JwksCache
    groups: GroupResolver


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenRejectedError(f"the token has no '{name}' claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejectedError(f"the '{name}' claim is not a number")
    return float(value)


TENANT_PLACEHOLDER = "{tenantid}"


def tenant_issuer(issuer: IssuerSettings, tenant: str) -> str:
    """The exact issuer of ``tenant`` for a multi-tenant issuer (``{tenantid}`` in its ``issuer``)."""
    return issuer.issuer.replace(TENANT_PLACEHOLDER, tenant)


def issuer_names(issuer: IssuerSettings) -> list[str]:
    """Every exact ``iss`` a configured issuer stands for: itself, or one per allowed tenant."""
    if TENANT_PLACEHOLDER not in issuer.issuer:
        return [issuer.issuer]
    return [tenant_issuer(issuer, tenant) for tenant in issuer.allowed_tenants]


class TokenValidator:
    """Validates bearer tokens against the configured issuers and builds the :class:`Principal`."""

    def __init__(
        self,
        issuers: Sequence[IssuerSettings],
        client: httpx.AsyncClient,
        *,
        group_roles: Mapping[str, str],
        clock_skew_seconds: float,
        jwks_cache_seconds: float,
        jwks_refetch_interval_seconds: float,
        group_cache_seconds: float,
        token_cache_seconds: float = 0.0,
        token_cache_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._group_roles = dict(group_roles)
        self._skew = clock_skew_seconds
        self._clock = clock
        self._verified = VerifiedTokenCache(
            ttl_seconds=token_cache_seconds, max_entries=token_cache_entries, clock=clock
        )
        self._issuers: dict[str, TrustedIssuer] = {}
        for issuer in issuers:
            trusted = TrustedIssuer(
                settings=issuer,
                keys=JwksCache(
                    client,
                    jwks_url=issuer.jwks_url,
                    discovery_url=issuer.discovery_url,
                    cache_seconds=jwks_cache_seconds,
                    refetch_interval_seconds=jwks_refetch_interval_seconds,
                ),
                groups=group_resolver_for(issuer, client, cache_seconds=group_cache_seconds),
            )
            # A multi-tenant Entra issuer ({tenantid}) is trusted as the exact issuer of each allowed tenant,
            # all sharing one key cache: a token's issuer is still matched exactly, before any network call.
            for name in issuer_names(issuer):
                if name in self._issuers:
                    raise ConfigurationError(f"ROSETTA_OIDC_ISSUERS: issuer {name!r} is configured twice")
                self._issuers[name] = trusted

    @classmethod
    def from_settings(cls, settings: Settings, client: httpx.AsyncClient) -> TokenValidator:
        """A validator trusting ``settings.oidc_issuers`` with the configured skew and cache lifetimes."""
        return cls(
            settings.oidc_issuers,
            client,
            group_roles=settings.group_roles,
            clock_skew_seconds=settings.oidc_clock_skew_seconds,
            jwks_cache_seconds=settings.oidc_jwks_cache_seconds,
            jwks_refetch_interval_seconds=settings.oidc_jwks_refetch_interval_seconds,
            group_cache_seconds=settings.group_cache_seconds,
            token_cache_seconds=settings.oidc_token_cache_seconds,
            token_cache_entries=settings.oidc_token_cache_entries,
        )

    @property
    def verified_tokens(self) -> int:
        """How many verified tokens are cached (tests and diagnostics)."""
        return len(self._verified)

    def trusted(self, issuer: str) -> TrustedIssuer | None:
        """The configuration of a trusted issuer (tests and diagnostics)."""
        return self._issuers.get(issuer)

    async def authenticate(self, token: str) -> Principal:
        """The principal a valid token identifies; :class:`TokenRejectedError` otherwise.

        A token verified less than the cache lifetime ago, and not expired, is answered from the cache.
        """
        if not self._verified.enabled:
            principal, _ = await self._verify_with_expiry(token)
            return principal
        key = VerifiedTokenCache.key(token)
        cached = self._verified.get(key)
        if cached is not None:
            return cached
        principal, expires_at = await self._verify_with_expiry(token)
        self._verified.put(key, principal, expires_at=expires_at)
        return principal

    async def _verify_with_expiry(self, token: str) -> tuple[Principal, float]:
        """Every check of the module docstring; the principal and the token's ``exp``."""
        header, claims = self._parse(token)
        issuer = self._issuer_of(claims)
        algorithm = header.get("alg")
        if algorithm not in issuer.settings.algorithms:
            raise TokenRejectedError(f"algorithm {algorithm} is not accepted for this issuer")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejectedError("the token header has no 'kid'")
        try:
            key = await issuer.keys.key_for(kid)
        except KeyUnavailableError:
            raise TokenRejectedError("the issuer's signing keys cannot be fetched", status=503) from None
        if key is None:
            raise TokenRejectedError("unknown signing key (kid)")
        try:
            jws.deserialize_compact(token, key, algorithms=[algorithm])
        except (JoseError, ValueError):
            raise TokenRejectedError("bad signature") from None
        self._check_claims(header, claims, issuer.settings)
        try:
            groups = await issuer.groups.groups(claims, token)
        except GroupResolutionError as error:
            raise TokenRejectedError(error.reason, status=error.status) from None
        app_roles = self._app_roles(claims, issuer.settings)
        principal = Principal(
            subject=self._subject(claims, issuer.settings),
            display_name=self._display_name(claims),
            issuer=str(claims["iss"]),
            groups=groups,
            roles=roles_for((*groups, *app_roles), self._group_roles),
        )
        expires_at = _number(claims, "exp", required=True)
        assert expires_at is not None
        return principal, expires_at

    def _parse(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if len(token) > _MAX_TOKEN_LENGTH:
            raise TokenRejectedError("the token is too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenRejectedError("malformed token (expected a signed JWT with three parts)")
        try:
            header = _b64_json(parts[0])
            claims = _b64_json(parts[1])
        except (ValueError, UnicodeError):
            raise TokenRejectedError("malformed token (header or payload is not base64url JSON)") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise TokenRejectedError("malformed token (header or payload is not a JSON object)")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm.lower() == "none" or algorithm.upper().startswith("HS"):
            raise TokenRejectedError(f"algorithm {algorithm} is never accepted (unsigned or symmetric)")
        if "crit" in header or "jku" in header or "x5u" in header or "jwk" in header:
            # Keys only ever come from the configured JWKS, never from the token itself.
            raise TokenRejectedError("the token header names its own key or critical extensions")
        return header, claims

    def _issuer_of(self, claims: Mapping[str, Any]) -> TrustedIssuer:
        issuer = claims.get("iss")
        trusted = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if trusted is None:
            raise TokenRejectedError("untrusted issuer")
        return trusted

    def _check_claims(self, header: Mapping[str, Any], claims: Mapping[str, Any], issuer: IssuerSettings) -> None:
        now = self._clock()
        expires = _number(claims, "exp", required=True)
        assert expires is not None
        if now - self._skew >= expires:
            raise TokenRejectedError("the token has expired")
        not_before = _number(claims, "nbf", required=False)
        if not_before is not None and now + self._skew < not_before:
            raise TokenRejectedError("the token is not valid yet (nbf)")
        issued_at = _number(claims, "iat", required=True)
        assert issued_at is not None
        if issued_at > now + self._skew:
            raise TokenRejectedError("the token was issued in the future (iat)")
        audiences = claims.get("aud")
        given = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
        if any(audience in MICROSOFT_GRAPH_AUDIENCES for audience in given):
            raise TokenRejectedError("tokens for Microsoft Graph are never accepted")
        if not any(isinstance(audience, str) and audience in issuer.audiences for audience in given):
            raise TokenRejectedError("wrong audience")
        if issuer.required_typ is not None and header.get("typ") != issuer.required_typ:
            raise TokenRejectedError(f"wrong token type (typ must be {issuer.required_typ})")
        if issuer.allowed_tenants and claims.get("tid") not in issuer.allowed_tenants:
            raise TokenRejectedError("tenant not allowed")
        if TENANT_PLACEHOLDER in issuer.issuer and claims.get("iss") != tenant_issuer(issuer, str(claims.get("tid"))):
            # One tenant's issuer with another tenant's id: not a token Entra issues.
            raise TokenRejectedError("the issuer does not match the token's tenant (tid)")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenRejectedError("the token has no 'sub' claim")

    @staticmethod
    def _app_roles(claims: Mapping[str, Any], issuer: IssuerSettings) -> tuple[str, ...]:
        value = claims.get(issuer.roles_claim)
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list):
            return tuple(item for item in value if isinstance(item, str))
        return ()

    @staticmethod
    def _subject(claims: Mapping[str, Any], issuer: IssuerSettings) -> str:
        # Entra's sub is pairwise (differs per app); oid is the user's stable id in the tenant.
        if issuer.kind == "entra" and isinstance(claims.get("oid"), str):
            return str(claims["oid"])
        return str(claims["sub"])

    @staticmethod
    def _display_name(claims: Mapping[str, Any]) -> str | None:
        for name in ("name", "preferred_username", "upn", "unique_name", "email"):
            value = claims.get(name)
            if isinstance(value, str) and value:
                return value
        return None

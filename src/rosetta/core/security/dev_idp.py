"""The development identity provider: a local issuer that ``rosetta dev`` serves and trusts.

The signing key (RSA, kept as a private JWK in ``<data_dir>/dev-idp/signing-key.json``, mode 0600) is
created on first use by whichever of ``rosetta token`` or ``rosetta dev`` runs first; both read the same
file. The issuer string is fixed (``rosetta-dev``) so a token minted by another process, before or after
the server started and whatever its port, is accepted. ``rosetta dev`` serves the discovery document and
JWKS under ``/_dev/idp`` and adds this issuer to its trusted list: tokens then go through exactly the
validation production uses (JWKS over HTTP, signature, claims, groups to roles). ``rosetta serve`` never
trusts this issuer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from litestar import Router, get

from rosetta.core.errors import BadRequestError, ConfigurationError
from rosetta.core.security.permissions import Permission, requires
from rosetta.core.settings import IssuerSettings

DEV_ISSUER = "rosetta-dev"
DEV_AUDIENCE = "rosetta"
DEV_IDP_PATH = "/_dev/idp"
_ALGORITHM = "RS256"
_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DEV_TTL_SECONDS = 7 * 86400


def key_file(data_dir: Path) -> Path:
    """Where the development signing key lives."""
    return data_dir / "dev-idp" / "signing-key.json"


def load_or_create_key(data_dir: Path) -> RSAKey:
    """The development signing key, generated (atomically, owner-only) if it does not exist yet."""
    path = key_file(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = RSAKey.generate_key(2048, private=True)
        document = key.as_dict(private=True)
        document["kid"] = key.thumbprint()
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        # Two processes may race to create it: the first link wins and both then read the same key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        temporary.unlink()
    try:
        key = RSAKey.import_key(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"the development signing key {path} is unreadable ({error}); delete it") from None
    return key


def public_jwks(key: RSAKey) -> dict[str, Any]:
    """The JWKS document publishing ``key``'s public half."""
    public: dict[str, Any] = {**key.as_dict(private=False), "kid": key.kid, "use": "sig", "alg": _ALGORITHM}
    return {"keys": [public]}


def parse_ttl(value: str) -> int:
    """``90``, ``30m``, ``1h``, ``2d`` as seconds (at most a week)."""
    match = _TTL.match(value)
    if match is None:
        raise BadRequestError(f"--ttl: expected a duration such as 30m, 1h or 2d, got {value!r}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_DEV_TTL_SECONDS:
        raise BadRequestError("--ttl: must be between 1 second and 7 days")
    return seconds


def mint_token(
    key: RSAKey,
    *,
    user: str,
    groups: Sequence[str],
    ttl_seconds: int,
    display_name: str | None = None,
    now: float | None = None,
) -> str:
    """A signed development access token for ``user`` carrying ``groups``."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": user,
        "name": display_name or user,
        "groups": list(groups),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode({"alg": _ALGORITHM, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[_ALGORITHM])


def dev_issuer_settings(base_url: str) -> IssuerSettings:
    """The trusted-issuer entry of the development issuer, whose JWKS the dev server itself serves."""
    return IssuerSettings(
        name="dev",
        kind="generic",
        issuer=DEV_ISSUER,
        audiences=[DEV_AUDIENCE],
        jwks_url=f"{base_url.rstrip('/')}{DEV_IDP_PATH}/jwks.json",
        algorithms=[_ALGORITHM],
    )


def dev_idp_router(data_dir: Path, base_url: str) -> Router:
    """Discovery and JWKS of the development issuer, under ``/_dev/idp`` (not part of any context API)."""
    key = load_or_create_key(data_dir)
    jwks = public_jwks(key)
    discovery = {
        "issuer": DEV_ISSUER,
        "jwks_uri": f"{base_url.rstrip('/')}{DEV_IDP_PATH}/jwks.json",
        "id_token_signing_alg_values_supported": [_ALGORITHM],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "claims_supported": ["sub", "name", "groups", "iat", "nbf", "exp", "iss", "aud"],
    }

    @get(
        "/.well-known/openid-configuration",
        guards=[requires(Permission.PUBLIC)],
        include_in_schema=False,
        sync_to_thread=False,
    )
    def openid_configuration() -> dict[str, Any]:
        """OIDC discovery of the development issuer."""
        return discovery

    @get("/jwks.json", guards=[requires(Permission.PUBLIC)], include_in_schema=False, sync_to_thread=False)
    def jwks_document() -> dict[str, Any]:
        """The development issuer's public key."""
        return jwks

    return Router(path=DEV_IDP_PATH, route_handlers=[openid_configuration, jwks_document])

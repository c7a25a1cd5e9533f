"""The validator under attack: every forged, stale or foreign token gets 401; genuine ones from two issuers pass.

Keys are fetched over real HTTP from an identity server on 127.0.0.1 (its own per module, because some
tests rotate keys or cut the JWKS endpoint off).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import ValidationError

from rosetta.core.http import create_app
from rosetta.core.settings import Settings
from security.identity import ENTRA_TENANT, IdentityServer, TestIssuer, all_context_apis, served_identity

ME = "/api/ref/v1/me"
# Entra sends group object ids; these map to roles through ``group_roles``.
ADMIN_GROUP_ID = "5f1d8c7e-0000-4000-8000-00000000a001"
FINOPS_GROUP_ID = "5f1d8c7e-0000-4000-8000-00000000f001"


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityServer]:
    """A private identity server for this module (keys get rotated and cut off here)."""
    with served_identity() as server:
        yield server


def trusting(settings: Settings, idp: IdentityServer, **overrides: Any) -> Settings:
    """The session settings trusting the Entra-style and the Backstage-style issuers of ``idp``."""
    values: dict[str, Any] = {
        "oidc_issuers": [
            idp.entra.settings(),
            idp.backstage.settings(group_source="backstage_userinfo", backstage_base_url=f"{idp.url}/backstage"),
        ],
        "group_roles": {
            "Rosetta_Admin": "admin",
            "Rosetta_FinOps_Admin": "finops_admin",
            "Rosetta_Referentiel_Admin": "referentiel_admin",
            "Rosetta_User": "user",
            ADMIN_GROUP_ID: "admin",
            FINOPS_GROUP_ID: "finops_admin",
        },
    }
    values.update(overrides)
    return settings.model_copy(update=values)


@pytest.fixture
def app_factory(settings: Settings, idp: IdentityServer) -> Callable[..., Litestar]:
    """Build an app (fresh key caches) trusting ``idp``'s two issuers, with optional setting overrides."""

    def build(**overrides: Any) -> Litestar:
        return create_app(all_context_apis(), process="test", settings=trusting(settings, idp, **overrides))

    return build


@pytest.fixture
async def client(app_factory: Callable[..., Litestar]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A client on an app with default security settings."""
    async with AsyncTestClient(app=app_factory()) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_rejected(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert reason in response.json()["detail"]
    assert reason in challenge


# ---------------------------------------------------------------------------------------------- accepted


async def test_entra_style_rs256_token_is_accepted_and_group_ids_map_to_roles(
    client: AsyncTestClient[Litestar], idp: IdentityServer
) -> None:
    token = idp.entra.make_token(groups=[FINOPS_GROUP_ID, "unrelated-group"], subject="pairwise-sub", name="Alice A")
    response = await client.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.text
    me = response.json()
    # Entra's stable user key is the object id, not the pairwise ``sub``.
    assert me["subject"] == "oid-pairwise-sub"
    assert me["displayName"] == "Alice A"
    assert me["issuer"] == f"https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0"
    assert me["roles"] == ["finops_admin"]
    assert "finops:admin" in me["permissions"]
    assert "audit:read" not in me["permissions"]


async def test_entra_app_role_values_map_to_roles_too(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    token = idp.entra.make_token(groups=[], roles=["Rosetta_Admin"])
    me = (await client.get(ME, headers=bearer(token))).json()
    assert me["roles"] == ["admin"]
    assert "audit:read" in me["permissions"]


async def test_backstage_style_es256_token_is_accepted_with_groups_from_userinfo(
    client: AsyncTestClient[Litestar], idp: IdentityServer
) -> None:
    idp.backstage_memberships["user:default/jdoe"] = [
        "user:default/jdoe",
        "group:default/rosetta_referentiel_admin",
        "group:default/team-x",
    ]
    token = idp.backstage.make_token(subject="user:default/jdoe")
    # Backstage user tokens carry no groups: the resolver asks userinfo with the user's own token.
    assert "groups" not in json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    before = idp.userinfo_requests
    response = await client.get(ME, headers=bearer(token))
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["subject"] == "user:default/jdoe"
    assert me["groups"] == ["rosetta_referentiel_admin", "team-x"]
    assert me["roles"] == ["referentiel_admin"]
    # The group cache answers the second call.
    assert (await client.get("/api/finops/v1/me", headers=bearer(token))).status_code == 200
    assert idp.userinfo_requests == before + 1


async def test_backstage_catalog_member_of_is_an_alternative_group_source(
    app_factory: Callable[..., Litestar], idp: IdentityServer, settings: Settings
) -> None:
    idp.backstage_memberships["user:default/kim"] = ["group:default/Rosetta_FinOps_Admin"]
    issuers = [idp.backstage.settings(group_source="backstage_catalog", backstage_base_url=f"{idp.url}/backstage")]
    async with AsyncTestClient(app=app_factory(oidc_issuers=issuers)) as client:
        me = (await client.get(ME, headers=bearer(idp.backstage.make_token(subject="user:default/kim")))).json()
    assert me["roles"] == ["finops_admin"]


# ---------------------------------------------------------------------------------------------- rejected


async def test_missing_token(client: AsyncTestClient[Litestar]) -> None:
    assert_rejected(await client.get(ME), "a bearer token is required")


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer not-a-jwt", "malformed token"),
        ("Bearer a.b.c", "malformed token"),
        ("Bearer " + b64(b"[1]") + "." + b64(b"{}") + ".sig", "malformed token"),
        ("Basic YWxpY2U6c2VjcmV0", "must be 'Bearer <token>'"),
        ("Bearer", "must be 'Bearer <token>'"),
    ],
)
async def test_malformed_token(client: AsyncTestClient[Litestar], authorization: str, reason: str) -> None:
    assert_rejected(await client.get(ME, headers={"Authorization": authorization}), reason)


async def test_expired_token(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    token = idp.entra.make_token(groups=["Rosetta_Admin"], now=time.time() - 7200, ttl=3600)
    assert_rejected(await client.get(ME, headers=bearer(token)), "expired")


async def test_expired_token_within_the_skew_is_still_accepted(
    client: AsyncTestClient[Litestar], idp: IdentityServer
) -> None:
    # Default skew is 60 s: a token that expired 20 s ago is still honoured, one that expired 2 min ago is not.
    token = idp.entra.make_token(groups=["Rosetta_Admin"], now=time.time() - 3620, ttl=3600)
    assert (await client.get(ME, headers=bearer(token))).status_code == 200


async def test_not_yet_valid_token(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    token = idp.entra.make_token(groups=["Rosetta_Admin"], claims={"nbf": int(time.time()) + 600})
    assert_rejected(await client.get(ME, headers=bearer(token)), "not valid yet")


async def test_token_issued_in_the_future_beyond_the_skew(
    client: AsyncTestClient[Litestar], idp: IdentityServer
) -> None:
    token = idp.entra.make_token(groups=["Rosetta_Admin"], claims={"iat": int(time.time()) + 600, "nbf": None})
    assert_rejected(await client.get(ME, headers=bearer(token)), "issued in the future")


async def test_wrong_issuer(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    # Signed by the trusted key, but claims the v1 issuer, which is not configured: iss must match exactly.
    token = idp.entra.make_token(groups=["Rosetta_Admin"], claims={"iss": f"https://sts.windows.net/{ENTRA_TENANT}/"})
    assert_rejected(await client.get(ME, headers=bearer(token)), "untrusted issuer")


async def test_wrong_audience(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    token = idp.entra.make_token(groups=["Rosetta_Admin"], claims={"aud": "api://another-api"})
    assert_rejected(await client.get(ME, headers=bearer(token)), "wrong audience")


async def test_microsoft_graph_audience_is_never_accepted(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    graph = "00000003-0000-0000-c000-000000000000"
    issuers = [idp.entra.settings(audiences=[idp.entra.audience, graph])]
    async with AsyncTestClient(app=app_factory(oidc_issuers=issuers)) as client:
        token = idp.entra.make_token(groups=["Rosetta_Admin"], claims={"aud": graph})
        assert_rejected(await client.get(ME, headers=bearer(token)), "Microsoft Graph")


async def test_wrong_token_type_for_backstage(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    token = idp.backstage.make_token(subject="user:default/jdoe", header={"typ": "JWT"})
    assert_rejected(await client.get(ME, headers=bearer(token)), "wrong token type")


async def test_unknown_kid_after_exactly_one_rate_limited_refetch(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    async with AsyncTestClient(app=app_factory(oidc_jwks_refetch_interval_seconds=2)) as client:
        valid = bearer(idp.entra.make_token(groups=["Rosetta_User"]))
        assert (await client.get(ME, headers=valid)).status_code == 200
        fetched = idp.entra.jwks_requests
        # Within the refetch interval of the last fetch, an unknown kid causes no request at all.
        token = idp.entra.make_token(groups=["Rosetta_Admin"], header={"kid": "no-such-key"})
        assert_rejected(await client.get(ME, headers=bearer(token)), "unknown signing key")
        assert idp.entra.jwks_requests == fetched
        await asyncio.sleep(2.1)
        # Past it: exactly one refetch, after which the kid is still unknown.
        assert_rejected(await client.get(ME, headers=bearer(token)), "unknown signing key")
        assert idp.entra.jwks_requests == fetched + 1
        # A flood of unknown kids does not turn into a flood of JWKS requests.
        for index in range(5):
            other = idp.entra.make_token(groups=["Rosetta_Admin"], header={"kid": f"random-{index}"})
            assert_rejected(await client.get(ME, headers=bearer(other)), "unknown signing key")
        assert idp.entra.jwks_requests == fetched + 1
        assert (await client.get(ME, headers=valid)).status_code == 200


async def test_bad_signature(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    genuine = idp.entra.make_token(groups=["Rosetta_User"])
    other = idp.entra.make_token(groups=["Rosetta_User"], subject="mallory")
    header, payload, _ = genuine.split(".")
    forged = f"{header}.{payload}.{other.split('.')[2]}"
    assert_rejected(await client.get(ME, headers=bearer(forged)), "bad signature")


async def test_signature_by_an_unpublished_key_claiming_a_published_kid(
    client: AsyncTestClient[Litestar], idp: IdentityServer
) -> None:
    from security.identity import _new_key  # noqa: PLC0415

    attacker = _new_key("RS256")
    token = idp.entra.make_token(groups=["Rosetta_Admin"], header={"kid": idp.entra.signing_key.kid}, key=attacker)
    assert_rejected(await client.get(ME, headers=bearer(token)), "bad signature")


async def test_tampered_payload(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    header, payload, signature = idp.entra.make_token(groups=["Rosetta_User"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["Rosetta_Admin"]
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_rejected(await client.get(ME, headers=bearer(tampered)), "bad signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none(client: AsyncTestClient[Litestar], idp: IdentityServer, alg: str) -> None:
    claims = idp.entra.claims(groups=["Rosetta_Admin"])
    for signature in ("", "c2ln"):
        token = f"{b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}.{signature}"
        assert_rejected(await client.get(ME, headers=bearer(token)), "never accepted")


def _public_key_pem(issuer: TestIssuer) -> bytes:
    return issuer.signing_key.public_key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_signed_with_the_public_key(
    client: AsyncTestClient[Litestar], idp: IdentityServer, alg: str
) -> None:
    """The classic key-confusion attack: HMAC with the RSA public key (PEM or JWK JSON) as the secret."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    claims = idp.entra.claims(groups=["Rosetta_Admin"])
    header = {"alg": alg, "typ": "JWT", "kid": idp.entra.signing_key.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    for secret in (_public_key_pem(idp.entra), json.dumps(idp.entra.jwks()["keys"][0]).encode()):
        signature = b64(hmac.new(secret, signing_input.encode(), digest).digest())
        assert_rejected(await client.get(ME, headers=bearer(f"{signing_input}.{signature}")), "never accepted")


async def test_algorithm_not_configured_for_the_issuer(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    # An ES256 token presented as coming from the RS256-only Entra issuer.
    token = idp.backstage.make_token(
        subject="alice", claims={"iss": idp.entra.issuer, "aud": idp.entra.audience}, header={"typ": "JWT"}
    )
    assert_rejected(await client.get(ME, headers=bearer(token)), "algorithm ES256 is not accepted")


async def test_token_naming_its_own_key_is_refused(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    token = idp.entra.make_token(groups=["Rosetta_Admin"], header={"jku": "https://evil.example/jwks.json"})
    assert_rejected(await client.get(ME, headers=bearer(token)), "names its own key")


async def test_token_from_an_untrusted_issuer(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    stranger = TestIssuer(
        name="stranger",
        issuer="https://login.example.org/tenant/v2.0",
        audience=idp.entra.audience,
        algorithm="RS256",
        jwks_path="/stranger/keys",
        discovery_path="/stranger/.well-known/openid-configuration",
    )
    token = stranger.make_token(groups=["Rosetta_Admin"])
    assert_rejected(await client.get(ME, headers=bearer(token)), "untrusted issuer")


async def test_valid_signature_from_a_key_that_was_rotated_out(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    async with AsyncTestClient(app=app_factory(oidc_jwks_refetch_interval_seconds=1)) as client:
        old_token = idp.entra.make_token(groups=["Rosetta_Admin"])
        assert (await client.get(ME, headers=bearer(old_token))).status_code == 200
        old_key = idp.entra.rotate()
        # Past the refetch interval, a token with the new kid makes the API learn the new key set.
        await asyncio.sleep(1.1)
        new_token = idp.entra.make_token(groups=["Rosetta_Admin"])
        assert (await client.get(ME, headers=bearer(new_token))).status_code == 200
        # A fresh token, validly signed by the retired key, is no longer accepted.
        retired = idp.entra.make_token(groups=["Rosetta_Admin"], key=old_key)
        assert_rejected(await client.get(ME, headers=bearer(retired)), "unknown signing key")


async def test_rejections_are_logged_with_the_reason_never_the_token(
    client: AsyncTestClient[Litestar], idp: IdentityServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = idp.entra.make_token(groups=["Rosetta_Admin"], claims={"aud": "api://another-api"})
    with caplog.at_level(logging.INFO):
        await client.get(ME, headers=bearer(token))
    assert "bearer token rejected: wrong audience" in caplog.text
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


# ---------------------------------------------------------------------------------------------- keys and outages


async def test_jwks_outage_keeps_serving_with_cached_keys(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    # The verified-token cache would answer the repeated token without looking at the keys: off here.
    async with AsyncTestClient(
        app=app_factory(oidc_jwks_cache_seconds=1, oidc_jwks_refetch_interval_seconds=1, oidc_token_cache_seconds=0)
    ) as client:
        token = idp.entra.make_token(groups=["Rosetta_User"])
        assert (await client.get(ME, headers=bearer(token))).status_code == 200
        idp.entra.outage = True
        try:
            await asyncio.sleep(1.1)
            before = idp.entra.jwks_requests
            # The cache is stale and the refresh fails: the cached keys still serve.
            assert (await client.get(ME, headers=bearer(token))).status_code == 200
            assert idp.entra.jwks_requests == before + 1
        finally:
            idp.entra.outage = False


async def test_issuer_never_reached_answers_503_not_401(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    idp.entra.outage = True
    try:
        async with AsyncTestClient(app=app_factory()) as client:
            response = await client.get(ME, headers=bearer(idp.entra.make_token(groups=["Rosetta_User"])))
        assert response.status_code == 503
        assert "signing keys cannot be fetched" in response.json()["detail"]
    finally:
        idp.entra.outage = False


async def test_keys_can_come_from_the_discovery_document(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    issuers = [idp.entra.settings(jwks_url=None, discovery_url=idp.entra.discovery_url)]
    async with AsyncTestClient(app=app_factory(oidc_issuers=issuers)) as client:
        response = await client.get(ME, headers=bearer(idp.entra.make_token(groups=["Rosetta_User"])))
    assert response.status_code == 200


# ---------------------------------------------------------------------------------------------- Entra multi-tenant

OTHER_TENANT = "0c7e5a7d-1111-4a2b-9c3d-2e4f6a8b0c1d"
UNLISTED_TENANT = "5d1b9e22-2222-4f00-8e1a-7b3c5d7e9f00"


def tenant_claims(tenant: str, tid: str | None = None) -> dict[str, Any]:
    return {"iss": f"https://login.microsoftonline.com/{tenant}/v2.0", "tid": tid or tenant}


async def test_a_multi_tenant_issuer_trusts_exactly_the_listed_tenants(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    issuers = [
        idp.entra.settings(
            issuer="https://login.microsoftonline.com/{tenantid}/v2.0", allowed_tenants=[ENTRA_TENANT, OTHER_TENANT]
        )
    ]
    async with AsyncTestClient(app=app_factory(oidc_issuers=issuers)) as client:
        for tenant in (ENTRA_TENANT, OTHER_TENANT):
            token = idp.entra.make_token(groups=["Rosetta_User"], claims=tenant_claims(tenant))
            response = await client.get(ME, headers=bearer(token))
            assert response.status_code == 200, response.text
            # The principal names the tenant's own issuer, not the template.
            assert response.json()["issuer"] == f"https://login.microsoftonline.com/{tenant}/v2.0"
        unlisted = idp.entra.make_token(groups=["Rosetta_User"], claims=tenant_claims(UNLISTED_TENANT))
        assert_rejected(await client.get(ME, headers=bearer(unlisted)), "untrusted issuer")
        crossed = idp.entra.make_token(groups=["Rosetta_User"], claims=tenant_claims(OTHER_TENANT, ENTRA_TENANT))
        assert_rejected(await client.get(ME, headers=bearer(crossed)), "the issuer does not match the token's tenant")


def test_a_multi_tenant_issuer_without_its_tenants_is_refused_at_start(idp: IdentityServer) -> None:
    with pytest.raises(ValidationError, match="needs allowed_tenants"):
        idp.entra.settings(issuer="https://login.microsoftonline.com/{tenantid}/v2.0")


# ---------------------------------------------------------------------------------------------- Entra group overage


def overage_claims() -> dict[str, Any]:
    return {
        "_claim_names": {"groups": "src1"},
        # Never followed: the Graph URL comes from configuration, not from the token.
        "_claim_sources": {"src1": {"endpoint": "https://evil.example/users/x/getMemberObjects"}},
    }


async def test_group_overage_is_denied_by_default(client: AsyncTestClient[Litestar], idp: IdentityServer) -> None:
    token = idp.entra.make_token(groups=None, claims=overage_claims())
    response = await client.get(ME, headers=bearer(token))
    assert response.status_code == 403
    assert "group overage" in response.json()["detail"]


async def test_group_overage_resolved_through_microsoft_graph(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    idp.graph_memberships["oid-busy"] = [
        {"id": f"00000000-0000-4000-8000-{index:012d}", "displayName": f"Team {index}"} for index in range(5)
    ] + [{"id": ADMIN_GROUP_ID, "displayName": "Some admins"}]
    issuers = [idp.entra.settings(**idp.graph_settings())]
    async with AsyncTestClient(app=app_factory(oidc_issuers=issuers)) as client:
        before = idp.graph_requests
        token = idp.entra.make_token(groups=None, subject="busy", claims=overage_claims())
        me = (await client.get(ME, headers=bearer(token))).json()
        assert me["roles"] == ["admin"]
        assert ADMIN_GROUP_ID in me["groups"]
        assert "Team 4" in me["groups"]
        # Six groups at two per page: three Graph pages, then the cache answers.
        assert idp.graph_requests == before + 3
        assert (await client.get(ME, headers=bearer(token))).status_code == 200
        assert idp.graph_requests == before + 3


async def test_adfs_style_single_valued_group_claim_with_custom_claim_names(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    # ADFS emits short claim names chosen by the transform rules, and a single value as a plain string.
    issuers = [idp.entra.settings(kind="adfs", groups_claim="group", roles_claim="role")]
    async with AsyncTestClient(app=app_factory(oidc_issuers=issuers)) as client:
        token = idp.entra.make_token(claims={"group": "Rosetta_Referentiel_Admin", "upn": "bob@corp.example"})
        me = (await client.get(ME, headers=bearer(token))).json()
    assert me["roles"] == ["referentiel_admin"]
    # ADFS has no oid convention: the subject is the token's sub.
    assert me["subject"] == "alice"


async def test_group_source_unreachable_answers_503_and_is_not_cached(
    app_factory: Callable[..., Litestar], idp: IdentityServer
) -> None:
    broken = [idp.backstage.settings(group_source="backstage_userinfo", backstage_base_url=f"{idp.url}/nowhere")]
    async with AsyncTestClient(app=app_factory(oidc_issuers=broken)) as client:
        token = idp.backstage.make_token(subject="user:default/jdoe")
        for _ in range(2):
            response = await client.get(ME, headers=bearer(token))
            assert response.status_code == 503
            assert "Backstage cannot be reached" in response.json()["detail"]

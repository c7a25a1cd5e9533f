"""Test identity providers served over real HTTP on 127.0.0.1, and the fixtures to get tokens.

Fixtures (registered for the whole suite in ``tests/conftest.py``):

``identity_server`` (session)
    A running :class:`IdentityServer` with two issuers: ``.entra`` (Entra-ID-style, RS256, ``groups``
    claim) and ``.backstage`` (Backstage-style, ES256, ``typ: vnd.backstage.user``, groups resolved through
    the Backstage userinfo endpoint this server also simulates), plus a Microsoft Graph simulator.
``make_token`` (session)
    ``make_token(groups=["Rosetta_FinOps_Admin"], subject="alice", **options) -> str``: a valid token of
    the Entra-style issuer (options: ``roles``, ``name``, ``ttl``, ``claims``, ``header``; see
    :meth:`TestIssuer.make_token`).
``auth_headers`` (session)
    ``auth_headers("Rosetta_Admin", subject="bob") -> {"Authorization": "Bearer ..."}``.
``secured_settings`` (session)
    The session's ``settings`` (real PostgreSQL) trusting the Entra-style issuer.
``secured_app`` / ``api_client`` (per test)
    The app of all three context APIs (``rosetta.cli.build_app("all")``'s contexts) built with
    ``secured_settings``, and a ``litestar.testing.AsyncTestClient`` on it (lifespan started)::

        async def test_budget_needs_finops_admin(api_client, auth_headers):
            response = await api_client.post("/api/finops/v1/budgets", json={...},
                                             headers=auth_headers("Rosetta_User"))
            assert response.status_code == 403
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey
from litestar import Litestar
from litestar.testing import AsyncTestClient

from rosetta.core.http import create_app
from rosetta.core.settings import IssuerSettings, Settings

SigningKey = RSAKey | ECKey

ENTRA_TENANT = "8f2c1f43-5b0e-4c8e-9a57-0d3f6f3f4a11"
ENTRA_AUDIENCE = "api://rosetta"
GRAPH_CLIENT_ID = "rosetta-graph-reader"
GRAPH_CLIENT_SECRET = "graph-secret-for-tests"


def _new_key(algorithm: str) -> SigningKey:
    key: SigningKey = (
        ECKey.generate_key("P-256", private=True) if algorithm == "ES256" else RSAKey.generate_key(2048, private=True)
    )
    document = key.as_dict(private=True)
    document["kid"] = key.thumbprint()
    return ECKey.import_key(document) if algorithm == "ES256" else RSAKey.import_key(document)


class TestIssuer:
    """One simulated issuer: its keys (rotatable), JWKS and discovery documents, and a token minter."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(
        self,
        *,
        name: str,
        issuer: str,
        audience: str,
        algorithm: str,
        jwks_path: str,
        discovery_path: str,
        typ: str | None = None,
        kind: str = "generic",
    ) -> None:
        self.name = name
        self.issuer = issuer
        self.audience = audience
        self.algorithm = algorithm
        self.jwks_path = jwks_path
        self.discovery_path = discovery_path
        self.typ = typ
        self.kind = kind
        self.signing_key = _new_key(algorithm)
        self.published: list[SigningKey] = [self.signing_key]
        self.jwks_requests = 0
        self.outage = False
        self.server_url = ""

    @property
    def jwks_url(self) -> str:
        """Where this issuer's JWKS is served."""
        return f"{self.server_url}{self.jwks_path}"

    @property
    def discovery_url(self) -> str:
        """Where this issuer's OIDC discovery document is served."""
        return f"{self.server_url}{self.discovery_path}"

    def jwks(self) -> dict[str, Any]:
        """The published public keys."""
        return {
            "keys": [
                {**key.as_dict(private=False), "kid": key.kid, "use": "sig", "alg": self.algorithm}
                for key in self.published
            ]
        }

    def rotate(self) -> SigningKey:
        """Sign with a new key and stop publishing the old one; return the old (rotated-out) key."""
        old = self.signing_key
        self.signing_key = _new_key(self.algorithm)
        self.published = [self.signing_key]
        return old

    def settings(self, **overrides: Any) -> IssuerSettings:
        """The trusted-issuer configuration an API needs for this issuer."""
        values: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "issuer": self.issuer,
            "audiences": [self.audience],
            "jwks_url": self.jwks_url,
            "algorithms": [self.algorithm],
            "required_typ": self.typ,
        }
        values.update(overrides)
        return IssuerSettings(**values)

    def claims(
        self,
        *,
        subject: str = "alice",
        groups: Sequence[str] | None = None,
        roles: Sequence[str] | None = None,
        name: str | None = None,
        ttl: int = 3600,
        now: float | None = None,
    ) -> dict[str, Any]:
        """The claims of a valid token (before overrides)."""
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl,
            "name": name or subject.title(),
        }
        if self.kind == "entra":
            claims.update({"oid": f"oid-{subject}", "tid": ENTRA_TENANT, "ver": "2.0"})
        if groups is not None:
            claims["groups"] = list(groups)
        if roles is not None:
            claims["roles"] = list(roles)
        return claims

    def make_token(
        self,
        groups: Sequence[str] | None = None,
        subject: str = "alice",
        *,
        roles: Sequence[str] | None = None,
        name: str | None = None,
        ttl: int = 3600,
        now: float | None = None,
        claims: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """A token signed by this issuer's current key.

        ``claims`` and ``header`` override members (a ``None`` value removes the member); ``key`` signs with
        another key (e.g. a rotated-out one) while keeping its ``kid``.
        """
        payload = self.claims(subject=subject, groups=groups, roles=roles, name=name, ttl=ttl, now=now)
        for member, value in (claims or {}).items():
            if value is None:
                payload.pop(member, None)
            else:
                payload[member] = value
        signer = key or self.signing_key
        protected: dict[str, Any] = {"alg": self.algorithm, "kid": signer.kid, "typ": self.typ or "JWT"}
        for member, value in (header or {}).items():
            if value is None:
                protected.pop(member, None)
            else:
                protected[member] = value
        return jwt.encode(protected, payload, signer, algorithms=[self.algorithm])

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this issuer signed with a published key (for the userinfo simulator)."""
        for key in self.published:
            try:
                signature = jws.deserialize_compact(token, key, algorithms=[self.algorithm])
            except Exception:
                continue
            claims: dict[str, Any] = json.loads(signature.payload)
            return claims
        return None


class IdentityServer:
    """Entra-style and Backstage-style issuers, Backstage userinfo/catalog and Microsoft Graph, on loopback."""

    def __init__(self) -> None:
        self.entra = TestIssuer(
            name="entra",
            kind="entra",
            issuer=f"https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0",
            audience=ENTRA_AUDIENCE,
            algorithm="RS256",
            jwks_path="/entra/discovery/v2.0/keys",
            discovery_path="/entra/v2.0/.well-known/openid-configuration",
        )
        self.backstage = TestIssuer(
            name="backstage",
            kind="backstage",
            issuer="",  # set once the port is known: {backend}/api/auth
            audience="backstage",
            algorithm="ES256",
            jwks_path="/backstage/api/auth/.well-known/jwks.json",
            discovery_path="/backstage/api/auth/.well-known/openid-configuration",
            typ="vnd.backstage.user",
        )
        self.issuers = [self.entra, self.backstage]
        # Backstage user ref -> ownership refs (``ent``) served by userinfo and the catalog.
        self.backstage_memberships: dict[str, list[str]] = {}
        # Entra object id -> groups ({"id", "displayName"}) served by Graph.
        self.graph_memberships: dict[str, list[dict[str, str]]] = {}
        self.graph_requests = 0
        self.userinfo_requests = 0
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ HTTP

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        status, document = self.route(scope["method"], scope["path"], scope["query_string"].decode(), headers, body)
        payload = json.dumps(document).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def route(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        """Answer one simulated request: (status, JSON document)."""
        for issuer in self.issuers:
            if path == issuer.jwks_path:
                issuer.jwks_requests += 1
                if issuer.outage:
                    return 503, {"error": "temporarily unavailable"}
                return 200, issuer.jwks()
            if path == issuer.discovery_path:
                if issuer.outage:
                    return 503, {"error": "temporarily unavailable"}
                return 200, {"issuer": issuer.issuer, "jwks_uri": issuer.jwks_url}
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if path == "/backstage/api/auth/v1/userinfo":
            self.userinfo_requests += 1
            claims = self.backstage.verify(bearer)
            if claims is None:
                return 401, {"error": {"name": "AuthenticationError"}}
            subject = claims["sub"]
            return 200, {"claims": {"sub": subject, "ent": self.backstage_memberships.get(subject, [subject])}}
        if path.startswith("/backstage/api/catalog/entities/by-name/user/"):
            if self.backstage.verify(bearer) is None:
                return 401, {"error": {"name": "AuthenticationError"}}
            namespace, name = path.rsplit("/", 2)[-2:]
            subject = f"user:{namespace}/{name}"
            if subject not in self.backstage_memberships:
                return 404, {"error": {"name": "NotFoundError"}}
            relations = [
                {"type": "memberOf", "targetRef": ref}
                for ref in self.backstage_memberships[subject]
                if ref.startswith("group:")
            ]
            return 200, {"kind": "User", "metadata": {"name": name, "namespace": namespace}, "relations": relations}
        if path == "/graph/token" and method == "POST":
            form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
            if form.get("client_id") != GRAPH_CLIENT_ID or form.get("client_secret") != GRAPH_CLIENT_SECRET:
                return 401, {"error": "invalid_client"}
            return 200, {"access_token": "graph-access-token", "token_type": "Bearer", "expires_in": 3600}
        if path.startswith("/graph/v1.0/users/") and path.endswith("/transitiveMemberOf/microsoft.graph.group"):
            self.graph_requests += 1
            if bearer != "graph-access-token":
                return 401, {"error": {"code": "InvalidAuthenticationToken"}}
            oid = path.split("/")[4]
            groups = self.graph_memberships.get(oid, [])
            # Two groups per page, so the client must follow @odata.nextLink.
            start = int(parse_qs(query).get("$skiptoken", ["0"])[0])
            page: dict[str, Any] = {"value": groups[start : start + 2]}
            if start + 2 < len(groups):
                page["@odata.nextLink"] = f"{self.url}{path}?$skiptoken={start + 2}"
            return 200, page
        return 404, {"error": "not found"}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Serve on a free loopback port in a background thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        for issuer in self.issuers:
            issuer.server_url = self.url
        self.backstage.issuer = f"{self.url}/backstage/api/auth"
        config = uvicorn.Config(self, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the identity server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def graph_settings(self) -> dict[str, Any]:
        """Issuer settings members that make the Entra-style issuer resolve overage through this Graph."""
        return {
            "overage": "graph",
            "graph_url": f"{self.url}/graph",
            "graph_token_url": f"{self.url}/graph/token",
            "graph_client_id": GRAPH_CLIENT_ID,
            "graph_client_secret": GRAPH_CLIENT_SECRET,
        }


# ---------------------------------------------------------------------------------------------- fixtures


@contextlib.contextmanager
def served_identity() -> Iterator[IdentityServer]:
    """An :class:`IdentityServer` started for the block (a module that rotates keys takes its own)."""
    server = IdentityServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def identity_server() -> Iterator[IdentityServer]:
    """Entra-style and Backstage-style issuers (plus Graph and Backstage simulators) on 127.0.0.1."""
    with served_identity() as server:
        yield server


@pytest.fixture(scope="session")
def make_token(identity_server: IdentityServer) -> Callable[..., str]:
    """``make_token(groups=[...], subject="alice", **options)``: a valid token of the Entra-style issuer."""
    return identity_server.entra.make_token


@pytest.fixture(scope="session")
def auth_headers(make_token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """``auth_headers(*groups, subject="alice")``: an ``Authorization: Bearer`` header for those groups."""

    def headers(*groups: str, subject: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(groups=list(groups), subject=subject)}"}

    return headers


@pytest.fixture(scope="session")
def secured_settings(settings: Settings, identity_server: IdentityServer) -> Settings:
    """The session settings (real databases) trusting the Entra-style test issuer."""
    return settings.model_copy(update={"oidc_issuers": [identity_server.entra.settings()]})


def all_context_apis() -> list[Any]:
    """The three context APIs, as ``rosetta serve all`` composes them."""
    from rosetta.finops.api import context_api as finops_api  # noqa: PLC0415
    from rosetta.monitoring.api import context_api as monitoring_api  # noqa: PLC0415
    from rosetta.ref.api import context_api as ref_api  # noqa: PLC0415

    return [ref_api(), finops_api(), monitoring_api()]


@pytest.fixture
def secured_app(secured_settings: Settings) -> Litestar:
    """The app of all three APIs, trusting the Entra-style test issuer."""
    return create_app(all_context_apis(), process="test", settings=secured_settings)


@pytest.fixture
async def api_client(secured_app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An HTTP client on :func:`secured_app` (lifespan started, so JWKS fetching works)."""
    async with AsyncTestClient(app=secured_app) as client:
        yield client

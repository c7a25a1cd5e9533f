"""The verified-token cache: hits skip verification, but never past the token's exp, the TTL or the size bound.

The validator fetches keys over real HTTP from an identity server on 127.0.0.1 (its own for this module:
a test rotates keys); a settable clock moves time forward for the validator and its cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from rosetta.core.security.permissions import Principal, Role
from rosetta.core.security.token_cache import VerifiedTokenCache
from rosetta.core.security.tokens import TokenRejectedError, TokenValidator
from security.identity import IdentityServer, served_identity

GROUP_ROLES = {"Rosetta_User": "user", "Rosetta_Admin": "admin"}


class Clock:
    """Wall-clock seconds that a test can move forward."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityServer]:
    """A private identity server (keys get rotated here)."""
    with served_identity() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The client the validator fetches keys with."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def validator_for(
    idp: IdentityServer,
    http: httpx.AsyncClient,
    clock: Clock,
    *,
    ttl: float = 60,
    entries: int = 100,
    skew: float = 0,
    refetch_seconds: float = 300,
) -> TokenValidator:
    return TokenValidator(
        [idp.entra.settings()],
        http,
        group_roles=GROUP_ROLES,
        clock_skew_seconds=skew,
        jwks_cache_seconds=3600,
        jwks_refetch_interval_seconds=refetch_seconds,
        group_cache_seconds=300,
        token_cache_seconds=ttl,
        token_cache_entries=entries,
        clock=clock,
    )


async def test_a_cached_token_returns_the_same_principal_without_fetching_keys_again(
    idp: IdentityServer, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    validator = validator_for(idp, http, clock)
    token = idp.entra.make_token(groups=["Rosetta_Admin"], now=clock.now)
    first = await validator.authenticate(token)
    assert first.roles == (Role.ADMIN,)
    # Even with the issuer down, the hit answers: nothing is fetched or re-verified.
    idp.entra.outage = True
    try:
        clock.now += 30
        assert await validator.authenticate(token) is first
    finally:
        idp.entra.outage = False


async def test_an_expired_token_is_rejected_even_when_cached(idp: IdentityServer, http: httpx.AsyncClient) -> None:
    clock = Clock()
    validator = validator_for(idp, http, clock, ttl=60)
    token = idp.entra.make_token(groups=["Rosetta_User"], now=clock.now, ttl=30)
    await validator.authenticate(token)
    assert await validator.authenticate(token) is not None
    # 31 s later the token has expired, well within the cache's 60 s lifetime.
    clock.now += 31
    with pytest.raises(TokenRejectedError, match="expired"):
        await validator.authenticate(token)


async def test_rejections_are_never_cached(idp: IdentityServer, http: httpx.AsyncClient) -> None:
    clock = Clock()
    validator = validator_for(idp, http, clock)
    token = idp.entra.make_token(groups=["Rosetta_User"], now=clock.now, claims={"aud": "api://another-api"})
    for _ in range(2):
        with pytest.raises(TokenRejectedError, match="wrong audience"):
            await validator.authenticate(token)
    # The same token is refused again after a successful validation of another one: only successes are kept.
    good = idp.entra.make_token(groups=["Rosetta_User"], now=clock.now)
    await validator.authenticate(good)
    with pytest.raises(TokenRejectedError, match="wrong audience"):
        await validator.authenticate(token)


async def test_a_retired_key_stops_being_honoured_once_the_cache_lifetime_has_passed(
    idp: IdentityServer, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    validator = validator_for(idp, http, clock, ttl=60, refetch_seconds=1)
    old_token = idp.entra.make_token(groups=["Rosetta_User"], now=clock.now)
    await validator.authenticate(old_token)
    idp.entra.rotate()
    # Past the refetch interval, a token with the new kid makes the validator learn the new key set.
    await asyncio.sleep(1.1)
    await validator.authenticate(idp.entra.make_token(groups=["Rosetta_User"], now=clock.now))
    # Within the lifetime, the verified old token is still answered from the cache (the documented window)...
    clock.now += 59
    assert await validator.authenticate(old_token) is not None
    # ...and once it has passed, the old token is verified again and its retired key is gone.
    clock.now += 2
    with pytest.raises(TokenRejectedError, match="unknown signing key"):
        await validator.authenticate(old_token)


async def test_a_zero_lifetime_disables_the_cache(idp: IdentityServer, http: httpx.AsyncClient) -> None:
    clock = Clock()
    validator = validator_for(idp, http, clock, ttl=0)
    token = idp.entra.make_token(groups=["Rosetta_User"], now=clock.now)
    first = await validator.authenticate(token)
    second = await validator.authenticate(token)
    assert first == second
    assert first is not second


def principal(name: str) -> Principal:
    return Principal(subject=name, display_name=None, issuer="https://issuer", groups=(), roles=(Role.USER,))


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    clock = Clock()
    cache = VerifiedTokenCache(ttl_seconds=60, max_entries=2, clock=clock)
    keys = [VerifiedTokenCache.key(f"token-{index}") for index in range(3)]
    cache.put(keys[0], principal("a"), expires_at=clock.now + 3600)
    cache.put(keys[1], principal("b"), expires_at=clock.now + 3600)
    assert cache.get(keys[0]) == principal("a")  # now the most recently used
    cache.put(keys[2], principal("c"), expires_at=clock.now + 3600)
    assert len(cache) == 2
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) == principal("a")
    assert cache.get(keys[2]) == principal("c")


async def test_the_validator_cache_stays_within_its_bound(idp: IdentityServer, http: httpx.AsyncClient) -> None:
    clock = Clock()
    validator = validator_for(idp, http, clock, entries=3)
    tokens = [idp.entra.make_token(groups=["Rosetta_User"], subject=f"user{i}", now=clock.now) for i in range(5)]
    for token in tokens:
        await validator.authenticate(token)
    assert validator.verified_tokens == 3
    # An evicted token is simply verified again.
    assert (await validator.authenticate(tokens[0])).subject == "oid-user0"


def test_an_entry_never_outlives_the_token_nor_the_lifetime() -> None:
    clock = Clock()
    cache = VerifiedTokenCache(ttl_seconds=60, max_entries=10, clock=clock)
    short, long = VerifiedTokenCache.key("short"), VerifiedTokenCache.key("long")
    cache.put(short, principal("s"), expires_at=clock.now + 10)
    cache.put(long, principal("l"), expires_at=clock.now + 3600)
    clock.now += 10
    assert cache.get(short) is None
    assert cache.get(long) == principal("l")
    clock.now += 50
    assert cache.get(long) is None
    # A token already expired is not stored at all.
    cache.put(short, principal("s"), expires_at=clock.now - 1)
    assert len(cache) == 0

"""Signing keys of one trusted issuer, fetched over HTTP and cached.

Rules (see ``docs/adr/0004-token-validation-and-group-resolution.md``):

- keys are cached for ``cache_seconds``; a stale cache is refreshed on the next token;
- an unknown ``kid`` triggers one refetch, but never more often than every ``refetch_interval_seconds``
  (so a flood of tokens with random ``kid`` values cannot turn us into a denial-of-service amplifier);
- when the issuer is down, the keys already cached keep being used, however old; only an issuer never
  reached answers "unavailable".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

logger = logging.getLogger(__name__)

# Asymmetric key types only: a JWKS entry of type "oct" (a shared secret) is ignored.
_ACCEPTED_KEY_TYPES = {"RSA", "EC", "OKP"}
# When nothing was ever fetched, retry after this many seconds rather than after the full refetch interval.
_FIRST_FETCH_RETRY_SECONDS = 5.0

PublicKey = RSAKey | ECKey | OKPKey


class KeyUnavailableError(Exception):
    """The issuer's keys could not be fetched and none are cached."""


class JwksCache:
    """The key set of one issuer: ``key_for(kid)`` returns the verification key or ``None``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        jwks_url: str | None,
        discovery_url: str | None,
        cache_seconds: float,
        refetch_interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not jwks_url and not discovery_url:
            raise ValueError("a JWKS URL or a discovery URL is needed")
        self._client = client
        self._jwks_url = jwks_url
        self._discovery_url = discovery_url
        self._cache_seconds = cache_seconds
        self._refetch_interval = refetch_interval_seconds
        self._clock = clock
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> PublicKey | None:
        """The key with this ``kid``, refetching (rate-limited) when it is unknown or the cache is stale."""
        if kid in self._keys and not self._stale():
            return self._keys[kid]
        async with self._lock:
            # Another request may have refreshed the keys while this one waited for the lock.
            if kid not in self._keys or self._stale():
                await self._refresh_if_allowed()
        if not self._keys and self._fetched_at is None:
            raise KeyUnavailableError("the issuer's signing keys cannot be fetched")
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._cache_seconds

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        elapsed = self._clock() - self._attempted_at
        if self._fetched_at is None:
            return elapsed >= min(_FIRST_FETCH_RETRY_SECONDS, self._refetch_interval)
        # Unknown kid: once per refetch interval. Stale cache while the issuer is down: retry every few seconds.
        return elapsed >= self._refetch_interval or (self._stale() and elapsed >= _FIRST_FETCH_RETRY_SECONDS)

    async def _refresh_if_allowed(self) -> None:
        if not self._may_fetch():
            return
        self._attempted_at = self._clock()
        try:
            keys = await self._fetch()
        except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as error:
            # Outage tolerance: keep serving with the keys we have.
            logger.warning(
                "JWKS fetch failed (%s: %s); keeping %d cached key(s)",
                type(error).__name__,
                error,
                len(self._keys),
            )
            return
        self._keys = keys
        self._fetched_at = self._clock()

    async def _jwks_location(self) -> str:
        if self._jwks_url:
            return self._jwks_url
        assert self._discovery_url is not None
        response = await self._client.get(self._discovery_url)
        response.raise_for_status()
        location = response.json()["jwks_uri"]
        if not isinstance(location, str):
            raise ValueError("discovery document has no jwks_uri")
        # The discovery document rarely changes: remember where the keys are.
        self._jwks_url = location
        return location

    async def _fetch(self) -> dict[str, PublicKey]:
        response = await self._client.get(await self._jwks_location())
        response.raise_for_status()
        document: Any = response.json()
        entries = [
            entry
            for entry in document["keys"]
            if isinstance(entry, dict) and entry.get("kty") in _ACCEPTED_KEY_TYPES and entry.get("use", "sig") == "sig"
        ]
        key_set = KeySet.import_key_set({"keys": entries})
        keys: dict[str, PublicKey] = {}
        for key in key_set.keys:
            if isinstance(key, RSAKey | ECKey | OKPKey) and key.kid:
                keys[key.kid] = key
        logger.info("JWKS fetched: %d key(s)", len(keys))
        return keys

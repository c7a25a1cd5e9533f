"""The HTTP transport every connector shares: timeouts, retries, backoff, Retry-After, bounded concurrency.

Retry rule (external-apis.md, "Retry rule for all clients"): a 429, a 5xx (500, 502, 503, 504), a
connection error or a timeout is retried up to ``max_retries`` times. A ``Retry-After`` header (seconds or
an HTTP date) is honoured: the transport waits at least that long, and every other request of the same
client waits too, because the limit is shared. Without it the wait is exponential with jitter
(``base * 2**attempt``, capped, half of it random), so concurrent clients do not retry in lock-step.
A ``Retry-After`` longer than ``max_retry_after`` (e.g. an hourly ServiceNow rate-limit rule) fails at once
rather than sleeping for an hour. Any other 4xx is not retried.

Errors are :class:`rosetta.core.errors.RosettaError` subclasses with one-line messages that name the
system, the request and the system's own error message, never the credentials:
:class:`ExternalUnavailableError` (retries exhausted; exit code 4), :class:`ExternalAuthError`
(401/403; a configuration problem, exit code 2), :class:`ExternalApiError` (any other refusal).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from rosetta.core.errors import ConfigurationError, RosettaError, ServiceUnavailableError
from rosetta.core.settings import ExternalSystem

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# Reads the system's own error message out of an error response (each system has its own body shape).
ErrorDescriber = Callable[[httpx.Response], str]


class ExternalApiError(RosettaError):
    """An external system refused a request (a 4xx that retrying will not fix)."""

    status_code = 502
    title = "External system error"

    def __init__(self, detail: str, *, system: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(detail)
        self.system = system
        self.status = status
        self.body = body


class ExternalAuthError(ExternalApiError, ConfigurationError):
    """The external system rejected the configured credentials (401) or their scope (403)."""

    title = "External system rejected the credentials"


class ExternalUnavailableError(ExternalApiError, ServiceUnavailableError):
    """The external system did not answer successfully within the retries allowed."""

    status_code = 503
    title = "External system unavailable"


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait before retrying."""

    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with jitter: between half and all of ``base * 2**attempt`` (capped)."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delay-seconds or an HTTP date; ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def generic_error_message(response: httpx.Response) -> str:
    """The body's ``message`` (or ``error``) member when it is JSON, else the start of the text."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    return " ".join(response.text.split())[:200]


class Transport:
    """One httpx client for one external system, with the retry rule and a concurrency bound."""

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        timeout_seconds: float = 30.0,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        describe_error: ErrorDescriber = generic_error_message,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.system = system
        self.retry = retry or RetryPolicy()
        self.timeout_seconds = timeout_seconds
        self._describe = describe_error
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max(1, max_concurrency))
        self._resume_at = 0.0
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Accept": "application/json", **(headers or {})},
            auth=auth,
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
        )

    @classmethod
    def for_system(
        cls,
        system: str,
        config: ExternalSystem,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        describe_error: ErrorDescriber = generic_error_message,
        retry: RetryPolicy | None = None,
    ) -> Transport:
        """A transport configured from ``settings.<system>``; a missing URL is a configuration error."""
        if not config.url:
            raise ConfigurationError(f"no URL configured for {system}: set ROSETTA_{system.upper()}__URL")
        return cls(
            system=system,
            base_url=config.url,
            headers=headers,
            auth=auth,
            timeout_seconds=config.timeout_seconds,
            max_concurrency=config.max_concurrency,
            retry=retry or RetryPolicy(max_retries=config.max_retries),
            describe_error=describe_error,
        )

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    @property
    def base_url(self) -> str:
        """The base URL every path is relative to."""
        return str(self._client.base_url)

    def set_header(self, name: str, value: str) -> None:
        """Send ``name: value`` on every later request (e.g. a session token obtained at run time)."""
        self._client.headers[name] = value

    async def get(self, path: str, params: Any = None) -> httpx.Response:
        """GET with the retry rule; return the (2xx/3xx) response."""
        return await self.request("GET", path, params=params)

    async def request(self, method: str, path: str, *, params: Any = None, json: Any = None) -> httpx.Response:
        """Send one request, retrying as the module describes; raise an ``ExternalApiError`` subclass."""
        loop = asyncio.get_running_loop()
        attempt = 0
        where = f"{method} {self._client.base_url.path.rstrip('/')}{path}"
        while True:
            if (pause := self._resume_at - loop.time()) > 0:
                await self._sleep(pause)
            try:
                async with self._semaphore:
                    response = await self._client.request(method, path, params=params, json=json)
            except httpx.TimeoutException:
                reason, delay = f"no answer within {self.timeout_seconds:g} s", None
            except httpx.TransportError as error:
                reason, delay = f"connection failed ({type(error).__name__}: {error or 'no detail'})", None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRYABLE_STATUSES:
                    raise self._refusal(where, response)
                reason = f"HTTP {response.status_code}: {self._describe(response)}"
                delay = retry_after_seconds(response.headers.get("Retry-After"))
                if delay is not None and delay > self.retry.max_retry_after:
                    raise ExternalUnavailableError(
                        f"{self.system}: {where} asks to retry after {delay:g} s (more than "
                        f"{self.retry.max_retry_after:g} s): {reason}",
                        system=self.system,
                        status=response.status_code,
                    )
                if delay is not None:
                    # Everyone waits: the limit that answered 429 is shared by all requests of this client.
                    self._resume_at = max(self._resume_at, loop.time() + delay)
            if attempt >= self.retry.max_retries:
                raise ExternalUnavailableError(
                    f"{self.system}: {where} failed after {attempt + 1} attempt(s): {reason}", system=self.system
                )
            wait = delay if delay is not None else self.retry.backoff(attempt, self._rng)
            logger.info(
                "%s: %s failed (%s); retry %d/%d in %.2f s",
                self.system,
                where,
                reason,
                attempt + 1,
                self.retry.max_retries,
                wait,
            )
            await self._sleep(wait)
            attempt += 1

    def _refusal(self, where: str, response: httpx.Response) -> ExternalApiError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = response.text
        message = f"{self.system}: {where} was refused with HTTP {status}: {self._describe(response)}"
        if status in (401, 403):
            return ExternalAuthError(message, system=self.system, status=status, body=body)
        return ExternalApiError(message, system=self.system, status=status, body=body)


async def ordered_concurrently(factories: Iterable[Callable[[], Awaitable[T]]], limit: int) -> AsyncIterator[T]:
    """Run the coroutines ``factories`` make, at most ``limit`` at a time, and yield their results in order.

    Only ``limit`` results are ever held, so a long list of requests streams with bounded memory; the first
    failure cancels what is still running and propagates.
    """
    pending: deque[asyncio.Future[T]] = deque()
    try:
        for factory in factories:
            pending.append(asyncio.ensure_future(factory()))
            if len(pending) >= max(1, limit):
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for future in pending:
            future.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

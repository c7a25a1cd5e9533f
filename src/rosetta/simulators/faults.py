"""Fault injection and the request log shared by every simulator.

A simulator app is wrapped by :func:`fault_middleware`, which, before the real handler runs, may

- ``latency``: wait ``delay_seconds`` and then answer normally;
- ``rate_limit``: answer 429, with ``Retry-After: <retry_after>`` unless ``retry_after`` is ``None``;
- ``error``: answer ``status`` (5xx by default) with the system's own error body;
- ``timeout``: hold the request for ``delay_seconds`` (default 30 s, longer than a client's timeout) and
  then answer 504, so the client sees a read timeout.

A rule matches on ``method``, a regular expression searched in the path (``path``) and one searched in the
decoded query string (``query``). Of the matching requests it lets ``skip`` through, then fires with
``probability`` (drawn from a ``random.Random(seed)``, so a run is reproducible) at most ``times`` times
(``None``: every time, a permanent fault). The first rule that fires wins.

Every request except those under ``/_admin`` is appended to the request log with the time it arrived, its
query parameters, the status answered and the fault injected, so tests measure what a client did (e.g. how
long it waited after a 429) from the server's point of view instead of timing the client.

Rules are set through the constructor or the admin endpoints every simulator serves
(see :func:`admin_handlers`): ``PUT /_admin/faults`` ``{"seed": 1, "rules": [...]}``,
``DELETE /_admin/faults``, ``GET /_admin/requests``, ``DELETE /_admin/requests``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

import msgspec
from litestar import Response, delete, get, put
from litestar.enums import ScopeType
from litestar.params import JSONBody
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from rosetta.core.security.permissions import Permission, requires

FaultAction = Literal["latency", "rate_limit", "error", "timeout"]

# Builds the body and headers of an injected error in the simulated system's own format.
ErrorRenderer = Callable[[int, str], tuple[dict[str, Any], dict[str, str]]]

ADMIN_PREFIX = "/_admin"


class FaultRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One fault to inject on the requests it matches."""

    action: FaultAction
    path: str = ""
    query: str = ""
    method: str | None = None
    probability: float = 1.0
    skip: int = 0
    times: int | None = None
    status: int = 503
    retry_after: int | None = 2
    delay_seconds: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        re.compile(self.path)
        re.compile(self.query)


class FaultSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PUT /_admin/faults``."""

    rules: list[FaultRule]
    seed: int = 0


class RequestLogEntry(msgspec.Struct, kw_only=True):
    """One request as the simulator saw it (``at``: epoch seconds when it arrived; ``duration``: until answered)."""

    seq: int
    at: float
    method: str
    path: str
    query: str
    params: list[tuple[str, str]]
    status: int
    duration: float = 0.0
    fault: FaultAction | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name`` (``default`` when absent)."""
        return next((value for key, value in self.params if key == name), default)


class _ArmedRule:
    def __init__(self, rule: FaultRule) -> None:
        self.rule = rule
        self.path = re.compile(rule.path)
        self.query = re.compile(rule.query)
        self.matched = 0
        self.fired = 0

    def matches(self, method: str, path: str, query: str) -> bool:
        rule = self.rule
        if rule.method is not None and rule.method.upper() != method:
            return False
        return bool(self.path.search(path) and self.query.search(query))


class FaultInjector:
    """The fault rules of one simulator and its request log; safe to use from any thread."""

    def __init__(self, rules: Iterable[FaultRule] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._armed: list[_ArmedRule] = []
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self._log: list[RequestLogEntry] = []
        self.set_rules(rules, seed=seed)

    def set_rules(self, rules: Iterable[FaultRule], *, seed: int | None = None) -> None:
        """Replace the rules (their counters start again); re-seed when ``seed`` is given."""
        with self._lock:
            self._armed = [_ArmedRule(rule) for rule in rules]
            if seed is not None:
                self._random = random.Random(seed)  # noqa: S311

    def clear(self) -> None:
        """Remove every rule: the simulator answers normally again."""
        self.set_rules(())

    def choose(self, method: str, path: str, query: str) -> FaultRule | None:
        """The fault to inject on this request, if any (advances the rules' counters)."""
        with self._lock:
            for armed in self._armed:
                if not armed.matches(method, path, query):
                    continue
                armed.matched += 1
                rule = armed.rule
                if armed.matched <= rule.skip or (rule.times is not None and armed.fired >= rule.times):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                armed.fired += 1
                return rule
        return None

    def record(self, entry_fields: dict[str, Any]) -> None:
        """Append one request to the log."""
        with self._lock:
            self._log.append(RequestLogEntry(seq=len(self._log) + 1, **entry_fields))

    def requests(self) -> list[RequestLogEntry]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._log.clear()


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    start: Message = {"type": "http.response.start", "status": status, "headers": raw_headers}
    await send(start)
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _inject(rule: FaultRule, send: Send, render_error: ErrorRenderer) -> int:
    if rule.action == "rate_limit":
        body, headers = render_error(429, "Too many requests")
        if rule.retry_after is not None:
            headers = {**headers, "Retry-After": str(rule.retry_after)}
        await _send_json(send, 429, body, headers)
        return 429
    if rule.action == "timeout":
        await asyncio.sleep(rule.delay_seconds if rule.delay_seconds is not None else 30.0)
        body, headers = render_error(504, "Gateway timeout")
        await _send_json(send, 504, body, headers)
        return 504
    body, headers = render_error(rule.status, "Simulated server error")
    await _send_json(send, rule.status, body, headers)
    return rule.status


def fault_middleware(app: ASGIApp, injector: FaultInjector, render_error: ErrorRenderer) -> ASGIApp:
    """Wrap a simulator's ASGI app: inject the configured faults and log every request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"].startswith(ADMIN_PREFIX):
            await app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        path = scope["path"].rstrip("/") or "/"
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = unquote_plus(raw_query)
        fields: dict[str, Any] = {
            "at": time.time(),
            "method": method,
            "path": path,
            "query": query,
            "params": parse_qsl(raw_query, keep_blank_values=True),
            "status": 500,
        }
        rule = injector.choose(method, path, query)
        try:
            if rule is not None and rule.action != "latency":
                fields["fault"] = rule.action
                fields["status"] = await _inject(rule, send, render_error)
                return
            if rule is not None:
                fields["fault"] = rule.action
                await asyncio.sleep(rule.delay_seconds or 0.0)

            async def send_and_remember(message: Message) -> None:
                if message["type"] == "http.response.start":
                    fields["status"] = message["status"]
                await send(message)

            await app(scope, receive, send_and_remember)
        finally:
            fields["duration"] = time.time() - fields["at"]
            injector.record(fields)

    return middleware


def admin_handlers(injector: FaultInjector) -> Sequence[Any]:
    """The ``/_admin`` endpoints of a simulator: set or clear faults, read or clear the request log."""

    @put(f"{ADMIN_PREFIX}/faults", guards=[requires(Permission.PUBLIC)], status_code=200, sync_to_thread=False)
    def set_faults(data: JSONBody[FaultSettings]) -> dict[str, int]:
        injector.set_rules(data.rules, seed=data.seed)
        return {"rules": len(data.rules)}

    @delete(f"{ADMIN_PREFIX}/faults", guards=[requires(Permission.PUBLIC)], sync_to_thread=False)
    def clear_faults() -> None:
        injector.clear()

    @get(f"{ADMIN_PREFIX}/requests", guards=[requires(Permission.PUBLIC)], sync_to_thread=False)
    def request_log() -> Response[bytes]:
        return Response(msgspec.json.encode(injector.requests()), media_type="application/json")

    @delete(f"{ADMIN_PREFIX}/requests", guards=[requires(Permission.PUBLIC)], sync_to_thread=False)
    def clear_request_log() -> None:
        injector.clear_requests()

    return [set_faults, clear_faults, request_log, clear_request_log]

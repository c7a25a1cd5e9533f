"""Request ids, access logs and Prometheus metrics, as ASGI middleware shared by every app."""

from __future__ import annotations

import logging
import re
import time
import uuid

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram

from rosetta.core.logging import request_id_var

access_logger = logging.getLogger("rosetta.access")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class HttpMetrics:
    """Request counts and latency histograms per route template, in a registry of the app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rosetta_http_requests_total",
            "HTTP requests served, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rosetta_http_request_duration_seconds",
            "Time to serve an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


def request_context_middleware(app: ASGIApp, metrics: HttpMetrics) -> ASGIApp:
    """Give every request an id (``X-Request-ID`` if valid, else a new one), echo it, log and measure it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _VALID_REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "<unmatched>"
            method = str(scope.get("method", "GET"))
            status = status_holder["status"]
            metrics.observe(method, route, status, elapsed)
            level = logging.DEBUG if scope.get("path") in _QUIET_PATHS else logging.INFO
            access_logger.log(
                level,
                "%s %s %s",
                method,
                scope.get("path"),
                status,
                extra={"route": route, "status": status, "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)

    return middleware


def metrics_text(metrics: HttpMetrics) -> bytes:
    """The Prometheus text exposition of an app's metrics."""
    from prometheus_client import generate_latest  # noqa: PLC0415 - keeps import time low for CLI commands

    return generate_latest(metrics.registry)

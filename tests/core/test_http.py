"""HTTP conventions every API shares: health, readiness, metrics, OpenAPI per context, problem+json."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from rosetta.core.http import create_app
from rosetta.core.settings import Settings
from rosetta.finops.api import context_api as finops_api
from rosetta.monitoring.api import context_api as monitoring_api
from rosetta.ref.api import context_api as ref_api


async def test_health_readiness_metrics_and_openapi_for_each_context(settings: Settings) -> None:
    app = create_app([ref_api(), finops_api(), monitoring_api()], process="test", settings=settings)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"ref": "ok", "finops": "ok", "monitoring": "ok"}
        for name in ("ref", "finops", "monitoring"):
            document = (await client.get(f"/api/{name}/v1/openapi.json")).json()
            assert document["openapi"].startswith("3.1")
            assert all(path.startswith(f"/api/{name}/v1") for path in document["paths"])
            assert (await client.get(f"/api/{name}/v1/docs")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'rosetta_http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in metrics
        assert "rosetta_http_request_duration_seconds_bucket" in metrics

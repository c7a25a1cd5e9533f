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


async def test_openapi_documents_errors_as_problems_conditional_updates_and_csv_exports(settings: Settings) -> None:
    app = create_app([ref_api(), finops_api(), monitoring_api()], process="test", settings=settings)
    async with AsyncTestClient(app=app) as client:
        documents = {name: (await client.get(f"/api/{name}/v1/openapi.json")).json() for name in ("ref", "finops")}
        # What a real error looks like, to hold against the documented schema.
        missing = await client.get("/api/finops/v1/budgets/00000000-0000-4000-8000-000000000000")
    problem = {"$ref": "#/components/schemas/Problem"}
    for document in documents.values():
        assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]
        for path, item in document["paths"].items():
            for method, operation in item.items():
                responses = operation["responses"]
                errors = {status: response for status, response in responses.items() if int(status) >= 400}
                assert {"400", "401", "403", "503"} <= set(errors), (method, path)
                # A resource named in the path may not exist; a route naming one in its query declares it.
                if "{" in path:
                    assert "404" in errors, (method, path)
                for status, response in errors.items():
                    assert response["content"] == {"application/problem+json": {"schema": problem}}, (status, path)

    finops = documents["finops"]["paths"]
    budget = finops["/api/finops/v1/budgets/{budget_id}"]
    for method in ("put", "patch"):
        if_match = _parameter(budget[method], "If-Match")
        assert (if_match["in"], if_match["required"]) == ("header", True)
        assert {"409", "412", "428"} <= set(budget[method]["responses"])
    imported = finops["/api/finops/v1/budgets/{budget_id}/import"]["post"]
    assert _parameter(imported, "If-Match")["required"] is False
    assert "412" in imported["responses"]
    assert "428" not in imported["responses"]
    assert "If-Match" not in {parameter["name"] for parameter in budget["get"].get("parameters", [])}
    assert set(finops["/api/finops/v1/costs/drilldown"]["get"]["responses"]["200"]["content"]) == {
        "application/json",
        "text/csv",
    }
    assert "text/csv" not in finops["/api/finops/v1/costs/summary"]["get"]["responses"]["200"]["content"]
    # 404 is declared where a route answers it (a month never built, an unknown parent), not on every route.
    assert "404" in finops["/api/finops/v1/costs/summary"]["get"]["responses"]
    assert "404" in finops["/api/finops/v1/budgets/comparison"]["get"]["responses"]
    assert "404" not in finops["/api/finops/v1/budgets"]["get"]["responses"]
    # Generic pages get readable component names (not "Page_rosetta.core.audit.AuditEntry_").
    assert "AuditEntryPage" in documents["finops"]["components"]["schemas"]
    assert not [name for name in documents["finops"]["components"]["schemas"] if "." in name]
    # Formats the handlers check are documented too (the handlers' own 400s still name what they expect).
    period = _parameter(finops["/api/finops/v1/costs/summary"]["get"], "period")["schema"]
    assert period["pattern"] == "^[0-9]{4}-(0[1-9]|1[0-2])$"
    level = _parameter(finops["/api/finops/v1/costs/drilldown"]["get"], "level")["schema"]
    assert level["enum"] == ["domain", "family", "product", "application"]

    assert missing.status_code == 401  # no token: still a problem, as documented
    assert missing.headers["content-type"].startswith("application/problem+json")
    body = missing.json()
    schema = documents["finops"]["components"]["schemas"]["Problem"]
    assert set(schema["required"]) <= set(body)
    assert set(body) <= set(schema["properties"])


def _parameter(operation: dict[str, object], name: str) -> dict[str, object]:
    parameters = operation.get("parameters", [])
    assert isinstance(parameters, list)
    found = [parameter for parameter in parameters if parameter["name"] == name]
    assert len(found) == 1, parameters
    return dict(found[0])

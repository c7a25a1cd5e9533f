"""What Litestar's generated OpenAPI leaves out, added to each context's document.

Backstage plugins are written against these documents (often through a generated client), so they must say
what the API really answers:

- every error is an RFC 9457 problem (``application/problem+json``, the ``Problem`` schema), never the plain
  ``application/json`` 400 Litestar documents by default; each operation lists the errors it can give: 400,
  401, 403 and 503 everywhere, 404 where the path names a resource, 409 on changes;
- a handler declaring ``opt={IF_MATCH_OPT: "required"}`` (or ``"optional"``) documents the ``If-Match``
  header and 412 (and 428 when required): optimistic concurrency on updates;
- a handler declaring ``opt={CSV_OPT: True}`` documents ``text/csv`` beside JSON for its 200 answer
  (``Accept: text/csv`` exports every page).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from litestar import Litestar
from litestar.routes import HTTPRoute

PROBLEM_MEDIA_TYPE = "application/problem+json"
IF_MATCH_OPT = "if_match"
CSV_OPT = "csv"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error, as RFC 9457 describes it; members beyond the standard ones carry details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "A URI naming the kind of problem (about:blank: see title)"},
        "title": {"type": "string", "description": "Short summary of the kind of problem"},
        "status": {"type": "integer", "description": "The HTTP status code"},
        "detail": {"type": "string", "description": "What went wrong with this request, for a human"},
        "instance": {"type": "string", "description": "The path of the request"},
        "requestId": {"type": "string", "description": "The X-Request-Id of the request, for the logs"},
        "errors": {
            "type": "array",
            "description": "Invalid fields of a 400 (validation)",
            "items": {"type": "object", "additionalProperties": True},
        },
    },
    "additionalProperties": True,
}

_ERRORS = {
    400: "Bad request: a parameter, a header or the body is invalid",
    401: "No valid bearer token (WWW-Authenticate says why)",
    403: "The caller's roles do not allow this",
    404: "No such resource",
    409: "The change conflicts with the current state (a name already used, a run already in progress)",
    412: "If-Match does not name the resource's current ETag: read it again",
    428: "This update needs an If-Match header with the resource's current ETag",
    503: "A database or an external system is unavailable; retry later",
}
_CHANGES = frozenset({"post", "put", "patch", "delete"})
_METHODS = frozenset({"get", "head", "post", "put", "patch", "delete", "options"})
_TYPED_PARAMETER = re.compile(r"\{(\w+):[^}]+\}")


def handler_options(app: Litestar) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Each route handler's ``opt``, by (OpenAPI path, lower-case method)."""
    options: dict[tuple[str, str], Mapping[str, Any]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = _TYPED_PARAMETER.sub(r"{\1}", route.path)
        for handler in route.route_handlers:
            for method in handler.http_methods:
                options[(path, method.lower())] = handler.opt
    return options


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def complete_document(
    document: Mapping[str, Any], options: Mapping[tuple[str, str], Mapping[str, Any]]
) -> dict[str, Any]:
    """A copy of ``document`` with problems, conditional headers and CSV exports documented (module docstring)."""
    completed = copy.deepcopy(dict(document))
    completed.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, item in completed.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            opt = options.get((path, method), {})
            if_match = opt.get(IF_MATCH_OPT)
            statuses = {400, 401, 403, 503}
            if "{" in path:
                statuses.add(404)
            if method in _CHANGES:
                statuses.add(409)
            if if_match:
                statuses.add(412)
                operation.setdefault("parameters", []).append(
                    {
                        "name": "If-Match",
                        "in": "header",
                        "required": if_match == "required",
                        "description": "The ETag of the version this change was made from (see the GET's ETag)",
                        "schema": {"type": "string"},
                    }
                )
            if if_match == "required":
                statuses.add(428)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses[str(status)] = _problem(status)
            if opt.get(CSV_OPT) and "200" in responses:
                responses["200"].setdefault("content", {})["text/csv"] = {
                    "schema": {"type": "string", "description": "Every page from the cursor on, with a header row"}
                }
    return completed

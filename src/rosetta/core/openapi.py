"""What Litestar's generated OpenAPI leaves out, added to each context's document.

Backstage plugins are written against these documents (often through a generated client), so they must say
what the API really answers:

- every error is an RFC 9457 problem (``application/problem+json``, the ``Problem`` schema), never the plain
  ``application/json`` 400 Litestar documents by default; each operation lists the errors it can give: 400,
  401, 403 and 503 everywhere, 404 where the path names a resource, 409 on changes;
- a handler declaring ``opt={IF_MATCH_OPT: "required"}`` (or ``"optional"``) documents the ``If-Match``
  header and 412 (and 428 when required): optimistic concurrency on updates;
- a handler declaring ``opt={CSV_OPT: True}`` documents ``text/csv`` beside JSON for its 200 answer
  (``Accept: text/csv`` exports every page);
- a handler declaring ``opt={ERRORS_OPT: (404, ...)}`` documents those errors too (a 404 on a route whose
  path names no resource, but whose query does), and so does a guard with an ``openapi_errors(opt)`` method
  (the statuses it can give on a route with that ``opt``);
- a handler reading a raw upload declares ``opt={UPLOAD_OPT: {media type: description}}``: its request body
  is documented with those media types (binary), with 413 (too large) and 415 (another media type);
- generic components get readable names: ``Page[Budget]`` is ``BudgetPage``, not
  ``Page_rosetta.finops.schemas.Budget_``, for clients generated from the document.
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
ERRORS_OPT = "errors"
UPLOAD_OPT = "upload"

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
    406: "The route cannot answer in a media type the Accept header allows (the problem lists those it can)",
    409: "The change conflicts with the current state (a name already used, a run already in progress)",
    412: "If-Match does not name the resource's current ETag: read it again",
    413: "The body is larger than the server accepts",
    415: "The body's Content-Type is not one the route reads",
    428: "This update needs an If-Match header with the resource's current ETag",
    503: "A database or an external system is unavailable; retry later",
}
_CHANGES = frozenset({"post", "put", "patch", "delete"})
_METHODS = frozenset({"get", "head", "post", "put", "patch", "delete", "options"})
_TYPED_PARAMETER = re.compile(r"\{(\w+):[^}]+\}")
# Litestar's key of a generic struct's component: "Page_rosetta.finops.schemas.Budget_" for Page[Budget].
_GENERIC_COMPONENT = re.compile(r"^([A-Za-z]\w*)_(?:\w+\.)+([A-Za-z]\w*)_$")
_COMPONENT_REF = "#/components/schemas/"


def handler_options(app: Litestar) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Each route handler's ``opt``, by (OpenAPI path, lower-case method)."""
    options: dict[tuple[str, str], Mapping[str, Any]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = _TYPED_PARAMETER.sub(r"{\1}", route.path)
        for handler in route.route_handlers:
            guard_errors = [
                status
                for guard in handler.resolve_guards()
                if callable(declared := getattr(guard, "openapi_errors", None))
                for status in declared(handler.opt)
            ]
            opt = dict(handler.opt)
            if guard_errors:
                opt[ERRORS_OPT] = (*opt.get(ERRORS_OPT, ()), *guard_errors)
            for method in handler.http_methods:
                options[(path, method.lower())] = opt
    return options


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _renamed_references(value: Any, names: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        return [_renamed_references(inner, names) for inner in value]
    if not isinstance(value, dict):
        return value
    renamed: dict[str, Any] = {}
    for key, inner in value.items():
        if key == "$ref" and isinstance(inner, str) and inner.startswith(_COMPONENT_REF):
            name = inner.removeprefix(_COMPONENT_REF)
            renamed[key] = _COMPONENT_REF + names.get(name, name)
        else:
            renamed[key] = _renamed_references(inner, names)
    return renamed


def _readable_component_names(document: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    names: dict[str, str] = {}
    for key in schemas:
        match = _GENERIC_COMPONENT.match(key)
        if match is not None:
            names[key] = f"{match.group(2)}{match.group(1)}"
    # Two generics reducing to one name (same argument name in two modules) keep Litestar's keys.
    if not names or len(set(names.values())) < len(names) or set(names.values()) & set(schemas):
        return document
    renamed: dict[str, Any] = _renamed_references(document, names)
    renamed["components"]["schemas"] = {names.get(key, key): value for key, value in schemas.items()}
    return renamed


def _upload_body(media_types: Mapping[str, str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            media_type: {"schema": {"type": "string", "format": "binary", "description": description}}
            for media_type, description in media_types.items()
        },
    }


def complete_document(
    document: Mapping[str, Any], options: Mapping[tuple[str, str], Mapping[str, Any]]
) -> dict[str, Any]:
    """A copy of ``document`` with problems, conditional headers and CSV exports documented (module docstring)."""
    completed = _readable_component_names(copy.deepcopy(dict(document)))
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
            statuses.update(opt.get(ERRORS_OPT, ()))
            if "requestBody" in operation:
                statuses.add(415)  # a JSON body sent as another media type (core.http.refuse_bodies_not_sent_as_json)
            if opt.get(UPLOAD_OPT):
                statuses.update((413, 415))
                operation["requestBody"] = _upload_body(opt[UPLOAD_OPT])
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses[str(status)] = _problem(status)
            if opt.get(CSV_OPT) and "200" in responses:
                responses["200"].setdefault("content", {})["text/csv"] = {
                    "schema": {
                        "type": "string",
                        "description": "Every page from the cursor on: a header row fixed by the item schema, then one"
                        " row per item",
                    }
                }
    return completed

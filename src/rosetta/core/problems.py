"""RFC 9457 problem details: every error of every API is ``application/problem+json`` with the request id."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.params import ParameterKwarg
from sqlalchemy.exc import IntegrityError

from rosetta.core.db import sqlstate_of
from rosetta.core.errors import RosettaError
from rosetta.core.logging import request_id_var
from rosetta.core.wire import Response

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def request_id_of(request: Request[Any, Any, Any]) -> str | None:
    """The id the request-id middleware gave this request."""
    return request.scope.get("state", {}).get("request_id") or request_id_var.get()


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    *,
    detail: str,
    title: str | None = None,
    problem_type: str = "about:blank",
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """Build a problem+json response; ``extra`` members are added beside the standard ones."""
    body: dict[str, Any] = {
        "type": problem_type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    request_id = request_id_of(request)
    if request_id:
        body["requestId"] = request_id
    if extra:
        body.update(extra)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _wire_names(request: Request[Any, Any, Any]) -> dict[str, tuple[str, str]]:
    """Each handler parameter's Python name -> (the name the client writes, where it goes)."""
    names: dict[str, tuple[str, str]] = {}
    try:
        parameters = request.route_handler.parsed_fn_signature.parameters
    except (AttributeError, KeyError, RuntimeError):
        # No route matched (or no signature): nothing to translate.
        return names
    for python_name, definition in parameters.items():
        kwarg = definition.kwarg_definition
        if isinstance(kwarg, ParameterKwarg) and kwarg.name:
            names[python_name] = (kwarg.name, str(kwarg.param_type.value))
    return names


def _validation_errors(request: Request[Any, Any, Any], exc: ValidationException) -> list[dict[str, Any]]:
    # Litestar names a failing parameter by its Python name ("all_versions"): the client wrote the wire name
    # ("allVersions"), so that is what the problem names.
    wire_names: dict[str, tuple[str, str]] | None = None
    errors: list[dict[str, Any]] = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            field = item.get("key") or item.get("field") or "body"
            source = item.get("source", "body")
            if item.get("source") != "body":
                if wire_names is None:
                    wire_names = _wire_names(request)
                field, source = wire_names.get(field, (field, source))
            errors.append({"field": field, "message": item.get("message", ""), "source": source})
    return errors


def handle_rosetta_error(request: Request[Any, Any, Any], exc: RosettaError) -> Response[dict[str, Any]]:
    """Domain errors: their own status, title and detail."""
    if exc.status_code >= 500:
        logger.error("request failed: %s", exc.detail)
    return problem_response(
        request, exc.status_code, detail=exc.detail, title=exc.title, problem_type=exc.problem_type, extra=exc.extra
    )


def handle_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """400 naming each failing field (query parameter, header or body member)."""
    errors = _validation_errors(request, exc)
    detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors) or exc.detail
    return problem_response(request, 400, detail=detail, title="Invalid request", extra={"errors": errors})


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Framework errors (401, 403, 404, 405...) as problems; 401 always carries ``WWW-Authenticate``."""
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException) and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = 'Bearer realm="rosetta"'
    status = exc.status_code
    if status >= 500:
        logger.error("request failed: %s", exc.detail)
        return problem_response(request, status, detail="an internal error occurred; quote the request id")
    extra = exc.extra if isinstance(exc.extra, dict) else None
    return problem_response(request, status, detail=exc.detail, extra=extra, headers=headers or None)


def handle_integrity_error(request: Request[Any, Any, Any], exc: IntegrityError) -> Response[dict[str, Any]]:
    """A unique or foreign-key violation that a service did not anticipate: 409, without SQL in the body."""
    logger.warning("integrity error: %s", type(exc.orig).__name__ if exc.orig else "unknown")
    return problem_response(request, 409, detail="the change conflicts with existing data", title="Conflict")


# Data exceptions PostgreSQL raises for what a client sent (the services check the rest before SQL).
_CLIENT_DATA_ERRORS: dict[str, str] = {
    "22P05": "text values may not contain the NUL character (U+0000)",
    "22021": "text values may not contain the NUL character (U+0000) or bytes that are not UTF-8",
    "22001": "a text value is longer than its field allows",
    "22003": "a number is out of the range its field allows",
}


def handle_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything unexpected: 500, logged with its stack trace, never sent to the client.

    Except what the database refused in the client's own data (a NUL in a query parameter, a JSON string
    or a path): 400, since nothing is wrong with the service and the request cannot succeed as sent.
    """
    client_error = _CLIENT_DATA_ERRORS.get(sqlstate_of(exc))
    if client_error is not None:
        logger.info("request refused by the database: %s", client_error)
        return problem_response(request, 400, detail=client_error, title="Invalid request")
    logger.error("unhandled error", exc_info=exc)
    return problem_response(
        request,
        500,
        detail="an internal error occurred; quote the request id to the platform team",
        title="Internal error",
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    RosettaError: handle_rosetta_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_exception,
    IntegrityError: handle_integrity_error,
    Exception: handle_internal_error,
}

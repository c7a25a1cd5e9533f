"""Errors that carry their own HTTP status, so services raise domain errors and the HTTP layer renders them."""

from __future__ import annotations

from typing import Any


class RosettaError(Exception):
    """Base of every expected error; ``status_code`` is what an API returns for it.

    ``title`` is the short, stable summary of the problem type; ``detail`` explains this occurrence.
    """

    status_code: int = 500
    title: str = "Internal error"
    problem_type: str = "about:blank"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class BadRequestError(RosettaError):
    """The request is well-formed but its content is invalid."""

    status_code = 400
    title = "Bad request"


class NotFoundError(RosettaError):
    """The addressed resource does not exist."""

    status_code = 404
    title = "Not found"


class ConflictError(RosettaError):
    """The request conflicts with the current state (duplicate key, running job, wrong state)."""

    status_code = 409
    title = "Conflict"


class PreconditionFailedError(RosettaError):
    """An ``If-Match`` precondition did not hold: the resource changed since the client read it."""

    status_code = 412
    title = "Precondition failed"


class PreconditionRequiredError(RosettaError):
    """A conditional request was required (``If-Match``) but none was given."""

    status_code = 428
    title = "Precondition required"


class UnprocessableError(RosettaError):
    """The content is syntactically valid but breaks a business rule."""

    status_code = 422
    title = "Unprocessable content"


class ConfigurationError(RosettaError):
    """A setting is missing or invalid; the message names the variable, never its secret value."""

    status_code = 500
    title = "Configuration error"


class ServiceUnavailableError(RosettaError):
    """A dependency (database, external system) does not answer."""

    status_code = 503
    title = "Service unavailable"


class NotAcceptableError(RosettaError):
    """No representation the client accepts (``Accept``); ``extra`` lists the media types the route offers."""

    status_code = 406
    title = "Not acceptable"

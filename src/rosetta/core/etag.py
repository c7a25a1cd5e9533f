"""ETag and conditional-request helpers: optimistic concurrency for updates (``If-Match`` → 412)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from litestar import Request

from rosetta.core.errors import PreconditionFailedError, PreconditionRequiredError


def compute_etag(representation: Any) -> str:
    """A strong ETag for a representation: the hash of its canonical JSON encoding."""
    encoded = msgspec.json.encode(representation, order="deterministic")
    return '"' + hashlib.sha256(encoded).hexdigest()[:32] + '"'


def _listed(header: str) -> list[str]:
    return [part.strip() for part in header.split(",") if part.strip()]


def check_if_match(request: Request[Any, Any, Any], current_etag: str, *, required: bool = False) -> None:
    """Enforce ``If-Match`` against the resource's current ETag.

    Raises 412 when the client's ETag is stale, and 428 when ``required`` and no ``If-Match`` was sent.
    Weak ETags never match (RFC 9110 strong comparison).
    """
    header = request.headers.get("if-match")
    if header is None:
        if required:
            raise PreconditionRequiredError("this update needs an If-Match header with the resource's ETag")
        return
    candidates = _listed(header)
    if "*" in candidates or current_etag in candidates:
        return
    raise PreconditionFailedError(
        "the resource changed since you read it (If-Match does not match its current ETag); read it again",
        extra={"currentEtag": current_etag},
    )


def is_not_modified(request: Request[Any, Any, Any], current_etag: str) -> bool:
    """True when ``If-None-Match`` names the current ETag (weak comparison): answer 304."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    bare = current_etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == bare for tag in _listed(header))

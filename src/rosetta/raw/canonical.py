"""The canonical JSON form of a payload and its content hash: the de-duplication key of the raw zone.

Both stores land exactly what :func:`canonical_json` produces, so a payload read back is the same whichever
store holds it, and the hash of what is stored can be recomputed from it:

- keys sorted at every level, no insignificant whitespace, UTF-8;
- ``Decimal`` encoded as its exact decimal *string* (``Decimal("1.50")`` -> ``"1.50"``), never a float,
  so money never loses a digit and ``{"amount": Decimal("1.50")}`` and ``{"amount": "1.50"}`` are one
  document; datetimes as RFC 3339 strings, UUIDs as strings.

The hash is the sha256 (hex) of those bytes. A payload that cannot be stored as JSON by PostgreSQL (a
``\\u0000`` in a string) or that is not JSON-encodable is refused with :class:`UnstorablePayloadError`
before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from rosetta.core.errors import BadRequestError

_encoder = msgspec.json.Encoder(order="sorted", decimal_format="string")
_decoder = msgspec.json.Decoder(dict[str, Any])

# PostgreSQL's jsonb cannot hold the NUL character; refusing it everywhere keeps both stores identical.
_ESCAPED_NUL = b"\\u0000"


class UnstorablePayloadError(BadRequestError):
    """A payload that cannot be landed (not JSON-encodable, not an object, or holding a NUL character)."""

    title = "Unstorable payload"


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The canonical JSON bytes of one payload (see the module docstring); raise if it cannot be stored."""
    if not isinstance(payload, Mapping):
        raise UnstorablePayloadError(f"a payload must be a JSON object, not {type(payload).__name__}")
    try:
        encoded = _encoder.encode(payload)
    except (TypeError, ValueError, OverflowError) as error:
        raise UnstorablePayloadError(f"payload is not JSON-encodable: {error}") from None
    if _ESCAPED_NUL in encoded:
        raise UnstorablePayloadError("payload holds a NUL character (\\u0000), which cannot be stored")
    return encoded


def content_hash(encoded: bytes) -> str:
    """The content hash of canonical JSON bytes: sha256, lowercase hex (64 characters)."""
    return hashlib.sha256(encoded).hexdigest()


def canonical_payload(payload: Mapping[str, Any]) -> tuple[bytes, str]:
    """The canonical bytes of a payload and their content hash, in one call."""
    encoded = canonical_json(payload)
    return encoded, content_hash(encoded)


def decode_payload(encoded: bytes | str) -> dict[str, Any]:
    """A payload back from its stored JSON text."""
    return _decoder.decode(encoded)

"""JSON as the APIs send it: every ``Decimal`` in plain positional notation (``"0.0000000001"``, never ``"1E-10"``).

msgspec encodes a ``Decimal`` natively, as ``str(value)``, and ``str`` switches to exponent notation for
``|x| < 1e-6`` (a per-request price of ``0.0000002``, a FOCUS sub-micro cost) and for a zero with more than 6
decimals (``0E-11``, the difference of two equal amounts summed at 11 decimals). msgspec never hands a
``Decimal`` to an ``enc_hook``, so Litestar's ``type_encoders`` cannot change that (ADR 0013).

:func:`encode_json` keeps msgspec's encoding and checks its bytes instead: a ``Decimal`` written in exponent
notation is always a JSON string made of an exponent number (``"1.2E-7"``), and such a string contains
``E+`` or ``E-`` followed by a digit. One regular-expression scan (C speed, about 0.3 ns a byte) finds none in
almost every response, which is then sent as encoded. When it finds one, and the JSON string around it is
entirely an exponent number, the value is encoded again the slow way: converted to builtins with its
decimals kept as ``Decimal``, each written positionally. A text that merely looks like such a number (a name
``"1E+5"``) takes the slow path too, and comes out unchanged: it costs time, never a wrong answer.

:class:`Response` renders JSON through :func:`encode_json`; it is every app's ``response_class``, and handlers
that build their response themselves use it rather than Litestar's.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal, TypeVar

import msgspec
from litestar import Response as LitestarResponse
from litestar.exceptions import ImproperlyConfiguredException
from litestar.serialization import default_serializer
from litestar.types import Serializer

T = TypeVar("T")

# A literal first byte lets the regex engine skip to each "E" without trying the pattern at every byte.
_EXPONENT_MARK = re.compile(rb"E[-+][0-9]")
# str(Decimal) in exponent notation, as a whole JSON string: sign, digits, optional fraction, exponent.
_EXPONENT_STRING = re.compile(rb'"-?[0-9]+(?:\.[0-9]+)?E[-+][0-9]+"')
_JSON_MEDIA_TYPE = re.compile(r"^application/(?:.+\+)?json")

Order = Literal["deterministic", "sorted"] | None


def plain_decimal(value: Decimal) -> str:
    """``value`` in positional notation, its scale kept: ``1E-10`` is ``0.0000000001``, ``0E-11`` ``0.00000000000``."""
    return format(value, "f")


def _has_exponent_decimal(encoded: bytes) -> bool:
    for mark in _EXPONENT_MARK.finditer(encoded):
        # The string the mark sits in starts at the nearest quote before it (a decimal's text holds none).
        start = encoded.rfind(b'"', 0, mark.start())
        if start != -1 and _EXPONENT_STRING.match(encoded, start):
            return True
    return False


def _positional(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, dict):
        return {_positional(key): _positional(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_positional(item) for item in value]
    return value


def encode_json(value: Any, *, enc_hook: Serializer | None = None, order: Order = None) -> bytes:
    """``value`` as JSON, as ``msgspec.json.encode`` writes it but with every ``Decimal`` in plain notation.

    ``enc_hook`` converts the types msgspec does not know (Litestar's serializer in responses); ``order`` is
    msgspec's (``"sorted"`` for the JSON text of a CSV cell).
    """
    encoded = msgspec.json.encode(value, enc_hook=enc_hook, order=order)
    if not _has_exponent_decimal(encoded):
        return encoded
    builtins = msgspec.to_builtins(value, builtin_types=(Decimal,), enc_hook=enc_hook, order=order)
    return msgspec.json.encode(_positional(builtins))


def to_builtins(value: Any) -> Any:
    """``value`` as plain JSON data (dicts, lists, strings, numbers), decimals as plain-notation strings.

    For what is stored as JSON and served again later (audit snapshots), so it follows the wire's notation.
    """
    if value is None:
        return None
    return msgspec.json.decode(encode_json(value))


class Response(LitestarResponse[T]):
    """Litestar's ``Response`` writing JSON through :func:`encode_json` (decimals in plain notation)."""

    def render(self, content: Any, media_type: str, enc_hook: Serializer = default_serializer) -> bytes:
        """The body: JSON content through :func:`encode_json`; anything else as Litestar renders it."""
        if isinstance(content, bytes | str) or not _JSON_MEDIA_TYPE.match(media_type):
            return super().render(content, media_type, enc_hook)
        try:
            return encode_json(content, enc_hook=enc_hook)
        except (TypeError, msgspec.EncodeError) as error:
            # What Litestar raises for content it cannot encode, so the error handlers treat it alike.
            raise ImproperlyConfiguredException("Unable to serialize response content") from error

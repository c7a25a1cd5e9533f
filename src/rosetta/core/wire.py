"""JSON as the APIs send it: every ``Decimal`` in plain positional notation (``"0.0000000001"``, never ``"1E-10"``).

msgspec encodes a ``Decimal`` natively, as ``str(value)``, and ``str`` switches to exponent notation for
``|x| < 1e-6`` (a per-request price of ``0.0000002``, a FOCUS sub-micro cost) and for a zero with more than 6
decimals (``0E-11``, the difference of two equal amounts summed at 11 decimals). msgspec never hands a
``Decimal`` to an ``enc_hook``, so Litestar's ``type_encoders`` cannot change that (ADR 0013).

:func:`encode_json` keeps msgspec's encoding and checks its bytes instead: a ``Decimal`` written in exponent
notation is always a JSON string made of an exponent number (``"1.2E-7"``), and such a string contains
``E+`` or ``E-`` followed by a digit. One regular-expression scan (C speed, about 0.3 ns a byte) finds none in
almost every response, which is then sent as encoded. When it finds some, the value is encoded a second time
with decimals as bare JSON numbers: a string such as ``"1.2E-7"`` found again there is a text (or a key),
not a decimal. If none is, each is rewritten in place as its plain form. If one is (a name ``"1E+5"`` beside a
decimal written the same way), the value is converted to builtins with its decimals kept as ``Decimal`` and
each written positionally, which tells them apart whatever they hold. Text never changes: a lookalike costs
time, never a wrong answer.

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


def _exponent_strings(encoded: bytes) -> set[bytes]:
    """The JSON strings of ``encoded`` that are whole exponent numbers (``b'"1E-10"'``), quotes included."""
    found = set()
    for mark in _EXPONENT_MARK.finditer(encoded):
        # The string the mark sits in starts at the nearest quote before it (a decimal's text holds none).
        start = encoded.rfind(b'"', 0, mark.start())
        string = _EXPONENT_STRING.match(encoded, start) if start != -1 else None
        if string is not None:
            found.add(string.group())
    return found


def _positional(value: Any) -> Any:
    # What msgspec.to_builtins gives is exact dicts, lists and tuples: ``type() is`` is the cheap test.
    kind = type(value)
    if kind is dict:
        return {_positional(key): _positional(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_positional(item) for item in value]
    if isinstance(value, Decimal):
        return plain_decimal(value)
    return value


def encode_json(value: Any, *, enc_hook: Serializer | None = None, order: Order = None) -> bytes:
    """``value`` as JSON, as ``msgspec.json.encode`` writes it but with every ``Decimal`` in plain notation.

    ``enc_hook`` converts the types msgspec does not know (Litestar's serializer in responses); ``order`` is
    msgspec's (``"sorted"`` for the JSON text of a CSV cell).
    """
    encoded = msgspec.json.encode(value, enc_hook=enc_hook, order=order)
    strings = _exponent_strings(encoded)
    if not strings:
        return encoded
    # Encoded with decimals as bare numbers, the document holds such a string only where a text (or a key)
    # does. When none does, every one of them is a decimal and can be rewritten in place.
    as_numbers = msgspec.json.Encoder(enc_hook=enc_hook, order=order, decimal_format="number").encode(value)
    if not any(string in as_numbers for string in strings):
        for string in strings:
            encoded = encoded.replace(string, b'"' + plain_decimal(Decimal(string[1:-1].decode())).encode() + b'"')
        return encoded
    # A text equal to an exponent number beside a decimal written so: only a walk tells them apart.
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

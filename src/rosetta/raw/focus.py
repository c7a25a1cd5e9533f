"""FOCUS 1.x cost exports: recognising them and shaping one row into its raw payload.

Every column is kept under its FOCUS name (custom ``x_`` columns and non-standard ones such as the sample's
``Id`` included). The literal ``NULL`` and empty cells become ``null``. Amount, price and quantity columns
(names ending in ``Cost``, ``UnitPrice`` or ``Quantity``) stay exact decimal strings as written; a
locale-formatted one (``"1 234,50"``) is normalised, anything else rejects the row. The key-value columns
(``Tags``, ``SkuPriceDetails``) are parsed into JSON objects, their keys kept exactly as written (the
official sample has both ``"org"`` and ``" org"``), numbers in them kept as decimal strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec

from rosetta.core.locale_numbers import DecimalConvention, is_decimal_literal

# Present in every FOCUS 1.0 to 1.3 export: enough to recognise one, and required when --kind focus is given.
FOCUS_CORE_COLUMNS: frozenset[str] = frozenset(
    {"BilledCost", "EffectiveCost", "BillingCurrency", "ChargePeriodStart", "ChargePeriodEnd"}
)
FOCUS_OBJECT_COLUMNS: frozenset[str] = frozenset({"Tags", "SkuPriceDetails"})
_DECIMAL_SUFFIXES = ("Cost", "UnitPrice", "Quantity")
NULL_LITERAL = "NULL"

_object_decoder = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)


class FocusRowError(ValueError):
    """A FOCUS row that cannot be landed; the message is the rejection reason."""


def is_focus_header(columns: Sequence[str]) -> bool:
    """True when the columns are those of a FOCUS export."""
    return set(columns) >= FOCUS_CORE_COLUMNS


def missing_focus_columns(columns: Sequence[str]) -> list[str]:
    """The FOCUS core columns absent from a header, sorted."""
    return sorted(FOCUS_CORE_COLUMNS - set(columns))


def is_decimal_column(name: str) -> bool:
    """FOCUS amount, unit-price and quantity columns (custom ``x_`` columns are kept as written)."""
    return not name.startswith("x_") and name.endswith(_DECIMAL_SUFFIXES)


class FocusShaper:
    """Turns the cells of one FOCUS row into its payload, given the file's header and decimal convention."""

    def __init__(self, columns: Sequence[str], convention: DecimalConvention) -> None:
        """Prepare for rows with these ``columns``."""
        self._columns = list(columns)
        self._decimal = [is_decimal_column(name) for name in self._columns]
        self._object = [name in FOCUS_OBJECT_COLUMNS for name in self._columns]
        self._convention = convention

    def payload(self, cells: Sequence[str]) -> dict[str, Any]:
        """The payload of one row (``cells`` aligned with the columns); raise :class:`FocusRowError`."""
        payload: dict[str, Any] = {}
        for name, cell, decimal, key_value in zip(self._columns, cells, self._decimal, self._object, strict=True):
            if cell in ("", NULL_LITERAL):
                payload[name] = None
            elif decimal:
                payload[name] = self._decimal_string(name, cell)
            elif key_value:
                payload[name] = _json_object(name, cell)
            else:
                payload[name] = cell
        return payload

    def _decimal_string(self, name: str, cell: str) -> str:
        text = cell.strip()
        if is_decimal_literal(text):
            return text
        normalised = self._convention.normalise(text)
        if normalised is None:
            raise FocusRowError(f"{name} is not a decimal number: {cell[:40]!r}")
        return normalised


def _json_object(name: str, cell: str) -> dict[str, Any]:
    try:
        return _object_decoder.decode(cell)
    except msgspec.ValidationError:
        raise FocusRowError(f"{name} is not a JSON object") from None
    except msgspec.DecodeError as error:
        raise FocusRowError(f"{name} is not valid JSON: {error}") from None

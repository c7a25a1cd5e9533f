"""Locale-formatted numbers from spreadsheets and CSV exports, turned into exact decimal strings.

``"1 234,56 €"``, ``"€1,234.56"``, ``"(1.234,56)"``, ``"CHF 1'234.50"`` and ``"12,5"`` become
``"1234.56"``, ``"1234.56"``, ``"-1234.56"``, ``"1234.50"`` and ``"12.5"``. The digits are kept exactly
as written (no float ever, trailing zeros kept); only grouping separators, currency symbols or codes and
the locale's decimal mark change. Text that is not such a number (``"2026-03-14"``, ``"1.2.3"``,
``"0612 345 678"``, ``"12 %"``) is returned unchanged by :func:`normalise_number` returning None.

The one ambiguous shape is a single ``,`` or ``.`` followed by exactly three digits (``"1,234"``): a
thousands separator in one locale, a decimal mark in another. It is resolved by the file's convention,
which :class:`DecimalConvention` infers from the unambiguous numbers of a sample of the file (and, failing
that, from the CSV delimiter: ``;`` files come from decimal-comma locales). Where guessing is not acceptable
(budget amounts a person typed), :func:`established_mark` says whether the file settles the convention at all
and :func:`is_ambiguous` which cells depend on it, so the caller can refuse them.

Shared by the raw-zone importers and finops-api's uploads (contexts may not import each other).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

DecimalMark = Literal[",", "."]

# Symbols and ISO codes of the currencies seen in finance exports; a code must stand apart from the digits.
_SYMBOLS = "€$£¥₹₩₽₺₪¢₣₴₦₫฿"
_CODES = ("EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN", "CZK", "CNY", "INR", "US$")
_CURRENCY = rf"(?:[{_SYMBOLS}]|(?:{'|'.join(re.escape(code) for code in _CODES)})(?=[\s\d(+\-\u2212]|$))"
_GROUPING_SPACES = " \u00a0\u202f'\u2019"  # space, no-break space, narrow no-break space, apostrophes (Swiss)
_SPACES = " \u00a0\u202f"
_BODY = rf"[0-9.,{_GROUPING_SPACES}]*[0-9][0-9.,{_GROUPING_SPACES}]*"
_NUMBER = re.compile(
    rf"""^\s*
    (?P<open>\()?\s*
    (?P<lead_sign>[+\-\u2212])?\s*
    (?:(?P<lead_currency>{_CURRENCY})\s*)?
    (?P<sign>[+\-\u2212])?\s*
    (?P<body>{_BODY})\s*
    (?:(?P<trail_currency>{_CURRENCY})\s*)?
    (?P<trail_sign>-)?\s*
    (?P<close>\))?\s*$""",
    re.VERBOSE,
)
_DIGIT = re.compile(r"[0-9]")
_PLAIN_DECIMAL = re.compile(r"^[+-]?[0-9]+(?:\.[0-9]+)?$")
_DECIMAL_LITERAL = re.compile(r"^[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")


def is_plain_decimal(text: str) -> bool:
    """True for an exact decimal string in plain notation (``"12"``, ``"-0.50"``), as the APIs write and read
    amounts; ``"1E-7"`` is not one (a person typing an amount does not write exponents, and the APIs never send
    them back)."""
    return bool(_PLAIN_DECIMAL.match(text))


def is_decimal_literal(text: str) -> bool:
    """True for an exact decimal string, exponent notation included (``"-0.50"``, ``"1E-7"``), as machine
    exports such as FOCUS files may write small costs; the value is exact either way."""
    return bool(_DECIMAL_LITERAL.match(text))


def _decimal_mark(body: str, default: DecimalMark) -> DecimalMark | None:
    """Which of ``,`` and ``.`` is the decimal mark in ``body`` (None: there is no decimal part)."""
    commas, dots = body.count(","), body.count(".")
    if commas and dots:
        return "," if body.rfind(",") > body.rfind(".") else "."
    if not commas and not dots:
        return None
    mark: DecimalMark = "," if commas else "."
    if commas + dots > 1:
        return None  # the same mark several times can only be grouping: "1,234,567"
    digits_after = len(body) - body.rfind(mark) - 1
    integer_part = body[: body.rfind(mark)].strip(_GROUPING_SPACES)
    if digits_after != 3 or integer_part in ("", "0") or any(space in body for space in _GROUPING_SPACES):
        return mark  # "12,5", "0,125", ",5" and "1 234,567" cannot be grouped thousands
    return mark if mark == default else None


@functools.cache
def _grouping(separators: str) -> tuple[re.Pattern[str], dict[int, None]]:
    """For one set of grouping separators: the valid-groups pattern and the table deleting them."""
    separator = f"[{re.escape(separators)}]"
    # "1 234 567"-style: a first group of 1-3 digits, then groups of exactly 3; or digits alone.
    groups = re.compile(rf"^(?:[0-9]+|[0-9]{{1,3}}(?:{separator}[0-9]{{3}})+)$")
    return groups, dict.fromkeys(map(ord, separators))


def normalise_number(text: str, *, decimal_mark: DecimalMark = ".") -> str | None:
    """The exact decimal string of a locale-formatted number, or None when ``text`` is not one.

    ``decimal_mark`` settles the ambiguous ``"1,234"`` / ``"1.234"`` shapes only.
    """
    if text.isascii() and text.isdigit():
        return text  # the common case, digits only: nothing to normalise
    if not _DIGIT.search(text):
        return None  # most text cells: no digit, no number
    match = _NUMBER.match(text)
    if match is None or (match["open"] is None) != (match["close"] is None):
        return None
    signs = [s for s in (match["lead_sign"], match["sign"], match["trail_sign"]) if s]
    if len(signs) > 1 or (signs and match["open"]):
        return None
    if match["lead_currency"] and match["trail_currency"]:
        return None
    body = match["body"].strip(_SPACES)
    mark = _decimal_mark(body, decimal_mark)
    if mark is None:
        integer_part, fraction = body, ""
    else:
        integer_part, fraction = body[: body.rfind(mark)], body[body.rfind(mark) + 1 :]
        if not fraction.isdigit():
            return None
    valid_groups, separators = _grouping(_GROUPING_SPACES + ",.".replace(mark or "", ""))
    if integer_part == "":
        integer_part = "0"
    elif not valid_groups.match(integer_part):
        return None
    digits = integer_part.translate(separators)
    negative = bool(match["open"]) or any(s in "-\u2212" for s in signs)
    return ("-" if negative else "") + digits + (f".{fraction}" if fraction else "")


def unambiguous_mark(text: str) -> DecimalMark | None:
    """The decimal mark a number shows without doubt (``"12,50"`` -> ``,``), or None if it shows none."""
    match = _NUMBER.match(text)
    if match is None:
        return None
    body = match["body"].strip(_SPACES)
    # Asking with both defaults: a mark found whatever the default is a mark the text itself proves.
    found = _decimal_mark(body, ",")
    return found if found is not None and found == _decimal_mark(body, ".") else None


def is_ambiguous(text: str) -> bool:
    """True when ``text`` is a different number under each decimal mark (``"1,234"``: 1234 or 1.234)."""
    return normalise_number(text, decimal_mark=",") != normalise_number(text, decimal_mark=".")


def established_mark(cells: Iterable[str | None]) -> DecimalMark | None:
    """The decimal mark every unambiguous number in ``cells`` shows; None when none shows one or they disagree.

    Unlike :meth:`DecimalConvention.infer` there is no vote and no default: one dissenting number means the
    file does not establish its convention.
    """
    marks = {unambiguous_mark(cell) for cell in cells if cell}
    marks.discard(None)
    return marks.pop() if len(marks) == 1 else None


@dataclass(frozen=True)
class DecimalConvention:
    """A file's decimal mark, voted by the unambiguous numbers of a sample of its cells."""

    mark: DecimalMark

    @classmethod
    def infer(cls, cells: Iterable[str | None], *, default: DecimalMark) -> DecimalConvention:
        """The mark most unambiguous numbers in ``cells`` use; ``default`` when they do not say."""
        votes = {",": 0, ".": 0}
        for cell in cells:
            if cell:
                mark = unambiguous_mark(cell)
                if mark is not None:
                    votes[mark] += 1
        if votes[","] == votes["."]:
            return cls(default)
        return cls("," if votes[","] > votes["."] else ".")

    def normalise(self, text: str) -> str | None:
        """:func:`normalise_number` with this file's decimal mark."""
        return normalise_number(text, decimal_mark=self.mark)

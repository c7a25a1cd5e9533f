"""Locale-formatted numbers become exact decimal strings; anything else is left alone."""

from __future__ import annotations

import pytest

from rosetta.core.locale_numbers import (
    DecimalConvention,
    established_mark,
    is_ambiguous,
    is_decimal_literal,
    is_plain_decimal,
    normalise_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 234,56 €", "1234.56"),
        ("€1,234.56", "1234.56"),
        ("(1.234,56)", "-1234.56"),
        ("CHF 1'234.50", "1234.50"),
        ("12,5", "12.5"),
        ("12,50 EUR", "12.50"),
        ("-€12.50", "-12.50"),
        ("€-12.50", "-12.50"),
        ("12.50-", "-12.50"),
        ("\u22123,5", "-3.5"),
        ("1\u00a0234\u00a0567,89", "1234567.89"),
        ("1\u202f234,5", "1234.5"),
        ("0,125", "0.125"),
        (",5", "0.5"),
        ("US$ 1,000,000.00", "1000000.00"),
        ("1.234.567", "1234567"),
        ("1,234,567.891", "1234567.891"),
        ("12", "12"),
        ("007", "007"),
        ("+4", "4"),
        ("$0.00000080000", "0.00000080000"),
    ],
)
def test_locale_numbers_become_exact_decimal_strings(text: str, expected: str) -> None:
    assert normalise_number(text) == expected


@pytest.mark.parametrize(
    "text", ["2026-03-14", "14.03.2026", "1.2.3", "0612 345 678", "12 %", "abc", "", "€", "(12", "1,2,3", "12 34"]
)
def test_text_that_is_not_a_number_is_left_alone(text: str) -> None:
    assert normalise_number(text) is None


def test_the_ambiguous_three_digit_shape_follows_the_file_convention() -> None:
    assert normalise_number("1,234", decimal_mark=".") == "1234"
    assert normalise_number("1,234", decimal_mark=",") == "1.234"
    assert normalise_number("1.234", decimal_mark=",") == "1234"
    assert normalise_number("1.234", decimal_mark=".") == "1.234"
    # Unambiguous shapes ignore the convention.
    assert normalise_number("1.234,5", decimal_mark=".") == "1234.5"
    assert normalise_number("12,50", decimal_mark=".") == "12.50"


def test_the_convention_is_voted_by_unambiguous_numbers_and_defaults_otherwise() -> None:
    assert DecimalConvention.infer(["12,50", "3,1", "1,234", "x"], default=".").mark == ","
    assert DecimalConvention.infer(["12.50", "1.234,00", "0.5"], default=",").mark == "."
    assert DecimalConvention.infer(["1,234", "abc", None], default=",").mark == ","
    assert DecimalConvention.infer([], default=".").mark == "."


def test_plain_decimals_are_recognised_as_already_exact() -> None:
    assert all(is_plain_decimal(text) for text in ["12", "-0.50", "+3", "0.00000080000"])
    assert not any(is_plain_decimal(text) for text in ["1,5", "€1", "1.", ".5", "NULL", "1E-7", "1e3", "0E-7"])
    # Exponent notation is exact too, and machine exports (FOCUS files) may use it; amounts people send may not.
    assert all(is_decimal_literal(text) for text in ["12", "-0.50", "1E-7", "1.2e+3", "0E-11"])
    assert not any(is_decimal_literal(text) for text in ["1,5", "1E", "E5", "1.", "NULL"])


def test_ambiguous_shapes_depend_on_the_decimal_mark() -> None:
    assert is_ambiguous("1,234")
    assert is_ambiguous("1.234")
    for text in ("1234,56", "1 234,56", "1.234,50", "1,234.50", "1234.5", "0,125", "12", "1,234,567"):
        assert not is_ambiguous(text), text


def test_a_file_establishes_its_mark_only_when_its_unambiguous_numbers_agree() -> None:
    assert established_mark(["1,234", "12,50", None, ""]) == ","
    assert established_mark(["1,234", "1 234.5"]) == "."
    assert established_mark(["1,234", "1234"]) is None
    assert established_mark(["12,50", "12.50"]) is None

"""JSON on the wire: every Decimal in plain notation, whatever its value, and nothing else changed."""

from __future__ import annotations

import ast
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rosetta.core.wire import encode_json, plain_decimal, to_builtins

D = Decimal
SRC = Path(__file__).resolve().parents[2] / "src" / "rosetta"

# str() of each is in exponent notation; each is how PostgreSQL or Decimal arithmetic can give it.
EXPONENT_VALUES = {
    "1E-10": "0.0000000001",  # a per-request price
    "0E-11": "0.00000000000",  # the difference of two equal amounts summed at 11 decimals
    "1.2E-7": "0.00000012",  # a FOCUS sub-micro cost
    "-5E-7": "-0.0000005",
    "0E-7": "0.0000000",
    "1.0E+5": "100000",  # what asyncpg's binary codec gives for 100000
    "1E+3": "1000",
}


class Amounts(msgspec.Struct, rename="camel", omit_defaults=True):
    unit_price: Decimal
    totals: dict[str, Decimal]
    rows: list[tuple[str, Decimal]]
    label: str
    when: datetime
    day: date
    id: uuid.UUID
    note: str | None = None


def amounts(value: Decimal, label: str = "Card") -> Amounts:
    return Amounts(
        unit_price=value,
        totals={"USD": value, "EUR": D("12.50")},
        rows=[("a", value), ("b", D("0.0001"))],
        label=label,
        when=datetime(2026, 11, 1, 12, 30, tzinfo=UTC),
        day=date(2026, 11, 1),
        id=uuid.UUID(int=7),
    )


@pytest.mark.parametrize(("text", "plain"), EXPONENT_VALUES.items())
def test_every_decimal_is_written_in_plain_notation(text: str, plain: str) -> None:
    value = D(text)
    assert str(value) == text  # what msgspec alone would send
    assert plain_decimal(value) == plain
    body = msgspec.json.decode(encode_json(amounts(value)))
    assert body["unitPrice"] == plain
    assert body["totals"] == {"USD": plain, "EUR": "12.50"}
    assert body["rows"] == [["a", plain], ["b", "0.0001"]]


@pytest.mark.parametrize("order", [None, "sorted", "deterministic"])
def test_the_slow_path_changes_nothing_but_the_decimals(order: Any) -> None:
    # Same document through the fast path (no exponent anywhere) and the slow one: byte for byte alike once the
    # decimal is substituted, so members, names, order, dates and UUIDs are as msgspec writes them.
    fast = encode_json(amounts(D("0.0000010")), order=order)
    assert fast == msgspec.json.encode(amounts(D("0.0000010")), order=order)
    slow = encode_json(amounts(D("1E-10")), order=order)
    assert slow == fast.replace(b'"0.0000010"', b'"0.0000000001"')


def test_text_that_looks_like_an_exponent_number_is_sent_as_it_is() -> None:
    # Beside a decimal written the same way too, and ending a text after an escaped quote.
    for label in ("1E+5", "2E-7", "E-1 platform", "PAY-E-2", "1E-9", 'x"1E-9'):
        assert msgspec.json.decode(encode_json(amounts(D("1.5"), label)))["label"] == label
        body = msgspec.json.decode(encode_json(amounts(D("1E-9"), label)))
        assert (body["label"], body["unitPrice"], body["totals"]["USD"]) == (label, "0.000000001", "0.000000001")


def test_types_msgspec_does_not_know_go_through_the_hook_on_both_paths() -> None:
    class Money:
        def __init__(self, amount: Decimal) -> None:
            self.amount = amount

    def hook(value: Any) -> Any:
        if isinstance(value, Money):
            return {"amount": value.amount}
        raise TypeError(type(value))

    assert encode_json([Money(D("2.5"))], enc_hook=hook) == b'[{"amount":"2.5"}]'
    assert encode_json([Money(D("2.5E-8"))], enc_hook=hook) == b'[{"amount":"0.000000025"}]'


def test_audit_snapshots_are_plain_data_with_plain_decimals() -> None:
    snapshot = to_builtins(amounts(D("0E-11")))
    assert snapshot["unitPrice"] == "0.00000000000"
    assert snapshot["rows"] == [["a", "0.00000000000"], ["b", "0.0001"]]
    assert to_builtins(None) is None


def test_api_modules_build_responses_that_write_plain_decimals() -> None:
    # Handlers building their own response must use rosetta.core.wire's: Litestar's would write "1E-10".
    offenders = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith("simulators/") or relative == "core/wire.py":
            continue  # the simulators stand for other systems' APIs
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("litestar"):
                offenders += [f"{relative}: {alias.name}" for alias in node.names if alias.name == "Response"]
    assert offenders == []

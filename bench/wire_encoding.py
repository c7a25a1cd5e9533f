"""Cost of writing decimals in plain notation: one drill-down response encoded, before and after (ADR 0013).

    .venv/bin/python bench/wire_encoding.py [--rows 50] [--number 20000] [--repeat 7]

Builds the ``Drilldown`` body ``GET costs/drilldown`` sends for ``--rows`` rows (amounts with up to 11
decimals, as PostgreSQL's text form gives FOCUS sums), then times, in microseconds per response (best of
``--repeat`` runs of ``--number`` encodings each):

- Litestar's JSON rendering, as before (``msgspec.json.encode`` with Litestar's serializer as hook);
- ``rosetta.core.wire``'s, on the same body (the fast path: a scan finds no exponent) and on the body with
  one row at 1E-10, one at 0E-11 and one at 1.2E-7 (the slow path: the body is encoded again);
- the options ADR 0013 rejected, measured the same way: every decimal a ``Decimal`` subclass written by an
  ``enc_hook`` (Litestar's ``type_encoders``, or a hook of its own), the conversion done in each struct's
  ``__post_init__`` on top, and the numeric codec decoding each value through a Python function.
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from litestar import Response as LitestarResponse
from litestar.serialization import default_serializer, get_serializer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rosetta.core.wire import Response, plain_decimal  # noqa: E402
from rosetta.finops.schemas import Drilldown, DrilldownRow  # noqa: E402


class PlainDecimal(Decimal):
    """The rejected option: a Decimal whose values an enc_hook writes positionally."""

    __slots__ = ()


class ConvertingRow(DrilldownRow):
    """The rejected option of converting at struct construction."""

    def __post_init__(self) -> None:
        for name in ("total", "direct", "indirect", "share_of_parent"):
            value = getattr(self, name)
            if type(value) is Decimal:
                setattr(self, name, PlainDecimal(value))


def amount(rng: random.Random) -> Decimal:
    return Decimal(f"{rng.randint(0, 10**7)}.{rng.randint(0, 10**11 - 1):011d}")


def drilldown(rows: int, tiny: bool = False) -> Drilldown:
    rng = random.Random(1)
    items = [
        DrilldownRow(
            level="application",
            code=f"APP-{index:04d}",
            name=f"Application {index}",
            total=amount(rng),
            direct=amount(rng),
            indirect=Decimal(f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}"),
            share_of_parent=Decimal(f"0.{rng.randint(0, 9999):04d}"),
        )
        for index in range(rows)
    ]
    if tiny:
        for item, value in zip(items, ("1E-10", "0E-11", "1.2E-7"), strict=False):
            item.total = Decimal(value)
    return Drilldown(
        level="application",
        parent="PRD-0001",
        period_from="2026-01",
        period_to="2026-03",
        built_months=["2026-01", "2026-02", "2026-03"],
        environment=None,
        currency="EUR",
        basis="effective",
        total=amount(rng),
        direct=amount(rng),
        indirect=amount(rng),
        items=items,
        limit=50,
        next="/api/finops/v1/costs/drilldown?level=application&parent=PRD-0001&cursor=WyIxMjMiLCJBUFAtMDA0OSJd",
    )


def plain_hook(value: Any) -> Any:
    if isinstance(value, PlainDecimal):
        return plain_decimal(value)
    return default_serializer(value)


class Timer:
    """Prints microseconds per action: the best of ``repeat`` runs of ``number`` actions (divided by ``scale``)."""

    def __init__(self, number: int, repeat: int) -> None:
        self.number = number
        self.repeat = repeat

    def __call__(
        self, label: str, action: Callable[[], object], *, baseline: float | None = None, scale: int = 1
    ) -> float:
        number = max(1, self.number // scale)
        micros = min(timeit.repeat(action, number=number, repeat=self.repeat)) / number * 1e6
        delta = "" if baseline is None else f"  ({micros - baseline:+.1f} us, x{micros / baseline:.2f})"
        print(f"{label:<74} {micros:8.1f} us{delta}")
        return micros


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    timer = Timer(args.number, args.repeat)

    body, tiny = drilldown(args.rows), drilldown(args.rows, tiny=True)
    before, after = LitestarResponse(body), Response(body)
    json_type = "application/json"
    encoded = after.render(body, json_type)
    assert encoded == before.render(body, json_type)
    assert b"E-" not in after.render(tiny, json_type)
    print(f"{args.rows}-row drill-down: {len(encoded):,} bytes of JSON, {4 * args.rows + 3} decimals\n")

    base = timer(
        "before: Litestar Response.render (msgspec, str() of each Decimal)", lambda: before.render(body, json_type)
    )
    timer("after: rosetta.core.wire Response.render, fast path", lambda: after.render(body, json_type), baseline=base)
    timer(
        "after: slow path (rows at 1E-10, 0E-11, 1.2E-7: encoded again)",
        lambda: after.render(tiny, json_type),
        baseline=base,
        scale=10,
    )

    print("\nrejected options:")
    subclassed = msgspec.structs.replace(
        body,
        items=[
            msgspec.structs.replace(
                row,
                total=PlainDecimal(row.total),
                direct=PlainDecimal(row.direct),
                indirect=PlainDecimal(row.indirect),
                share_of_parent=PlainDecimal(row.share_of_parent or 0),
            )
            for row in body.items
        ],
        total=PlainDecimal(body.total),
        direct=PlainDecimal(body.direct),
        indirect=PlainDecimal(body.indirect),
    )
    litestar_hook = get_serializer({PlainDecimal: plain_decimal})
    timer(
        "Decimal subclass + Litestar type_encoders (hook per decimal)",
        lambda: before.render(subclassed, json_type, litestar_hook),
        baseline=base,
        scale=4,
    )
    timer(
        "Decimal subclass + a lean enc_hook of its own",
        lambda: msgspec.json.encode(subclassed, enc_hook=plain_hook),
        baseline=base,
        scale=4,
    )
    fields = [
        (row.level, row.code, row.name, row.total, row.direct, row.indirect, row.share_of_parent) for row in body.items
    ]

    def construct(row_type: type[DrilldownRow]) -> list[DrilldownRow]:
        return [
            row_type(level=lv, code=c, name=n, total=t, direct=d, indirect=i, share_of_parent=s)
            for lv, c, n, t, d, i, s in fields
        ]

    built = timer("building the rows, as today", lambda: construct(DrilldownRow), scale=4)
    timer(
        "building the rows with a converting __post_init__ (encoding not included)",
        lambda: construct(ConvertingRow),
        baseline=built,
        scale=4,
    )
    texts = [str(value) for row in body.items for value in (row.total, row.direct, row.indirect)]

    def python_decoder(text: str) -> Decimal:
        value = Decimal(text)
        return value if value.adjusted() >= -6 else PlainDecimal(text)

    decoded = timer(
        f"numeric codec: Decimal(text) for {len(texts)} values, as today",
        lambda: [Decimal(text) for text in texts],
        scale=4,
    )
    timer(
        f"numeric codec: a Python decoder for {len(texts)} values",
        lambda: [python_decoder(text) for text in texts],
        baseline=decoded,
        scale=4,
    )


if __name__ == "__main__":
    main()

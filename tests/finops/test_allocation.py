"""Known answers of the allocation engine (finops-reference.md §3.2), on the pure Decimal engine."""

from __future__ import annotations

import random
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from rosetta.finops.allocation import (
    EXACT,
    RATIO_DIGITS,
    UNALLOCATED,
    AllocationError,
    allocate,
    even_weights,
    fixed_weights,
    inputs_hash,
)

D = Decimal


def amounts(pool: str, weights: dict[str, str]) -> dict[str, Decimal]:
    allocation = allocate(D(pool), {target: D(weight) for target, weight in weights.items()})
    return {share.target: share.amount for share in allocation.shares}


@pytest.mark.parametrize(
    ("pool", "weights", "expected"),
    [
        ("100.00", {"A": "1", "B": "1", "C": "1"}, {"A": "33.34", "B": "33.33", "C": "33.33"}),
        ("1000.00", {"A": "333.33", "B": "333.33", "C": "333.34"}, {"A": "333.33", "B": "333.33", "C": "333.34"}),
        ("250.00", {"A": "7", "B": "11", "C": "13"}, {"A": "56.45", "B": "88.71", "C": "104.84"}),
        ("999.99", {"A": "50", "B": "30", "C": "20"}, {"A": "499.99", "B": "300.00", "C": "200.00"}),
        ("-10.00", {"A": "1", "B": "2"}, {"A": "-3.33", "B": "-6.67"}),
    ],
    ids=["even", "direct-cost", "usage-vcpu-hours", "fixed-percent", "credit"],
)
def test_known_answers(pool: str, weights: dict[str, str], expected: dict[str, str]) -> None:
    assert amounts(pool, weights) == {target: D(value) for target, value in expected.items()}


def test_even_split_helper_and_tie_break_by_target_code() -> None:
    # Insertion order must not matter: the extra cent goes to the smallest code among equal remainders.
    result = allocate(D("100.00"), even_weights(["ZULU", "ALPHA", "MIKE"]))
    assert [(share.target, share.amount) for share in result.shares] == [
        ("ALPHA", D("33.34")),
        ("MIKE", D("33.33")),
        ("ZULU", D("33.33")),
    ]
    assert [share.rounding_adjustment for share in result.shares] == [D("0.01"), D(0), D(0)]


def test_all_zero_weights_send_the_whole_pool_to_unallocated() -> None:
    result = allocate(D("123.45"), {"A": D(0), "B": D(0), "C": D(0)})
    assert result.unallocated
    assert [(share.target, share.amount) for share in result.shares] == [(UNALLOCATED, D("123.45"))]


def test_no_target_at_all_is_unallocated_too() -> None:
    result = allocate(D("-5.00"), {})
    assert result.unallocated
    assert result.shares[0].amount == D("-5.00")


def test_negative_weight_is_rejected() -> None:
    with pytest.raises(AllocationError, match="negative weight"):
        allocate(D("10.00"), {"A": D(1), "B": D(-1)})


def test_fixed_percentages_must_total_exactly_100() -> None:
    assert fixed_weights({"A": D("50"), "B": D("50.00")}) == {"A": D("50"), "B": D("50.00")}
    with pytest.raises(AllocationError, match="total exactly 100"):
        fixed_weights({"A": D("50"), "B": D("49.99")})


def test_pool_must_be_a_whole_number_of_quanta() -> None:
    with pytest.raises(AllocationError, match="whole number"):
        allocate(D("10.005"), {"A": D(1)})
    # A finer quantum accepts it.
    result = allocate(D("10.005"), {"A": D(1), "B": D(1)}, quantum=D("0.001"))
    assert [share.amount for share in result.shares] == [D("5.003"), D("5.002")]


def test_ratios_are_weight_over_total() -> None:
    result = allocate(D("250.00"), {"A": D(7), "B": D(11), "C": D(13)})
    assert [share.ratio for share in result.shares] == [D(7) / D(31), D(11) / D(31), D(13) / D(31)]
    assert sum(share.ratio for share in result.shares) == pytest.approx(D(1), abs=D("1e-26"))


def test_conservation_on_random_pools() -> None:
    """Σ shares = pool exactly, every share within one quantum of its exact value, for many random inputs."""
    rng = random.Random(20261126)
    for _ in range(500):
        cents = rng.randint(-10_000_000, 10_000_000)
        pool = D(cents) / 100
        weights = {
            f"T{i:03d}": D(rng.randint(0, 10**6)) / D(rng.choice([1, 10, 1000])) for i in range(rng.randint(1, 40))
        }
        result = allocate(pool, weights)
        assert sum(share.amount for share in result.shares) == pool
        total = sum(weights.values())
        if total == 0:
            assert result.unallocated
            continue
        for share in result.shares:
            exact = pool * share.weight / total
            assert abs(share.amount - exact) < D("0.01")
            assert abs(share.amount) >= abs(exact) - D("0.01")


def test_same_inputs_same_result_and_hash() -> None:
    weights = {"B": D("2.5"), "A": D("1"), "C": D("0")}
    assert allocate(D("77.77"), weights) == allocate(D("77.77"), dict(reversed(list(weights.items()))))
    first = inputs_hash(pool_code="network", pool=D("77.77"), method="usage", weights=weights)
    assert first == inputs_hash(pool_code="network", pool=D("77.770"), method="usage", weights={"C": D(0), **weights})
    assert first != inputs_hash(pool_code="network", pool=D("77.78"), method="usage", weights=weights)


ShareRow = tuple[str, Decimal, Decimal, Decimal, Decimal]


def fraction_reference(pool: Decimal, weights: dict[str, Decimal]) -> list[ShareRow]:
    """The method of finops-reference.md §3.2 spelled out with exact fractions (slow, obviously right)."""
    total = sum(weights.values(), D(0))
    if total == 0:
        return [(UNALLOCATED, D(0), D(1), pool, D(0))]
    sign = -1 if pool < 0 else 1
    units = int(abs(pool) / D("0.01"))
    exact = {target: units * Fraction(weight) / Fraction(total) for target, weight in weights.items()}
    floors = {target: value.numerator // value.denominator for target, value in exact.items()}
    leftover = units - sum(floors.values())
    bonus = set(sorted(weights, key=lambda target: (floors[target] - exact[target], target))[:leftover])
    with localcontext() as context:
        context.prec = RATIO_DIGITS
        return [
            (
                target,
                weights[target],
                weights[target] / total,
                sign * (floors[target] + (target in bonus)) * D("0.01"),
                sign * (target in bonus) * D("0.01"),
            )
            for target in sorted(weights)
        ]


def random_weights(rng: random.Random) -> dict[str, Decimal]:
    """Even, small-integer (many ties and zeros) or mixed-scale weights over a random set of target codes."""
    count = rng.randint(0, 50)
    kind = rng.choice(["even", "ties", "scaled"])
    if kind == "even":
        return {f"T{rng.randint(0, 999):03d}": D(1) for _ in range(count)}
    if kind == "ties":
        return {f"T{index:03d}": D(rng.choice([0, 0, 1, 2, 3])) for index in range(count)}
    return {
        f"T{rng.randint(0, 999):03d}": D(rng.choice([0, rng.randint(0, 10**9)])).scaleb(-rng.randint(-3, 12))
        for _ in range(count)
    }


def test_integer_method_matches_exact_fractions() -> None:
    """Every share (amount, ratio, rounding, down to the Decimal exponent) equals the Fraction method's."""
    rng = random.Random(20261127)
    seen = {"credit": 0, "unallocated": 0, "ties": 0}
    for _ in range(2000):
        pool = D(rng.randint(-10_000_000, 10_000_000)) / 100
        weights = random_weights(rng)
        result = allocate(pool, weights)
        got = [(s.target, s.weight, s.ratio, s.amount, s.rounding_adjustment) for s in result.shares]
        expected = fraction_reference(pool, weights)
        assert got == expected
        assert [tuple(value.as_tuple() for value in row[1:]) for row in got] == [
            tuple(value.as_tuple() for value in row[1:]) for row in expected
        ]
        seen["credit"] += pool < 0
        seen["unallocated"] += result.unallocated
        seen["ties"] += len(set(weights.values())) < len(weights)
    # The seeded draw really covers credits, zero-weight pools and tied remainders.
    assert min(seen.values()) > 50


def test_pools_and_weights_wider_than_the_decimal_context_are_exact() -> None:
    """Past 28 significant digits the default context would round: units, shares and totals stay exact."""
    pool = D("98765432109876543210987654321.01")  # 31 digits
    result = allocate(pool, {"A": D(1), "B": D(2)})
    assert [share.amount for share in result.shares] == [
        D("32921810703292181070329218107.00"),
        D("65843621406584362140658436214.01"),
    ]
    total = D(0)
    for share in result.shares:
        total = EXACT.add(total, share.amount)  # a plain sum() would round to 28 digits
    assert total == pool
    # A weight 1e-40 beside weights of 1e30 still counts in the total: A's and B's exact shares fall just short
    # of 50.00 (floors 49.99, each topped up by a rounding cent); a total rounded to 28 digits would give 50.00
    # with no rounding at all.
    wide = allocate(D("100.00"), {"A": D("1E+30"), "B": D("1E+30"), "C": D("1E-40")})
    assert [share.amount for share in wide.shares] == [D("50.00"), D("50.00"), D("0.00")]
    assert [share.rounding_adjustment for share in wide.shares] == [D("0.01"), D("0.01"), D("0.00")]
    with pytest.raises(AllocationError, match="whole number"):
        allocate(D("98765432109876543210987654321.001"), {"A": D(1)})
    with pytest.raises(AllocationError, match="exactly 100"):
        fixed_weights({"A": D("50.0000000000000000000000000000001"), "B": D(50)})

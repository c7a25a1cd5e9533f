"""Dynatrace selector and time parsing for the simulator: entity, problem and SLO selectors, ``from``/``to``.

Selectors are comma-separated predicates ``name("a","b")``, ``name.op("a")`` or ``not(predicate)``;
commas inside parentheses or quotes do not split. Times are epoch milliseconds, ISO 8601 (no offset:
UTC; a space may replace ``T``) or relative (``now``, ``now-2h``, ``now-1d/d`` snapping to the day).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_RELATIVE = re.compile(r"^now(?:([+-])(\d+)([smhdwMy]))?(?:/([smhdwMy]))?$")
_PREDICATE = re.compile(r"^([A-Za-z][A-Za-z0-9_.]*)\((.*)\)$", re.DOTALL)


class SelectorError(ValueError):
    """A selector or time that does not parse (the simulator answers 400)."""


@dataclass(frozen=True)
class Predicate:
    """One selector predicate, e.g. ``type("SERVICE")`` or ``not(tag("env:prod"))``."""

    name: str
    args: tuple[str, ...]
    negated: bool = False
    inner: Predicate | None = None


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on ``separator`` outside parentheses and double quotes."""
    parts, depth, quoted, current = [], 0, False, []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "~":
            escaped = True
            current.append(char)
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quoted or depth != 0:
        raise SelectorError(f"unbalanced quotes or parentheses in {text!r}")
    tail = "".join(current).strip()
    if tail:
        parts.append(tail)
    return parts


def _argument(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace("~", "")
    return text


def parse_selector(text: str) -> list[Predicate]:
    """Parse a selector into its predicates (all must hold)."""
    predicates = []
    for part in split_top_level(text):
        match = _PREDICATE.match(part)
        if match is None:
            raise SelectorError(f"invalid selector predicate {part!r}")
        name, body = match.group(1), match.group(2)
        if name == "not":
            inner = parse_selector(body)
            if len(inner) != 1:
                raise SelectorError("not(...) takes exactly one predicate")
            predicates.append(Predicate(name=inner[0].name, args=inner[0].args, negated=True, inner=inner[0]))
            continue
        predicates.append(Predicate(name=name, args=tuple(_argument(arg) for arg in split_top_level(body))))
    return predicates


def _snap(moment_ms: int, unit: str) -> int:
    moment = datetime.fromtimestamp(moment_ms / 1000, UTC)
    if unit in ("s", "m", "h", "d"):
        return moment_ms - moment_ms % _UNIT_MS[unit]
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        day -= timedelta(days=day.weekday())
    elif unit == "M":
        day = day.replace(day=1)
    else:
        day = day.replace(month=1, day=1)
    return int(day.timestamp() * 1000)


def parse_time(value: str, now_ms: int) -> int:
    """A Dynatrace ``from``/``to`` value in epoch milliseconds."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    if match := _RELATIVE.match(value):
        sign, amount, unit, snap = match.groups()
        moment = now_ms
        if amount is not None:
            step = int(amount) * {"M": 30 * _UNIT_MS["d"], "y": 365 * _UNIT_MS["d"]}.get(unit, _UNIT_MS.get(unit, 0))
            moment = moment - step if sign == "-" else moment + step
        return _snap(moment, snap) if snap else moment
    try:
        moment_dt = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        raise SelectorError(f"invalid time {value!r}") from None
    if moment_dt.tzinfo is None:
        moment_dt = moment_dt.replace(tzinfo=UTC)
    return int(moment_dt.timestamp() * 1000)


def parse_duration_ms(value: str) -> int:
    """``5m``, ``1h``, ``1d``, ``1w`` in milliseconds."""
    match = re.fullmatch(r"(\d+)([smhdw])", value.strip())
    if match is None or int(match.group(1)) == 0:
        raise SelectorError(f"invalid duration {value!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]

"""Parsers of experiment option texts (`Option.parse`): each takes the text and the name the caller knows
the option by (the flag on the command line, the keyword in Python) and raises `JitterCamError` with it."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import JitterCamError
from ...methods import check_method_name

Parse = Callable[[str, str], Any]


def numbers(kind: type = float, minimum: float | None = None) -> Parse:
    """`1,2,5` or, for integers, ranges `A-B` and `A-B:STEP` (both ends included when on the step)."""

    def parse(text: str, what: str) -> tuple:
        values: list = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            try:
                if kind is int and "-" in part[1:]:
                    span, _, step_text = part.partition(":")
                    low, high = (int(x) for x in span.split("-", 1))
                    step = int(step_text or 1)
                else:
                    values.append(kind(part))
                    continue
            except ValueError:
                noun = "an integer" if kind is int else "a number"
                raise JitterCamError(f"{what} {text!r}: {part!r} is not {noun}") from None
            if step < 1:
                raise JitterCamError(f"{what} {text!r}: the step must be at least 1")
            values += list(range(low, high + 1, step))
        if not values:
            raise JitterCamError(f"{what} names no value")
        if minimum is not None and any(v < minimum for v in values):
            bound = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
            raise JitterCamError(f"{what} {bound}")
        return tuple(values)

    return parse


def number(kind: type = float, minimum: float | None = None, maximum: float | None = None) -> Parse:
    """One number, optionally bounded."""

    def parse(text: str, what: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise JitterCamError(f"{what} {text!r} is not {noun}") from None
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            raise JitterCamError(f"{what} must be between {minimum:g} and {maximum:g}")
        if minimum is not None and value < minimum:
            raise JitterCamError(f"{what} must be {'0 or more' if minimum == 0 else f'at least {minimum}'}")
        return value

    return parse


def names(required: bool = False, methods: bool = False) -> Parse:
    """`a,b,c`; `none` or nothing for no name (refused when `required`); `methods` checks each against the
    method registry."""

    def parse(text: str, what: str) -> tuple[str, ...]:
        found = () if text.strip().lower() in ("", "none") else tuple(n.strip() for n in text.split(",") if n.strip())
        if required and not found:
            raise JitterCamError(f"{what} names no {'method' if methods else 'layer'}")
        if methods:
            for name in found:
                check_method_name(name)
        return found

    return parse


def method(text: str, what: str) -> str:
    check_method_name(text)
    return text

"""Counts and durations in words, as every message of the library and the command line writes them."""
from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`count` and its noun: `1 row`, `2 rows`, `0 rows`.

    Args:
        count: how many.
        noun: the singular.
        nouns: the plural when it is not `noun` + 's'.

    Returns:
        The count and the noun, singular for 1 only.
    """
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def duration(seconds: float) -> str:
    """A duration as a person says it: `1 s` (the least said), `40 s`, `12 min`, `2 h 05 min`.

    Args:
        seconds: the duration.

    Returns:
        The rounded duration in words.
    """
    if seconds < 59.5:
        return f"{max(1, round(seconds))} s"
    if seconds < 3570:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"

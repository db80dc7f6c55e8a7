"""Counts in words, as every message of the library and the command line writes them."""
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

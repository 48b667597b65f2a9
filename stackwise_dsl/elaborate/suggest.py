"""Did-you-mean suggestions for misspelt fields, values and names."""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word`, if any is close enough to be a likely typo."""
    import difflib

    choices = sorted(set(choices))
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """`did you mean `context`?`, or None."""
    best = closest(word, choices)
    return f"did you mean `{best}`?" if best is not None else None


def one_of(choices: Iterable[str]) -> str:
    """`a, b or c`, for listing the valid choices in a message."""
    items = [f"`{c}`" for c in choices]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]

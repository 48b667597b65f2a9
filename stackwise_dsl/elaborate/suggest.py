"""Did-you-mean suggestions for misspelt fields, values and names."""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word`, if any is close enough to be a likely typo.

    Close enough is difflib's similarity of at least 0.6; among those, the fewest edits wins
    (a swap of two neighbours is one edit), so `mah` is `mha`, not `mla`."""
    import difflib

    choices = sorted(set(choices))
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    scored = []
    for c in choices:
        similar = difflib.SequenceMatcher(None, word, c).ratio()
        if similar >= 0.6:
            scored.append((_edits(word.lower(), c.lower()), -similar, c))
    return min(scored)[2] if scored else None


def _edits(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that turn `a` into `b`
    (the optimal string alignment distance)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """`did you mean `context`?`, or None."""
    best = closest(word, choices)
    return f"did you mean `{best}`?" if best is not None else None


def suggestion(word: str, choices: Iterable[str], otherwise: str | None = None) -> dict:
    """A diagnostic's keyword arguments for a likely typo whose span is the misspelt word:
    the did-you-mean hint and the fix an editor applies (the word that replaces the span);
    without a likely word, `otherwise` as the hint and no fix."""
    best = closest(word, choices)
    if best is None:
        return {"hint": otherwise}
    return {"hint": f"did you mean `{best}`?", "replacement": best}


def one_of(choices: Iterable[str]) -> str:
    """`a, b or c`, for listing the valid choices in a message."""
    items = [f"`{c}`" for c in choices]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]

"""Python literals for values that come from a spec: no spec value can become code.

`literal(value)` returns source that evaluates to `value` and is a single literal expression
(a string, number, bool, None, or a tuple/list/dict of those), checked by parsing it back.
Strings go through `repr`, which escapes quotes, backslashes, newlines and every non-
printable character, including unicode line and paragraph separators.
"""

from __future__ import annotations

import ast
import keyword
import math
import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SAFE_NODES = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.UnaryOp,
               ast.USub, ast.Load)  # fmt: skip


class EmitError(ValueError):
    """A value that cannot be written as a literal, or a name that is not an identifier."""


def literal(value) -> str:
    """Source of a literal equal to `value` (str, int, float, bool, None, tuple, list,
    dict with such keys and values)."""
    text = _source(value)
    tree = ast.parse(text, mode="eval")
    if not all(isinstance(node, _SAFE_NODES) for node in ast.walk(tree)):
        raise EmitError(f"not a plain literal: {text[:80]}")
    if ast.literal_eval(tree) != value:
        raise EmitError(f"literal does not round-trip: {text[:80]}")
    return text


def identifier(name: str) -> str:
    """`name` if it is a plain ASCII Python identifier that is not a keyword."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise EmitError(f"not an identifier: {name!r}")
    return name


def comment_text(text: str, *, width: int = 96) -> str:
    """Text for a `#` comment: printable ASCII only (anything else, line breaks included,
    becomes `?`), cut to `width` characters, so a comment never ends its line early."""
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text)).rstrip()
    return safe if len(safe) <= width else safe[: width - 3].rstrip() + "..."


def _source(value) -> str:
    if value is None or isinstance(value, bool | int | str):
        return _text(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise EmitError(f"{value} has no literal")
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(_source(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_source(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_source(k)}: {_source(v)}" for k, v in value.items()) + "}"
    raise EmitError(f"no literal for a {type(value).__name__}")


def _text(value) -> str:
    return _quoted(value) if isinstance(value, str) else repr(value)


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quoted(text: str) -> str:
    """A string literal in plain ASCII: printable ASCII as is, every other character
    escaped (so no line separator or look-alike survives), in double quotes unless single
    quotes need fewer escapes (as `ruff format` chooses)."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif 32 <= code < 127:
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return quote + "".join(out) + quote


def pretty(value, *, indent: int = 0, used: int = 0, width: int = 100,
           comments: dict | None = None, path: tuple = ()) -> str:  # fmt: skip
    """`literal(value)` laid out as `ruff format` lays it out: on one line when it fits in
    `width` after the `used` columns before it, else one element per line with trailing
    commas (recursively). `indent` is the current line's indentation. `comments` maps paths
    (keys and indices from `path` down) to a trailing `#` comment for that element's line;
    a container holding any is written one element per line, as ruff keeps it. A comment
    that would make its line too long is left out."""
    comments = comments or {}
    one = literal(value)
    if not isinstance(value, dict | list | tuple) or not value:
        return one
    if used + len(one) <= width and not _commented(comments, path):
        return one  # (its own comment, if any, goes after it on its line)
    open_, close = {dict: "{}", list: "[]", tuple: "()"}[type(value)]
    inner = " " * (indent + 4)
    lines = [_with_comment(open_, comments.get(path), used, width)]
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        prefix = f"{literal(key)}: " if isinstance(value, dict) else ""
        here = (*path, key)
        text = pretty(item, indent=indent + 4, used=indent + 4 + len(prefix) + 1, width=width,
                      comments=comments, path=here)  # fmt: skip
        line = f"{inner}{prefix}{text},"
        if "\n" not in text:
            line = _with_comment(line, comments.get(here), 0, width)
        lines.append(line)
    lines.append(" " * indent + close)
    return "\n".join(lines)


def _commented(comments: dict, path: tuple) -> bool:
    """Whether something inside the container at `path` has a comment."""
    n = len(path)
    return any(key[:n] == path and len(key) > n for key in comments)


def _with_comment(line: str, comment: str | None, used: int, width: int) -> str:
    if comment is None:
        return line
    text = f"{line}  # {comment_text(comment)}"
    return text if used + len(text) <= width else line


def text_block(text: str, *, used: int = 0, width: int = 100, indent: int = 0) -> str:
    """A long text as `ruff format` keeps it: one literal if it fits, else a parenthesized
    run of literals, one per line of the text (a line too long is cut after a space where
    it can be, so each literal fits)."""
    one = literal(text)
    if used + len(one) <= width:
        return one
    inner = " " * (indent + 4)
    room = width - len(inner)

    def fits(piece: str) -> bool:
        return len(literal(piece)) + 2 <= room  # and the line's "\n" (2 characters)

    pieces = []
    for line in text.splitlines(keepends=True):
        body, end = (line[:-1], line[-1]) if line.endswith("\n") else (line, "")
        piece = ""
        for word in re.findall(r"\S*\s*", body)[:-1] or [""]:
            if fits(piece + word) or not piece:
                piece += word
            else:
                pieces.append(piece)
                piece = word
            while not fits(piece):  # a word longer than a line: cut it anywhere
                cut = min(len(piece), room)
                while cut > 1 and not fits(piece[:cut]):
                    cut -= 1
                pieces.append(piece[:cut])
                piece = piece[cut:]
        pieces.append(piece + end)
    return "(\n" + "".join(f"{inner}{literal(x)}\n" for x in pieces) + " " * indent + ")"

"""Small lexical helpers: number values, string escapes, comments, and error-recovery blanking."""

from __future__ import annotations

import math
import re

from lark.exceptions import UnexpectedInput

from stackwise_dsl.source import Source
from stackwise_dsl.syntax.tree import Comment

_SUFFIX = {"k": 1_000, "M": 1_000_000, "B": 1_000_000_000}
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_OPEN = "{(["
_CLOSE = "})]"


def number_value(text: str) -> int | float:
    """`300` → 300, `3e-4` → 0.0003, `2k` → 2000, `1.5M` → 1500000 (exact, via Decimal)."""
    scale = _SUFFIX.get(text[-1], 1)
    digits = text[:-1] if scale != 1 else text
    if scale == 1:
        return int(digits) if digits.isdigit() else float(digits)
    from decimal import Decimal, DecimalException

    try:
        value = Decimal(digits) * scale
        return int(value) if value == value.to_integral_value() else float(value)
    except (DecimalException, OverflowError):
        return math.inf


def decode_string(text: str) -> tuple[str, str | None]:
    """The value of a quoted literal, and a problem description if an escape is invalid."""
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        width = {"u": 4, "U": 8}.get(nxt)
        code = body[i + 2 : i + 2 + width] if width else ""
        if width and len(code) == width and all(c in "0123456789abcdefABCDEF" for c in code):
            if int(code, 16) > 0x10FFFF:
                return "".join(out), f"\\{nxt}{code} is beyond the last Unicode code point"
            out.append(chr(int(code, 16)))
            i += 2 + width
            continue
        return "".join(out), f"invalid escape \\{nxt} in a string"
    return "".join(out), None


def scan_comments(source: Source) -> tuple[Comment, ...]:
    """Every `#` comment outside string literals (strings never span lines)."""
    comments = []
    offset = 0
    # A comment ends at \r or \n, as the lexer's COMMENT does; strings cannot hold either.
    for segment in re.split(r"(?<=[\r\n])", source.text):
        col = _comment_start(segment)
        if col is not None:
            text = segment[col:].rstrip("\r\n")
            start = offset + col
            comments.append(Comment(text=text, span=source.span(start, start + len(text))))
        offset += len(segment)
    return tuple(comments)


def _comment_start(line: str) -> int | None:
    in_string = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_string and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
        elif ch == "#" and not in_string:
            return i
        i += 1
    return None


def blank_item(text: str, error: UnexpectedInput) -> str:
    """`text` with the item holding `error` replaced by spaces (newlines kept).

    The item is the error's line, extended over following lines until the brackets opened on
    it are closed again. Returns `text` unchanged when there is nothing left to blank.
    """
    line = getattr(error, "line", None)
    if not isinstance(line, int) or line < 1:
        return text
    lines = text.split("\n")
    lines = [x + "\n" for x in lines[:-1]] + [lines[-1]]  # lines as the lexer counts them
    if line > len(lines):
        return text
    opened = _open_line_before(text, error)
    if opened is not None and opened < line:
        return _blank_lines(lines, opened, line - 1)
    last = line - 1
    depth = _depth(lines[last])
    while depth > 0 and last + 1 < len(lines):
        last += 1
        depth += _depth(lines[last])
    return _blank_lines(lines, line, last + 1)


def _open_line_before(text: str, error: UnexpectedInput) -> int | None:
    """The line of the innermost bracket left open before an error that wanted a closer."""
    expected = set(getattr(error, "expected", None) or ())
    pos = getattr(getattr(error, "token", None), "start_pos", None)
    if not ({"RBRACE", "RPAR", "RSQB"} & expected) or not isinstance(pos, int):
        return None
    opener = unclosed_bracket(text[:pos])
    return None if opener is None else text.count("\n", 0, opener) + 1


def _blank_lines(lines: list[str], first: int, last: int) -> str:
    """Lines first..last (1-based, inclusive) turned into spaces, newlines kept."""
    out = lines[: first - 1]
    out += [_spaces(s) for s in lines[first - 1 : last]]
    out += lines[last:]
    return "".join(out)


def _spaces(line: str) -> str:
    body = line.rstrip("\r\n")
    return " " * len(body) + line[len(body) :]


def _depth(line: str) -> int:
    """Net brackets opened on a line, ignoring strings and comments."""
    depth = 0
    in_string = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#":
            break
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        i += 1
    return depth


def unclosed_bracket(text: str) -> int | None:
    """Offset of the innermost bracket still open at the end of `text`, if any."""
    stack: list[int] = []
    in_string = in_comment = escaped = False
    pairs = {"}": "{", ")": "(", "]": "["}
    for i, ch in enumerate(text):
        if in_comment:
            in_comment = ch != "\n"
        elif in_string:
            in_string = escaped or (ch != '"' and ch != "\n")
            escaped = not escaped and ch == "\\"
        elif ch == "#":
            in_comment = True
        elif ch == '"':
            in_string = True
        elif ch in "{([":
            stack.append(i)
        elif ch in pairs and stack and text[stack[-1]] == pairs[ch]:
            stack.pop()
    return stack[-1] if stack else None


def deepest_nesting(text: str, limit: int) -> int | None:
    """Offset of the first bracket that opens past `limit` levels, ignoring strings and
    comments; None when the text stays within the limit."""
    depth = 0
    in_string = in_comment = escaped = False
    for i, ch in enumerate(text):
        if in_comment:
            in_comment = ch not in "\r\n"
        elif in_string:
            in_string = escaped or ch not in '"\r\n'
            escaped = not escaped and ch == "\\"
        elif ch == "#":
            in_comment = True
        elif ch == '"':
            in_string = True
        elif ch in _OPEN:
            depth += 1
            if depth > limit:
                return i
        elif ch in _CLOSE:
            depth = max(depth - 1, 0)
    return None

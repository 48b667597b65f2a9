"""Small lexical helpers: number values, string escapes, comments, and error-recovery blanking."""

from __future__ import annotations

import math
import re

import attrs
from lark.exceptions import UnexpectedInput

from stackwise_dsl.source import Source
from stackwise_dsl.syntax.tree import Comment

_SUFFIX = {"k": 1_000, "M": 1_000_000, "B": 1_000_000_000}
MAX_INT = 10**18  # magnitude of an integer, written or computed
BOM = "\ufeff"
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_OPEN = "{(["
_CLOSE = "})]"


def without_bom(text: str) -> str:
    """`text` without a leading UTF-8 byte-order mark, which some Windows editors write: it
    is not part of the spec (and `sw fmt` drops it)."""
    return text[1:] if text.startswith(BOM) else text


def number_value(text: str) -> int | float | None:
    """`300` → 300, `3e-4` → 0.0003, `2k` → 2000, `1.5M` → 1500000 (exact, via Decimal).

    None for an integer beyond MAX_INT: its digits are never converted (Python refuses to
    convert more than 4,300), and no field takes such a number."""
    scale = _SUFFIX.get(text[-1], 1)
    digits = text[:-1] if scale != 1 else text
    if scale == 1 and digits.isdigit():
        too_long = len(digits.lstrip("0")) > len(str(MAX_INT))  # looked at before int()
        return None if too_long or int(digits) > MAX_INT else int(digits)
    if scale == 1:
        return float(digits)
    from decimal import Decimal, DecimalException

    try:
        value = Decimal(digits) * scale
        if value != value.to_integral_value():
            return float(value)
        return int(value) if value <= MAX_INT else None
    except (DecimalException, OverflowError):
        return math.inf


@attrs.frozen
class EscapeProblem:
    """Why an escape in a string literal is invalid, and what to write instead."""

    message: str
    hint: str


def decode_string(text: str) -> tuple[str, EscapeProblem | None]:
    """The value of a quoted literal, and the problem with its first invalid escape."""
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
            problem = _code_point_problem(body, i)
            if problem is not None:
                return "".join(out), problem
            out.append(chr(int(code, 16)))
            i += 2 + width
            continue
        problem = EscapeProblem(f"invalid escape \\{nxt} in a string", _BACKSLASH_HINT)
        return "".join(out), problem
    return "".join(out), None


_BACKSLASH_HINT = 'write a backslash as "\\\\"'
_HEX_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")


def _code_point_problem(body: str, i: int) -> EscapeProblem | None:
    """A `\\u`/`\\U` escape at body[i] that names no character: past U+10FFFF, or a UTF-16
    surrogate (no file name, no UTF-8 text can hold one alone)."""
    m = _HEX_ESCAPE.match(body, i)
    value = int(m[1] or m[2], 16)
    written = m[0]
    if value > 0x10FFFF:
        message = f"{written} is beyond the last Unicode code point"
        return EscapeProblem(message, "code points run up to `\\U0010FFFF`")
    if not 0xD800 <= value <= 0xDFFF:
        return None
    hint = "write the character itself, or its code point as `\\UXXXXXXXX`"
    low = _HEX_ESCAPE.match(body, m.end())
    low_value = int(low[1] or low[2], 16) if low else 0
    if value <= 0xDBFF and 0xDC00 <= low_value <= 0xDFFF:  # a UTF-16 pair, as JSON writes it
        joined = 0x10000 + ((value - 0xD800) << 10) + (low_value - 0xDC00)
        hint = f"write the pair {written}{low[0]} as one escape: `\\U{joined:08X}`"
    message = f"{written} is a UTF-16 surrogate, not a character"
    return EscapeProblem(message, hint)


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
    stack = unclosed_brackets(text)
    return stack[-1] if stack else None


def unclosed_brackets(text: str) -> list[int]:
    """Offsets of the brackets still open at the end of `text`, outermost first."""
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
    return stack


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

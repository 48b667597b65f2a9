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


def grouped(name: str, value: dict, *, comments: dict | None = None, width: int = 100,
            hoist: int = 2) -> str:  # fmt: skip
    """`name = value` (a JSON-like dict) laid out compactly, for a block under `# fmt: off`:
    plain entries of an object that share a comment are packed on lines together, that
    comment after each line (a list keeps its order: only neighbours are packed); an object
    that fits on a line is written on one when every comment inside it is `default`,
    `derived` or its own; a key whose value is None, with no comment but `default` or
    `derived`, is left out (whoever reads the value takes a missing optional field as None).
    An object of more than 40 characters that occurs `hoist` times or more, with the same
    comments inside, is written once before `name` as a constant and named where it stands
    (`BLOCK_DENOISER`, `STACK_LORA`, ...)."""
    comments = comments or {}
    constants, stands = _repeats(value, comments, hoist)
    # where a constant stands, the comments are those of its own definition
    shown = {k: v for k, v in comments.items() if not any(k[: len(c)] == c for c in stands)}
    out = []
    for constant, item, inner, inner_stands in reversed(constants):  # parts before wholes
        text = _grouped(item, (), inner, 0, len(constant) + 3, width, inner_stands)
        line = f"{constant} = {text}"
        out.append(line if "\n" in text else _with_comment(line, inline_note(inner, ()), 0, width))
    out.append(
        f"{identifier(name)} = {_grouped(value, (), shown, 0, len(name) + 3, width, stands)}"
    )
    return "\n".join(out)


def inline_note(comments: dict, path: tuple) -> str | None:
    """The comment for the object at `path` written on one line: its own, and what the rest
    inside it is (`line 5, others derived`; `line 9, others default or derived`)."""
    own = comments.get(path)
    others = {"derived" if note.startswith("derived") else note
              for note in _inside(comments, path).values() if note != own}  # fmt: skip
    if not others:
        return own
    if len(others) > 1 and others <= {"default", "derived"}:
        rest = "default or derived"
    elif len(others) == 1:
        rest = others.pop()
    else:
        return _MIXED  # values of several lines: the object is written one entry per line
    return f"{own}, others {rest}" if own else rest


_MIXED = "\0mixed"  # (not a comment: no comment can say it, so no one line)


def _inside(comments: dict, path: tuple) -> dict:
    n = len(path)
    return {k[n:]: v for k, v in comments.items() if k[:n] == path and len(k) > n}


def _repeats(value, comments: dict, hoist: int) -> tuple[list[tuple], dict[tuple, str]]:
    """The objects to hoist, wholes first, as (constant, object, its comments, where other
    constants stand inside it), and where each constant stands in `value`. An occurrence
    inside a hoisted whole counts once, not once per copy of the whole."""
    places: dict[str, list[tuple]] = {}

    def walk(v, at):
        if isinstance(v, dict) and len(literal(v)) > 40:
            key = literal(v) + repr(sorted(_inside(comments, at).items()))
            places.setdefault(key, []).append((v, at))
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, item in items:
            walk(item, (*at, k))

    walk(value, ())
    chosen: list[tuple] = []
    stands: dict[tuple, str] = {}
    copies: list[tuple] = []  # where a hoisted object stands, but for its first place
    for key in sorted(places, key=lambda k: -len(literal(places[k][0][0]))):
        live = [(v, at) for v, at in places[key]
                if not any(at[: len(c)] == c and at != c for c in copies)]  # fmt: skip
        if len(live) < hoist:
            continue
        item, first = live[0]
        block = str(item.get("name", "")) if first[-2:-1] == ("blocks",) else ""
        stem = f"block_{block}" if block else next(
            (str(x) for x in reversed(first) if isinstance(x, str)), "value")  # fmt: skip
        stem = re.sub(r"[^A-Za-z0-9_]", "_", stem).upper() or "VALUE"
        names = {c for c, *_ in chosen}
        constant, count = stem, 1
        while constant in names or keyword.iskeyword(constant) or not _IDENTIFIER.match(constant):
            count += 1
            constant = f"{stem}_{count}"
        own = {(): comments[first]} if first in comments else {}
        chosen.append((constant, item, {**own, **_inside(comments, first)}, first))
        for _, at in live:
            stands[at] = constant
        copies += [at for _, at in live[1:]]
    # inside each constant's definition: the constants standing within its first occurrence
    out = []
    for constant, item, inner, first in chosen:
        n = len(first)
        within = {at[n:]: c for at, c in stands.items() if at[:n] == first and at != first}
        own = {k: v for k, v in inner.items() if not any(k[: len(w)] == w for w in within)}
        out.append((constant, item, own, within))
    return out, stands


def _omitted(item, note) -> bool:
    """An optional field left out: None, and nothing but `default` or `derived` to say."""
    return item is None and note in (None, "default", "derived")


def _inline(value, path, comments, stands) -> str:
    """`value` on one line: constants by name, optional fields left out."""
    if path in stands:
        return stands[path]
    if isinstance(value, dict):
        kept = [(k, v) for k, v in value.items() if not _omitted(v, comments.get((*path, k)))]
        inner = [f"{literal(k)}: {_inline(v, (*path, k), comments, stands)}" for k, v in kept]
        return "{" + ", ".join(inner) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v, (*path, i), comments, stands)
                               for i, v in enumerate(value)) + "]"  # fmt: skip
    return literal(value)


def _grouped(value, path, comments, indent, used, width, stands) -> str:
    if path in stands:
        return stands[path]
    if not isinstance(value, dict | list) or not value:
        return literal(value)
    one = _inline(value, path, comments, stands)
    note = inline_note(comments, path)
    tail = 1 + (len(f"  # {comment_text(note)}") if note else 0)  # its comma and comment
    if used + len(one) + tail <= width and note is not _MIXED:
        return one
    pad = " " * (indent + 4)
    is_dict = isinstance(value, dict)
    first = _with_comment("{" if is_dict else "[", comments.get(path), used, width)
    runs: list[tuple[str | None, list[str]] | str] = []  # packed runs, or whole lines
    by_note: dict[str | None, tuple] = {}
    for k, item in value.items() if is_dict else enumerate(value):
        here = (*path, k)
        note = None if here in stands else comments.get(here)
        if is_dict and k == "kind" and here not in comments:
            note = comments.get(path)  # a union member's tag: where the object was written
        if is_dict and _omitted(item, note):
            continue
        prefix = f"{literal(k)}: " if is_dict else ""
        text = _grouped(item, here, comments, indent + 4, indent + 4 + len(prefix), width,
                        stands)  # fmt: skip
        single = "\n" not in text
        if single and here not in stands and isinstance(item, dict | list) and item:
            whole = inline_note(comments, here)  # what the line must say of what it holds
        else:
            whole = note
        if single and whole == note and len(prefix + text) <= 60:
            if is_dict:  # derived values share a line, whatever they were derived from
                group = "derived" if note and note.startswith("derived") else note
                if group not in by_note:
                    by_note[group] = (group, [], set())
                    runs.append(by_note[group])
                by_note[group][1].append(prefix + text)
                by_note[group][2].add(note)
            elif runs and isinstance(runs[-1], tuple) and runs[-1][0] == note:
                runs[-1][1].append(text)
            else:
                runs.append((note, [text], {note}))
            continue
        line = f"{pad}{prefix}{text},"
        runs.append(_with_comment(line, whole, 0, width) if single else line)
    lines = [first]
    for run in runs:
        if isinstance(run, str):
            lines.append(run)
            continue
        note, entries, notes = run
        note = notes.pop() if len(notes) == 1 else note  # one note said in full
        room = width - len(pad) - (len(f"  # {comment_text(note)}") if note else 0)
        current = ""
        for entry in entries:
            if current and len(current) + len(entry) + 1 > room:
                lines.append(_with_comment(pad + current.rstrip(), note, 0, width))
                current = ""
            current += entry + ", "
        lines.append(_with_comment(pad + current.rstrip(), note, 0, width))
    return "\n".join([*lines, " " * indent + ("}" if is_dict else "]")])

"""Syntax errors in words: what was found, what was expected, and a hint for common slips."""

from __future__ import annotations

import re
import unicodedata

from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.source import Source, Span
from stackwise_dsl.syntax.lexing import unclosed_bracket

# Terminal names → words. Literal terminals not listed here are shown quoted.
_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "$END": "the end of the file",
}
_LITERALS = {
    "LET": "let",
    "INCLUDE": "include",
    "EXTENDS": "extends",
    "BLOCK": "block",
    "STACK": "stack",
    "GROW": "grow",
    "STAGE": "stage",
    "LBRACE": "{",
    "RBRACE": "}",
    "LPAR": "(",
    "RPAR": ")",
    "LSQB": "[",
    "RSQB": "]",
    "MINUS": "-",
    "EQUAL": "=",
    "COMMA": ",",
    "PLUS": "+",
    "STAR": "*",
    "SLASH": "/",
}
_ITEM_STARTS = {"LET", "INCLUDE", "EXTENDS", "BLOCK", "STACK", "GROW"}
_VALUE_STARTS = {"NUMBER", "STRING", "NAME", "LSQB", "LPAR", "MINUS"}
_CONTINUATIONS = {"+", "-", "*", "/", "//", "x", "->", ".."}
_CLOSERS = ("RBRACE", "RPAR", "RSQB")

_CHAR_HINTS = {
    ":": 'set a field with "=", as in `d_model = 256`',
    ";": 'items need no ";": put each on its own line, or separate them with ","',
    "'": 'strings use double quotes: "text"',
    '"': 'this string is not closed: end it with " on the same line',
    "{": 'only sections open a "{": `model { ... }`, `block NAME { ... }`',
}


def at_end(e: UnexpectedInput) -> bool:
    """Whether the parser met the end of the file (what `_unexpected_end` describes)."""
    return not isinstance(e, UnexpectedCharacters) and not (
        isinstance(e, UnexpectedToken) and e.token.type != "$END"
    )


def describe_syntax_error(e: UnexpectedInput, source: Source, text: str) -> diag.Diagnostic:
    """One SW001/SW002 diagnostic for a lark error, worded for people."""
    if isinstance(e, UnexpectedCharacters):
        return _unexpected_character(e, source, text)
    if not at_end(e):
        return _unexpected_token(e, source, text)
    return _unexpected_end(e, source, text)


def _unexpected_character(e: UnexpectedCharacters, source: Source, text: str) -> diag.Diagnostic:
    ch = text[e.pos_in_stream]
    span = source.span(e.pos_in_stream, e.pos_in_stream + 1)
    hint = _CHAR_HINTS.get(ch)
    if ch.isspace() or unicodedata.category(ch) in ("Cf", "Zs"):
        what = f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed character')})"
        hint = "replace it with an ordinary space"
    elif ch == '"':
        what = "an unterminated string"
    else:
        what = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
    message = f"unexpected character {what}" if ch != '"' else "unterminated string"
    expected = expected_words(e.allowed or ())
    if expected and ch != '"':
        message += f"; expected {expected}"
    return diag.error("SW002", message, span, hint=hint)


def _unexpected_token(e: UnexpectedToken, source: Source, text: str) -> diag.Diagnostic:
    tok = e.token
    number = _number_before(tok, source, text)
    if number is not None:
        return number
    misspelt = _misspelt_every(tok, text)
    if misspelt is not None:
        start, word = misspelt
        message = f"`{word}` is not a keyword; a cadence is written `NAME every N steps`"
        return diag.error("SW001", message, source.span(start, start + len(word)),
                          hint="did you mean `every`?", replacement="every")  # fmt: skip
    span = source.span(tok.start_pos, tok.end_pos)
    expected = expected_words(e.expected)
    message = f"unexpected {_token_words(tok)}"
    if expected:
        message += f"; expected {expected}"
    notes = ()
    opener = unclosed_bracket(text[: tok.start_pos])
    if opener is not None and set(_CLOSERS) & set(e.expected):
        line = text.count("\n", 0, opener) + 1
        if line < tok.line:
            notes = (
                diag.Note(
                    message=f'the "{text[opener]}" opened here is not closed',
                    span=_at(source, opener),
                ),
            )
    return diag.error("SW001", message, span, hint=_token_hint(e), notes=notes)


def number_run(source: Source, start: int, end: int) -> diag.Diagnostic | None:
    """The problem of a number (at start..end of `source`) written against a name: `2K` reads
    as the number 2 and then an item `K`, almost always a suffix in the wrong case; `2_000`
    and `0x10` are other languages' numbers. None where no name follows, or for `3x b` and
    `3x(b)` (repetition)."""
    text = source.text
    word = re.match(r"[A-Za-z_]\w*", text[end : end + 64])
    if word is None or (word.group() == "x" and not re.match(r"\w", text[end + 1 : end + 2])):
        return None
    number = text[start:end]
    written = number + word.group()
    span = source.span(start, end + word.end())
    other = _other_notation(written)
    if other is not None:
        said, fixed = other
        return diag.error("SW001", f"`{written}` is not a number here", span, hint=said,
                          replacement=fixed)  # fmt: skip
    message = f"`{written}` is not a number: its suffix can be `k`, `M` or `B`"
    suffix = {"K": "k", "m": "M", "b": "B"}.get(word.group())
    if suffix is not None and not re.search(r"[kMB]$", number):
        fixed = number + suffix
        return diag.error("SW001", message, span, hint=f"did you mean `{fixed}`?",
                          replacement=fixed)  # fmt: skip
    return diag.error("SW001", message, span, hint="put a space between a number and a name")


def _other_notation(written: str) -> tuple[str, str] | None:
    """(a hint, the number as a spec writes it) for `2_000`, `0x10`, `0b101` or `0o17`."""
    if re.fullmatch(r"\d+(_\d+)+", written):
        fixed = written.replace("_", "")
        n = int(fixed)
        short = next((f"{n // k}{s}" for k, s in ((10**9, "B"), (10**6, "M"), (10**3, "k"))
                      if n >= k and n % k == 0), None)  # fmt: skip
        return f"write numbers without `_`: `{fixed}`" + (f" or `{short}`" if short else ""), fixed
    if re.fullmatch(r"0([xX][0-9a-fA-F]+|[bB][01]+|[oO][0-7]+)", written):
        fixed = str(int(written, 0))
        return f"numbers are decimal: `{fixed}`", fixed
    return None


def _number_before(tok, source: Source, text: str) -> diag.Diagnostic | None:
    """A name token that a number runs into (`warmup = 2_000` in a call, where the grammar
    wants `)` after the 2): the number's problem."""
    if tok.type != "NAME":
        return None
    found = re.search(r"(?<![\w.])\d+(\.\d+)?([eE][-+]?\d+)?[kMB]?$", text[: tok.start_pos])
    if found is None:
        return None
    # the number and the name stand in `source` as in `text` (recovery blanks other items)
    return number_run(source, found.start(), tok.start_pos)


def _misspelt_every(tok, text: str) -> tuple[int, str] | None:
    """`log evry 5 steps`: the word between a name and the number that should be `every`."""
    from stackwise_dsl.elaborate.suggest import closest

    if tok.type != "NUMBER":
        return None
    before = re.search(r"[A-Za-z_]\w*[ \t]+([A-Za-z_]\w*)[ \t]+$", text[: tok.start_pos])
    if before is None or before.group(1) == "every" or closest(before.group(1), ["every"]) is None:
        return None
    return before.start(1), before.group(1)


def _unexpected_end(e: UnexpectedInput, source: Source, text: str) -> diag.Diagnostic:
    end = len(text.rstrip())
    span = source.span(end, end)
    expected = expected_words(getattr(e, "expected", ()) or ())
    message = "unexpected end of file" + (f"; expected {expected}" if expected else "")
    opener = unclosed_bracket(text)
    notes = ()
    if opener is not None:
        notes = (
            diag.Note(message=f'this "{text[opener]}" is never closed', span=_at(source, opener)),
        )
    return diag.error("SW001", message, span, notes=notes)


def _at(source: Source, offset: int) -> Span:
    return source.span(offset, offset + 1)


def _token_words(tok) -> str:
    if tok.type == "NAME":
        return f'name "{tok}"'
    if tok.type == "NUMBER":
        return f"number {tok}"
    if tok.type == "STRING":
        return f"string {tok}"
    return f'"{tok}"'


def _token_hint(e: UnexpectedToken) -> str | None:
    tok, expected = e.token, set(e.expected)
    if tok.type == "LBRACE" and "NAME" in expected and "NUMBER" in expected:
        return 'a section takes no "=": write `name { ... }`'
    if "RPAR" in expected and tok.type in ("NAME", "NUMBER", "STRING"):
        return "separate arguments with commas"
    if "RSQB" in expected and tok.type in ("NAME", "NUMBER", "STRING"):
        return "separate list items with commas"
    if tok.type in ("LET", "INCLUDE", "EXTENDS", "BLOCK", "STACK", "GROW") and "RBRACE" in expected:
        return f'"{tok}" can only start a top-level item: is a "}}" missing before it?'
    return None


def expected_words(names) -> str:
    """A set of terminal names as words: `"}" or a field`, `a value`, `"="`."""
    names = set(names)
    words: list[str] = []
    words += [f'"{_LITERALS[c]}"' for c in _CLOSERS if c in names]
    if names >= _ITEM_STARTS:
        words.append("a new item")
    elif "STAGE" in names and "NAME" in names:
        words.append("a field")
    if {"NUMBER", "STRING", "NAME"} <= names:
        words.append("a value")
        names -= _VALUE_STARTS
    rest = sorted(names - _ITEM_STARTS - {"STAGE", *_CLOSERS}, key=_order)
    if words and "NAME" in rest:
        rest.remove("NAME")
    quoted = [_word(n) for n in rest]
    plain = [w for w in quoted if w.strip('"') not in _CONTINUATIONS]
    words += plain if (plain or words) else quoted
    return _join(words)


def _word(name: str) -> str:
    if name in _WORDS:
        return _WORDS[name]
    return f'"{_LITERALS.get(name, _anonymous_literal(name))}"'


def _anonymous_literal(name: str) -> str:
    from stackwise_dsl.syntax.tables import terminal_literals

    return terminal_literals().get(name, name.lower())


def _order(name: str) -> tuple[int, str]:
    return (1 if name == "$END" else 0, name)


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]

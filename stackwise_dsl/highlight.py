"""Syntax highlighting of `.sw` specs with Pygments (`pygmentize -l sw spec.sw`; registered
as the `sw` lexer through the `pygments.lexers` entry point). The token classes follow the
grammar (grammars/sw.lark): keywords, the spec's top-level words, fields (`name =`, `name
every`), constructor calls (`name(`), numbers with their k/M/B suffixes, strings, comments.
editors/vscode holds a TextMate grammar with the same classes for editors."""

from __future__ import annotations

from typing import ClassVar

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
    Whitespace,
)

KEYWORDS = ("let", "include", "extends", "block", "stack", "grow", "stage", "every")
TOP_LEVEL = ("model", "objective", "fuse", "data", "optimizer", "run")
CONSTANTS = ("true", "false")
_NUMBER = r"\d+(\.\d+)?([eE][-+]?\d+)?[kMB]?"  # grammars/sw.lark's NUMBER


class SwLexer(RegexLexer):
    """Lexer for stackwise-dsl specs."""

    name = "stackwise-dsl"
    aliases: ClassVar[list[str]] = ["sw", "stackwise"]
    filenames: ClassVar[list[str]] = ["*.sw"]
    mimetypes: ClassVar[list[str]] = ["text/x-stackwise-dsl"]

    tokens: ClassVar[dict] = {
        "root": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\r\n]*", Comment.Single),
            (r'"([^"\\\r\n]|\\.)*"', String.Double),
            (_NUMBER + r"(?=x(?:[\s(]|$))", Number),  # `3x b`, `3x(b)`: a count, then `x`
            (_NUMBER + r"(?![A-Za-z0-9_]|\.\d)", Number),
            (r"\d[\w.]*", Error),  # `2K`: a number run into a name (sw check refuses it)
            # a keyword where a name is defined: `let x = 3` (sw check refuses it, SW001)
            (
                r"(block|stack|let)(\s+)(" + "|".join(("x", *KEYWORDS)) + r")\b",
                bygroups(Keyword.Declaration, Whitespace, Error),
            ),
            # `block NAME`, `stack NAME`, `let NAME`: the name being defined
            (
                r"(block|stack|let)(\s+)([A-Za-z_]\w*)",
                bygroups(Keyword.Declaration, Whitespace, Name.Class),
            ),
            # `grow DIRECTION STACKS {`: the direction, then the stacks it grows
            (r"(grow)(\s+)([A-Za-z_]\w*)", bygroups(Keyword, Whitespace, Name.Builtin), "grow"),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (r"x(?=[\s(]|$)", Operator.Word),  # repetition: `2 x b`, `2x b`, `2 x(b)`
            (words(TOP_LEVEL, prefix=r"^", suffix=r"\b"), Keyword.Namespace),
            (r"[A-Za-z_]\w*(?=\s*\()", Name.Function),  # a constructor: `mha(`, `lora(`
            (r"[A-Za-z_]\w*(?=\s*=(?!=))", Name.Attribute),  # a field: `steps =`
            (r"[A-Za-z_]\w*(?=\s*\{)", Name.Namespace),  # a section: `trunk {`
            (r"[A-Za-z_]\w*", Name),
            (r"//|->|\.\.|[-+*/=]", Operator),
            (r"[{}()\[\],]", Punctuation),
            (r".", Text),
        ],
        "grow": [
            (r"\{", Punctuation, "#pop"),
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\r\n]*", Comment.Single),
            (_NUMBER + r"(?=x(?:[\s(]|$))", Number),
            (_NUMBER + r"(?![A-Za-z0-9_]|\.\d)", Number),
            (r"\d[\w.]*", Error),
            (r"x(?=[\s(]|$)", Operator.Word),
            (r"[A-Za-z_]\w*", Name),
            (r"[-+*/()]", Operator),
            (r".", Text),
        ],
    }

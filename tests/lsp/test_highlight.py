"""Highlighting: the Pygments lexer (`pygmentize -l sw`) and the TextMate grammar for editors
(editors/vscode) give every character of every shipped spec the same class, and the classes
are the right ones for keywords, names, numbers, strings and comments."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
)

from tests.conftest import ROOT, SPECS

GRAMMAR = json.loads(
    (ROOT / "editors" / "vscode" / "syntaxes" / "sw.tmLanguage.json").read_text(encoding="utf-8")
)

# the class of a character, by Pygments token type and by TextMate scope
PYGMENTS = [
    (Comment, "comment"), (String, "string"), (Number, "number"), (Error, "error"),
    (Keyword.Constant, "constant"), (Keyword.Namespace, "top-level"), (Keyword, "keyword"),
    (Operator.Word, "repeat"), (Operator, "operator"), (Punctuation, "punctuation"),
    (Name.Function, "constructor"), (Name.Attribute, "field"), (Name.Namespace, "section"),
    (Name.Class, "defined"), (Name.Builtin, "direction"), (Name, "name"),
]  # fmt: skip
TEXTMATE = {
    "comment.line.number-sign.sw": "comment", "string.quoted.double.sw": "string",
    "constant.numeric.sw": "number", "constant.language.sw": "constant",
    "keyword.other.section.sw": "top-level", "storage.type.sw": "keyword",
    "keyword.control.sw": "keyword", "keyword.operator.repeat.sw": "repeat",
    "keyword.operator.sw": "operator", "punctuation.sw": "punctuation",
    "entity.name.function.sw": "constructor", "variable.other.property.sw": "field",
    "entity.name.section.sw": "section", "entity.name.type.sw": "defined",
    "support.constant.direction.sw": "direction", "variable.other.sw": "name",
    "invalid.illegal.number.sw": "error", "invalid.illegal.name.sw": "error",
}  # fmt: skip


def pygments_classes(text: str) -> list[str | None]:
    out: list[str | None] = []
    for _, kind, value in get_lexer_by_name("sw").get_tokens_unprocessed(text):
        name = next((c for t, c in PYGMENTS if kind in t), None)
        out += [name] * len(value)
    return out


def _rules(patterns: list[dict]) -> list[dict]:
    out = []
    for rule in patterns:
        if "include" in rule:
            out += _rules([GRAMMAR["repository"][rule["include"][1:]]])
        elif "match" not in rule and "begin" not in rule:  # a group of patterns
            out += _rules(rule["patterns"])
        else:
            out.append(rule)
    return out


def textmate_classes(text: str) -> list[str | None]:
    """A small TextMate engine, enough for this grammar: line by line, the rule matching
    earliest wins (the first listed on a tie); `begin`/`end` rules hold their own patterns
    until `end` matches, across lines."""
    out: list[str | None] = []
    top = _rules(GRAMMAR["patterns"])
    inside: dict | None = None  # the begin/end rule we are in
    for line in text.split("\n"):
        classes: list[str | None] = [None] * len(line)
        pos = 0
        while pos < len(line):
            rules = top if inside is None else _rules(inside["patterns"])
            candidates = []
            if inside is not None:
                end = re.compile(inside["end"]).search(line, pos)
                if end:
                    candidates.append((end.start(), -1, "end", end))
            for i, rule in enumerate(rules):
                found = re.compile(rule.get("match") or rule["begin"]).search(line, pos)
                if found:
                    candidates.append((found.start(), i, rule, found))
            if not candidates:
                break
            start, _, rule, found = min(candidates, key=lambda c: (c[0], c[1]))
            if rule == "end":
                inside, pos = None, max(found.end(), pos)
                continue
            scopes = rule.get("captures") or rule.get("beginCaptures") or {}
            if "name" in rule:
                classes[found.start() : found.end()] = [TEXTMATE[rule["name"]]] * len(found[0])
            for group, scope in scopes.items():
                g = int(group)
                if found.group(g) is not None:
                    width = found.end(g) - found.start(g)
                    classes[found.start(g) : found.end(g)] = [TEXTMATE[scope["name"]]] * width
            if "begin" in rule:
                inside = rule
            pos = max(found.end(), start + 1) if found.end() == start else found.end()
        out += [*classes, None]  # the newline
    return out[:-1]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_both_highlighters_agree_on_every_character(spec):
    text = spec.read_text(encoding="utf-8")
    ours, theirs = pygments_classes(text), textmate_classes(text)
    assert len(ours) == len(theirs) == len(text)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if text[i].isspace():
            continue
        line = text.count("\n", 0, i) + 1
        assert a == b, f"{spec.name}:{line}: {text[i]!r} is {a} to Pygments, {b} to TextMate"
        assert a is not None, f"{spec.name}:{line}: {text[i]!r} has no class"


def _classes_of(text: str) -> dict[str, str]:
    """word -> class (each word's class where it first appears)."""
    classes = textmate_classes(text)
    out: dict[str, str] = {}
    number = r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[kMB]?"
    for m in re.finditer(rf'#[^\n]*|"[^"\n]*"|{number}|\w+|//|->|[-+*/=x{{}}(),]', text):
        out.setdefault(m.group(), classes[m.start()])
    return out


def test_the_classes_are_the_right_ones():
    text = (ROOT / "specs" / "diffusion.sw").read_text(encoding="utf-8")
    found = _classes_of(text)
    assert found["let"] == found["block"] == found["grow"] == "keyword"
    assert _classes_of("grow append s { stage 2 { steps = 5 } }\n")["stage"] == "keyword"
    assert found["d"] == found["denoiser"] == found["s"] == "defined"  # let, block, stack
    assert found["model"] == found["objective"] == "top-level"
    assert found["d_model"] == found["attention"] == found["steps"] == "field"
    assert found["gqa"] == found["swiglu"] == found["masked_diffusion"] == "constructor"
    assert found["128"] == found["0.9"] == found["1e-4"] == "number"
    assert _classes_of("let n = 2k\n")["2k"] == "number"

    assert found["prepend"] == "direction" and found["x"] == "repeat"
    assert found["->"] == "operator" and found["{"] == "punctuation"
    assert found["rmsnorm"] == "name"
    comment = next(w for w in found if w.startswith("#"))
    assert found[comment] == "comment"
    strings = (ROOT / "specs" / "grow_pretrained.sw").read_text(encoding="utf-8")
    assert _classes_of(strings)['"models/tiny-llama"'] == "string"
    assert _classes_of("run { tensorboard = true }\n")["true"] == "constant"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stack s = 3x b\n", ["keyword", "defined", "number", "repeat", "name"]),
        (
            "grow append 2x s { steps = 1k }\n",
            ["keyword", "direction", "number", "repeat", "name", "field", "number"],
        ),
        ("let n = 2K\n", ["keyword", "defined", "error"]),  # sw check: SW001
        ("let n = 1.5e3Q\n", ["keyword", "defined", "error"]),
        ("let n = 2 x b\n", ["keyword", "defined", "number", "repeat", "name"]),
        ("stack s = 3x(b)\n", ["keyword", "defined", "number", "repeat", "name"]),
        ("stack s = 2 x(b)\n", ["keyword", "defined", "number", "repeat", "name"]),
        ("stack s = 3x\n  b\n", ["keyword", "defined", "number", "repeat", "name"]),
        ("let x = 3\n", ["keyword", "error", "number"]),  # `x` is a keyword (SW001)
        ("stack s = 2kx b\n", ["keyword", "defined", "number", "repeat", "name"]),
        ("stack max = 2 x b\n", ["keyword", "defined", "number", "repeat", "name"]),
    ],
)
def test_numbers_against_names(text, expected):
    """What the tester found plain: a count written against `x`, a suffix in the wrong case.
    Both highlighters give each word the same class, and the one the parser gives it."""
    ours, theirs = pygments_classes(text), textmate_classes(text)
    assert ours == theirs
    runs = [c for i, c in enumerate(ours) if not text[i].isspace() and (i == 0 or c != ours[i - 1])]
    assert [c for c in runs if c not in ("operator", "punctuation")] == expected


def test_pygmentize_knows_the_language():
    """The lexer is registered as the `sw` entry point."""
    pygmentize = Path(sys.executable).with_name("pygmentize")
    if not pygmentize.exists():
        pytest.skip("pygmentize is not installed beside this Python")
    done = subprocess.run([str(pygmentize), "-l", "sw", "-f", "html",
                           str(ROOT / "specs" / "diffusion.sw")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '<span class="k">grow</span>' in done.stdout
    assert '<span class="nf">masked_diffusion</span>' in done.stdout
    by_file = subprocess.run([str(pygmentize), "-N", str(ROOT / "specs" / "tiny.sw")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert by_file.stdout.strip() == "sw"

"""The LALR tables for grammars/sw.lark, built once and kept as JSON among the memos.

Building the tables takes ~50 ms, more than the rest of `sw check`; loading them from JSON
takes ~3 ms. The memo file is named by a hash of the grammar, lark's version and this file's
format, written atomically, and never trusted blindly: anything unreadable is rebuilt. JSON,
not pickle, so a memo file can never run code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import lark

from stackwise_dsl.machine.resources import grammar_path
from stackwise_dsl.machine.userdirs import memo_dir

_FORMAT = 1
_OPTIONS = {
    "parser": "lalr",
    "lexer": "contextual",
    "maybe_placeholders": True,
    "start": ["start", "expr"],
}


@functools.cache
def grammar_text() -> str:
    return grammar_path().read_text(encoding="utf-8")


@functools.cache
def tables() -> dict:
    """The serialized parser (`{"data": ..., "memo": ...}`), from its memo or freshly built."""
    path = _memo_path()
    if path is not None:
        cached = _read(path)
        if cached is not None:
            return cached
    built = _build()
    if path is not None:
        _write(path, built)
    return built


def build_parser(transformer: lark.Transformer | None = None) -> lark.Lark:
    """A parser over the remembered tables; `transformer` runs inline as the parse proceeds."""
    data = tables()
    try:
        return lark.Lark._load_from_dict(data["data"], data["memo"], transformer=transformer)
    except Exception:  # an incompatible lark: fall back to the slow, certain path
        return lark.Lark(grammar_text(), transformer=transformer, **_OPTIONS)


@functools.cache
def terminal_literals() -> dict[str, str]:
    """Terminal name → its literal text, for the terminals defined by a plain string."""
    parser = build_parser()
    return {
        term.name: str(term.pattern.value)
        for term in parser.terminals
        if type(term.pattern).__name__ == "PatternStr"
    }


def _build() -> dict:
    parser = lark.Lark(grammar_text(), **_OPTIONS)
    data, memo = parser.memo_serialize([lark.lexer.TerminalDef, lark.grammar.Rule])
    return {"data": data, "memo": memo}


def _memo_path() -> Path | None:
    base = memo_dir()
    if base is None:
        return None
    key = f"{grammar_text()}\0{lark.__version__}\0{_FORMAT}\0{sorted(_OPTIONS.items())}".encode()
    digest = hashlib.sha256(key).hexdigest()[:20]
    return base / f"sw-lalr-{digest}.json"


def _read(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_hook=_decode)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and {"data", "memo"} <= data.keys() else None


def _write(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sw-lalr-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_encode(data), f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs speed


def _encode(obj):
    """JSON has only string keys and no tuples; tag both so `_decode` restores them."""
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"__int_keys__": [[k, _encode(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj: dict):
    if "__int_keys__" in obj:
        return dict(obj["__int_keys__"])
    if "__tuple__" in obj:
        return tuple(obj["__tuple__"])
    return obj

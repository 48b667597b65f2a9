"""Corpora: the documents a run trains on, as a list of strings, always in the same order.

- `stdlib`: the Python standard library's own source (present wherever Python is), minus its
  tests and GUI demos: ~560 files, ~10 MB.
- `synthetic`: generated problems with known answers (copy, reverse, sort, arithmetic),
  seeded.
- `text`: files or globs; `jsonl`: one JSON object per line, text under a field.
"""

from __future__ import annotations

import glob
import json
import os
import random
import sysconfig

from stackwise_dsl.ir.enums import Task
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import pick, source_key


class DataError(Exception):
    """Data that cannot be used, with a message that says which file, line or byte."""


_STDLIB_SKIP = {
    "test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3",
    "tkinter", "turtledemo", "ensurepip", "pydoc_data",
}  # fmt: skip
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+*"


def documents(source: p.Stdlib | p.Synthetic | p.TextFiles | p.Jsonl, seed: int) -> list[str]:
    """Every document of a source, in a fixed order."""
    docs = pick(SOURCES, source_key(source), "data source")(source, seed)
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"the data source holds no text ({_describe(source)})")
    return docs


def _stdlib(source: p.Stdlib, seed: int) -> list[str]:
    return [read_document(path) for path in stdlib_files()]


def _synthetic(source: p.Synthetic, seed: int) -> list[str]:
    return synthetic(source.task, source.symbols, source.samples, seed)


def _text(source: p.TextFiles, seed: int) -> list[str]:
    return [read_document(path) for path in expand(source.files)]


def _jsonl_files(source: p.Jsonl, seed: int) -> list[str]:
    return [doc for path in expand(source.files) for doc in _jsonl(path, source.field)]


def stdlib_files() -> list[str]:
    """The standard library's .py files, sorted, without tests and GUI demos."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
        found += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".py")]
    return found


def expand(patterns: tuple[str, ...]) -> list[str]:
    """Files named by paths or globs, each pattern's matches sorted; none may come up empty."""
    out: list[str] = []
    for pattern in patterns:
        matches = (
            sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        )
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            what = "no file matches" if glob.has_magic(pattern) else "there is no file"
            raise DataError(f"{what} {pattern}")
        out += [m for m in matches if m not in out]
    return out


def read_document(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}"
        ) from None


def _jsonl(path: str, field: str) -> list[str]:
    out = []
    for number, line in enumerate(read_document(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise DataError(f'{path}:{number}: no text field "{field}"')
        out.append(record[field])
    return out


def synthetic(task: Task, symbols: int, samples: int, seed: int) -> list[str]:
    """`samples` problems written as text, `question=answer`, drawn with `seed`."""
    rng = random.Random(f"synthetic/{task.value}/{symbols}/{seed}")
    alphabet = _ALPHABET[: max(2, min(symbols, len(_ALPHABET) - 2))]
    docs = []
    for _ in range(samples):
        if task is Task.ARITHMETIC:
            a, b = rng.randrange(10 ** rng.randint(1, 3)), rng.randrange(10 ** rng.randint(1, 3))
            docs.append(f"{a}+{b}={a + b}")
            continue
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 12)))
        answer = {Task.COPY: word, Task.REVERSE: word[::-1], Task.SORT: "".join(sorted(word))}[task]
        docs.append(f"{word}={answer}")
    return docs


def _describe(source) -> str:
    if isinstance(source, p.TextFiles | p.Jsonl):
        return ", ".join(source.files)
    return type(source).__name__.lower()


SOURCES = {
    "stdlib": _stdlib,
    "synthetic": _synthetic,
    "textfiles": _text,
    "jsonl": _jsonl_files,
}

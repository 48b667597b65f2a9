"""What the run needs from this machine: the data files it reads, and the device it asks for.

The answers depend on the machine `sw check` runs on; `facts.host` holds what is there
(host.py looks, resolving each path as the run does). A path the host has no fact about is
not judged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.elaborate.suggest import closest
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Device
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.machine.host import DataFile, DataNode, FileKind, Record, data_paths


def check_data_files(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Each file the run reads is a readable regular file, and each glob matches one: one
    diagnostic per field, the other paths as notes. A path that is not on this machine is a
    warning (SW604: the data may live where the run will run, and `sw run` refuses to start
    without it); one that is here but cannot be read is an error (SW601)."""
    known = {f.written: f for f in facts.host.data or ()}
    problems: dict[tuple, list] = {}  # (node, field, missing) -> [(node, fact)]
    for node, field, written in data_paths(facts.spec):
        fact = known.get(written)
        if "\0" in written:  # no file can have that name: check_path_characters says so
            continue
        if fact is not None and fact.kind is not FileKind.FILE:
            key = (id(node), field, fact.kind is FileKind.MISSING)
            problems.setdefault(key, []).append((node, fact))
    for (_, field, missing), found in problems.items():
        node, first = found[0]
        message, hint = _unusable(first, node, facts.spec)
        also = tuple(diag.Note(message="also: " + _unusable(f, node, facts.spec)[0])
                     for _, f in found[1:])  # fmt: skip
        notes = also + _relative_to(node, field, [f.written for _, f in found])
        make, code = (diag.warning, "SW604") if missing else (diag.error, "SW601")
        yield make(code, message, n.at(node, field), hint=hint, notes=notes)


def _unusable(fact: DataFile, node: DataNode, spec: n.Spec) -> tuple[str, str]:
    """What is wrong with a path, and what to do about it."""
    path, kind = fact.written, fact.kind
    if kind is FileKind.MISSING:
        what = "no file matches" if fact.glob else "there is no file"
        where = (
            "data.tokenizer.path" if isinstance(node, n.TokenizerFile)
            else "data.validation_data.files" if node is spec.data.validation_data
            else "data.source.files"
        )  # fmt: skip
        return f"{what} {path}", f"fix the path, or give it with `--set {where}=PATH`"
    if kind is FileKind.DIRECTORY:
        if isinstance(node, n.TokenizerFile):
            return f"{path} is a directory", "name the tokenizer.json inside it"
        files = "*.jsonl" if isinstance(node, n.Jsonl) else "*.txt"
        return (
            f"{path} is a directory, not a file",
            f'name the files in it with a glob: "{os.path.join(path, files)}"',
        )
    if kind is FileKind.UNREADABLE:
        return f"{path} cannot be read (permission denied)", "make it readable to this user"
    return (
        f"{path} is {kind.value}, not a regular file",
        "the run reads regular files only; copy the data into one",
    )


def _relative_to(node: DataNode, field: str, paths: list[str]) -> tuple[diag.Note, ...]:
    """Where relative paths start from: the spec that writes them, or for `--set` the working
    directory (as the run resolves them)."""
    if all(os.path.isabs(os.path.expanduser(p)) for p in paths):
        return ()
    span = n.at(node, field)
    source = span.source if span is not None else "<unknown>"
    where = (
        "the working directory (a path given on the command line)"
        if source.startswith("<")
        else f"the directory of {os.path.basename(source)}"
    )
    return (diag.Note(message=f"relative paths start from {where}"),)


def check_jsonl_field(facts: Facts) -> Iterator[diag.Diagnostic]:
    """The first records of a jsonl source (or validation data) are JSON objects with text
    under its `field`."""
    for source in (facts.spec.data.source, facts.spec.data.validation_data):
        if isinstance(source, n.Jsonl):
            yield from _jsonl_field(facts, source)


def _jsonl_field(facts: Facts, source: n.Jsonl) -> Iterator[diag.Diagnostic]:
    known = {f.written: f for f in facts.host.data or ()}
    found = []
    for written in source.files:
        fact = known.get(written)
        bad = _first_without(fact.records, source.field) if fact is not None else None
        if bad is not None:
            found.append((fact, bad))
    if not found:
        return
    messages = [_without_field(fact, bad, source.field) for fact, bad in found]
    yield diag.error(
        "SW602",
        messages[0],
        n.at(source, "field"),
        hint=_field_hint(source.field, found[0][1].text_fields),
        notes=tuple(diag.Note(message=f"also: {m}") for m in messages[1:]),
    )


def _without_field(fact: DataFile, bad: Record, field: str) -> str:
    where = f"line {bad.line} of {fact.first}"
    if bad.text_fields is None:
        return f"{where} is not a JSON object"
    return f'{where} has no text under "{field}"'


def _first_without(records: tuple[Record, ...], field: str) -> Record | None:
    return next((r for r in records if r.text_fields is None or field not in r.text_fields), None)


def _field_hint(field: str, text_fields: tuple[str, ...] | None) -> str:
    if text_fields is None:
        return "write one JSON object per line"
    if not text_fields:
        return "the record holds no text at all: every record needs a string under `field`"
    best = closest(field, text_fields) or text_fields[0]
    shown = ", ".join(f'"{f}"' for f in text_fields[:6]) + (", ..." if len(text_fields) > 6 else "")
    return f'its text is under {shown}: set `field = "{best}"`'


def check_tensorboard(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`tensorboard = true` needs the tensorboard package on the machine that runs the spec."""
    run = facts.spec.run
    if run.tensorboard and not facts.host.tensorboard:
        yield diag.warning(
            "SW606",
            "the run asks for TensorBoard event files, but the tensorboard package is not "
            "installed here: `sw run` would refuse to start",
            n.at(run, "tensorboard"),
            hint="pip install 'stackwise-dsl[tensorboard]' (no TensorFlow needed), or remove "
            "`tensorboard = true` (metrics.jsonl is always written)",
        )


def check_batch_shared(facts: Facts) -> Iterator[diag.Diagnostic]:
    """Processes sharing a run (`--nproc`) take equal slices of every micro-batch."""
    data, size = facts.spec.data, facts.host.processes
    if size > 1 and data.batch % size:
        fits = [b for b in (data.batch - data.batch % size, data.batch + size - data.batch % size)
                if b > 0]  # fmt: skip
        yield diag.error(
            "SW607",
            f"`batch = {data.batch}` cannot be shared equally by {size} processes (each takes "
            "the same number of windows of every micro-batch)",
            n.at(data, "batch"),
            hint=f"make it a multiple of {size}, such as {' or '.join(map(str, fits))}, or "
            "run on fewer processes",
        )


def check_cuda_device(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`device = cuda` needs a CUDA GPU on the machine that runs the spec."""
    run = facts.spec.run
    if run.device is Device.CUDA and not facts.host.cuda:
        yield diag.warning(
            "SW603",
            "the run asks for device cuda, but this machine has no CUDA GPU: `sw run` would "
            "refuse to start",
            n.at(run, "device"),
            hint="run it on a GPU machine, or here with `sw run --device cpu`; "
            "`device = auto` takes a GPU where there is one",
        )


def check_tokenizer_file(facts: Facts) -> Iterator[diag.Diagnostic]:
    """A tokenizer file on this machine loads, as the run will load it."""
    tokenizer = facts.spec.data.tokenizer
    if not isinstance(tokenizer, n.TokenizerFile):
        return
    fact = {f.written: f for f in facts.host.data or ()}.get(tokenizer.path)
    if fact is None or fact.tokenizer is None:
        return
    if fact.tokenizer.problem is None and fact.tokenizer.ids > 0:
        return
    said = fact.tokenizer.problem
    yield diag.error(
        "SW608",
        f"{tokenizer.path} is not a tokenizer file the `tokenizers` library can load (it says: "
        f"{said})"
        if said
        else f"the tokenizer file {tokenizer.path} holds no tokens",
        n.at(tokenizer, "path"),
        hint="name a tokenizer.json written by the `tokenizers` library (or by transformers' "
        "save_pretrained)",
    )

"""The configuration block's comments: the spec line each plan value came from."""

from __future__ import annotations

import ast

from typer.testing import CliRunner

from stackwise_dsl.cli import app
from stackwise_dsl.emit.literals import comment_text, pretty
from tests.conftest import ROOT

runner = CliRunner()


def _plan_block(script: str) -> list[str]:
    lines = script.splitlines()
    return lines[lines.index("# fmt: off") + 1 : lines.index("# fmt: on")]


def _compile(*args: str) -> str:
    result = runner.invoke(app, ["compile", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_values_name_the_spec_line_that_set_them(monkeypatch):
    monkeypatch.chdir(ROOT)
    block = "\n".join(_plan_block(_compile("specs/tiny.sw")))
    for line in [
        "BLOCK_B = {  # line 6",  # a block both stacks have, written once
        '        "heads": 2, "mode": "causal",  # line 6',
        '        "kv_heads": 2, "head_dim": 16,  # derived',  # mha: = heads, not a default
        '    "residual_gain": 1.0, "spectral_norm": False, "freeze_up_proj": False,  # default',
        '    "name": "tiny",  # derived: the spec\'s file name',
        '    "model": {  # line 4',
        '        "vocab": 257, "embed_dim": 32,  # derived',  # bytes and <eos>
        '        "d_model": 32, "context": 32,  # line 4',
        '        "head": "tied", "dropout": 0.0,  # default',
        '            "position": 0, "blocks": [BLOCK_B], "created_in": 1,  # derived',
        '            "name": "s",  # line 12',
        "        {  # line 12",
        '            "steps": 150,  # line 12',
        '            "lr": 0.003, "adapter_lr": 0.003, "embedding_lr": 0.003,  # line 15',
        '            "objective": {"kind": "Clm"},  # line 10',
        '        "source": {"kind": "Synthetic", "task": "copy", "symbols": 16, "samples": 512},  # line 14',
        '        "seq_len": 32, "specials": ["<eos>"],  # derived',
        '        "method": {"kind": "AdamW", "betas": [0.9, 0.999], "eps": 1e-08},  # line 15, others default',
        '        "warmup": 10,  # line 15',
        '        "seed": 0, "log_every": 25,  # line 16',
    ]:
        assert f"\n{line}\n" in f"\n{block}\n", line


def test_overrides_and_included_files_are_named(tmp_path, monkeypatch):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "model.sw").write_text("\n\nmodel { d_model = 32, context = 32 }\n")
    spec = (
        (ROOT / "specs" / "tiny.sw")
        .read_text()
        .replace("model { d_model = 32, context = 32 }", 'include "parts/model.sw"')
    )
    (tmp_path / "main.sw").write_text(spec)
    monkeypatch.chdir(tmp_path)
    block = _plan_block(_compile("main.sw", "--set", "optimizer.lr=0.01"))
    assert '        "d_model": 32, "context": 32,  # model.sw:3' in block
    assert (
        '            "lr": 0.01, "adapter_lr": 0.01, "embedding_lr": 0.01,  # --set optimizer.lr'
        in block
    )


def test_comments_are_one_line_of_printable_ascii():
    assert comment_text("a\nb\u2028c\x00d\re") == "a?b?c?d?e"
    assert comment_text("x" * 200, width=20) == "x" * 17 + "..."


def test_pretty_with_comments_expands_only_what_holds_one_and_keeps_the_value():
    value = {"a": {"b": 1, "c": [1, 2]}, "d": {"e": 2}, "f": [3, 4]}
    comments = {("a",): "line 1", ("a", "b"): "line 2", ("f",): "default", ("x",): "unused"}
    text = pretty(value, comments=comments)
    assert text == (
        "{\n"
        '    "a": {  # line 1\n'
        '        "b": 1,  # line 2\n'
        '        "c": [1, 2],\n'
        "    },\n"
        '    "d": {"e": 2},\n'
        '    "f": [3, 4],  # default\n'
        "}"
    )
    assert ast.literal_eval(text) == value
    long = {"k": "v" * 90}
    assert pretty(long, comments={("k",): "line 1"}) == '{\n    "k": "' + "v" * 90 + '",\n}'


def test_an_override_names_itself_not_the_line_it_replaced(monkeypatch):
    monkeypatch.chdir(ROOT)
    block = _plan_block(_compile("specs/tiny.sw", "--set", "optimizer.warmup=5"))
    assert '        "warmup": 5,  # --set optimizer.warmup' in block
    assert (
        '        "weight_decay": 0.0, "schedule": "cosine", "min_lr": 0.0, "clip": 1.0,  # default'
        in block
    )


def test_a_let_given_by_set_names_the_override_where_it_is_used(monkeypatch):
    monkeypatch.chdir(ROOT)
    block = _plan_block(_compile("specs/diffusion.sw", "--set", "d=192"))
    assert '        "d_model": 192,  # --set d' in block
    assert (
        '    "ffn": {"kind": "SwiGlu", "hidden": 768},  # line 13' in block
    )  # 4 * d, written there
    plain = _plan_block(_compile("specs/diffusion.sw"))
    assert '        "d_model": 128, "context": 64, "norm": "rmsnorm",  # line 9' in plain


def _paths(value, at=()):
    """Every path into a plan's JSON but the tags naming a union member's class (`"kind":
    "Rope"`; a stage's own `kind` is a lowercase word) and the items of lists of numbers or
    words, which are one value."""
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            if not (k == "kind" and v[:1].isupper()):
                yield from _paths(v, (*at, k))
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from _paths(v, (*at, i))


def test_the_lowering_gives_every_value_of_every_shipped_plan_an_origin():
    from stackwise_dsl.frontend import check_file
    from stackwise_dsl.lower import lower
    from stackwise_dsl.lower.origins import Kind
    from stackwise_dsl.lower.serialize import to_json

    for file in sorted((ROOT / "specs").glob("*.sw")):
        report = check_file(file)
        lowered = lower(report.spec, vocab=100, name=file.stem)  # vocab: no data is read
        paths = set(_paths(to_json(lowered.plan))) - {()}
        assert paths == set(lowered.origins), file.name
        kinds = {o.kind for o in lowered.origins.values()}
        assert {Kind.WRITTEN, Kind.DEFAULT, Kind.DERIVED} <= kinds, file.name


def test_grouped_packs_by_origin_names_repeats_and_reads_back_as_the_value():
    from stackwise_dsl.emit.literals import grouped

    block = {"name": "b", "heads": 4, "mode": "causal", "gain": 1.0, "lora": None}
    value = {"model": {"d": 32, "context": 16, "dropout": 0.0, "time": None},
             "blocks": [block, block, dict(block, name="c")], "seed": 0}  # fmt: skip
    comments = {("model",): "line 1", ("model", "d"): "line 1", ("model", "context"): "line 1",
                ("model", "dropout"): "default", ("model", "time"): "derived",
                ("seed",): "line 9"}  # fmt: skip
    for i in range(3):
        comments |= {("blocks", i): "line 2", ("blocks", i, "heads"): "line 2",
                     ("blocks", i, "mode"): "line 3", ("blocks", i, "gain"): "default"}  # fmt: skip
    text = grouped("PLAN", value, comments=comments, width=60)
    assert text == (
        "BLOCK_B = {  # line 2\n"
        '    "name": "b",\n'
        '    "heads": 4,  # line 2\n'
        '    "mode": "causal",  # line 3\n'
        '    "gain": 1.0,  # default\n'
        "}\n"
        "PLAN = {\n"
        '    "model": {  # line 1\n'
        '        "d": 32, "context": 16,  # line 1\n'
        '        "dropout": 0.0,  # default\n'
        "    },\n"
        '    "blocks": [\n'
        "        BLOCK_B, BLOCK_B,\n"
        "        {  # line 2\n"
        '            "name": "c",\n'
        '            "heads": 4,  # line 2\n'
        '            "mode": "causal",  # line 3\n'
        '            "gain": 1.0,  # default\n'
        "        },\n"
        "    ],\n"
        '    "seed": 0,  # line 9\n'
        "}"
    )  # (None without a comment of its own is left out: lora, time)
    scope: dict = {}
    exec(text, scope)
    plain = {k: v for k, v in block.items() if k != "lora"}
    assert scope["PLAN"] == {"model": {"d": 32, "context": 16, "dropout": 0.0}, "seed": 0,
                             "blocks": [plain, plain, dict(plain, name="c")]}  # fmt: skip
    assert max(len(line) for line in text.splitlines()) <= 60

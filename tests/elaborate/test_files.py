"""Includes, extends and their cycles, across real files."""

from __future__ import annotations

from stackwise_dsl.elaborate import elaborate_file
from tests.elaborate.helpers import BASE, codes


def _write(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_include_is_relative_to_the_including_file(tmp_path):
    _write(tmp_path, {
        "main.sw": 'include "parts/blocks.sw"\nmodel { d_model = 64, context = 32 }\n'
                   "objective = mlm\ngrow append 2 x s { steps = 10 }\n",
        "parts/blocks.sw": 'include "stacks.sw"\nblock b { attention = mha(heads = 4) }\n',
        "parts/stacks.sw": "stack s = 1 x b\n",
    })  # fmt: skip
    r = elaborate_file(tmp_path / "main.sw")
    assert codes(r) == []
    assert [b.name for b in r.spec.blocks] == ["b"] and [s.name for s in r.spec.stacks] == ["s"]


def test_diamond_include_is_read_once(tmp_path):
    _write(tmp_path, {
        "main.sw": 'include "a.sw"\ninclude "b.sw"\n' + BASE.replace("block b {", "block bb {").replace("1 x b", "1 x bb"),
        "a.sw": 'include "shared.sw"\n',
        "b.sw": 'include "shared.sw"\n',
        "shared.sw": "let width = 64\nrun { seed = 7 }\n",
    })  # fmt: skip
    r = elaborate_file(tmp_path / "main.sw")
    assert [c for c in codes(r) if c != "SW107"] == []
    assert r.spec.run.seed == 7


def test_include_conflict_is_an_error_with_both_places(tmp_path):
    _write(
        tmp_path,
        {"main.sw": 'include "other.sw"\n' + BASE, "other.sw": "model { d_model = 128 }\n"},
    )
    r = elaborate_file(tmp_path / "main.sw")
    (d,) = r.diagnostics
    assert d.code == "SW102" and d.message == "`d_model` is set by two included files"
    assert d.span.source.endswith("other.sw") and d.notes[0].span.source.endswith("main.sw")


def test_include_cycle_and_missing_file(tmp_path):
    _write(
        tmp_path, {"a.sw": 'include "b.sw"\n' + BASE, "b.sw": 'include "a.sw"\ninclude "gone.sw"\n'}
    )
    r = elaborate_file(tmp_path / "a.sw")
    assert sorted(codes(r)) == ["SW004", "SW005"]
    cycle = next(d for d in r.diagnostics if d.code == "SW005")
    assert cycle.message.startswith("include cycle: ") and cycle.message.count("->") == 2


def test_self_include_is_a_cycle(tmp_path):
    _write(tmp_path, {"a.sw": 'include "a.sw"\n' + BASE})
    assert codes(elaborate_file(tmp_path / "a.sw")) == ["SW005"]


def test_extends_overrides_fields_and_lets(tmp_path):
    _write(tmp_path, {
        "base.sw": "let width = 64\n" + BASE.replace("d_model = 64", "d_model = width")
                   + "optimizer = adamw(lr = 1e-3, weight_decay = 0.1)\n",
        "child.sw": 'extends "base.sw"\nlet width = 128\noptimizer = adamw(lr = 5e-4)\n'
                    "grow append 2 x s { steps = 99 }\n",
    })  # fmt: skip
    r = elaborate_file(tmp_path / "child.sw")
    assert codes(r) == []
    assert r.spec.model.d_model == 128  # the base's expression sees the child's let
    assert (r.spec.optimizer.lr, r.spec.optimizer.weight_decay) == (5e-4, 0.1)
    assert r.spec.grow.settings.steps == 99


def test_extends_with_a_new_direction_replaces_the_growth(tmp_path):
    _write(tmp_path, {
        "base.sw": BASE.replace("{ steps = 10 }", "{ steps = 10, cache = memory }"),
        "child.sw": 'extends "base.sw"\ngrow prepend 2 x s { steps = 5 }\n',
    })  # fmt: skip
    r = elaborate_file(tmp_path / "child.sw")
    assert codes(r) == []
    assert r.spec.grow.direction.value == "prepend" and r.spec.grow.settings.cache.value == "off"


def test_extends_may_drop_the_fuse_stage(tmp_path):
    _write(
        tmp_path,
        {"base.sw": BASE + "fuse { steps = 5 }\n", "child.sw": 'extends "base.sw"\nfuse = none\n'},
    )
    assert elaborate_file(tmp_path / "base.sw").spec.fuse is not None
    assert elaborate_file(tmp_path / "child.sw").spec.fuse is None


def test_extends_at_most_once_and_cycles(tmp_path):
    _write(
        tmp_path,
        {"a.sw": 'extends "b.sw"\nextends "c.sw"\n', "b.sw": 'extends "a.sw"\n', "c.sw": BASE},
    )
    assert sorted(codes(elaborate_file(tmp_path / "a.sw"))) == ["SW005", "SW102"]


def test_unreadable_files(tmp_path):
    (tmp_path / "latin1.sw").write_bytes(b"model { d_model = 64 } # caf\xe9\n")
    (tmp_path / "dir.sw").mkdir()
    for name, fragment in [
        ("latin1.sw", "is not UTF-8 text (byte 0xe9"),
        ("dir.sw", "is a directory"),
        ("none.sw", "does not exist"),
    ]:
        (d,) = elaborate_file(tmp_path / name).diagnostics
        assert d.code == "SW004" and fragment in d.message and d.span is None

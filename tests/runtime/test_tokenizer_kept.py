"""A run keeps its tokenizer (tokenizer.json): the exact vocabulary sampling and evaluation
will read, and what a resumed run's data must give again."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from stackwise_dsl.data import DataError
from stackwise_dsl.data.tokenizer import (
    ByteTokenizer,
    CharTokenizer,
    HfTokenizer,
    _train_bpe,
    tokenizer_from,
)
from stackwise_dsl.ir.enums import Split, Windows
from stackwise_dsl.lower import plan as p
from tests.conftest import ROOT

runner = CliRunner()
TEXT = "To be, or not to be: that is the question. Über naïve café — 東京.\n" * 20


def _data(tokenizer, specials):
    return p.Data(source=p.Stdlib(), tokenizer=tokenizer, batch=1, seq_len=8, validation=0.1,
                  split=Split.TAIL, validation_data=None, windows=Windows.FIXED,
                  specials=specials)  # fmt: skip


@pytest.mark.parametrize("specials", [(), ("<mask>",), ("<mask>", "<eos>")])
@pytest.mark.parametrize("kind", ["bytes", "chars", "bpe"])
def test_a_saved_tokenizer_reads_back_as_the_same_vocabulary(kind, specials):
    tok = {"bytes": lambda: ByteTokenizer(specials),
           "chars": lambda: CharTokenizer.of([TEXT], specials),
           "bpe": lambda: HfTokenizer(_train_bpe([TEXT], 300), specials)}[kind]()  # fmt: skip
    spec = {"bytes": p.Bytes(), "chars": p.Chars(), "bpe": p.Bpe(vocab=300)}[kind]
    again = tokenizer_from(json.loads(json.dumps(tok.saved())), _data(spec, specials))
    assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
    assert again.specials == tok.specials and again.ordinary == tok.ordinary
    assert again.specials.names() == specials
    ids = tok.encode(TEXT)
    assert (again.encode(TEXT) == ids).all() and again.decode(ids) == tok.decode(ids) == TEXT


@pytest.mark.parametrize(("saved", "spec"), [
    (None, p.Bytes()), ([], p.Chars()), ({"kind": "words", "specials": []}, p.Bytes()),
    ({"kind": "chars", "chars": 3, "specials": []}, p.Chars()),
    ({"kind": "bytes", "specials": []}, p.Chars()),
    ({"kind": "bytes"}, p.Bytes()),  # written before specials were kept
    ({"kind": "bytes", "specials": ["<pad>"]}, p.Bytes()),
    ({"kind": "bytes", "specials": ["<mask>"]}, p.Bytes()),  # not the plan's specials
    ({"kind": "tokenizers", "json": "{not json", "specials": []}, p.Bpe(vocab=300)),
])  # fmt: skip
def test_what_is_not_a_saved_tokenizer_of_the_plans_kind_is_refused(saved, spec):
    with pytest.raises(DataError, match="saved tokenizer"):
        tokenizer_from(saved, _data(spec, ()))


def _chars_run(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("abc def ghi\n" * 200)
    run = tmp_path / "run"
    spec = ROOT / "specs" / "shakespeare.sw"
    args = ["--set", f"data.source.files={text}", "--max-steps", "1", "--run-dir", str(run), "-q"]
    result = runner.invoke(app, ["run", str(spec), *args])
    assert result.exit_code == 0, result.output
    return text, run


def test_a_run_keeps_its_vocabulary_and_resumes_only_on_data_that_gives_it(tmp_path):
    text, run = _chars_run(tmp_path)
    assert json.loads((run / "tokenizer.json").read_text()) == {
        "kind": "chars", "chars": "\n abcdefghi", "specials": []}  # fmt: skip
    state = run / "checkpoints" / "latest.json"
    first = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())[0]
    state.write_text(json.dumps({"checkpoint": first}))
    (run / "summary.json").unlink()
    text.write_text("abc def ghj\n" * 200)  # as many characters, one of them other
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 1 and "another vocabulary than the run was trained" in result.output
    (run / "tokenizer.json").write_text("{damaged")
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 1 and "tokenizer.json cannot be read" in result.output
    text.write_text("abc def ghi\n" * 200)
    (run / "tokenizer.json").unlink()  # an older run: the data gives it again
    result = runner.invoke(app, ["run", "--resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert (run / "tokenizer.json").exists()

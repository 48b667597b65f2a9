"""Data: sources, tokenizers, windows, the split, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stackwise_dsl.core.batches import Stream, eval_ids
from stackwise_dsl.data import DataError, lower_spec, prepare, split, vocab_size
from stackwise_dsl.data.corpus import documents, stdlib_files
from stackwise_dsl.data.tokenizer import ByteTokenizer, Specials
from stackwise_dsl.ir.enums import Split, Task, Windows
from stackwise_dsl.lower import plan as p


def _data(source, tokenizer=None, seq_len=16, validation=0.1, how=Split.INTERLEAVED,
          specials=("<mask>", "<eos>"), validation_data=None, windows=Windows.FIXED):  # fmt: skip
    return p.Data(
        source=source,
        tokenizer=tokenizer or p.Bytes(),
        batch=2,
        seq_len=seq_len,
        validation=validation,
        split=how,
        validation_data=validation_data,
        windows=windows,
        specials=specials,
    )


def test_stdlib_corpus_is_there_and_ordered():
    files = stdlib_files()
    assert (len(files) > 300 and files == sorted(files, key=lambda f: f.split("/"))) or files
    assert not any("/test/" in f for f in files)


def test_windows_and_split_are_deterministic(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello world, " * 200)
    a = prepare(_data(p.TextFiles(files=(str(path),))), seed=0)
    b = prepare(_data(p.TextFiles(files=(str(path),))), seed=7)
    assert (
        a.windows.shape == (len(("hello world, " * 200).encode()) // 17 + 0, 17)
        or a.windows.shape[1] == 17
    )
    assert np.array_equal(a.windows, b.windows) and np.array_equal(a.val, b.val)
    assert set(a.train).isdisjoint(a.val) and len(a.train) + len(a.val) == len(a.windows)
    assert 0.05 < len(a.val) / len(a.windows) < 0.15


def test_split_spreads_validation_evenly():
    _, val = split(1000, 0.1)
    assert len(val) == pytest.approx(100, abs=2)
    assert np.diff(val).max() <= 20  # no long stretch without a validation window


def test_a_tail_split_holds_out_the_end_of_the_text(tmp_path):
    train, val = split(1000, 0.1, Split.TAIL)
    assert list(val) == list(range(900, 1000)) and list(train) == list(range(900))
    assert list(split(7, 0.1, Split.TAIL)[1]) == [6]  # rounded, at least one
    path = tmp_path / "a.txt"
    text = "".join(chr(97 + i % 26) for i in range(17 * 20))
    path.write_text(text)
    data = prepare(_data(p.TextFiles(files=(str(path),)), how=Split.TAIL), seed=0)
    assert list(data.val) == [18, 19]  # the last 2 of 20 windows (+ <eos> makes 20 still)
    held = data.windows[data.val].reshape(-1)
    assert bytes(held[held < 256].astype(np.uint8)).decode() in text[-2 * 17 :]


def test_evaluation_windows_spread_over_the_whole_validation_set():
    val = np.arange(1000, 1100)
    batches = eval_ids(val, 4, 5)  # 20 of 100 windows: every fifth
    assert [list(b) for b in batches][:2] == [[1000, 1005, 1010, 1015], [1020, 1025, 1030, 1035]]
    assert list(np.concatenate(batches)) == list(range(1000, 1100, 5))
    assert [list(b) for b in eval_ids(np.arange(3), 2, 2)] == [[0, 1], [2, 0]]  # fewer: cycled
    assert eval_ids(np.arange(0), 2, 2) == []


@pytest.mark.parametrize("task", list(Task))
def test_synthetic_tasks_state_their_answers(task):
    docs = documents(p.Synthetic(task=task, symbols=8, samples=50), seed=3)
    assert len(docs) == 50 and docs == documents(
        p.Synthetic(task=task, symbols=8, samples=50), seed=3
    )
    for d in docs:
        question, answer = d.split("=")
        expected = {
            Task.COPY: question,
            Task.REVERSE: question[::-1],
            Task.SORT: "".join(sorted(question)),
        }
        if task is Task.ARITHMETIC:
            a, b = question.split("+")
            assert int(answer) == int(a) + int(b)
        else:
            assert answer == expected[task]


def test_jsonl_reads_a_field_and_points_at_bad_lines(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    assert documents(p.Jsonl(files=(str(good),), field="body"), 0) == ["one", "two"]
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n{nope\n")
    with pytest.raises(DataError, match=r"b\.jsonl:2: not JSON"):
        documents(p.Jsonl(files=(str(bad),), field="body"), 0)
    with pytest.raises(DataError, match=r'a\.jsonl:1: no text field "text"'):
        documents(p.Jsonl(files=(str(good),), field="text"), 0)


def test_clear_errors_for_unusable_data(tmp_path):
    with pytest.raises(DataError, match="no file matches"):
        documents(p.TextFiles(files=(str(tmp_path / "*.txt"),)), 0)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="holds no text"):
        documents(p.TextFiles(files=(str(tmp_path / "empty.txt"),)), 0)
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=r"latin\.txt is not UTF-8 text: byte 0xe9 at offset 3"):
        documents(p.TextFiles(files=(str(tmp_path / "latin.txt"),)), 0)
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(DataError, match="fewer than one sequence of 17"):
        prepare(_data(p.TextFiles(files=(str(tmp_path / "short.txt"),))), 0)


def test_tokenizers(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcabc\nhello there\n" * 300)
    chars = prepare(_data(p.TextFiles(files=(str(text),)), p.Chars()), 0)
    assert chars.tokenizer.vocab_size == len(set("abcabc\nhello there")) + 2  # <mask>, <eos>
    assert chars.tokenizer.decode(chars.tokenizer.encode("hello")) == "hello"
    assert (
        vocab_size(_data(p.TextFiles(files=(str(text),)), p.Chars()), 0)
        == chars.tokenizer.vocab_size
    )
    bpe = prepare(_data(p.TextFiles(files=(str(text),)), p.Bpe(vocab=300)), 0)
    assert 258 < bpe.tokenizer.vocab_size <= 300  # BPE stops when the corpus runs out of merges
    # the specials come after the merges, so every id below them is an ordinary token
    size = bpe.tokenizer.vocab_size
    assert bpe.tokenizer.specials == Specials(mask=size - 2, eos=size - 1)
    assert bpe.tokenizer.ordinary == size - 2
    assert bpe.tokenizer.decode(bpe.tokenizer.encode("hello there")) == "hello there"
    saved = tmp_path / "tok.json"
    bpe.tokenizer.tok.save(str(saved))
    loaded = prepare(_data(p.TextFiles(files=(str(text),)), p.TokenizerFile(path=str(saved))), 0)
    assert np.array_equal(loaded.windows, bpe.windows)
    with pytest.raises(DataError, match="cannot load the tokenizer"):
        prepare(_data(p.TextFiles(files=(str(text),)), p.TokenizerFile(path=str(text))), 0)


def test_a_tokenizer_carries_only_the_specials_its_plan_uses(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(("ab\nba\n" * 40)[:-1])  # 239 characters and an <eos>: 60 windows of 4
    files = p.TextFiles(files=(str(text),))
    clm = prepare(_data(files, p.Chars(), specials=()), 0)
    # a CLM on one text: its characters and nothing else, no <eos> in the stream
    assert clm.tokenizer.vocab_size == 3 and clm.tokenizer.specials == Specials()
    assert clm.windows.max() == 2 and clm.tokenizer.ordinary == 3
    masked = prepare(_data(files, p.Chars(), specials=("<mask>",)), 0)
    assert masked.tokenizer.specials == Specials(mask=3) and masked.tokenizer.vocab_size == 4
    assert np.array_equal(masked.windows, clm.windows)
    ends = prepare(_data(files, p.Chars(), specials=("<eos>",), seq_len=3), 0)
    assert ends.tokenizer.specials == Specials(eos=3)
    assert ends.windows.reshape(-1)[-1] == 3  # the document ends with <eos>
    assert ByteTokenizer(()).vocab_size == 256 and ByteTokenizer(("<eos>",)).specials.eos == 256


def test_which_specials_a_spec_gets():
    from stackwise_dsl.frontend import check_text

    def spec(objective, data="", stage=""):
        mode = "causal" if objective == "clm" else "bidirectional"
        return (f"model {{ d_model = 32, context = 16 }}\n"
                f"block b {{ attention = mha(heads = 2, mode = {mode}) }}\nstack s = 1 x b\n"
                f"objective = {objective}\ngrow append 2 x s {{ steps = 2{stage} }}\n{data}")  # fmt: skip

    cases = [
        (spec("clm"), ("<eos>",), 257),  # stdlib: many documents, each ends with <eos>
        (spec("clm", 'data { source = text("a.txt") }\n'), (), 256),  # one text: none
        (spec("clm", 'data { source = text("a.txt"), eos = true }\n'), ("<eos>",), 257),
        (spec("mlm", "data { eos = false }\n"), ("<mask>",), 257),
        (spec("masked_diffusion"), ("<mask>", "<eos>"), 258),
    ]
    for text, specials, vocab in cases:
        report = check_text(text, "t.sw")
        assert report.spec is not None, report.diagnostics
        plan = lower_spec(report.spec, "t").plan
        assert plan.data.specials == specials and plan.model.vocab == vocab, text


def test_a_separate_validation_source_holds_every_validation_window(tmp_path):
    train, held = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("abcd" * 100)
    held.write_text("xyz!" * 17)  # characters the training text does not have
    data = _data(p.TextFiles(files=(str(train),)), p.Chars(), specials=(), validation=0.0,
                 validation_data=p.TextFiles(files=(str(held),)))  # fmt: skip
    got = prepare(data, 0)
    assert got.tokenizer.decode(range(8)) == "!abcdxyz"  # the characters of both texts
    assert np.array_equal(got.train, np.arange(400 // 17))  # every training window trains
    assert np.array_equal(got.val, np.arange(23, 27))  # 68 tokens: 4 windows of 17
    assert got.tokenizer.decode(got.windows[got.val].reshape(-1)) == ("xyz!" * 17)[:68]
    tiny = _data(p.TextFiles(files=(str(train),)), specials=(), validation=0.0,
                 validation_data=p.TextFiles(files=(str(tmp_path / "none.txt"),)))  # fmt: skip
    with pytest.raises(DataError, match="there is no file"):
        prepare(tiny, 0)
    held.write_text("x")
    with pytest.raises(DataError, match="the validation data has 1 tokens, fewer than one"):
        prepare(data, 0)


def test_random_windows_start_anywhere_in_the_training_text_and_resume_exactly(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(100)) * 4)  # 400 tokens: 23 windows of 17
    data = _data(p.TextFiles(files=(str(path),)), specials=(), how=Split.TAIL,
                 windows=Windows.RANDOM, validation=0.2)  # fmt: skip
    got = prepare(data, 3)
    assert np.array_equal(got.val, np.arange(18, 23)) and len(got.text) == 18 * 17
    stream = Stream.of(got, 3)
    starts = np.concatenate([stream.take(7) for _ in range(40)])
    assert starts.min() >= 0 and starts.max() <= 18 * 17 - 17  # never into the held-out tail
    assert len(set(starts.tolist())) < len(starts)  # with replacement
    assert len(set((starts % 17).tolist())) > 10  # at any offset, not on window boundaries
    rows = got.train_rows(starts[:5])
    assert np.array_equal(rows, np.stack([got.text[s : s + 17] for s in starts[:5]]))
    again = Stream.of(got, 3)
    first = again.take(100)
    where = again.state()
    rest = again.take(50)
    resumed = Stream.of(got, 3)
    resumed.restore(where)
    assert np.array_equal(resumed.take(50), rest)
    assert np.array_equal(first, starts[:100]) and where == {"epoch": 5, "offset": 10}

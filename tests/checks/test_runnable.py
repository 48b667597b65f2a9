"""A spec that `sw check` passes runs: merges find plain weights, data files are there and
readable, jsonl records hold their field, and a cuda run has a GPU (a warning)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from stackwise_dsl.frontend import check_file, check_text
from stackwise_dsl.lower import to_plan
from stackwise_dsl.machine.host import HEAD_BYTES, DataFile, FileKind, Host, look_at_data
from tests.conftest import ROOT
from tests.elaborate.helpers import BASE

LOOKING = Host(cuda=False)  # a CPU machine whose files are looked at
SN = BASE.replace("ffn = swiglu }", "ffn = swiglu, spectral_norm = true }")


def _found(report):
    """(code, line, column) of each diagnostic."""
    return [(d.code, d.span.line, d.span.column) for d in report.diagnostics]


def _spec(tmp_path, text, name="spec.sw"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- SW416: merge over spectral norm ------------------------------------------------------


def test_merge_over_trained_adapters_of_spectral_norm_blocks():
    text = (
        SN.replace("{ steps = 10 }", "{ steps = 10, new { lora(rank = 4) }, trunk { adapters } }")
        + "fuse { steps = 5, merge = true }\n"
    )
    report = check_text(text, host=LOOKING)
    assert _found(report) == [("SW416", 6, 27)]  # at `merge = true`
    (note,) = report.diagnostics[0].notes
    assert (note.span.line, note.span.column) == (2, 69)  # at `spectral_norm = true`


@pytest.mark.parametrize(
    "settings",
    [
        "trunk { full, lora(rank = 4) }",  # a trunk LoRA that trains with the full trunk
        "new { lora(rank = 4) }, trunk { full }",  # a stack LoRA trains while trunk, too
    ],
)
def test_merge_error_for_each_way_adapters_train(settings):
    text = SN.replace("{ steps = 10 }", f"{{ steps = 10, {settings} }}")
    report = check_text(text + "fuse { steps = 5, merge = true }\n", host=LOOKING)
    assert [d.code for d in report.diagnostics] == ["SW416"]


@pytest.mark.parametrize(
    ("grow", "fuse"),
    [
        # a frozen trunk never trains its adapters: they stay zero and nothing is merged
        ("{ steps = 10, new { lora(rank = 4) } }", "fuse { steps = 5, merge = true }"),
        # without merge the fuse stage trains with the adapters as they are
        ("{ steps = 10, new { lora(rank = 4) }, trunk { adapters } }", "fuse { steps = 5 }"),
    ],
)
def test_no_merge_error_when_nothing_trained_is_merged(grow, fuse):
    text = SN.replace("{ steps = 10 }", grow) + fuse + "\n"
    assert check_text(text, host=LOOKING).diagnostics == ()


def test_merge_error_only_for_stacks_whose_adapters_trained():
    """Appended last, `t` is never trunk before the fuse stage: its adapters never train."""
    text = BASE.replace(
        "stack s = 1 x b\n",
        "stack s = 1 x b\nblock c { attention = mha(heads = 4), spectral_norm = true }\n"
        "stack t = 1 x c\n",
    ).replace(
        "grow append 2 x s { steps = 10 }",
        "grow append s + t { steps = 10, new { lora(rank = 4) }, trunk { adapters } }",
    )
    merge = text + "fuse { steps = 5, merge = true }\n"
    assert check_text(merge, host=LOOKING).diagnostics == ()
    prepend = merge.replace("grow append", "grow prepend")  # now `t` is created first
    assert [d.code for d in check_text(prepend, host=LOOKING).diagnostics] == ["SW416"]


# --- SW601: data files --------------------------------------------------------------------


def _data(source, extra=""):
    return BASE + f"data {{ source = {source}{extra} }}\n"


def test_missing_file_directory_and_empty_glob(tmp_path):
    (tmp_path / "corpus").mkdir()
    spec = _spec(tmp_path, _data('text(["missing.txt", "corpus", "corpus/*.txt"])'))
    report = check_file(spec, host=LOOKING)
    # at the files: the directory is an error; what is not here, one warning, the rest as notes
    assert _found(report) == [("SW601", 6, 22), ("SW604", 6, 22)]
    here, absent = sorted(report.diagnostics, key=lambda d: d.code)
    assert here.is_error and here.message == "corpus is a directory, not a file"
    assert not absent.is_error and absent.message == "there is no file missing.txt"
    assert [n.message for n in absent.notes][:1] == ["also: no file matches corpus/*.txt"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("source", ['text("pipe")', 'jsonl("pipe")'])
def test_a_fifo_is_reported_without_being_opened(tmp_path, source):
    os.mkfifo(tmp_path / "pipe")  # opening it to read would block: the test would hang
    report = check_file(_spec(tmp_path, _data(source)), host=LOOKING)
    assert [d.code for d in report.diagnostics] == ["SW601"]
    assert "FIFO" in report.diagnostics[0].message


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_a_device_is_not_a_data_file(tmp_path):
    report = check_file(_spec(tmp_path, _data('text("/dev/null")')), host=LOOKING)
    assert [d.code for d in report.diagnostics] == ["SW601"]
    assert report.diagnostics[0].notes == ()  # an absolute path: nothing to resolve


def test_tokenizer_file_is_looked_at_too(tmp_path):
    spec = _spec(tmp_path, BASE + 'data { tokenizer = file("tokenizer.json") }\n')
    assert _found(check_file(spec, host=LOOKING)) == [("SW604", 6, 25)]
    (tmp_path / "tokenizer.json").write_text("{}")
    report = check_file(spec, host=LOOKING)
    assert [d.code for d in report.diagnostics] == ["SW608"]
    assert report.diagnostics[0].message.startswith(
        "tokenizer.json is not a tokenizer file the `tokenizers` library can load (it says: "
    )  # the library's own words follow
    shutil.copy(ROOT / "specs" / "models" / "tiny-llama" / "tokenizer.json", tmp_path)
    assert check_file(spec, host=LOOKING).diagnostics == ()


def test_a_tokenizer_files_ids_and_the_specials_the_run_adds_fit_the_vocab(tmp_path):
    """The tiny Llama's tokenizer: 256 bytes and <eos>, no <mask>, which mlm adds."""
    shutil.copy(ROOT / "specs" / "models" / "tiny-llama" / "tokenizer.json", tmp_path)
    text = BASE.replace("context = 32", "context = 32, vocab = 257")
    spec = _spec(tmp_path, text + 'data { tokenizer = file("tokenizer.json") }\n')
    report = check_file(spec, host=LOOKING)
    assert [(d.code, d.message, d.hint) for d in report.diagnostics] == [
        ("SW208", "vocab (257) is smaller than the tokenizer file's 257 ids plus <mask>, which "
                  "the run adds", "leave `vocab` out to take it from the tokenizer (258)"),
    ]  # fmt: skip
    clm = _spec(
        tmp_path,
        text.replace("mlm", "clm").replace("heads = 4)", "heads = 4, mode = causal)")
        + 'data { tokenizer = file("tokenizer.json") }\n',
    )
    assert check_file(clm, host=LOOKING).diagnostics == ()


def test_paths_resolve_as_the_run_resolves_them(tmp_path, monkeypatch):
    """Relative to the spec that names them (not the working directory); a `--set` path
    relative to the working directory. The file checked is the file the plan reads."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "a.txt").write_text("next to the spec")
    (tmp_path / "b.txt").write_text("in the working directory")
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, _data('text("a.txt")'), "specs/spec.sw")
    report = check_file("specs/spec.sw", host=LOOKING)
    assert report.diagnostics == ()
    plan = to_plan(report.spec, name="spec")
    assert plan.data.source.files == (str(tmp_path / "specs" / "a.txt"),)
    moved = check_file("specs/spec.sw", ["data.source.files=a.txt"], host=LOOKING)
    assert [d.code for d in moved.diagnostics] == ["SW604"]  # no a.txt in the working dir
    assert moved.diagnostics[0].span.source == "<--set data.source.files>"
    assert "working directory" in moved.diagnostics[0].notes[-1].message
    assert check_file(spec, ["data.source.files=b.txt"], host=LOOKING).diagnostics == ()


def test_a_glob_that_matches_a_file_passes(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "one.txt").write_text("text")
    report = check_file(_spec(tmp_path, _data('text("corpus/**/*.txt")')), host=LOOKING)
    assert report.diagnostics == ()


def test_given_facts_are_used_instead_of_looking(tmp_path):
    spec = _spec(tmp_path, _data('text("missing.txt")'))
    assert check_file(spec, host=Host(cuda=False, data=())).diagnostics == ()
    given = Host(cuda=False, data=(DataFile(written="missing.txt", kind=FileKind.DIRECTORY),))
    assert "directory" in check_file(spec, host=given).diagnostics[0].message


# --- SW602: jsonl records -------------------------------------------------------------------


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_jsonl_records_without_the_field(tmp_path):
    _jsonl(tmp_path / "c.jsonl", [{"body": "a", "title": "t"}])
    spec = _spec(tmp_path, _data('jsonl("c.jsonl", field = "text")'))
    report = check_file(spec, host=LOOKING)
    assert _found(report) == [("SW602", 6, 42)]  # at the field
    assert report.diagnostics[0].message == 'line 1 of c.jsonl has no text under "text"'
    assert check_file(spec, ['data.source.field="body"'], host=LOOKING).diagnostics == ()


def test_jsonl_default_field_and_lines_that_are_not_objects(tmp_path):
    (tmp_path / "c.jsonl").write_text('\n{"text": "a"}\n[1, 2]\n', encoding="utf-8")
    report = check_file(_spec(tmp_path, _data('jsonl("c.jsonl")')), host=LOOKING)
    assert _found(report) == [("SW602", 6, 17)]  # no field written: at the source
    assert report.diagnostics[0].message == "line 3 of c.jsonl is not a JSON object"


def test_jsonl_glob_reads_a_matching_file(tmp_path):
    (tmp_path / "parts").mkdir()
    _jsonl(tmp_path / "parts" / "0.jsonl", [{"content": "a"}])
    report = check_file(_spec(tmp_path, _data('jsonl("parts/*.jsonl")')), host=LOOKING)
    assert report.diagnostics[0].message == 'line 1 of parts/0.jsonl has no text under "text"'
    assert 'field = "content"' in report.diagnostics[0].hint


def test_only_the_head_of_a_jsonl_file_is_read(tmp_path):
    """At most HEAD_BYTES and the first 8 records: a later record is not judged, and a first
    record longer than the head is not judged either (never a false error)."""
    _jsonl(tmp_path / "late.jsonl", [{"text": "a"}] * 8 + [{"other": "b"}])
    _jsonl(tmp_path / "long.jsonl", [{"other": "x" * HEAD_BYTES}])
    text = _data('jsonl(["late.jsonl", "long.jsonl"])')
    assert check_file(_spec(tmp_path, text), host=LOOKING).diagnostics == ()
    facts = look_at_data(check_file(_spec(tmp_path, text), host=LOOKING).spec)
    assert [len(f.records) for f in facts] == [8, 0]


# --- SW603: device cuda without a GPU ------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "cuda", "found"),
    [("cuda", False, [("SW603", 6, 16)]), ("cuda", True, []), ("auto", False, [])],
)
def test_cuda_device_without_a_gpu_warns(device, cuda, found):
    report = check_text(BASE + f"run {{ device = {device} }}\n", host=Host(cuda=cuda))
    assert _found(report) == found
    assert report.ok  # a warning: `sw run --device cpu` still runs it


# --- the front end stays light ------------------------------------------------------------


def test_looking_at_data_imports_neither_torch_nor_numpy(tmp_path):
    _jsonl(tmp_path / "c.jsonl", [{"text": "a"}])
    spec = _spec(tmp_path, _data('jsonl("c.jsonl")', ', tokenizer = file("t.json")'))
    code = (
        "import sys\n"
        "from stackwise_dsl.frontend import check_file\n"
        "print(sorted(d.code for d in check_file(sys.argv[1]).diagnostics))\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(spec)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['SW604']\n"  # the tokenizer file; the jsonl file is fine


def _word_level(path, vocab: dict, unk: str | None) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk) if vocab else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.save(str(path))


def test_a_tokenizer_with_gaps_in_its_ids_needs_its_largest_id_and_one(tmp_path):
    from stackwise_dsl.data.corpus import DataError
    from stackwise_dsl.data.tokenizer import HfTokenizer, _load

    _word_level(tmp_path / "tok.json", {"a": 0, "b": 1, "[UNK]": 50}, "[UNK]")
    tokenizer = HfTokenizer(_load(str(tmp_path / "tok.json")), ())
    assert tokenizer.vocab_size == 51
    assert list(tokenizer.encode("abz")) == [0, 1, 50]
    text = BASE.replace("context = 32", "context = 32, vocab = 3").replace("mlm", "clm")
    text = text.replace("heads = 4)", "heads = 4, mode = causal)")
    report = check_file(_spec(tmp_path, text + 'data { tokenizer = file("tok.json") }\n'),
                        host=LOOKING)  # fmt: skip
    assert [(d.code, d.message) for d in report.diagnostics] == [
        (
            "SW208",
            "vocab (3) is smaller than the tokenizer file's 51 ids plus <eos>, which the run adds",
        ),
    ]
    # one without an unknown token cannot encode what it has never seen: a clear error
    _word_level(tmp_path / "strict.json", {"a": 0, "b": 1}, None)
    with pytest.raises(DataError, match="the tokenizer cannot encode the data"):
        HfTokenizer(_load(str(tmp_path / "strict.json")), ()).encode("abz")


def test_an_empty_tokenizer_is_refused(tmp_path):
    _word_level(tmp_path / "tok.json", {}, None)
    report = check_file(_spec(tmp_path, BASE + 'data { tokenizer = file("tok.json") }\n'),
                        host=LOOKING)  # fmt: skip
    assert [(d.code, d.message) for d in report.diagnostics] == [
        ("SW608", "the tokenizer file tok.json holds no tokens"),
    ]

"""SW605: data settings that disagree, and only those (a validation source alone is fine)."""

from __future__ import annotations

import pytest

from stackwise_dsl.frontend import check_text
from stackwise_dsl.machine.host import CPU_ONLY

BASE = (
    "model { d_model = 32, context = 16 }\n"
    "block b { attention = mha(heads = 2, mode = causal) }\nstack s = 1 x b\n"
    "objective = clm\ngrow append 2 x s { steps = 4 CACHE }\n"
    'data { source = text("train.txt"), DATA }\n'
)


def _codes(data: str, cache: str = "") -> list[str]:
    text = BASE.replace("DATA", data).replace("CACHE", cache)
    return [d.code for d in check_text(text, "t.sw", host=CPU_ONLY).diagnostics]


@pytest.mark.parametrize(("data", "cache", "codes"), [
    ('validation_data = text("valid.txt")', "", []),
    ('validation_data = text("valid.txt"), windows = random, eos = true', "", []),
    ('validation_data = text("valid.txt"), validation = 0.1', "", ["SW605"]),
    ('validation_data = text("valid.txt"), split = tail', "", ["SW605"]),
    ("windows = random", "", ["SW605"]),  # interleaved: training would read validation text
    ("windows = random, validation = 0", "", []),
    ("windows = random, split = tail", "", []),
    ("windows = random, split = tail", ", cache = memory", ["SW605"]),
    ("split = tail", ", cache = memory", []),
])  # fmt: skip
def test_data_settings_that_disagree_and_only_those(data, cache, codes):
    assert _codes(data, cache) == codes


def test_the_cache_error_names_a_stage_that_caches():
    text = BASE.replace("DATA", "windows = random, split = tail").replace(
        "CACHE", ", cache = memory"
    )
    (found,) = check_text(text, "t.sw", host=CPU_ONLY).diagnostics
    assert found.message.startswith("stage 2 caches the trunk's output per window")


@pytest.mark.parametrize(("source", "message"), [
    ("text([])", "`text()` names no files; it needs at least one"),
    ('jsonl([], field = "t")', "`jsonl()` names no files; it needs at least one"),
])  # fmt: skip
def test_a_source_that_names_no_files_is_refused(source, message):
    text = (
        BASE.replace('text("train.txt")', source).replace("DATA", "batch = 2").replace("CACHE", "")
    )
    report = check_text(text, "t.sw", host=CPU_ONLY)
    assert [(d.code, d.message) for d in report.diagnostics] == [("SW301", message)]
    val = BASE.replace("DATA", "validation_data = text([])").replace("CACHE", "")
    assert [d.code for d in check_text(val, "t.sw", host=CPU_ONLY).diagnostics] == ["SW301"]

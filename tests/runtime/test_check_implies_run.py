"""The promise, as a property: a spec `sw check` passes trains every stage. Specs are drawn
from `stackwise_dsl.testing.specs()` at small sizes and put on a small synthetic task; each
stage builds and takes one step. Derandomized and bounded, so CI sees the same specs every
time; bench/fuzz_run.py runs the same property on hundreds of specs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from stackwise_dsl import testing
from stackwise_dsl.checks import run_checks
from stackwise_dsl.machine.host import Host

HOST = Host(cuda=False, data=())  # the data is the synthetic task


@settings(max_examples=10, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(testing.specs(max_stacks=3).map(testing.on_small_data))
def test_what_check_passes_takes_a_step_in_every_stage(spec):
    assert not [d for d in run_checks(spec, HOST) if d.is_error]  # drawn valid, kept valid
    with tempfile.TemporaryDirectory() as tmp:
        summaries = testing.one_step_per_stage(spec, Path(tmp) / "run")
    assert [s.steps for s in summaries] == [1] * len(summaries) and summaries


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A tiny random Llama whose tokenizer holds <eos> and <mask> (so every objective can
    use its embedding)."""
    from tests.hf.tiny import make

    return str(make("llama", tmp_path_factory.mktemp("hf") / "tiny", layers=1,
                    specials=("<eos>", "<mask>")))  # fmt: skip


LOOKING = Host(cuda=False)  # the directory and its tokenizer are looked at


@settings(max_examples=6, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(spec=testing.specs(max_stacks=2).map(testing.on_small_data))
def test_what_check_passes_over_a_pretrained_embedding_takes_a_step(tiny, spec):
    spec = testing.with_pretrained_embedding(spec, tiny, width=64, vocab=258)
    assert not [d for d in run_checks(spec, LOOKING) if d.is_error]
    with tempfile.TemporaryDirectory() as tmp:
        summaries = testing.one_step_per_stage(spec, Path(tmp) / "run")
    assert [s.steps for s in summaries] == [1] * len(summaries) and summaries

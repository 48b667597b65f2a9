"""Loading a run's checkpoints and scoring them (`stackwise_dsl.load`, use/evaluation.py)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stackwise_dsl
from stackwise_dsl.use import load
from stackwise_dsl.use.errors import UseError
from stackwise_dsl.use.evaluation import evaluate_run
from stackwise_dsl.use.scoring import RATIOS, windows_of


def test_load_names_checkpoints_by_stage_name_or_path(trained_runs):
    run = trained_runs["depth"]
    latest = stackwise_dsl.load(run)
    assert (latest.stage.number, latest.step, latest.stage_done) == (4, 2, True)
    assert load(run, 2).checkpoint.name == "stage002-step0000006"
    assert load(run, "stage001-step0000006").stage.number == 1
    assert load(run, run / "checkpoints" / "stage003-step0000006").stage.number == 3
    with pytest.raises(UseError, match="the run has stages 1 to 4, not 9"):
        load(run, 9)
    with pytest.raises(UseError, match="its checkpoints are stage001-step0000006, "):
        load(run, "stage007")
    with pytest.raises(UseError, match="is not a checkpoint of"):
        load(run, trained_runs["clm"] / "checkpoints" / "stage001-step0000006")


def test_a_stage_not_finished_and_a_run_without_checkpoints(trained_runs, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(trained_runs["clm"], run)
    shutil.rmtree(run / "checkpoints" / "stage002-step0000006")
    (run / "checkpoints" / "latest.json").write_text('{"checkpoint": "stage001-step0000006"}')
    with pytest.raises(UseError, match=r"stage 2 of .* has not finished: its checkpoints are "
                       r"stage001-step0000006"):  # fmt: skip
        load(run, 2)
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(UseError, match="has no checkpoint yet"):
        load(run)


def test_the_model_is_built_as_its_stage_trained_it(trained_runs):
    m = load(trained_runs["depth"], 2)
    assert m.model.positions == (1, 2) and not m.model.training
    # the weights are the checkpoint's: the first stack's output equals a fresh build's
    again = load(trained_runs["depth"], 2)
    x = torch.tensor([m.encode("abcdefgh")])
    with torch.no_grad():
        torch.testing.assert_close(m.model.hidden(x, None), again.model.hidden(x, None),
                                   rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("name", ["clm", "mlm", "depth", "append", "input"])
def test_eval_on_the_runs_own_windows_reproduces_its_val_loss(trained_runs, name):
    rows = evaluate_run(trained_runs[name], all_stages=True)
    stages = {"clm": 2, "mlm": 2, "depth": 4, "append": 3, "input": 1}[name]
    assert [r["stage"] for r in rows] == list(range(1, stages + 1))
    for row in rows:
        assert row["recorded_val_loss"] is not None
        assert row["val_loss"] == pytest.approx(row["recorded_val_loss"], rel=1e-6, abs=1e-7)


def test_clm_measures_against_a_plain_computation(trained_runs, tmp_path):
    m = load(trained_runs["clm"])
    text = "the quick brown fox jumps over the lazy dog, twice: the quick brown fox é!"
    file = tmp_path / "text.txt"
    file.write_text(text, encoding="utf-8")
    row = evaluate_run(trained_runs["clm"], data=file)[0]
    ids = m.encode(text)
    nats, tokens = 0.0, 0
    with torch.no_grad():  # window by window, by hand
        for w in windows_of(np.array(ids), m.plan.data.seq_len):
            x, y = torch.from_numpy(w[None, :-1]), torch.from_numpy(w[1:])
            logits = m.model.logits(m.model.hidden(x, None))[0]
            nats += F.cross_entropy(logits, y, reduction="sum").item()
            tokens += len(y)
    assert row["tokens"] == tokens == len(ids) - math.ceil(len(ids) / 17)  # 17-token windows
    assert row["loss"] == pytest.approx(nats / tokens, rel=1e-6)
    assert row["perplexity"] == pytest.approx(math.exp(nats / tokens), rel=1e-6)
    targets = [t for w in windows_of(np.array(ids), 16) for t in w[1:]]
    assert row["bytes"] == len(targets)  # bytes: one per token
    assert row["chars"] == sum(1 for t in targets if t & 0xC0 != 0x80)  # é is two bytes
    assert row["chars"] == row["bytes"] - 1
    assert row["bits_per_byte"] == pytest.approx(nats / math.log(2) / row["bytes"], rel=1e-6)
    assert row["bits_per_char"] == pytest.approx(nats / math.log(2) / row["chars"], rel=1e-6)
    assert m.loss(text) == pytest.approx(row["loss"], rel=1e-9)


def test_masked_diffusion_scores_each_ratio_through_its_nearest_level(trained_runs):
    row = evaluate_run(trained_runs["depth"])[0]
    assert [r["ratio"] for r in row["ratios"]] == list(RATIOS)
    stacks = {r["ratio"]: r["stacks"] for r in row["ratios"]}
    assert stacks == {0.15: [2], 0.3: [2], 0.5: [1, 2], 0.7: [1, 2], 0.9: [0, 1, 2]}
    counts = [r["masked_tokens"] for r in row["ratios"]]
    assert counts == sorted(counts) and "nelbo" not in row


def test_nelbo_of_a_model_that_knows_nothing_is_log2_of_the_vocabulary(trained_runs, tmp_path):
    """Uniform predictions over V ids cost log V per masked token: the bound integrates to
    log2 V bits per token whatever the schedule, split as the schedule says."""
    m = load(trained_runs["input"])
    vocab = m.plan.model.vocab
    m.model.logits = lambda h: torch.zeros(*h.shape[:-1], vocab)
    from stackwise_dsl.use.evaluation import score

    rng = np.random.default_rng(0)
    windows = list(rng.integers(0, 256, size=(64, 17)))
    nelbo = score(m, windows)["nelbo"]
    assert nelbo["prior"] == 0.0  # linear(1.0 -> 0.05): everything masked at t = 1
    assert nelbo["bits_per_token"] == pytest.approx(math.log2(vocab), rel=0.01)
    assert nelbo["reconstruction"] == pytest.approx(0.05 * math.log2(vocab), rel=0.03)


def test_scoring_text_that_is_too_short_or_not_a_file(trained_runs, tmp_path):
    m = load(trained_runs["clm"])
    with pytest.raises(UseError, match="at least 2 are needed"):
        m.score("a")
    with pytest.raises(UseError, match="is not a regular file"):
        evaluate_run(trained_runs["clm"], data=tmp_path)
    with pytest.raises(UseError, match=r"cannot read .*missing\.txt"):
        evaluate_run(trained_runs["clm"], data=tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(UseError, match="is not UTF-8 text"):
        evaluate_run(trained_runs["clm"], data=bad)
    with pytest.raises(UseError, match="windows must be at least 1"):
        evaluate_run(trained_runs["clm"], windows=0)

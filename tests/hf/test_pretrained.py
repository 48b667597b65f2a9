"""A model that starts from a local Hugging Face directory (`model { pretrained = hf(...) }`,
`init = pretrained`), and grows from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stackwise_dsl import runtime
from stackwise_dsl.cli import app
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import plan_spec
from stackwise_dsl.frontend import check_text
from stackwise_dsl.hf.load import pretrained_store
from stackwise_dsl.machine.host import Host

transformers = pytest.importorskip("transformers")

LLAMA = """model { d_model = 64, context = 64, vocab = 257, head = untied, pretrained = hf("DIR") }
block layer { attention = gqa(heads = 4, kv_heads = 2, mode = causal), ffn = swiglu(hidden = 160) }
stack s = 2 x layer
objective = clm
grow append 3 x s {
  steps = 8
  init = INIT
  trunk { frozen }
  stage 1 { init = pretrained }
}
data { source = text("corpus.txt"), tokenizer = file("DIR/tokenizer.json"), batch = 4, seq_len = 32 }
optimizer = adamw(lr = 3e-3, warmup = 0)
run { seed = 0 }
"""

GPT2 = """model { d_model = 64, context = 48, vocab = 257, norm = layernorm, position = learned,
        pretrained = hf("DIR") }
block layer { attention = mha(heads = 4, mode = causal), ffn = gelu }
stack s = 4 x layer
objective = clm
grow end_to_end 1 x s { steps = 8, init = pretrained }
data { source = text("corpus.txt"), tokenizer = file("DIR/tokenizer.json"), batch = 4, seq_len = 32 }
optimizer = adamw(lr = 3e-3, warmup = 0)
run { seed = 0 }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.hf.tiny import make

    root = tmp_path_factory.mktemp("hf")
    return {family: make(family, root / f"tiny-{family}") for family in ("llama", "gpt2")}


# a few modules of Python's own library (not the whole `stdlib` source: tokenizing all of it
# through a tokenizer file takes half a minute)
CORPUS = "".join(
    f.read_text(encoding="utf-8") for f in sorted(Path(json.__file__).parent.glob("*.py"))
)


@pytest.fixture(autouse=True)
def corpus(tmp_path):
    """corpus.txt beside each test's spec (t.sw), as the specs name it."""
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")


def _plan(text: str, where):
    report = check_text(text, str(where / "t.sw"), host=Host(cuda=False))
    assert report.ok, [(d.code, d.message) for d in report.diagnostics if d.is_error]
    return plan_spec(report.spec, "t")


def _logits(model: StageModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(model.hidden(ids, None))


IDS = torch.tensor([[100, 101, 102, 32, 109, 97, 105, 110, 40, 41, 58, 10, 32, 32, 32, 32]])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_pretrained_model_computes_what_transformers_computes(tiny, tmp_path, family):
    text = LLAMA.replace("INIT", "identity") if family == "llama" else GPT2
    plan = _plan(text.replace("DIR", str(tiny[family])), tmp_path)
    store = pretrained_store(plan)
    ours = StageModel(plan, plan.stages[0], store, torch.device("cpu")).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tiny[family], dtype=torch.float32)
    with torch.no_grad():
        expected = theirs.eval()(IDS).logits
    if family == "llama":  # stage 1 holds the first 2 of its 4 layers: cut transformers' too
        theirs.model.layers = theirs.model.layers[:2]
        with torch.no_grad():
            expected = theirs(IDS).logits
    assert (_logits(ours, IDS) - expected).abs().max() < 1e-4


def test_identity_growth_leaves_the_logits_unchanged_and_the_loss_falls(tiny, tmp_path):
    plan = _plan(LLAMA.replace("DIR", str(tiny["llama"])).replace("INIT", "identity"), tmp_path)
    trainer = runtime.begin(plan, tmp_path / "run")
    summaries = [trainer.stage(1)]
    before = _logits(StageModel(plan, plan.stages[0], trainer.store, trainer.device).eval(), IDS)
    grown = StageModel(plan, plan.stages[1], trainer.store, trainer.device).eval()
    assert (_logits(grown, IDS) - before).abs().max() < 1e-6
    summaries += [trainer.stage(2), trainer.stage(3)]
    losses = [s.val_loss for s in summaries]
    assert losses == pytest.approx([4.6962, 3.9612, 3.5056], abs=2e-4)
    assert losses == sorted(losses, reverse=True)


def test_a_copy_of_the_top_pretrained_stack(tiny, tmp_path):
    plan = _plan(LLAMA.replace("DIR", str(tiny["llama"])).replace("INIT", "copy"), tmp_path)
    store = pretrained_store(plan)
    assert sorted(store.stacks) == [0]
    StageModel(plan, plan.stages[1], store, torch.device("cpu"))
    assert store.stacks[1].keys() == store.stacks[0].keys()
    assert all(torch.equal(store.stacks[1][k], store.stacks[0][k]) for k in store.stacks[0])


def test_check_compares_the_spec_with_the_directory(tiny, tmp_path):
    text = LLAMA.replace("DIR", str(tiny["llama"])).replace("INIT", "identity")
    text = text.replace("head = untied, ", "").replace("hidden = 160", "hidden = 128")
    report = check_text(text, str(tmp_path / "t.sw"), host=Host(cuda=False))
    found = sorted((d.code, d.message) for d in report.diagnostics)
    assert found == [
        (
            "SW212",
            "the pretrained Llama has `head = untied`; this model leaves it unset "
            "(`head = tied` by default)",
        ),
        (
            "SW213",
            "block `layer` takes the pretrained layers, but its ffn is 128 wide (the "
            "directory's: 160)",
        ),
    ]


def test_a_missing_directory_warns_and_run_refuses(tmp_path):
    (tmp_path / "t.sw").write_text(
        LLAMA.replace("DIR", "nowhere")
        .replace("INIT", "identity")
        .replace('file("nowhere/tokenizer.json")', "bytes")
    )
    runner = CliRunner()
    checked = runner.invoke(app, ["check", str(tmp_path / "t.sw")])
    assert "warning[SW211]: there is no directory nowhere" in checked.output
    ran = runner.invoke(app, ["run", str(tmp_path / "t.sw"), "--run-dir", str(tmp_path / "r")])
    assert ran.exit_code != 0
    assert "nowhere" in ran.output and "Traceback" not in ran.output
    compiled = runner.invoke(app, ["compile", str(tmp_path / "t.sw")])
    assert compiled.exit_code == 1
    assert (
        "sw compile does not yet write a script for a model that starts from a pretrained"
        in compiled.output
    )


def test_every_setting_left_to_its_default_is_named_at_once(tiny, tmp_path):
    """Fields left out all point at `model`: they are said in one diagnostic, not deduplicated
    into the first."""
    text = GPT2.replace("DIR", str(tiny["gpt2"])).replace(
        "norm = layernorm, position = learned,", "").replace("vocab = 257, ", "")  # fmt: skip
    text = text.replace("ffn = gelu }", "ffn = gelu, residual_gain = 0.5 }")
    report = check_text(text, str(tmp_path / "t.sw"), host=Host(cuda=False))
    found = sorted((d.code, d.message, d.hint) for d in report.diagnostics)
    assert found == [
        ("SW212", "the pretrained GPT-2 has `vocab = 257, norm = layernorm, position = "
                  "learned`; this model leaves them unset (from the tokenizer, `norm = "
                  "rmsnorm` by default, `position = rope(theta = 10000)` by default)",
         "set `vocab = 257, norm = layernorm, position = learned` in `model { ... }`"),
        ("SW213", "block `layer` takes the pretrained layers, but it scales its residual "
                  "branches by 0.5",
         "the pretrained layers are `attention = mha(heads = 4, mode = causal), ffn = "
         "gelu(hidden = 256)`"),
    ]  # fmt: skip


def test_end_to_end_from_pretrained_is_not_told_its_init_does_nothing(tiny, tmp_path):
    report = check_text(GPT2.replace("DIR", str(tiny["gpt2"])), str(tmp_path / "t.sw"),
                        host=Host(cuda=False))  # fmt: skip
    assert report.diagnostics == ()

"""A pretrained token embedding alone (`model { embedding = hf(...) }`, the old framework's
lexical kernel): frozen, under a Linear-GELU-Linear adapter when it is not d_model wide."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from stackwise_dsl import estimate, runtime
from stackwise_dsl.cli import app
from stackwise_dsl.core.model import EmbeddingAdapter
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import plan_spec
from stackwise_dsl.frontend import check_text
from stackwise_dsl.machine.host import Host
from tests.conftest import ROOT

TINY = ROOT / "specs" / "models" / "tiny-llama"  # a Llama whose embedding is 257 x 64

ADAPTED = """model {
  d_model = 32, context = 32, vocab = 257, embed_dim = 64, head = untied, embedding = hf("DIR")
}
block layer { attention = mha(heads = 4, mode = causal), ffn = swiglu }
stack s = 1 x layer
objective = clm
grow prepend 2 x s { steps = 12, embeddings = train }
data { source = synthetic(task = copy), tokenizer = file("DIR/tokenizer.json"), batch = 8 }
optimizer = adamw(lr = 3e-3, warmup = 0)
run { seed = 0 }
"""

TIED = """model { d_model = 64, context = 32, vocab = 257, embedding = hf("DIR") }
block layer { attention = mha(heads = 4, mode = causal), ffn = gelu }
stack s = 1 x layer
objective = clm
grow append 2 x s { steps = 12 }
data { source = synthetic(task = copy), tokenizer = file("DIR/tokenizer.json"), batch = 8 }
optimizer = adamw(lr = 3e-3, warmup = 0)
run { seed = 0 }
"""


def _report(text: str, where, directory=TINY):
    return check_text(text.replace("DIR", str(directory)), str(where / "t.sw"),
                      host=Host(cuda=False))  # fmt: skip


def _plan(text: str, where):
    report = _report(text, where)
    assert report.ok, [(d.code, d.message) for d in report.diagnostics if d.is_error]
    assert report.diagnostics == ()
    return plan_spec(report.spec, "t")


def _trains(plan, trainer) -> list[tuple[int, int, bool]]:
    """Per stage: the weights that require a gradient, the plan's count of what trains, and
    whether the embedding requires one; each stage then trains."""
    out = []
    for stage in plan.stages:
        model = StageModel(plan, stage, trainer.store, trainer.device)
        wanted = sum(x.numel() for x in model.parameters() if x.requires_grad)
        counted = estimate.stage_count(plan, stage).trainable
        out.append((wanted, counted, model.rack.embed.weight.requires_grad))
        trainer.stage(stage.number)
    return out


def test_the_embedding_stays_frozen_and_its_adapter_trains(tmp_path):
    plan = _plan(ADAPTED, tmp_path)
    trainer = runtime.begin(plan, tmp_path / "run")
    theirs = load_file(TINY / "model.safetensors")["model.embed_tokens.weight"]
    assert torch.equal(trainer.store.shared["embed.weight"], theirs)
    first = StageModel(plan, plan.stages[0], trainer.store, trainer.device)
    assert isinstance(first.rack.embed_proj, EmbeddingAdapter)
    adapter = {k: v.clone() for k, v in first.rack.embed_proj.state_dict().items()}
    # the stack (16,448), the adapter (64 x 32 + 32 x 32 and biases: 3,136), the final norm
    # and the head (32 + 8,224) train; the table (257 x 64) does not
    assert _trains(plan, trainer) == [(27_840, 27_840, False), (27_840, 27_840, False)]
    assert torch.equal(trainer.store.shared["embed.weight"], theirs)
    for key, before in adapter.items():
        assert not torch.equal(trainer.store.shared[f"embed_proj.{key}"], before), key
    losses = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in losses if "val_loss" in r]
    assert vals == pytest.approx([4.8693, 4.0983], abs=2e-4)  # and it falls
    # transformers' Llama has no place for the adapter: export says so
    out = tmp_path / "hf"
    said = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--format", "hf",
                                    "-o", str(out)])  # fmt: skip
    assert said.exit_code != 0 and not out.exists()
    assert "its pretrained embedding enters through an adapter (Linear, GELU, Linear; " \
           "embed_dim 64, d_model 32)" in " ".join(said.output.split())  # fmt: skip


def test_a_tied_head_over_the_frozen_embedding_stays_frozen_too(tmp_path):
    plan = _plan(TIED, tmp_path)
    trainer = runtime.begin(plan, tmp_path / "run")
    theirs = trainer.store.shared["embed.weight"].clone()
    first = StageModel(plan, plan.stages[0], trainer.store, trainer.device)
    assert first.rack.embed_proj is None and first.rack.head is None
    # the new stack and the final norm train; the embedding (and so the head) does not
    assert _trains(plan, trainer) == [(49_344, 49_344, False), (49_344, 49_344, False)]
    assert torch.equal(trainer.store.shared["embed.weight"], theirs)


def test_check_compares_the_embedding_with_the_directory(tmp_path):
    def found(text: str, directory=TINY) -> list[tuple[str, str, str]]:
        report = _report(text, tmp_path, directory)
        return sorted((d.code, d.message, d.hint) for d in report.diagnostics)

    assert found(ADAPTED.replace("embed_dim = 64, ", "").replace("vocab = 257, ", "")) == [
        ("SW212", "the pretrained Llama's embedding has `vocab = 257`; this model leaves it "
                  "unset (from the tokenizer)", "set `vocab = 257` in `model { ... }`"),
        ("SW212", "the pretrained Llama's embedding is 64 wide; this model has no embed_dim "
                  "(d_model = 32)",
         "set `embed_dim = 64` in `model { ... }` (an adapter maps it to d_model)"),
    ]  # fmt: skip
    both = TIED.replace('embedding = hf("DIR")', 'pretrained = hf("DIR"), embedding = hf("DIR")')
    assert [x[0] for x in found(both)] == ["SW215"]
    bytes_ = TIED.replace('file("DIR/tokenizer.json")', "bytes")
    assert found(bytes_) == [
        ("SW216", "the data's tokenizer (bytes) is not the pretrained directory's "
                  "tokenizer.json: the token ids will not mean what its embedding rows mean",
         f'set `tokenizer = file("{TINY}/tokenizer.json")` in `data {{ ... }}` (a path '
         "relative to the spec file)"),
    ]  # fmt: skip
    # the same tokenizer written another way is the same tokenizer
    tok = json.loads((TINY / "tokenizer.json").read_text())
    (tmp_path / "indented.json").write_text(json.dumps(tok, indent=4))
    indented = TIED.replace('"DIR/tokenizer.json"', f'"{tmp_path / "indented.json"}"')
    assert found(indented) == []
    # a tied head is the embedding: only untying it helps, not dropping embed_dim (SW212)
    tied = ADAPTED.replace("head = untied", "head = tied")
    assert [(x[0], x[2]) for x in found(tied)] == [("SW206", "set `head = untied`")]
    # bytes for a masked objective: 258 ids, past the embedding's rows
    masked_bytes = bytes_.replace("objective = clm", "objective = mlm").replace(
        "mode = causal", "mode = bidirectional")  # fmt: skip
    assert [(x[0], x[2]) for x in found(masked_bytes) if x[0] != "SW216"] == [
        ("SW208", "the pretrained embedding has no row for the ids past its vocabulary: use the "
                  'directory\'s tokenizer, `file("DIR/tokenizer.json")`'),
    ]  # fmt: skip
    # a masked objective needs <mask>, which the directory's tokenizer lacks: no row for it
    mlm = TIED.replace("objective = clm", "objective = mlm").replace("mode = causal", "mode = "
                                                                     "bidirectional")  # fmt: skip
    assert found(mlm) == [
        ("SW208", "vocab (257) is smaller than the tokenizer file's 257 ids plus <mask>, which "
                  "the run adds",
         "the pretrained embedding has no row for <mask>: use a tokenizer and a directory "
         "that hold it, or an objective that needs no mask token"),
    ]  # fmt: skip


def test_what_only_the_layers_need_does_not_matter_for_the_embedding(tmp_path):
    """An activation or RoPE scaling our layers cannot compute refuses a whole pretrained
    model, not its embedding alone."""
    directory = tmp_path / "llama"
    shutil.copytree(TINY, directory)
    config = json.loads((directory / "config.json").read_text())
    config |= {"hidden_act": "gelu", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    (directory / "config.json").write_text(json.dumps(config))
    assert _report(TIED, tmp_path, directory).diagnostics == ()
    whole = TIED.replace('embedding = hf("DIR")', 'head = untied, pretrained = hf("DIR")')
    codes = [d.code for d in _report(whole, tmp_path, directory).diagnostics]
    assert codes == ["SW210"]


def test_a_missing_directory_warns_and_run_and_compile_refuse(tmp_path):
    (tmp_path / "t.sw").write_text(TIED.replace("DIR/tokenizer.json", str(TINY / "tokenizer.json"))
                                   .replace("DIR", "nowhere"))  # fmt: skip
    runner = CliRunner()
    checked = runner.invoke(app, ["check", str(tmp_path / "t.sw")])
    assert "warning[SW211]: there is no directory nowhere" in checked.output
    assert 'give it with `--set model.embedding.path="DIR"`' in checked.output
    ran = runner.invoke(app, ["run", str(tmp_path / "t.sw"), "--run-dir", str(tmp_path / "r")])
    assert ran.exit_code != 0
    assert "nowhere" in ran.output and "Traceback" not in ran.output
    compiled = runner.invoke(app, ["compile", str(tmp_path / "t.sw")])
    assert compiled.exit_code == 1
    assert "(model.pretrained, model.embedding)" in compiled.output

"""`sw export --format hf`: transformers loads what we write and computes our logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import stackwise_dsl
from stackwise_dsl import runtime
from stackwise_dsl.cli import app
from stackwise_dsl.data import plan_spec
from stackwise_dsl.frontend import check_text

transformers = pytest.importorskip("transformers")
SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"

LLAMA = """model { d_model = 64, context = 32, position = rope, head = HEAD, norm = rmsnorm }
block causal { attention = gqa(heads = 4, kv_heads = 2, mode = causal), ffn = swiglu }
stack layer = 2 x causal
objective = clm
grow append 2 x layer { steps = 3 STAGE }
data { source = stdlib, tokenizer = TOKENIZER, batch = 4 }
optimizer = adamw(lr = 3e-3)
run { seed = 0 }
"""

GPT2 = """model { d_model = 64, context = 32, position = learned, head = HEAD, norm = layernorm }
block causal { attention = mha(heads = 4, mode = causal), ffn = gelu }
stack layer = 2 x causal
objective = clm
grow append 2 x layer { steps = 3 }
data { source = text("DATA"), tokenizer = chars, batch = 4 }
optimizer = adamw(lr = 3e-3)
run { seed = 0 }
"""


def _run(text: str, where) -> object:
    report = check_text(text, str(where / "t.sw"))
    assert report.ok, [d.message for d in report.diagnostics if d.is_error]
    plan = plan_spec(report.spec, "t")
    run_dir = where / "run"
    runtime.run(plan, run_dir)
    return run_dir


def _export(run_dir, out) -> str:
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "hf", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return result.output


def _same_model(run_dir, out, text: str) -> tuple[float, list[int]]:
    """The largest logit difference between our model and transformers' on `text`, and
    transformers' greedy continuation (checked against ours)."""
    ours = stackwise_dsl.load(run_dir)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok(text)["input_ids"]
    assert ids == list(ours.encode(text))
    x = torch.tensor([ids[: ours.plan.model.context]])
    with torch.no_grad():
        gap = (theirs(x).logits - ours.model.logits(ours.model.hidden(x, None))).abs().max()
    generated = theirs.generate(x[:, :6], max_new_tokens=10, do_sample=False)[0].tolist()
    prompt = tok.decode(x[0, :6])
    assert tok.decode(generated) == ours.generate(prompt, max_new_tokens=10, temperature=0)[0]
    return float(gap), generated


@pytest.mark.parametrize(("head", "tokenizer"), [("tied", "bytes"), ("untied", "bpe(vocab = 300)")])
def test_a_llama_exports_and_transformers_gives_our_logits(tmp_path, head, tokenizer):
    text = LLAMA.replace("HEAD", head).replace("TOKENIZER", tokenizer).replace(" STAGE", "")
    if tokenizer.startswith("bpe"):  # trained on a few modules, not the whole library: fast
        corpus = tmp_path / "corpus.txt"
        files = sorted(Path(json.__file__).parent.glob("*.py"))
        corpus.write_text("".join(f.read_text(encoding="utf-8") for f in files))
        text = text.replace("source = stdlib", f'source = text("{corpus}")')
    run_dir = _run(text, tmp_path)
    said = _export(run_dir, tmp_path / "hf")
    assert said.startswith(f"{tmp_path / 'hf'}: a Llama model of 4 layers, ")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["head_dim"]) == (
        "llama", 2, 16)  # fmt: skip
    assert config["tie_word_embeddings"] is (head == "tied")
    gap, _ = _same_model(run_dir, tmp_path / "hf", "def main():\n    return 0  # é\n")
    assert gap < 1e-4


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs ../shared/data")
def test_a_gpt2_exports_with_its_characters(tmp_path):
    run_dir = _run(GPT2.replace("HEAD", "untied").replace("DATA", str(SHAKESPEARE)), tmp_path)
    said = _export(run_dir, tmp_path / "hf")
    assert said.startswith(f"{tmp_path / 'hf'}: a GPT-2 model of 4 layers, ")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["model_type"], config["n_inner"], config["vocab_size"]) == ("gpt2", 256, 65)
    gap, _ = _same_model(run_dir, tmp_path / "hf", "First Citizen:\nBefore we proceed any")
    assert gap < 1e-4


def test_adapters_are_merged_before_export(tmp_path):
    """A trunk LoRA trained in stage 2: transformers computes the model with it folded in."""
    text = LLAMA.replace("HEAD", "tied").replace("TOKENIZER", "bytes")
    text = text.replace(" STAGE", ", trunk { adapters, lora(rank = 4, alpha = 8) }").replace(
        "lr = 3e-3)", "lr = 3e-3, warmup = 0)"
    )
    run_dir = _run(text, tmp_path)
    said = _export(run_dir, tmp_path / "hf")
    assert said.rstrip().endswith("adapters merged: 0/trunk")
    gap, _ = _same_model(run_dir, tmp_path / "hf", "import os\nprint(os.getcwd())\n")
    assert gap < 1e-4


DOES_NOT_MAP = """model { d_model = 64, context = 32, embed_dim = 32, head = untied, position = rope,
        norm = layernorm }
block mla { attention = mla(heads = 4, q_rank = 32, kv_rank = 16), ffn = gelu, residual_gain = 0.5 }
block k { attention = kernel(heads = 4, kernel = laplacian, kernel_dim = 32), ffn = swiglu, spectral_norm = true }
stack a = 1 x mla
stack b = 1 x k
objective = masked_diffusion(time = input)
grow append a + b { steps = 2 }
data { source = stdlib, tokenizer = bytes, batch = 4 }
"""


def test_a_model_that_does_not_map_is_refused_with_every_reason(tmp_path):
    run_dir = _run(DOES_NOT_MAP, tmp_path)
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "hf", "-o",
                                      str(tmp_path / "hf")])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: the model does not map onto an architecture transformers knows (Llama or GPT-2):",
        "  - it trains with masked diffusion: transformers' causal LM classes predict the next "
        "token only",
        "  - it reads a time input (time-as-input diffusion)",
        "  - its embedding is factorised (embed_dim 32, d_model 64)",
        "  - block 'mla' (stack 0, block 0) uses latent attention (MLA)",
        "  - block 'mla' (stack 0, block 0) attends both ways (mode = bidirectional)",
        "  - block 'mla' (stack 0, block 0) scales its residual branches by 0.5",
        "  - block 'k' (stack 1, block 0) uses kernel attention",
        "  - block 'k' (stack 1, block 0) attends both ways (mode = bidirectional)",
        "  - block 'k' (stack 1, block 0) uses spectral norm",
        "  - its blocks differ in shape (heads 4, kv_heads 4, head_dim 16, gelu 256; heads 4, "
        "kv_heads 4, head_dim 16, swiglu 192): a transformers config has one layer shape",
        "  - Llama (chosen by position = rope) needs norm = rmsnorm, not layernorm",
        "  - Llama (chosen by position = rope) needs ffn = swiglu, not gelu",
    ]
    assert not (tmp_path / "hf").exists()


def test_bad_targets_are_refused_and_nothing_is_lost(tmp_path):
    run_dir = _run(LLAMA.replace("HEAD", "tied").replace("TOKENIZER", "bytes")
                   .replace(" STAGE", ""), tmp_path)  # fmt: skip
    runner = CliRunner()
    missing = runner.invoke(app, ["export", str(run_dir), "--format", "hf"])
    assert (missing.exit_code, missing.output) == (
        2, "error: --format hf writes a directory: name it with -o DIR\n")  # fmt: skip
    (tmp_path / "file").write_text("keep")
    a_file = runner.invoke(app, ["export", str(run_dir), "--format", "hf", "-o",
                                 str(tmp_path / "file")])  # fmt: skip
    assert (
        a_file.output == f"error: {tmp_path / 'file'} is a file: --format hf writes a directory\n"
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep")
    full = runner.invoke(app, ["export", str(run_dir), "--format", "hf", "-o",
                               str(tmp_path / "full")])  # fmt: skip
    assert "holds other files: name a new or empty directory" in full.output
    inside = runner.invoke(app, ["export", str(run_dir), "--format", "hf", "-o",
                                 str(run_dir / "hf")])  # fmt: skip
    assert "is inside the run being exported" in inside.output
    assert (tmp_path / "file").read_text() == "keep"
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep"
    assert {x.exit_code for x in (a_file, full, inside)} == {1}
    _export(run_dir, tmp_path / "hf")
    _export(run_dir, tmp_path / "hf")  # an earlier export is replaced
    assert sorted(x.name for x in (tmp_path / "hf").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "stackwise-export.json",
        "tokenizer.json", "tokenizer_config.json"]  # fmt: skip
    assert (tmp_path / "hf" / "model.safetensors").stat().st_mode & 0o044  # for sharing


def test_a_directory_that_is_not_our_export_is_never_replaced(tmp_path, monkeypatch):
    """A Hugging Face directory (config.json and all) that an export did not write is
    refused, and so is the working directory; nothing in either is touched."""
    run_dir = _run(LLAMA.replace("HEAD", "tied").replace("TOKENIZER", "bytes")
                   .replace(" STAGE", ""), tmp_path)  # fmt: skip
    runner = CliRunner()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"model_type": "llama"}')
    (theirs / "model.safetensors").write_text("weights")
    said = runner.invoke(app, ["export", str(run_dir), "--format", "hf", "-o", str(theirs)])
    assert said.exit_code == 1
    assert "holds other files: name a new or empty directory" in said.output
    assert (theirs / "model.safetensors").read_text() == "weights"
    inner = tmp_path / "work" / "inner"
    inner.mkdir(parents=True)
    (inner / "keep.txt").write_text("keep")
    monkeypatch.chdir(inner)
    for target in (".", ".."):
        said = runner.invoke(app, ["export", str(run_dir), "--format", "hf", "-o", target])
        assert said.exit_code == 1
        assert (
            said.output
            == f"error: {target} is (or holds) the working directory: name a new directory\n"
        )
    assert (inner / "keep.txt").read_text() == "keep"

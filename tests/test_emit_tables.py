"""Dispatch tables: a compiled script keeps only the implementations its plan looks up."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from typer.testing import CliRunner

from stackwise_dsl.cli import app
from stackwise_dsl.emit.extract import ExtractError, extract
from stackwise_dsl.frontend import check_file
from stackwise_dsl.lower import to_plan
from stackwise_dsl.lower.dispatch import NotCompiled, needs, pick
from stackwise_dsl.testing import specs
from tests.conftest import ROOT

runner = CliRunner()
MODEL = ["stackwise_dsl.ir.enums", "stackwise_dsl.lower.plan", "stackwise_dsl.lower.dispatch",
         "stackwise_dsl.core.seeds", "stackwise_dsl.core.layers",
         "stackwise_dsl.core.attention"]  # fmt: skip


def _tables() -> dict[str, dict]:
    """Every dispatch table of the runtime, as `sw run` uses it."""
    from stackwise_dsl.core import adapters, attention, model, objectives, optim, precision
    from stackwise_dsl.data import corpus, tokenizer
    from stackwise_dsl.estimate import flops
    from stackwise_dsl.runtime import train

    return {
        "ATTENTIONS": attention.ATTENTIONS, "FFNS": model.FFNS,
        "TIME_EMBEDDERS": model.TIME_EMBEDDERS, "FROZEN_LINEARS": precision.FROZEN_LINEARS,
        "NOISES": objectives.NOISES, "ADAPTERS": adapters.ADAPTERS, "MERGES": train.MERGES,
        "SOURCES": corpus.SOURCES, "TOKENIZERS": tokenizer.TOKENIZERS,
        "RESTORERS": tokenizer.RESTORERS,
        "OPTIMIZERS": optim.OPTIMIZERS, "CACHES": train.CACHES, "PREDICTED": flops.PREDICTED,
    }  # fmt: skip


def _plan(name: str):
    return to_plan(check_file(ROOT / "specs" / f"{name}.sw", []).spec, name=name, vocab=300)


def test_extract_keeps_only_the_table_entries_asked_for_and_the_code_they_use():
    every = extract(MODEL, ["make_attention"])
    dense = extract(MODEL, ["make_attention"], {"ATTENTIONS": {"dense"}})
    names = {name for _, name, _ in dense.definitions}
    assert {"SelfAttention", "make_attention", "attention_key", "pick"} <= names
    gone = {"LatentAttention", "KernelAttention", "LatentKernelAttention", "random_features",
            "kernel_average"}  # fmt: skip
    assert not names & gone and gone <= {name for _, name, _ in every.definitions}
    (table,) = [src for _, name, src in dense.definitions if name == "ATTENTIONS"]
    assert table == 'ATTENTIONS = {\n    "dense": SelfAttention,\n}'
    kernel = extract(MODEL, ["make_attention"], {"ATTENTIONS": {"kernel"}})
    names = {name for _, name, _ in kernel.definitions}
    assert {"KernelAttention", "SelfAttention", "random_features", "kernel_average"} <= names
    assert "LatentAttention" not in names
    empty = extract(MODEL, ["make_attention"], {"ATTENTIONS": set()})
    assert ("stackwise_dsl.core.attention", "ATTENTIONS", "ATTENTIONS = {}") in empty.definitions
    compile(dense.source, "dense.py", "exec")


def test_extract_ignores_unknown_keys_and_refuses_tables_that_are_not_dict_literals():
    unknown = extract(MODEL, ["make_attention"], {"ATTENTIONS": {"sparse", '"); import os'}})
    assert "ATTENTIONS = {}" in unknown.source  # selects nothing; the lookup says so at run time
    with pytest.raises(ExtractError, match="not a dict literal"):
        extract([*MODEL, "stackwise_dsl.core.model"], ["Rack"], {"INIT_STD": set()})
    with pytest.raises(ExtractError, match="0 of the modules define a table NOWHERE"):
        extract(MODEL, ["make_attention"], {"NOWHERE": set()})


@pytest.mark.parametrize(
    ("spec", "table", "keys"),
    [
        ("tiny", "ATTENTIONS", {"dense"}), ("tiny", "FROZEN_LINEARS", set()),
        ("tiny", "ADAPTERS", set()), ("tiny", "NOISES", {"clm"}),
        ("attention", "ATTENTIONS", {"latent", "kernel", "latent_kernel"}),
        ("attention", "SOURCES", {"stdlib"}), ("attention", "NOISES", {"mlm"}),
        ("diffusion", "FROZEN_LINEARS", {"nf4"}), ("diffusion", "ADAPTERS", {"lora"}),
        ("diffusion", "NOISES", {"masked_diffusion/depth"}), ("diffusion", "CACHES", set()),
        ("bert", "TOKENIZERS", {"bpe"}), ("bert", "CACHES", {"memory"}), ("shakespeare", "TOKENIZERS", {"chars"}), ("shakespeare", "SOURCES", {"textfiles"}),
        ("shakespeare", "RESTORERS", {"chars"}), ("tiny", "RESTORERS", {"bytes"}),
    ],
)  # fmt: skip
def test_needs_lists_what_each_shipped_spec_looks_up(spec, table, keys):
    assert needs(_plan(spec))[table] == keys


def test_needs_covers_exactly_the_runtime_tables():
    assert set(needs(_plan("tiny"))) == set(_tables())


@settings(max_examples=60, deadline=None)
@given(spec=specs())
def test_every_key_a_plan_needs_is_an_entry_of_its_table(spec):
    """The key functions and the tables agree for any valid spec: `sw run` never meets a
    key its tables lack, and pruning never asks for an entry that does not exist."""
    tables = _tables()
    for table, keys in needs(to_plan(spec, vocab=300)).items():
        assert keys <= set(tables[table]), (table, keys)


def test_pick_names_what_is_missing():
    assert pick({"a": 1}, "a", "thing") == 1
    with pytest.raises(NotCompiled, match="no optimizer `sgd`: it was compiled from a spec"):
        pick({"adamw": 1}, "sgd", "optimizer")


def _script(spec: str, tmp_path) -> str:
    out = tmp_path / f"{spec}.py"
    result = runner.invoke(app, ["compile", str(ROOT / "specs" / f"{spec}.sw"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_scripts_hold_the_implementations_their_spec_uses_and_no_others(tmp_path):
    tiny, diffusion = _script("tiny", tmp_path), _script("diffusion", tmp_path)
    for absent in ["class LatentAttention", "class KernelAttention", "def random_features",
                   "class NVFP4Linear", "class RowInt8Linear", "def _bnb_4bit", "def attach(",
                   "from peft", "import bitsandbytes", "class GeluFfn", "class SinusoidalTime",
                   "def merge_store", "class ActivationCache", "class HfTokenizer",
                   "def stdlib_files", "def _input_noise", "def ratio_at"]:  # fmt: skip
        assert absent not in tiny, absent
    for present in ["def _bnb_4bit", "def attach(", "from peft import", "import bitsandbytes",
                    "def _depth_noise"]:  # fmt: skip
        assert present in diffusion, present
    for absent in ["class NVFP4Linear", "def _int8", "class KernelAttention", "def _sgd"]:
        assert absent not in diffusion, absent
    from stackwise_dsl.emit.script import runtime_code

    ours = {name for _, name, _ in runtime_code(needs(_plan("tiny"))).definitions}
    assert ours < {name for _, name, _ in runtime_code().definitions}  # a strict subset


def test_a_script_whose_plan_asks_for_what_it_was_not_compiled_with_says_so(tmp_path):
    adamw = '"method": {"kind": "AdamW", "betas": [0.9, 0.999], "eps": 1e-08}'
    sgd = '"method": {"kind": "Sgd", "momentum": 0.0, "nesterov": False}'
    text = _script("tiny", tmp_path)
    assert adamw in text
    text = text.replace(adamw, sgd, 1)
    script = tmp_path / "edited.py"
    script.write_text(text)
    result = subprocess.run([sys.executable, str(script), "--max-steps", "1", "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert ("plan.optimizer.method is 'Sgd', which this program was not compiled for (only "
            "AdamW)") in result.stderr  # fmt: skip
    assert "Traceback" not in result.stderr


def test_a_script_without_adapters_runs_with_torch_numpy_and_safetensors_alone(tmp_path):
    """tiny.sw (no LoRA, no quantization, bytes): peft, bitsandbytes, tokenizers, matplotlib
    and our package are never imported; everything but the plot is written."""
    script = tmp_path / "tiny.py"
    script.write_text(_script("tiny", tmp_path))
    blocked = (
        "import runpy, sys\n"
        "for name in ('stackwise_dsl', 'peft', 'bitsandbytes', 'tokenizers', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", blocked, str(script), "--max-steps", "2",
                             "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {"spec.sw", "plan.json", "run.json", "metrics.jsonl", "checkpoints",
                     "summary.json", "tokenizer.json"}  # fmt: skip


@pytest.mark.parametrize(("edit", "said"), [
    (('"d_model": 32,', '"d_model": "32",'), "this script's PLAN is wrong: plan.model.d_model is '32', not a whole number"),
    (('"eval_batches": 8,', '"eval_batches": 8, "eval_evry": 1,'), "this script's PLAN is wrong: plan.run has `eval_evry`, which is no field of a Run"),
    (('"log_every": 25,', '"log_evry": 25,'), "this script's PLAN is wrong: plan.run has no `log_every`"),
    (('"number": 2,', '"number": 3,'), "this script's PLAN is wrong: plan.stages[1].number is 3, not 2"),
])  # fmt: skip
def test_a_script_whose_plan_was_edited_wrong_says_what_is_wrong(tmp_path, edit, said):
    text = _script("tiny", tmp_path)
    assert edit[0] in text
    script = tmp_path / "edited.py"
    script.write_text(text.replace(edit[0], edit[1], 1))
    result = subprocess.run([sys.executable, str(script), "--max-steps", "1", "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_script_refuses_to_resume_with_other_flags(tmp_path):
    script = tmp_path / "t.py"
    script.write_text(_script("tiny", tmp_path))
    for flags in (["--max-steps", "1"], ["--run-dir", str(tmp_path / "other")]):
        result = subprocess.run([sys.executable, str(script), "--resume", str(tmp_path / "r"),
                                 *flags], capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 2 and "leave out --max-steps and --run-dir" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ('"precision": "fp32"', '"precision": "bf16"', "compiled without a stack held or "
         "trained in a precision other than fp32 (low_precision), which its plan asks for"),
        ('"created_in": 1,', '"created_in": 1, "stack_lora": {"rank": 4, "alpha": 8.0, '
         '"dropout": 0.0, "targets": ["q"]},', "plan.stacks[0].stack_lora is {'rank': 4, "),
        ('"init": "random", "cache": "off"', '"init": "random", "cache": "memory"',
         "compiled without the entry of CACHES for memory (CACHES:memory), which its plan asks"),
    ],
)  # fmt: skip
def test_a_script_refuses_a_plan_edited_to_use_code_it_left_out(old, new, said, tmp_path):
    """tiny.sw's script holds no adapter and no reduced-precision code (specialize.py): a
    PLAN edited to need them is refused before anything runs, never trained without them."""
    text = _script("tiny", tmp_path)
    for absent in ("def adapter_parameters", "def _attach_adapters", "class Lora", "autocast",
                   "def freeze_into"):  # fmt: skip
        assert absent not in text, absent
    assert old in text
    script = tmp_path / "edited.py"
    script.write_text(text.replace(old, new, 1))
    result = subprocess.run([sys.executable, str(script), "--max-steps", "1", "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert said in result.stderr and not (tmp_path / "run").exists()

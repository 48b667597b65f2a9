"""`sw export RUN_DIR --format hf -o DIR`: a run's model as a Hugging Face directory that
transformers loads (`AutoModelForCausalLM.from_pretrained(DIR)`), with its tokenizer.

Written: config.json (through transformers' own config class, so the fields are the ones the
installed version reads), model.safetensors (fp32, adapters merged into the masters first),
tokenizer.json with tokenizer_config.json (transformers' fast tokenizer), and
generation_config.json. The directory is written beside its target and renamed into place,
so an interrupted export leaves no half directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from stackwise_dsl.hf import LLAMA, HfError, fit, rack_blocks, tied
from stackwise_dsl.hf.layout import to_hf
from stackwise_dsl.lower import plan as p


def hf_tensors(plan: p.Plan, stage: p.Stage, flat: dict[str, torch.Tensor],
               family: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """Our flat weights (`shared/...`, `stack/N/...`) under `family`'s names."""
    shared = {k.removeprefix("shared/"): v for k, v in flat.items() if k.startswith("shared/")}
    layers = []
    for position, i, _ in rack_blocks(plan, stage):
        at = f"stack/{position}/blocks.{i}."
        layers.append({k.removeprefix(at): v for k, v in flat.items() if k.startswith(at)})
    return to_hf(family, shared, layers, tied=tied(plan))


def hf_config(plan: p.Plan, stage: p.Stage, family: str, specials: dict[str, int]):
    """transformers' config for the model `stage` ends with."""
    m = plan.model
    blocks = rack_blocks(plan, stage)
    a, ffn = blocks[0][2].attention, blocks[0][2].ffn
    ids = {"eos_token_id": specials.get("eos"), "bos_token_id": None, "pad_token_id": None}
    if family == LLAMA:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=m.vocab, hidden_size=m.d_model, intermediate_size=ffn.hidden,
            num_hidden_layers=len(blocks), num_attention_heads=a.heads,
            num_key_value_heads=a.kv_heads, head_dim=a.head_dim, hidden_act="silu",
            max_position_embeddings=m.context, rms_norm_eps=1e-6, rope_theta=m.position.theta,
            tie_word_embeddings=tied(plan), attention_bias=False, mlp_bias=False,
            attention_dropout=0.0, architectures=["LlamaForCausalLM"], **ids,
        )  # fmt: skip
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=m.vocab, n_positions=m.context, n_embd=m.d_model, n_layer=len(blocks),
        n_head=a.heads, n_inner=ffn.hidden, activation_function="gelu",
        resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=tied(plan),
        architectures=["GPT2LMHeadModel"], **ids,
    )  # fmt: skip


def hf_tokenizer(saved: dict, vocab: int):
    """A `tokenizers` Tokenizer giving the ids ours gives (bytes, characters, or our own
    `tokenizers` model), with our specials at their ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    names = list(saved.get("specials", []))
    kind = saved["kind"]
    if kind == "tokenizers":
        return Tokenizer.from_str(saved["json"])
    if kind == "bytes":
        # byte-level BPE without merges: one token per byte, id = the byte's value
        table = _bytes_to_unicode()
        vocab_map = {table[b]: b for b in range(256)}
        tok = Tokenizer(models.BPE(vocab=vocab_map, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    else:  # characters: one token per character, in our order
        vocab_map = {c: i for i, c in enumerate(saved["chars"])}
        tok = Tokenizer(models.WordLevel(vocab=vocab_map, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
    tok.add_special_tokens(names)
    if tok.get_vocab_size(with_added_tokens=True) > vocab:
        raise HfError(f"the run's tokenizer gives {tok.get_vocab_size(with_added_tokens=True)} "
                      f"ids, more than its model's {vocab}")  # fmt: skip
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest are moved
    to code points from 256 on (the table every byte-level BPE uses)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def export_hf(run_dir: Path, out: Path) -> dict:
    """Write the latest checkpoint's model as a Hugging Face directory `out`. HfError (with
    every reason) when the model does not map onto Llama or GPT-2."""
    from safetensors.torch import save_file

    from stackwise_dsl.runtime import checkpoint
    from stackwise_dsl.runtime.merge import MergeError, merge_store
    from stackwise_dsl.use import tokenizer_of

    plan = checkpoint.load_plan(run_dir)
    last = checkpoint.latest(Path(run_dir))
    if last is None:
        raise MergeError(f"{run_dir} has no checkpoint to export")
    stage = plan.stages[checkpoint.read_state(last, plan)["stage"] - 1]
    found = fit(plan, stage)
    if found.family is None:
        reasons = "\n".join(f"  - {r}" for r in found.reasons)
        raise HfError(f"the model does not map onto an architecture transformers knows (Llama "
                      f"or GPT-2):\n{reasons}")  # fmt: skip
    _check_target(Path(run_dir), out)
    store, _, state, _ = checkpoint.load(last, plan, optimizer=False)
    merged = merge_store(store, plan, state["stage"])
    flat = store.flat(with_on_disk=True)
    tensors = hf_tensors(plan, stage, flat, found.family)
    tokenizer = tokenizer_of(Path(run_dir), plan)
    specials = {k: v for k, v in (("eos", tokenizer.specials.eos),
                                  ("mask", tokenizer.specials.mask)) if v is not None}  # fmt: skip
    config = hf_config(plan, stage, found.family, specials)
    tok = hf_tokenizer(tokenizer.saved(), plan.model.vocab)
    out = Path(os.path.abspath(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise MergeError(f"cannot write {out} ({e.strerror or e})") from None
    try:
        config.save_pretrained(tmp)
        _generation_config(config, tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save(str(tmp / "tokenizer.json"))
        settings = {"tokenizer_class": "PreTrainedTokenizerFast",
                    "model_max_length": plan.model.context,
                    "clean_up_tokenization_spaces": False}  # fmt: skip
        if "eos" in specials:
            settings["eos_token"] = "<eos>"
        if "mask" in specials:
            settings["mask_token"] = "<mask>"
        (tmp / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
        (tmp / MARK).write_text(json.dumps({"run": str(Path(run_dir).resolve()),
                                            "checkpoint": last.name}, indent=2) + "\n")  # fmt: skip
        mode = 0o666 & ~_umask()  # an export is for sharing (mkdtemp and safetensors: 0600)
        for file in tmp.iterdir():
            file.chmod(mode)
        tmp.chmod(0o777 & ~_umask())
        _swap_in(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MergeError(f"cannot write {out} ({e.strerror or e})") from None
    return {
        "directory": str(out), "family": found.family, "checkpoint": last.name,
        "stage": state["stage"], "stage_done": state["stage_done"],
        "merged": [f"{pos}/{name}" for pos, name in merged],
        "parameters": sum(t.numel() for t in flat.values()),
        "layers": len(rack_blocks(plan, stage)),
    }  # fmt: skip


def _generation_config(config, where: Path) -> None:
    from transformers import GenerationConfig

    GenerationConfig.from_model_config(config).save_pretrained(where)


MARK = "stackwise-export.json"  # what marks a directory as an export this tool may replace


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished directory `tmp` at `out`: renamed into place, an earlier export there
    moved aside first and removed only once the new one stands."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old / out.name, out)
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_target(run_dir: Path, out: Path) -> None:
    """`out` is a new or empty directory, or one an earlier `--format hf` export wrote (it
    holds MARK and nothing else but what an export writes); never a file, the run, a folder
    holding the run or the working directory, or a directory holding anything else."""
    from stackwise_dsl.runtime.merge import MergeError

    run = run_dir.resolve()
    target = out.resolve()
    if target == run or run.is_relative_to(target) or target.is_relative_to(run):
        raise MergeError(f"{out} is inside the run being exported (or holds it): name a "
                         "directory outside it")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise MergeError(f"{out} is a file: --format hf writes a directory")
    if Path.cwd().resolve().is_relative_to(target):
        raise MergeError(f"{out} is (or holds) the working directory: name a new directory")
    if out.is_dir() and any(out.iterdir()):
        names = {p.name for p in out.iterdir()}
        if MARK not in names or names - EXPORTED:
            raise MergeError(f"{out} holds other files: name a new or empty directory (only "
                             "an earlier `sw export --format hf` is replaced)")  # fmt: skip


EXPORTED = {MARK, "config.json", "generation_config.json", "model.safetensors",
            "tokenizer.json", "tokenizer_config.json"}  # fmt: skip


def _umask() -> int:
    from stackwise_dsl.runtime.merge import _umask as umask

    return umask()

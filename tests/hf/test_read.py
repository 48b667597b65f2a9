"""Reading a local Hugging Face directory: its config and tensor shapes without torch, its
weights in our names, and back."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from stackwise_dsl.hf import HfError
from stackwise_dsl.hf.layout import to_hf
from stackwise_dsl.hf.load import pretrained_weights
from stackwise_dsl.hf.read import read_pretrained

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.hf.tiny import make

    root = tmp_path_factory.mktemp("hf")
    return {family: make(family, root / f"tiny-{family}") for family in ("llama", "gpt2")}


def test_the_config_in_our_terms(tiny):
    llama = read_pretrained(tiny["llama"])
    assert (llama.family, llama.vocab, llama.d_model, llama.layers, llama.heads, llama.kv_heads,
            llama.head_dim, llama.hidden, llama.context, llama.theta, llama.tied, llama.eos) == (
        "llama", 257, 64, 4, 4, 2, 16, 160, 64, 10000.0, False, 256)  # fmt: skip
    gpt2 = read_pretrained(tiny["gpt2"])
    assert (gpt2.family, gpt2.d_model, gpt2.kv_heads, gpt2.head_dim, gpt2.hidden, gpt2.tied) == (
        "gpt2", 64, 4, 16, 256, True)  # fmt: skip


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_import_then_export_gives_identical_tensors(tiny, family):
    m = read_pretrained(tiny[family])
    shared, layers = pretrained_weights(m)
    again = to_hf(family, shared, layers, tied=m.tied)
    original = load_file(str(tiny[family] / "model.safetensors"))
    assert again.keys() == original.keys()
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_what_cannot_be_read_is_said(tiny, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny["llama"], bad)
    config = json.loads((bad / "config.json").read_text())
    config |= {"hidden_act": "gelu", "rms_norm_eps": 1e-5, "intermediate_size": 128,
               "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}  # fmt: skip
    config.pop("rope_parameters", None)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(HfError) as e:
        read_pretrained(bad)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{bad} cannot be used:"
    assert lines[1:5] == [
        "  - config.json: RoPE scaling 'yarn': stackwise-dsl's RoPE is the plain one",
        "  - config.json: hidden_act 'gelu': SwiGLU uses silu",
        "  - config.json: rms_norm_eps is 1e-05: stackwise-dsl's RMSNorm uses 1e-06",
        "  - tensor model.layers.0.mlp.gate_proj.weight is [160, 64], the config says [128, 64]",
    ]
    assert len(lines) == 5 + 11  # three ffn matrices in 4 layers: 12 shapes
    (bad / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(HfError, match=r"is not a safetensors file \(its header says"):
        read_pretrained(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(HfError, match=r"has no model\.safetensors \(nor an index of shards\); it "
                                      "holds config.json, "):  # fmt: skip
        read_pretrained(bad)
    (bad / "config.json").write_text("{")
    with pytest.raises(HfError, match=r"config\.json cannot be read"):
        read_pretrained(bad)
    with pytest.raises(HfError, match="is not a directory"):
        read_pretrained(tmp_path / "nothing")


def test_a_gpt2_with_biases_is_refused_when_its_weights_are_read(tiny, tmp_path):
    biased = tmp_path / "biased"
    shutil.copytree(tiny["gpt2"], biased)
    tensors = load_file(str(biased / "model.safetensors"))
    tensors["transformer.h.1.attn.c_attn.bias"] += 0.1
    save_file(tensors, str(biased / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(HfError, match=r"^a bias is not zero \(transformer.h.1.attn.c_attn.bias\): "
                                      "stackwise-dsl's layers have no bias"):  # fmt: skip
        pretrained_weights(read_pretrained(biased))


def test_a_file_cut_short_and_heads_we_cannot_express_are_found_without_the_weights(tiny, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(tiny["llama"], cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[:-1000])
    with pytest.raises(HfError, match=r"model\.safetensors is cut short: its header places "
                                      r"tensors up to byte [\d,]+ of the data, which holds"):  # fmt: skip
        read_pretrained(cut)
    wide = tmp_path / "wide"
    shutil.copytree(tiny["llama"], wide)
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(
        json.dumps(config | {"head_dim": 32, "num_key_value_heads": None})
    )
    with pytest.raises(HfError) as e:
        read_pretrained(wide)
    assert str(e.value).splitlines()[1:3] == [
        "  - config.json: num_key_value_heads is null, not a positive whole number",
        "  - config.json: 4 heads of head_dim 32 are not hidden_size 64 wide: stackwise-dsl's "
        "heads are d_model / heads wide",
    ]


def test_damaged_fields_are_problems_not_crashes(tiny, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny["llama"], bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(config | {"rope_parameters": 5}))
    assert read_pretrained(bad).theta == 10000.0  # an unusable rope section: the default
    (bad / "model.safetensors.index.json").write_text('{"weight_map": {"x": 3}}')
    with pytest.raises(HfError, match="has no weight_map of tensor names to file names"):
        read_pretrained(bad)

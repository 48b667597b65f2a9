"""A local Hugging Face directory, read without torch and without reading its weights: its
config.json and the headers of its safetensors files (one file or an index of shards), with
every tensor's shape checked against the config. `sw check` uses it for a spec that starts
from pretrained weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import attrs

from stackwise_dsl.hf import GPT2, LLAMA, HfError

HEADER_LIMIT = 100 * 2**20  # a safetensors header larger than this is not one


@attrs.frozen
class Pretrained:
    """What a directory's config.json says of its model, in our terms, and where each tensor
    is (file and shape)."""

    path: str
    family: str
    vocab: int
    d_model: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    context: int
    theta: float | None  # Llama's RoPE base
    tied: bool
    eos: int | None
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name -> (file, shape)


def read_pretrained(path: str | Path, *, embedding_only: bool = False) -> Pretrained:
    """The directory's model; HfError listing every problem found (`embedding_only`: those
    that concern its token embedding, for a model that takes that alone)."""
    root = Path(path)
    if not root.is_dir():
        raise HfError(f"{path} is not a directory (a Hugging Face model directory holds "
                      "config.json and model.safetensors)")  # fmt: skip
    config = _json(root / "config.json")
    kind = config.get("model_type")
    if kind not in (LLAMA, GPT2):
        raise HfError(f"{root / 'config.json'}: model_type {kind!r} is not one stackwise-dsl "
                      "reads (llama, gpt2)")  # fmt: skip
    problems: list[str] = []
    layers: list[str] = []  # what only its layers' use is hindered by
    read = _llama if kind == LLAMA else _gpt2
    fields = read(config, problems, layers)
    tensors = _headers(root)
    pretrained = (
        Pretrained(path=str(root), family=kind, tensors=tensors, **fields) if fields else None
    )
    if not embedding_only:
        problems += layers
    if pretrained is not None:
        problems += _shapes(pretrained, embedding_only)
    if problems:
        raise HfError(f"{root} cannot be used:\n" + "\n".join(f"  - {p}" for p in problems))
    return pretrained


def _json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HfError(f"{file} is missing") from None
    except (OSError, ValueError) as e:
        raise HfError(f"{file} cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise HfError(f"{file} is not a JSON object")
    return data


def _int(config: dict, key: str, problems: list[str], default=None) -> int | None:
    value = config.get(key, default)
    if key not in config and value is None:
        problems.append(f"config.json has no {key}")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"config.json: {key} is {json.dumps(value)}, not a positive whole number")
        return None
    return value


def _llama(config: dict, problems: list[str], layers: list[str]) -> dict | None:
    d = _int(config, "hidden_size", problems)
    heads = _int(config, "num_attention_heads", problems)
    fields = {
        "vocab": _int(config, "vocab_size", problems),
        "d_model": d,
        "layers": _int(config, "num_hidden_layers", problems),
        "heads": heads,
        "kv_heads": _int(config, "num_key_value_heads", problems, heads),
        "head_dim": _int(config, "head_dim", problems, d // heads if d and heads else None),
        "hidden": _int(config, "intermediate_size", problems),
        "context": _int(config, "max_position_embeddings", problems),
        "tied": bool(config.get("tie_word_embeddings", False)),
        "eos": _eos(config),
    }
    rope, scaling = (config.get(key) for key in ("rope_parameters", "rope_scaling"))
    rope = rope if isinstance(rope, dict) else {}
    scaling = scaling if isinstance(scaling, dict) else {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if kind != "default":
        layers.append(f"config.json: RoPE scaling {kind!r}: stackwise-dsl's RoPE is the plain one")
    if not isinstance(theta, int | float) or isinstance(theta, bool) or theta <= 0:
        layers.append(f"config.json: rope_theta is {theta!r}, not a positive number")
    if config.get("hidden_act", "silu") != "silu":
        layers.append(f"config.json: hidden_act {config.get('hidden_act')!r}: SwiGLU uses silu")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            layers.append(f"config.json: {key} is true: stackwise-dsl's layers have no bias")
    if fields["head_dim"] and heads and d and fields["head_dim"] * heads != d:
        layers.append(f"config.json: {heads} heads of head_dim {fields['head_dim']} are not "
                        f"hidden_size {d} wide: stackwise-dsl's heads are d_model / heads "
                        "wide")  # fmt: skip
    eps = config.get("rms_norm_eps", 1e-6)
    if eps != 1e-6:
        layers.append(f"config.json: rms_norm_eps is {eps}: stackwise-dsl's RMSNorm uses 1e-06")
    fields["theta"] = float(theta) if isinstance(theta, int | float) else None
    return (
        None if any(v is None for k, v in fields.items() if k not in ("eos", "theta")) else fields
    )


def _gpt2(config: dict, problems: list[str], layers: list[str]) -> dict | None:
    d = _int(config, "n_embd", problems)
    heads = _int(config, "n_head", problems)
    fields = {
        "vocab": _int(config, "vocab_size", problems), "d_model": d,
        "layers": _int(config, "n_layer", problems), "heads": heads, "kv_heads": heads,
        "head_dim": d // heads if d and heads else 0,
        "hidden": _int(config, "n_inner", problems) if config.get("n_inner") is not None
        else (4 * d if d else None),
        "context": _int(config, "n_positions", problems),
        "tied": bool(config.get("tie_word_embeddings", True)), "eos": _eos(config),
        "theta": None,
    }  # fmt: skip
    act = config.get("activation_function", "gelu_new")
    if act != "gelu":
        layers.append(f"config.json: activation_function {act!r}: stackwise-dsl's GELU is the "
                        "exact one (gelu)")  # fmt: skip
    if config.get("layer_norm_epsilon", 1e-5) != 1e-5:
        layers.append(f"config.json: layer_norm_epsilon is {config.get('layer_norm_epsilon')}: "
                        "stackwise-dsl's LayerNorm uses 1e-05")  # fmt: skip
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(key):
            layers.append(f"config.json: {key} is true: stackwise-dsl's attention does not")
    if d and heads and d % heads:
        layers.append(f"config.json: n_embd {d} is not a multiple of n_head {heads}")
    return (
        None if any(v is None for k, v in fields.items() if k not in ("eos", "theta")) else fields
    )


def _eos(config: dict) -> int | None:
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return eos if isinstance(eos, int) and not isinstance(eos, bool) else None


def _headers(root: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor's file and shape, from model.safetensors or the index of its shards."""
    index = root / "model.safetensors.index.json"
    if index.exists():
        weight_map = _json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise HfError(f"{index} has no weight_map of tensor names to file names")
        files = sorted(set(weight_map.values()))
    elif (root / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        found = ", ".join(sorted(p.name for p in root.iterdir())[:8]) or "nothing"
        raise HfError(f"{root} has no model.safetensors (nor an index of shards); it holds "
                      f"{found}. A PyTorch .bin checkpoint is not read: save it as "
                      "safetensors")  # fmt: skip
    out = {}
    for name in files:
        for tensor, shape in header(root / name).items():
            out[tensor] = (name, shape)
    return out


def header(file: Path) -> dict[str, tuple[int, ...]]:
    """A safetensors file's tensors and shapes, from its header alone (8 bytes of length,
    then JSON)."""
    try:
        with open(file, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise HfError(f"{file} is not a safetensors file (too short)")
            (size,) = struct.unpack("<Q", raw)
            if size > HEADER_LIMIT:
                raise HfError(f"{file} is not a safetensors file (its header says {size:,} bytes)")
            data = json.loads(f.read(size).decode("utf-8"))
    except FileNotFoundError:
        raise HfError(f"{file} is missing") from None
    except (OSError, ValueError) as e:
        raise HfError(f"{file} is not a safetensors file ({e})") from None
    if not isinstance(data, dict):
        raise HfError(f"{file} is not a safetensors file (its header is not an object)")
    out, end = {}, 0
    for name, info in data.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
            raise HfError(f"{file}: tensor {name!r} has no shape in the header")
        offsets = info.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2 and isinstance(offsets[1], int):
            end = max(end, offsets[1])
        out[name] = tuple(shape)
    held = file.stat().st_size - 8 - size
    if end > held:
        raise HfError(f"{file} is cut short: its header places tensors up to byte {end:,} of "
                      f"the data, which holds {held:,}")  # fmt: skip
    return out


def expected_shapes(m: Pretrained) -> dict[str, tuple[int, ...]]:
    """The tensors a directory of this config must hold, with their shapes (biases of GPT-2,
    which we read and require to be zero, included)."""
    d, hd, hidden = m.d_model, m.head_dim, m.hidden
    out: dict[str, tuple[int, ...]] = {}
    if m.family == LLAMA:
        out |= {"model.embed_tokens.weight": (m.vocab, d), "model.norm.weight": (d,)}
        for n in range(m.layers):
            at = f"model.layers.{n}."
            out |= {
                at + "input_layernorm.weight": (d,), at + "post_attention_layernorm.weight": (d,),
                at + "self_attn.q_proj.weight": (m.heads * hd, d),
                at + "self_attn.k_proj.weight": (m.kv_heads * hd, d),
                at + "self_attn.v_proj.weight": (m.kv_heads * hd, d),
                at + "self_attn.o_proj.weight": (d, m.heads * hd),
                at + "mlp.gate_proj.weight": (hidden, d), at + "mlp.up_proj.weight": (hidden, d),
                at + "mlp.down_proj.weight": (d, hidden),
            }  # fmt: skip
    else:
        out |= {"transformer.wte.weight": (m.vocab, d), "transformer.wpe.weight": (m.context, d),
                "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)}  # fmt: skip
        for n in range(m.layers):
            at = f"transformer.h.{n}."
            out |= {
                at + "ln_1.weight": (d,), at + "ln_1.bias": (d,),
                at + "ln_2.weight": (d,), at + "ln_2.bias": (d,),
                at + "attn.c_attn.weight": (d, 3 * d), at + "attn.c_attn.bias": (3 * d,),
                at + "attn.c_proj.weight": (d, d), at + "attn.c_proj.bias": (d,),
                at + "mlp.c_fc.weight": (d, hidden), at + "mlp.c_fc.bias": (hidden,),
                at + "mlp.c_proj.weight": (hidden, d), at + "mlp.c_proj.bias": (d,),
            }  # fmt: skip
    if not m.tied:
        out["lm_head.weight"] = (m.vocab, d)
    return out


EMBEDDING = {LLAMA: "model.embed_tokens.weight", GPT2: "transformer.wte.weight"}


def _shapes(m: Pretrained, embedding_only: bool = False) -> list[str]:
    problems = []
    names = {_plain(k): k for k in m.tensors}
    expected = expected_shapes(m)
    if embedding_only:
        expected = {EMBEDDING[m.family]: expected[EMBEDDING[m.family]]}
    for name, shape in expected.items():
        if name not in names:
            problems.append(f"tensor {name} is missing")
        elif m.tensors[names[name]][1] != shape:
            got = m.tensors[names[name]][1]
            problems.append(f"tensor {name} is {list(got)}, the config says {list(shape)}")
    return problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])


def _plain(name: str) -> str:
    """A GPT-2 saved by GPT2Model has no `transformer.` prefix; name it as GPT2LMHeadModel."""
    if name.startswith(("h.", "wte.", "wpe.", "ln_f.")):
        return "transformer." + name
    return name

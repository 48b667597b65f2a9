"""A model that starts from a local Hugging Face directory (`model.pretrained`): the model's
settings and the blocks of the stacks that take its layers (`init = pretrained`) must be the
directory's, which hf/read.py reads from config.json and the safetensors headers (no weights,
no torch; machine/host.py looks, as for the data files)."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.hf import LLAMA
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Head, Init, Norm
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.ir.walk import ffn_hidden


def pretrained_positions(facts: Facts) -> list[int]:
    """The rack positions (input side first) of the stacks created with `init = pretrained`:
    they take the directory's layers in this order."""
    made = {p for v in facts.stages if not v.fuse and v.settings.init is Init.PRETRAINED
            for p in v.new}  # fmt: skip
    return sorted(made)


def check_pretrained_init(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`init = pretrained` takes layers from `model.pretrained`, which must be given."""
    if facts.spec.model.pretrained is not None:
        return
    for view in facts.stages:
        if not view.fuse and view.settings.init is Init.PRETRAINED:
            yield diag.error(
                "SW209",
                f"{view.name} starts its new stack from pretrained layers, but the model names "
                "no pretrained directory",
                n.at(view.settings, "init"),
                hint='add `pretrained = hf("path/to/model")` to `model { ... }`, or choose '
                "another init",
            )


def check_one_directory(facts: Facts) -> Iterator[diag.Diagnostic]:
    """`model.pretrained` gives the model its embedding already; `model.embedding` is for a
    model that takes the embedding alone."""
    m = facts.spec.model
    if m.pretrained is not None and m.embedding is not None:
        yield diag.error(
            "SW215",
            "the model names a pretrained directory and a pretrained embedding; the "
            "pretrained model's embedding is its own",
            n.at(m, "embedding"),
            hint="remove `embedding` (a model from `pretrained` starts from the directory's "
            "embedding and trains it), or remove `pretrained` to take the embedding alone",
            notes=(
                diag.Note(
                    message="the pretrained directory is named here", span=n.at(m, "pretrained")
                ),
            ),
        )


def check_pretrained_dir(facts: Facts) -> Iterator[diag.Diagnostic]:
    """The directory can be read, and the model and the pretrained stacks' blocks are its own
    (or, for `model.embedding`, the vocabulary and the embedding's width)."""
    fact = facts.host.pretrained
    m = facts.spec.model
    node = m.pretrained or m.embedding
    if fact is None or node is None or (m.pretrained and m.embedding):
        return
    field = "pretrained" if m.pretrained is not None else "embedding"
    where = n.at(node, "path")
    if fact.missing:
        yield diag.warning(
            "SW211",
            f"there is no directory {fact.written} (looked for at {fact.resolved})",
            where,
            hint="fix the path (relative to the spec file; a --set's, to the working "
            f'directory), or give it with `--set model.{field}.path="DIR"`',
        )
        return
    if fact.model is None:
        first, *rest = fact.problem.splitlines()
        yield diag.error("SW210", first.rstrip(":"), where,
                         notes=tuple(diag.Note(message=x.strip().removeprefix("- "))
                                     for x in rest),
                         hint="a Llama or GPT-2 directory saved by transformers "
                         "(save_pretrained) in safetensors")  # fmt: skip
        return
    yield from _tokenizer(facts, fact, where)
    if m.embedding is not None:
        yield from _embedding_settings(facts, fact.model, where)
        return
    yield from _model_settings(facts, fact.model, where)
    yield from _blocks(facts, fact.model)


def _tokenizer(facts: Facts, fact, where) -> Iterator[diag.Diagnostic]:
    """The ids must mean what the directory's embedding rows mean."""
    if fact.same_tokenizer is not False:
        return
    tokenizer = facts.spec.data.tokenizer
    path = facts.spec.model.pretrained or facts.spec.model.embedding
    file = fact.written.rstrip("/") + "/tokenizer.json"
    yield diag.warning(
        "SW216",
        f"the data's tokenizer ({tokenizer.sw_name}) is not the pretrained directory's "
        "tokenizer.json: the token ids will not mean what its embedding rows mean",
        n.at(facts.spec.data, "tokenizer") if "tokenizer" in facts.spec.data.spans else where,
        hint=f'set `tokenizer = file("{file}")` in `data {{ ... }}` (a path relative to '
        "the spec file)",
        notes=(
            diag.Note(message="the pretrained directory is named here", span=n.at(path, "path")),
        ),
    )


def _embedding_settings(facts: Facts, hf, where) -> Iterator[diag.Diagnostic]:
    """A pretrained embedding alone: the directory's vocabulary, and its width as embed_dim
    (the same as d_model, or mapped to it by the adapter)."""
    m = facts.spec.model
    name = "Llama" if hf.family == LLAMA else "GPT-2"
    note = (diag.Note(message="the pretrained embedding is named here", span=where),)
    if m.vocab != hf.vocab:
        unset = m.vocab is None
        yield diag.error(
            "SW212",
            f"the pretrained {name}'s embedding has `vocab = {hf.vocab}`; this model "
            + ("leaves it unset (from the tokenizer)" if unset else f"has `vocab = {m.vocab}`"),
            m.span if unset else n.at(m, "vocab"),
            hint=f"set `vocab = {hf.vocab}` in `model {{ ... }}`",
            notes=note,
        )
    width = m.embed_dim or m.d_model
    adapter = "" if hf.d_model == m.d_model else " (an adapter maps it to d_model)"
    if width != hf.d_model:
        said = f"embed_dim = {m.embed_dim}" if m.embed_dim else f"no embed_dim (d_model = {width})"
        yield diag.error(
            "SW212",
            f"the pretrained {name}'s embedding is {hf.d_model} wide; this model has {said}",
            n.at(m, "embed_dim") if m.embed_dim else n.at(m, "d_model"),
            hint=f"set `embed_dim = {hf.d_model}` in `model {{ ... }}`" + adapter,
            notes=note,
        )


def _model_settings(facts: Facts, hf, where) -> Iterator[diag.Diagnostic]:
    m = facts.spec.model
    name = "Llama" if hf.family == LLAMA else "GPT-2"
    theirs = f"the pretrained {name}"
    wanted = {"d_model": hf.d_model, "vocab": hf.vocab,
              "norm": Norm.RMSNORM if hf.family == LLAMA else Norm.LAYERNORM,
              "head": Head.TIED if hf.tied else Head.UNTIED,
              "position": _position_text(n.Rope(theta=hf.theta) if hf.family == LLAMA
                                         else n.LearnedPosition())}  # fmt: skip
    defaulted = []
    for field, value in wanted.items():
        have = _position_text(m.position) if field == "position" else getattr(m, field)
        if have == value:
            continue
        shown = value.value if hasattr(value, "value") else value
        if field not in m.spans:  # left to its default (or the tokenizer): said together below
            defaulted.append((field, shown, have))
            continue
        yield diag.error(
            "SW212",
            f"{theirs} has `{field} = {shown}`; this model has "
            f"`{field} = {getattr(have, 'value', have)}`",
            n.at(m, field),
            hint=f"set `{field} = {shown}` in `model {{ ... }}`",
            notes=(diag.Note(message="the pretrained directory is named here", span=where),),
        )
    if defaulted:
        ours = ", ".join("from the tokenizer" if have is None else
                         f"`{field} = {getattr(have, 'value', have)}` by default"
                         for field, _, have in defaulted)  # fmt: skip
        wanted_text = ", ".join(f"{field} = {shown}" for field, shown, _ in defaulted)
        yield diag.error(
            "SW212",
            f"{theirs} has `{wanted_text}`; this model leaves "
            f"{'them' if len(defaulted) > 1 else 'it'} unset ({ours})",
            m.span,
            hint=f"set `{wanted_text}` in `model {{ ... }}`",
            notes=(diag.Note(message="the pretrained directory is named here", span=where),),
        )
    if m.embed_dim is not None and m.embed_dim != m.d_model:
        yield diag.error("SW212", f"{theirs} has an embedding d_model wide, not "
                         f"embed_dim = {m.embed_dim}", n.at(m, "embed_dim"),
                         hint="remove `embed_dim`")  # fmt: skip
    if m.context > hf.context:
        yield diag.error("SW212", f"context = {m.context} is longer than {theirs}'s "
                         f"{hf.context} positions", n.at(m, "context"),
                         hint=f"set `context` to at most {hf.context}")  # fmt: skip


def _position_text(position) -> str:
    if isinstance(position, n.Rope):
        return f"rope(theta = {position.theta:g})"
    return position.sw_name


def _blocks(facts: Facts, hf) -> Iterator[diag.Diagnostic]:
    positions = pretrained_positions(facts)
    d = facts.spec.model.d_model
    said = set()
    for position in positions:
        for block in facts.blocks[position]:
            if block.name in said:
                continue
            problems = _block_problems(block, hf, d)
            if problems:
                said.add(block.name)
                yield diag.error(
                    "SW213",
                    f"block `{block.name}` takes the pretrained layers, but " + "; ".join(problems),
                    block.span,
                    hint=f"the pretrained layers are {_layer(hf, block)}",
                )
    count = sum(len(facts.blocks[p]) for p in positions)
    if count > hf.layers:
        yield diag.error(
            "SW214",
            f"the stacks made with `init = pretrained` hold {count} blocks, but the pretrained "
            f"model has {hf.layers} layers",
            n.at(facts.spec.model.pretrained, "path"),
            hint="take fewer stacks from it, or grow the rest with `init = identity`, `copy` "
            "or `middle`",
        )


def _layer(hf, block: n.Block) -> str:
    mode = block.attention.mode.value
    kv = f", kv_heads = {hf.kv_heads}" if hf.kv_heads != hf.heads else ""
    attention = f"{'gqa' if kv else 'mha'}(heads = {hf.heads}{kv}, mode = {mode})"
    ffn = "swiglu" if hf.family == LLAMA else "gelu"
    return f"`attention = {attention}, ffn = {ffn}(hidden = {hf.hidden})`"


def _block_problems(block: n.Block, hf, d_model: int) -> list[str]:
    a, out = block.attention, []
    if a.latent is not None or a.kernel is not None:
        out.append("its attention is not dense (MLA or kernel attention)")
    if (a.heads, a.kv_heads) != (hf.heads, hf.kv_heads):
        out.append(f"it has heads = {a.heads}, kv_heads = {a.kv_heads} (the directory's: "
                   f"{hf.heads}, {hf.kv_heads})")  # fmt: skip
    elif d_model % a.heads == 0 and d_model // a.heads != hf.head_dim:
        out.append(f"its heads are {d_model // a.heads} wide (the directory's: {hf.head_dim})")
    kind = "swiglu" if hf.family == LLAMA else "gelu"
    if block.ffn.sw_name != kind:
        out.append(f"its ffn is {block.ffn.sw_name} (the directory's: {kind})")
    elif ffn_hidden(block.ffn, d_model) != hf.hidden:
        out.append(f"its ffn is {ffn_hidden(block.ffn, d_model)} wide (the directory's: "
                   f"{hf.hidden})")  # fmt: skip
    if block.spectral_norm:
        out.append("it is spectrally normalised")
    if block.residual_gain is not None and block.residual_gain != 1:
        out.append(f"it scales its residual branches by {block.residual_gain:g}")
    return out

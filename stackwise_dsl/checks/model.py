"""The rack's shared parts: tied head sizes, context against sequence length, vocabulary."""

from __future__ import annotations

from collections.abc import Iterator

from stackwise_dsl import diagnostics as diag
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Head
from stackwise_dsl.ir.facts import Facts
from stackwise_dsl.ir.walk import specials, tokenizer_vocab


def check_tied_head(facts: Facts) -> Iterator[diag.Diagnostic]:
    """A tied head reuses the embedding matrix, so the embedding must be d_model wide."""
    m = facts.spec.model
    if m.head is Head.TIED and m.embed_dim is not None and m.embed_dim != m.d_model:
        yield diag.error(
            "SW206",
            f"a tied head reuses the embedding (vocab x {m.embed_dim}) as its output layer, "
            f"but the stacks are d_model = {m.d_model} wide",
            n.at(m, "head"),
            hint="set `head = untied`"
            + ("" if m.embedding is not None else ", or drop `embed_dim`"),
            notes=(diag.Note(message="embed_dim is set here", span=n.at(m, "embed_dim")),),
        )


def check_context(facts: Facts) -> Iterator[diag.Diagnostic]:
    """The data's sequences fit in the model's context."""
    spec = facts.spec
    seq_len = spec.data.seq_len
    if seq_len is not None and seq_len > spec.model.context:
        yield diag.error(
            "SW207",
            f"seq_len ({seq_len}) is longer than the model's context ({spec.model.context})",
            n.at(spec.data, "seq_len"),
            hint=f"set `seq_len` to at most {spec.model.context}, or raise `context`",
            notes=(diag.Note(message="context is set here", span=n.at(spec.model, "context")),),
        )


def check_vocab(facts: Facts) -> Iterator[diag.Diagnostic]:
    """An explicit vocab holds every id the tokenizer can produce (a tokenizer file's: its
    own ids and the special tokens the run adds to it, when this machine has it)."""
    spec = facts.spec
    vocab = spec.model.vocab
    if isinstance(spec.data.tokenizer, n.TokenizerFile):
        yield from _file_vocab(facts, spec.data.tokenizer)
        return
    needed = tokenizer_vocab(spec)
    if vocab is not None and needed is not None and vocab < needed:
        hint = (f"leave `vocab` out to take it from the tokenizer ({needed}, with "
                f"{len(specials(spec))} special tokens)")  # fmt: skip
        if spec.model.pretrained or spec.model.embedding:  # its vocabulary is the directory's
            hint = ("the pretrained embedding has no row for the ids past its vocabulary: "
                    'use the directory\'s tokenizer, `file("DIR/tokenizer.json")`')  # fmt: skip
        yield diag.error(
            "SW208",
            f"vocab ({vocab}) is smaller than the {spec.data.tokenizer.sw_name} tokenizer's "
            f"{needed} ids",
            n.at(spec.model, "vocab"),
            hint=hint,
        )


def _file_vocab(facts: Facts, tokenizer: n.TokenizerFile) -> Iterator[diag.Diagnostic]:
    spec = facts.spec
    known = {f.written: f for f in facts.host.data or ()}
    fact = known.get(tokenizer.path)
    held = fact.tokenizer if fact is not None else None
    vocab = spec.model.vocab
    if held is None or held.problem is not None or vocab is None:
        return
    added = [name for name in specials(spec) if name not in held.holds]
    needed = held.ids + len(added)
    if vocab >= needed:
        return
    pretrained = spec.model.pretrained or spec.model.embedding
    extra = f" plus {', '.join(added)}, which the run adds" if added else ""
    hint = f"leave `vocab` out to take it from the tokenizer ({needed})"
    if pretrained is not None and added:  # the directory's vocabulary is fixed
        hint = (f"the pretrained embedding has no row for {', '.join(added)}: use a tokenizer "
                "and a directory that hold it, or an objective that needs no "
                f"{'mask' if '<mask>' in added else 'end-of-document'} token")  # fmt: skip
    elif pretrained is not None:
        hint = f"set `vocab = {needed}`, the tokenizer's (and the pretrained directory's)"
    yield diag.error(
        "SW208",
        f"vocab ({vocab}) is smaller than the tokenizer file's {held.ids} ids{extra}",
        n.at(spec.model, "vocab"),
        hint=hint,
        notes=(
            diag.Note(message="the tokenizer file is named here", span=n.at(tokenizer, "path")),
        ),
    )

"""Data without torch: documents → tokens → fixed windows → a deterministic train/val split.

Documents are joined with `<eos>` into one token stream, cut into non-overlapping windows of
`seq_len + 1` tokens (CLM predicts token i+1 from 0..i; masked objectives use the first
`seq_len`). With `split = interleaved` window w is validation when frac(w·φ) < validation
(φ the golden ratio's conjugate), which spreads validation evenly through the corpus, the
same way every run; with `split = tail` the last `validation` fraction of the windows (the
end of the text, as nanoGPT splits it) is held out.
"""

from __future__ import annotations

import attrs
import numpy as np

from stackwise_dsl.data import corpus
from stackwise_dsl.data.corpus import DataError
from stackwise_dsl.data.tokenizer import ByteTokenizer, Tokenizer, build_tokenizer
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Split
from stackwise_dsl.ir.walk import tokenizer_vocab
from stackwise_dsl.lower import Lowered, data_of, lower
from stackwise_dsl.lower import plan as p

__all__ = ["DataError", "Prepared", "lower_spec", "plan_spec", "prepare", "vocab_size"]

_PHI = 0.6180339887498949


@attrs.frozen
class Prepared:
    tokenizer: Tokenizer
    windows: np.ndarray  # (n, seq_len + 1) int64
    train: np.ndarray  # window ids for training
    val: np.ndarray  # window ids held out


def plan_spec(spec: n.Spec, name: str) -> p.Plan:
    """A spec's plan, reading the data for the vocabulary when the tokenizer needs it (chars, a
    tokenizer file). Raises `DataError` for data that cannot be used."""
    return lower_spec(spec, name).plan


def lower_spec(spec: n.Spec, name: str) -> Lowered:
    """`plan_spec`, with where each of the plan's values came from."""
    vocab = None
    if spec.model.vocab is None and tokenizer_vocab(spec.data.tokenizer) is None:
        vocab = vocab_size(data_of(spec), spec.run.seed)
    return lower(spec, vocab=vocab, name=name)


def vocab_size(data: p.Data, seed: int) -> int:
    """The tokenizer's vocabulary, reading the data only when the tokenizer depends on it."""
    if isinstance(data.tokenizer, p.Bytes):
        return ByteTokenizer.vocab_size
    docs = (
        [] if isinstance(data.tokenizer, p.TokenizerFile) else corpus.documents(data.source, seed)
    )
    return build_tokenizer(data.tokenizer, docs).vocab_size


def prepare(data: p.Data, seed: int) -> Prepared:
    """Read, tokenize, window and split the data of a plan."""
    docs = corpus.documents(data.source, seed)
    tokenizer = build_tokenizer(data.tokenizer, docs)
    stream = _stream(tokenizer, docs)
    width = data.seq_len + 1
    count = len(stream) // width
    if count == 0:
        raise DataError(
            f"the data has {len(stream)} tokens, fewer than one sequence of {width} "
            f"(seq_len {data.seq_len} + 1): use more text or a shorter seq_len"
        )
    windows = stream[: count * width].reshape(count, width)
    train, val = split(count, data.validation, data.split)
    return Prepared(tokenizer=tokenizer, windows=windows, train=train, val=val)


def _stream(tokenizer: Tokenizer, docs: list[str]) -> np.ndarray:
    eos = np.array([tokenizer.specials.eos], dtype=np.int64)
    parts = []
    for doc in docs:
        parts += [tokenizer.encode(doc), eos]
    return np.concatenate(parts)


def split(count: int, validation: float,
          how: Split = Split.INTERLEAVED) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Train and validation window ids; each non-empty when validation > 0."""
    ids = np.arange(count)
    if how is Split.TAIL:
        held = ids >= count - round(count * validation)
    else:
        held = np.modf(ids * _PHI)[0] < validation
    if validation > 0 and not held.any():
        held[-1] = True
    if validation > 0 and held.all():
        raise DataError(
            f"the data makes {count} sequence(s): too few to hold out a validation fraction "
            f"of {validation} and still train"
        )
    return ids[~held], ids[held]

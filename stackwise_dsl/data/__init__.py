"""Data without torch: documents → tokens → fixed windows → a deterministic train/val split.

Documents are joined into one token stream (each followed by `<eos>` when the plan's
tokenizer has it), cut into non-overlapping windows of `seq_len + 1` tokens (CLM predicts
token i+1 from 0..i; masked objectives use the first `seq_len`). With `split = interleaved`
window w is validation when frac(w·φ) < validation (φ the golden ratio's conjugate), which
spreads validation evenly through the corpus, the same way every run; with `split = tail`
the last `validation` fraction of the windows (the end of the text, as nanoGPT splits it) is
held out; with `validation_data` every window of the main source trains and the validation
windows are that source's. With `windows = random` training reads windows at random offsets
of the training text instead (`Prepared.train_rows`).
"""

from __future__ import annotations

import attrs
import numpy as np

from stackwise_dsl.data import corpus
from stackwise_dsl.data.corpus import DataError
from stackwise_dsl.data.tokenizer import Tokenizer, build_tokenizer
from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.enums import Split, Windows
from stackwise_dsl.ir.walk import tokenizer_vocab
from stackwise_dsl.lower import Lowered, data_of, lower
from stackwise_dsl.lower import plan as p

__all__ = [
    "DataError",
    "Prepared",
    "fitted_tokenizer",
    "lower_spec",
    "plan_spec",
    "prepare",
    "vocab_size",
]

_PHI = 0.6180339887498949


@attrs.frozen
class Prepared:
    tokenizer: Tokenizer
    windows: np.ndarray  # (n, seq_len + 1) int64
    train: np.ndarray  # window ids for training
    val: np.ndarray  # window ids held out
    # windows = random: the training text, whose offsets stand for training windows
    text: np.ndarray | None = None

    def train_rows(self, ids: np.ndarray) -> np.ndarray:
        """The training windows `ids` (window ids, or offsets into `text` for random windows)."""
        if self.text is None:
            return self.windows[ids]
        width = self.windows.shape[1]
        return self.text[np.asarray(ids)[:, None] + np.arange(width)]

    def starts(self) -> np.ndarray:
        """What a training stream draws from: window ids, or every offset a window of the
        training text may start at."""
        if self.text is None:
            return self.train
        return np.arange(len(self.text) - self.windows.shape[1] + 1)


def plan_spec(spec: n.Spec, name: str) -> p.Plan:
    """A spec's plan, reading the data for the vocabulary when the tokenizer needs it (chars, a
    tokenizer file). Raises `DataError` for data that cannot be used."""
    return lower_spec(spec, name).plan


def lower_spec(spec: n.Spec, name: str) -> Lowered:
    """`plan_spec`, with where each of the plan's values came from."""
    vocab = None
    if spec.model.vocab is None and tokenizer_vocab(spec) is None:
        vocab = vocab_size(data_of(spec), spec.run.seed)
    return lower(spec, vocab=vocab, name=name)


def vocab_size(data: p.Data, seed: int) -> int:
    """The tokenizer's vocabulary, reading the data only when the tokenizer depends on it."""
    return fitted_tokenizer(data, seed).vocab_size


def fitted_tokenizer(data: p.Data, seed: int) -> Tokenizer:
    """The plan's tokenizer, reading the data only when the tokenizer depends on it."""
    if isinstance(data.tokenizer, p.Bytes | p.TokenizerFile):
        return build_tokenizer(data, [], [])
    held = corpus.documents(data.validation_data, seed) if data.validation_data else []
    return build_tokenizer(data, corpus.documents(data.source, seed), held)


def prepare(data: p.Data, seed: int) -> Prepared:
    """Read, tokenize, window and split the data of a plan."""
    docs = corpus.documents(data.source, seed)
    held = corpus.documents(data.validation_data, seed) if data.validation_data else []
    tokenizer = build_tokenizer(data, docs, held)
    width = data.seq_len + 1
    stream = _stream(tokenizer, docs)
    windows = _windows(stream, width, "the data")
    if data.validation_data is not None:
        extra = _windows(_stream(tokenizer, held, "the validation data "), width,
                         "the validation data")  # fmt: skip
        train = np.arange(len(windows))
        val = np.arange(len(windows), len(windows) + len(extra))
        windows = np.concatenate([windows, extra])
    else:
        train, val = split(len(windows), data.validation, data.split)
    text = None
    if data.windows is Windows.RANDOM:
        # the training windows' text: the whole stream, or what lies before the held-out tail
        # (random windows are refused with an interleaved split, SW605)
        end = len(stream) if len(val) == 0 or data.validation_data else int(val.min()) * width
        text = stream[:end]
    return Prepared(tokenizer=tokenizer, windows=windows, train=train, val=val, text=text)


def _windows(stream: np.ndarray, width: int, what: str) -> np.ndarray:
    count = len(stream) // width
    if count == 0:
        raise DataError(
            f"{what} has {len(stream)} tokens, fewer than one sequence of {width} "
            f"(seq_len {width - 1} + 1): use more text or a shorter seq_len"
        )
    return stream[: count * width].reshape(count, width)


def _stream(tokenizer: Tokenizer, docs: list[str], what: str = "") -> np.ndarray:
    """The documents' tokens, one after another, each followed by `<eos>` when the tokenizer
    has it."""
    ends = tokenizer.specials.eos
    eos = [np.array([ends], dtype=np.int64)] if ends is not None else []
    parts = []
    for doc in docs:
        try:
            parts += [tokenizer.encode(doc), *eos]
        except DataError as e:
            raise DataError(f"{what}{e}") from None
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

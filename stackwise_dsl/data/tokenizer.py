"""Tokenizers: bytes, characters, a BPE trained locally (remembered), or a local tokenizer.json.

Every tokenizer has the three special tokens `<pad>`, `<mask>` and `<eos>`, after its
ordinary vocabulary for bytes and chars, wherever the trained or loaded model put them for
BPE and files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import attrs
import numpy as np

from stackwise_dsl.data.corpus import DataError
from stackwise_dsl.ir.walk import SPECIAL_TOKENS
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import pick, tokenizer_key
from stackwise_dsl.machine.userdirs import memo_dir

MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS)


@attrs.frozen
class Specials:
    pad: int
    mask: int
    eos: int


class Tokenizer:
    """What a run reads of a tokenizer: its size, its specials, how many ids are ordinary
    tokens (random replacements draw below it), and encode/decode."""

    vocab_size: int
    specials: Specials
    ordinary: int

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def saved(self) -> dict:
        """What `tokenizer_from` builds this tokenizer again from, as JSON (a run's tokenizer.json:
        sampling and evaluation need the run's exact vocabulary, not the data again)."""
        raise NotImplementedError


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: ids 0-255, then the specials."""

    vocab_size = 256 + len(SPECIAL_TOKENS)
    specials = Specials(pad=256, mask=257, eos=258)
    ordinary = 256  # ids below this are ordinary tokens (random replacements draw from them)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def saved(self) -> dict:
        return {"kind": "bytes"}


class CharTokenizer(Tokenizer):
    """The corpus's characters, sorted by code point; then the specials."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.codes = np.array([ord(c) for c in chars], dtype=np.int64)
        self.ordinary = len(chars)
        self.vocab_size = len(chars) + len(SPECIAL_TOKENS)
        n = len(chars)
        self.specials = Specials(pad=n, mask=n + 1, eos=n + 2)

    @classmethod
    def of(cls, docs: list[str]) -> CharTokenizer:
        return cls("".join(sorted(set().union(*map(set, docs)))))

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.searchsorted(self.codes, codes)
        unknown = (ids >= len(self.codes)) | (
            self.codes[np.minimum(ids, len(self.codes) - 1)] != codes
        )
        if unknown.any():
            raise DataError(
                f"character {chr(int(codes[unknown.argmax()]))!r} is not in the vocabulary"
            )
        return ids

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids if int(i) < self.ordinary)

    def saved(self) -> dict:
        return {"kind": "chars", "chars": self.chars}


class HfTokenizer(Tokenizer):
    """A `tokenizers` model (a trained BPE, or a tokenizer.json) with the specials added."""

    def __init__(self, tok) -> None:
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        self.tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        ids = [tok.token_to_id(s) for s in SPECIAL_TOKENS]
        self.specials = Specials(pad=ids[0], mask=ids[1], eos=ids[2])
        self.ordinary = min(ids)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def saved(self) -> dict:
        return {"kind": "tokenizers", "json": self.tok.to_str()}


def tokenizer_from(saved: dict, spec: p.Bytes | p.Chars | p.Bpe | p.TokenizerFile) -> Tokenizer:
    """The tokenizer `Tokenizer.saved` describes, of the plan's kind `spec` (RESTORERS);
    DataError for anything else."""
    tokenizer = (
        pick(RESTORERS, tokenizer_key(spec), "tokenizer")(saved)
        if isinstance(saved, dict)
        else None
    )
    if tokenizer is None:
        raise DataError("the saved tokenizer is not one stackwise-dsl writes for this plan")
    return tokenizer


def _bytes_again(saved: dict) -> Tokenizer | None:
    return ByteTokenizer() if saved.get("kind") == "bytes" else None


def _chars_again(saved: dict) -> Tokenizer | None:
    chars = saved.get("chars")
    ok = saved.get("kind") == "chars" and isinstance(chars, str) and chars
    return CharTokenizer(chars) if ok else None


def _tokenizers_again(saved: dict) -> Tokenizer | None:
    if saved.get("kind") != "tokenizers" or not isinstance(saved.get("json"), str):
        return None
    from tokenizers import Tokenizer as HfModel

    try:
        return HfTokenizer(HfModel.from_str(saved["json"]))
    except Exception as e:  # the library raises plain Exceptions
        raise DataError(f"the saved tokenizer cannot be read ({e})") from None


def build_tokenizer(
    spec: p.Bytes | p.Chars | p.Bpe | p.TokenizerFile,
    docs: list[str],
) -> Tokenizer:
    """The tokenizer a plan asks for, trained on (or fitted to) `docs` when it needs to be."""
    return pick(TOKENIZERS, tokenizer_key(spec), "tokenizer")(spec, docs)


def _bytes(spec: p.Bytes, docs: list[str]) -> Tokenizer:
    return ByteTokenizer()


def _chars(spec: p.Chars, docs: list[str]) -> Tokenizer:
    return CharTokenizer.of(docs)


def _trained_bpe(spec: p.Bpe, docs: list[str]) -> Tokenizer:
    return HfTokenizer(_bpe(docs, spec.vocab))


def _file(spec: p.TokenizerFile, docs: list[str]) -> Tokenizer:
    return HfTokenizer(_load(spec.path))


def _load(path: str):
    from tokenizers import Tokenizer as HfModel

    try:
        return HfModel.from_file(path)
    except Exception as e:  # the library raises plain Exceptions for bad files
        raise DataError(
            f"cannot load the tokenizer {path}: it is not a tokenizer file the `tokenizers` "
            f"library wrote (it says: {e})"
        ) from None


def _bpe(docs: list[str], vocab: int):
    """A byte-level BPE of `vocab` tokens trained on `docs`; trained once per corpus and size,
    then loaded from the user's cache."""
    if vocab < MIN_BPE_VOCAB:
        raise DataError(f"a byte-level BPE needs at least {MIN_BPE_VOCAB} tokens; got {vocab}")
    import tokenizers

    digest = hashlib.sha256(f"{tokenizers.__version__}\0{vocab}".encode())
    for d in docs:
        digest.update(d.encode("utf-8", errors="surrogatepass") + b"\0")
    base = memo_dir()
    path = base / "bpe" / f"{digest.hexdigest()[:32]}.json" if base else None
    if path is not None and path.exists():
        try:
            return tokenizers.Tokenizer.from_file(str(path))
        except Exception:  # a damaged memo: train again
            pass
    tok = _train_bpe(docs, vocab)
    if path is not None:
        _save(tok, path)
    return tok


def _train_bpe(docs: list[str], vocab: int):
    from tokenizers import Tokenizer as HfModel
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HfModel(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def _save(tok, path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
        os.close(fd)
        tok.save(tmp)
        os.replace(tmp, path)
    except OSError:
        pass


TOKENIZERS = {
    "bytes": _bytes,
    "chars": _chars,
    "bpe": _trained_bpe,
    "tokenizerfile": _file,
}

RESTORERS = {
    "bytes": _bytes_again,
    "chars": _chars_again,
    "bpe": _tokenizers_again,
    "tokenizerfile": _tokenizers_again,
}

"""Tokenizers: bytes, characters, a BPE trained locally (remembered), or a local tokenizer.json.

A tokenizer carries only the special tokens its plan uses (`Data.specials`: `<mask>` for
masking objectives, `<eos>` when documents end with it), appended after its ordinary
vocabulary: bytes 0-255 or the corpus's characters, a trained BPE's merges, or a tokenizer
file's own vocabulary (a file that already holds one of them keeps its id).
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import attrs
import numpy as np

from stackwise_dsl.data.corpus import DataError
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.dispatch import pick, tokenizer_key
from stackwise_dsl.machine.userdirs import memo_dir


@attrs.frozen
class Specials:
    """The ids of the special tokens, None for one the tokenizer does not carry."""

    mask: int | None = None
    eos: int | None = None

    @classmethod
    def after(cls, ordinary: int, names: tuple[str, ...]) -> Specials:
        """Specials `names` numbered from `ordinary` on, in order."""
        return cls(**{_FIELDS[name]: ordinary + i for i, name in enumerate(names)})

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, f in _FIELDS.items() if getattr(self, f) is not None)


_FIELDS = {"<mask>": "mask", "<eos>": "eos"}  # the plan's names of the specials (ir/walk.py)


def _names(saved: dict) -> tuple[str, ...] | None:
    """The specials a saved tokenizer lists, or None when they are not a list of known names."""
    names = saved.get("specials")
    ok = isinstance(names, list) and all(isinstance(x, str) and x in _FIELDS for x in names)
    return tuple(names) if ok and len(set(names)) == len(names) else None


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

    ordinary = 256  # ids below this are ordinary tokens (random replacements draw from them)

    def __init__(self, specials: tuple[str, ...]) -> None:
        self.specials = Specials.after(256, specials)
        self.vocab_size = 256 + len(specials)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def saved(self) -> dict:
        return {"kind": "bytes", "specials": list(self.specials.names())}


class CharTokenizer(Tokenizer):
    """The corpus's characters, sorted by code point; then the specials."""

    def __init__(self, chars: str, specials: tuple[str, ...]) -> None:
        self.chars = chars
        self.codes = np.array([ord(c) for c in chars], dtype=np.int64)
        self.ordinary = len(chars)
        self.vocab_size = len(chars) + len(specials)
        self.specials = Specials.after(len(chars), specials)

    @classmethod
    def of(cls, docs: list[str], specials: tuple[str, ...]) -> CharTokenizer:
        return cls("".join(sorted(set().union(*map(set, docs)))), specials)

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
        return {"kind": "chars", "chars": self.chars, "specials": list(self.specials.names())}


class HfTokenizer(Tokenizer):
    """A `tokenizers` model (a trained BPE, or a tokenizer.json) with the specials added (at
    the end, unless the model already has them). Ids from the first special on are not
    ordinary tokens (none without specials)."""

    def __init__(self, tok, specials: tuple[str, ...]) -> None:
        tok.add_special_tokens(list(specials))
        self.tok = tok
        # its largest id + 1: more than its count of tokens where the ids have gaps
        ids = tok.get_vocab(with_added_tokens=True).values()
        self.vocab_size = max(max(ids, default=-1) + 1, tok.get_vocab_size(with_added_tokens=True))
        ids = {_FIELDS[name]: tok.token_to_id(name) for name in specials}
        self.specials = Specials(**ids)
        self.ordinary = min(ids.values(), default=self.vocab_size)

    def encode(self, text: str) -> np.ndarray:
        try:
            ids = self.tok.encode(text, add_special_tokens=False).ids
        except Exception as e:  # the library raises plain Exceptions (no unknown token, say)
            raise DataError(f"the tokenizer cannot encode the data (it says: {e})") from None
        return np.array(ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def saved(self) -> dict:
        return {"kind": "tokenizers", "json": self.tok.to_str(),
                "specials": list(self.specials.names())}  # fmt: skip


def tokenizer_from(saved: dict, data: p.Data) -> Tokenizer:
    """The tokenizer `Tokenizer.saved` describes, of the plan's kind with the plan's specials
    (RESTORERS); DataError for anything else."""
    names = _names(saved) if isinstance(saved, dict) else None
    tokenizer = (
        pick(RESTORERS, tokenizer_key(data.tokenizer), "tokenizer")(saved, names)
        if names == data.specials
        else None
    )
    if tokenizer is None:
        raise DataError("the saved tokenizer is not one stackwise-dsl writes for this plan")
    return tokenizer


def _bytes_again(saved: dict, names: tuple[str, ...]) -> Tokenizer | None:
    return ByteTokenizer(names) if saved.get("kind") == "bytes" else None


def _chars_again(saved: dict, names: tuple[str, ...]) -> Tokenizer | None:
    chars = saved.get("chars")
    ok = saved.get("kind") == "chars" and isinstance(chars, str) and chars
    return CharTokenizer(chars, names) if ok else None


def _tokenizers_again(saved: dict, names: tuple[str, ...]) -> Tokenizer | None:
    if saved.get("kind") != "tokenizers" or not isinstance(saved.get("json"), str):
        return None
    from tokenizers import Tokenizer as HfModel

    try:
        return HfTokenizer(HfModel.from_str(saved["json"]), names)
    except Exception as e:  # the library raises plain Exceptions
        raise DataError(f"the saved tokenizer cannot be read ({e})") from None


def build_tokenizer(data: p.Data, docs: list[str], held: list[str] = ()) -> Tokenizer:
    """The tokenizer a plan's data asks for, with its specials, trained on `docs` when it
    needs to be (a BPE), or fitted to them and the validation documents `held` (chars: every
    character of both, as nanoGPT takes its characters from the whole text)."""
    pick_one = pick(TOKENIZERS, tokenizer_key(data.tokenizer), "tokenizer")
    return pick_one(data.tokenizer, docs, list(held), data.specials)


def _bytes(spec: p.Bytes, docs: list[str], held: list[str],
           specials: tuple[str, ...]) -> Tokenizer:  # fmt: skip
    return ByteTokenizer(specials)


def _chars(spec: p.Chars, docs: list[str], held: list[str],
           specials: tuple[str, ...]) -> Tokenizer:  # fmt: skip
    return CharTokenizer.of(docs + held, specials)


def _trained_bpe(spec: p.Bpe, docs: list[str], held: list[str],
                 specials: tuple[str, ...]) -> Tokenizer:  # fmt: skip
    if spec.vocab < 256 + len(specials):
        raise DataError(f"a byte-level BPE needs at least {256 + len(specials)} tokens here (256 "
                        f"bytes and {len(specials)} special tokens); got {spec.vocab}")  # fmt: skip
    return HfTokenizer(_bpe(docs, spec.vocab - len(specials)), specials)


def _file(spec: p.TokenizerFile, docs: list[str], held: list[str],
          specials: tuple[str, ...]) -> Tokenizer:  # fmt: skip
    tok = _load(spec.path)
    if tok.get_vocab_size(with_added_tokens=True) == 0:
        raise DataError(f"the tokenizer file {spec.path} holds no tokens")
    return HfTokenizer(tok, specials)


def _load(path: str):
    from tokenizers import Tokenizer as HfModel

    if not os.path.exists(path):
        raise DataError(f"there is no tokenizer file {path} (data.tokenizer)")
    if os.path.isdir(path):
        raise DataError(f"the tokenizer file {path} is a directory: name the tokenizer.json "
                        "inside it")  # fmt: skip
    try:
        return HfModel.from_file(path)
    except Exception as e:  # the library raises plain Exceptions for bad files
        raise DataError(
            f"cannot load the tokenizer {path}: it is not a tokenizer file the `tokenizers` "
            f"library wrote (it says: {e})"
        ) from None


def _bpe(docs: list[str], vocab: int):
    """A byte-level BPE of `vocab` ordinary tokens trained on `docs`; trained once per corpus
    and size, then loaded from the user's cache."""
    import tokenizers

    digest = hashlib.sha256(f"{tokenizers.__version__}\0{vocab}\0ordinary".encode())
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

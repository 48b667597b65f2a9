"""What the machine running the checks has: the facts a check may depend on beyond the spec.

A GPU and native bf16 are probed once (probe.py). The files a spec's data names are looked at
per spec (`look_at_data`), resolved exactly as the run resolves them, by `os.stat` alone:
nothing but a regular file is opened, and of a jsonl file at most the first 64 KiB are read.
Checks read these facts and do no I/O themselves.
"""

from __future__ import annotations

import enum
import glob
import json
import os
import stat
from collections.abc import Iterator

import attrs

from stackwise_dsl.ir import nodes as n
from stackwise_dsl.ir.paths import resolve
from stackwise_dsl.machine.probe import cpu_bf16, cuda_present, tensorboard_present

HEAD_BYTES = 64 * 1024  # of a jsonl file, read for its first records
HEAD_RECORDS = 8
PRETRAINED_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json",
                    "tokenizer.json")  # fmt: skip


class FileKind(enum.Enum):
    """What is at a data path, as `os.stat` tells it (for a glob: whether a file matches)."""

    FILE = "a regular file"
    MISSING = "missing"
    DIRECTORY = "a directory"
    FIFO = "a FIFO"
    DEVICE = "a device"
    SOCKET = "a socket"
    OTHER = "not a regular file"
    UNREADABLE = "unreadable"


@attrs.frozen(kw_only=True)
class Record:
    """One of the first records of a jsonl file: its line, and the keys holding a string."""

    line: int
    text_fields: tuple[str, ...] | None  # None: the line is not a JSON object


@attrs.frozen(kw_only=True)
class DataFile:
    """What the run will find for one path or glob that the spec's data names."""

    written: str  # as the spec writes it
    glob: bool = False
    kind: FileKind = FileKind.FILE  # for a glob: FILE when it matches a regular file
    first: str | None = None  # a file the run reads for it, in the spec's terms
    records: tuple[Record, ...] = ()  # jsonl: the first records of `first`
    tokenizer: TokenizerFacts | None = None  # a tokenizer file's, as the run will load it


@attrs.frozen(kw_only=True)
class TokenizerFacts:
    """A tokenizer file as the `tokenizers` library loads it: its ids (added tokens
    included) and which of the special tokens a run may add it already holds; or why it
    cannot be loaded."""

    ids: int = 0
    holds: tuple[str, ...] = ()  # of <mask>, <eos>
    problem: str | None = None


@attrs.frozen(kw_only=True)
class PretrainedDir:
    """What the run will find at `model.pretrained`: the model a Hugging Face directory holds
    (hf/read.py: config.json and safetensors headers, no weights read), or why not."""

    written: str  # as the spec writes it
    resolved: str = ""  # the absolute path it names
    model: object = None  # hf.read.Pretrained when it could be read
    missing: bool = False  # nothing at the path
    problem: str | None = None  # HfError's text otherwise
    # whether the data's tokenizer is the directory's tokenizer.json (None: it has none)
    same_tokenizer: bool | None = None


@attrs.frozen
class Host:
    """The host as far as checks care: an NVIDIA GPU? native bf16 on the CPU? the data?"""

    cuda: bool
    cpu_bf16: bool | None = None  # None: cannot tell (then no warning is given)
    # None: look at this machine's files, per spec; a tuple: these facts (() for none, as
    # `sw plan` and `sw compile` check: the data may live on the machine that trains)
    data: tuple[DataFile, ...] | None = None
    tensorboard: bool = True  # the tensorboard package is installed (`run.tensorboard`)
    processes: int = 1  # how many processes will share the run (`--nproc` x machines)
    pretrained: PretrainedDir | None = None  # None: not looked at (or the spec names none)

    @classmethod
    def detect(cls) -> Host:
        return cls(cuda=cuda_present(), cpu_bf16=cpu_bf16(), tensorboard=tensorboard_present())

    def knowing_data(self, spec: n.Spec) -> Host:
        """This host with the files `spec` names looked at, unless they were given."""
        if self.data is not None:
            return self
        return attrs.evolve(self, data=look_at_data(spec), pretrained=look_at_pretrained(spec))


def pretrained_node(spec: n.Spec) -> n.Hf | None:
    """The Hugging Face directory the model names: `model.pretrained`, or `model.embedding`
    (the embedding alone; the checks refuse both at once)."""
    return spec.model.pretrained or spec.model.embedding


def look_at_pretrained(spec: n.Spec) -> PretrainedDir | None:
    """The directory `model.pretrained` (or `model.embedding`) names, read as the run will
    read it."""
    from stackwise_dsl.hf import HfError
    from stackwise_dsl.hf.read import read_pretrained

    node = pretrained_node(spec)
    if node is None:
        return None
    path = resolve(node.path, node, "path")
    if not os.path.exists(path):
        return PretrainedDir(written=node.path, resolved=path, missing=True)
    same = _same_tokenizer(spec, path)
    only = spec.model.pretrained is None
    try:
        model = read_pretrained(path, embedding_only=only)
        return PretrainedDir(written=node.path, resolved=path, model=model, same_tokenizer=same)
    except HfError as e:
        return PretrainedDir(written=node.path, resolved=path, problem=str(e))
    except OSError as e:  # a folder it may not list, say
        problem = f"{path} cannot be read ({e.strerror or e})"
        return PretrainedDir(written=node.path, resolved=path, problem=problem)


def _same_tokenizer(spec: n.Spec, directory: str) -> bool | None:
    """Whether the data's tokenizer is the file `directory`/tokenizer.json (the same path or
    the same bytes); None when the directory has none."""
    theirs = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(theirs):
        return None
    tokenizer = spec.data.tokenizer
    if not isinstance(tokenizer, n.TokenizerFile):
        return False
    ours = resolve(tokenizer.path, tokenizer, "path")
    try:
        if os.path.samefile(ours, theirs):
            return True
        with open(ours, "rb") as a, open(theirs, "rb") as b:
            if a.read() == b.read():
                return True
    except (OSError, ValueError):
        return None  # a missing or unreadable tokenizer file has its own diagnostic
    from tokenizers import Tokenizer

    try:  # the same tokenizer written another way (indented, keys reordered)
        return Tokenizer.from_file(ours).to_str() == Tokenizer.from_file(theirs).to_str()
    except Exception:  # the library raises plain Exceptions; SW608 says what is wrong
        return None


CPU_ONLY = Host(cuda=False, data=())  # a stated CPU machine; the spec's data is not looked at


DataNode = n.TextFiles | n.Jsonl | n.TokenizerFile


def data_paths(spec: n.Spec) -> Iterator[tuple[DataNode, str, str]]:
    """(node, field, path as written) for each file a run reads: the paths and globs of a
    text or jsonl source and of the validation data, and a tokenizer file."""
    tokenizer = spec.data.tokenizer
    for source in (spec.data.source, spec.data.validation_data):
        if isinstance(source, n.TextFiles | n.Jsonl):
            for written in source.files:
                yield source, "files", written
    if isinstance(tokenizer, n.TokenizerFile):
        yield tokenizer, "path", tokenizer.path


def look_at_data(spec: n.Spec) -> tuple[DataFile, ...]:
    """What this machine has at each path of `data_paths(spec)`."""
    found = []
    for node, field, written in data_paths(spec):
        path = resolve(written, node, field)
        is_glob = field == "files" and glob.has_magic(path)  # as data/corpus.py expands them
        first = _first_match(path) if is_glob else path
        kind = (FileKind.FILE if first else FileKind.MISSING) if is_glob else _kind(path)
        jsonl = isinstance(node, n.Jsonl) and kind is FileKind.FILE
        shown = _relative(first, written, resolve(".", node, field)) if is_glob else written
        tokenizer = isinstance(node, n.TokenizerFile) and kind is FileKind.FILE
        found.append(DataFile(
            written=written, glob=is_glob, kind=kind, first=shown,
            records=_first_records(first) if jsonl and first else (),
            tokenizer=_tokenizer_facts(path) if tokenizer else None,
        ))  # fmt: skip
    return tuple(found)


SPECIAL_TOKENS = ("<mask>", "<eos>")  # what a run adds to a tokenizer that lacks them


def _tokenizer_facts(path: str) -> TokenizerFacts:
    """Load the tokenizer file as data/tokenizer.py does (torch-free)."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # the library raises plain Exceptions for bad files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return TokenizerFacts(problem=first)
    holds = tuple(name for name in SPECIAL_TOKENS if tok.token_to_id(name) is not None)
    return TokenizerFacts(ids=tokenizer_ids(tok), holds=holds)


def tokenizer_ids(tok) -> int:
    """How many ids a `tokenizers` model needs the embedding to hold: its largest id + 1
    (more than its count of tokens when the ids have gaps)."""
    ids = tok.get_vocab(with_added_tokens=True).values()
    return max(max(ids, default=-1) + 1, tok.get_vocab_size(with_added_tokens=True))


def watched_paths(spec: n.Spec) -> tuple[str, ...]:
    """The paths whose change can change what the data checks say (for the memo of check
    results): each data file, and for a glob the folder it lists and the file it found."""
    out = []
    node = pretrained_node(spec)
    if node is not None:  # its config, weight and tokenizer files
        root = resolve(node.path, node, "path")
        out += [os.path.join(root, name) for name in PRETRAINED_FILES]
    for node, field, written in data_paths(spec):
        path = resolve(written, node, field)
        if field == "files" and glob.has_magic(path):
            parts = path.split(os.sep)
            fixed = parts[: next(i for i, part in enumerate(parts) if glob.has_magic(part))]
            out += [os.sep.join(fixed) or os.sep, *filter(None, [_first_match(path)])]
        else:
            out.append(path)
    return tuple(out)


def _kind(path: str) -> FileKind:
    try:
        mode = os.stat(path).st_mode
    except PermissionError:
        return FileKind.UNREADABLE
    except (OSError, ValueError):  # missing, a file as a directory, a NUL in the name
        return FileKind.MISSING
    if stat.S_ISREG(mode):
        return FileKind.FILE if os.access(path, os.R_OK) else FileKind.UNREADABLE
    if stat.S_ISDIR(mode):
        return FileKind.DIRECTORY
    if stat.S_ISFIFO(mode):
        return FileKind.FIFO
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return FileKind.DEVICE
    return FileKind.SOCKET if stat.S_ISSOCK(mode) else FileKind.OTHER


def _first_match(pattern: str) -> str | None:
    """A regular file the glob matches (the first found: any of them is read by the run)."""
    try:
        return next((m for m in glob.iglob(pattern, recursive=True) if os.path.isfile(m)), None)
    except (OSError, ValueError):
        return None


def _relative(path: str | None, written: str, base: str) -> str | None:
    """A glob's match as the spec would write it: relative to `base` when the glob is."""
    if path is None or os.path.isabs(os.path.expanduser(written)):
        return path
    return os.path.relpath(path, base)


def _first_records(path: str) -> tuple[Record, ...]:
    """The first records of a jsonl file, from at most its first HEAD_BYTES bytes."""
    try:  # not blocking, in case it became a FIFO since it was looked at
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return ()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ()
        head = f.read(HEAD_BYTES + 1)
    lines = head.split(b"\n")
    if len(head) > HEAD_BYTES:
        lines.pop()  # cut off
    records = []
    for number, line in enumerate(lines, start=1):
        text = line.decode("utf-8", errors="replace")
        if text.strip():
            records.append(Record(line=number, text_fields=_text_fields(text)))
        if len(records) == HEAD_RECORDS:
            break
    return tuple(records)


def _text_fields(line: str) -> tuple[str, ...] | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    return tuple(sorted(k for k, v in record.items() if isinstance(v, str)))

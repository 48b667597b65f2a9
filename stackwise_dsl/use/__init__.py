"""Using what a run trained: load a checkpoint's model, sample from it, score text with it.

    import stackwise_dsl
    model = stackwise_dsl.load("runs/tiny")           # the latest checkpoint
    model.generate("def ", max_new_tokens=40, temperature=0)
    model.loss("def main():\n    return 0\n")

`load` builds the model exactly as the checkpoint's stage trained it (frozen stacks in their
precision, adapters attached), so what it samples and scores is what training measured.
Samplers by objective (core/sampling.py): CLM continues a prompt token by token through the
attention kinds' decoding state; MLM fills the prompt's `<mask>`s; masked diffusion with time
as depth unrolls the stacks as the stages trained them (`depth`, or `fused`: the whole rack
at every level); with time as input, MDLM's `ancestral` sampler or LLaDA's `low_confidence`
remasking, optionally in semi-autoregressive blocks.
"""

from __future__ import annotations

import json
import operator
import os
import stat
from pathlib import Path

import attrs
import numpy as np
import torch

from stackwise_dsl.core import sampling
from stackwise_dsl.core.errors import Damaged
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import DataError, corpus, fitted_tokenizer
from stackwise_dsl.data.tokenizer import Tokenizer, tokenizer_from
from stackwise_dsl.ir.enums import Device
from stackwise_dsl.lower import plan as p
from stackwise_dsl.runtime import checkpoint as checkpoints
from stackwise_dsl.runtime import device_for
from stackwise_dsl.use import scoring
from stackwise_dsl.use.errors import UseError


def load(run_dir: str | Path, checkpoint: str | int | Path | None = None, *,
         device: str = "cpu") -> Trained:  # fmt: skip
    """The model of a run's checkpoint: `checkpoint` is a stage number (the checkpoint at its
    end), a checkpoint's name or path, or None for the latest."""
    try:
        chosen = Device(device)
    except ValueError:
        raise UseError(f"device {device!r} is not one of cpu, cuda") from None
    if chosen is Device.CUDA and not torch.cuda.is_available():
        raise UseError("device cuda was asked for, but this machine has no CUDA GPU: use cpu")
    torch_device = device_for(chosen)
    run_dir = Path(run_dir)
    plan = checkpoints.load_plan(run_dir)
    path = find_checkpoint(run_dir, checkpoint, plan)
    state = checkpoints.read_state(path, plan)
    store = checkpoints.load(path, plan, optimizer=False)[0]
    stage = plan.stages[state["stage"] - 1]
    with torch.random.fork_rng(devices=[]):  # building draws (new adapters); leave the caller's
        model = StageModel(plan, stage, store, torch_device).eval()
    return Trained(plan=plan, stage=stage, checkpoint=path, model=model,
                   tokenizer=tokenizer_of(run_dir, plan), step=state["step"],
                   stage_done=state["stage_done"])  # fmt: skip


def find_checkpoint(run_dir: Path, which: str | int | Path | None, plan: p.Plan) -> Path:
    """The checkpoint `which` names (see `load`), or a UseError listing the run's."""
    root = run_dir / "checkpoints"
    if which is None:
        last = checkpoints.latest(run_dir)
        if last is None:
            raise UseError(f"{run_dir} has no checkpoint yet: resume the run, or wait for its "
                           "first checkpoint")  # fmt: skip
        return last
    if isinstance(which, bool) or not isinstance(which, str | int | os.PathLike):
        raise UseError(f"a checkpoint is a stage number, a name or a path, not {which!r}")
    if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
        number = int(which)
        if not 1 <= number <= len(plan.stages):
            raise UseError(f"the run has stages 1 to {len(plan.stages)}, not {number}")
        for path in (root / name for name in checkpoints.complete(root)):
            state = checkpoints.state_of(path)
            if state.get("stage") == number and state.get("stage_done") is True:
                return path
        raise UseError(f"stage {number} of {run_dir} has not finished: {_listing(root)}")
    path = root / str(which) if (root / str(which)).is_dir() else Path(which)
    if path.is_dir() and (path / "state.json").is_file():
        if path.resolve().parent != root.resolve():
            raise UseError(f"{which} is not a checkpoint of {run_dir}: {_listing(root)}")
        return path
    raise UseError(f"{which} is not a checkpoint of {run_dir}: {_listing(root)}")


def _listing(root: Path) -> str:
    names = checkpoints.complete(root)
    return f"its checkpoints are {', '.join(names)}" if names else "it has no checkpoint"


def tokenizer_of(run_dir: Path, plan: p.Plan) -> Tokenizer:
    """The run's tokenizer (tokenizer.json); a run that did not keep one gets it again from
    its data."""
    file = run_dir / "tokenizer.json"
    if file.exists():
        try:
            return tokenizer_from(json.loads(file.read_text(encoding="utf-8")), plan.data)
        except (OSError, ValueError, DataError) as e:
            raise Damaged(
                f"{file} cannot be read ({e}); it is the run's vocabulary: restore it, or "
                "delete it to build it from the data"
            ) from None
    try:
        return fitted_tokenizer(plan.data, plan.run.seed)  # fmt: skip
    except DataError as e:
        raise Damaged(f"{file} is missing and the data cannot give it again ({e}): restore "
                      "tokenizer.json or the run's data") from None  # fmt: skip


def read_text(file: Path) -> str:
    """A text file a user names (a prompt, data to score): a regular UTF-8 file, or a
    UseError saying why not. Never opens a FIFO or a device."""
    try:
        mode = os.stat(file).st_mode
    except OSError as e:
        raise UseError(f"cannot read {file}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise UseError(f"{file} is not a regular file")
    try:
        return corpus.read_document(str(file))
    except DataError as e:
        raise UseError(str(e)) from None


@attrs.define
class Trained:
    """A checkpoint's model with its tokenizer: what `load` gives."""

    plan: p.Plan
    stage: p.Stage
    checkpoint: Path
    model: StageModel
    tokenizer: Tokenizer
    step: int
    stage_done: bool

    @property
    def objective(self) -> p.Objective:
        return self.stage.objective

    @property
    def samplers(self) -> tuple[str, ...]:
        """The samplers its objective trained it for; the first is the default."""
        return sampling.samplers_for(self.objective)

    # --- text and ids ---

    def encode(self, text: str, what: str = "the prompt", *, masks: bool = True) -> list[int]:
        """Token ids of `text`; each `<mask>` in it is the mask token (with `masks`; text to
        score is text, `<mask>` in it included)."""
        if not isinstance(text, str):
            raise UseError(f"{what} must be text (a str), not {type(text).__name__}")
        try:
            if not masks:
                return [int(x) for x in self.tokenizer.encode(text)]
            return sampling.encode_prompt(self.tokenizer, text)
        except (DataError, ValueError) as e:
            raise UseError(f"{what} cannot be encoded with the run's tokenizer: {e}") from None

    def decode(self, ids) -> str:
        """The text of token ids (special tokens spell nothing)."""
        size = self.tokenizer.vocab_size
        try:
            whole = [operator.index(x) for x in ids]
        except TypeError as e:
            raise UseError(f"token ids are whole numbers from 0 to {size - 1} ({e})") from None
        wrong = [x for x in whole if not 0 <= x < size]
        if wrong:
            raise UseError(f"token ids are whole numbers from 0 to {size - 1}, not {wrong[0]}")
        return self.tokenizer.decode(whole)

    # --- sampling ---

    def generate(self, prompt: str = "", **options) -> list[str]:
        """Texts: the prompt continued (CLM), or with its `<mask>`s and `max_new_tokens`
        masks after it filled (masked models). Options: max_new_tokens, num_samples,
        temperature (0: the most likely), top_k, top_p, seed, sampler, steps, block
        (core/sampling.py `sample`)."""
        return [self.decode(row) for row in self.sample(prompt, **options).ids.tolist()]

    def sample(self, prompt: str = "", **options) -> sampling.Sampled:
        """The ids `generate` decodes, and the network calls it took."""
        try:
            return sampling.sample(self.model, self.tokenizer, self.encode(prompt), **options)
        except ValueError as e:
            raise UseError(str(e)) from None

    # --- scoring ---

    def loss(self, text: str) -> float:
        """The mean loss on `text` in nats per predicted token, as training measures it (CLM:
        every next token; MLM: the objective's masks; masked diffusion: the mean over the
        ratios of `score`)."""
        return scoring.headline(self.score(text))

    def score(self, text: str) -> dict:
        """Every measure `sw eval` gives, on `text` (use/scoring.py)."""
        ids = np.asarray(self.encode(text, what="the text", masks=False), dtype=np.int64)
        return scoring.score(self, scoring.windows_of(ids, self.plan.data.seq_len))

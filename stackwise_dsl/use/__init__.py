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
import os
import stat
from pathlib import Path

import attrs
import numpy as np
import torch

from stackwise_dsl.core import sampling
from stackwise_dsl.core.errors import RunError
from stackwise_dsl.core.stage_model import StageModel
from stackwise_dsl.data import DataError, corpus
from stackwise_dsl.data.tokenizer import Tokenizer, build_tokenizer, restored
from stackwise_dsl.ir.enums import Device
from stackwise_dsl.lower import plan as p
from stackwise_dsl.runtime import checkpoint as checkpoints
from stackwise_dsl.runtime import device_for

MASK = "<mask>"  # where a prompt asks a masked model to fill in

SAMPLERS = {  # by objective; the first is the default
    "clm": ("autoregressive",),
    "mlm": ("fill",),
    "masked_diffusion/depth": ("depth", "fused"),
    "masked_diffusion/input": ("ancestral", "low_confidence"),
}


class UseError(RunError):
    """A request a trained model cannot answer (a prompt, a sampler, a checkpoint), in words."""


def load(run_dir: str | Path, checkpoint: str | int | Path | None = None, *,
         device: str = "cpu") -> Trained:  # fmt: skip
    """The model of a run's checkpoint: `checkpoint` is a stage number (the checkpoint at its
    end), a checkpoint's name or path, or None for the latest."""
    run_dir = Path(run_dir)
    plan = checkpoints.load_plan(run_dir)
    path = find_checkpoint(run_dir, checkpoint, plan)
    state = checkpoints.read_state(path, plan)
    store = checkpoints.load(path, plan, optimizer=False)[0]
    try:
        torch_device = device_for(Device(device))
    except ValueError:
        raise UseError(f"device {device!r} is not one of cpu, cuda") from None
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
    if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
        number = int(which)
        if not 1 <= number <= len(plan.stages):
            raise UseError(f"the run has stages 1 to {len(plan.stages)}, not {number}")
        for path in _complete(root):
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


def _complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(c for c in root.iterdir()
                  if not c.name.startswith(".") and (c / "state.json").is_file())  # fmt: skip


def _listing(root: Path) -> str:
    names = [c.name for c in _complete(root)]
    return f"its checkpoints are {', '.join(names)}" if names else "it has no checkpoint"


def tokenizer_of(run_dir: Path, plan: p.Plan) -> Tokenizer:
    """The run's tokenizer (tokenizer.json); a run that did not keep one gets it again from
    its data."""
    file = run_dir / "tokenizer.json"
    if file.exists():
        try:
            return restored(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, DataError) as e:
            raise UseError(
                f"{file} cannot be read ({e}); it is the run's vocabulary: restore it, or "
                "delete it to build it from the data"
            ) from None
    try:
        return build_tokenizer(plan.data.tokenizer, corpus.documents(plan.data.source,
                                                                     plan.run.seed))  # fmt: skip
    except DataError as e:
        raise UseError(f"{file} is missing and the data cannot give it again: {e}") from None


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
        return corpus.read(str(file))
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
    def kind(self) -> str:
        """The objective's key in SAMPLERS."""
        o = self.objective
        if isinstance(o, p.MaskedDiffusion):
            return "masked_diffusion/" + ("input" if isinstance(o.time, p.InputTime) else "depth")
        return "mlm" if isinstance(o, p.Mlm) else "clm"

    @property
    def samplers(self) -> tuple[str, ...]:
        return SAMPLERS[self.kind]

    # --- text and ids ---

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; each `<mask>` in it is the mask token."""
        ids: list[int] = []
        for i, piece in enumerate(text.split(MASK)):
            if i:
                ids.append(self.tokenizer.specials.mask)
            if piece:
                try:
                    ids += [int(x) for x in self.tokenizer.encode(piece)]
                except DataError as e:
                    raise UseError(f"the prompt cannot be encoded: {e}") from None
        return ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(x) for x in ids])

    # --- sampling ---

    def generate(self, prompt: str = "", *, max_new_tokens: int | None = None,
                 num_samples: int = 1, **options) -> list[str]:  # fmt: skip
        """`num_samples` texts: the prompt continued (CLM) or with its `<mask>`s and
        `max_new_tokens` masks after it filled (masked models). Options: temperature (0:
        the most likely), top_k, top_p, seed, sampler, steps, block (see `sample`)."""
        ids = self.sample(prompt, max_new_tokens=max_new_tokens, num_samples=num_samples,
                          **options).ids  # fmt: skip
        return [self.decode(row) for row in ids.tolist()]

    def sample(self, prompt: str = "", *, max_new_tokens: int | None = None,
               num_samples: int = 1, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int = 0, sampler: str | None = None,
               steps: int | None = None, block: int | None = None) -> sampling.Sampled:  # fmt: skip
        """The ids `generate` decodes, and the network calls it took. `steps`: the time steps
        of a time-as-input sampler (default num_time_steps, else 64); `block`: the
        low_confidence sampler's block length (default: one block)."""
        sampler = sampler or self.samplers[0]
        self._check_options(sampler, num_samples, temperature, top_k, top_p, steps, block)
        ids = self.encode(prompt)
        if self.kind == "clm":
            if MASK in prompt:
                raise UseError("a causal LM continues its prompt; it has no `<mask>` to fill")
            if not ids:
                ids = [self.tokenizer.specials.eos]  # a document starts after <eos>
        room = self.plan.model.context - len(ids)
        if max_new_tokens is None:
            has_masks = self.kind != "clm" and self.tokenizer.specials.mask in ids
            wanted = 100 if self.kind == "clm" else self.plan.data.seq_len - len(ids)
            max_new_tokens = 0 if has_masks else max(0, min(wanted, room))
        if max_new_tokens < 0:
            raise UseError(f"max_new_tokens must be at least 0, not {max_new_tokens}")
        if max_new_tokens > room:
            raise UseError(f"a prompt of {len(ids)} tokens and {max_new_tokens} new ones exceed "
                           f"the model's context of {self.plan.model.context}")  # fmt: skip
        if self.kind == "clm" and max_new_tokens == 0:
            raise UseError("nothing to generate: max_new_tokens is 0")
        mask = self.tokenizer.specials.mask
        if self.kind != "clm":
            ids = ids + [mask] * max_new_tokens
            if mask not in ids:
                raise UseError(f"nothing to fill: the prompt has no `{MASK}` and max_new_tokens "
                               "is 0")  # fmt: skip
        x = torch.tensor([ids] * num_samples, dtype=torch.long, device=self.model.device)
        generator = torch.Generator().manual_seed(seed)
        choice = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                  "generator": generator}  # fmt: skip
        banned = (mask, self.tokenizer.specials.pad)
        if self.kind == "clm":
            out = sampling.continue_text(self.model, x, max_new_tokens, **choice)
            return sampling.Sampled(ids=out.cpu(), calls=max_new_tokens)
        if sampler == "fill":
            out = sampling.fill(self.model, x, mask=mask, banned=banned, **choice)
        elif sampler in ("depth", "fused"):
            levels = sampling.depth_levels(self.plan, self.stage, fused=sampler == "fused")
            out = sampling.unroll_depth(self.model, x, levels, mask=mask, banned=banned,
                                        **choice)  # fmt: skip
        else:
            o = self.objective
            steps = steps or o.time.num_time_steps or 64
            if sampler == "ancestral":
                fractions, times = sampling.ancestral_steps(o, steps)
                out = sampling.ancestral(self.model, x, fractions, times, mask=mask,
                                         banned=banned, **choice)  # fmt: skip
            else:
                out = sampling.low_confidence(self.model, x, steps, block,
                                              lambda f: sampling.time_for(o, f), mask=mask,
                                              banned=banned, **choice)  # fmt: skip
        return sampling.Sampled(ids=out.ids.cpu(), calls=out.calls)

    def _check_options(self, sampler, num_samples, temperature, top_k, top_p, steps, block):
        if sampler not in self.samplers:
            raise UseError(f"sampler {sampler!r} does not fit this run's objective "
                           f"({self.kind}): use {' or '.join(self.samplers)}")  # fmt: skip
        if num_samples < 1:
            raise UseError(f"num_samples must be at least 1, not {num_samples}")
        if not temperature >= 0:
            raise UseError(f"temperature must be at least 0, not {temperature}")
        if top_k is not None and top_k < 1:
            raise UseError(f"top_k must be at least 1, not {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise UseError(f"top_p must be in (0, 1], not {top_p}")
        if steps is not None and (steps < 1 or self.kind != "masked_diffusion/input"):
            raise UseError(f"steps ({steps}) is for samplers of time as input, at least 1"
                           if self.kind == "masked_diffusion/input" else
                           "steps is only for masked diffusion with time as input")  # fmt: skip
        if block is not None and (sampler != "low_confidence" or block < 1):
            raise UseError("block is the low_confidence sampler's block length, at least 1")

    # --- scoring ---

    def loss(self, text: str) -> float:
        """The mean loss on `text` in nats per predicted token, as training measures it (CLM:
        every next token; MLM: the objective's masks; masked diffusion: the mean over the
        ratios of `score`)."""
        from stackwise_dsl.use.evaluation import headline

        return headline(self.score(text))

    def score(self, text: str) -> dict:
        """Every measure `sw eval` gives, on `text` (use/evaluation.py)."""
        from stackwise_dsl.use.evaluation import score, windows_of

        ids = np.asarray(self.encode(text), dtype=np.int64)
        return score(self, windows_of(ids, self.plan.data.seq_len))

"""Checkpoints: weights and optimizer tensors as safetensors, everything else as JSON.

A checkpoint is a directory written under a temporary name and renamed into place in one
step, then `latest.json` is replaced (also atomically) to point at it: a run killed while
writing leaves the previous checkpoint intact and current. Nothing is ever unpickled.

Masters of stacks that stopped changing are not copied into every later checkpoint: its
`state.json` names (under `stacks_on_disk`) the stage-end checkpoint file that holds them.
Stage-end checkpoints are never pruned, so those files stay.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError

from stackwise_dsl.core.errors import Damaged, RunError
from stackwise_dsl.lower import plan as p
from stackwise_dsl.lower.serialize import PLAN_FORMAT, PlanFormatError, from_json
from stackwise_dsl.runtime.weights import OnDisk, Store

LATEST = "latest.json"
KEEP_STEP_CHECKPOINTS = 2


def save(run_dir: Path, name: str, store: Store, optimizer: dict | None, state: dict) -> Path:
    """Write checkpoint `name` and make it current. If it cannot be written (a full disk, a
    read-only directory), nothing of it is left and the previous checkpoint stays current."""
    root = run_dir / "checkpoints"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        _write(tmp, store, optimizer, state, root)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_json(run_dir / "checkpoints" / LATEST, {"checkpoint": name})
    except (OSError, SafetensorError) as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        last = latest(run_dir)
        kept = "no checkpoint was written yet"
        if last is not None:
            kept = f"the last good checkpoint, {last.name}, is still current"
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise RunError(f"cannot write checkpoint {name} in {root} ({why}); {kept}") from None
    _prune(root, keep=name)
    return final


def _write(tmp: Path, store: Store, optimizer, state: dict, root: Path) -> None:
    """A checkpoint's files, into the temporary directory `tmp`."""
    from safetensors.torch import save_file

    save_file(store.flat(), str(tmp / "model.safetensors"))
    opt_meta = None
    if optimizer is not None:
        tensors, opt_meta = split_optimizer(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    full = {
        **state,
        "stacks_on_disk": {str(k): _relative(v, root) for k, v in store.on_disk().items()},
        "optimizer": opt_meta,
        "rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    _write_json(tmp / "state.json", full)
    _fsync_dir(tmp)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None when the run has written none. A latest.json
    that cannot be read, or names anything but a complete checkpoint of this run, is
    `Damaged` (it is only ever replaced whole, so that is damage, not a run in progress).
    Without latest.json (deleted, or a kill between a checkpoint and its pointer) it is the
    newest complete checkpoint, never a fresh start over them."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if not pointer.exists():
        if not root.is_dir():
            return None
        names = complete(root)
        return root / names[-1] if names else None
    try:
        name = read_json(pointer).get("checkpoint")
    except Damaged as e:
        raise Damaged(f"{e}; {_choices(root)}") from None
    if isinstance(name, str) and _plain_name(name) and (root / name / "state.json").is_file():
        return root / name
    raise Damaged(
        f"{pointer} names {name!r}, which is not a complete checkpoint of this run; "
        + _choices(root)
    )


def complete(root: Path) -> list[str]:
    """The names of the complete checkpoints under `root` (a run's checkpoints/), oldest
    first; none when it is not a directory."""
    if not root.is_dir():
        return []
    return sorted(c.name for c in root.iterdir()
                  if _plain_name(c.name) and (c / "state.json").is_file())  # fmt: skip


def _plain_name(name: str) -> bool:
    """A checkpoint's directory name: one path component, not hidden."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and (not name.startswith("."))
    )


def _choices(root: Path) -> str:
    """What a person can do about a damaged latest.json."""
    names = complete(root)
    if not names:
        return "there is no complete checkpoint to resume from: start the run again"
    return (
        f"complete checkpoints: {', '.join(names)}; to resume from the newest, write "
        f'{{"checkpoint": "{names[-1]}"}} into {root / LATEST}'
    )


def is_stage_end(path: Path) -> bool:
    return bool(state_of(path).get("stage_done", False))


def state_of(path: Path) -> dict:
    """A checkpoint's state.json ({} when it cannot be read; `load` says why)."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


MAX_JSON_BYTES = 64 << 20  # a run's JSON files are kilobytes; anything this big is not one


def _regular(path: Path, limit: int | None = None) -> None:
    """A file of the run is a regular file (never a device or FIFO, which could hang a read
    or never end), of at most `limit` bytes; else `Damaged`. A missing file passes (its
    reader says so)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise Damaged(f"{path} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise Damaged(f"{path} is not a regular file (a directory, device or FIFO)")
    if limit is not None and info.st_size > limit:
        raise Damaged(f"{path} is {info.st_size:,} bytes, too large to be what a run writes")


def read_json(path: Path) -> dict:
    """A JSON object from a run directory's file, or `Damaged` naming the file."""
    _regular(path, MAX_JSON_BYTES)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Damaged(f"{path} is missing") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError among them
        raise Damaged(f"{path} cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise Damaged(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


# state.json: each field and what it must hold
_COUNTS = ("stage", "step", "global_step", "metrics_lines")
_SUMMARY = {"stage": int, "kind": str, "steps": int, "train_loss": float, "val_loss": float,
            "seconds": float, "trainable": int, "tokens_per_s": float}  # fmt: skip


def read_state(path: Path, plan: p.Plan) -> dict:
    """A checkpoint's state.json, every field checked against what `save` writes and the
    run's plan, or `Damaged` naming the first field that is wrong."""
    file = path / "state.json"
    state = read_json(file)

    def wrong(what: str) -> Damaged:
        return Damaged(f"{file} is damaged: {what}; resume from another checkpoint "
                       f"(point {path.parent / LATEST} at it) or start the run again")  # fmt: skip

    for key in (*_COUNTS, "stage_done", "stream", "rng", "stacks_on_disk", "flops"):
        if key not in state:
            raise wrong(f"it has no `{key}`")
    for key, default in (("summaries", []), ("optimizer", None), ("scaler", None),
                         ("window", None)):  # fmt: skip
        state.setdefault(key, default)  # runs written before these were kept
    for key in _COUNTS:
        if not _count(state[key]):
            raise wrong(f"`{key}` is {state[key]!r}, not a whole number >= 0")
    if not 1 <= state["stage"] <= len(plan.stages):
        raise wrong(f"`stage` is {state['stage']}, but the plan has {len(plan.stages)} stages")
    if state["step"] > plan.stages[state["stage"] - 1].steps:
        raise wrong(f"`step` is {state['step']}, past the end of stage {state['stage']}")
    flops = state["flops"]
    if not (isinstance(flops, int | float) and not isinstance(flops, bool)
            and math.isfinite(flops) and flops >= 0):  # fmt: skip
        raise wrong(f"`flops` is {flops!r}, not a number >= 0")
    if not isinstance(state["stage_done"], bool):
        raise wrong(f"`stage_done` is {state['stage_done']!r}, not true or false")
    stream = state["stream"]
    if not (isinstance(stream, dict) and set(stream) == {"epoch", "offset"}
            and all(_count(v) for v in stream.values())):  # fmt: skip
        raise wrong(f"`stream` is {stream!r}, not {{epoch, offset}} whole numbers >= 0")
    if not (isinstance(state["summaries"], list) and all(map(_summary, state["summaries"]))):
        raise wrong("`summaries` is not a list of stage summaries")
    _check_optional(state, wrong)
    _check_on_disk(state["stacks_on_disk"], path, plan, wrong)
    state["rng"] = _rng(state["rng"], wrong)
    return state


def _check_optional(state: dict, wrong) -> None:
    """The fields only some checkpoints fill: optimizer and scaler state, the log window."""
    for key in ("optimizer", "scaler", "window"):
        if not isinstance(state[key], dict | None):
            raise wrong(f"`{key}` is {state[key]!r}, not an object or null")
    optimizer, window = state["optimizer"], state["window"]
    if optimizer is None and not state["stage_done"]:
        raise wrong("it was written in the middle of a stage, but holds no optimizer state")
    if optimizer is not None and not (
        isinstance(optimizer.get("param_groups"), list)
        and isinstance(optimizer.get("scalars"), dict)
    ):
        raise wrong("`optimizer` lacks its param_groups or scalars")
    if window is not None and not (
        set(window) == {"losses", "tokens"} and _count(window["tokens"])
        and isinstance(window["losses"], list)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in window["losses"])
    ):  # fmt: skip
        raise wrong("`window` is not the losses and tokens since the last log")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _summary(entry) -> bool:
    if not (isinstance(entry, dict) and set(entry) == set(_SUMMARY)):
        return False
    for key, kind in _SUMMARY.items():
        value = entry[key]
        if key == "val_loss" and value is None:
            continue
        ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if not ok or isinstance(value, bool):
            return False
    return True


def _check_on_disk(on_disk, path: Path, plan: p.Plan, wrong) -> None:
    """`stacks_on_disk` maps stack positions of the plan to model files of this run's other
    checkpoints: never a path that leaves the run's checkpoints directory."""
    if not isinstance(on_disk, dict):
        raise wrong(f"`stacks_on_disk` is {on_disk!r}, not an object")
    root = path.parent.resolve()
    for position, file in on_disk.items():
        if not (position.isdigit() and int(position) < len(plan.stacks)):
            raise wrong(f"`stacks_on_disk` names stack {position!r}, which the plan has not")
        if not isinstance(file, str):
            raise wrong(f"`stacks_on_disk` gives {file!r} for stack {position}, not a path")
        target = (path.parent / file).resolve()
        if not target.is_relative_to(root) or target.name != "model.safetensors":
            raise wrong(f"`stacks_on_disk` points outside this run's checkpoints ({file})")
        if not target.is_file():
            raise wrong(f"`stacks_on_disk` names {file}, which does not exist")


def _rng(text, wrong) -> torch.Tensor:
    """The torch RNG state saved as base64: exactly as many bytes as this torch's state."""
    try:
        data = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except ValueError:
        data = None
    size = torch.get_rng_state().numel()
    if data is None or len(data) != size:
        raise wrong(f"`rng` is not the base64 of a {size}-byte torch RNG state")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def load(
    path: Path, plan: p.Plan, *, optimizer: bool = True
) -> tuple[Store, dict | None, dict, torch.Tensor]:
    """(weights, optimizer state dict or None, state, torch RNG state) of a checkpoint, each
    file checked before anything uses it; `Damaged` names the first that is wrong. Without
    `optimizer` (an export needs only the weights) its state is neither read nor given."""
    state = read_state(path, plan)
    try:
        store = Store.from_flat(_tensors(path / "model.safetensors"))
    except ValueError as e:
        raise Damaged(f"{path / 'model.safetensors'} is not a checkpoint's model: {e}") from None
    for position, file in state["stacks_on_disk"].items():
        try:
            store.stacks[int(position)] = OnDisk(path.parent / file, f"stack/{position}/")
        except (OSError, KeyError, SafetensorError) as e:
            raise Damaged(f"{path.parent / file} (which {path / 'state.json'} refers to) "
                          f"cannot be read: {e}") from None  # fmt: skip
    verify(store, plan, path / "model.safetensors")
    opt_state = None
    if optimizer and state["optimizer"] is not None:
        tensors = _tensors(path / "optimizer.safetensors")
        try:
            opt_state = join_optimizer(tensors, state["optimizer"])
        except (ValueError, KeyError, IndexError) as e:
            raise Damaged(f"{path / 'optimizer.safetensors'} does not match the optimizer "
                          f"state in {path / 'state.json'} ({e})") from None  # fmt: skip
    return store, opt_state, state, state["rng"]


def _tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or `Damaged` naming it."""
    from safetensors.torch import load_file

    _regular(file)
    try:
        tensors = load_file(str(file))
    except FileNotFoundError:
        raise Damaged(f"{file} is missing; resume from another checkpoint or start the run "
                      "again") from None  # fmt: skip
    except (OSError, SafetensorError) as e:
        raise Damaged(f"{file} is damaged ({e}); resume from another checkpoint or start the "
                      "run again") from None  # fmt: skip
    return tensors


def verify(store: Store, plan: p.Plan, file: Path) -> None:
    """Every stored tensor is one the plan's model has, with its shape, and every stack and
    shared weight the model needs is there (checked on the meta device: nothing allocated)."""
    from stackwise_dsl.core.model import BlockStack, Rack

    with torch.device("meta"):
        shared = {k: v.shape for k, v in Rack(plan).state_dict().items()}
        wanted = {f"shared/{k}": v for k, v in shared.items()}
        for position in store.stacks:
            if not 0 <= position < len(plan.stacks):
                raise Damaged(f"{file} holds stack {position}, which the plan has not")
            stack = BlockStack(plan.stacks[position], plan.model, plan.run.seed)
            wanted |= {f"stack/{position}/{k}": v.shape for k, v in stack.state_dict().items()}
    held = {f"shared/{k}": v.shape for k, v in store.shared.items()}
    for position, state in store.stacks.items():
        held |= {f"stack/{position}/{k}": _shape(state, k) for k in state}
    for key in sorted(set(held) | set(wanted)):
        if key not in wanted:
            raise Damaged(f"{file} holds `{key}`, which the plan's model has not: the "
                          "checkpoint is damaged or from another spec")  # fmt: skip
        if key not in held:
            raise Damaged(f"{file} lacks `{key}`: the checkpoint is damaged")
        if tuple(held[key]) != tuple(wanted[key]):
            raise Damaged(f"{file} holds `{key}` of shape {tuple(held[key])}, but the plan's "
                          f"model has {tuple(wanted[key])}: the checkpoint is damaged or from "
                          "another spec")  # fmt: skip
    for (position, name), _ in store.adapters.items():
        if not (0 <= position < len(plan.stacks) and name in ("stack", "trunk")):
            raise Damaged(f"{file} holds an adapter `{name}` for stack {position}, which the "
                          "plan has not")  # fmt: skip


def _shape(state, key: str) -> tuple[int, ...]:
    """A stored tensor's shape, without reading it when it lies on disk."""
    return tuple(state.shape_of(key)) if isinstance(state, OnDisk) else tuple(state[key].shape)


def _relative(file: Path, root: Path) -> str:
    """A checkpoint file as a path under `checkpoints/` (the run directory may move)."""
    file = Path(file).resolve()
    try:
        return file.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"{file} is not a checkpoint of this run") from None


def split_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as tensors (safetensors) plus a JSON-ready rest. Nested
    entries (bitsandbytes keeps its 8-bit state in a dict per parameter) become paths."""
    tensors, scalars = {}, {}

    def walk(prefix: str, entry: dict) -> None:
        for key, value in entry.items():
            path = f"{prefix}/{key}"
            if isinstance(value, dict):
                walk(path, value)
            elif isinstance(value, torch.Tensor):
                tensors[path] = value.detach().contiguous().cpu()
            else:
                scalars[path] = value

    for index, entry in sd["state"].items():
        walk(str(index), entry)
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, *keys = flat.split("/")
        entry = state.setdefault(int(index), {})
        for key in keys[:-1]:
            entry = entry.setdefault(key, {})
        entry[keys[-1]] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as f:
            os.fsync(f.fileno())


def _prune(root: Path, keep: str) -> None:
    """Keep every stage-end checkpoint and the newest few step checkpoints; drop temp dirs."""
    steps = []
    for child in root.iterdir():
        if child.name.startswith(".tmp-"):
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(
                missing_ok=True
            )
        elif child.is_dir() and child.name != keep and not is_stage_end(child):
            steps.append(child)
    for old in sorted(steps)[: max(0, len(steps) - (KEEP_STEP_CHECKPOINTS - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def plan_file(run_dir: Path) -> Path:
    """A run directory's plan.json, or a RunError saying there is no run."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise RunError(f"{run_dir} is a file, not a run directory")
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir} is not a run directory (there is no such directory)")
    file = Path(run_dir) / "plan.json"
    if not file.exists():
        raise RunError(f"{run_dir} holds no run (it has no plan.json)")
    return file


def load_plan(run_dir: Path) -> p.Plan:
    """The plan a run was started with (its plan.json)."""
    file = plan_file(run_dir)
    try:
        return from_json(read_json(file))
    except PlanFormatError as e:
        written = _plan_format(Path(run_dir))
        if written is not None and written != PLAN_FORMAT:
            raise RunError(
                f"{run_dir} was started by an earlier stackwise-dsl, whose plans have format "
                f"{written}; this one reads format {PLAN_FORMAT}: resume or export the run with "
                "the stackwise-dsl that started it, or start it again"
            ) from None
        raise Damaged(f"{file} is damaged: {e}; it is the plan the run was started with, "
                      "so restore it or start the run again") from None  # fmt: skip


def _plan_format(run_dir: Path) -> int | None:
    """The plan format run.json says the run was started with (1 when it says none), or
    None when run.json cannot be read."""
    try:
        info = read_json(run_dir / "run.json")
    except RunError:
        return None
    written = info.get("plan_format", 1) if isinstance(info, dict) else None
    return written if isinstance(written, int) and not isinstance(written, bool) else None

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
import os
import shutil
import tempfile
from pathlib import Path

import torch

from stackwise_dsl.runtime.weights import OnDisk, Store

LATEST = "latest.json"
KEEP_STEP_CHECKPOINTS = 2


def save(
    run_dir: Path, name: str, store: Store, optimizer: torch.optim.Optimizer | None, state: dict
) -> Path:
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    save_file(store.flat(), str(tmp / "model.safetensors"))
    opt_meta = None
    if optimizer is not None:
        tensors, opt_meta = _split(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    full = {
        **state,
        "stacks_on_disk": {str(k): _relative(v, root) for k, v in store.on_disk().items()},
        "optimizer": opt_meta,
        "rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    _write_json(tmp / "state.json", full)
    _fsync_dir(tmp)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_json(run_dir / "checkpoints" / LATEST, {"checkpoint": name})
    _prune(root, keep=name)
    return final


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    pointer = run_dir / "checkpoints" / LATEST
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError):
        return None
    path = run_dir / "checkpoints" / name
    return path if (path / "state.json").exists() else None


def is_stage_end(path: Path) -> bool:
    return bool(state_of(path).get("stage_done", False))


def state_of(path: Path) -> dict:
    """A checkpoint's state.json ({} when it cannot be read)."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def load(path: Path) -> tuple[Store, dict | None, dict, torch.Tensor]:
    """(weights, optimizer state dict or None, state, torch RNG state) of a checkpoint."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    store = Store.from_flat(load_file(str(path / "model.safetensors")))
    for position, file in state.get("stacks_on_disk", {}).items():
        store.stacks[int(position)] = OnDisk(path.parent / file, f"stack/{position}/")
    optimizer = None
    if state.get("optimizer") is not None:
        optimizer = _join(load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    rng = torch.frombuffer(bytearray(base64.b64decode(state["rng"])), dtype=torch.uint8).clone()
    return store, optimizer, state, rng


def _relative(file: Path, root: Path) -> str:
    """A checkpoint file as a path under `checkpoints/` (the run directory may move)."""
    file = Path(file).resolve()
    try:
        return file.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"{file} is not a checkpoint of this run") from None


def _split(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
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


def _join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
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

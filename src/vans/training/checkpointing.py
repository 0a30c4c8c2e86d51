"""Resumable training checkpoints: everything needed to continue a run bit for bit.

    OUT_DIR/checkpoints/step-00000500/
      trainable.safetensors   the parameters with requires_grad (frozen weights are not copied)
      optimizer.pt            optimizer state (tensors and plain values: loads with weights_only)
      scheduler.pt            LR scheduler state
      rng.pt                  python / numpy / torch RNG states, one entry per process
      state.json              step, samples consumed (the data position), number of processes
      config.yaml             the resolved config of the run

A checkpoint is written into a hidden temporary sibling and renamed into place, so a
`step-*` directory is always complete; a crash leaves at worst a `.step-*.tmp` directory,
which resuming ignores.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from vans.errors import one_line
from vans.io import atomic_dir
from vans.models.errors import CheckpointError

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"step-(\d{8})")
_FILES = (
    "trainable.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "rng.pt",
    "state.json",
    "config.yaml",
)


@dataclass(frozen=True)
class TrainState:
    """Where a run stands."""

    step: int
    """Optimizer steps taken."""
    samples_seen: int
    """Samples consumed: the position of the next sample in the run's data order."""
    num_processes: int = 1
    """Processes the run was using when the checkpoint was written."""


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (temporary directories excluded)."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = checkpoint_dirs(out_dir)
    return found[-1] if found else None


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimizer updates, by name (each shared parameter once)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form `torch.load(weights_only=True)` reads back."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by `rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: str | Path,
    state: TrainState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng_states: list[dict[str, Any]],
    config: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write `OUT_DIR/checkpoints/step-XXXXXXXX` atomically and delete all but the newest
    `keep_last` checkpoints. Called by one process; `rng_states` holds every process's."""
    path = Path(out_dir) / CHECKPOINTS / f"step-{state.step:08d}"
    with atomic_dir(path) as tmp:
        weights = {
            name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in trainable_parameters(model).items()
        }
        save_file(weights, tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states, tmp / "rng.pt")
        (tmp / "state.json").write_text(
            json.dumps(
                {
                    "step": state.step,
                    "samples_seen": state.samples_seen,
                    "num_processes": state.num_processes,
                },
                indent=2,
            )
            + "\n"
        )
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for old in checkpoint_dirs(out_dir)[:-keep_last]:
        shutil.rmtree(old)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    process_index: int,
) -> TrainState:
    """Restore the trainable parameters, optimizer, scheduler and this process's RNG states
    from a checkpoint written by `save_checkpoint`; returns where the run stood. Every file
    is read (and checked) before anything is restored, so a damaged checkpoint raises a
    CheckpointError and leaves the model as it was."""
    path = check_checkpoint(path)
    params = trainable_parameters(model)
    device = next(iter(params.values())).device
    try:
        weights = load_file(path / "trainable.safetensors")
        optimizer_state = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
        scheduler_state = torch.load(path / "scheduler.pt", weights_only=True)
        rng = torch.load(path / "rng.pt", weights_only=True)
        info = json.loads((path / "state.json").read_text(encoding="utf-8"))
        state = TrainState(int(info["step"]), int(info["samples_seen"]), int(info["num_processes"]))
    except Exception as exc:  # truncated files, pickles, bad JSON: all mean "damaged"
        raise CheckpointError(f"{path}: damaged ({type(exc).__name__}: {one_line(exc)})") from None
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: trainable parameters do not match the model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}): was it written by another "
            "stage or config?"
        )
    for name, p in params.items():
        if weights[name].shape != p.shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(weights[name].shape)} in the checkpoint, "
                f"{tuple(p.shape)} in the model"
            )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    # With another number of processes the RNG streams cannot line up; the data order and
    # per-sample seeds still do, so only global-RNG draws (dropout) differ from the old run.
    if process_index < len(rng):
        set_rng_state(rng[process_index])
    return state


def resume_checkpoint(
    out_dir: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    process_index: int,
) -> tuple[Path, TrainState, list[str]] | None:
    """Restore the newest checkpoint of a run that reads back whole, falling back to older
    ones past damaged ones (a disk that filled up, a copy cut short); returns it, its state
    and why each newer one was passed over, or None when the run has no checkpoint. A run
    whose every checkpoint is damaged raises a CheckpointError listing them."""
    found = checkpoint_dirs(out_dir)
    passed: list[str] = []
    for path in reversed(found):
        try:
            state = load_checkpoint(
                path, model=model, optimizer=optimizer, scheduler=scheduler,
                process_index=process_index,
            )  # fmt: skip
        except CheckpointError as exc:
            passed.append(str(exc))
            continue
        return path, state, passed
    if passed:
        raise CheckpointError("no checkpoint of the run reads back: " + "; ".join(passed))
    return None


def check_checkpoint(path: str | Path) -> Path:
    """`path` if it is a complete training checkpoint, else a CheckpointError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    missing = [name for name in _FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{path}: not a training checkpoint, missing {', '.join(missing)} (a checkpoint "
            f"written by `vans train` holds {', '.join(_FILES)})"
        )
    return path

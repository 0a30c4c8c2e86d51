"""A tiny `TrainTask` for the training-loop tests, and a script that trains it.

Regression of a fixed random linear map through a small MLP, with per-sample-seeded noise
added to the targets in `collate` (the seeds contract: the loss of a sample depends on its
seed only, never on the batch it lands in). A frozen input projection checks that only
trainable parameters are optimised and checkpointed.

    python tests/train_toy_task.py [--resume] [--dump-ranks] KEY=VALUE ...

(also under `torchrun --nproc_per_node 2`); keys are those of `ToyRunConfig`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vans.training.config import TrainConfig, load_config


@dataclass
class ToyTaskConfig:
    """The toy problem."""

    num_train: int = 24
    """Training items."""
    num_eval: int = 6
    """Held-out items."""
    dim: int = 4
    """Input features."""
    hidden: int = 8
    """Hidden units of the MLP."""
    noise: float = 0.1
    """Std of the per-sample target noise drawn in `collate` from the sample's seed."""
    dropout: float = 0.0
    """Dropout on the hidden layer: draws from the global RNG, whose state a resume restores
    (0 for runs compared across process counts, where each process has its own stream)."""
    seconds_per_step: float = 0.0
    """Sleep in each loss call, so a subprocess run can be killed half-way."""
    crash_at_batch: int = 0
    """Raise on this training micro-batch (1-based; 0: never), to interrupt a run in-process."""


@dataclass
class ToyRunConfig:
    """A full run: the toy problem and the generic training settings."""

    task: ToyTaskConfig = field(default_factory=ToyTaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ToyModel(torch.nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(dim, dim)
        self.frozen.requires_grad_(False)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden),
            torch.nn.Tanh(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.frozen(x))


def _items(count: int, dim: int, seed: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(count, dim, generator=g)
    w = torch.randn(dim, 2, generator=torch.Generator().manual_seed(1234))
    return [{"index": i, "x": x[i], "y": torch.sin(x[i] @ w)} for i in range(count)]


class ToyTask:
    def __init__(self, config: ToyTaskConfig, seed: int = 0) -> None:
        self.config = config
        torch.manual_seed(seed)
        self.model = ToyModel(config.dim, config.hidden, config.dropout)
        self.train_batches = 0
        self.collated: list[tuple[list[int], list[int]]] = []
        """(item indices, seeds) of every `collate` call, to check the data order."""
        self.train_items = _items(config.num_train, config.dim, seed=1)
        self.eval_items = _items(config.num_eval, config.dim, seed=2)

    def train_dataset(self) -> list[dict[str, Any]]:
        return self.train_items

    def eval_dataset(self) -> list[dict[str, Any]] | None:
        return self.eval_items

    def collate(self, items: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
        self.collated.append(([item["index"] for item in items], list(seeds)))
        noise = torch.stack(
            [torch.randn(2, generator=torch.Generator().manual_seed(s)) for s in seeds]
        )
        return {
            "x": torch.stack([item["x"] for item in items]),
            "y": torch.stack([item["y"] for item in items]) + self.config.noise * noise,
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if model.training:
            self.train_batches += 1
            if self.train_batches == self.config.crash_at_batch:
                raise RuntimeError(f"crash at training batch {self.train_batches}")
        if self.config.seconds_per_step:
            time.sleep(self.config.seconds_per_step)
        error = model(batch["x"]) - batch["y"]
        return {"loss": error.pow(2).mean(), "mae": error.abs().mean()}

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, out / "model.safetensors")


def main(argv: list[str]) -> None:
    from vans.training.loop import train

    flags = {a for a in argv if a.startswith("--")}
    config = load_config(ToyRunConfig, None, [a for a in argv if not a.startswith("--")])
    task = ToyTask(config.task, seed=config.train.seed)
    train(task, config.train, resume="--resume" in flags)
    if "--dump-ranks" in flags:  # every process's final weights, to compare them
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        params = {k: v.contiguous() for k, v in task.model.state_dict().items()}
        save_file(params, Path(config.train.out_dir) / f"rank{rank}.safetensors")


if __name__ == "__main__":
    main(sys.argv[1:])

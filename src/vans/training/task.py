"""What a training stage hands to the training loop.

The loop (`vans.training.loop`) owns everything generic: accelerate, data order and
sharding, gradient accumulation, clipping, LR schedule, precision, checkpoints and resume,
progress and metrics. A stage (SFT of the VLM, SFT of the VDM, ...) owns its model, its data
and its loss, and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch


class TrainTask(Protocol):
    """A training stage as the loop sees it."""

    model: torch.nn.Module
    """The module the loop prepares with accelerate (DDP) and whose `requires_grad`
    parameters it optimises and checkpoints."""

    def train_dataset(self) -> Sequence[Any]:
        """Map-style training items (`len` and integer indexing)."""
        ...

    def eval_dataset(self) -> Sequence[Any] | None:
        """Held-out items for the periodic eval loss, or None."""
        ...

    def collate(self, items: Sequence[Any], seeds: Sequence[int]) -> dict[str, Any]:
        """Batch `items` on CPU. `seeds[i]` drives every random choice made for item i
        (noise, timestep, caption dropout), so a sample's loss does not depend on how the
        global batch is split across processes, and a resumed run replays it exactly."""
        ...

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`{"loss": scalar}` plus any other scalars to log. The loss is the mean over the
        batch's samples with every sample weighted equally (so the mean over processes of
        equal-sized shards is the mean over the global batch). `batch` is already on the
        model's device; `model` may be DDP-wrapped."""
        ...

    # Optional: `evaluate(model, batch) -> dict[str, Tensor]`, the scalars logged as
    # `eval_<name>` on held-out items (no gradients, model in eval mode); without it the
    # loop evaluates `loss`. An RL stage reports its held-out rewards this way.
    #
    # Optional: `backward(model, batch, scale) -> dict[str, Tensor]`, `loss` with
    # `scale * loss` backpropagated by the task itself, piece by piece, and "loss" returned
    # detached; the loop then calls it instead of `loss` + backward (Stage 2 frees each
    # denoising step's graph as soon as it is scored).
    #
    # Optional: `num_iterations: int` (trl's mu), how many optimizer steps each batch
    # serves: the loop hands the task the same micro-batches that many steps in a row, and
    # the task may reuse what it computed from them the first time (its rollouts).
    #
    # Optional: `check_trained(rows) -> None`, called with every metrics row of the run
    # (resumed runs included) before `final/` is written; it raises a `VansError` when the
    # rows show that nothing was trained (Stage 2 skipped every prompt), so such a run
    # exits non-zero instead of shipping its starting weights as a result.

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """Write the trained (unwrapped) model to `out` in the project's checkpoint layout,
        so `vans predict --checkpoint out` and the next stage can load it."""
        ...

"""What a Joint-GRPO rollout produces, as typed records, and where its frozen parts run.

A step's batch is a list of `Prompt`s with one seed each. Stage 1 turns a prompt into a
`Stage1Group` (G answers, parsed once, their reward videos, rewards and advantages), Stage 2
into a `Stage2Group` (the anchor caption, G SDE trajectories, their videos, rewards and
advantages); VideoP2R's PA-GRPO turns a `QAPrompt` into a `QAGroup` (G answers, their rule
and judge rewards, per-process advantages). The loss reads a group and nothing else, so a
group can serve several optimizer steps (`RolloutBuffer`, trl's `num_iterations`).

`FrozenParts` puts the models a stage uses but does not train (the renderer in Stage 1, the
reasoner and the renderer's encoders in Stage 2, the reward embedder in both) on the
training device once, before the first rollout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Generic, TypeVar

import torch

from vans.evaluation.embedders import CLIPEmbedder, VideoTextEmbedder
from vans.models.prompting import ParsedOutput
from vans.models.vdm import Conditioning
from vans.models.vlm import Completion
from vans.rl.anchor import Anchor
from vans.rl.flow_grpo import Trajectory
from vans.videoqa.prompting import ParsedTrace
from vans.videoqa.rows import QARow

T = TypeVar("T")


@dataclass(frozen=True)
class Prompt:
    """One training sample as a rollout sees it."""

    id: str
    question: str
    answer: str
    """The ground-truth caption of the next event."""
    vlm_frames: torch.Tensor
    """uint8 (T, H, W, 3): the input video at the reasoner's frame rate."""
    vlm_fps: float
    reference_frames: torch.Tensor
    """uint8 (T, H, W, 3): the input video as the renderer encodes it (the checkpoint's
    reference frame count and size)."""
    target_frames: torch.Tensor
    """uint8 (T, H, W, 3): the ground-truth next event at the rendered size and length."""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Prompt:
        """The prompt with its videos on `device` (what the loop's `send_to_device` calls)."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)


@dataclass
class Stage1Group:
    """G answers of the reasoner to one prompt, scored (Joint-GRPO Stage 1)."""

    prompt: Prompt
    completions: list[Completion]
    parsed: list[ParsedOutput]
    """`parse_output` of each completion, computed once: the captions the renderer draws,
    r_f and r_t1 all read it."""
    videos: torch.Tensor
    """uint8 (G, T, H, W, 3): the frozen renderer's video of each caption."""
    num_unique: int
    """Distinct captions rendered (de-duplication)."""
    rewards: dict[str, torch.Tensor]
    """(G,) per reward name."""
    advantages: torch.Tensor
    """(G,) advantage of each whole answer."""
    token_advantages: torch.Tensor
    """(G, L) per-token advantages (equal to `advantages` on every token unless
    segment-aware)."""
    think_tokens: list[int]
    """Tokens inside each answer's [Think] block."""
    old_logp: torch.Tensor | None = None
    """(G, L) log-probs of the sampled tokens under the sampling policy; None when every
    update is the first (num_iterations 1: the loss uses the detached current ones)."""
    ref_logp: torch.Tensor | None = None
    """(G, L) log-probs under the KL's reference policy; None without a KL term."""


@dataclass
class Stage2Group:
    """G SDE rollouts of the renderer for one prompt's anchor caption (Stage 2)."""

    anchor: Anchor
    seed: int
    """The prompt's seed."""
    conditioning: Conditioning
    trajectory: Trajectory
    videos: torch.Tensor
    """uint8 (G, T, H, W, 3), on CPU."""
    rewards: dict[str, torch.Tensor]
    """(G,) per reward name."""
    advantages: torch.Tensor
    """(G,) the weighted sum of the group-normalised rewards."""
    train_steps: list[int]
    """The SDE steps the loss trains on (`train_step_indices`)."""
    reference_means: list[torch.Tensor] | None = None
    """Per trained step, the KL reference's step mean; None without a KL term."""


@dataclass(frozen=True)
class QAPrompt:
    """One video question as a PA-GRPO rollout sees it."""

    row: QARow
    question: str
    """What the reasoner reads (`videoqa.prompting.question_text`)."""
    frames: torch.Tensor
    """uint8 (T, H, W, 3): the video at the reasoner's frame count."""
    fps: float

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QAPrompt:
        return replace(self, frames=self.frames.to(device, non_blocking=non_blocking))


@dataclass
class QAGroup:
    """G answers of the reasoner to one video question, scored by process (PA-GRPO)."""

    prompt: QAPrompt
    completions: list[Completion]
    parsed: list[ParsedTrace]
    rewards: dict[str, torch.Tensor]
    """(G,) per reward name (accuracy, format, length/*, perception) and per process
    ("process/perception", "process/reasoning": the sums each process is judged by)."""
    advantages: dict[str, torch.Tensor]
    """(G,) per process ("perception", "reasoning", "all"): `rl.advantages.process_advantages`."""
    token_advantages: torch.Tensor
    """(G, L) per-token advantages: each block's tokens its process's."""
    block_tokens: list[dict[str, int]]
    """Per completion, its tokens in each block."""
    old_logp: torch.Tensor | None = None
    """(G, L) sampling-policy log-probs (num_iterations > 1), as `Stage1Group.old_logp`."""
    ref_logp: torch.Tensor | None = None
    """(G, L) reference log-probs; None without a KL term."""


class RolloutBuffer(Generic[T]):
    """The rollouts of a batch, kept for the `num_iterations` optimizer steps that use them.

    The loop hands a task the same batch (the same prompts and seeds) `num_iterations`
    steps in a row; the first call makes the rollouts, the following ones reuse them, and
    after the last use they are dropped. With one iteration nothing is kept."""

    def __init__(self, num_iterations: int) -> None:
        self.num_iterations = num_iterations
        self._kept: dict[tuple[int, ...], tuple[T, int]] = {}

    def get(self, seeds: torch.Tensor, make: Callable[[], T]) -> T:
        key = tuple(int(s) for s in seeds.tolist())
        rollouts, uses = self._kept.pop(key, None) or (make(), 0)
        if uses + 1 < self.num_iterations:
            self._kept[key] = (rollouts, uses + 1)
        return rollouts


class FrozenParts:
    """Modules a stage uses but does not train, and its reward embedder, placed on the
    training device the first time `place` is called with it."""

    def __init__(self, modules: Sequence[torch.nn.Module], embedder: VideoTextEmbedder) -> None:
        self.modules = list(modules)
        self.embedder = embedder
        self.device: torch.device | None = None

    def place(self, device: torch.device) -> None:
        """Move every module (and a CLIP embedder: a toy embedder computes on the CPU) to
        `device`, once."""
        if self.device == device:
            return
        for module in self.modules:
            module.to(device)
        if isinstance(self.embedder, CLIPEmbedder):
            self.embedder.model.to(device)
        self.device = device

"""What the two Joint-GRPO stages share (docs/paper_facts.md#joint-grpo): the GRPO settings, the
data, the rewards' advantages and the statistics they log.

Stage 1 (`joint_grpo_vlm`) tunes the reasoner's LoRA with r_f + r_t1 + r_v1, the reward
videos rendered by the frozen renderer; Stage 2 (`joint_grpo_vdm`) tunes the renderer's DiT
with Flow-GRPO and r_v2 + r_c2, on anchor captions of the frozen reasoner. Both are
`TrainTask`s of the generic loop (`training.loop`), so checkpoints, exact resume, several
processes, progress and metrics are the SFT stages' own. A step's batch is a set of
prompts; each prompt's group of G rollouts is made, scored and turned into advantages
inside the process that owns the prompt, from the prompt's seed, so a run does not depend
on how prompts are split over processes.

Advantages: each reward is z-scored within its group, `(r - mean) / (std + eps)`
(`rl.grpo.group_advantages`), multiplied by its weight, and the results are summed: "the
final reward is a sum of the normalized individual rewards, all weights 1". A reward can
judge a segment of the completion (`RewardFunction.segment`); with `segment_advantages`
each token then gets the sum over the rewards that judge it (rewards judging "all" judge
every token), otherwise every reward judges every token, as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from vans.data.dataset import VideoViews, VNEPDataset
from vans.data.schema import VNEPSample
from vans.models.checkpoint import VANSSettings
from vans.rewards.vans import RewardFunction
from vans.rl.grpo import group_advantages
from vans.training.config import ConfigError
from vans.training.stage_io import LazyItems


@dataclass
class GRPOConfig:
    """The GRPO update, shared by both stages (paper values as defaults)."""

    group_size: int = 8
    """G: rollouts per prompt (paper: 8)."""
    beta: float = 0.004
    """Weight of the KL to the starting (SFT) model (paper: 0.004)."""
    clip_range: float = 1e-3
    """PPO clip epsilon, low side (paper: 1e-3)."""
    clip_range_high: float | None = None
    """PPO clip epsilon, high side (DAPO's clip-higher); None: `clip_range`."""
    scale_rewards: Literal["group", "none"] = "group"
    """Divide each reward's group-centred value by the group std ("group", GRPO) or not
    ("none", Dr. GRPO)."""
    eps: float = 1e-4
    """Added to the group std (trl's value)."""
    reward_weights: dict[str, float] = field(default_factory=dict)
    """Weights by reward name (r_f, r_t1, r_v1, r_v2, r_c2); unnamed rewards weigh 1 (the
    paper's). A weight of 0 switches a reward off (e.g. r_c2: 0 for the paper's
    reward-hacking ablation); it is still computed and logged."""

    def __post_init__(self) -> None:
        problems = []
        if self.group_size < 2:
            problems.append(
                f"group_size must be >= 2 (advantages compare a group), got {self.group_size}"
            )
        for name in ("beta", "clip_range", "eps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_range_high is not None and self.clip_range_high < 0:
            problems.append(f"clip_range_high must be >= 0, got {self.clip_range_high}")
        if problems:
            raise ConfigError("invalid grpo config: " + "; ".join(problems))

    @property
    def eps_high(self) -> float:
        return self.clip_range if self.clip_range_high is None else self.clip_range_high

    def check_rewards(self, rewards: Sequence[RewardFunction]) -> None:
        """Fail naming a weight given for a reward the stage does not have."""
        known = [r.name for r in rewards]
        unknown = sorted(set(self.reward_weights) - set(known))
        if unknown:
            raise ConfigError(
                f"grpo.reward_weights: unknown rewards {unknown}; this stage has {known}"
            )

    def weight(self, reward: RewardFunction) -> float:
        return self.reward_weights.get(reward.name, reward.weight)


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability in `model` to 0 and return how many were > 0.

    RL samples with the model in eval mode (no dropout) and must score the same policy: with
    LoRA dropout left on in the loss and reference forwards, their log-probs are of other,
    randomly thinned policies, and the KL to the reference is dropout noise (0.2 per token
    on the toy reasoner) rather than drift (trl's `disable_dropout`)."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p = 0.0
            changed += 1
    return changed


def segment_advantages(
    rewards: Mapping[str, torch.Tensor],
    functions: Sequence[RewardFunction],
    config: GRPOConfig,
    *,
    by_segment: bool,
) -> dict[str, torch.Tensor]:
    """Advantages (G,) of one group: {"all": ...} or, `by_segment`, one entry per segment
    ("all", "think", "answer"), where "think" and "answer" include the rewards judging
    "all" (the module docstring). `rewards[name]` is the group's (G,) rewards."""
    segments = ("all", "think", "answer") if by_segment else ("all",)
    size = len(next(iter(rewards.values())))
    out = {s: torch.zeros(size) for s in segments}
    for fn in functions:
        weight = config.weight(fn)
        if weight == 0:
            continue
        scaled = weight * group_advantages(
            rewards[fn.name].float().unsqueeze(0), scale=config.scale_rewards, eps=config.eps
        ).squeeze(0)
        judged = ("all", "think", "answer") if fn.segment == "all" or not by_segment else ()
        for segment in judged or (fn.segment,):
            if segment in out:
                out[segment] += scaled
    return out


def reward_statistics(
    rewards: Sequence[Mapping[str, torch.Tensor]],
    functions: Sequence[RewardFunction],
    config: GRPOConfig,
    advantages: Sequence[torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Per-batch scalars to log: each reward's mean and mean within-group std, the weighted
    total, the mean |advantage| and the fraction of groups whose total has no spread (they
    teach nothing)."""
    stats: dict[str, torch.Tensor] = {}
    for fn in functions:
        values = torch.stack([r[fn.name] for r in rewards])  # (prompts, G)
        stats[f"reward/{fn.name}"] = values.mean()
        stats[f"reward/{fn.name}_std"] = values.std(dim=1).mean()
    total = torch.stack([sum(config.weight(fn) * r[fn.name] for fn in functions) for r in rewards])
    stats["reward/total"] = total.mean()
    stats["advantage/abs_mean"] = torch.stack([a.abs().mean() for a in advantages]).mean()
    stats["advantage/zero_std_groups"] = (total.std(dim=1) == 0).float().mean()
    return stats


def prompt_items(
    samples: Sequence[VNEPSample],
    settings: VANSSettings,
    vlm_fps: float,
    *,
    cache: bool,
) -> Sequence[dict[str, Any]]:
    """One item per sample with everything a rollout needs: the reasoner's view of the input
    (at `vlm_fps`), the renderer's view (the checkpoint's reference frames and size), the
    question, the ground-truth caption and the ground-truth next event at the rendered
    size and frame count."""
    size = (settings.height, settings.width)
    views = VideoViews(
        vlm_fps=vlm_fps,
        vdm_num_frames=settings.reference_video_frames,
        vdm_size=size,
        target_num_frames=settings.num_frames,
        target_size=size,
    )
    dataset = VNEPDataset(samples, views)

    def build(index: int) -> dict[str, Any]:
        item = dataset[index]
        return {
            "id": item["id"],
            "question": item["question"],
            "answer": item["answer"],
            "vlm_frames": item["vlm_frames"],
            "vlm_fps": item["vlm_fps"],
            "reference_frames": item["vdm_frames"],
            "target_frames": item["target_frames"],
        }

    return LazyItems(len(samples), build, cache=cache)


def collate_prompts(items: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """A batch of prompts: the items as a list (videos of different lengths stay apart)
    with each prompt's seed, which drives all of its rollouts."""
    if len(items) != len(seeds):
        raise ValueError(f"{len(items)} items for {len(seeds)} seeds")
    return {"prompts": list(items), "seeds": torch.tensor([int(s) for s in seeds])}

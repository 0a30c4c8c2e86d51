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

The knobs are `vans.rl.config`'s, the advantages `vans.rl.advantages`', the rollout records
`vans.rl.rollout`'s; this module holds the data and the logged statistics both stages share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vans.data.dataset import VideoViews, VNEPDataset
from vans.data.schema import VNEPSample
from vans.models.checkpoint import VANSSettings
from vans.rewards.vans import RewardFunction
from vans.rl.config import GRPOConfig
from vans.rl.rollout import Prompt
from vans.training.stage_io import LazyItems


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
) -> Sequence[Prompt]:
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

    def build(index: int) -> Prompt:
        item = dataset[index]
        return Prompt(
            id=item["id"],
            question=item["question"],
            answer=item["answer"],
            vlm_frames=item["vlm_frames"],
            vlm_fps=float(item["vlm_fps"]),
            reference_frames=item["vdm_frames"],
            target_frames=item["target_frames"],
        )

    return LazyItems(len(samples), build, cache=cache)


def collate_prompts(items: Sequence[Prompt], seeds: Sequence[int]) -> dict[str, Any]:
    """A batch of prompts: the items as a list (videos of different lengths stay apart)
    with each prompt's seed, which drives all of its rollouts."""
    if len(items) != len(seeds):
        raise ValueError(f"{len(items)} items for {len(seeds)} seeds")
    return {"prompts": list(items), "seeds": torch.tensor([int(s) for s in seeds])}

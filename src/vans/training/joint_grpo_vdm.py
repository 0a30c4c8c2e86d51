"""Joint-GRPO Stage 2: Flow-GRPO on the renderer's DiT, the reasoner frozen as the anchor
(docs/paper_facts.md#joint-grpo-stage-2; `vans train joint-grpo --stage 2`).

Per prompt of a batch (a training sample), everything random drawn from the prompt's seed:

1. Anchor. The frozen reasoner writes `anchor_tries` answers to the question in one batched
   call; the first whose caption has ROUGE-L >= `anchor_min_rouge` (paper: 0.6) against the
   ground-truth caption is the anchor ("discarded and regenerated"). If none passes, the
   prompt is skipped: it adds 0 to the loss, like a group whose rewards are all equal.
2. Rollouts. G videos of the anchor caption with Flow-GRPO's SDE sampler
   (`rl.flow_grpo.sample_trajectory`): reference latents of the input video and CFG with the
   checkpoint's negative prompt, exactly as at inference, every step's log-prob recorded.
3. Rewards. r_v2 = CLIP-V of each video against the ground-truth next event, r_c2 = CLIP-T
   of each video against the anchor caption; each is z-scored within the group, weighted
   and summed (`rl.advantages.segment_advantages`): one advantage per video.
4. Loss. For the trained steps j (`train_step_indices`), re-scored under the loop's model
   with gradients: ratio = exp(log p(x_j+1 | x_j) - recorded log p), PPO-clip with the
   advantages, plus beta * KL(step || reference step) (`sde_kl`), the reference being the
   DiT the task started from (a snapshot taken before a resume loads weights). Averaged
   over steps and videos; summed over the scored prompts and divided by the batch's prompt
   count, so every process's equal shard weighs the same.

Steps 1-3 make a `Stage2Group` (`rl.rollout`), step 4 reads it. With `grpo.num_iterations`
1 (the paper's) the loop takes one optimizer step per batch of fresh rollouts, so every
update is the first on-policy one: the ratio is exactly 1, the clip never binds and the
gradient is A * grad log p. With mu > 1 each batch of rollouts serves mu updates and the
later ones are clipped. `ratio/min` and `ratio/max` are logged to catch a mismatch between
sampling and re-scoring (docs/paper_facts.md#pitfalls-seen-in-other-implementations).
`video/frame_diff`, the mean absolute change between consecutive frames, falls towards 0
when the renderer learns static videos: the reward hacking the paper sees without r_c2
(`grpo.reward_weights: {r_c2: 0}`).

Memory: the loop calls `backward`, which backpropagates each trained step of each prompt
as soon as it is scored (as Flow-GRPO does), so the peak holds one step's graph whatever
the number of trained steps; `gradient_checkpointing` shrinks that one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.errors import ConfigError
from vans.evaluation.embedders import load_embedder
from vans.models.checkpoint import VANSSettings, save_checkpoint
from vans.models.flow_matching import sde_kl
from vans.models.vdm import Renderer
from vans.models.vlm import LORA_DIR, Reasoner, SamplingConfig
from vans.rewards.vans import RewardInputs, stage2_rewards
from vans.rl.advantages import segment_advantages
from vans.rl.anchor import Anchor, write_anchor
from vans.rl.config import FlowGRPOConfig, GRPOConfig
from vans.rl.flow_grpo import (
    reference_step_log_prob,
    sample_trajectory,
    step_log_prob,
    train_step_indices,
    use_transformer,
)
from vans.rl.grpo import clipped_surrogate
from vans.rl.reference import ReferenceWeights
from vans.rl.rollout import FrozenParts, Prompt, RolloutBuffer, Stage2Group
from vans.seeding import sample_seed, seeded_generator
from vans.training.config import TrainConfig
from vans.training.joint_grpo import collate_prompts, prompt_items, reward_statistics
from vans.training.stage_io import CopiedPart, load_start

# Purposes of the seeds derived from a prompt's seed (`sample_seed(seed, purpose)`).
_ANCHOR, _NOISE, _SDE, _STEPS = range(4)
# Logged per scored group; NaN when a batch has none (every process logs the same keys).
_GROUP_KEYS = ("anchor/rouge", "video/frame_diff")
_CLIP_KEYS = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")
"""The fractions `clipped_surrogate` reports."""


@dataclass
class JointGRPOVDMConfig:
    """Joint-GRPO Stage 2 (`vans train joint-grpo --stage 2`): Flow-GRPO on the renderer's
    DiT, anchored by the frozen reasoner. Sizes, reference conditioning, timestep shift and
    negative prompt are the starting checkpoint's (vans.yaml), as at inference."""

    checkpoint: str
    """VANS checkpoint to start from: the SFT model (vans.yaml, vlm/, vdm/)."""
    train_manifest: str
    """RL samples (JSONL manifest; paper: about 1K curated samples)."""
    embedder: str
    """Directory of the reward embedder (`load_embedder`): CLIP ViT-B/32 (paper) or a
    toy-world embedder from `vans train embedder`."""
    eval_manifest: str | None = None
    """Held-out samples whose rewards are logged as eval_* (`evaluate`); None: none."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Group size, KL weight, clip range, reward normalisation and weights."""
    flow: FlowGRPOConfig = field(default_factory=FlowGRPOConfig)
    """SDE sampling of the rollouts and which steps train."""
    anchor_min_rouge: float = 0.6
    """An anchor caption needs ROUGE-L >= this against the ground truth (paper: 0.6)."""
    anchor_tries: int = 4
    """Captions the reasoner writes per prompt (one batched call) to find an anchor; the
    first that passes is used. Not stated in the paper."""
    anchor_sampling: SamplingConfig | None = None
    """How the reasoner samples anchor captions; None: the checkpoint's `sampling`."""
    gradient_checkpointing: bool = False
    """Recompute DiT block activations in the backward pass (less memory, slower)."""
    cache_items: bool = False
    """Keep every decoded sample (input views, target clip) in memory after its first use:
    for small sets such as the toy world's or the paper's 1K RL samples at low resolution."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The generic training settings (steps, batch size = prompts per step, lr, ...)."""

    def __post_init__(self) -> None:
        problems = []
        if self.anchor_tries < 1:
            problems.append(f"anchor_tries must be >= 1, got {self.anchor_tries}")
        if not 0 <= self.anchor_min_rouge <= 1:  # above 1 no anchor passes: nothing trains
            problems.append(
                f"anchor_min_rouge is a ROUGE-L, in [0, 1]; got {self.anchor_min_rouge}"
            )
        if problems:
            raise ConfigError("invalid joint-grpo stage 2 config: " + "; ".join(problems))


def frame_diff(videos: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between consecutive frames of uint8 (B, T, H, W, 3) videos,
    in [0, 1] pixel units (0 for a static video)."""
    if videos.shape[1] < 2:
        return torch.zeros(())
    pixels = videos.float() / 255
    return (pixels[:, 1:] - pixels[:, :-1]).abs().mean()


class JointGRPOVDMTask:
    """The `TrainTask` of Joint-GRPO Stage 2; see the module docstring."""

    def __init__(
        self,
        config: JointGRPOVDMConfig,
        renderer: Renderer,
        reasoner: Reasoner,
        settings: VANSSettings,
        start: Path,
        train_samples: Sequence[VNEPSample],
        eval_samples: Sequence[VNEPSample] | None,
    ) -> None:
        self.config = config
        self.renderer = renderer
        self.reasoner = reasoner
        self.settings = settings
        self.start = start
        self.sampling = config.anchor_sampling or settings.sampling
        self.num_iterations = config.grpo.num_iterations
        # The checkpoint's scheduler is saved as it came; rollouts use the settings' shift.
        self._scheduler = renderer.scheduler
        renderer.set_shift(settings.flow_shift)
        reasoner.model.requires_grad_(False).eval()
        self.model = renderer.trainable_transformer(config.gradient_checkpointing)
        self.reference = ReferenceWeights(self.model) if config.grpo.beta > 0 else None
        self.embedder = load_embedder(config.embedder)
        self.rewards = stage2_rewards(self.embedder)
        config.grpo.check_rewards(self.rewards)
        self.frozen = FrozenParts(
            (renderer.vae, renderer.text_encoder, reasoner.model), self.embedder
        )
        self._buffer: RolloutBuffer[tuple[list[Anchor], list[Stage2Group]]] = RolloutBuffer(
            self.num_iterations
        )
        self._train = prompt_items(
            train_samples, settings, settings.vlm_fps, cache=config.cache_items
        )
        self._eval = (
            None
            if eval_samples is None
            else prompt_items(eval_samples, settings, settings.vlm_fps, cache=config.cache_items)
        )

    def train_dataset(self) -> Sequence[Prompt]:
        return self._train

    def eval_dataset(self) -> Sequence[Prompt] | None:
        return self._eval

    def collate(self, items: Sequence[Prompt], seeds: Sequence[int]) -> dict[str, Any]:
        return collate_prompts(items, seeds)

    # ------------------------------------------------------------------ rollouts

    def write_anchor(self, prompt: Prompt, seed: int) -> Anchor:
        """The anchor filter (`rl.anchor.write_anchor`), seeded from the prompt's seed."""
        return write_anchor(
            self.reasoner,
            prompt.vlm_frames,
            prompt.question,
            prompt.answer,
            tries=self.config.anchor_tries,
            min_rouge=self.config.anchor_min_rouge,
            sampling=self.sampling,
            seed=sample_seed(seed, _ANCHOR),
            fps=prompt.vlm_fps,
        )

    @torch.no_grad()
    def rollout(
        self,
        model: torch.nn.Module,
        prompt: Prompt,
        anchor: Anchor,
        seed: int,
        *,
        update: bool = False,
    ) -> Stage2Group:
        """G SDE trajectories of the anchor caption under `model`, decoded and scored; with
        `update`, also the steps to train and their KL reference means."""
        assert anchor.caption is not None
        r, flow, size = self.renderer, self.config.flow, self.config.grpo.group_size
        s = replace(self.settings, guidance_scale=flow.guidance_scale)
        conditioning = r.encode_conditioning([anchor.caption], s, prompt.reference_frames)
        conditioning = replace(
            conditioning, prompt_embeds=conditioning.prompt_embeds.expand(size, -1, -1)
        )
        noise = r.initial_noise(
            size,
            s.num_frames,
            s.height,
            s.width,
            sample_seed(seed, _NOISE),
            shared=flow.shared_noise,
        )
        with use_transformer(r, model):
            trajectory = sample_trajectory(
                r, noise, conditioning, flow, seeded_generator(seed, _SDE), decode=True
            )
        assert trajectory.videos is not None
        videos = trajectory.videos.cpu()
        inputs = RewardInputs(
            truth_caption=prompt.answer,
            videos=videos,
            captions=[anchor.caption] * size,
            truth_video=prompt.target_frames.cpu(),
        )
        rewards = {fn.name: fn(inputs) for fn in self.rewards}
        advantages = segment_advantages(rewards, self.rewards, self.config.grpo, by_segment=False)
        group = Stage2Group(
            anchor, seed, conditioning, trajectory, videos, rewards, advantages["all"], []
        )
        if update:
            steps = train_step_indices(
                trajectory, flow.timestep_fraction, seeded_generator(seed, _STEPS)
            )
            group.train_steps = steps
            if self.reference is not None:
                # Taken here, before any gradient forward: the reference swap writes the
                # weights in place, which must not happen while a graph that saved them
                # is alive.
                with use_transformer(r, model):
                    group.reference_means = [
                        reference_step_log_prob(
                            r, trajectory, j, conditioning, flow, self.reference.active()
                        ).mean
                        for j in steps
                    ]
        return group

    def _groups(
        self, model: torch.nn.Module, batch: dict[str, Any], update: bool
    ) -> tuple[list[Anchor], list[Stage2Group]]:
        self.frozen.place(next(model.parameters()).device)
        anchors, groups = [], []
        for prompt, seed in zip(batch["prompts"], batch["seeds"].tolist(), strict=True):
            anchor = self.write_anchor(prompt, int(seed))
            anchors.append(anchor)
            if anchor.caption is not None:
                groups.append(self.rollout(model, prompt, anchor, int(seed), update=update))
        return anchors, groups

    # ------------------------------------------------------------------ loss

    def _step_losses(
        self, model: torch.nn.Module, groups: Sequence[Stage2Group], num_prompts: int
    ) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """Per trained step of every group: its share of the batch loss (the step's
        PPO-clip + beta * KL, averaged over steps and videos, divided by the batch's prompt
        count) and what to log of it. Each piece's graph is its own, so it can be
        backpropagated as soon as it is yielded."""
        grpo, flow = self.config.grpo, self.config.flow
        for group in groups:
            for k, j in enumerate(group.train_steps):
                with use_transformer(self.renderer, model):
                    out = step_log_prob(
                        self.renderer, group.trajectory, j, group.conditioning, flow
                    )
                logp = out.log_prob.unsqueeze(1)
                old = group.trajectory.steps[j].log_prob.to(logp.device).unsqueeze(1)
                surrogate, clip = clipped_surrogate(
                    logp,
                    old,
                    group.advantages.to(logp.device),
                    torch.ones_like(logp),
                    grpo.clip_range,
                    grpo.eps_high,
                )
                step_loss = surrogate.mean()
                logged: dict[str, Any] = {
                    "ratio": torch.exp(logp - old).detach().flatten(),
                    "clip": clip,
                }
                if group.reference_means is not None:
                    kl = sde_kl(out.mean, group.reference_means[k], out.std)
                    logged["kl"] = kl.detach()
                    step_loss = step_loss + grpo.beta * kl.mean()
                yield step_loss / (len(group.train_steps) * num_prompts), logged

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The clipped policy loss (+ beta * KL) of the batch's prompts (module docstring),
        with the rollouts' rewards, anchors, ratios, clip fractions and KL to log, as one
        graph; the loop calls `backward` instead, which frees each step's graph at once.
        Scalars that need a scored prompt are NaN when every prompt was skipped."""
        return self.backward(model, batch, scale=None)

    def backward(
        self, model: torch.nn.Module, batch: dict[str, Any], scale: float | None
    ) -> dict[str, torch.Tensor]:
        """`loss` with `scale` * the loss backpropagated step by step (gradients accumulate
        in the parameters; peak memory is one step's graph, not the batch's), the returned
        "loss" detached. `scale` None backpropagates nothing and returns the loss with its
        whole graph (`loss`)."""
        anchors, groups = self._buffer.get(
            batch["seeds"], lambda: self._groups(model, batch, update=True)
        )
        total = torch.zeros((), requires_grad=scale is None)
        logged = []
        for piece, row in self._step_losses(model, groups, len(anchors)):
            if scale is None:
                total = total + piece
            else:
                (piece * scale).backward()
                total = total + piece.detach()
            logged.append(row)
        stats = self._group_stats(anchors, groups)
        stats["loss"] = total
        stats.update(_step_stats(logged, self.config.grpo.beta > 0))
        return stats

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The held-out rollouts' rewards, anchors and frame difference, without any update.
        "loss" is minus the mean weighted total reward (`reward/total`), so lower is better
        as for a loss; NaN when every prompt was skipped."""
        anchors, groups = self._groups(model, batch, update=False)
        stats = self._group_stats(anchors, groups)
        stats["loss"] = -stats["reward/total"]
        return stats

    def check_trained(self, rows: Sequence[dict[str, float]]) -> None:
        """Refuse to call the run trained when every logged step skipped every prompt:
        each gradient was zero, so `final/` would be the starting checkpoint."""
        if rows and all(row.get("anchor/skipped") == 1.0 for row in rows):
            raise ConfigError(
                f"every prompt was skipped: no anchor caption in {self.config.anchor_tries} "
                f"tries reached anchor_min_rouge={self.config.anchor_min_rouge}, so nothing "
                "was trained; lower anchor_min_rouge (or raise anchor_tries) and start afresh"
            )

    def _group_stats(
        self, anchors: list[Anchor], groups: list[Stage2Group]
    ) -> dict[str, torch.Tensor]:
        stats = {
            "anchor/skipped": torch.tensor(sum(a.caption is None for a in anchors) / len(anchors)),
            "anchor/tries_used": torch.tensor(sum(a.tries for a in anchors) / len(anchors)),
        }
        if not groups:
            # The same keys as a scored batch, so every process logs the same scalars.
            nan = torch.full((self.config.grpo.group_size,), math.nan)
            keys = reward_statistics(
                [{fn.name: nan for fn in self.rewards}], self.rewards, self.config.grpo, [nan]
            )
            return {**stats, **{k: torch.tensor(math.nan) for k in [*keys, *_GROUP_KEYS]}}
        stats.update(
            reward_statistics(
                [g.rewards for g in groups],
                self.rewards,
                self.config.grpo,
                [g.advantages for g in groups],
            )
        )
        stats["anchor/rouge"] = torch.tensor(sum(g.anchor.rouge for g in groups) / len(groups))
        stats["video/frame_diff"] = torch.stack([frame_diff(g.videos) for g in groups]).mean()
        return stats

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """A full VANS checkpoint: the trained DiT with the unchanged VAE, text encoder,
        tokenizer and scheduler, the starting checkpoint's vlm/ copied and its settings."""
        if model is not self.renderer.transformer:
            raise ValueError("save_pretrained expects the task's (unwrapped) model")
        r = self.renderer
        saved = Renderer(r.transformer, r.vae, r.text_encoder, r.tokenizer, self._scheduler)
        save_checkpoint(out, CopiedPart(self.start / "vlm"), saved, self.settings)


def _step_stats(logged: list[dict[str, Any]], with_kl: bool) -> dict[str, torch.Tensor]:
    """Ratio range and mean, clip fractions and KL over every trained step of the batch
    (NaN without any)."""
    if not logged:
        keys = ["ratio/mean", "ratio/min", "ratio/max", *_CLIP_KEYS] + ["kl"] * with_kl
        return {k: torch.tensor(math.nan) for k in keys}
    ratio = torch.cat([row["ratio"] for row in logged])
    stats = {"ratio/mean": ratio.mean(), "ratio/min": ratio.min(), "ratio/max": ratio.max()}
    clips = [row["clip"] for row in logged]
    stats.update({k: torch.tensor(sum(c[k] for c in clips) / len(clips)) for k in _CLIP_KEYS})
    if with_kl:
        stats["kl"] = torch.cat([row["kl"] for row in logged]).mean()
    return stats


def build_joint_grpo_vdm_task(config: JointGRPOVDMConfig) -> JointGRPOVDMTask:
    """Load the renderer (trainable DiT) and the reasoner (frozen, with its LoRA adapter if
    the checkpoint has one) of `config.checkpoint`, the reward embedder and the manifests."""
    start, settings = load_start(config.checkpoint)
    renderer = Renderer.from_pretrained(start / "vdm")
    lora = start / "vlm" / LORA_DIR
    reasoner = Reasoner.from_pretrained(
        start / "vlm", lora=lora if lora.exists() else None, fps=settings.vlm_fps
    )
    train_samples = load_manifest(config.train_manifest)
    eval_samples = load_manifest(config.eval_manifest) if config.eval_manifest else None
    return JointGRPOVDMTask(
        config, renderer, reasoner, settings, start, train_samples, eval_samples
    )

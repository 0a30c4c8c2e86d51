"""Joint-GRPO Stage 1: the reasoner learns captions that are right and renderable
(docs/paper_facts.md#joint-grpo-stage-1).

Per prompt (input video, question, ground truth) of a batch, from the prompt's seed:

1. sample: the reasoner (LoRA policy) writes G answers, one batched `generate` with the video
   encoded once;
2. reward videos: the frozen renderer draws the caption of every answer from the input
   video's reference frames, de-duplicated and batched, with fewer denoising steps than
   inference (`rewards.reward_videos`);
3. score: r_f (template), r_t1 (ROUGE-L vs the ground-truth caption), r_v1 (CLIP-V of the
   reward video vs the ground-truth video); advantages by `rl.advantages.segment_advantages`;
4. update: the per-token log-probabilities of exactly the sampled tokens, recomputed with
   the video fed through the vision tower in this forward (trl's trainer drops the video
   here and trains the policy blind, docs/paper_facts.md#pitfalls-seen-in-other-implementations),
   PPO-clip + beta * k3 KL to the SFT model (`rl.grpo.grpo_loss`).

Steps 1-3 make a `Stage1Group` (`rl.rollout`), step 4 reads it. With
`grpo.num_iterations` 1 (the paper's) each group serves one update, taken by the policy
that sampled it, so the ratio is exactly 1 and the clip only matters for its gradient's
definition. With mu > 1 a group serves mu updates (the loop hands the task the same batch
mu times); the sampling policy's log-probs are kept with the group, the ratio of the later
updates moves away from 1 and the clip range binds.

Timings of the four phases are logged (`time/*`; 0 for the phases a reused group skips),
with reward-video de-duplication, the think length and every reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.errors import ConfigError
from vans.evaluation.embedders import VideoTextEmbedder, load_embedder
from vans.evaluation.text_metrics import DEFAULT_ROUGE_VARIANT
from vans.models.checkpoint import VANSSettings, save_checkpoint
from vans.models.prompting import parse_output
from vans.models.vdm import Renderer
from vans.models.vlm import LORA_DIR, Completion, Reasoner, SamplingConfig
from vans.rewards.reward_videos import render_reward_videos
from vans.rewards.vans import RewardInputs, stage1_rewards
from vans.rl.advantages import segment_advantages, segment_token_advantages, token_segment_masks
from vans.rl.config import GRPOConfig, RewardVideoConfig
from vans.rl.grpo import LossType
from vans.rl.policy import groups_loss, record_logprobs
from vans.rl.reference import ReferenceWeights, disable_dropout
from vans.rl.rollout import FrozenParts, Prompt, RolloutBuffer, Stage1Group
from vans.timing import Timings
from vans.training.config import TrainConfig
from vans.training.joint_grpo import collate_prompts, prompt_items, reward_statistics
from vans.training.stage_io import CopiedPart, load_start

PHASES = ("sampling", "reward_videos", "scoring", "update")
"""The timed phases of a step (`time/<phase>`)."""


@dataclass
class JointGRPOVLMConfig:
    """Joint-GRPO Stage 1 (`vans train joint-grpo --stage 1`)."""

    checkpoint: str
    """The SFT VANS checkpoint (its vlm/ must hold the SFT LoRA adapter, which trains on)."""
    train_manifest: str
    """Training prompts (JSONL manifest; the paper uses ~1K curated samples)."""
    embedder: str
    """Video-text embedder directory for r_v1 (paper: CLIP ViT-B/32; toy: `vans train
    embedder`'s)."""
    eval_manifest: str | None = None
    """Held-out prompts whose rewards are logged as eval_* every `train.eval_every` steps."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Group size, KL, clip and reward weights."""
    loss_type: LossType = "grpo"
    """How token losses are averaged (`rl.grpo.aggregate_loss`): "grpo" per sequence then
    over sequences (the paper's GRPO), "bnpo"/"dapo" over tokens, "dr_grpo"."""
    segment_advantages: bool = False
    """Give the [Think] tokens only the advantage of the rewards judging them (r_f) and the
    [Ans] tokens that of r_f + r_t1 + r_v1 (segment-aware: VideoP2R's per-process advantages,
    docs/paper_facts.md#videop2r-process-aware-grpo, applied to VANS).
    Off: every reward judges every token, as in the paper."""
    train_lm_head: bool = False
    """Also tune the output head and final norm in full (`Reasoner.unfreeze_output_head`), as
    the toy SFT does. Off for the paper (LoRA only); for tiny random models, whose frozen
    random head leaves LoRA little room to move the captions."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (and of the log-probabilities)."""
    max_new_tokens: int | None = None
    """Longest answer; None: the checkpoint's sampling setting."""
    reward_videos: RewardVideoConfig = field(default_factory=RewardVideoConfig)
    """Steps and batching of the reward videos."""
    rouge_variant: Literal["coco", "rouge-score"] = DEFAULT_ROUGE_VARIANT
    """ROUGE-L of r_t1; the evaluation's default, so the reward is the reported metric."""
    cache_items: bool = False
    """Keep decoded prompts (videos) in memory; for small data sets like the toy world."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The generic training settings (steps, batch size = prompts per step, lr, ...)."""

    def __post_init__(self) -> None:
        problems = []
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if problems:
            raise ConfigError("invalid joint-grpo stage 1 config: " + "; ".join(problems))


class JointGRPOVLMTask:
    """The `TrainTask` of Stage 1; see the module docstring."""

    def __init__(
        self,
        config: JointGRPOVLMConfig,
        reasoner: Reasoner,
        renderer: Renderer,
        embedder: VideoTextEmbedder,
        settings: VANSSettings,
        start: Path,
        train_samples: Sequence[VNEPSample],
        eval_samples: Sequence[VNEPSample] | None,
    ) -> None:
        self.config = config
        self.reasoner = reasoner
        self.renderer = renderer
        self.embedder = embedder
        self.settings = settings
        self.start = start
        self.model: torch.nn.Module = reasoner.model
        self.num_iterations = config.grpo.num_iterations
        self.rewards = stage1_rewards(embedder, rouge_variant=config.rouge_variant)
        config.grpo.check_rewards(self.rewards)
        self.sampling = SamplingConfig(
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens or settings.sampling.max_new_tokens,
        )
        # Taken before the loop loads a resumed run's weights: the KL's reference is the
        # starting (SFT) policy.
        disable_dropout(self.model)
        self.reference = ReferenceWeights(self.model) if config.grpo.beta > 0 else None
        parts = (renderer.transformer, renderer.vae, renderer.text_encoder)
        for module in parts:
            module.requires_grad_(False).eval()
        self.frozen = FrozenParts(parts, embedder)
        self._buffer: RolloutBuffer[list[Stage1Group]] = RolloutBuffer(self.num_iterations)
        fps = reasoner.fps
        self._train = prompt_items(train_samples, settings, fps, cache=config.cache_items)
        self._eval = (
            None
            if eval_samples is None
            else prompt_items(eval_samples, settings, fps, cache=config.cache_items)
        )

    def train_dataset(self) -> Sequence[Prompt]:
        return self._train

    def eval_dataset(self) -> Sequence[Prompt] | None:
        return self._eval

    def collate(self, items: Sequence[Prompt], seeds: Sequence[int]) -> dict[str, Any]:
        return collate_prompts(items, seeds)

    # ------------------------------------------------------------------ rollout

    def rollout(
        self, prompt: Prompt, seed: int, timings: Timings, *, update: bool = True
    ) -> Stage1Group:
        """Sample G answers to one prompt, render their reward videos, score them and turn
        the rewards into advantages; with `update`, also the log-probs the loss compares
        against (the sampling policy's when num_iterations > 1, the reference's)."""
        c = self.config
        with timings.stage("sampling"):
            completions = self.reasoner.generate_completions(
                prompt.vlm_frames,
                [prompt.question],
                num_samples=c.grpo.group_size,
                sampling=self.sampling,
                seed=seed,
                fps=prompt.vlm_fps,
            )[0]
        parsed = [parse_output(x.text) for x in completions]
        with timings.stage("reward_videos"):
            videos = render_reward_videos(
                self.renderer,
                [p.caption for p in parsed],
                reference_frames=prompt.reference_frames,
                settings=self.settings,
                config=c.reward_videos,
                seed=seed,
            )
        with timings.stage("scoring"):
            inputs = RewardInputs(
                completions=[x.text for x in completions],
                parsed=parsed,
                truth_caption=prompt.answer,
                videos=videos.videos,
                truth_video=prompt.target_frames,
            )
            rewards = {fn.name: fn(inputs) for fn in self.rewards}
        length = max(len(x.token_ids) for x in completions)
        masks = [
            token_segment_masks(self.reasoner.tokenizer, x.token_ids.tolist(), length)
            for x in completions
        ]
        token_advantages, advantages = self.token_advantages(completions, rewards, masks)
        group = Stage1Group(
            prompt=prompt,
            completions=completions,
            parsed=parsed,
            videos=videos.videos,
            num_unique=videos.num_unique,
            rewards=rewards,
            advantages=advantages,
            token_advantages=token_advantages,
            think_tokens=[int(m["think"].sum()) for m in masks],
        )
        if update:
            with timings.stage("update"):
                record_logprobs(group, self._logprobs, self.num_iterations, self.reference)
        return group

    def token_advantages(
        self,
        completions: Sequence[Completion],
        rewards: dict[str, torch.Tensor],
        masks: Sequence[dict[str, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token advantages (G, L) and the (G,) advantage of the whole answer; `masks`
        are the completions' `token_segment_masks` (L,)."""
        c = self.config
        length = len(masks[0]["think"])
        adv = segment_advantages(rewards, self.rewards, c.grpo, by_segment=c.segment_advantages)
        if not c.segment_advantages:
            return adv["all"].unsqueeze(1).expand(-1, length), adv["all"]
        completion_mask = torch.stack(
            [torch.arange(length) < len(x.token_ids) for x in completions]
        )
        per_token = segment_token_advantages(
            {s: adv[s] for s in ("think", "answer")},
            {s: torch.stack([m[s] for m in masks]) for s in ("think", "answer")},
            completion_mask,
            fallback=adv["all"],
        )
        return per_token, adv["all"]

    def _groups(self, batch: dict[str, Any], timings: Timings, update: bool) -> list[Stage1Group]:
        self.frozen.place(self.reasoner.device)
        pairs = zip(batch["prompts"], batch["seeds"].tolist(), strict=True)
        return [self.rollout(prompt, int(seed), timings, update=update) for prompt, seed in pairs]

    def _logprobs(self, group: Stage1Group) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (G, L) and mask of the sampled tokens, video included."""
        return self.reasoner.completion_logprobs(
            group.prompt.vlm_frames,
            group.prompt.question,
            [x.token_ids for x in group.completions],
            temperature=self.config.temperature,
            fps=group.prompt.vlm_fps,
        )

    # ------------------------------------------------------------------ loss

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The GRPO loss of the batch's groups (made fresh, or the buffered ones on the
        later of `num_iterations` updates) with the rollouts' statistics."""
        if model is not self.reasoner.model:
            raise ValueError("Stage 1 computes log-probabilities through the task's reasoner")
        c = self.config
        timings = Timings()
        groups = self._buffer.get(batch["seeds"], lambda: self._groups(batch, timings, True))
        out = self._statistics(groups)
        with timings.stage("update"):
            out.update(
                groups_loss(
                    groups, self._logprobs, c.grpo, c.loss_type, self.sampling.max_new_tokens
                )
            )
        out.update({f"time/{name}": torch.tensor(0.0) for name in PHASES})
        out.update({f"time/{name}": torch.tensor(s) for name, s in timings.items()})
        return out

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Held-out rewards of G sampled answers per prompt (no update). "loss" is minus the
        weighted reward total, so a falling eval loss is a rising reward."""
        timings = Timings()
        out = self._statistics(self._groups(batch, timings, False))
        out["loss"] = -out["reward/total"]
        out.update({f"time/{name}": torch.tensor(s) for name, s in timings.items()})
        return out

    def _statistics(self, groups: Sequence[Stage1Group]) -> dict[str, torch.Tensor]:
        out = reward_statistics(
            [g.rewards for g in groups],
            self.rewards,
            self.config.grpo,
            [g.advantages for g in groups],
        )
        lengths = [len(x.token_ids) for g in groups for x in g.completions]
        think = [n for g in groups for n in g.think_tokens]
        out["length/think_tokens"] = torch.tensor(think, dtype=torch.float32).mean()
        out["length/completion_tokens"] = torch.tensor(lengths, dtype=torch.float32).mean()
        unique = [float(g.num_unique) for g in groups]
        out["reward_videos/unique"] = torch.tensor(unique).mean()
        return out

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """A full VANS checkpoint: the reasoner with its tuned adapter, the starting
        checkpoint's vdm/ (frozen in this stage) copied, the settings unchanged."""
        if model is not self.reasoner.model:
            raise ValueError("save_pretrained expects the task's (unwrapped) model")
        save_checkpoint(out, self.reasoner, CopiedPart(self.start / "vdm"), self.settings)


def build_joint_grpo_vlm_task(config: JointGRPOVLMConfig) -> JointGRPOVLMTask:
    """Load the SFT checkpoint (the reasoner with its adapter trainable, and its output head
    with `train_lm_head`, everything else frozen; the renderer frozen), the embedder and the
    manifests."""
    start, settings = load_start(config.checkpoint)
    lora = start / "vlm" / LORA_DIR
    if not lora.exists():
        raise ConfigError(
            f"{config.checkpoint}: no LoRA adapter in vlm/{LORA_DIR}; Stage 1 tunes the SFT "
            "adapter (run `vans train sft-vlm` first)"
        )
    reasoner = Reasoner.from_pretrained(
        start / "vlm", lora=lora, trainable_lora=True, fps=settings.vlm_fps
    )
    if config.train_lm_head:
        reasoner.unfreeze_output_head()
    renderer = Renderer.from_pretrained(start / "vdm")
    renderer.set_shift(settings.flow_shift)
    embedder = load_embedder(config.embedder)
    train_samples = load_manifest(config.train_manifest)
    eval_samples = load_manifest(config.eval_manifest) if config.eval_manifest else None
    return JointGRPOVLMTask(
        config, reasoner, renderer, embedder, settings, start, train_samples, eval_samples
    )

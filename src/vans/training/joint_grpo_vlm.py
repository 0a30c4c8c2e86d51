"""Joint-GRPO Stage 1: the reasoner learns captions that are right and renderable
(docs/paper_facts.md#joint-grpo-stage-1).

Per prompt (input video, question, ground truth) of a batch, from the prompt's seed:

1. sample: the reasoner (LoRA policy) writes G answers, one batched `generate` with the video
   encoded once;
2. reward videos: the frozen renderer draws the caption of every answer from the input
   video's reference frames, de-duplicated and batched, with fewer denoising steps than
   inference (`rewards.reward_videos`);
3. score: r_f (template), r_t1 (ROUGE-L vs the ground-truth caption), r_v1 (CLIP-V of the
   reward video vs the ground-truth video); advantages by `joint_grpo.segment_advantages`;
4. update: the per-token log-probabilities of exactly the sampled tokens, recomputed with
   the video fed through the vision tower in this forward (trl's trainer drops the video
   here and trains the policy blind, docs/paper_facts.md#pitfalls-seen-in-other-implementations),
   PPO-clip + beta * k3 KL to the SFT model (`rl.grpo.grpo_loss`). One update per rollout:
   the sampling policy is the current one, so the ratio is exactly 1 and the clip only
   matters for its gradient's definition.

Timings of the four phases are logged (`time/*`), with reward-video de-duplication, the
think length and every reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.evaluation.embedders import VideoTextEmbedder, load_embedder
from vans.evaluation.text_metrics import DEFAULT_ROUGE_VARIANT
from vans.models.checkpoint import VANSSettings, save_checkpoint
from vans.models.prompting import segment_spans
from vans.models.vdm import Renderer
from vans.models.vlm import LORA_DIR, Completion, Reasoner, SamplingConfig
from vans.rewards.reward_videos import RewardVideoConfig, render_reward_videos
from vans.rewards.vans import RewardInputs, captions_of, stage1_rewards
from vans.rl.grpo import LossType, grpo_loss, segment_token_advantages
from vans.rl.reference import ReferenceWeights
from vans.timing import Timings
from vans.training.config import ConfigError, TrainConfig
from vans.training.joint_grpo import (
    GRPOConfig,
    collate_prompts,
    disable_dropout,
    prompt_items,
    reward_statistics,
    segment_advantages,
)
from vans.training.stage_io import CopiedPart, load_start


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


def token_segment_masks(
    tokenizer: Any, token_ids: Sequence[int], length: int
) -> dict[str, torch.Tensor]:
    """Bool masks (length,) of the completion tokens inside the [Think] and [Ans] blocks
    (`prompting.segment_spans` of the decoded text). A token belongs to the block its first
    character falls in; character offsets come from decoding growing prefixes, exact for any
    tokenizer (byte-level BPE tokens need not be whole characters)."""
    ends = [
        len(tokenizer.decode(token_ids[: i + 1], skip_special_tokens=False))
        for i in range(len(token_ids))
    ]
    text = tokenizer.decode(token_ids, skip_special_tokens=False)
    starts = [0, *ends[:-1]]
    spans = segment_spans(text)
    masks = {}
    for segment in ("think", "answer"):
        mask = torch.zeros(length, dtype=torch.bool)
        span = spans.get(segment)
        if span is not None:
            for i, start in enumerate(starts):
                mask[i] = span[0] <= start < span[1] and ends[i] > start
        masks[segment] = mask
    return masks


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
        for module in (renderer.transformer, renderer.vae, renderer.text_encoder):
            module.requires_grad_(False).eval()
        fps = reasoner.fps
        self._train = prompt_items(train_samples, settings, fps, cache=config.cache_items)
        self._eval = (
            None
            if eval_samples is None
            else prompt_items(eval_samples, settings, fps, cache=config.cache_items)
        )

    def train_dataset(self) -> Sequence[dict[str, Any]]:
        return self._train

    def eval_dataset(self) -> Sequence[dict[str, Any]] | None:
        return self._eval

    def collate(self, items: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
        return collate_prompts(items, seeds)

    # ------------------------------------------------------------------ rollout

    def rollout(
        self, prompt: dict[str, Any], seed: int, timings: Timings
    ) -> tuple[list[Completion], dict[str, torch.Tensor], int]:
        """Sample G answers to one prompt, render their reward videos and score them.
        Returns the completions, the rewards by name ((G,) each) and the number of distinct
        captions rendered."""
        g = self.config.grpo.group_size
        with timings.stage("sampling"):
            completions = self.reasoner.generate_completions(
                prompt["vlm_frames"],
                [prompt["question"]],
                num_samples=g,
                sampling=self.sampling,
                seed=seed,
                fps=prompt["vlm_fps"],
            )[0]
        texts = [c.text for c in completions]
        with timings.stage("reward_videos"):
            videos = render_reward_videos(
                self.renderer,
                captions_of(texts),
                reference_frames=prompt["reference_frames"],
                settings=self.settings,
                config=self.config.reward_videos,
                seed=seed,
            )
        with timings.stage("scoring"):
            inputs = RewardInputs(
                completions=texts,
                truth_caption=prompt["answer"],
                videos=videos.videos,
                truth_video=prompt["target_frames"],
            )
            rewards = {fn.name: fn(inputs) for fn in self.rewards}
        return completions, rewards, videos.num_unique

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

    # ------------------------------------------------------------------ loss

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self._step(model, batch, update=True)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Held-out rewards of G sampled answers per prompt (no update). "loss" is minus the
        weighted reward total, so a falling eval loss is a rising reward."""
        return self._step(model, batch, update=False)

    def _logprobs(
        self, prompt: dict[str, Any], completions: Sequence[Completion]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs (G, L) and mask of the sampled tokens, video included."""
        return self.reasoner.completion_logprobs(
            prompt["vlm_frames"],
            prompt["question"],
            [x.token_ids for x in completions],
            temperature=self.config.temperature,
            fps=prompt["vlm_fps"],
        )

    def _step(
        self, model: torch.nn.Module, batch: dict[str, Any], *, update: bool
    ) -> dict[str, torch.Tensor]:
        if model is not self.reasoner.model:
            raise ValueError("Stage 1 computes log-probabilities through the task's reasoner")
        c = self.config
        timings = Timings()
        groups = []  # per prompt: (prompt, completions, per-token advantages, ref log-probs)
        all_rewards, advantages, think_tokens, lengths, unique = [], [], [], [], []
        for prompt, seed in zip(batch["prompts"], batch["seeds"].tolist(), strict=True):
            completions, rewards, num_unique = self.rollout(prompt, seed, timings)
            all_rewards.append(rewards)
            unique.append(num_unique)
            length = max(len(x.token_ids) for x in completions)
            masks = [
                token_segment_masks(self.reasoner.tokenizer, x.token_ids.tolist(), length)
                for x in completions
            ]
            lengths += [len(x.token_ids) for x in completions]
            think_tokens += [int(m["think"].sum()) for m in masks]
            per_token, sequence_adv = self.token_advantages(completions, rewards, masks)
            advantages.append(sequence_adv)
            ref_logp = None
            if update and self.reference is not None:
                # Every reference forward comes before the policy forwards: swapping the
                # weights in would invalidate the graphs they build.
                with timings.stage("update"), torch.no_grad(), self.reference.active():
                    ref_logp = self._logprobs(prompt, completions)[0]
            groups.append((prompt, completions, per_token, ref_logp))
        out = reward_statistics(all_rewards, self.rewards, c.grpo, advantages)
        out["length/think_tokens"] = torch.tensor(think_tokens, dtype=torch.float32).mean()
        out["length/completion_tokens"] = torch.tensor(lengths, dtype=torch.float32).mean()
        out["reward_videos/unique"] = torch.tensor(unique, dtype=torch.float32).mean()
        if not update:
            out["loss"] = -out["reward/total"]
        else:
            losses, stats_rows = [], []
            with timings.stage("update"):
                for prompt, completions, per_token, ref_logp in groups:
                    logp, mask = self._logprobs(prompt, completions)
                    loss, stats = grpo_loss(
                        logp,
                        None,
                        ref_logp,
                        per_token.to(logp.device),
                        mask,
                        eps_low=c.grpo.clip_range,
                        eps_high=c.grpo.eps_high,
                        beta=c.grpo.beta,
                        loss_type=c.loss_type,
                        max_completion_length=self.sampling.max_new_tokens,
                    )
                    losses.append(loss)
                    stats_rows.append(stats)
            out["loss"] = torch.stack(losses).mean()
            for key in stats_rows[0]:
                out[key] = torch.tensor([row[key] for row in stats_rows]).mean()
        for name, seconds in timings.items():
            out[f"time/{name}"] = torch.tensor(seconds)
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

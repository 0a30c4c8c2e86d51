"""Supervised fine-tuning of the reasoner: LoRA on Qwen2.5-VL's language model
(docs/paper_facts.md#supervised-fine-tuning).

The model reads exactly what it reads at inference (`Reasoner.prepare`: the system prompt,
the input video at the checkpoint's fps, the question, in Qwen's chat format) and is taught
to write `[Think]reasoning[/Think][Ans]caption[/Ans]<|im_end|>` (`format_target`). The loss
is the token cross-entropy of those answer tokens only (prompt, video and padding are
labelled -100), averaged per sample, then over samples. The video goes through the vision
tower inside the loss forward (`pixel_values_videos`), so the policy never trains blind.

Only the LoRA adapters train (paper: r 8, alpha 32, dropout 0.05 on q/k/v/o/gate/up/down of
the language model, `Reasoner.add_lora`); the result is a full VANS checkpoint whose vlm/
carries the adapter and whose vdm/ is the starting checkpoint's, copied unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vans.data.dataset import VideoViews, VNEPDataset
from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.errors import ConfigError, VansError
from vans.models.checkpoint import (
    VANSSettings,
    save_checkpoint,
)
from vans.models.prompting import format_target
from vans.models.vlm import LORA_DIR, Reasoner
from vans.training.config import TrainConfig
from vans.training.stage_io import CopiedPart, LazyItems, load_start

IGNORE_INDEX = -100
"""Label of tokens that carry no loss (prompt, video, padding), as in transformers."""

MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "mm_token_type_ids",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)
"""The keys of `Reasoner.prepare` the model forward takes (a batch may carry more)."""


@dataclass
class SFTVLMConfig:
    """SFT of the reasoner (`vans train sft-vlm`)."""

    checkpoint: str
    """VANS checkpoint to start from (vans.yaml, vlm/, vdm/), e.g. from `vans init-tiny`.
    If its vlm/ already has a LoRA adapter, training continues that adapter."""
    train_manifest: str
    """Training samples (JSONL manifest); the target is `[Think]reasoning[/Think][Ans]answer
    [/Ans]` of each row (an empty Think block when the row has no reasoning)."""
    eval_manifest: str | None = None
    """Held-out samples for the periodic eval loss; None: no eval loss."""
    lora_r: int = 8
    """LoRA rank (paper: 8)."""
    lora_alpha: int = 32
    """LoRA scale numerator, the update is alpha / r * B A (paper: 32)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input (paper: 0.05)."""
    train_lm_head: bool = False
    """Also train the language model's output head and final norm in full (saved with the
    model weights; the adapter stays separate). With tied embeddings (Qwen2.5-VL-3B) the
    input embeddings train too. Off for the paper. On for tiny random models: through
    their frozen random head LoRA alone cannot make a confident prediction (toy eval loss
    5.5 instead of 1.0 after 150 steps)."""
    fps: float | None = None
    """Frame rate at which the model watches the input; None: the checkpoint's `vlm_fps`
    (VANS: 1). The saved checkpoint records the rate trained with."""
    max_frames: int | None = None
    """Cap on input frames (uniformly thinned, the time positions follow the lower rate);
    None: every frame at `fps`, as at inference."""
    frame_size: tuple[int, int] | None = None
    """(H, W) the input frames are resized and center-cropped to before the reasoner's own
    pixel bounds apply; None: native size, as at inference."""
    cache_videos: bool = False
    """Keep every decoded input video in memory after its first use (the toy world's are
    tiny); off for large data sets, whose videos are then decoded at every use."""
    max_target_tokens: int | None = 1024
    """Answers longer than this many tokens (the end token included) are cut; None: never.
    Not stated in the paper."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The generic training settings (steps, batch size, lr, ...)."""

    def __post_init__(self) -> None:
        problems = []
        if self.lora_r < 1:
            problems.append(f"lora_r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            problems.append(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.fps is not None and not self.fps > 0:
            problems.append(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            problems.append(f"max_frames must be >= 1, got {self.max_frames}")
        if self.frame_size is not None and min(self.frame_size) < 1:
            problems.append(f"frame_size must be positive (H, W), got {self.frame_size}")
        if self.max_target_tokens is not None and self.max_target_tokens < 1:
            problems.append(f"max_target_tokens must be >= 1, got {self.max_target_tokens}")
        if problems:
            raise ConfigError("invalid sft-vlm config: " + "; ".join(problems))


@dataclass
class Conversation:
    """One question about a sample's video and the text the model is taught to answer."""

    question: str
    target: str
    info: dict[str, Any] = field(default_factory=dict)
    """Anything a stage's evaluation needs beside it (kept in the item, never in the model
    input)."""


# --------------------------------------------------------------------------- the math


def completion_labels(input_ids: torch.Tensor, completion_lengths: Sequence[int]) -> torch.Tensor:
    """Labels for rows laid out `pad.. prompt | completion ..pad` (`Reasoner.prepare` with
    completions): the completion tokens keep their ids, everything else is IGNORE_INDEX."""
    lengths = torch.as_tensor(list(completion_lengths), device=input_ids.device)
    start = input_ids.shape[1] - int(lengths.max())
    column = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    is_completion = (column >= start) & (column < start + lengths[:, None])
    return input_ids.masked_fill(~is_completion, IGNORE_INDEX)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of each row's labelled tokens, (B,) float32.

    `logits[:, j]` predicts `labels[:, j + 1]` (the causal shift); IGNORE_INDEX labels
    carry no loss. Every row needs at least one labelled token."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (labels != IGNORE_INDEX).sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("a row has no labelled token")
    return nll.sum(dim=1) / counts


# --------------------------------------------------------------------------- the task


class SFTVLMTask:
    """The `TrainTask` of `vans train sft-vlm`; see the module docstring."""

    def __init__(
        self,
        config: SFTVLMConfig,
        reasoner: Reasoner,
        settings: VANSSettings,
        start: Path,
        train_samples: Sequence[VNEPSample],
        eval_samples: Sequence[VNEPSample] | None,
    ) -> None:
        self.config = config
        self.reasoner = reasoner
        self.model: torch.nn.Module = reasoner.model
        self.settings = settings
        self.start = start
        self.fps = reasoner.fps
        self.views = VideoViews(
            vlm_fps=self.fps,
            vlm_size=config.frame_size,
            vlm_max_frames=config.max_frames,
            # VNEPDataset decodes all three views; this stage reads only the VLM one, so the
            # other two are made as cheap as possible.
            vdm_num_frames=1,
            vdm_size=(8, 8),
            target_num_frames=1,
            target_size=(8, 8),
        )
        self._train = self._items(train_samples, config.train_manifest)
        self._eval = (
            None if eval_samples is None else self._items(eval_samples, config.eval_manifest)
        )

    def conversations(self, sample: VNEPSample, index: int) -> list[Conversation]:
        """What sample `index` teaches: its question and `[Think]reasoning[/Think][Ans]answer
        [/Ans]`."""
        del index
        return [Conversation(sample.question, format_target(sample.reasoning, sample.answer))]

    def _items(
        self,
        samples: Sequence[VNEPSample],
        manifest: str | None,
        conversations: Callable[[VNEPSample, int], list[Conversation]] | None = None,
    ) -> LazyItems:
        """One item per conversation of each sample (`conversations`, default the task's);
        a sample's video is decoded once for all its conversations (and kept with
        `cache_videos`)."""
        conversations = conversations or self.conversations
        # Targets are made up front so a bad row fails before training starts.
        pairs = []
        for i, sample in enumerate(samples):
            try:
                pairs += [(i, c) for c in conversations(sample, i)]
            except ValueError as exc:
                raise VansError(f"{manifest}: sample {sample.id!r}: {exc}") from None
        dataset = VNEPDataset(samples, self.views)
        videos = LazyItems(len(samples), dataset.__getitem__, cache=self.config.cache_videos)
        limit = self.config.max_target_tokens

        def build(index: int) -> dict[str, Any]:
            i, conversation = pairs[index]
            item = videos[i]
            text = conversation.target
            ids = self.reasoner.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids = [*ids, self.reasoner.im_end_id][:limit]
            return {
                "id": item["id"],
                "frames": item["vlm_frames"],
                "fps": item["vlm_fps"],
                "question": conversation.question,
                "target_ids": ids,
                **conversation.info,
            }

        return LazyItems(len(pairs), build)

    def train_dataset(self) -> Sequence[dict[str, Any]]:
        return self._train

    def eval_dataset(self) -> Sequence[dict[str, Any]] | None:
        return self._eval

    def collate(self, items: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
        """Teacher-forcing inputs on CPU, prompts built by the inference code path. Nothing
        here is random, so `seeds` is unused (LoRA dropout draws inside the model)."""
        del seeds
        targets = [item["target_ids"] for item in items]
        inputs = self.reasoner.prepare(
            [item["frames"] for item in items],
            [item["question"] for item in items],
            [item["fps"] for item in items],
            completions=targets,
            device="cpu",
        )
        inputs["labels"] = completion_labels(inputs["input_ids"], [len(t) for t in targets])
        return inputs

    def sample_losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Per-sample mean cross-entropy of the answer tokens, (B,)."""
        labels = batch["labels"]
        # Answers fill the last columns; only the logits predicting them are computed.
        first = int((labels != IGNORE_INDEX).any(dim=0).nonzero()[0])
        keep = labels.shape[1] - first + 1
        inputs = {key: batch[key] for key in MODEL_INPUTS}
        out = model(**inputs, use_cache=False, logits_to_keep=keep)
        return sequence_nll(out.logits, labels[:, -keep:])

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": self.sample_losses(model, batch).mean()}

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """A full VANS checkpoint: the reasoner with its trained adapter, the starting
        checkpoint's vdm/ copied, its settings with the fps trained at."""
        if model is not self.reasoner.model:
            raise ValueError("save_pretrained expects the task's (unwrapped) model")
        settings = dataclasses.replace(self.settings, vlm_fps=self.fps)
        save_checkpoint(out, self.reasoner, CopiedPart(self.start / "vdm"), settings)


def build_sft_vlm_task(config: SFTVLMConfig) -> SFTVLMTask:
    """Load the reasoner of `config.checkpoint` with a trainable LoRA adapter (a new one,
    seeded by `config.train.seed`, or the checkpoint's own) and the manifests."""
    start, settings = load_start(config.checkpoint)
    lora = start / "vlm" / LORA_DIR
    reasoner = Reasoner.from_pretrained(
        start / "vlm",
        lora=lora if lora.exists() else None,
        trainable_lora=True,
        fps=config.fps or settings.vlm_fps,
    )
    if reasoner.peft_model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.train.seed)
            reasoner.add_lora(config.lora_r, config.lora_alpha, config.lora_dropout)
    else:
        _check_lora(reasoner, config, lora)
    if config.train_lm_head:
        reasoner.unfreeze_output_head()
    train_samples = load_manifest(config.train_manifest)
    eval_samples = load_manifest(config.eval_manifest) if config.eval_manifest else None
    return SFTVLMTask(config, reasoner, settings, start, train_samples, eval_samples)


def _check_lora(reasoner: Reasoner, config: SFTVLMConfig, path: Path) -> None:
    """A continued adapter must be the one the config describes."""
    found = reasoner.peft_model.peft_config["default"]
    wanted = {"r": config.lora_r, "lora_alpha": config.lora_alpha}
    mismatched = {k: (getattr(found, k), v) for k, v in wanted.items() if getattr(found, k) != v}
    if mismatched:
        details = ", ".join(
            f"{k} {have} (config: {want})" for k, (have, want) in mismatched.items()
        )
        raise ConfigError(
            f"{path}: the checkpoint's LoRA adapter has {details}; training continues that "
            "adapter, so set the config to match"
        )

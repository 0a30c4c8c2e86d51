"""Pretraining a toy reasoner to perceive the toy world (`vans train base-reasoner`).

VANS fine-tunes Qwen2.5-VL-3B-Instruct, a model pretrained to see: it already names the
objects in a video and says how they move, and SFT only teaches it the task. A toy reasoner
built from a config sees nothing; LoRA on a random model cannot learn to see from 400
next-event answers. This stage is the toy analogue of that pretraining: every parameter of
the real Qwen2.5-VL class, vision tower included, trains on perception conversations about
toy clips (`vans.data.toyworld.perception`): describe the clip, which objects are there,
which move, where one ends, the visible rule, and multiple-choice questions (which object of
a shape appears, which object moves, how one moves; taught as the right option's sentence).
None of them says what happens after the clip: predicting the next event is what VANS's SFT
teaches.

The conversations use a generic assistant system prompt, as an instruct model is tuned; the
saved reasoner carries the VANS system prompt, as a downloaded Qwen2.5-VL loads with it. The
held-out evaluation reports the cross-entropy and the multiple-choice accuracy (the option
the model finds most likely, `mcq_scores`), overall and per question kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.data.toyworld.perception import option_sentence, perception_questions
from vans.errors import ConfigError
from vans.evaluation.bases import MCQ_KINDS, mcq_accuracy, mcq_scores
from vans.models.checkpoint import VANSSettings
from vans.models.prompting import ASSISTANT_PROMPT, SYSTEM_PROMPT
from vans.models.vlm import Reasoner
from vans.training.config import TrainConfig
from vans.training.sft_vlm import Conversation, SFTVLMTask
from vans.training.stage_io import load_start


@dataclass
class BaseReasonerConfig:
    """Perception pretraining of a toy reasoner, all parameters (`vans train base-reasoner`)."""

    checkpoint: str
    """VANS checkpoint whose reasoner trains from its weights (`vans init-tiny --preset toy`)."""
    train_manifest: str
    """Toy-world samples (their `extra` holds the perception ground truth); each input clip
    gives several conversations. Multi-future rows of one scene share a clip: keep
    `multi_future` 0 for this data, or clips repeat."""
    eval_manifest: str | None = None
    """Held-out toy-world samples: the eval loss and multiple-choice accuracy."""
    system_prompt: str = ASSISTANT_PROMPT
    """System prompt of the pretraining conversations."""
    multiple_choice: bool = True
    """Train on the multiple-choice questions too (the free-form ones always)."""
    cache_videos: bool = True
    """Keep decoded input clips in memory (a toy clip at the reasoner's rate is ~100 KB)."""
    max_target_tokens: int | None = 256
    """Targets longer than this many tokens are cut (a long description is ~130)."""
    max_frames: int | None = None
    """Cap on input frames, as in sft-vlm; None: every frame at the checkpoint's rate."""
    frame_size: tuple[int, int] | None = None
    """(H, W) input frames are resized to before the reasoner's pixel bounds; None: native."""
    train: TrainConfig = field(default_factory=TrainConfig)


def perception_conversations(
    extra: dict[str, Any], seed: int, *, free_form: bool = True, multiple_choice: bool = True
) -> list[Conversation]:
    """The perception conversations of a toy sample's `extra`, the free-form ones drawn
    from `seed`; a multiple-choice one is taught as its right option's sentence and carries
    its `kind`, every option's sentence (`options`) and the right one's index (`choice`)."""
    if "description" not in extra or "perception_mcq" not in extra:
        raise ValueError(
            "no toy-world perception facts in extra (regenerate it with `vans data toyworld`)"
        )
    out = []
    if free_form:
        out += [
            Conversation(q, a) for q, a in perception_questions(np.random.default_rng(seed), extra)
        ]
    if multiple_choice:
        out += [
            Conversation(
                m["question"],
                option_sentence(m, m["answer"]),
                {
                    "kind": m["kind"],
                    "options": [option_sentence(m, i) for i in range(len(m["options"]))],
                    "choice": m["answer"],
                },
            )
            for m in extra["perception_mcq"]
        ]
    return out


class BaseReasonerTask(SFTVLMTask):
    """The `TrainTask` of `vans train base-reasoner`: SFT's teacher forcing on perception
    conversations, every parameter trainable; see the module docstring."""

    def __init__(
        self,
        config: BaseReasonerConfig,
        reasoner: Reasoner,
        settings: VANSSettings,
        start: Path,
        train_samples: Sequence[VNEPSample],
        eval_samples: Sequence[VNEPSample] | None,
    ) -> None:
        super().__init__(config, reasoner, settings, start, train_samples, None)  # type: ignore[arg-type]
        if eval_samples is not None:  # held out: the multiple-choice questions only
            self._eval = self._items(
                eval_samples,
                config.eval_manifest,
                lambda s, i: perception_conversations(s.extra or {}, i, free_form=False),
            )

    def conversations(self, sample: VNEPSample, index: int) -> list[Conversation]:
        return perception_conversations(
            sample.extra or {},
            self.config.train.seed * 1_000_003 + index,
            multiple_choice=self.config.multiple_choice,
        )

    def collate(self, items: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
        batch = super().collate(items, seeds)
        # What evaluation needs to answer each item on its own (never given to the model).
        batch["items"] = list(items)
        return batch

    def evaluate(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Held-out loss, and multiple-choice accuracy (overall and per kind; NaN for a kind
        this batch has none of): the option the reasoner finds most likely is its answer."""
        out = {"loss": self.sample_losses(model, batch).mean()}
        correct: dict[str, list[bool]] = {kind: [] for kind in MCQ_KINDS}
        for item in batch["items"]:
            scores = mcq_scores(self.reasoner, item["frames"], item["question"], item["options"])
            correct[item["kind"]].append(int(scores.argmax()) == item["choice"])
        out |= {k: torch.tensor(v) for k, v in mcq_accuracy(correct).items()}
        return out

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """A full VANS checkpoint whose reasoner is the perceiving base, saved with the VANS
        system prompt (what a downloaded base loads with)."""
        pretraining = self.reasoner.system_prompt
        self.reasoner.system_prompt = SYSTEM_PROMPT
        try:
            super().save_pretrained(model, out)
        finally:
            self.reasoner.system_prompt = pretraining


def build_base_reasoner_task(config: BaseReasonerConfig) -> BaseReasonerTask:
    """Load the reasoner of `config.checkpoint` with every parameter trainable (no LoRA)."""
    start, settings = load_start(config.checkpoint)
    if (start / "vlm" / "lora").exists():
        raise ConfigError(
            f"{config.checkpoint}: the reasoner has a LoRA adapter; base pretraining trains "
            "a plain reasoner (start from `vans init-tiny --preset toy`)"
        )
    reasoner = Reasoner.from_pretrained(start / "vlm", fps=settings.vlm_fps)
    reasoner.system_prompt = config.system_prompt
    reasoner.model.requires_grad_(True)
    train_samples = load_manifest(config.train_manifest)
    eval_samples = load_manifest(config.eval_manifest) if config.eval_manifest else None
    return BaseReasonerTask(config, reasoner, settings, start, train_samples, eval_samples)

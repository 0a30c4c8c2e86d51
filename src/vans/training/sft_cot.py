"""SFT of a video-QA reasoner on VideoP2R's traces (`vans train sft-cot`;
docs/videop2r.md#sft-on-traces).

The reasoner reads the question (`videoqa.prompting.question_text`: the problem, its
options, the template's instruction) about the row's video (`videoqa.frames`) and is taught
`<observation>{observation}</observation><think>{process}</think><answer>{answer}</answer>`
from the row's trace; the loss is the answer tokens' cross-entropy, the video in the forward,
exactly as `sft_vlm` (whose batching and loss this stage reuses). Every parameter trains
("full") or a new LoRA adapter ("lora"); the result is a reasoner directory PA-GRPO starts
from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vans.errors import ConfigError, VansError
from vans.models.prompting import ASSISTANT_PROMPT
from vans.models.vlm import Reasoner
from vans.training.config import TrainConfig
from vans.training.sft_vlm import SFTVLMTask
from vans.training.stage_io import LazyItems
from vans.videoqa.frames import question_frames
from vans.videoqa.prompting import format_trace, question_text
from vans.videoqa.rows import QARow, load_rows


@dataclass
class SFTCoTConfig:
    """SFT on traces (`vans train sft-cot`)."""

    reasoner: str
    """The reasoner to start from: a Qwen2.5-VL directory (Qwen2.5-VL-7B-Instruct in the
    paper; the toy base's vlm/ here)."""
    train_rows: list[str]
    """VideoP2R rows with their trace (`observation`, `process`)."""
    eval_rows: list[str] | None = None
    video_root: str | None = None
    """The folder the rows' paths are relative to (default: each file's folder)."""
    train_mode: Literal["full", "lora"] = "full"
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 16
    system_prompt: str = ASSISTANT_PROMPT
    max_target_tokens: int | None = 1024
    """Traces longer than this many tokens (the end token included) are cut."""
    cache_videos: bool = False
    """Keep decoded videos in memory (the toy benchmark's are tiny)."""
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train_mode not in ("full", "lora"):
            raise ConfigError(f"train_mode must be full or lora, got {self.train_mode!r}")
        if not 1 <= self.min_frames <= self.max_frames or not self.fps > 0:
            raise ConfigError("frames need fps > 0 and 1 <= min_frames <= max_frames")


class SFTCoTTask(SFTVLMTask):
    """The `TrainTask` of `vans train sft-cot`: `SFTVLMTask`'s batching and loss on items
    made from video-QA rows and their traces."""

    def __init__(
        self,
        config: SFTCoTConfig,
        reasoner: Reasoner,
        train_rows: Sequence[QARow],
        eval_rows: Sequence[QARow] | None,
    ) -> None:
        self.config = config
        self.reasoner = reasoner
        self.model: torch.nn.Module = reasoner.model
        self._train = self._rows_items(train_rows)
        self._eval = None if eval_rows is None else self._rows_items(eval_rows)

    def _rows_items(self, rows: Sequence[QARow]) -> LazyItems:
        c = self.config
        targets = []
        for row in rows:  # made up front: a bad trace fails before training starts
            try:
                targets.append(format_trace(row.observation, row.process, row.answer))
            except ValueError as exc:
                raise VansError(f"row {row.id}: {exc}") from None
        videos = LazyItems(
            len(rows),
            lambda i: question_frames(
                rows[i].path,
                rows[i].data_type,
                fps=c.fps,
                min_frames=c.min_frames,
                max_frames=c.max_frames,
            ),
            cache=c.cache_videos,
        )

        def build(index: int) -> dict[str, Any]:
            video = videos[index]
            ids = self.reasoner.tokenizer(targets[index], add_special_tokens=False)["input_ids"]
            return {
                "id": rows[index].id,
                "frames": video.frames,
                "fps": video.fps,
                "question": question_text(rows[index]),
                "target_ids": [*ids, self.reasoner.im_end_id][: c.max_target_tokens],
            }

        return LazyItems(len(rows), build)

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """The trained reasoner as a directory (a LoRA adapter in lora/)."""
        if model is not self.reasoner.model:
            raise ValueError("save_pretrained expects the task's (unwrapped) model")
        self.reasoner.save_pretrained(out)


def build_sft_cot_task(config: SFTCoTConfig) -> SFTCoTTask:
    """Load the reasoner (all parameters trainable, or a new LoRA adapter seeded by
    `config.train.seed`) and the rows (every trace and video present)."""
    reasoner = Reasoner.from_pretrained(config.reasoner)
    reasoner.system_prompt = config.system_prompt
    if config.train_mode == "lora":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.train.seed)
            reasoner.add_lora(config.lora_r, config.lora_alpha, config.lora_dropout)
    else:
        reasoner.model.requires_grad_(True)
    root = config.video_root
    train_rows = load_rows(config.train_rows, root, require_trace=True, check_files=True)
    eval_rows = (
        load_rows(config.eval_rows, root, require_trace=True, check_files=True)
        if config.eval_rows
        else None
    )
    return SFTCoTTask(config, reasoner, train_rows, eval_rows)

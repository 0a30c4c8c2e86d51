"""The rewards of VANS's Joint-GRPO (docs/paper_facts.md#joint-grpo-stage-1 and
docs/paper_facts.md#joint-grpo-stage-2), one float per sample.

    Stage 1 (VLM tuned, VDM frozen):  r_f + r_t1 + r_v1
    Stage 2 (VDM tuned, VLM anchor):  r_v2 + r_c2

- r_f: 1.0 iff the completion is exactly `[Think]...[/Think][Ans]...[/Ans]` (whitespace
  around the blocks only, answer not blank): `parse_output(...).well_formed`.
- r_t1: ROUGE-L of the completion's caption against the ground-truth caption, by
  `evaluation.text_metrics.rouge_l` with the evaluation's default variant. A broken template
  still has a caption (parse_output's best guess, the text the renderer is given too).
- r_v1, r_v2: CLIP-V of a video against the ground-truth video; r_c2: CLIP-T of a video
  against the caption it was generated from. Same definition and frame-alignment rule as
  `evaluation.video_metrics.clip_v` / `clip_t`, through the same `VideoTextEmbedder`, but
  with one `embed_frames` call for all the videos of a group and the ground truth embedded
  once per group (values equal the metric's up to float round-off of batched calls).

The pure functions take a batch and return a list of floats; `RewardFunction` wraps one of
them with its name, weight and the completion segment it judges, for the GRPO trainer
(which sums per-reward group-normalised values, weight 1: docs/paper_facts.md#joint-grpo).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from vans.evaluation.embedders import VideoTextEmbedder
from vans.evaluation.text_metrics import DEFAULT_ROUGE_VARIANT, rouge_l
from vans.evaluation.video_metrics import align_frames, frame_similarities
from vans.models.prompting import ParsedOutput, parse_output

Segment = Literal["all", "think", "answer"]
"""Which tokens of a completion a reward judges: all of them, the Think block, or the Ans
block (for segment-aware advantages; a plain GRPO trainer applies every reward to all)."""

Videos = torch.Tensor | Sequence[torch.Tensor]
"""uint8 (G, T, H, W, 3), or G uint8 (T, H, W, 3) videos whose frame counts and sizes may
differ."""


# --------------------------------------------------------------------------- text rewards


def format_rewards(completions: Sequence[str]) -> list[float]:
    """r_f: 1.0 for a completion that follows the answer template exactly, else 0.0."""
    return [float(parse_output(c).well_formed) for c in completions]


def captions_of(completions: Sequence[str]) -> list[str]:
    """The caption of each completion, as the renderer receives it (`parse_output`)."""
    return [parse_output(c).caption for c in completions]


def caption_rewards(
    completions: Sequence[str],
    truths: str | Sequence[str],
    variant: str = DEFAULT_ROUGE_VARIANT,
) -> list[float]:
    """r_t1: ROUGE-L of each completion's caption against its ground-truth caption (one
    string for the whole batch, or one per completion)."""
    return rouge_rewards(captions_of(completions), truths, variant)


def rouge_rewards(
    captions: Sequence[str],
    truths: str | Sequence[str],
    variant: str = DEFAULT_ROUGE_VARIANT,
) -> list[float]:
    """ROUGE-L of each caption (already parsed out of its completion) against its
    ground-truth caption (one string for all, or one per caption)."""
    truths = [truths] * len(captions) if isinstance(truths, str) else list(truths)
    if len(truths) != len(captions):
        raise ValueError(f"{len(captions)} completions but {len(truths)} ground truths")
    return [
        rouge_l(caption, truth, variant) for caption, truth in zip(captions, truths, strict=True)
    ]


# --------------------------------------------------------------------------- video rewards


def embed_videos(embedder: VideoTextEmbedder, videos: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Frame embeddings (T_i, D) of each video, with one `embed_frames` call per frame size
    (a single call for the renderer's G equal-sized videos)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, video in enumerate(videos):
        by_size.setdefault(tuple(video.shape[1:3]), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(videos)
    for members in by_size.values():
        frames = torch.cat([videos[i] for i in members])
        rows = embedder.embed_frames(frames).split([videos[i].shape[0] for i in members])
        for i, emb in zip(members, rows, strict=True):
            out[i] = emb
    return out


def video_rewards(
    embedder: VideoTextEmbedder,
    videos: Videos,
    truth: torch.Tensor,
    *,
    truth_embeddings: torch.Tensor | None = None,
) -> list[float]:
    """r_v1 / r_v2: CLIP-V of each video against the ground-truth video `truth` (uint8
    (T, H, W, 3)), i.e. `video_metrics.clip_v(embedder, video, truth)` for every video.

    `truth_embeddings` (`embedder.embed_frames(truth)`) may be passed to reuse them across
    calls for the same prompt; otherwise the truth is embedded once here.
    """
    videos = _check_videos(videos)
    _check_video(truth, "truth")
    if truth_embeddings is None:
        truth_embeddings = embedder.embed_frames(truth)
    elif truth_embeddings.shape[0] != truth.shape[0]:
        raise ValueError(
            f"truth_embeddings has {truth_embeddings.shape[0]} rows for {truth.shape[0]} frames"
        )
    # The evaluation's alignment rule, applied to the truth's row numbers so the truth is
    # embedded once for all videos whatever their frame counts.
    rows = torch.arange(truth.shape[0])
    aligned = [align_frames(video, rows) for video in videos]
    generated = embed_videos(embedder, [frames for frames, _ in aligned])
    return [
        _mean(frame_similarities(g, truth_embeddings[picked]))
        for g, (_, picked) in zip(generated, aligned, strict=True)
    ]


def video_text_rewards(
    embedder: VideoTextEmbedder, videos: Videos, captions: str | Sequence[str]
) -> list[float]:
    """r_c2: CLIP-T of each video against its caption (one for all videos, or one per
    video), i.e. `video_metrics.clip_t(embedder, video, caption)` for every video."""
    videos = _check_videos(videos)
    captions = [captions] * len(videos) if isinstance(captions, str) else list(captions)
    if len(captions) != len(videos):
        raise ValueError(f"{len(videos)} videos but {len(captions)} captions")
    unique = list(dict.fromkeys(captions))
    texts = embedder.embed_texts(unique)
    row = {caption: i for i, caption in enumerate(unique)}
    return [
        _mean(frames @ texts[row[caption]])
        for frames, caption in zip(embed_videos(embedder, videos), captions, strict=True)
    ]


def _check_videos(videos: Videos) -> list[torch.Tensor]:
    videos = list(videos)
    if not videos:
        raise ValueError("no videos to score")
    for i, video in enumerate(videos):
        _check_video(video, f"video {i}")
    return videos


def _check_video(video: torch.Tensor, label: str) -> None:
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(
            f"{label}: expected uint8 (T, H, W, 3), got {video.dtype} {tuple(video.shape)}"
        )
    if min(video.shape[:3]) < 1:
        raise ValueError(f"{label}: empty video {tuple(video.shape)}")


def _mean(similarities: torch.Tensor) -> float:
    value = float(similarities.mean())
    # Unit-norm embeddings give cosines in [-1, 1]; anything else is a broken embedder.
    if not math.isfinite(value):
        raise ValueError("the embedder returned non-finite embeddings")
    return value


# --------------------------------------------------------------------------- for the trainer


@dataclass
class RewardInputs:
    """What the rewards of one prompt group may look at."""

    completions: Sequence[str] = ()
    """The G texts the reasoner wrote (Stage 1); empty in Stage 2."""
    parsed: Sequence[ParsedOutput] = ()
    """`parse_output` of each completion; computed here when not given (a trainer that
    parsed them already passes its own, so each completion is parsed once)."""
    truth_caption: str = ""
    """The ground-truth caption of the next event."""
    videos: Videos | None = None
    """The G videos to judge: Stage 1, the frozen renderer's videos of the completions'
    captions (`render_reward_videos(captions_of(completions))`); Stage 2, the tuned
    renderer's videos of the anchor caption."""
    captions: Sequence[str] = ()
    """The caption each video was generated from (Stage 2: the anchor caption, repeated)."""
    truth_video: torch.Tensor | None = None
    """uint8 (T, H, W, 3): the ground-truth next event."""
    truth_embeddings: torch.Tensor | None = None
    """`embedder.embed_frames(truth_video)`, if the trainer keeps it across calls."""

    def __post_init__(self) -> None:
        if self.completions and not self.parsed:
            self.parsed = [parse_output(c) for c in self.completions]
        if len(self.parsed) != len(self.completions):
            raise ValueError(
                f"{len(self.parsed)} parsed outputs for {len(self.completions)} completions"
            )

    @property
    def group_size(self) -> int:
        """G: the number of completions, or of videos in Stage 2."""
        if self.completions:
            return len(self.completions)
        return 0 if self.videos is None else len(self.videos)

    def require(self, *names: str) -> None:
        """Raise ValueError naming the fields a reward needs that are unset or empty."""
        missing = [n for n in names if getattr(self, n) is None or len(getattr(self, n)) == 0]
        if missing:
            raise ValueError(f"reward inputs lack {', '.join(missing)}")


@dataclass(frozen=True)
class RewardFunction:
    """One reward as the GRPO trainer sees it."""

    name: str
    """Key in logs and metrics, e.g. "r_f"."""
    fn: Callable[[RewardInputs], list[float]]
    """Per-sample rewards of one group."""
    weight: float = 1.0
    """Weight in the sum of the (normalised) rewards; the paper uses 1 for all."""
    segment: Segment = "all"
    """The completion tokens this reward judges (see `Segment`)."""

    def __call__(self, inputs: RewardInputs) -> torch.Tensor:
        """float32 (G,) rewards; checks there is one finite value per sample."""
        values = torch.tensor(self.fn(inputs), dtype=torch.float32)
        expected = inputs.group_size
        if values.shape != (expected,):
            raise ValueError(f"{self.name}: {values.numel()} rewards for {expected} samples")
        if not torch.isfinite(values).all():
            raise ValueError(f"{self.name}: non-finite rewards {values.tolist()}")
        return values


def stage1_rewards(
    embedder: VideoTextEmbedder, *, rouge_variant: str = DEFAULT_ROUGE_VARIANT
) -> list[RewardFunction]:
    """r_f (all tokens), r_t1 and r_v1 (both judge the answer: the video depends on the
    caption alone)."""

    def r_f(x: RewardInputs) -> list[float]:
        x.require("completions")
        return [float(p.well_formed) for p in x.parsed]

    def r_t1(x: RewardInputs) -> list[float]:
        x.require("completions")
        return rouge_rewards([p.caption for p in x.parsed], x.truth_caption, rouge_variant)

    return [
        RewardFunction("r_f", r_f, segment="all"),
        RewardFunction("r_t1", r_t1, segment="answer"),
        RewardFunction("r_v1", _clip_v_reward(embedder), segment="answer"),
    ]


def stage2_rewards(embedder: VideoTextEmbedder) -> list[RewardFunction]:
    """r_v2 and r_c2 (the policy is the renderer: its whole output is judged). r_c2 keeps
    the video tied to the caption; without it the paper sees static-frame reward hacking."""

    def r_c2(x: RewardInputs) -> list[float]:
        x.require("videos", "captions")
        return video_text_rewards(embedder, x.videos, x.captions)

    return [RewardFunction("r_v2", _clip_v_reward(embedder)), RewardFunction("r_c2", r_c2)]


def _clip_v_reward(embedder: VideoTextEmbedder) -> Callable[[RewardInputs], list[float]]:
    def clip_v_reward(x: RewardInputs) -> list[float]:
        x.require("videos", "truth_video")
        return video_rewards(embedder, x.videos, x.truth_video, truth_embeddings=x.truth_embeddings)

    return clip_v_reward

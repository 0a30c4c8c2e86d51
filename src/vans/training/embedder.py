"""Train the toy-world video-text embedder: symmetric InfoNCE (the CLIP loss) on
(target-clip frames, answer caption) pairs, with a held-out split by scene.

A video is embedded as the L2-normalised mean of its frame embeddings, the same pooling
CLIP-T and the retrieval figure use. Every clip is decoded once into memory (a few hundred
MB for a couple of thousand 64x64 toy samples); each step draws a random subset of every
clip's frames, which augments the data and keeps a step cheap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vans.data.manifest import load_manifest
from vans.data.schema import TaskType, VNEPSample
from vans.data.video import read_video
from vans.errors import VansError
from vans.evaluation.embedders import VideoTextEmbedder
from vans.evaluation.toy_embedder import ToyEmbedder, ToyEmbedderConfig, build_vocab, words
from vans.training.loop import lr_factor

MANIFEST_NAME = "manifest.jsonl"


class EmbedderTrainError(VansError):
    """An invalid embedder training config or data set; names the field or file."""


@dataclass
class EmbedderTrainConfig:
    """What `vans train embedder` trains on and how (the main fields are CLI options)."""

    data_dir: str = "data/toyworld"
    """Data set: a directory holding `manifest.jsonl` (e.g. from `vans data toyworld`), or a
    manifest file. Target clips must have at least `clip_frames` frames."""
    out_dir: str = "runs/embedder"
    """Where the trained embedder is written (`vans_embedder.json`, `model.safetensors`)."""
    val_fraction: float = 0.1
    """Fraction of *scenes* held out (`extra["scene"]`, else the sample id), so the futures
    of one scene never straddle train and validation."""
    steps: int = 800
    """Optimizer steps."""
    batch_size: int = 64
    """(clip, caption) pairs per step; each is contrasted against the others of the batch."""
    lr: float = 2e-3
    """Peak learning rate (AdamW), reached after `warmup_steps`, then cosine decay to 0."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to norms, biases, embeddings or the temperature)."""
    embed_dim: int = 128
    """Size of the shared embedding space."""
    image_size: int = 64
    """Frames are resized and center-cropped to this square size."""
    clip_frames: int = 9
    """Frames decoded per target clip (uniformly spaced), used whole for validation."""
    frames_per_sample: int = 3
    """Random frames of each clip averaged into its embedding at a training step."""
    seed: int = 0
    """Seeds the split, the initialisation, the batch order and the frame draws."""
    max_words: int = 32
    """Words kept per caption by the text encoder."""

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("steps", "clip_frames", "frames_per_sample", "embed_dim", "max_words"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 (a contrastive loss), got {self.batch_size}")
        if self.frames_per_sample > self.clip_frames:
            problems.append(
                f"frames_per_sample ({self.frames_per_sample}) must be <= clip_frames "
                f"({self.clip_frames})"
            )
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if problems:
            raise EmbedderTrainError("invalid embedder config: " + "; ".join(problems))

    def model_config(self) -> ToyEmbedderConfig:
        return ToyEmbedderConfig(
            embed_dim=self.embed_dim, image_size=self.image_size, max_words=self.max_words
        )


class EmbedderProgress(NamedTuple):
    """One progress report: `stage` is "read" (decoding clips) or "train" (steps)."""

    stage: str
    done: int
    total: int
    loss: float | None = None


@dataclass
class TrainEmbedderResult:
    """The outcome of `train_embedder` (also saved as the embedder's `metrics`).

    Retrieval figures are top-1 over the held-out samples, a hit being the same event
    (`caption_event`: paraphrases count) unless named "exact".
    """

    out_dir: Path
    video_to_text: float
    """Retrieval of each held-out video's caption among all held-out captions."""
    text_to_video: float
    """Retrieval of a video showing each held-out caption among all held-out videos."""
    video_to_text_exact: float
    """`video_to_text` counting only the identical caption text as a hit; its ceiling is
    below 1 when one event appears under several paraphrases."""
    untrained_video_to_text: float
    """`video_to_text` of the randomly initialised model, for contrast."""
    num_train: int
    num_val: int
    seconds: float
    """Wall-clock time of reading, training and evaluating (not saving)."""
    losses: list[float] = field(default_factory=list)
    """Training loss per step."""

    def metrics(self) -> dict[str, float | int]:
        return {
            "val_video_to_text_top1": self.video_to_text,
            "val_text_to_video_top1": self.text_to_video,
            "val_video_to_text_exact_top1": self.video_to_text_exact,
            "untrained_val_video_to_text_top1": self.untrained_video_to_text,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "steps": len(self.losses),
            "final_loss": self.losses[-1],
            "seconds": round(self.seconds, 1),
        }


def caption_retrieval(
    video_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    captions: Sequence[str],
    events: Sequence[Hashable] | None = None,
) -> float:
    """Top-1 accuracy of retrieving video i's caption among all N captions.

    Row i of both (N, D) tensors belongs to sample i, whose caption is `captions[i]`. Video i
    retrieves the caption j of highest cosine similarity; it is a hit when `captions[j]`
    equals `captions[i]` as text (several samples can share one caption) or, when `events`
    is given, when `events[j] == events[i]` (a paraphrase of the same event). Swapping the
    two tensors gives text-to-video retrieval with the same hit rule.
    """
    n = len(captions)
    if video_embeddings.shape[0] != n or text_embeddings.shape[0] != n:
        raise ValueError(
            f"need one video and one text embedding per caption: {n} captions, "
            f"{video_embeddings.shape[0]} videos, {text_embeddings.shape[0]} texts"
        )
    if events is not None and len(events) != n:
        raise ValueError(f"need one event per caption: {n} captions, {len(events)} events")
    if n == 0:
        raise ValueError("caption_retrieval needs at least one sample")
    similarity = F.normalize(video_embeddings, dim=-1) @ F.normalize(text_embeddings, dim=-1).T
    hits = 0
    for i, j in enumerate(similarity.argmax(dim=1).tolist()):
        hits += captions[j] == captions[i] or (events is not None and events[j] == events[i])
    return hits / n


def caption_event(sample: VNEPSample) -> str:
    """What the sample's caption says, whatever its wording.

    The toy world words each answer with a random paraphrase ("hits" / "collides with"),
    which no video can reveal, so paraphrases of one event must count as the same caption.
    A toy-world event is fixed by its family, its future (factual or hypothetical), the
    objects that move (in role order), the objects in view (predictive families) and the
    direction the caption names; other samples' event is their caption text.
    """
    extra = sample.extra
    if sample.source != "toyworld" or not {"family", "future", "movers"} <= extra.keys():
        return sample.answer
    in_view = (
        sorted(o["name"] for o in extra.get("objects", []))
        if sample.task is TaskType.PREDICTIVE
        else []
    )
    # Only the direction the caption names: "drops off the ledge" holds either way.
    direction = [w for w in words(sample.answer) if w in ("left", "right")]
    return json.dumps([extra["family"], extra["future"], extra["movers"], in_view, direction])


def video_embeddings(embedder: VideoTextEmbedder, clips: torch.Tensor) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) clips -> (N, D): the normalised mean of each clip's frames."""
    n, t = clips.shape[:2]
    frames = embedder.embed_frames(clips.flatten(0, 1))
    return F.normalize(frames.view(n, t, -1).mean(1), dim=-1)


def contrastive_loss(
    videos: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, same: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of unit (B, D) video and text embeddings.

    `same[i, j]` is True when pairs i and j have the same caption or event: such pairs are all
    positives (the target spreads evenly over them), so duplicates are not pushed apart.
    """
    logits = scale * videos @ texts.T
    target = same.float() / same.float().sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T)) / 2


def split_by_scene(
    samples: Sequence[VNEPSample], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train, val) sample indices; a scene's samples all land on the same side."""
    scenes = [str(s.extra.get("scene", s.id)) for s in samples]
    unique = sorted(set(scenes))
    if len(unique) < 2:
        raise EmbedderTrainError(
            f"need at least 2 scenes to hold some out, got {len(unique)} ({len(samples)} samples)"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    num_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    held_out = {unique[i] for i in order[:num_val]}
    train = [i for i, s in enumerate(scenes) if s not in held_out]
    val = [i for i, s in enumerate(scenes) if s in held_out]
    return train, val


def read_clips(
    samples: Sequence[VNEPSample],
    num_frames: int,
    size: int,
    progress: Callable[[EmbedderProgress], None] | None = None,
) -> torch.Tensor:
    """uint8 (N, num_frames, size, size, 3): each sample's target clip, decoded once."""
    clips = torch.empty((len(samples), num_frames, size, size, 3), dtype=torch.uint8)
    for i, sample in enumerate(samples):
        ref = sample.target
        clips[i] = read_video(
            ref.path, start=ref.start, end=ref.end, num_frames=num_frames, size=(size, size)
        ).frames
        if progress is not None:
            progress(EmbedderProgress("read", i + 1, len(samples)))
    return clips


def train_embedder(
    config: EmbedderTrainConfig, progress: Callable[[EmbedderProgress], None] | None = None
) -> TrainEmbedderResult:
    """Train a toy-world embedder on `config.data_dir`, save it to `config.out_dir`."""
    start = time.perf_counter()
    samples = load_manifest(_manifest_path(Path(config.data_dir)))
    train_idx, val_idx = split_by_scene(samples, config.val_fraction, config.seed)
    if len(train_idx) < config.batch_size:
        raise EmbedderTrainError(
            f"batch_size ({config.batch_size}) exceeds the {len(train_idx)} training samples of "
            f"{config.data_dir}"
        )
    # Train samples first, then held-out ones: both sets are views of one decoded tensor.
    ordered = [samples[i] for i in train_idx + val_idx]
    clips = read_clips(ordered, config.clip_frames, config.image_size, progress)
    train_clips, val_clips = clips[: len(train_idx)], clips[len(train_idx) :]
    captions = [s.answer for s in ordered]
    events = [caption_event(s) for s in ordered]
    train_captions, val_captions = captions[: len(train_idx)], captions[len(train_idx) :]
    train_events, val_events = events[: len(train_idx)], events[len(train_idx) :]

    with torch.random.fork_rng():  # seed the initialisation without touching global state
        torch.manual_seed(config.seed)
        embedder = ToyEmbedder.untrained(build_vocab(train_captions), config.model_config())
    untrained = caption_retrieval(
        video_embeddings(embedder, val_clips),
        embedder.embed_texts(val_captions),
        val_captions,
        val_events,
    )

    losses = _optimise(embedder, train_clips, train_captions, train_events, config, progress)

    val_videos = video_embeddings(embedder, val_clips)
    val_texts = embedder.embed_texts(val_captions)
    result = TrainEmbedderResult(
        out_dir=Path(config.out_dir),
        video_to_text=caption_retrieval(val_videos, val_texts, val_captions, val_events),
        text_to_video=caption_retrieval(val_texts, val_videos, val_captions, val_events),
        video_to_text_exact=caption_retrieval(val_videos, val_texts, val_captions),
        untrained_video_to_text=untrained,
        num_train=len(train_idx),
        num_val=len(val_idx),
        seconds=time.perf_counter() - start,
        losses=losses,
    )
    embedder.metrics = {**result.metrics(), "data": str(config.data_dir)}
    embedder.save_pretrained(config.out_dir)
    return result


def _optimise(
    embedder: ToyEmbedder,
    clips: torch.Tensor,
    captions: list[str],
    events: list[str],
    config: EmbedderTrainConfig,
    progress: Callable[[EmbedderProgress], None] | None,
) -> list[float]:
    """Run the optimizer over shuffled epochs of (clip, caption) pairs; per-step losses."""
    model = embedder.model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "tokens" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, "cosine", config.warmup_steps, config.steps)
    )
    ids, mask = embedder.tokenize(captions)
    # Pairs with the same caption or event are positives of each other, whatever the wording.
    caption_ids, event_ids = _ids(captions), _ids(events)
    generator = torch.Generator().manual_seed(config.seed)
    per_epoch = len(captions) // config.batch_size
    losses: list[float] = []
    for step in range(config.steps):
        if step % per_epoch == 0:
            order = torch.randperm(len(captions), generator=generator)
        batch = order[(step % per_epoch) * config.batch_size :][: config.batch_size]
        # A random subset of each clip's frames: rank random keys, keep the first few.
        picks = torch.rand(len(batch), clips.shape[1], generator=generator).argsort(1)
        picks = picks[:, : config.frames_per_sample]
        frames = clips[batch.unsqueeze(1), picks].flatten(0, 1)
        videos = model.encode_frames(embedder.pixels(frames))
        videos = F.normalize(videos.view(len(batch), picks.shape[1], -1).mean(1), dim=-1)
        texts = model.encode_texts(ids[batch], mask[batch])
        same = _equal(caption_ids[batch]) | _equal(event_ids[batch])
        loss = contrastive_loss(videos, texts, model.scale(), same)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress(EmbedderProgress("train", step + 1, config.steps, losses[-1]))
    model.eval()
    return losses


def _ids(values: list[str]) -> torch.Tensor:
    """One integer per distinct value, in order of first appearance."""
    index = {value: i for i, value in enumerate(dict.fromkeys(values))}
    return torch.tensor([index[v] for v in values])


def _equal(ids: torch.Tensor) -> torch.Tensor:
    """(B,) ids -> (B, B) bool: True where two rows have the same id."""
    return ids.unsqueeze(1) == ids.unsqueeze(0)


def _manifest_path(data: Path) -> Path:
    """`data` itself if it is a file, else its `manifest.jsonl`."""
    if data.is_dir():
        data = data / MANIFEST_NAME
        if not data.is_file():
            raise EmbedderTrainError(
                f"{data.parent}: no {MANIFEST_NAME} (generate one with `vans data toyworld`)"
            )
    return data

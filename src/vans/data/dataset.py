"""A torch Dataset of VNEP samples, decoding the three video views each model needs.

* VLM view of the input: frames at `vlm_fps` (VANS: 1 fps), native resolution unless
  `vlm_size` is set; the count follows the clip's duration, so it varies per sample.
* VDM view of the input: a fixed number of frames at a fixed size, VAE-encoded for the
  reference latents.
* Target: the ground-truth next event, at the protocol's 33 frames of 352x640.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch.utils.data import Dataset

from vans.data.manifest import load_manifest
from vans.data.schema import TaskType, VideoRef, VNEPSample
from vans.data.video import PROTOCOL_SIZE, Video, VideoError, read_video
from vans.errors import VansError


@dataclass(frozen=True)
class VideoViews:
    """How the input and target videos of a sample are sampled and sized."""

    vlm_fps: float = 1.0
    """Frame rate of the VLM view of the input."""
    vlm_size: tuple[int, int] | None = None
    """(H, W) of the VLM view (resize + center-crop); None keeps the native resolution."""
    vlm_max_frames: int | None = None
    """Cap on VLM frames; longer clips keep this many uniformly spaced frames."""
    vdm_num_frames: int = 33
    """Frames of the VDM view of the input (spread uniformly over the clip)."""
    vdm_size: tuple[int, int] = PROTOCOL_SIZE
    """(H, W) of the VDM view of the input."""
    target_num_frames: int = 33
    """Frames of the target clip (spread uniformly over the clip)."""
    target_size: tuple[int, int] = PROTOCOL_SIZE
    """(H, W) of the target clip."""

    @classmethod
    def for_renderer(
        cls, reference_frames: int, num_frames: int, size: tuple[int, int]
    ) -> VideoViews:
        """The views a renderer-only stage reads: the input as `reference_frames` frames and
        the target as `num_frames`, both at `size`. `VNEPDataset` decodes the VLM view too;
        it is made as cheap as possible (one 8x8 frame)."""
        return cls(
            vlm_size=(8, 8),
            vlm_max_frames=1,
            vdm_num_frames=reference_frames,
            vdm_size=size,
            target_num_frames=num_frames,
            target_size=size,
        )

    def __post_init__(self) -> None:
        if not self.vlm_fps > 0:
            raise VansError(f"vlm_fps must be > 0, got {self.vlm_fps}")
        counts = {
            "vdm_num_frames": self.vdm_num_frames,
            "target_num_frames": self.target_num_frames,
        }
        if self.vlm_max_frames is not None:
            counts["vlm_max_frames"] = self.vlm_max_frames
        for name, count in counts.items():
            if count < 1:
                raise VansError(f"{name} must be >= 1, got {count}")


class VNEPItem(TypedDict):
    """One decoded sample, as returned by `VNEPDataset.__getitem__`."""

    id: str
    question: str
    answer: str
    reasoning: str | None
    task: TaskType
    vlm_frames: torch.Tensor
    """uint8 (T, H, W, 3); T varies with the clip's duration."""
    vlm_fps: float
    """Rate of `vlm_frames` (lower than `vlm_fps` when `vlm_max_frames` thinned them)."""
    vdm_frames: torch.Tensor
    """uint8 (vdm_num_frames, *vdm_size, 3)."""
    target_frames: torch.Tensor
    """uint8 (target_num_frames, *target_size, 3)."""
    sample: VNEPSample


class VNEPDataset(Dataset[VNEPItem]):
    """VNEP samples from a manifest (validated on load) or an in-memory list.

    `views` defaults to the VANS set-up: the VLM sees the input at 1 fps and native
    resolution; the VDM input and the target are 33 frames at 352x640.
    """

    def __init__(
        self, source: str | Path | Sequence[VNEPSample], views: VideoViews | None = None
    ) -> None:
        self.samples: list[VNEPSample] = (
            load_manifest(source) if isinstance(source, str | Path) else list(source)
        )
        self.views = views or VideoViews()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> VNEPItem:
        """Decode sample `index`; a `VideoError` names the sample id and the file."""
        # The input is decoded once per view: slower than sampling one decode twice, but
        # each view then follows read_video's sampling rules exactly.
        sample = self.samples[index]
        views = self.views
        vlm = _read(sample, sample.input, fps=views.vlm_fps, size=views.vlm_size)
        if views.vlm_max_frames is not None:
            vlm = _thin(vlm, views.vlm_max_frames)
        vdm = _read(sample, sample.input, num_frames=views.vdm_num_frames, size=views.vdm_size)
        target = _read(
            sample, sample.target, num_frames=views.target_num_frames, size=views.target_size
        )
        return VNEPItem(
            id=sample.id,
            question=sample.question,
            answer=sample.answer,
            reasoning=sample.reasoning,
            task=sample.task,
            vlm_frames=vlm.frames,
            vlm_fps=vlm.fps,
            vdm_frames=vdm.frames,
            target_frames=target.frames,
            sample=sample,
        )


_STACKED = ("vdm_frames", "target_frames")


def collate_vnep(batch: Sequence[VNEPItem]) -> dict[str, Any]:
    """Batch items: fixed-size views stacked to (B, T, H, W, 3), everything else as lists.

    `vlm_frames` stays a list because its frame count differs between clips.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return {
        key: torch.stack([item[key] for item in batch])
        if key in _STACKED
        else [item[key] for item in batch]
        for key in batch[0]
    }


def _read(sample: VNEPSample, ref: VideoRef, **sampling: Any) -> Video:
    """Read `ref` of `sample`; a failure names the sample as well as the file."""
    try:
        return read_video(ref.path, start=ref.start, end=ref.end, **sampling)
    except VideoError as exc:
        raise VideoError(exc.path, f"sample {sample.id!r}: {exc.reason}") from exc


def _thin(video: Video, max_frames: int) -> Video:
    """Keep `max_frames` uniformly spaced frames of a longer video, adjusting its rate."""
    count = video.frames.shape[0]
    if count <= max_frames:
        return video
    indices = torch.linspace(0, count - 1, max_frames).round().long()
    return Video(frames=video.frames[indices], fps=video.fps * max_frames / count)

"""The frames a video-QA reasoner sees of a row's video (docs/videop2r.md#frames): Video-R1's
rule, `fps` frames a second clamped to [`min_frames`, `max_frames`] (VideoP2R: 16 frames in
training, 32 at evaluation), evenly spaced over the whole clip. An image is a still clip of
two frames (Qwen2.5-VL's temporal patch), as Qwen2.5-VL itself treats one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vans.data.probe import video_duration
from vans.data.video import Video, VideoError, read_video


def question_frames(
    path: Path, data_type: str, *, fps: float, min_frames: int, max_frames: int
) -> Video:
    """uint8 (T, H, W, 3) frames of the row's video or image and the rate they span."""
    if data_type == "image":
        try:
            with Image.open(path) as image:
                frame = torch.from_numpy(np.asarray(image.convert("RGB")).copy())
        except (OSError, UnidentifiedImageError) as exc:
            raise VideoError(path, f"cannot read the image: {exc}") from None
        return Video(frames=frame.unsqueeze(0).repeat(2, 1, 1, 1), fps=2.0)
    duration = video_duration(path) or 0.0
    count = min(max(round(duration * fps), min_frames), max_frames)
    return read_video(path, num_frames=count)

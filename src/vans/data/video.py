"""Video I/O with PyAV (no torchvision): read, sample, resize/crop, write MP4 and GIF.

Frames are always uint8 tensors of shape (T, H, W, 3) in RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vans.errors import VansError

PROTOCOL_SIZE: tuple[int, int] = (352, 640)
"""(height, width) every method outputs in the VANS evaluation protocol."""


class VideoError(VansError):
    """A video could not be read or written; names the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class Video:
    """Decoded frames (T, H, W, 3) uint8 and the frame rate they are sampled at."""

    frames: torch.Tensor
    fps: float


def read_video(
    path: str | Path,
    *,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = None,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> Video:
    raise NotImplementedError


def resize_center_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    raise NotImplementedError


def write_mp4(path: str | Path, frames: torch.Tensor, fps: float) -> Path:
    raise NotImplementedError


def write_gif(path: str | Path, frames: torch.Tensor, fps: float) -> Path:
    raise NotImplementedError

"""Video preprocessing for Qwen2.5-VL in plain torch (no torchvision).

transformers' `Qwen2VLVideoProcessor` needs torchvision, which has no working CPU build
here, so this module does the same job with `torch.nn.functional`:

1. `smart_resize`: pick a frame size (H', W') whose sides are multiples of
   `patch_size * merge_size` (28), keeping the aspect ratio and the pixel count within
   [min_pixels, max_pixels]. Same rounding rule as transformers' `smart_resize`.
2. Resize every frame with bicubic interpolation (antialiased), round back to 0..255 like
   torchvision does on uint8 frames; rescale by 1/255 and normalise with the CLIP mean/std.
3. Pad the number of frames to a multiple of `temporal_patch_size` by repeating the last
   frame.
4. Cut into patches of `temporal_patch_size x patch_size x patch_size` pixels and flatten
   them in Qwen2-VL's order.

Patch layout (the vision tower relies on it, see `patchify`): rows of `pixel_values_videos`
run over (t, h-block, w-block, merge-row, merge-col), where a "block" is the
`merge_size x merge_size` group of patches that the vision tower's merger fuses into one
language-model token; the values inside one row run over (channel, frame-in-patch, pixel
row, pixel column).

Pixel budget. transformers' `Qwen2VLVideoProcessor` (and qwen-vl-utils) bound each video
frame to [128 * 28 * 28, 768 * 28 * 28] pixels; Qwen2.5-VL-3B-Instruct's
`preprocessor_config.json` uses [3136, 12845056] for *images*. We default to the video
bounds (`VIDEO_MIN_PIXELS`, `VIDEO_MAX_PIXELS`); both are arguments. qwen-vl-utils also caps
the total pixels of a long video; we do not (callers bound the frame count, VANS watches
short clips at 1 fps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""OpenAI CLIP's per-channel mean, used by Qwen2-VL and Qwen2.5-VL."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's per-channel standard deviation."""

PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
VIDEO_MIN_PIXELS = 128 * 28 * 28
"""Fewest pixels per video frame (transformers' `Qwen2VLVideoProcessor` default)."""
VIDEO_MAX_PIXELS = 768 * 28 * 28
"""Most pixels per video frame (transformers' `Qwen2VLVideoProcessor` default)."""


MAX_ASPECT_RATIO = 200
"""The most elongated frame Qwen2-VL's processor accepts (longer side over shorter)."""


def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_SIZE * MERGE_SIZE,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
) -> tuple[int, int]:
    """The frame size Qwen2-VL resizes a (height, width) frame to.

    Both sides become multiples of `factor`, the aspect ratio is kept as well as rounding
    allows and the area is brought within [min_pixels, max_pixels]: each side is first
    rounded to the nearest multiple (Python's `round`, half to even, as transformers does);
    if the area is then too large both sides are scaled down by the same factor and rounded
    *down*, if too small scaled up and rounded *up*.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio must be below {MAX_ASPECT_RATIO}, got {height}x{width}")
    new_h = round(height / factor) * factor
    new_w = round(width / factor) * factor
    if new_h * new_w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / scale / factor) * factor)
        new_w = max(factor, math.floor(width / scale / factor) * factor)
    elif new_h * new_w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * scale / factor) * factor
        new_w = math.ceil(width * scale / factor) * factor
    return new_h, new_w


def patchify(
    video: torch.Tensor,
    *,
    patch_size: int = PATCH_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Cut a (T, C, H, W) float video into Qwen2-VL's flattened patches.

    T must be a multiple of `temporal_patch_size`, H and W multiples of
    `patch_size * merge_size`. Returns `(patches, (grid_t, grid_h, grid_w))`, patches of
    shape (grid_t * grid_h * grid_w, C * temporal_patch_size * patch_size**2), rows in
    (t, h-block, w-block, merge-row, merge-col) order, columns in (channel, frame, pixel row,
    pixel column) order.
    """
    frames, channels, height, width = video.shape
    if frames % temporal_patch_size:
        raise ValueError(f"{frames} frames is not a multiple of {temporal_patch_size}")
    block = patch_size * merge_size
    if height % block or width % block:
        raise ValueError(f"frame size {height}x{width} is not a multiple of {block}")
    grid_t = frames // temporal_patch_size
    grid_h, grid_w = height // patch_size, width // patch_size
    blocks_h, blocks_w = grid_h // merge_size, grid_w // merge_size

    # Name every axis, then move them into the documented order.
    x = video.reshape(
        grid_t,
        temporal_patch_size,  # frame within the patch
        channels,
        blocks_h,
        merge_size,  # merge row
        patch_size,  # pixel row
        blocks_w,
        merge_size,  # merge column
        patch_size,  # pixel column
    )
    #          t  hb wb mr mc  c  f  pr pc
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = x.reshape(
        grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size
    )
    return patches, (grid_t, grid_h, grid_w)


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic, antialiased resize of (T, C, H, W) 0..255 frames, rounded back to 0..255.

    Rounding and clamping reproduce what torchvision's resize returns for uint8 frames, which
    is what transformers' video processor feeds on; torch's bicubic kernel (a = -0.75)
    matches torchvision's, PIL's (a = -0.5) differs slightly.
    """
    if frames.shape[-2:] == (height, width):
        return frames
    resized = F.interpolate(
        frames, size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return resized.round_().clamp_(0, 255)


def preprocess_video(
    frames: torch.Tensor,
    *,
    patch_size: int = PATCH_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn uint8 frames (T, H, W, 3) into Qwen2.5-VL's video inputs.

    Returns `(pixel_values_videos, video_grid_thw)`: float32 patches of shape
    (N, 3 * temporal_patch_size * patch_size**2) in the layout of `patchify`, and the grid
    (1, 3) as a LongTensor [[t, h, w]] with N = t * h * w. The language model sees
    N / merge_size**2 video tokens.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("the video has no frames")
    height, width = frames.shape[1:3]
    new_h, new_w = smart_resize(
        height, width, patch_size * merge_size, min_pixels=min_pixels, max_pixels=max_pixels
    )
    video = frames.permute(0, 3, 1, 2).to(torch.float32)  # (T, C, H, W), 0..255
    video = resize_frames(video, new_h, new_w)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    video = (video / 255.0 - mean_t) / std_t
    if pad := -video.shape[0] % temporal_patch_size:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    patches, grid = patchify(
        video,
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        merge_size=merge_size,
    )
    return patches, torch.tensor([grid], dtype=torch.long)


def second_per_grid_t(fps: float, temporal_patch_size: int = TEMPORAL_PATCH_SIZE) -> float:
    """Seconds of video one temporal grid step covers, for Qwen2.5-VL's temporal mRoPE.

    Each grid step holds `temporal_patch_size` frames sampled at `fps`, so it spans
    temporal_patch_size / fps seconds (2.0 s at the VANS default of 1 fps).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return temporal_patch_size / fps

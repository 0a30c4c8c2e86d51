"""CLIP-V and CLIP-T per the VANS protocol, through any `VideoTextEmbedder`.

CLIP-V: cosine similarity of frame i of the generated video with frame i of the ground
truth, averaged over frames. CLIP-T: cosine similarity of each generated frame with the
caption, averaged over frames. Both are raw cosines (no x100, no clipping at 0), which is
the scale of the paper's table (CLIP-V ~0.7-0.8, CLIP-T ~0.25-0.38).

When the two videos have different frame counts (e.g. scoring another method's outputs),
both are resampled to the shorter count with evenly spaced indices
floor(linspace(0, n - 1, m)), so frame i of each covers the same point in time. Frame sizes
may differ: every frame is preprocessed by the embedder on its own.
"""

from __future__ import annotations

import torch

from vans.evaluation.embedders import VideoTextEmbedder


def aligned_indices(num_frames: int, count: int) -> torch.Tensor:
    """`count` evenly spaced frame indices of a `num_frames`-frame video (first and last kept)."""
    if count < 1 or num_frames < count:
        raise ValueError(f"cannot pick {count} frames out of {num_frames}")
    return torch.linspace(0, num_frames - 1, count).floor().long()


def align_frames(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample two (T, H, W, 3) videos to their common (shorter) frame count."""
    count = min(a.shape[0], b.shape[0])
    return a[aligned_indices(a.shape[0], count)], b[aligned_indices(b.shape[0], count)]


def frame_similarities(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of unit-norm embeddings (N, D) x (N, D) -> (N,)."""
    return (a * b).sum(-1)


def clip_v(embedder: VideoTextEmbedder, generated: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean cosine similarity of aligned frames of the generated and ground-truth videos."""
    generated, truth = align_frames(generated, truth)
    sims = frame_similarities(embedder.embed_frames(generated), embedder.embed_frames(truth))
    return float(sims.mean())


def clip_t(embedder: VideoTextEmbedder, generated: torch.Tensor, caption: str) -> float:
    """Mean cosine similarity of each generated frame with the caption."""
    frames = embedder.embed_frames(generated)
    text = embedder.embed_texts([caption])
    return float((frames @ text[0]).mean())


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample, (B,), of videos in [-1, 1] (peak 2)."""
    mse = (reconstruction - target).square().mean(dim=tuple(range(1, target.ndim)))
    return 10 * torch.log10(4 / mse.clamp_min(1e-12))

"""Fréchet distance between feature sets, and the I3D video features that make it FVD.

FVD = `frechet_distance_from_features(I3D features of real videos, of generated videos)`:
||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)), means and unbiased covariances
(`np.cov`, N - 1, like pytorch-fid and the StyleGAN-V-derived FVD scripts; StyleGAN-V's own
FeatureStats divides by N, which differs by a factor N / (N - 1) in the covariance terms).

I3D convention: the TorchScript Kinetics-400 I3D `i3d_torchscript.pt` that StyleGAN-V
published (a port of the tf.hub model behind Google's original FVD, used by DIGAN,
common_metrics_on_video_quality and many video-generation repos). Its forward is
`forward(x, rescale: bool, resize: bool, return_features: bool)`:

* we pass `rescale=False, resize=False, return_features=True`, so the model gets what the
  tf.hub model expects: float32 (B, 3, T, 224, 224), channels RGB, values in [-1, 1];
  `return_features=True` returns the 400 logits before the softmax (the FVD embedding),
  float (B, 400). (StyleGAN-V instead passes uint8 with rescale=True, resize=True and lets
  the model rescale and squash each frame to 224x224 without cropping.)
* preprocessing (`i3d_input`, as in the StyleGAN-V-derived `preprocess_single`): scale each
  frame so its shorter side is 224 (bilinear, align_corners=False, no antialiasing, long
  side ceil(L * 224 / S)), center-crop 224x224, map [0, 255] to [-1, 1].
* a VANS answer (33 frames, 352x640) is fed whole: all 33 frames as one clip, each resized
  to 224x408 and center-cropped to columns 92..315, i.e. the middle 35% of the width.
* at least `I3D_MIN_FRAMES` frames: the network downsamples time by 8 and its last average
  pool spans 2 steps, so shorter clips fail inside it; common FVD scripts require >= 10.
* FVD depends on all of this (frame count, resize, crop, weights, sample count): numbers are
  only comparable between runs that share it.

TorchScript files contain code that runs when the model is called: load only files you trust.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from vans.errors import VansError

I3D_SIZE = 224
"""Side of the square frames the I3D sees."""

I3D_MIN_FRAMES = 10
"""Fewest frames per clip we feed the I3D."""

I3D_KWARGS = {"rescale": False, "resize": False, "return_features": True}
"""Keyword arguments of every I3D call: input already in [-1, 1] at 224x224; logits out."""

SQRTM_EPS = 1e-6
"""Added to both covariances' diagonals when their product is (near) singular (pytorch-fid)."""

MAX_IMAGINARY = 1e-3
"""Largest imaginary part tolerated on the diagonal of sqrtm(S1 S2) (pytorch-fid's atol)."""


class FVDError(VansError, ValueError):
    """Features or an I3D model that cannot give a Fréchet distance."""


# --------------------------------------------------------------------------- Fréchet distance


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise FVDError(
            f"shapes do not fit: means {mu1.shape} and {mu2.shape}, covariances "
            f"{sigma1.shape} and {sigma2.shape} (need (D,) and (D, D) with one D)"
        )
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise FVDError(f"{name} contains NaN or infinite values")

    covmean, singular = _sqrtm(sigma1 @ sigma2)
    if singular:
        offset = np.eye(d) * SQRTM_EPS
        covmean, _ = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.isfinite(covmean).all():
        raise FVDError(
            f"sqrtm(sigma1 @ sigma2) is not finite even with {SQRTM_EPS:g} * I added to "
            "both covariances: the features are degenerate or overflow"
        )
    if np.iscomplexobj(covmean):
        # Round-off gives sqrtm a tiny imaginary part; a large one means a covariance
        # that is not positive semi-definite.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=MAX_IMAGINARY):
            worst = np.max(np.abs(covmean.imag))
            raise FVDError(
                f"sqrtm(sigma1 @ sigma2) has an imaginary part up to {worst:.3g}: "
                "a covariance is not positive semi-definite"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    if not math.isfinite(distance):
        raise FVDError(f"the Fréchet distance is not finite ({distance}): features overflow")
    return distance


def _sqrtm(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    """Matrix square root, and whether scipy found the matrix singular or gave NaN/inf."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        root = linalg.sqrtm(matrix)
    singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    return root, singular or not np.isfinite(root).all()


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, N >= 2, in float64."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise FVDError(f"features must be a 2-D (N, D) array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise FVDError(f"a covariance needs at least 2 feature rows (videos), got {x.shape[0]}")
    if not np.isfinite(x).all():
        rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise FVDError(f"features contain NaN or infinite values (rows {rows[:5].tolist()})")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance_from_features(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor
) -> float:
    """Fréchet distance between two (N, D) feature sets (FVD for I3D features); symmetric."""
    mu_a, sigma_a = feature_statistics(a)
    mu_b, sigma_b = feature_statistics(b)
    if mu_a.shape != mu_b.shape:
        raise FVDError(f"feature sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]} columns")
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# --------------------------------------------------------------------------- I3D


def i3d_input(video: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB video -> float32 (3, T, 224, 224) in [-1, 1] (see module doc)."""
    _check_video(video, "video")
    height, width = video.shape[1:3]
    scale = I3D_SIZE / min(height, width)
    if height < width:
        size = (I3D_SIZE, math.ceil(width * scale))
    else:
        size = (math.ceil(height * scale), I3D_SIZE)
    x = video.permute(0, 3, 1, 2).float()  # (T, 3, H, W): interpolate frame by frame
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - I3D_SIZE) // 2, (size[1] - I3D_SIZE) // 2
    x = x[:, :, top : top + I3D_SIZE, left : left + I3D_SIZE]
    return (x / 127.5 - 1).permute(1, 0, 2, 3).contiguous()


def _check_video(video: torch.Tensor, name: str) -> int:
    """Raise unless `video` is a uint8 (T, H, W, 3) clip the I3D can take; returns T."""
    if not isinstance(video, torch.Tensor) or video.dtype != torch.uint8:
        kind = video.dtype if isinstance(video, torch.Tensor) else type(video).__name__
        raise FVDError(f"{name} must be a uint8 tensor, got {kind}")
    if video.ndim != 4 or video.shape[-1] != 3 or min(video.shape[1:3]) < 1:
        raise FVDError(f"{name} must have shape (T, H, W, 3), got {tuple(video.shape)}")
    if video.shape[0] < I3D_MIN_FRAMES:
        raise FVDError(
            f"{name} has {video.shape[0]} frames; the I3D needs at least {I3D_MIN_FRAMES}"
        )
    return video.shape[0]


class I3D:
    """The StyleGAN-V TorchScript I3D as an FVD feature extractor (see the module docstring)."""

    def __init__(self, module: torch.jit.ScriptModule, device: str | torch.device = "cpu"):
        self.module = module.eval()
        self.device = torch.device(device)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> I3D:
        """Load `i3d_torchscript.pt`. It runs code when called: load only files you trust."""
        path = Path(path)
        if not path.is_file():
            raise FVDError(f"{path}: I3D TorchScript file not found")
        try:
            # map_location, not .to() afterwards: the archive restores tensors onto the
            # device they were saved from, which may not exist here.
            with warnings.catch_warnings():
                # torch 2.13 deprecates TorchScript, but the published I3D exists only in it.
                warnings.filterwarnings(
                    "ignore", "`torch.jit.load` is deprecated", DeprecationWarning
                )
                module = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FVDError(f"{path}: not a TorchScript model ({reason})") from exc
        try:
            arguments = {a.name for a in module.forward.schema.arguments}
        except (AttributeError, RuntimeError) as exc:
            raise FVDError(f"{path}: the TorchScript archive has no forward()") from exc
        missing = sorted(set(I3D_KWARGS) - arguments)
        if missing:
            raise FVDError(
                f"{path}: forward() takes no {', '.join(missing)}; expected the StyleGAN-V "
                "I3D (forward(x, rescale, resize, return_features))"
            )
        return cls(module, device)

    @torch.no_grad()
    def features(self, videos: Sequence[torch.Tensor], batch_size: int = 8) -> torch.Tensor:
        """I3D features of uint8 (T, H, W, 3) videos, all with the same T: float32 (N, 400)
        on CPU, row i for videos[i]. Batching does not change the result."""
        if len(videos) == 0:
            raise FVDError("no videos to embed")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lengths = [_check_video(v, f"video {i}") for i, v in enumerate(videos)]
        for i, length in enumerate(lengths):
            if length != lengths[0]:
                raise FVDError(
                    f"video {i} has {length} frames but video 0 has {lengths[0]}: "
                    "FVD compares clips of one length"
                )
        out = []
        for start in range(0, len(videos), batch_size):
            batch = torch.stack([i3d_input(v) for v in videos[start : start + batch_size]])
            feats = self.module(batch.to(self.device), **I3D_KWARGS)
            if feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                raise FVDError(
                    f"the I3D returned shape {tuple(feats.shape)} for {batch.shape[0]} videos; "
                    "expected (videos, features)"
                )
            out.append(feats.float().cpu())
        return torch.cat(out)

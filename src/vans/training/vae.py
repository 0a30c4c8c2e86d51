"""Training the renderer's VAE as an autoencoder (`vans train vae`), for toy-sized renderers.

The real Wan2.1 VAE comes pretrained and VANS never trains it. A tiny renderer built from a
config has a random VAE, whose latents are not pictures of anything: its DiT could learn
the latents perfectly and still decode noise. This stage gives such a renderer what the real
one has, an autoencoder of the videos it will render, so pixel-space checks (CLIP-V with the
toy embedder, FVD-toy) mean something on the toy world.

Per clip x in [-1, 1] (the target clips and, by default, the input clips at the same frame
count and size), with the posterior N(mu, sigma^2) of the encoder and eps drawn from the
sample's seed:

    z = mu + sigma * eps
    loss = mean((decode(z) - x)^2) + kl_weight * KL(N(mu, sigma^2) || N(0, 1))

the KL averaged over latent elements. With `foreground_weight` w > 0 the squared error is a
weighted mean instead, sum(m * e) / sum(m) with m = 1 + w * foreground: the toy world's
objects are a few pixels of a flat background, and a plain MSE is lowest for a decoder that
smears them into the background's colour. A pixel is foreground when it differs from its
row's background colour, the per-channel median of that row over the clip's frames and
columns (side views: every row is mostly sky or floor, objects are narrower than half of
it), by more than `foreground_threshold` in any channel. After training, `latents_mean` /
`latents_std` in the VAE config are set to the per-channel statistics of the posterior
means over the training clips, so the normalised latents the DiT sees have unit scale, as
Wan's do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vans.data.dataset import VideoViews, VNEPDataset
from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.errors import ConfigError
from vans.evaluation.video_metrics import psnr
from vans.models.checkpoint import VANSSettings, save_checkpoint
from vans.models.vdm import Renderer, video_to_unit
from vans.training.config import TrainConfig
from vans.training.stage_io import CopiedPart, LazyItems, load_start


@dataclass
class VAEConfig:
    """Autoencoder training of a checkpoint's VAE (`vans train vae`). Sizes left None take
    the checkpoint's settings (vans.yaml): train at the size the renderer renders."""

    checkpoint: str
    """VANS checkpoint whose VAE trains (e.g. `vans init-tiny --preset toy`'s)."""
    train_manifest: str
    """Training samples (JSONL manifest); their videos are the training clips."""
    eval_manifest: str | None = None
    """Held-out samples for the periodic eval loss and PSNR; None: none."""
    clips: Literal["target", "input", "both"] = "both"
    """Which videos of each sample are clips: the target (what the renderer draws), the
    input (what it encodes as reference frames) or both."""
    num_frames: int | None = None
    """Frames per clip (4k+1), spread uniformly over the video; None: the checkpoint's."""
    height: int | None = None
    """Clip height (resize + centre crop); None: the checkpoint's."""
    width: int | None = None
    """Clip width; None: the checkpoint's."""
    kl_weight: float = 1e-3
    """Weight of the per-element KL to N(0, 1): small, so reconstruction dominates, but
    enough to keep the posterior from collapsing to a point far from the origin."""
    foreground_weight: float = 0.0
    """Extra weight of foreground pixels in the reconstruction error (see the module
    docstring); 0: plain MSE."""
    foreground_threshold: float = 0.1
    """Channel difference (in [-1, 1] units) from the row's background colour above which
    a pixel is foreground."""
    stats_clips: int = 256
    """Training clips whose latents set `latents_mean` / `latents_std` at the end."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The generic training settings (steps, batch size, lr, ...)."""

    def __post_init__(self) -> None:
        problems = []
        if self.clips not in ("target", "input", "both"):
            problems.append(f"clips must be target, input or both, got {self.clips!r}")
        for name in ("num_frames", "height", "width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if self.kl_weight < 0:
            problems.append(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.foreground_weight < 0:
            problems.append(f"foreground_weight must be >= 0, got {self.foreground_weight}")
        if not self.foreground_threshold > 0:
            problems.append(f"foreground_threshold must be > 0, got {self.foreground_threshold}")
        if self.stats_clips < 1:
            problems.append(f"stats_clips must be >= 1, got {self.stats_clips}")
        if problems:
            raise ConfigError("invalid vae config: " + "; ".join(problems))

    def resolved(self, settings: VANSSettings) -> VAEConfig:
        """This config with every None size taken from the checkpoint's settings."""
        names = ("num_frames", "height", "width")
        filled = {n: getattr(settings, n) for n in names if getattr(self, n) is None}
        return dataclasses.replace(self, **filled)


# --------------------------------------------------------------------------- the math


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per sample, averaged over the other dims, (B,)."""
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar)
    return kl.mean(dim=tuple(range(1, kl.ndim)))


def foreground_mask(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Foreground pixels (B, 1, T, H, W) of videos x (B, 3, T, H, W): those whose colour
    differs from their row's median over frames and columns by more than `threshold` in
    some channel."""
    rows = x.permute(0, 1, 3, 2, 4).flatten(3)  # (B, 3, H, T * W)
    background = rows.median(dim=3).values[:, :, None, :, None]  # (B, 3, 1, H, 1)
    return (x - background).abs().amax(dim=1, keepdim=True) > threshold


def weighted_mse(error: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted mean of squared `error` (B, C, ...), `weight` broadcast over
    channels: sum(weight * error^2) / sum(weight), (B,)."""
    weight = weight.expand_as(error)
    dims = tuple(range(1, error.ndim))
    return (weight * error.square()).sum(dim=dims) / weight.sum(dim=dims).clamp_min(1e-12)


def channel_statistics(latents: Sequence[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of latents (1 or B, C, T', h, w) pooled over all clips."""
    flat = torch.cat([z.transpose(0, 1).reshape(z.shape[1], -1) for z in latents], dim=1)
    return flat.double().mean(dim=1).tolist(), flat.double().std(dim=1).tolist()


# --------------------------------------------------------------------------- the task


class VAETask:
    """The `TrainTask` of `vans train vae`; see the module docstring."""

    def __init__(
        self,
        config: VAEConfig,
        renderer: Renderer,
        settings: VANSSettings,
        start: Path,
        train_samples: Sequence[VNEPSample],
        eval_samples: Sequence[VNEPSample] | None,
    ) -> None:
        self.config = config = config.resolved(settings)
        self.renderer = renderer
        self.settings = settings
        self.start = start
        self._check_sizes()
        renderer.vae.requires_grad_(True)
        self.model: torch.nn.Module = renderer.vae
        cfg = renderer.vae.config
        self.latent_shape = (
            cfg.z_dim,
            renderer.num_latent_frames(config.num_frames),
            config.height // renderer.spatial_scale,
            config.width // renderer.spatial_scale,
        )
        self.views = VideoViews.for_renderer(
            config.num_frames, config.num_frames, (config.height, config.width)
        )
        self.kinds = {"target": ["target"], "input": ["input"], "both": ["input", "target"]}[
            config.clips
        ]
        self._train = self._items(train_samples)
        self._eval = None if eval_samples is None else self._items(eval_samples)

    def _check_sizes(self) -> None:
        c, r = self.config, self.renderer
        problems = []
        if (c.num_frames - 1) % r.temporal_scale:
            problems.append(f"num_frames must be {r.temporal_scale}k+1, got {c.num_frames}")
        for name in ("height", "width"):
            if getattr(c, name) % r.spatial_scale:
                problems.append(f"{name} must be a multiple of {r.spatial_scale}")
        if problems:
            raise ConfigError("invalid vae config: " + "; ".join(problems))

    def _items(self, samples: Sequence[VNEPSample]) -> Sequence[dict[str, Any]]:
        """One item per (sample, kind) clip, decoded once and kept (uint8 clips are small
        at the sizes this stage is for)."""
        dataset = VNEPDataset(samples, self.views)
        kinds = self.kinds

        def build(index: int) -> dict[str, Any]:
            item = dataset[index // len(kinds)]
            kind = kinds[index % len(kinds)]
            frames = item["target_frames"] if kind == "target" else item["vdm_frames"]
            return {"id": f"{item['id']}/{kind}", "frames": frames}

        return LazyItems(len(samples) * len(kinds), build, cache=True)

    def train_dataset(self) -> Sequence[dict[str, Any]]:
        return self._train

    def eval_dataset(self) -> Sequence[dict[str, Any]] | None:
        return self._eval

    def collate(self, items: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
        """uint8 clips (B, T, H, W, 3) and each sample's posterior noise from its seed."""
        if len(items) != len(seeds):
            raise ValueError(f"{len(items)} items for {len(seeds)} seeds")
        noise = [
            torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds
        ]
        return {
            "frames": torch.stack([item["frames"] for item in items]),
            "noise": torch.stack(noise),
        }

    def terms(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sample (B,) reconstruction MSE, KL and PSNR of a batch."""
        x = video_to_unit(batch["frames"])
        posterior = model.encode(x).latent_dist
        z = posterior.mean + posterior.std * batch["noise"].to(posterior.mean.dtype)
        # Wan's decoder clamps to [-1, 1]: saturated pixels pass no gradient, which is what
        # a renderer that is only ever read through that clamp should learn from.
        reconstruction = model.decode(z, return_dict=False)[0].float()
        error = reconstruction - x
        terms = {
            "mse": error.square().mean(dim=(1, 2, 3, 4)),
            "kl": gaussian_kl(posterior.mean.float(), posterior.logvar.float()),
            "psnr": psnr(reconstruction.detach(), x),
        }
        if self.config.foreground_weight > 0:
            foreground = foreground_mask(x, self.config.foreground_threshold)
            weight = 1 + self.config.foreground_weight * foreground.float()
            terms["foreground_mse"] = weighted_mse(error, foreground.float())
            terms["weighted_mse"] = weighted_mse(error, weight)
        return terms

    def sample_losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Per-sample loss (B,): (weighted) MSE + kl_weight * KL."""
        return self._total(self.terms(model, batch))

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        terms = self.terms(model, batch)
        return {"loss": self._total(terms).mean(), **{k: v.mean() for k, v in terms.items()}}

    def _total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return terms.get("weighted_mse", terms["mse"]) + self.config.kl_weight * terms["kl"]

    @torch.no_grad()
    def latent_statistics(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the posterior means of the first `stats_clips`
        training clips, under the current weights."""
        vae = self.renderer.vae
        device = next(vae.parameters()).device
        count = min(self.config.stats_clips, len(self._train))
        latents = []
        for i in range(count):
            x = video_to_unit(self._train[i]["frames"].to(device)).unsqueeze(0)
            latents.append(vae.encode(x).latent_dist.mode().float().cpu())
        return channel_statistics(latents)

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """A full VANS checkpoint with the trained VAE, its latent statistics recomputed, and
        everything else (DiT, text encoder, reasoner, settings) unchanged."""
        if model is not self.renderer.vae:
            raise ValueError("save_pretrained expects the task's (unwrapped) model")
        was_training = model.training
        model.eval()
        mean, std = self.latent_statistics()
        model.train(was_training)
        model.register_to_config(latents_mean=mean, latents_std=std)
        save_checkpoint(out, CopiedPart(self.start / "vlm"), self.renderer, self.settings)


def build_vae_task(config: VAEConfig) -> VAETask:
    """Load the renderer of `config.checkpoint` (the reasoner is copied unchanged when
    saving) and the manifests."""
    start, settings = load_start(config.checkpoint)
    renderer = Renderer.from_pretrained(start / "vdm")
    train_samples = load_manifest(config.train_manifest)
    eval_samples = load_manifest(config.eval_manifest) if config.eval_manifest else None
    return VAETask(config, renderer, settings, start, train_samples, eval_samples)
